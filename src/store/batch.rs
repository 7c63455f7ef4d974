//! Group commit. The writes of the hot paths (publishing, recording attempts, logging, accepting
//! incoming requests) go to one writer per node, which gathers whatever is waiting into a single
//! transaction. A commit (an fsync) then serves many requests instead of one, which is what
//! makes durable writes fast on SQLite (DESIGN.md measured ~2k commits/s alone against ~15k+
//! requests/s grouped) and spares PostgreSQL many small commits. Each backend has its writer:
//! a thread owning the connection to a SQLite file ([`super::sqlite_writer`]), a task sending a
//! group's rows in a few fixed statements to PostgreSQL ([`super::postgres_writer`]). What a
//! group writes once its unique keys and leases are settled ([`plan`]), and how a group the
//! database refuses is split so that each write fails alone ([`commit`]), is decided here for
//! both.

use std::collections::{BTreeMap, HashSet};

use tokio::sync::oneshot;

use super::{
    Publication, Result, StoreError, deliveries::AttemptRecord, inbox::Acceptance, logs::Tally,
    notices::HealthChanges,
};
use crate::domain::{agent::AgentMessage, delivery::Delivery, event::Event, log::LogEntry};

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
pub(super) const MAX_GROUP: usize = 512;

/// Some ops being written in one transaction: each op's answer, or the error that rolled back all.
pub(super) type Writing<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Result<bool>>>> + Send + 'a>>;

/// Gives a closure the signature [`commit`] takes (closures do not infer it themselves).
pub(super) fn writer<F: FnMut(&[Op]) -> Writing<'_>>(write: F) -> F {
    write
}

/// Writes `group` in one transaction and answers each job. If the transaction fails for a
/// reason other than the database being unreachable, each write is tried again alone, so that a
/// write the database refuses fails by itself and the others of its group still commit (one
/// tenant's bad value must not fail another tenant's publish). `write` writes some ops in one
/// transaction: sqlx's for PostgreSQL, or the SQLite thread's ([`super::sqlite_writer`]).
pub(super) async fn commit(mut write: impl FnMut(&[Op]) -> Writing<'_>, group: Vec<Job>) {
    let (mut ops, replies): (Vec<Op>, Vec<_>) = group.into_iter().unzip();
    let results = match write(&ops).await {
        Ok(results) => results,
        Err(error @ StoreError::Unavailable(_)) => {
            tracing::debug!(%error, "group commit: store unavailable");
            ops.iter().map(|_| Err(unavailable())).collect()
        }
        // A group of one has been tried alone already.
        Err(error) if ops.len() == 1 => vec![salvage(&mut write, ops.remove(0), error).await],
        Err(error) => {
            tracing::warn!(%error, writes = ops.len(), "group commit refused; writing its writes one by one");
            let mut results = Vec::with_capacity(ops.len());
            for op in ops {
                results.push(match write(std::slice::from_ref(&op)).await {
                    Ok(results) => only(results),
                    Err(error) => salvage(&mut write, op, error).await,
                });
            }
            results
        }
    };
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send(result);
    }
}

/// The answer to a write that failed alone with `error`. An attempt's outcome the database
/// refuses is recorded again without the texts that came from outside (the receiver's answer,
/// what was sent): the delivery must still end or be rescheduled, or its lease would run out
/// and the same attempt would be made again and again.
async fn salvage(
    write: &mut impl FnMut(&[Op]) -> Writing<'_>,
    mut op: Op,
    error: StoreError,
) -> Result<bool> {
    if matches!(error, StoreError::Unavailable(_)) {
        return Err(unavailable());
    }
    let Op::Attempt(record) = &mut op else {
        return Err(refused(error));
    };
    tracing::error!(%error, delivery = %record.delivery_id,
        "an attempt's outcome was refused; recording it without the receiver's texts");
    record.log.strip_outside_texts(&error.to_string());
    record.last_error = record.log.error_message.clone();
    match write(std::slice::from_ref(&op)).await {
        Ok(results) => only(results),
        Err(StoreError::Unavailable(_)) => Err(unavailable()),
        Err(error) => Err(refused(error)),
    }
}

/// The result of a write made alone.
fn only(mut results: Vec<Result<bool>>) -> Result<bool> {
    results.pop().unwrap_or(Ok(false))
}

/// What each write of a group gets when the database cannot be reached (the cause is logged
/// once; `sqlx::Error` cannot be cloned for each).
fn unavailable() -> StoreError {
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
pub(super) struct Rows<'a> {
    pub(super) events: Vec<&'a Event>,
    pub(super) deliveries: Vec<&'a Delivery>,
    pub(super) messages: Vec<&'a AgentMessage>,
    pub(super) logs: Vec<&'a LogEntry>,
    pub(super) tallies: Vec<&'a Tally>,
}

impl<'a> Rows<'a> {
    fn publication(&mut self, publication: &'a Publication) {
        self.events
            .extend(publication.events.iter().map(std::sync::Arc::as_ref));
        self.deliveries.extend(&publication.deliveries);
    }
}

/// What a group writes once its unique keys and leases are settled, and each write's answer.
pub(super) struct Plan<'a> {
    pub(super) rows: Rows<'a>,
    /// What the group's attempts teach about each target, folded in the order they arrived;
    /// in target order, so that nodes lock these rows in one order.
    pub(super) health: HealthChanges<'a>,
    pub(super) results: Vec<Result<bool>>,
}

/// The group's attempts in the order they arrived.
pub(super) fn arrived(ops: &[Op]) -> Vec<&AttemptRecord> {
    ops.iter()
        .filter_map(|op| match op {
            Op::Attempt(record) => Some(record.as_ref()),
            _ => None,
        })
        .collect()
}

/// The group's attempts in delivery id order: nodes updating the same rows (a lease taken over)
/// lock them in one order.
pub(super) fn attempts(ops: &[Op]) -> Vec<&AttemptRecord> {
    let mut records = arrived(ops);
    records.sort_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
    records
}

/// The rest of a group's writes, given whether each op's unique key (an idempotency key, a
/// provider's delivery id) was fresh and which attempts' leases held.
pub(super) fn plan<'a>(ops: &'a [Op], fresh: &[bool], held: &HashSet<String>) -> Plan<'a> {
    let mut rows = Rows::default();
    let results = ops
        .iter()
        .zip(fresh)
        .map(|(op, &fresh)| match op {
            Op::Publish(publication) if fresh => {
                rows.publication(publication);
                Ok(true)
            }
            Op::Publish(_) => Err(StoreError::Conflict("idempotency key already used".into())),
            Op::Accept(accepted) => {
                if fresh {
                    rows.messages.push(&accepted.message);
                    rows.logs.push(&accepted.log);
                    rows.publication(&accepted.publication);
                }
                Ok(fresh)
            }
            Op::Attempt(record) => {
                let kept = held.contains(&record.delivery_id);
                rows.logs.push(&record.log);
                // The node that took the delivery over records its own reply.
                if let (true, Some(reply)) = (kept, &record.reply) {
                    rows.messages.push(&reply.message);
                    rows.publication(&reply.publication);
                }
                Ok(kept)
            }
            Op::Log(entry) => {
                rows.logs.push(entry);
                Ok(true)
            }
            Op::Tally(tallies) => {
                rows.tallies.extend(tallies);
                Ok(true)
            }
        })
        .collect();
    // In agent order (stable, so each inbox keeps the group's order): on PostgreSQL each row
    // takes its agent's inbox lock (see `super::inbox`), and groups taking theirs in one order
    // cannot deadlock.
    rows.messages.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    Plan {
        rows,
        health: health(ops),
        results,
    }
}

/// What the group's attempts teach about each target, whether or not their leases held.
pub(super) fn health(ops: &[Op]) -> HealthChanges<'_> {
    let mut health: HealthChanges = BTreeMap::new();
    for record in arrived(ops) {
        health
            .entry((record.target, record.webhook_id.as_str()))
            .or_default()
            .add(record.health);
    }
    health
}

/// The writes of the hot paths: each waits for its group to commit.
impl super::Store {
    /// Writes events and their deliveries atomically. With an idempotency key, a key already
    /// used (by a concurrent publish) is a `Conflict` and nothing is written.
    /// Use it through `Publisher::commit`, which starts the deliveries once written.
    pub async fn publish(&self, publication: Publication) -> Result<bool> {
        self.write(Op::Publish(publication)).await
    }

    /// Makes an accepted request durable. `false`: its delivery id was recorded meanwhile, and
    /// nothing was written.
    pub async fn accept(&self, acceptance: Acceptance) -> Result<bool> {
        self.write(Op::Accept(Box::new(acceptance))).await
    }

    /// Records an attempt: the delivery's new state (only if this lease still holds), its log
    /// entry and what it says about the target, in one transaction. `false`: the lease was lost
    /// (another node took the delivery over); the attempt is logged all the same.
    pub async fn record_attempt(&self, record: AttemptRecord) -> Result<bool> {
        self.write(Op::Attempt(Box::new(record))).await
    }

    /// Appends a log entry and counts it in the webhook's totals, atomically.
    pub async fn record_log(&self, entry: LogEntry) -> Result<()> {
        self.write(Op::Log(Box::new(entry))).await.map(drop)
    }

    /// Adds requests that have no log entry of their own to their webhooks' totals.
    pub async fn count_unlogged(&self, tallies: Vec<Tally>) -> Result<()> {
        self.write(Op::Tally(tallies)).await.map(drop)
    }

    /// Hands `op` to the writer and waits for its group to commit.
    async fn write(&self, op: Op) -> Result<bool> {
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::{
        domain::{
            delivery::{DeliveryStatus, TargetKind},
            log::{LoggedHeaders, WebhookType},
        },
        store::HealthChange,
    };

    fn attempt(response_body: &str) -> Op {
        let log = LogEntry {
            id: "log".into(),
            webhook_type: WebhookType::Outgoing,
            webhook_id: "hook".into(),
            delivery_id: Some("delivery".into()),
            event_type: Some("task.completed".into()),
            status: "delivered".into(),
            succeeded: true,
            request_payload: Some("{}".into()),
            request_headers: LoggedHeaders::redacted([("x-a", "b")], None),
            response_status: Some(200),
            response_body: Some(response_body.into()),
            error_message: None,
            retry_count: 0,
            processing_time_us: 1,
            created_at: 1,
        };
        Op::Attempt(Box::new(AttemptRecord {
            delivery_id: "delivery".into(),
            event_id: "event".into(),
            event_type: "task.completed".into(),
            target: TargetKind::Webhook,
            webhook_id: "hook".into(),
            lease_token: "lease".into(),
            status: DeliveryStatus::Delivered,
            attempts: 1,
            next_attempt_at: 1,
            last_status: Some(200),
            last_error: None,
            now: 1,
            log,
            health: HealthChange::Success,
            reply: None,
        }))
    }

    /// A refused attempt, alone in its group or among others, is recorded without the texts
    /// from outside; every other write of its group commits.
    #[tokio::test]
    async fn a_refused_attempt_is_recorded_without_outside_texts_alone_or_in_a_group() {
        for group_size in [1, 3] {
            let written: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
            let seen = Arc::clone(&written);
            let write = writer(move |ops: &[Op]| {
                let bodies: Vec<Option<String>> = ops
                    .iter()
                    .map(|op| match op {
                        Op::Attempt(record) => record.log.response_body.clone(),
                        _ => None,
                    })
                    .collect();
                let refused = bodies.iter().any(|b| b.as_deref() == Some("poison"));
                let count = ops.len();
                let seen = Arc::clone(&seen);
                Box::pin(async move {
                    if refused {
                        return Err(StoreError::Refused("poison".into()));
                    }
                    seen.lock().unwrap().extend(bodies);
                    Ok((0..count).map(|_| Ok(true)).collect())
                })
            });
            let mut group = Vec::new();
            let mut answers = Vec::new();
            for n in 0..group_size {
                let (reply, answer) = oneshot::channel();
                let body = if n == 0 { "poison" } else { "fine" };
                group.push((attempt(body), reply));
                answers.push(answer);
            }
            commit(write, group).await;
            for answer in answers {
                assert!(
                    matches!(answer.await, Ok(Ok(true))),
                    "group of {group_size}"
                );
            }
            let mut written = written.lock().unwrap().clone();
            written.sort();
            let mut expected = vec![None];
            expected.extend(vec![Some("fine".to_string()); group_size - 1]);
            assert_eq!(written, expected, "group of {group_size}");
        }
    }
}
