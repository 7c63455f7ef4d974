//! Group commit. The writes of the hot paths (publishing, recording attempts, logging) go to one
//! writer task per node, which gathers whatever is waiting into a single transaction. A commit
//! (an fsync) then serves many requests instead of one, which is what makes durable writes
//! fast on SQLite (DESIGN.md measured ~2k commits/s alone against ~15k+ requests/s grouped)
//! and spares PostgreSQL many small commits. Each write runs inside its own savepoint, so one
//! that fails (an idempotency key taken meanwhile) fails alone.

use tokio::sync::{mpsc, oneshot};

use super::{
    Db, Result, StoreError,
    deliveries::{AttemptRecord, HealthChange, write_attempt},
    events::{CHUNK, Publication, write_publication},
    inbox::{Acceptance, write_acceptance},
    logs::write_log,
    to_json,
};
use crate::domain::log::LogEntry;

/// One write waiting for the next group commit.
#[derive(Debug)]
pub enum Op {
    Publish(Publication),
    Attempt(Box<AttemptRecord>),
    Log(Box<LogEntry>),
    /// An accepted incoming request; `false` when its delivery id was taken meanwhile.
    Accept(Box<Acceptance>),
}

impl Op {
    /// The webhook whose shared rows (running totals, circuit state) this write locks; none for a
    /// publish, which only inserts.
    fn locks(&self) -> &str {
        match self {
            Op::Publish(_) => "",
            Op::Attempt(record) => &record.webhook_id,
            Op::Log(entry) => &entry.webhook_id,
            // Its log entry updates the incoming webhook's totals.
            Op::Accept(accepted) => &accepted.log.webhook_id,
        }
    }
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

/// Writes `group` in one transaction and answers each job. If the commit itself fails, every
/// job gets the error (nothing of the group was written).
async fn commit(db: &Db, mut group: Vec<Job>) {
    // Every node's group takes its row locks in webhook order. Otherwise two nodes each holding
    // one webhook's totals and waiting for the other's deadlock on PostgreSQL, which aborts both
    // groups (found by tests/cluster with three nodes: most groups failed).
    group.sort_by(|a, b| a.0.locks().cmp(b.0.locks()));
    let (ops, replies): (Vec<Op>, Vec<_>) = group.into_iter().unzip();
    let results = match write_all(db, ops).await {
        Ok(results) => results,
        Err(error) => {
            let message = error.to_string();
            let unavailable = matches!(error, StoreError::Unavailable(_));
            (0..replies.len())
                .map(|_| {
                    Err(if unavailable {
                        StoreError::Unavailable(sqlx::Error::PoolClosed)
                    } else {
                        StoreError::Corrupt(format!("group commit failed: {message}"))
                    })
                })
                .collect()
        }
    };
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send(result);
    }
}

async fn write_all(db: &Db, ops: Vec<Op>) -> Result<Vec<Result<bool>>> {
    let store = GroupStore { db };
    Ok(super::on_pool!(store, pool => {
        let mut tx = pool.begin().await?;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            // Attempts and log entries cannot conflict with anything, so they skip the savepoint
            // (two round trips each); should one fail all the same, the whole group fails.
            let op = match op {
                Op::Attempt(record) => {
                    results.push(Ok(write_attempt!(tx, *record)));
                    continue;
                }
                Op::Log(entry) => {
                    write_log!(tx, &*entry);
                    results.push(Ok(true));
                    continue;
                }
                conflicting => conflicting,
            };
            let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
            let outcome: Result<bool> = async {
                Ok(match op {
                    Op::Publish(publication) => {
                        write_publication!(savepoint, &publication);
                        true
                    }
                    Op::Accept(accepted) => write_acceptance!(savepoint, &*accepted),
                    Op::Attempt(_) | Op::Log(_) => unreachable!("written above without a savepoint"),
                })
            }
            .await;
            match outcome {
                Ok(held) => {
                    savepoint.commit().await?;
                    results.push(Ok(held));
                }
                Err(error) => {
                    savepoint.rollback().await?;
                    results.push(Err(error));
                }
            }
        }
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
