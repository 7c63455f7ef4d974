//! Webhook signatures: signing outgoing deliveries (plain hex HMAC and
//! Standard Webhooks) and verifying incoming webhooks from GitHub, Stripe,
//! Slack, Standard Webhooks senders and generic HMAC-SHA256 headers.
//! Verification works on the raw body bytes and compares in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{HeaderMap, HeaderName};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Replay window used when a source does not set one (the senders' own default).
const DEFAULT_TOLERANCE_SECS: u64 = 300;
/// Longest accepted replay window; beyond an hour the check protects little.
const MAX_TOLERANCE_SECS: u64 = 3600;

/// HMAC-SHA256 of the concatenated `parts` under `key`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC accepts keys of any length (long ones are hashed), so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    parts.iter().for_each(|part| mac.update(part));
    mac.finalize().into_bytes().to_vec()
}

/// Lowercase hex HMAC-SHA256 of `body` keyed with the secret's UTF-8 bytes,
/// as Python's `hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()`.
pub fn hex_hmac_sha256(secret: &str, body: &[u8]) -> String {
    hex::encode(hmac_sha256(secret.as_bytes(), &[body]))
}

/// The Standard Webhooks key: the base64 part after `whsec_` when the secret
/// has that prefix and it decodes, else the secret's UTF-8 bytes.
fn standard_webhooks_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|b64| STANDARD_PAD_INDIFFERENT.decode(b64).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

fn standard_webhooks_mac(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let prefix = format!("{msg_id}.{timestamp}.");
    hmac_sha256(&standard_webhooks_key(secret), &[prefix.as_bytes(), body])
}

/// The Standard Webhooks `webhook-signature` value: `v1,` + base64 of
/// HMAC-SHA256 over `{msg_id}.{timestamp}.{body}`.
pub fn standard_webhooks_signature(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    format!(
        "v1,{}",
        STANDARD.encode(standard_webhooks_mac(secret, msg_id, timestamp, body))
    )
}

/// A Standard Webhooks secret, `whsec_` + base64 of 24 bytes. The caller
/// supplies the random bytes, so this module needs no random source.
pub fn format_whsec(bytes: &[u8; 24]) -> String {
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// Why an incoming webhook or a verification setting was refused. Display
/// texts are user-facing sentences and name the header concerned.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(String),
    #[error("header {header} is malformed; expected {expected}")]
    MalformedHeader { header: String, expected: String },
    #[error("signature mismatch")]
    Mismatch,
    #[error("timestamp outside tolerance of {0} seconds")]
    StaleTimestamp(u64),
    #[error("secret must not be empty")]
    EmptySecret,
    #[error("header {0:?} is not a valid HTTP header name")]
    InvalidHeaderName(String),
    #[error("tolerance_secs must be between 1 and {MAX_TOLERANCE_SECS}")]
    InvalidTolerance,
}

/// How a generic signature header encodes the MAC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    #[default]
    Hex,
    Base64,
}

fn default_tolerance() -> u64 {
    DEFAULT_TOLERANCE_SECS
}

/// How to verify that an incoming webhook comes from its source. JSON form:
/// `{"type":"github","secret":"…"}`, `{"type":"stripe","secret":"whsec_…","tolerance_secs":300}`,
/// `{"type":"slack","secret":"…"}`, `{"type":"standard_webhooks","secret":"whsec_…"}`,
/// `{"type":"hmac_sha256","secret":"…","header":"X-Signature","encoding":"hex","prefix":"sha256="}`.
/// `tolerance_secs` (Stripe, Slack, Standard Webhooks) defaults to 300 and
/// `encoding` to `hex`; unknown fields are refused so typos do not go unnoticed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", deny_unknown_fields)]
pub enum SourceVerification {
    /// `X-Hub-Signature-256: sha256=<hex>` over the body.
    Github { secret: String },
    /// `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]` over `{t}.{body}`,
    /// keyed with the whole secret string (`whsec_` included, as Stripe does).
    Stripe {
        secret: String,
        #[serde(default = "default_tolerance")]
        tolerance_secs: u64,
    },
    /// `X-Slack-Signature: v0=<hex>` over `v0:{X-Slack-Request-Timestamp}:{body}`.
    Slack {
        secret: String,
        #[serde(default = "default_tolerance")]
        tolerance_secs: u64,
    },
    /// `webhook-id`, `webhook-timestamp` and `webhook-signature` (space-separated
    /// `v1,<base64>` entries, any may match), keyed as [`standard_webhooks_signature`].
    StandardWebhooks {
        secret: String,
        #[serde(default = "default_tolerance")]
        tolerance_secs: u64,
    },
    /// HMAC-SHA256 of the body in `header`, hex or base64, after an optional prefix.
    HmacSha256 {
        secret: String,
        header: String,
        #[serde(default)]
        encoding: SignatureEncoding,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix: Option<String>,
    },
}

/// A header's value, trimmed; missing or non-text values are errors.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, VerifyError> {
    let value = headers
        .get(name)
        .ok_or_else(|| VerifyError::MissingHeader(name.into()))?;
    value
        .to_str()
        .map(str::trim)
        .map_err(|_| malformed(name, "visible ASCII text"))
}

fn malformed(header: &str, expected: &str) -> VerifyError {
    VerifyError::MalformedHeader {
        header: header.into(),
        expected: expected.into(),
    }
}

/// Parses a unix-seconds header and checks it is within `tolerance` of `now`
/// either way, so captured requests cannot be replayed later.
fn fresh_timestamp(name: &str, value: &str, now: i64, tolerance: u64) -> Result<i64, VerifyError> {
    let ts: i64 = value
        .parse()
        .map_err(|_| malformed(name, "a unix timestamp in seconds"))?;
    match now.abs_diff(ts) <= tolerance {
        true => Ok(ts),
        false => Err(VerifyError::StaleTimestamp(tolerance)),
    }
}

/// Passes if any candidate decodes to `expected`, compared in constant time
/// (candidates that fail to decode simply do not match).
fn any_matches<'a>(
    expected: &[u8],
    candidates: impl IntoIterator<Item = &'a str>,
    decode: impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<(), VerifyError> {
    let matched = candidates
        .into_iter()
        .filter_map(decode)
        .any(|sig| bool::from(sig.ct_eq(expected)));
    matched.then_some(()).ok_or(VerifyError::Mismatch)
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    hex::decode(s).ok()
}

fn from_base64(s: &str) -> Option<Vec<u8>> {
    STANDARD_PAD_INDIFFERENT.decode(s).ok()
}

impl SourceVerification {
    /// The header that carries the signature: a credential (whoever holds it can replay the
    /// request), so it is hidden wherever received headers are shown, whatever its name.
    pub fn signature_header(&self) -> &str {
        match self {
            Self::Github { .. } => "X-Hub-Signature-256",
            Self::Stripe { .. } => "Stripe-Signature",
            Self::Slack { .. } => "X-Slack-Signature",
            Self::StandardWebhooks { .. } => "webhook-signature",
            Self::HmacSha256 { header, .. } => header,
        }
    }

    /// Checks the signature of an incoming webhook against the raw body.
    /// `headers` lookups are case-insensitive; `now` is unix seconds.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), VerifyError> {
        // A setting that slipped past save-time validation fails closed.
        self.validate()?;
        let h = self.signature_header();
        match self {
            Self::Github { secret } => {
                let sig = header(headers, h)?
                    .strip_prefix("sha256=")
                    .ok_or_else(|| malformed(h, "sha256=<hex>"))?;
                any_matches(&hmac_sha256(secret.as_bytes(), &[body]), [sig], from_hex)
            }
            Self::Stripe {
                secret,
                tolerance_secs,
            } => {
                let value = header(headers, h)?;
                let pairs = value.split(',').filter_map(|p| p.trim().split_once('='));
                let t = pairs.clone().find(|(k, _)| *k == "t").map(|(_, v)| v);
                let t = t.ok_or_else(|| malformed(h, "t=<timestamp>,v1=<hex>"))?;
                let ts = fresh_timestamp(h, t, now, *tolerance_secs)?;
                let signed = format!("{ts}.");
                let expected = hmac_sha256(secret.as_bytes(), &[signed.as_bytes(), body]);
                let v1 = pairs.filter(|(k, _)| *k == "v1").map(|(_, v)| v);
                any_matches(&expected, v1, from_hex)
            }
            Self::Slack {
                secret,
                tolerance_secs,
            } => {
                const TS: &str = "X-Slack-Request-Timestamp";
                let ts = fresh_timestamp(TS, header(headers, TS)?, now, *tolerance_secs)?;
                let sig = header(headers, h)?
                    .strip_prefix("v0=")
                    .ok_or_else(|| malformed(h, "v0=<hex>"))?;
                let signed = format!("v0:{ts}:");
                let expected = hmac_sha256(secret.as_bytes(), &[signed.as_bytes(), body]);
                any_matches(&expected, [sig], from_hex)
            }
            Self::StandardWebhooks {
                secret,
                tolerance_secs,
            } => {
                const TS: &str = "webhook-timestamp";
                let id = header(headers, "webhook-id")?;
                let ts = fresh_timestamp(TS, header(headers, TS)?, now, *tolerance_secs)?;
                let sigs = header(headers, h)?;
                // Other versions (e.g. asymmetric `v1a`) are skipped, as the spec says.
                let v1 = sigs
                    .split_whitespace()
                    .filter_map(|s| s.strip_prefix("v1,"));
                any_matches(
                    &standard_webhooks_mac(secret, id, ts, body),
                    v1,
                    from_base64,
                )
            }
            Self::HmacSha256 {
                secret,
                encoding,
                prefix,
                ..
            } => {
                let value = header(headers, h)?;
                let prefix = prefix.as_deref().unwrap_or("");
                let sig = value
                    .strip_prefix(prefix)
                    .ok_or_else(|| malformed(h, &format!("{prefix}<signature>")))?;
                let decode = match encoding {
                    SignatureEncoding::Hex => from_hex,
                    SignatureEncoding::Base64 => from_base64,
                };
                any_matches(&hmac_sha256(secret.as_bytes(), &[body]), [sig], decode)
            }
        }
    }

    /// [`verify`](Self::verify) with the current secret and, on a mismatch only, with `previous`:
    /// the secret a rotation replaced, still accepted until it expires (the caller passes it only
    /// while it is valid). Other failures (a missing header, a stale timestamp) are the same
    /// whichever secret signed, so they are not tried twice.
    pub fn verify_rotating(
        &self,
        previous: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<(), VerifyError> {
        match (self.verify(headers, body, now), previous) {
            (Err(VerifyError::Mismatch), Some(previous)) => {
                self.with_secret(previous).verify(headers, body, now)
            }
            (outcome, _) => outcome,
        }
    }

    /// The same scheme and settings with another secret.
    pub fn with_secret(&self, secret: &str) -> SourceVerification {
        let mut next = self.clone();
        match &mut next {
            Self::Github { secret: s }
            | Self::Stripe { secret: s, .. }
            | Self::Slack { secret: s, .. }
            | Self::StandardWebhooks { secret: s, .. }
            | Self::HmacSha256 { secret: s, .. } => *s = secret.to_string(),
        }
        next
    }

    /// Save-time validation: a non-empty secret, a valid header name and a
    /// replay window between 1 and 3600 seconds.
    pub fn validate(&self) -> Result<(), VerifyError> {
        let (secret, tolerance) = match self {
            Self::Github { secret } => (secret, None),
            Self::Stripe {
                secret,
                tolerance_secs,
            }
            | Self::Slack {
                secret,
                tolerance_secs,
            }
            | Self::StandardWebhooks {
                secret,
                tolerance_secs,
            } => (secret, Some(*tolerance_secs)),
            Self::HmacSha256 { secret, header, .. } => {
                HeaderName::from_bytes(header.as_bytes())
                    .map_err(|_| VerifyError::InvalidHeaderName(header.clone()))?;
                (secret, None)
            }
        };
        if secret.is_empty() {
            return Err(VerifyError::EmptySecret);
        }
        match tolerance {
            Some(t) if !(1..=MAX_TOLERANCE_SECS).contains(&t) => Err(VerifyError::InvalidTolerance),
            _ => Ok(()),
        }
    }

    /// The shared secret, whichever the scheme.
    pub fn secret(&self) -> &str {
        match self {
            Self::Github { secret }
            | Self::Stripe { secret, .. }
            | Self::Slack { secret, .. }
            | Self::StandardWebhooks { secret, .. }
            | Self::HmacSha256 { secret, .. } => secret,
        }
    }

    /// The JSON form for API output, with `"secret_set": true|false` in place
    /// of the secret (field order kept).
    pub fn redacted(&self) -> Value {
        // Serialising plain strings, numbers and unit enums into a Value cannot fail.
        let value = serde_json::to_value(self).expect("SourceVerification serialises to JSON");
        let Value::Object(fields) = value else {
            return value;
        };
        fields
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                "secret" => (
                    "secret_set".into(),
                    Value::Bool(v.as_str().is_some_and(|s| !s.is_empty())),
                ),
                _ => (k, v),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                )
            })
            .collect()
    }

    // python3 -c 'import hmac,hashlib; print(hmac.new("It'"'"'s a Secret to Everybody".encode(), b"Hello, World!", hashlib.sha256).hexdigest())'
    // (also GitHub's documented example)
    const HEX_VECTOR: &str = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn hex_hmac_matches_python() {
        assert_eq!(
            hex_hmac_sha256("It's a Secret to Everybody", b"Hello, World!"),
            HEX_VECTOR
        );
    }

    // With `pip install standardwebhooks` (1.1.0):
    // python3 -c 'from datetime import datetime,timezone; from standardwebhooks.webhooks import Webhook;
    //   print(Webhook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").sign("msg_p5jXN8AQM9LWM0D4loKWxJek",
    //   datetime.fromtimestamp(1614265330, tz=timezone.utc), "{\"test\": 2432232314}"))'
    const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW_TS: i64 = 1614265330;
    const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SW_VECTOR: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn standard_webhooks_signature_matches_python_library() {
        assert_eq!(
            standard_webhooks_signature(SW_SECRET, SW_ID, SW_TS, SW_BODY),
            SW_VECTOR
        );
    }

    #[test]
    fn standard_webhooks_key_falls_back_to_raw_bytes() {
        // Not base64 after the prefix, and no prefix at all: the bytes as given.
        let raw = |s: &str| {
            format!(
                "v1,{}",
                STANDARD.encode(hmac_sha256(s.as_bytes(), &[b"i.1.b"]))
            )
        };
        assert_eq!(
            standard_webhooks_signature("whsec_!!", "i", 1, b"b"),
            raw("whsec_!!")
        );
        assert_eq!(
            standard_webhooks_signature("plain", "i", 1, b"b"),
            raw("plain")
        );
        // Unpadded base64 after the prefix decodes too (the Python library accepts it).
        assert_eq!(standard_webhooks_key("whsec_AAE"), [0, 1]);
    }

    #[test]
    fn formats_whsec_secrets() {
        // python3 -c 'import base64; print("whsec_" + base64.b64encode(bytes(range(24))).decode())'
        let bytes: [u8; 24] = std::array::from_fn(|i| i as u8);
        let secret = format_whsec(&bytes);
        assert_eq!(secret, "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX");
        assert_eq!(standard_webhooks_key(&secret), bytes);
    }

    fn github() -> SourceVerification {
        SourceVerification::Github {
            secret: "gh-secret".into(),
        }
    }

    // python3 -c 'import hmac,hashlib; print(hmac.new(b"gh-secret", b"{\"action\":\"opened\"}", hashlib.sha256).hexdigest())'
    const GH_BODY: &[u8] = br#"{"action":"opened"}"#;
    const GH_SIG: &str = "sha256=e6f0cd1cc45318f67b23a36be38951181ced496b01c1ed36023ae5fab179e975";

    #[test]
    fn github_verifies() {
        let h = headers(&[("x-hub-signature-256", GH_SIG)]);
        assert_eq!(github().verify(&h, GH_BODY, 0), Ok(()));
        assert_eq!(
            github().verify(&h, br#"{"action":"closed"}"#, 0),
            Err(VerifyError::Mismatch)
        );
        let upper = GH_SIG.replace("e6f0", "E6F0");
        assert_eq!(
            github().verify(&headers(&[("X-Hub-Signature-256", &upper)]), GH_BODY, 0),
            Ok(())
        );
        let err = github().verify(&HeaderMap::new(), GH_BODY, 0).unwrap_err();
        assert_eq!(err.to_string(), "missing header X-Hub-Signature-256");
        let bare = headers(&[("X-Hub-Signature-256", &GH_SIG[7..])]);
        assert_eq!(
            github().verify(&bare, GH_BODY, 0).unwrap_err().to_string(),
            "header X-Hub-Signature-256 is malformed; expected sha256=<hex>"
        );
        let garbage = headers(&[("X-Hub-Signature-256", "sha256=zz")]);
        assert_eq!(
            github().verify(&garbage, GH_BODY, 0),
            Err(VerifyError::Mismatch)
        );
    }

    // python3 -c 'import hmac,hashlib; print(hmac.new(b"whsec_test_secret", b"1700000000.{\"id\":\"evt_1\"}", hashlib.sha256).hexdigest())'
    const STRIPE_BODY: &[u8] = br#"{"id":"evt_1"}"#;
    const STRIPE_TS: i64 = 1700000000;
    const STRIPE_V1: &str = "248a374f50f943a28b0f6ab50faf9a7e7e29b710fa26df9fb1618b9bf8ea9c9a";

    fn stripe() -> SourceVerification {
        SourceVerification::Stripe {
            secret: "whsec_test_secret".into(),
            tolerance_secs: 300,
        }
    }

    #[test]
    fn stripe_verifies() {
        let stale = "0000000000000000000000000000000000000000000000000000000000000000";
        let value = format!("t={STRIPE_TS},v1={stale},v0=abc,v1={STRIPE_V1}");
        let h = headers(&[("stripe-signature", &value)]);
        // The second v1 entry matches (Stripe sends several during secret rolls).
        assert_eq!(stripe().verify(&h, STRIPE_BODY, STRIPE_TS + 10), Ok(()));
        assert_eq!(
            stripe().verify(&h, b"{}", STRIPE_TS),
            Err(VerifyError::Mismatch)
        );
        let err = stripe()
            .verify(&h, STRIPE_BODY, STRIPE_TS + 301)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "timestamp outside tolerance of 300 seconds"
        );
        assert_eq!(
            stripe().verify(&h, STRIPE_BODY, STRIPE_TS - 301),
            Err(VerifyError::StaleTimestamp(300))
        );
        let only_old = headers(&[("Stripe-Signature", &format!("t={STRIPE_TS},v1={stale}"))]);
        assert_eq!(
            stripe().verify(&only_old, STRIPE_BODY, STRIPE_TS),
            Err(VerifyError::Mismatch)
        );
        let no_t = headers(&[("Stripe-Signature", &format!("v1={STRIPE_V1}"))]);
        assert!(matches!(
            stripe().verify(&no_t, STRIPE_BODY, STRIPE_TS),
            Err(VerifyError::MalformedHeader { .. })
        ));
        assert_eq!(
            stripe().verify(&HeaderMap::new(), STRIPE_BODY, STRIPE_TS),
            Err(VerifyError::MissingHeader("Stripe-Signature".into()))
        );
    }

    // python3 -c 'import hmac,hashlib; print(hmac.new(b"8f742231b10e8888abcd99yyyzzz85a5", b"v0:1531420618:token=xyz&team_id=T1", hashlib.sha256).hexdigest())'
    const SLACK_SIG: &str = "v0=71b0a7e79a0e37393adc80ac96f8aeffcbcdbf0ff8a0506259cf6bd02e6e13f2";

    #[test]
    fn slack_verifies() {
        let slack = SourceVerification::Slack {
            secret: "8f742231b10e8888abcd99yyyzzz85a5".into(),
            tolerance_secs: 300,
        };
        let body = b"token=xyz&team_id=T1";
        let h = headers(&[
            ("X-Slack-Request-Timestamp", "1531420618"),
            ("X-Slack-Signature", SLACK_SIG),
        ]);
        assert_eq!(slack.verify(&h, body, 1531420618 + 299), Ok(()));
        assert_eq!(
            slack.verify(&h, b"token=xyz&team_id=T2", 1531420618),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            slack.verify(&h, body, 1531420618 + 301),
            Err(VerifyError::StaleTimestamp(300))
        );
        let no_ts = headers(&[("X-Slack-Signature", SLACK_SIG)]);
        assert_eq!(
            slack
                .verify(&no_ts, body, 1531420618)
                .unwrap_err()
                .to_string(),
            "missing header X-Slack-Request-Timestamp"
        );
        let bad_ts = headers(&[
            ("X-Slack-Request-Timestamp", "soon"),
            ("X-Slack-Signature", SLACK_SIG),
        ]);
        assert!(matches!(
            slack.verify(&bad_ts, body, 0),
            Err(VerifyError::MalformedHeader { .. })
        ));
    }

    #[test]
    fn standard_webhooks_verifies() {
        let sw = SourceVerification::StandardWebhooks {
            secret: SW_SECRET.into(),
            tolerance_secs: 300,
        };
        let ts = SW_TS.to_string();
        let sigs = format!("v1a,abc v1,AAAA {SW_VECTOR}");
        let h = headers(&[
            ("webhook-id", SW_ID),
            ("webhook-timestamp", &ts),
            ("webhook-signature", &sigs),
        ]);
        assert_eq!(sw.verify(&h, SW_BODY, SW_TS), Ok(()));
        assert_eq!(
            sw.verify(&h, b"{\"test\": 1}", SW_TS),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            sw.verify(&h, SW_BODY, SW_TS + 301),
            Err(VerifyError::StaleTimestamp(300))
        );
        // The id is signed too: another id does not verify.
        let other = headers(&[
            ("webhook-id", "msg_x"),
            ("webhook-timestamp", &ts),
            ("webhook-signature", &sigs),
        ]);
        assert_eq!(
            sw.verify(&other, SW_BODY, SW_TS),
            Err(VerifyError::Mismatch)
        );
        let no_id = headers(&[("webhook-timestamp", &ts), ("webhook-signature", &sigs)]);
        assert_eq!(
            sw.verify(&no_id, SW_BODY, SW_TS),
            Err(VerifyError::MissingHeader("webhook-id".into()))
        );
        // Our own signer round-trips through our verifier.
        let own = standard_webhooks_signature(SW_SECRET, "msg_2", 42, b"x");
        let h = headers(&[
            ("webhook-id", "msg_2"),
            ("webhook-timestamp", "42"),
            ("webhook-signature", &own),
        ]);
        assert_eq!(sw.verify(&h, b"x", 42), Ok(()));
    }

    #[test]
    fn a_rotated_secret_is_accepted_only_while_passed_as_previous() {
        let h = headers(&[("X-Hub-Signature-256", GH_SIG)]);
        let rotated = github().with_secret("new-secret");
        assert_eq!(rotated.verify(&h, GH_BODY, 0), Err(VerifyError::Mismatch));
        assert_eq!(
            rotated.verify_rotating(Some("gh-secret"), &h, GH_BODY, 0),
            Ok(())
        );
        assert_eq!(
            rotated.verify_rotating(None, &h, GH_BODY, 0),
            Err(VerifyError::Mismatch)
        );
        // A request signed with the new secret passes whatever the previous one is.
        let new_sig = format!("sha256={}", hex_hmac_sha256("new-secret", GH_BODY));
        let h = headers(&[("X-Hub-Signature-256", &new_sig)]);
        assert_eq!(rotated.verify_rotating(Some("x"), &h, GH_BODY, 0), Ok(()));
        assert_eq!(
            rotated.verify_rotating(Some("gh-secret"), &HeaderMap::new(), GH_BODY, 0),
            Err(VerifyError::MissingHeader("X-Hub-Signature-256".into()))
        );
    }

    #[test]
    fn generic_hmac_verifies_hex_and_base64() {
        let hex = SourceVerification::HmacSha256 {
            secret: "It's a Secret to Everybody".into(),
            header: "X-Signature".into(),
            encoding: SignatureEncoding::Hex,
            prefix: Some("sha256=".into()),
        };
        let h = headers(&[("x-signature", &format!("sha256={HEX_VECTOR}"))]);
        assert_eq!(hex.verify(&h, b"Hello, World!", 0), Ok(()));
        assert_eq!(
            hex.verify(&h, b"Hello, World?", 0),
            Err(VerifyError::Mismatch)
        );
        let unprefixed = headers(&[("x-signature", HEX_VECTOR)]);
        assert!(matches!(
            hex.verify(&unprefixed, b"Hello, World!", 0),
            Err(VerifyError::MalformedHeader { .. })
        ));

        // python3 -c 'import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b"generic", b"payload", hashlib.sha256).digest()).decode())'
        let b64 = SourceVerification::HmacSha256 {
            secret: "generic".into(),
            header: "X-Payload-Signature".into(),
            encoding: SignatureEncoding::Base64,
            prefix: None,
        };
        let h = headers(&[(
            "X-Payload-Signature",
            "peDdCIfNh5yvBggiUKv0hiwkbNrVKEXUN/nRudU7Aq4=",
        )]);
        assert_eq!(b64.verify(&h, b"payload", 0), Ok(()));
        assert_eq!(b64.verify(&h, b"payload!", 0), Err(VerifyError::Mismatch));
        assert_eq!(
            b64.verify(&HeaderMap::new(), b"payload", 0)
                .unwrap_err()
                .to_string(),
            "missing header X-Payload-Signature"
        );
    }

    #[test]
    fn json_form_round_trips_with_defaults() {
        let cases = [
            (json!({"type": "github", "secret": "s"}), github_with("s")),
            (
                json!({"type": "stripe", "secret": "whsec_x"}),
                SourceVerification::Stripe {
                    secret: "whsec_x".into(),
                    tolerance_secs: 300,
                },
            ),
            (
                json!({"type": "slack", "secret": "s", "tolerance_secs": 60}),
                SourceVerification::Slack {
                    secret: "s".into(),
                    tolerance_secs: 60,
                },
            ),
            (
                json!({"type": "standard_webhooks", "secret": "whsec_x"}),
                SourceVerification::StandardWebhooks {
                    secret: "whsec_x".into(),
                    tolerance_secs: 300,
                },
            ),
            (
                json!({"type": "hmac_sha256", "secret": "s", "header": "X-Sig"}),
                SourceVerification::HmacSha256 {
                    secret: "s".into(),
                    header: "X-Sig".into(),
                    encoding: SignatureEncoding::Hex,
                    prefix: None,
                },
            ),
        ];
        for (input, want) in cases {
            let got: SourceVerification = serde_json::from_value(input.clone()).unwrap();
            assert_eq!(got, want, "{input}");
            let again: SourceVerification =
                serde_json::from_value(serde_json::to_value(&got).unwrap()).unwrap();
            assert_eq!(again, want);
        }
        let base64: SourceVerification = serde_json::from_value(json!(
            {"type": "hmac_sha256", "secret": "s", "header": "X", "encoding": "base64", "prefix": "v1="}
        ))
        .unwrap();
        assert!(matches!(
            base64,
            SourceVerification::HmacSha256 {
                encoding: SignatureEncoding::Base64,
                ..
            }
        ));
        for bad in [
            json!({"type": "github", "secret": "s", "tolerance_sec": 5}),
            json!({"type": "gitlab", "secret": "s"}),
            json!({"type": "hmac_sha256", "secret": "s", "header": "X", "encoding": "hexa"}),
        ] {
            assert!(
                serde_json::from_value::<SourceVerification>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    fn github_with(secret: &str) -> SourceVerification {
        SourceVerification::Github {
            secret: secret.into(),
        }
    }

    #[test]
    fn validates_settings() {
        assert_eq!(github().validate(), Ok(()));
        assert_eq!(github_with("").validate(), Err(VerifyError::EmptySecret));
        // An empty secret is refused at delivery too, since anyone could sign with it.
        let h = headers(&[(
            "X-Hub-Signature-256",
            &format!("sha256={}", hex_hmac_sha256("", b"x")),
        )]);
        assert_eq!(
            github_with("").verify(&h, b"x", 0),
            Err(VerifyError::EmptySecret)
        );
        for (tolerance, ok) in [
            (0, false),
            (1, true),
            (300, true),
            (3600, true),
            (3601, false),
        ] {
            let s = SourceVerification::Slack {
                secret: "s".into(),
                tolerance_secs: tolerance,
            };
            assert_eq!(s.validate().is_ok(), ok, "{tolerance}");
        }
        let bad_header = SourceVerification::HmacSha256 {
            secret: "s".into(),
            header: "X Sig".into(),
            encoding: SignatureEncoding::Hex,
            prefix: None,
        };
        assert_eq!(
            bad_header.validate().unwrap_err().to_string(),
            "header \"X Sig\" is not a valid HTTP header name"
        );
    }

    #[test]
    fn redacted_hides_the_secret() {
        assert_eq!(
            github().redacted(),
            json!({"type": "github", "secret_set": true})
        );
        assert_eq!(
            stripe().redacted(),
            json!({"type": "stripe", "secret_set": true, "tolerance_secs": 300})
        );
        assert_eq!(
            github_with("").redacted(),
            json!({"type": "github", "secret_set": false})
        );
        assert!(
            !stripe()
                .redacted()
                .to_string()
                .contains("whsec_test_secret")
        );
    }
}
