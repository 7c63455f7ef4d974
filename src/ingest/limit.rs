//! Per-webhook rate limits for receiving URLs: GCRA, so a limit of N per minute allows a burst of
//! N and then one request every 60/N seconds. In process (governor) by default; with
//! `HOOKD_REDIS_URL` the state lives in Redis so the limit holds for the whole cluster.
//!
//! A Redis that stops answering is taken out of the path at its first failure: requests are then
//! limited per node without waiting for it, while a background probe watches for its return.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use governor::{
    DefaultDirectRateLimiter, Quota, RateLimiter as Gcra,
    clock::{Clock, DefaultClock},
};
use redis::{Script, aio::ConnectionManager};

/// A Redis call slower than this counts as failed, and the local limiter decides instead: a
/// sick Redis must not stall intake.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// While Redis is out of the path, how often the probe asks whether it is back. Short, since
/// until then each node limits alone (a cluster of N nodes lets up to N times the limit through).
const REDIS_PROBE_EVERY: Duration = Duration::from_secs(1);

/// GCRA in Redis. KEYS[1]: the webhook's key; ARGV[1]: emission interval (µs, 60 s / limit);
/// ARGV[2]: burst window (µs, 60 s). Redis's own clock is used so that nodes with skewed clocks
/// agree. Returns 0 when the request may pass, else the µs to wait.
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next_tat = tat + interval
local wait = next_tat - window - now
if wait > 0 then return math.ceil(wait) end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
return 0
";

/// Whether a request may pass now, or how long until one may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused; whole seconds (at least 1) until a request would pass, for `Retry-After`.
    Deny {
        retry_after_secs: u64,
    },
}

pub struct RateLimiter {
    local: Mutex<HashMap<String, (u32, Arc<DefaultDirectRateLimiter>)>>,
    redis: Option<Arc<SharedLimit>>,
}

/// The Redis side, with whether it is believed to answer.
struct SharedLimit {
    connection: ConnectionManager,
    script: Script,
    /// Set at a failure, cleared by the probe once Redis answers again.
    down: AtomicBool,
}

impl RateLimiter {
    /// `redis_url`: share the state through Redis; connecting fails startup, since an operator
    /// who configured it expects cluster-wide limits.
    pub async fn new(redis_url: Option<&str>) -> anyhow::Result<RateLimiter> {
        let redis = match redis_url {
            Some(url) => {
                let client = redis::Client::open(url)?;
                Some(Arc::new(SharedLimit {
                    connection: ConnectionManager::new(client).await?,
                    script: Script::new(GCRA_LUA),
                    down: AtomicBool::new(false),
                }))
            }
            None => None,
        };
        Ok(RateLimiter {
            local: Mutex::new(HashMap::new()),
            redis,
        })
    }

    /// Counts one request against `webhook_id`'s limit of `per_minute` (1..=1,000,000).
    pub async fn check(&self, webhook_id: &str, per_minute: i64) -> Decision {
        let per_minute = u32::try_from(per_minute.max(1)).unwrap_or(u32::MAX);
        if let Some(shared) = &self.redis
            && !shared.down.load(Ordering::Acquire)
        {
            match shared.check(webhook_id, per_minute).await {
                Ok(decision) => return decision,
                Err(reason) => SharedLimit::went_down(shared, &reason),
            }
        }
        self.check_local(webhook_id, per_minute)
    }

    fn check_local(&self, webhook_id: &str, per_minute: u32) -> Decision {
        let limiter = {
            // Poisoning needs a panic while the map is held; nothing in here panics.
            let mut map = self.local.lock().unwrap_or_else(|e| e.into_inner());
            let entry = map
                .entry(webhook_id.to_string())
                .or_insert_with(|| (per_minute, Arc::new(Gcra::direct(quota(per_minute)))));
            // A changed setting starts a fresh bucket.
            if entry.0 != per_minute {
                *entry = (per_minute, Arc::new(Gcra::direct(quota(per_minute))));
            }
            entry.1.clone()
        };
        match limiter.check() {
            Ok(()) => Decision::Allow,
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Decision::Deny {
                    retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                }
            }
        }
    }
}

impl SharedLimit {
    async fn check(&self, webhook_id: &str, per_minute: u32) -> Result<Decision, String> {
        let interval_us = 60_000_000 / u64::from(per_minute);
        let mut connection = self.connection.clone();
        let mut invocation = self
            .script
            .key(format!("hookd:ratelimit:incoming:{webhook_id}"));
        invocation.arg(interval_us.max(1)).arg(60_000_000u64);
        let call = invocation.invoke_async::<u64>(&mut connection);
        match tokio::time::timeout(REDIS_TIMEOUT, call).await {
            Ok(Ok(0)) => Ok(Decision::Allow),
            Ok(Ok(wait_us)) => Ok(Decision::Deny {
                retry_after_secs: wait_us.div_ceil(1_000_000).max(1),
            }),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {} ms", REDIS_TIMEOUT.as_millis())),
        }
    }

    /// Takes Redis out of the path and starts the probe; only the first failure of an outage
    /// logs, so a dead Redis costs one line, not one per request.
    fn went_down(this: &Arc<SharedLimit>, reason: &str) {
        if this.down.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(
            error = reason,
            "redis rate limiter is down; limiting on this node until it answers again"
        );
        tokio::spawn(Self::probe(Arc::downgrade(this)));
    }

    /// Pings until Redis answers, then puts it back in the path. Holds only a weak reference, so
    /// it ends with its limiter.
    async fn probe(this: Weak<SharedLimit>) {
        loop {
            tokio::time::sleep(REDIS_PROBE_EVERY).await;
            let Some(shared) = this.upgrade() else { return };
            let mut connection = shared.connection.clone();
            let ping = redis::cmd("PING");
            let answer = ping.query_async::<String>(&mut connection);
            if let Ok(Ok(_)) = tokio::time::timeout(REDIS_TIMEOUT, answer).await {
                shared.down.store(false, Ordering::Release);
                tracing::info!("redis rate limiter answers again; limits are shared again");
                return;
            }
        }
    }
}

fn quota(per_minute: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_limit_allows_a_burst_then_refuses_with_retry_after() {
        let limiter = RateLimiter::new(None).await.unwrap();
        for _ in 0..3 {
            assert_eq!(limiter.check("w", 3).await, Decision::Allow);
        }
        assert_eq!(
            limiter.check("w", 3).await,
            Decision::Deny {
                retry_after_secs: 20
            }
        );
        // Other webhooks have buckets of their own; a new limit starts afresh.
        assert_eq!(limiter.check("other", 3).await, Decision::Allow);
        assert_eq!(limiter.check("w", 10).await, Decision::Allow);
    }

    /// Needs the Redis at 127.0.0.1:6379; skipped when it does not answer.
    #[tokio::test]
    async fn redis_limit_is_shared_by_limiters() {
        let Ok(a) = RateLimiter::new(Some("redis://127.0.0.1:6379")).await else {
            eprintln!("SKIPPED: no Redis at 127.0.0.1:6379");
            return;
        };
        let b = RateLimiter::new(Some("redis://127.0.0.1:6379"))
            .await
            .unwrap();
        let id = crate::domain::new_id();
        assert_eq!(a.check(&id, 3).await, Decision::Allow);
        assert_eq!(b.check(&id, 3).await, Decision::Allow);
        assert_eq!(a.check(&id, 3).await, Decision::Allow);
        // The fourth is refused whichever node sees it, and no local bucket was involved.
        let Decision::Deny { retry_after_secs } = b.check(&id, 3).await else {
            panic!("fourth request passed");
        };
        assert!((19..=20).contains(&retry_after_secs), "{retry_after_secs}");
        assert!(a.local.lock().unwrap().is_empty());
    }
}
