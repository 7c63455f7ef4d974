//! What the HTTP side of a node shares: the API's handlers and the dashboard's take it as their
//! state, so it belongs to neither (the dashboard calls the API; the API knows nothing of it).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    config::Config,
    delivery::{catalogue::Catalogue, publish::Publisher, sender::Sender},
    domain::throttle::FailureThrottle,
    ingest::Ingest,
    store::Store,
};

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    pub publisher: Publisher,
    /// The types each company may publish and subscribe to, with compiled schemas.
    pub catalogue: Arc<Catalogue>,
    /// Shared with the workers: one connection pool to targets.
    pub sender: Arc<Sender>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub ingest: Arc<Ingest>,
    /// Turns true when the node starts shutting down; long-lived answers (event streams) end
    /// then, so that draining connections does not wait on them.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Failed authentications per client address (see [`crate::api::auth`]).
    pub auth_failures: Arc<FailureThrottle>,
    /// Turns to build answers that may be large.
    pub large_answers: Arc<LargeAnswers>,
}

/// Turns to build an answer that is held whole in memory while it is made and may be large: a
/// company's webhooks or event types listed whole (up to ~100 MB at the quotas), a page of
/// logs (1,000 entries with their 16 KiB bodies: ~35 MB). Each costs about three times its size
/// while it is built (rows, then answer types, then JSON), so without a bound a few concurrent
/// listings with a read-only key took a node to 908 MiB, and more would take it down. At most
/// one per core is built at once, and one per company, so that a company asking for many does
/// not queue the others' behind its own; the rest wait their turn, and past
/// [`LargeAnswers::WAIT`] are answered 503.
pub struct LargeAnswers {
    turns: Arc<Semaphore>,
    /// Each company's one turn; entries nobody holds or waits for are swept as it grows.
    companies: Mutex<HashMap<String, Arc<Semaphore>>>,
    wait: Duration,
}

/// A turn: the company's and one of the node's, held until the answer is made.
pub struct LargeTurn {
    _company: OwnedSemaphorePermit,
    _node: OwnedSemaphorePermit,
}

impl LargeAnswers {
    pub const WAIT: Duration = Duration::from_secs(5);

    /// Companies remembered before those without a turn in use are forgotten.
    const SWEEP_PAST: usize = 1_024;

    pub fn new(turns: usize, wait: Duration) -> LargeAnswers {
        LargeAnswers {
            turns: Arc::new(Semaphore::new(turns.max(1))),
            companies: Mutex::default(),
            wait,
        }
    }

    /// A turn for `company`, within the wait; `None` when none came.
    pub async fn turn(&self, company: &str) -> Option<LargeTurn> {
        let company_turns = {
            let mut companies = self.companies.lock().unwrap_or_else(|e| e.into_inner());
            if companies.len() >= Self::SWEEP_PAST {
                // Only the map holds an idle company's semaphore: no turn taken, none awaited.
                companies.retain(|_, turns| Arc::strong_count(turns) > 1);
            }
            let turns = companies.entry(company.to_string());
            Arc::clone(turns.or_insert_with(|| Arc::new(Semaphore::new(1))))
        };
        let both = async {
            let company = company_turns.acquire_owned().await.ok()?;
            let node = Arc::clone(&self.turns).acquire_owned().await.ok()?;
            Some(LargeTurn {
                _company: company,
                _node: node,
            })
        };
        tokio::time::timeout(self.wait, both).await.ok()?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_large_answer_waits_its_turn_and_gives_up_after_the_wait() {
        let answers = LargeAnswers::new(2, Duration::from_millis(50));
        let first = answers.turn("acme").await.expect("a free turn");
        assert!(answers.turn("acme").await.is_none(), "one per company");
        let other = answers
            .turn("globex")
            .await
            .expect("another company's turn");
        assert!(
            answers.turn("initech").await.is_none(),
            "the node's two are held"
        );
        drop(first);
        assert!(
            answers.turn("acme").await.is_some(),
            "given back when the answer is made"
        );
        drop(other);
    }
}
