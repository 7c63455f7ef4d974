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
    /// Request headers with credentials replaced by `********`.
    pub request_headers: BTreeMap<String, String>,
    pub response_status: Option<i64>,
    pub response_body: Option<String>,
    pub error_message: Option<String>,
    /// How many attempts came before this one (0 for the first).
    pub retry_count: i64,
    pub processing_time_ms: i64,
    pub created_at: i64,
}

/// `text` cut to at most `max` bytes without splitting a character.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Whether a header's value is a credential to hide in logs and listings.
pub fn is_sensitive_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "authorization"
        || name == "cookie"
        || ["token", "key", "secret", "password", "signature", "auth"]
            .iter()
            .any(|word| name.contains(word))
}

/// What a credential-like header value is shown as.
pub const REDACTED: &str = "********";

/// Headers fit for a log: credential values replaced by [`REDACTED`].
pub fn redact_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<String, String> {
    headers
        .into_iter()
        .map(|(name, value)| {
            let shown = if is_sensitive_header(name) {
                REDACTED
            } else {
                value
            };
            (name.to_string(), shown.to_string())
        })
        .collect()
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
    pub p95_ms: Option<i64>,
}

/// Statistics of one webhook.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub total_ms: i64,
    pub last_success_at: Option<i64>,
    pub last_failure_at: Option<i64>,
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
    fn credentials_are_redacted() {
        let h = redact_headers([
            ("Authorization", "Bearer x"),
            ("X-Api-Key", "k"),
            ("Accept", "a"),
        ]);
        assert_eq!(h["Authorization"], REDACTED);
        assert_eq!(h["X-Api-Key"], REDACTED);
        assert_eq!(h["Accept"], "a");
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
