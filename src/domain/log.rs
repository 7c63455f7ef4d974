//! The log: one entry per outgoing delivery attempt and per incoming request.

use std::collections::BTreeMap;

/// Which direction a webhook (and so a log entry) belongs to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum WebhookType {
    Outgoing,
    Incoming,
    /// Pushes to an agent's endpoint; the log and statistics of the agent's id.
    Agent,
}

impl WebhookType {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookType::Outgoing => "outgoing",
            WebhookType::Incoming => "incoming",
            WebhookType::Agent => "agent",
        }
    }
}

/// Bodies kept in the log are cut to this many bytes (at a character boundary).
pub const MAX_LOGGED_BODY: usize = 16 * 1024;

/// One logged attempt or request.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub id: String,
    pub webhook_type: WebhookType,
    pub webhook_id: String,
    pub delivery_id: Option<String>,
    pub event_type: Option<String>,
    /// `delivered` / `failed` for outgoing attempts; `accepted` / `rejected` / `failed` for
    /// incoming requests.
    pub status: String,
    /// Whether this counts as a success in the statistics.
    pub succeeded: bool,
    /// What was sent (outgoing) or received (incoming), cut to [`MAX_LOGGED_BODY`].
    pub request_payload: Option<String>,
    pub request_headers: LoggedHeaders,
    pub response_status: Option<i64>,
    pub response_body: Option<String>,
    pub error_message: Option<String>,
    /// How many attempts came before this one (0 for the first).
    pub retry_count: i64,
    /// How long the attempt or request took, in microseconds: requests often take less than a
    /// millisecond, which whole milliseconds would show as 0.
    pub processing_time_us: i64,
    pub created_at: i64,
}

impl LogEntry {
    /// Drops what came from outside (the payload, the headers, the answer), keeping the outcome,
    /// for an entry the store refused; `why` says so in its error message.
    pub fn strip_outside_texts(&mut self, why: &str) {
        self.request_payload = None;
        self.request_headers = LoggedHeaders::default();
        self.response_body = None;
        let why = why.replace('\0', "\u{FFFD}");
        self.error_message = Some(format!("this attempt's texts could not be stored ({why})"));
    }
}

/// Bytes from outside (a received body, a receiver's answer) as log text, cut to at most `max`
/// bytes: invalid UTF-8 and U+0000, which PostgreSQL text cannot hold, become U+FFFD. The log
/// is for people; the payload itself is kept faithfully elsewhere (as JSON, where U+0000 is the
/// escape `\u0000`).
pub fn log_text(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let cut = cut_at(&text, max);
    // One copy: every attempt logs what it sent.
    if cut.contains('\0') {
        cut.replace('\0', "\u{FFFD}")
    } else {
        cut.to_string()
    }
}

/// `text` cut to at most `max` bytes without splitting a character.
pub fn truncate(text: &str, max: usize) -> String {
    cut_at(text, max).to_string()
}

fn cut_at(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Words that make a header name credential-like: `Authorization` and its kin (`auth`), cookies
/// both ways, session ids, API keys, tokens (JWTs too), secrets, passwords, and the signatures
/// and HMACs providers sign with (`X-Hub-Signature-256`, `X-Shopify-Hmac-Sha256`). Matched
/// anywhere in the lowercase name, so a provider's own spelling is caught without listing it;
/// hiding a harmless value by mistake costs less than showing a secret.
const SENSITIVE_WORDS: [&str; 13] = [
    "auth",
    "cookie",
    "session",
    "credential",
    "token",
    "jwt",
    "key",
    "secret",
    "pass",
    "signature",
    "hmac",
    "csrf",
    "xsrf",
];

/// The bytes a word of [`SENSITIVE_WORDS`] starts with, in either case.
const WORD_STARTS: [bool; 256] = {
    let mut starts = [false; 256];
    let mut i = 0;
    while i < SENSITIVE_WORDS.len() {
        let first = SENSITIVE_WORDS[i].as_bytes()[0];
        starts[first as usize] = true;
        starts[first.to_ascii_uppercase() as usize] = true;
        i += 1;
    }
    starts
};

/// Whether a header's value is a credential to hide in logs and listings. Every attempt's
/// dozen headers pass through here: one pass over the name's bytes, nothing allocated (lowering
/// the name and searching it once per word was 5% of a delivery's CPU), and the words compared
/// only where one could start (comparing all 13 at every byte was still 2%).
pub fn is_sensitive_header(name: &str) -> bool {
    let name = name.as_bytes();
    (0..name.len()).any(|at| {
        let rest = &name[at..];
        WORD_STARTS[usize::from(rest[0])]
            && SENSITIVE_WORDS.iter().any(|word| {
                rest.get(..word.len())
                    .is_some_and(|start| start.eq_ignore_ascii_case(word.as_bytes()))
            })
    })
}

/// What a credential-like header value is shown as.
pub const REDACTED: &str = "********";

/// Headers fit for a log: credential values, and the value of `secret` (a header known to hold
/// one whatever its name, e.g. the one a webhook's source verification reads), replaced by
/// [`REDACTED`].
pub fn redact_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    secret: Option<&str>,
) -> BTreeMap<String, String> {
    headers
        .into_iter()
        .map(|(name, value)| {
            (
                name.to_string(),
                shown_value(name, value, secret).to_string(),
            )
        })
        .collect()
}

/// Request headers as the log keeps them: a JSON object of names to values, credentials
/// replaced by [`REDACTED`]. Held as that JSON text from the start, which is how the store keeps
/// it: as a map, an attempt's dozen headers were two dozen strings and a tree, made, serialised
/// and freed per attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedHeaders(String);

impl Default for LoggedHeaders {
    fn default() -> Self {
        LoggedHeaders("{}".to_string())
    }
}

impl LoggedHeaders {
    /// `headers` with credential values, and the value of `secret` (a header known to hold one
    /// whatever its name, e.g. the one a webhook's source verification reads), redacted. A name
    /// given twice keeps its last value, as a map would.
    pub fn redacted<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        secret: Option<&str>,
    ) -> LoggedHeaders {
        let mut text = Vec::with_capacity(512);
        text.push(b'{');
        for (name, value) in headers {
            if text.len() > 1 {
                text.push(b',');
            }
            // Writing JSON into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut text, name);
            text.push(b':');
            let _ = serde_json::to_writer(&mut text, shown_value(name, value, secret));
        }
        text.push(b'}');
        // serde_json writes UTF-8.
        LoggedHeaders(String::from_utf8(text).unwrap_or_default())
    }

    /// Headers as the store holds them: JSON text this type wrote.
    pub fn stored(text: String) -> LoggedHeaders {
        LoggedHeaders(text)
    }

    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// As a map (the API's form); `None` if the stored text is not an object of strings.
    pub fn to_map(&self) -> Option<BTreeMap<String, String>> {
        serde_json::from_str(&self.0).ok()
    }
}

fn shown_value<'a>(name: &str, value: &'a str, secret: Option<&str>) -> &'a str {
    let hidden =
        is_sensitive_header(name) || secret.is_some_and(|secret| secret.eq_ignore_ascii_case(name));
    if hidden { REDACTED } else { value }
}

impl LogEntry {
    /// The statuses that count as a success in the statistics.
    pub const SUCCESS_STATUSES: [&str; 2] = ["delivered", "accepted"];

    /// Whether an entry of this status counts as a success in the statistics.
    pub fn counts_as_success(status: &str) -> bool {
        Self::SUCCESS_STATUSES.contains(&status)
    }
}

/// A webhook's log entries over a recent window, summed up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    pub total: i64,
    pub succeeded: i64,
    /// Microseconds.
    pub p95_us: Option<i64>,
}

/// Statistics of one webhook.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    /// The processing times summed, in microseconds.
    pub total_us: i64,
    pub last_success_at: Option<i64>,
    pub last_failure_at: Option<i64>,
}

/// `us` microseconds as milliseconds with fractions, the unit the API reports durations in.
pub fn millis(us: i64) -> f64 {
    us as f64 / 1_000.0
}

/// The `q`-quantile (0..=1) of `sorted` by nearest rank; `None` when empty.
pub fn percentile(sorted: &[i64], q: f64) -> Option<i64> {
    nearest_rank(sorted.len(), q).map(|rank| sorted[rank - 1])
}

/// The 1-based position of the `q`-quantile in `len` sorted values; `None` when there are none.
pub fn nearest_rank(len: usize, q: f64) -> Option<usize> {
    (len > 0).then(|| ((q * len as f64).ceil() as usize).clamp(1, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_respects_characters() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }

    #[test]
    fn log_text_replaces_what_a_text_column_cannot_hold() {
        assert_eq!(log_text(b"a\0b\xffc", 100), "a\u{FFFD}b\u{FFFD}c");
        assert_eq!(log_text(b"a\0bc", 2), "a\u{FFFD}");
    }

    #[test]
    fn credentials_are_redacted() {
        let h = redact_headers(
            [
                ("Authorization", "Bearer x"),
                ("X-Api-Key", "k"),
                ("Accept", "a"),
                ("X-Custom-Check", "mac"),
            ],
            Some("x-custom-check"),
        );
        assert_eq!(h["Authorization"], REDACTED);
        assert_eq!(h["X-Api-Key"], REDACTED);
        assert_eq!(h["X-Custom-Check"], REDACTED, "the configured header");
        assert_eq!(h["Accept"], "a");
    }

    #[test]
    fn logged_headers_are_the_redacted_map_as_json() {
        let headers = [
            ("Authorization", "Bearer x"),
            ("Accept", "a \"quoted\" \\ value"),
            ("X-Custom-Check", "mac"),
            ("X-Twice", "first"),
            ("X-Twice", "second"),
        ];
        let logged = LoggedHeaders::redacted(headers, Some("x-custom-check"));
        assert_eq!(
            logged.to_map(),
            Some(redact_headers(headers, Some("x-custom-check")))
        );
        assert_eq!(logged.to_map().expect("a map")["X-Twice"], "second");
        assert_eq!(LoggedHeaders::redacted([], None), LoggedHeaders::default());
        assert_eq!(LoggedHeaders::default().to_map(), Some(BTreeMap::new()));
    }

    #[test]
    fn credential_like_names_are_sensitive() {
        for name in [
            "Set-Cookie",
            "Cookie",
            "Proxy-Authorization",
            "X-Session-Id",
            "X-Credential",
            "X-Jwt",
            "X-Shopify-Hmac-Sha256",
            "X-Hub-Signature-256",
            "X-Auth-Token",
            "X-Passphrase",
            "X-CSRF-Token",
            "x-hub-signature-256",
            "SESSION",
            "k-e-y-key",
        ] {
            assert!(is_sensitive_header(name), "{name}");
        }
        for name in [
            "Accept",
            "Content-Type",
            "User-Agent",
            "X-Request-Id",
            "",
            "ke",
            "X-Ke-y",
        ] {
            assert!(!is_sensitive_header(name), "{name}");
        }
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&[7], 0.95), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
