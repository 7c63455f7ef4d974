//! The attempt/request log and the running totals kept beside it.

use std::collections::BTreeMap;

use super::{Result, Store, StoreError, from_json, on_pool};
use crate::domain::log::{LogEntry, Totals, WebhookType};

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
    processing_time_ms: i64,
    created_at: i64,
}

impl TryFrom<LogRow> for LogEntry {
    type Error = StoreError;

    fn try_from(row: LogRow) -> Result<LogEntry> {
        let webhook_type = match row.webhook_type.as_str() {
            "incoming" => WebhookType::Incoming,
            _ => WebhookType::Outgoing,
        };
        let headers: BTreeMap<String, String> = from_json("request_headers", &row.request_headers)?;
        Ok(LogEntry {
            succeeded: LogEntry::counts_as_success(&row.status),
            id: row.id,
            webhook_type,
            webhook_id: row.webhook_id,
            delivery_id: row.delivery_id,
            event_type: row.event_type,
            status: row.status,
            request_payload: row.request_payload,
            request_headers: headers,
            response_status: row.response_status,
            response_body: row.response_body,
            error_message: row.error_message,
            retry_count: row.retry_count,
            processing_time_ms: row.processing_time_ms,
            created_at: row.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct TotalsRow {
    total: i64,
    succeeded: i64,
    failed: i64,
    total_ms: i64,
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

/// The shared INSERT of a log entry and UPDATE of its webhook's totals, for one connection.
macro_rules! write_log {
    ($conn:expr, $entry:expr) => {{
        let entry = $entry;
        sqlx::query(
            "INSERT INTO webhook_logs (id, webhook_type, webhook_id, delivery_id, event_type, status,
                request_payload, request_headers, response_status, response_body, error_message,
                retry_count, processing_time_ms, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&entry.id)
        .bind(entry.webhook_type.as_str())
        .bind(&entry.webhook_id)
        .bind(&entry.delivery_id)
        .bind(&entry.event_type)
        .bind(&entry.status)
        .bind(&entry.request_payload)
        .bind(crate::store::to_json(&entry.request_headers))
        .bind(entry.response_status)
        .bind(&entry.response_body)
        .bind(&entry.error_message)
        .bind(entry.retry_count)
        .bind(entry.processing_time_ms)
        .bind(entry.created_at)
        .execute(&mut *$conn)
        .await?;
        let (ok, at) = (i64::from(entry.succeeded), entry.created_at);
        sqlx::query(
            "INSERT INTO webhook_stats (webhook_id, webhook_type, total, succeeded, failed, total_ms,
                last_success_at, last_failure_at)
             VALUES ($1, $2, 1, $3, $4, $5, $6, $7)
             ON CONFLICT (webhook_id) DO UPDATE SET
                total = webhook_stats.total + 1,
                succeeded = webhook_stats.succeeded + excluded.succeeded,
                failed = webhook_stats.failed + excluded.failed,
                total_ms = webhook_stats.total_ms + excluded.total_ms,
                last_success_at = COALESCE(excluded.last_success_at, webhook_stats.last_success_at),
                last_failure_at = COALESCE(excluded.last_failure_at, webhook_stats.last_failure_at)",
        )
        .bind(&entry.webhook_id)
        .bind(entry.webhook_type.as_str())
        .bind(ok)
        .bind(1 - ok)
        .bind(entry.processing_time_ms)
        .bind(entry.succeeded.then_some(at))
        .bind((!entry.succeeded).then_some(at))
        .execute(&mut *$conn)
        .await?;
    }};
}

pub(super) use write_log;

/// How many recent entries the latency percentiles are computed over: bounded, and read
/// through the (webhook_id, created_at) index.
const PERCENTILE_WINDOW: i64 = 1_000;

impl Store {
    /// Appends a log entry and counts it in the webhook's totals, atomically (group-committed
    /// with concurrent writes).
    pub async fn record_log(&self, entry: LogEntry) -> Result<()> {
        self.write(super::batch::Op::Log(Box::new(entry)))
            .await
            .map(drop)
    }

    /// Log entries of one webhook, newest first. The caller has checked ownership.
    pub async fn list_logs(&self, webhook_id: &str, query: &LogQuery) -> Result<Vec<LogEntry>> {
        let rows: Vec<LogRow> = on_pool!(self, pool => sqlx::query_as(
            "SELECT id, webhook_type, webhook_id, delivery_id, event_type, status, request_payload,
                request_headers, response_status, response_body, error_message, retry_count,
                processing_time_ms, created_at
             FROM webhook_logs
             WHERE webhook_id = $1 AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR event_type = $3)
             ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5",
        )
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
            "SELECT total, succeeded, failed, total_ms, last_success_at, last_failure_at
             FROM webhook_stats WHERE webhook_id = $1",
        )
        .bind(webhook_id)
        .fetch_optional(pool)
        .await?);
        Ok(row.map_or_else(Totals::default, |r| Totals {
            total: r.total,
            succeeded: r.succeeded,
            failed: r.failed,
            total_ms: r.total_ms,
            last_success_at: r.last_success_at,
            last_failure_at: r.last_failure_at,
        }))
    }

    /// Processing times of the most recent entries, sorted ascending.
    pub async fn recent_latencies(&self, webhook_id: &str) -> Result<Vec<i64>> {
        let mut times: Vec<i64> = on_pool!(self, pool => sqlx::query_scalar(
            "SELECT processing_time_ms FROM webhook_logs WHERE webhook_id = $1
             ORDER BY created_at DESC LIMIT $2",
        )
        .bind(webhook_id)
        .bind(PERCENTILE_WINDOW)
        .fetch_all(pool)
        .await?);
        times.sort_unstable();
        Ok(times)
    }

    /// Outcome (succeeded or not) and processing time of each entry logged since `since` (unix
    /// ms), sorted by processing time. Reads one range of the (webhook, time) index, bounded by
    /// the per-webhook log cap.
    pub async fn outcomes_since(&self, webhook_id: &str, since: i64) -> Result<Vec<(bool, i64)>> {
        let rows: Vec<(String, i64)> = on_pool!(self, pool => sqlx::query_as(
            "SELECT status, processing_time_ms FROM webhook_logs
             WHERE webhook_id = $1 AND created_at >= $2 ORDER BY processing_time_ms",
        )
        .bind(webhook_id)
        .bind(since)
        .fetch_all(pool)
        .await?);
        Ok(rows
            .into_iter()
            .map(|(status, ms)| (LogEntry::counts_as_success(&status), ms))
            .collect())
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
            removed += on_pool!(self, pool => sqlx::query(
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

    /// Deletes finished deliveries, events left without pending deliveries, and idempotency
    /// keys, all older than `before` (ms).
    pub async fn prune_finished_work(&self, before: i64) -> Result<u64> {
        let mut removed = 0;
        for sql in [
            "DELETE FROM deliveries WHERE status <> 'pending' AND updated_at < $1",
            "DELETE FROM events WHERE created_at < $1 AND NOT EXISTS
                (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)",
            "DELETE FROM idempotency_keys WHERE created_at < $1",
        ] {
            removed += on_pool!(self, pool => sqlx::query(sql)
                .bind(before)
                .execute(pool)
                .await?
                .rows_affected());
        }
        Ok(removed)
    }

    /// Deletes log entries older than `before` (ms), in batches so no statement runs long.
    /// Totals are kept: they count everything ever logged.
    pub async fn prune_logs_older_than(&self, before: i64) -> Result<u64> {
        let mut removed = 0;
        loop {
            let done = on_pool!(self, pool => sqlx::query(
                "DELETE FROM webhook_logs WHERE id IN
                    (SELECT id FROM webhook_logs WHERE created_at < $1 LIMIT 5000)",
            )
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected());
            removed += done;
            if done < 5000 {
                return Ok(removed);
            }
        }
    }
}
