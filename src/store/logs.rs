//! The attempt/request log and the running totals kept beside it.

use std::collections::BTreeMap;

use super::{Db, Result, Store, StoreError, on_pool, on_writer, partitions};
use crate::domain::log::{LogEntry, LoggedHeaders, Totals, WebhookType, Window, nearest_rank};

#[derive(sqlx::FromRow)]
struct LogRow {
    id: String,
    webhook_type: String,
    webhook_id: String,
    delivery_id: Option<String>,
    event_type: Option<String>,
    status: String,
    request_payload: Option<String>,
    request_headers: String,
    response_status: Option<i64>,
    response_body: Option<String>,
    error_message: Option<String>,
    retry_count: i64,
    processing_time_us: i64,
    created_at: i64,
}

impl TryFrom<LogRow> for LogEntry {
    type Error = StoreError;

    fn try_from(row: LogRow) -> Result<LogEntry> {
        let webhook_type = match row.webhook_type.as_str() {
            "incoming" => WebhookType::Incoming,
            "agent" => WebhookType::Agent,
            _ => WebhookType::Outgoing,
        };
        Ok(LogEntry {
            succeeded: LogEntry::counts_as_success(&row.status),
            id: row.id,
            webhook_type,
            webhook_id: row.webhook_id,
            delivery_id: row.delivery_id,
            event_type: row.event_type,
            status: row.status,
            request_payload: row.request_payload,
            request_headers: LoggedHeaders::stored(row.request_headers),
            response_status: row.response_status,
            response_body: row.response_body,
            error_message: row.error_message,
            retry_count: row.retry_count,
            processing_time_us: row.processing_time_us,
            created_at: row.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct TotalsRow {
    total: i64,
    succeeded: i64,
    failed: i64,
    total_us: i64,
    last_success_at: Option<i64>,
    last_failure_at: Option<i64>,
}

/// Which log entries to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub status: Option<String>,
    pub event_type: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

/// The columns a log entry is inserted with, in the order of its bind values. The processing
/// time goes in twice: in microseconds (migration 0010), and in the whole milliseconds the
/// column kept before, which stays NOT NULL and is what nodes of the previous version read while
/// a cluster is being upgraded.
pub(super) const LOG_COLUMNS: &str = "id, webhook_type, webhook_id, delivery_id, event_type, status, \
     request_payload, request_headers, response_status, response_body, error_message, retry_count, \
     processing_time_ms, processing_time_us, created_at";

/// A log entry's processing time in microseconds; entries written before migration 0010 have
/// only their whole milliseconds.
const PROCESSING_US: &str = "COALESCE(processing_time_us, processing_time_ms * 1000)";

/// The columns a webhook's totals are added with, in the order of their bind values; the summed
/// time in microseconds and, for the reason given at [`LOG_COLUMNS`], in whole milliseconds.
pub(super) const STATS_COLUMNS: &str = "webhook_id, webhook_type, total, succeeded, failed, \
     total_ms, total_us, last_success_at, last_failure_at";

/// Adds the inserted totals to those already kept.
pub(super) const STATS_UPSERT: &str = "ON CONFLICT (webhook_id) DO UPDATE SET
    total = webhook_stats.total + excluded.total,
    succeeded = webhook_stats.succeeded + excluded.succeeded,
    failed = webhook_stats.failed + excluded.failed,
    total_ms = webhook_stats.total_ms + excluded.total_ms,
    total_us = webhook_stats.total_us + excluded.total_us,
    last_success_at = COALESCE(excluded.last_success_at, webhook_stats.last_success_at),
    last_failure_at = COALESCE(excluded.last_failure_at, webhook_stats.last_failure_at)";

/// The entries' totals per webhook, with `tallies` added, in webhook order.
pub(super) fn sum_by_webhook<'a>(
    entries: &[&'a LogEntry],
    tallies: &[&'a Tally],
) -> Vec<(&'a str, WebhookType, Totals)> {
    let mut sums: BTreeMap<&str, (WebhookType, Totals)> = BTreeMap::new();
    for entry in entries {
        let (_, totals) = sums
            .entry(&entry.webhook_id)
            .or_insert_with(|| (entry.webhook_type, Totals::default()));
        totals.total += 1;
        totals.total_us += entry.processing_time_us;
        let at = Some(entry.created_at);
        if entry.succeeded {
            totals.succeeded += 1;
            totals.last_success_at = totals.last_success_at.max(at);
        } else {
            totals.failed += 1;
            totals.last_failure_at = totals.last_failure_at.max(at);
        }
    }
    for tally in tallies {
        let (_, totals) = sums
            .entry(&tally.webhook_id)
            .or_insert_with(|| (tally.webhook_type, Totals::default()));
        totals.total += tally.failed;
        totals.failed += tally.failed;
        totals.total_us += tally.total_us;
        totals.last_failure_at = totals.last_failure_at.max(Some(tally.last_at));
    }
    sums.into_iter()
        .map(|(id, (kind, totals))| (id, kind, totals))
        .collect()
}

/// Failed requests of one webhook counted without log entries of their own (refusals left out
/// of a flood's log), for its totals.
#[derive(Debug, Clone)]
pub struct Tally {
    pub webhook_id: String,
    pub webhook_type: WebhookType,
    pub failed: i64,
    /// Their processing times summed, in microseconds.
    pub total_us: i64,
    pub last_at: i64,
}

/// How many recent entries the latency percentiles are computed over: bounded, and read
/// through the (webhook_id, created_at) index.
const PERCENTILE_WINDOW: i64 = 1_000;

/// Rows deleted by one statement of retention.
const BATCH: u64 = 5_000;

/// What makes a delivery finished, as the index of finished deliveries (PostgreSQL migration
/// 0014) states it.
const FINISHED: &str = "status <> 'pending'";

/// The condition of the index of failures, as migration 0006 writes it.
fn failures_predicate() -> String {
    format!(
        "status NOT IN ('{}')",
        LogEntry::SUCCESS_STATUSES.join("', '")
    )
}

impl Store {
    /// Log entries of one webhook, newest first. The caller has checked ownership.
    pub async fn list_logs(&self, webhook_id: &str, query: &LogQuery) -> Result<Vec<LogEntry>> {
        // Asking for a failure status also says "not a success" in the words of the index of
        // failures (migration 0006), which lets the database use it.
        let failures_only = match &query.status {
            Some(status) if !LogEntry::counts_as_success(status) => {
                format!("AND {}", failures_predicate())
            }
            _ => String::new(),
        };
        let sql = format!(
            "SELECT id, webhook_type, webhook_id, delivery_id, event_type, status, request_payload,
                request_headers, response_status, response_body, error_message, retry_count,
                {PROCESSING_US} AS processing_time_us, created_at
             FROM webhook_logs
             WHERE webhook_id = $1 {failures_only} AND ($2 IS NULL OR status = $2)
                AND ($3 IS NULL OR event_type = $3)
             ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5"
        );
        let rows: Vec<LogRow> = on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(webhook_id)
        .bind(&query.status)
        .bind(&query.event_type)
        .bind(query.limit)
        .bind(query.offset)
        .fetch_all(pool)
        .await?);
        rows.into_iter().map(LogEntry::try_from).collect()
    }

    /// Running totals of one webhook (zeros before its first entry).
    pub async fn webhook_totals(&self, webhook_id: &str) -> Result<Totals> {
        let row: Option<TotalsRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT total, succeeded, failed, total_us, last_success_at, last_failure_at
             FROM webhook_stats WHERE webhook_id = $1",
        )
        .bind(webhook_id)
        .fetch_optional(pool)
        .await?);
        Ok(row.map_or_else(Totals::default, |r| Totals {
            total: r.total,
            succeeded: r.succeeded,
            failed: r.failed,
            total_us: r.total_us,
            last_success_at: r.last_success_at,
            last_failure_at: r.last_failure_at,
        }))
    }

    /// Processing times (µs) of the most recent entries, sorted ascending.
    pub async fn recent_latencies(&self, webhook_id: &str) -> Result<Vec<i64>> {
        let sql = format!(
            "SELECT {PROCESSING_US} FROM webhook_logs WHERE webhook_id = $1
             ORDER BY created_at DESC LIMIT $2"
        );
        let mut times: Vec<i64> = on_pool!(self, pool => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(webhook_id)
        .bind(PERCENTILE_WINDOW)
        .fetch_all(pool)
        .await?);
        times.sort_unstable();
        Ok(times)
    }

    /// The entries logged since `since` (unix ms), summed up in the database: counts, then the
    /// 95th-percentile processing time by its rank. Both read one range of the (webhook, time)
    /// index and send back a number, however busy the window was (fetching its rows cost 23 ms
    /// per call for 10,000 entries).
    pub async fn window_since(&self, webhook_id: &str, since: i64) -> Result<Window> {
        let sql = format!(
            "SELECT COUNT(*), SUM(CASE WHEN status IN ('{}') THEN 1 ELSE 0 END) FROM webhook_logs
             WHERE webhook_id = $1 AND created_at >= $2",
            LogEntry::SUCCESS_STATUSES.join("', '")
        );
        let (total, succeeded): (i64, Option<i64>) = on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(webhook_id)
            .bind(since)
            .fetch_one(pool)
            .await?);
        let rank = nearest_rank(usize::try_from(total).unwrap_or(0), 0.95);
        let p95_sql = format!(
            "SELECT {PROCESSING_US} AS us FROM webhook_logs WHERE webhook_id = $1 AND created_at >= $2
             ORDER BY us LIMIT 1 OFFSET $3"
        );
        let p95_us = match rank.and_then(|rank| i64::try_from(rank - 1).ok()) {
            None => None,
            Some(offset) => on_pool!(self, pool => sqlx::query_scalar(sqlx::AssertSqlSafe(p95_sql))
            .bind(webhook_id)
            .bind(since)
            .bind(offset)
            .fetch_optional(pool)
            .await?),
        };
        Ok(Window {
            total,
            succeeded: succeeded.unwrap_or(0),
            p95_us,
        })
    }

    /// Keeps at most `max` log entries for each webhook that has logged more than that.
    pub async fn cap_logs_per_webhook(&self, max: i64) -> Result<u64> {
        let crowded: Vec<String> = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT webhook_id FROM webhook_stats WHERE total > $1",
        )
        .bind(max)
        .fetch_all(pool)
        .await?);
        let mut removed = 0;
        for webhook_id in crowded {
            removed += on_writer!(self, pool => sqlx::query(
                "DELETE FROM webhook_logs WHERE webhook_id = $1 AND created_at <
                    (SELECT created_at FROM webhook_logs WHERE webhook_id = $1
                     ORDER BY created_at DESC LIMIT 1 OFFSET $2)",
            )
            .bind(&webhook_id)
            .bind(max)
            .execute(pool)
            .await?
            .rows_affected());
        }
        Ok(removed)
    }

    /// Deletes finished deliveries, events left without pending deliveries, idempotency keys
    /// and incoming dedup records, all older than `before` (ms). Finished deliveries are found
    /// through their own index on PostgreSQL (migration 0014) and deleted in batches, taken by
    /// address as the claim takes them; SQLite reads the queue for them (figures in
    /// `docs/benchmarks.md`).
    pub async fn prune_finished_work(&self, before: i64) -> Result<u64> {
        let (row, rows_in, rows_end) = match self.backend() {
            "postgres" => ("ctid", "= ANY(ARRAY(", "))"),
            _ => ("seq", "IN (", ")"),
        };
        let finished = format!(
            "DELETE FROM deliveries WHERE {row} {rows_in}SELECT {row} FROM deliveries
                WHERE {FINISHED} AND updated_at < $1 LIMIT {BATCH}{rows_end}"
        );
        let mut removed = self.delete_in_batches(&finished, before).await?;
        for sql in [
            "DELETE FROM events WHERE created_at < $1 AND NOT EXISTS
                (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)",
            "DELETE FROM idempotency_keys WHERE created_at < $1",
            // A provider's delivery id is remembered as long as logs are: far longer than any
            // provider keeps retrying one delivery.
            "DELETE FROM incoming_dedup WHERE created_at < $1",
        ] {
            removed += on_writer!(self, pool => sqlx::query(sql)
                .bind(before)
                .execute(pool)
                .await?
                .rows_affected());
        }
        Ok(removed)
    }

    /// Removes log entries older than `before` (ms). Totals are kept: they count everything
    /// ever logged. On PostgreSQL, day partitions that hold only such entries are dropped whole,
    /// and only the DEFAULT partition's rows (normally none) are deleted one by one: an entry is
    /// kept until its whole UTC day is past `before`, up to a day longer than on SQLite, which
    /// deletes entries as they pass it (`docs/decisions.md`, "Log partitions"). Returns how many
    /// entries went (for dropped partitions, PostgreSQL's estimate).
    pub async fn prune_logs_older_than(&self, before: i64) -> Result<u64> {
        let (table, dropped) = match &self.write_db {
            Db::Postgres(pool) => (
                "webhook_logs_default",
                partitions::drop_log_partitions(pool, before).await?,
            ),
            Db::Sqlite(_) => ("webhook_logs", 0),
        };
        let sql = format!(
            "DELETE FROM {table} WHERE id IN
                (SELECT id FROM {table} WHERE created_at < $1 LIMIT {BATCH})"
        );
        Ok(dropped + self.delete_in_batches(&sql, before).await?)
    }

    /// Runs `sql`, a delete of at most [`BATCH`] rows older than `$1` = `before`, until it
    /// deletes fewer: no statement runs long or holds its locks long.
    async fn delete_in_batches(&self, sql: &str, before: i64) -> Result<u64> {
        let mut removed = 0;
        loop {
            let done = on_writer!(self, pool => sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected());
            removed += done;
            if done < BATCH {
                return Ok(removed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{FINISHED, failures_predicate};

    #[test]
    fn retirement_names_the_index_of_finished_deliveries_word_for_word() {
        let migration = include_str!("../../migrations/postgres/0014_retention.sql");
        assert!(migration.contains(&format!("(updated_at) WHERE {FINISHED};")));
    }

    #[test]
    fn failure_queries_name_the_index_condition_word_for_word() {
        for migration in [
            include_str!("../../migrations/sqlite/0006_log_failures.sql"),
            include_str!("../../migrations/postgres/0006_log_failures.sql"),
            include_str!("../../migrations/postgres/0014_retention.sql"),
        ] {
            assert!(
                migration.contains(&format!("WHERE {};", failures_predicate())),
                "{migration}"
            );
        }
    }
}
