//! The SQLite group commit. One OS thread owns the write connection (rusqlite) and writes a whole
//! group in one call, with prepared statements cached on the connection: no statement is a round
//! trip between threads (through sqlx, a group took about 8), and no statement's text depends on
//! the group's size, so none is parsed again. sqlx keeps the read pool, the migrations and the
//! writes outside group commits; those take turns with this thread on SQLite's one write lock
//! (see `Store::turn`), so neither side sleeps in SQLite's busy handler.

use std::{collections::HashSet, path::Path, sync::Arc, sync::LazyLock, time::Duration};

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{Mutex, Notify, mpsc};

use super::{
    Result, StoreError,
    batch::{Job, MAX_GROUP, Op, arrived, attempts, commit, plan, writer},
    deliveries::HealthBinds,
    events::{DELIVERY_COLUMNS, EVENT_COLUMNS, INSERT_IDEMPOTENCY, in_list},
    inbox::{INSERT_DEDUP, MESSAGE_COLUMNS},
    logs::{LOG_COLUMNS, STATS_COLUMNS, STATS_UPSERT, sum_by_webhook},
    notices::{self, FOUND_COLUMNS, FoundRow, NOTICE_COLUMNS},
    to_json,
};

/// Statements kept prepared: the group's dozen, and the circuit updates' variants.
const CACHED_STATEMENTS: usize = 64;

/// `INSERT INTO table (columns) VALUES ($1, …)`: one row, whatever the group's size.
fn one_row(table: &str, columns: &str) -> String {
    format!(
        "INSERT INTO {table} ({columns}) VALUES ({})",
        in_list(columns.split(',').count())
    )
}

static INSERT_EVENT: LazyLock<String> = LazyLock::new(|| one_row("events", EVENT_COLUMNS));
static INSERT_DELIVERY: LazyLock<String> =
    LazyLock::new(|| one_row("deliveries", DELIVERY_COLUMNS));
static INSERT_MESSAGE: LazyLock<String> =
    LazyLock::new(|| one_row("agent_messages", MESSAGE_COLUMNS));
static INSERT_LOG: LazyLock<String> = LazyLock::new(|| one_row("webhook_logs", LOG_COLUMNS));
static INSERT_NOTICE: LazyLock<String> =
    LazyLock::new(|| one_row("webhook_notices", NOTICE_COLUMNS));
static FIND_WEBHOOK: LazyLock<String> = LazyLock::new(|| {
    // As `notices::read_found`: a webhook the group only resets (`?2`) is read if not clean.
    format!(
        "SELECT {FOUND_COLUMNS} FROM outgoing_webhooks WHERE id = ?1
             AND (NOT ?2 OR consecutive_failures <> 0 OR circuit_open_until IS NOT NULL)"
    )
});
static UPSERT_STATS: LazyLock<String> =
    LazyLock::new(|| format!("{} {STATS_UPSERT}", one_row("webhook_stats", STATS_COLUMNS)));

/// An attempt's outcome, applied only if its lease still holds.
const UPDATE_ATTEMPT: &str =
    "UPDATE deliveries SET status = ?3, attempts = ?4, next_attempt_at = ?5,
        last_status = ?6, last_error = ?7, lease_token = NULL, updated_at = ?8
     WHERE id = ?1 AND lease_token = ?2";

/// Opens the write connection on `path` and starts its thread; it ends when every sender (every
/// clone of the store) is gone. `turn` is held while a group is written; `noticed` is told when
/// a group wrote notices.
pub(super) fn start(
    path: &Path,
    turn: Arc<Mutex<()>>,
    noticed: Arc<Notify>,
) -> Result<mpsc::Sender<Job>> {
    let mut connection = open(path)?;
    let (sender, mut receiver) = mpsc::channel::<Job>(4 * MAX_GROUP);
    // Only to run `batch::commit` (shared with the sqlx path), whose writes here never wait.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))?;
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || {
            let mut group = Vec::with_capacity(MAX_GROUP);
            while let Some(job) = receiver.blocking_recv() {
                group.push(job);
                let _turn = turn.blocking_lock();
                // What arrived while the turn was someone else's joins this group.
                while group.len() < MAX_GROUP {
                    match receiver.try_recv() {
                        Ok(job) => group.push(job),
                        Err(_) => break,
                    }
                }
                let written = writer(|ops| {
                    Box::pin(std::future::ready(write(&mut connection, ops, &noticed)))
                });
                runtime.block_on(commit(written, std::mem::take(&mut group)));
            }
        })
        .map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))?;
    Ok(sender)
}

/// The same settings as sqlx's connections (`Store::connect`): a commit survives power loss.
fn open(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "foreign_keys", true)?;
    connection.busy_timeout(Duration::from_secs(10))?;
    connection.set_prepared_statement_cache_capacity(CACHED_STATEMENTS);
    Ok(connection)
}

/// Writes `ops` in one transaction; each op's answer, or the error that rolled it all back.
fn write(connection: &mut Connection, ops: &[Op], noticed: &Notify) -> Result<Vec<Result<bool>>> {
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // The unique keys a write can lose to another decide whether the rest of it is written.
    let mut fresh = Vec::with_capacity(ops.len());
    for op in ops {
        fresh.push(match op {
            Op::Publish(publication) => match &publication.idempotency {
                Some(idem) => {
                    tx.prepare_cached(INSERT_IDEMPOTENCY)?.execute(params![
                        publication.tenant.company_id,
                        publication.tenant.user_id,
                        idem.key,
                        idem.response,
                        idem.request_hash,
                        publication.events.first().map_or(0, |e| e.created_at),
                    ])? == 1
                }
                None => true,
            },
            Op::Accept(accepted) => match &accepted.dedup {
                Some((key, response)) => {
                    tx.prepare_cached(INSERT_DEDUP)?.execute(params![
                        accepted.log.webhook_id,
                        key,
                        to_json(response),
                        accepted.message.created_at,
                    ])? == 1
                }
                None => true,
            },
            Op::Attempt(_) | Op::Log(_) | Op::Tally(_) => true,
        });
    }
    let mut held = HashSet::new();
    {
        let mut update = tx.prepare_cached(UPDATE_ATTEMPT)?;
        for record in attempts(ops) {
            let done = update.execute(params![
                record.delivery_id,
                record.lease_token,
                record.status.as_str(),
                record.attempts,
                record.next_attempt_at,
                record.last_status,
                record.last_error,
                record.now,
            ])?;
            if done == 1 {
                held.insert(record.delivery_id.clone());
            }
        }
    }
    let plan = plan(ops, &fresh, &held);
    let rows = &plan.rows;
    let mut found = std::collections::HashMap::new();
    {
        let mut find = tx.prepare_cached(&FIND_WEBHOOK)?;
        for (id, only_resets) in notices::webhooks_of(&plan.health) {
            if let Some(row) = find
                .query_row(params![id, only_resets], FoundRow::from_sqlite)
                .optional()?
            {
                found.extend([row.into_entry()]);
            }
        }
    }
    let notices = notices::of_attempts(&arrived(ops), &plan.health, &held, &found);

    {
        let mut insert = tx.prepare_cached(&INSERT_EVENT)?;
        for event in &rows.events {
            insert.execute(params![
                event.id,
                event.tenant.user_id,
                event.tenant.company_id,
                event.event_type,
                event.agent_id,
                event.agent_name,
                to_json(&event.data),
                event.metadata.as_ref().map(to_json),
                event.created_at,
            ])?;
        }
    }
    {
        let mut insert = tx.prepare_cached(&INSERT_DELIVERY)?;
        for delivery in &rows.deliveries {
            insert.execute(params![
                delivery.id,
                delivery.event_id,
                delivery.target.as_str(),
                delivery.webhook_id,
                delivery.company_id,
                delivery.event_type,
                delivery.status.as_str(),
                delivery.attempts,
                delivery.next_attempt_at,
                delivery.lease_token,
                delivery.created_at,
                delivery.updated_at,
                delivery.fifo,
            ])?;
        }
    }
    {
        let mut insert = tx.prepare_cached(&INSERT_MESSAGE)?;
        for message in &rows.messages {
            insert.execute(params![
                message.id,
                message.agent_id,
                message.tenant.user_id,
                message.tenant.company_id,
                message.incoming_webhook_id,
                message.kind.as_str(),
                to_json(&message.content),
                message.created_at,
            ])?;
        }
    }
    {
        let mut insert = tx.prepare_cached(&INSERT_LOG)?;
        for entry in &rows.logs {
            insert.execute(params![
                entry.id,
                entry.webhook_type.as_str(),
                entry.webhook_id,
                entry.delivery_id,
                entry.event_type,
                entry.status,
                entry.request_payload,
                entry.request_headers.as_json(),
                entry.response_status,
                entry.response_body,
                entry.error_message,
                entry.retry_count,
                entry.processing_time_us / 1000,
                entry.processing_time_us,
                entry.created_at,
            ])?;
        }
    }
    {
        let mut upsert = tx.prepare_cached(&UPSERT_STATS)?;
        for (webhook_id, webhook_type, totals) in sum_by_webhook(&rows.logs, &rows.tallies) {
            upsert.execute(params![
                webhook_id,
                webhook_type.as_str(),
                totals.total,
                totals.succeeded,
                totals.failed,
                totals.total_us / 1000,
                totals.total_us,
                totals.last_success_at,
                totals.last_failure_at,
            ])?;
        }
    }
    {
        let mut insert = tx.prepare_cached(&INSERT_NOTICE)?;
        for notice in &notices {
            insert.execute(params![
                notice.id,
                notice.tenant.user_id,
                notice.tenant.company_id,
                notice.webhook_id,
                notice.event_type,
                to_json(&notice.data),
                notice.created_at,
            ])?;
        }
    }
    for ((target, id), fold) in &plan.health {
        if !notices::health_written((*target, id), fold, &found) {
            continue;
        }
        for (sql, binds) in fold.statements(*target) {
            let mut statement = tx.prepare_cached(&sql)?;
            // `$n` names a parameter in SQLite; these statements use them out of order.
            match binds {
                HealthBinds::None => statement.execute(&[("$1", id)])?,
                HealthBinds::Failures(count, threshold, until) => statement.execute(&[
                    ("$1", id as &dyn rusqlite::ToSql),
                    ("$2", &count),
                    ("$3", &threshold),
                    ("$4", &until),
                ])?,
                HealthBinds::Reason(reason) => statement.execute(&[("$1", id), ("$2", &reason)])?,
            };
        }
    }
    tx.commit()?;
    if !notices.is_empty() {
        noticed.notify_one();
    }
    Ok(plan.results)
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use crate::{
        domain::{
            delivery::{Delivery, TargetKind},
            event::Event,
            tenant::Tenant,
        },
        store::{Publication, Store, StoreError},
    };

    fn publication(company: &str, n: i64) -> Publication {
        let tenant = Tenant {
            user_id: "user".into(),
            company_id: company.into(),
        };
        let event = Event {
            id: uuid::Uuid::now_v7().to_string(),
            tenant: tenant.clone(),
            event_type: "chat.completed".into(),
            agent_id: None,
            agent_name: None,
            data: serde_json::json!({ "n": n }),
            metadata: None,
            created_at: n,
        };
        let delivery = Delivery::pending(&event, TargetKind::Webhook, "webhook", n);
        Publication {
            tenant,
            events: vec![Arc::new(event)],
            deliveries: vec![delivery],
            idempotency: None,
        }
    }

    #[tokio::test]
    async fn a_write_the_database_refuses_fails_alone_and_the_rest_of_its_group_commits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("hookd.db").display());
        let store = Store::connect(&url).await.expect("store");
        let first = publication("innocent", 0);
        let taken = first.deliveries[0].id.clone();
        store.publish(first).await.expect("first publish");
        // A delivery id that exists already: SQLite refuses the row (primary key).
        let mut poison = publication("hostile", 1);
        poison.deliveries[0].id = taken;
        let others: Vec<Publication> = (2..52).map(|n| publication("innocent", n)).collect();
        let ids: Vec<String> = others.iter().map(|p| p.events[0].id.clone()).collect();

        // Holding the write turn lets every write queue, so they are written as one group.
        let turn = store.turn.lock().await;
        let poisoned = tokio::spawn({
            let store = store.clone();
            async move { store.publish(poison).await }
        });
        let rest: Vec<_> = others
            .into_iter()
            .map(|publication| {
                let store = store.clone();
                tokio::spawn(async move { store.publish(publication).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(turn);

        assert!(matches!(
            poisoned.await.expect("task"),
            Err(StoreError::Conflict(_))
        ));
        for write in rest {
            write.await.expect("task").expect("an innocent write");
        }
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        assert_eq!(store.events_by_id(&ids).await.expect("events").len(), 50);
    }
}
