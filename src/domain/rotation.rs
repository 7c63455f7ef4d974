//! Secret rotation without a gap: a new secret takes over at once, and the one it replaced stays
//! valid for a while (outgoing deliveries are signed with both, incoming requests verify with
//! either), so the other side can switch whenever it likes within that window.

use super::{Invalid, check_range, check_text, signature::format_whsec};

/// How long the replaced secret stays valid when the call does not say (a day, as Svix does).
pub const DEFAULT_PREVIOUS_VALID_FOR_SECS: i64 = 86_400;
/// Longest overlap: a secret that leaked should not stay valid for months.
pub const MAX_PREVIOUS_VALID_FOR_SECS: i64 = 30 * 86_400;
/// Longest secret accepted (the same bound as a webhook's `secret`).
const MAX_SECRET: usize = 512;

/// A replaced secret and until when (unix ms) it is still valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousSecret {
    pub secret: String,
    pub expires_at: i64,
}

impl PreviousSecret {
    /// From the two columns that store it; `None` unless both are set.
    pub fn from_columns(secret: Option<String>, expires_at: Option<i64>) -> Option<Self> {
        Some(PreviousSecret {
            secret: secret?,
            expires_at: expires_at?,
        })
    }

    /// The secret, while it is still valid at `now`.
    pub fn live(previous: Option<&Self>, now: i64) -> Option<&Self> {
        previous.filter(|p| p.expires_at > now)
    }
}

/// What a rotate call asks for: a secret of the caller's own (else one is generated) and how
/// long, in seconds, the replaced one stays valid.
#[derive(Debug, Clone, Default)]
pub struct RotationRequest {
    pub secret: Option<String>,
    pub previous_valid_for: Option<i64>,
}

/// The outcome of a rotation: the new secret, and the replaced one with its expiry (none when
/// there was no secret before, or the overlap asked for is 0 seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub secret: String,
    pub previous: Option<PreviousSecret>,
}

impl RotationRequest {
    /// Rotates `current` at `now`. A secret of the caller's own must differ from the current one
    /// (rotating to the same secret would only cut the overlap short). Only one previous secret is
    /// kept: rotating again during an overlap ends the older one at once.
    pub fn apply(self, current: Option<&str>, now: i64) -> Result<Rotated, Invalid> {
        let valid_for = self
            .previous_valid_for
            .unwrap_or(DEFAULT_PREVIOUS_VALID_FOR_SECS);
        check_range(
            "previous_valid_for",
            valid_for,
            0,
            MAX_PREVIOUS_VALID_FOR_SECS,
        )?;
        let secret = match self.secret {
            Some(secret) => {
                check_text("secret", &secret, 1, MAX_SECRET)?;
                if current == Some(secret.as_str()) {
                    return Err(Invalid::new(
                        "secret",
                        "is the current secret; give a new one, or none to have one generated",
                    ));
                }
                secret
            }
            None => format_whsec(&rand::random()),
        };
        let previous = current.filter(|_| valid_for > 0).map(|old| PreviousSecret {
            secret: old.to_string(),
            expires_at: now + valid_for * 1_000,
        });
        Ok(Rotated { secret, previous })
    }
}

/// A replaced secret outlives only a rotation: when the secret itself is changed another way
/// (set, cleared), the change takes effect at once and the overlap ends.
pub fn keep_previous_if_unchanged(
    previous: &mut Option<PreviousSecret>,
    before: Option<&str>,
    after: Option<&str>,
) {
    if before != after {
        *previous = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replaced_secret_stays_valid_for_the_overlap() {
        let rotated = RotationRequest {
            secret: Some("new".into()),
            previous_valid_for: Some(60),
        }
        .apply(Some("old"), 1_000)
        .unwrap();
        assert_eq!(rotated.secret, "new");
        let previous = rotated.previous.unwrap();
        assert_eq!(previous.secret, "old");
        assert_eq!(previous.expires_at, 61_000);
        assert!(PreviousSecret::live(Some(&previous), 60_999).is_some());
        assert!(PreviousSecret::live(Some(&previous), 61_000).is_none());
    }

    #[test]
    fn a_generated_secret_is_a_standard_webhooks_secret_and_the_default_overlap_a_day() {
        let rotated = RotationRequest::default().apply(Some("old"), 0).unwrap();
        assert!(rotated.secret.starts_with("whsec_"));
        assert_eq!(rotated.secret.len(), "whsec_".len() + 32);
        assert_eq!(rotated.previous.unwrap().expires_at, 86_400_000);
        let first_secret = RotationRequest::default().apply(None, 0).unwrap();
        assert_eq!(first_secret.previous, None);
        let no_overlap = RotationRequest {
            previous_valid_for: Some(0),
            ..Default::default()
        };
        assert_eq!(no_overlap.apply(Some("old"), 0).unwrap().previous, None);
    }

    #[test]
    fn bad_requests_name_their_field() {
        for (request, field) in [
            (
                RotationRequest {
                    previous_valid_for: Some(-1),
                    ..Default::default()
                },
                "previous_valid_for",
            ),
            (
                RotationRequest {
                    previous_valid_for: Some(MAX_PREVIOUS_VALID_FOR_SECS + 1),
                    ..Default::default()
                },
                "previous_valid_for",
            ),
            (
                RotationRequest {
                    secret: Some("old".into()),
                    ..Default::default()
                },
                "secret",
            ),
            (
                RotationRequest {
                    secret: Some(" ".into()),
                    ..Default::default()
                },
                "secret",
            ),
        ] {
            assert_eq!(request.apply(Some("old"), 0).unwrap_err().field, field);
        }
    }

    #[test]
    fn changing_the_secret_another_way_ends_the_overlap() {
        let mut previous = Some(PreviousSecret {
            secret: "old".into(),
            expires_at: 1,
        });
        keep_previous_if_unchanged(&mut previous, Some("a"), Some("a"));
        assert!(previous.is_some());
        keep_previous_if_unchanged(&mut previous, Some("a"), Some("b"));
        assert!(previous.is_none());
    }
}
