//! Group commit for accepted requests. Each accepted request must be durable before its 202, and
//! a commit costs an fsync (~1 ms under load), so one writer task gathers the requests that
//! arrive while the previous commit runs and makes them durable in one transaction, then
//! publishes their events in one publish per tenant. Under load a batch holds roughly the number
//! of requests in flight; alone, a request waits for nobody.

use std::collections::BTreeMap;

use tokio::sync::{mpsc, oneshot};

use crate::{
    delivery::publish::Publisher,
    domain::{event::NewEvent, tenant::Tenant},
    ingest::announce,
    store::{Acceptance, Store, StoreError},
};

/// Upper bound of one batch: no less than the requests expected in flight (64 clients and more).
const MAX_BATCH: usize = 256;
/// Requests waiting for the writer; beyond this, senders wait (backpressure, not unbounded memory).
const QUEUE: usize = 4 * MAX_BATCH;

/// One accepted request on its way to the store, with the events it announces.
pub struct Job {
    pub acceptance: Acceptance,
    pub tenant: Tenant,
    pub events: Vec<NewEvent>,
}

/// `Ok(true)`: durable; `Ok(false)`: its delivery id was accepted meanwhile, nothing written.
type Reply = Result<bool, StoreError>;

/// Handle to the writer task; the task ends when the last handle is dropped.
pub struct Writer {
    queue: mpsc::Sender<(Job, oneshot::Sender<Reply>)>,
}

impl Writer {
    pub fn spawn(store: Store, publisher: Publisher) -> Writer {
        let (queue, jobs) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, publisher, jobs));
        Writer { queue }
    }

    /// Makes `job` durable (in some batch) and publishes its events.
    pub async fn write(&self, job: Job) -> Reply {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((job, reply))
            .await
            .map_err(|_| StoreError::Corrupt("the inbox writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Corrupt("the inbox writer dropped a request".into()))?
    }
}

async fn run(
    store: Store,
    publisher: Publisher,
    mut jobs: mpsc::Receiver<(Job, oneshot::Sender<Reply>)>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let acceptances: Vec<&Acceptance> = batch.iter().map(|(job, _)| &job.acceptance).collect();
        let outcomes: Vec<Reply> = match store.accept_batch(&acceptances).await {
            Ok(written) => written.into_iter().map(Ok).collect(),
            // One bad request must not fail its neighbours: retry each alone for its own answer.
            Err(_) => {
                let mut outcomes = Vec::with_capacity(batch.len());
                for acceptance in &acceptances {
                    outcomes.push(store.accept_batch(&[acceptance]).await.map(|w| w[0]));
                }
                outcomes
            }
        };
        let mut events: BTreeMap<(String, String), (Tenant, Vec<NewEvent>)> = BTreeMap::new();
        for ((job, _), outcome) in batch.iter_mut().zip(&outcomes) {
            if matches!(outcome, Ok(true)) {
                let key = (job.tenant.company_id.clone(), job.tenant.user_id.clone());
                let entry = events
                    .entry(key)
                    .or_insert_with(|| (job.tenant.clone(), Vec::new()));
                entry.1.append(&mut job.events);
            }
        }
        for (tenant, events) in events.into_values() {
            announce(&publisher, &tenant, events).await;
        }
        for ((_, reply), outcome) in batch.drain(..).zip(outcomes) {
            // The requester may have gone (client disconnected); the write stands regardless.
            let _ = reply.send(outcome);
        }
    }
}
