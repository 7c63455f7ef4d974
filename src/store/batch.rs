//! Group commit. The writes of the hot paths (publishing, recording attempts, logging, accepting
//! incoming requests) go to one writer task per node, which gathers whatever is waiting into a
//! single transaction. A commit (an fsync) then serves many requests instead of one, which is
//! what makes durable writes fast on SQLite (DESIGN.md measured ~2k commits/s alone against
//! ~15k+ requests/s grouped) and spares PostgreSQL many small commits. Within the transaction the
//! rows of all the group's writes go out together: one multi-row statement per table (events,
//! deliveries, inbox messages, log entries, totals, attempt outcomes) rather than a few
//! statements per write, since each statement is a round trip to the database.

use std::collections::BTreeMap;

use tokio::sync::{mpsc, oneshot};

use super::{
    Db, Publication, Result, StoreError,
    deliveries::{AttemptRecord, HealthFold, update_attempts, update_health},
    events::{insert_deliveries, insert_events, insert_idempotency},
    inbox::{Acceptance, insert_dedup, insert_messages},
    logs::{Tally, insert_logs},
};
use crate::domain::{
    agent::AgentMessage, delivery::Delivery, delivery::TargetKind, event::Event, log::LogEntry,
};

/// One write waiting for the next group commit.
#[derive(Debug)]
pub enum Op {
    /// A publish whose idempotency key was taken meanwhile fails with `Conflict`, writing nothing.
    Publish(Publication),
    /// `false`: the delivery's lease was lost (the attempt is logged all the same).
    Attempt(Box<AttemptRecord>),
    Log(Box<LogEntry>),
    /// Requests counted in their webhooks' totals without log entries.
    Tally(Vec<Tally>),
    /// An accepted incoming request; `false` when its delivery id was taken meanwhile.
    Accept(Box<Acceptance>),
}

pub(super) type Job = (Op, oneshot::Sender<Result<bool>>);

/// Most writes in one transaction: enough to cover every request in flight at the usual
/// concurrency, small enough to keep one transaction short.
const MAX_GROUP: usize = 512;

/// Starts the writer task; it ends when every sender (every clone of the store) is gone.
pub(super) fn start(db: Db) -> mpsc::Sender<Job> {
    let (sender, mut receiver) = mpsc::channel::<Job>(4 * MAX_GROUP);
    tokio::spawn(async move {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while receiver.recv_many(&mut group, MAX_GROUP).await > 0 {
            commit(&db, std::mem::take(&mut group)).await;
        }
    });
    sender
}

/// Writes `group` in one transaction and answers each job. If the transaction fails for a
/// reason other than the database being unreachable, each write is tried again alone, so that a
/// write the database refuses fails by itself and the others of its group still commit (one
/// tenant's bad value must not fail another tenant's publish).
async fn commit(db: &Db, group: Vec<Job>) {
    let (ops, replies): (Vec<Op>, Vec<_>) = group.into_iter().unzip();
    let results = match write_all(db, &ops).await {
        Ok(results) => results,
        Err(error @ StoreError::Unavailable(_)) => {
            let message = error.to_string();
            (0..replies.len())
                .map(|_| Err(unavailable(&message)))
                .collect()
        }
        Err(error) if ops.len() > 1 => {
            tracing::warn!(%error, writes = ops.len(), "group commit refused; writing its writes one by one");
            let mut results = Vec::with_capacity(ops.len());
            for op in ops {
                results.push(alone(db, op).await);
            }
            results
        }
        Err(error) => vec![Err(refused(error))],
    };
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send(result);
    }
}

/// One write in a transaction of its own. An attempt's outcome the database refuses is recorded
/// again without the texts that came from outside (the receiver's answer, what was sent): the
/// delivery must still end or be rescheduled, or its lease would run out and the same attempt
/// would be made again and again.
async fn alone(db: &Db, mut op: Op) -> Result<bool> {
    let result = match write_all(db, std::slice::from_ref(&op)).await {
        Ok(mut results) => return results.pop().unwrap_or(Ok(false)),
        Err(error @ StoreError::Unavailable(_)) => return Err(unavailable(&error.to_string())),
        Err(error) => error,
    };
    let Op::Attempt(record) = &mut op else {
        return Err(refused(result));
    };
    tracing::error!(error = %result, delivery = %record.delivery_id,
        "an attempt's outcome was refused; recording it without the receiver's texts");
    record.log.strip_outside_texts(&result.to_string());
    record.last_error = record.log.error_message.clone();
    match write_all(db, std::slice::from_ref(&op)).await {
        Ok(mut results) => results.pop().unwrap_or(Ok(false)),
        Err(error @ StoreError::Unavailable(_)) => Err(unavailable(&error.to_string())),
        Err(error) => Err(refused(error)),
    }
}

fn unavailable(message: &str) -> StoreError {
    tracing::debug!(message, "group commit: store unavailable");
    StoreError::Unavailable(sqlx::Error::PoolClosed)
}

/// A write the database refused, as it is (a lost race on a unique key stays a `Conflict`).
fn refused(error: StoreError) -> StoreError {
    if !matches!(error, StoreError::Conflict(_)) {
        tracing::error!(%error, "the database refused a write");
    }
    error
}

/// The rows a group writes, gathered from its operations.
#[derive(Default)]
struct Rows<'a> {
    events: Vec<&'a Event>,
    deliveries: Vec<&'a Delivery>,
    messages: Vec<&'a AgentMessage>,
    logs: Vec<&'a LogEntry>,
    tallies: Vec<&'a Tally>,
    /// With their position in the group.
    attempts: Vec<(usize, &'a AttemptRecord)>,
}

impl<'a> Rows<'a> {
    fn publication(&mut self, publication: &'a Publication) {
        self.events
            .extend(publication.events.iter().map(std::sync::Arc::as_ref));
        self.deliveries.extend(&publication.deliveries);
    }
}

async fn write_all(db: &Db, ops: &[Op]) -> Result<Vec<Result<bool>>> {
    let store = GroupStore { db };
    Ok(super::on_pool!(store, pool => {
        let mut tx = pool.begin().await?;
        let mut results: Vec<Result<bool>> = Vec::with_capacity(ops.len());
        let mut rows = Rows::default();
        // Only the unique keys a write can lose to another (an idempotency key, a provider's
        // delivery id) are written one by one: their outcome decides whether the rest is.
        for (position, op) in ops.iter().enumerate() {
            results.push(Ok(true));
            match op {
                Op::Publish(publication) => {
                    if insert_idempotency!(tx, publication) {
                        rows.publication(publication);
                    } else {
                        results[position] =
                            Err(StoreError::Conflict("idempotency key already used".into()));
                    }
                }
                Op::Accept(accepted) => {
                    let fresh = insert_dedup!(tx, accepted);
                    if fresh {
                        rows.messages.push(&accepted.message);
                        rows.logs.push(&accepted.log);
                        rows.publication(&accepted.publication);
                    }
                    results[position] = Ok(fresh);
                }
                Op::Attempt(record) => rows.attempts.push((position, record)),
                Op::Log(entry) => rows.logs.push(entry),
                Op::Tally(tallies) => rows.tallies.extend(tallies),
            }
        }
        // Deliveries in id order: nodes updating the same rows (a lease taken over) lock them in
        // one order.
        rows.attempts.sort_by(|a, b| a.1.delivery_id.cmp(&b.1.delivery_id));
        let records: Vec<&AttemptRecord> = rows.attempts.iter().map(|(_, r)| *r).collect();
        let held = update_attempts!(tx, &records);
        let mut health: BTreeMap<(TargetKind, &str), HealthFold> = BTreeMap::new();
        // Folded in the order the attempts arrived.
        rows.attempts.sort_by_key(|(position, _)| *position);
        for (position, record) in std::mem::take(&mut rows.attempts) {
            let kept = held.contains(&record.delivery_id);
            results[position] = Ok(kept);
            rows.logs.push(&record.log);
            health
                .entry((record.target, record.webhook_id.as_str()))
                .or_default()
                .add(record.health);
            // The node that took the delivery over records its own reply.
            if let (true, Some(reply)) = (kept, &record.reply) {
                rows.messages.push(&reply.message);
                rows.publication(&reply.publication);
            }
        }
        insert_events!(tx, &rows.events);
        insert_deliveries!(tx, &rows.deliveries);
        insert_messages!(tx, &rows.messages);
        insert_logs!(tx, &rows.logs, &rows.tallies);
        update_health!(tx, health.iter().map(|((target, id), fold)| ((*target, *id), fold)));
        tx.commit().await?;
        results
    }))
}

/// Lets [`on_pool!`](super::on_pool) dispatch on a bare [`Db`].
struct GroupStore<'a> {
    db: &'a Db,
}

impl super::Store {
    /// Hands `op` to the writer and waits for its group to commit.
    pub(super) async fn write(&self, op: Op) -> Result<bool> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send((op, reply))
            .await
            .map_err(|_| StoreError::Unavailable(sqlx::Error::PoolClosed))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable(sqlx::Error::PoolClosed))?
    }
}
