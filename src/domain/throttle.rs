//! Failed authentications counted per client address: after `limit` failures within `window`
//! the address is refused until that window ends, so guessing keys is slow, while addresses
//! that do not fail are never slowed.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::Mutex,
    time::{Duration, Instant},
};

/// Addresses tracked at most. When the table is full, expired entries are swept; if it is
/// still full (that many addresses failing at once), new addresses go uncounted rather than
/// let the table grow without bound: each of them could only have `limit` tries anyway.
const MAX_TRACKED: usize = 100_000;

pub struct FailureThrottle {
    limit: u32,
    window: Duration,
    clients: Mutex<HashMap<IpAddr, Failures>>,
}

struct Failures {
    count: u32,
    /// The first failure of the current window.
    since: Instant,
}

impl FailureThrottle {
    pub fn new(limit: u32, window: Duration) -> FailureThrottle {
        FailureThrottle {
            limit: limit.max(1),
            window,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(whole seconds, at least 1, until it may try again)` while `client` has used up its
    /// failures.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), u64> {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        match clients.get(&counted_as(client)) {
            Some(failures) if failures.count >= self.limit => {
                let left = (failures.since + self.window).saturating_duration_since(now);
                if left.is_zero() {
                    Ok(())
                } else {
                    Err(left.as_secs_f64().ceil().max(1.0) as u64)
                }
            }
            _ => Ok(()),
        }
    }

    /// Counts one failed authentication from `client`.
    pub fn failed(&self, client: IpAddr, now: Instant) {
        let key = counted_as(client);
        // Poisoning needs a panic while the map is held; nothing in here panics.
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= MAX_TRACKED && !clients.contains_key(&key) {
            clients.retain(|_, failures| now < failures.since + self.window);
            if clients.len() >= MAX_TRACKED {
                return;
            }
        }
        let failures = clients.entry(key).or_insert(Failures {
            count: 0,
            since: now,
        });
        if now >= failures.since + self.window {
            *failures = Failures {
                count: 0,
                since: now,
            };
        }
        failures.count = failures.count.saturating_add(1);
    }
}

/// IPv6 clients are counted by their /64: a single host is commonly given a whole /64, and
/// counting each address would hand it 2^64 budgets.
fn counted_as(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !(u128::from(u64::MAX));
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_the_limit_until_the_window_ends() {
        let throttle = FailureThrottle::new(3, Duration::from_secs(60));
        let start = Instant::now();
        let guesser: IpAddr = "203.0.113.7".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(throttle.check(guesser, start), Ok(()));
            throttle.failed(guesser, start);
        }
        assert_eq!(throttle.check(guesser, start), Err(60));
        assert_eq!(
            throttle.check(guesser, start + Duration::from_millis(59_500)),
            Err(1)
        );
        // Others are not affected.
        assert_eq!(
            throttle.check("203.0.113.8".parse().unwrap(), start),
            Ok(())
        );
        // A new window starts afresh.
        let later = start + Duration::from_secs(60);
        assert_eq!(throttle.check(guesser, later), Ok(()));
        throttle.failed(guesser, later);
        assert_eq!(throttle.check(guesser, later), Ok(()));
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_a_budget() {
        let throttle = FailureThrottle::new(2, Duration::from_secs(60));
        let now = Instant::now();
        throttle.failed("2001:db8:1:2::1".parse().unwrap(), now);
        throttle.failed("2001:db8:1:2::ffff".parse().unwrap(), now);
        assert!(
            throttle
                .check("2001:db8:1:2::42".parse().unwrap(), now)
                .is_err()
        );
        assert!(
            throttle
                .check("2001:db8:1:3::1".parse().unwrap(), now)
                .is_ok()
        );
    }

    #[test]
    fn a_full_table_sweeps_expired_entries() {
        let throttle = FailureThrottle::new(1, Duration::from_secs(60));
        let start = Instant::now();
        for i in 0..MAX_TRACKED as u32 {
            throttle.failed(IpAddr::from(i.to_be_bytes()), start);
        }
        let late: IpAddr = "198.51.100.1".parse().unwrap();
        throttle.failed(late, start);
        assert!(throttle.check(late, start).is_ok(), "full: not counted");
        let later = start + Duration::from_secs(61);
        throttle.failed(late, later);
        assert!(throttle.check(late, later).is_err());
        assert_eq!(throttle.clients.lock().unwrap().len(), 1);
    }
}
