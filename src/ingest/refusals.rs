//! Keeps refusals cheap. A flood of rate-limited, unsigned or malformed requests must not become
//! a flood of store writes, so per webhook and per answer status only the first refusal of each
//! second is logged; the others are counted and the count is carried by the next logged entry
//! ("N similar refusals suppressed since the last entry"). The statistics are not sampled: the
//! refusals left out of the log are tallied here and added to their webhooks' totals about once
//! a second (see [`RefusalSampler::drain`]), one write per webhook however many there were.

use std::{collections::HashMap, sync::Mutex};

use crate::{domain::log::WebhookType, store::Tally};

/// Maps (webhook id, status) to the second of the last logged refusal and how many were
/// suppressed since. Webhooks without refusals for a minute are forgotten at the next sweep.
#[derive(Default)]
pub struct RefusalSampler {
    seen: Mutex<HashMap<(String, u16), (i64, u64)>>,
    /// Refusals not logged and not yet added to the totals, per webhook.
    untallied: Mutex<HashMap<String, Tally>>,
}

/// How big the map may grow before stale entries are swept.
const SWEEP_AT: usize = 10_000;

impl RefusalSampler {
    /// `Some(suppressed)` when this refusal is to be logged, with the number of similar ones
    /// left out since the last logged; `None` when it is only counted.
    pub fn admit(&self, webhook_id: &str, status: u16, now_ms: i64) -> Option<u64> {
        let second = now_ms.div_euclid(1000);
        // Poisoning needs a panic while the map is held; nothing in here panics.
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= SWEEP_AT {
            seen.retain(|_, (at, suppressed)| *suppressed > 0 || second - *at < 60);
        }
        let admitted = match seen.get_mut(&(webhook_id.to_string(), status)) {
            Some((at, suppressed)) if *at == second => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                *at = second;
                Some(std::mem::take(suppressed))
            }
            None => {
                seen.insert((webhook_id.to_string(), status), (second, 0));
                Some(0)
            }
        };
        drop(seen);
        admitted
    }

    /// Counts a refusal that was not logged, for the webhook's totals.
    pub fn tally(&self, webhook_id: &str, processing_us: i64, now_ms: i64) {
        let mut untallied = self.untallied.lock().unwrap_or_else(|e| e.into_inner());
        let tally = untallied
            .entry(webhook_id.to_string())
            .or_insert_with(|| Tally {
                webhook_id: webhook_id.to_string(),
                webhook_type: WebhookType::Incoming,
                failed: 0,
                total_us: 0,
                last_at: now_ms,
            });
        tally.failed += 1;
        tally.total_us += processing_us;
        tally.last_at = tally.last_at.max(now_ms);
    }

    /// Takes what [`RefusalSampler::tally`] counted since the last drain.
    pub fn drain(&self) -> Vec<Tally> {
        let mut untallied = self.untallied.lock().unwrap_or_else(|e| e.into_inner());
        untallied.drain().map(|(_, tally)| tally).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_per_second_is_logged_and_the_rest_counted() {
        let s = RefusalSampler::default();
        assert_eq!(s.admit("w", 429, 1_000), Some(0));
        assert_eq!(s.admit("w", 429, 1_500), None);
        assert_eq!(s.admit("w", 429, 1_999), None);
        assert_eq!(s.admit("w", 401, 1_999), Some(0), "another status");
        assert_eq!(s.admit("v", 429, 1_999), Some(0), "another webhook");
        assert_eq!(s.admit("w", 429, 2_000), Some(2));
        assert_eq!(s.admit("w", 429, 5_000), Some(0));
    }

    #[test]
    fn tallies_add_up_per_webhook_until_drained() {
        let s = RefusalSampler::default();
        s.tally("w", 2, 1_000);
        s.tally("w", 3, 1_500);
        s.tally("v", 1, 1_200);
        let mut drained = s.drain();
        drained.sort_by(|a, b| a.webhook_id.cmp(&b.webhook_id));
        let counts: Vec<_> = drained
            .iter()
            .map(|t| (t.webhook_id.as_str(), t.failed, t.total_us, t.last_at))
            .collect();
        assert_eq!(counts, [("v", 1, 1, 1_200), ("w", 2, 5, 1_500)]);
        assert!(s.drain().is_empty());
    }
}
