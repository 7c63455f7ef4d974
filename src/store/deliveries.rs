//! Deliveries: leasing due work, recording attempts, replays.

use super::{Db, Publication, Result, Store, StoreError, on_pool, on_writer};
use crate::domain::{
    agent::AgentMessage,
    delivery::{Delivery, DeliveryStatus, TargetKind},
    log::{LogEntry, Totals},
    tenant::Tenant,
};

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: String,
    event_id: String,
    target: String,
    webhook_id: String,
    company_id: String,
    event_type: String,
    status: String,
    attempts: i64,
    next_attempt_at: i64,
    lease_token: Option<String>,
    last_status: Option<i64>,
    last_error: Option<String>,
    created_at: i64,
    updated_at: i64,
    seq: i64,
    fifo: bool,
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = StoreError;

    fn try_from(row: DeliveryRow) -> Result<Delivery> {
        Ok(Delivery {
            status: DeliveryStatus::parse(&row.status)
                .ok_or_else(|| StoreError::Corrupt(format!("delivery status {:?}", row.status)))?,
            target: TargetKind::parse(&row.target)
                .ok_or_else(|| StoreError::Corrupt(format!("delivery target {:?}", row.target)))?,
            id: row.id,
            event_id: row.event_id,
            webhook_id: row.webhook_id,
            company_id: row.company_id,
            event_type: row.event_type,
            attempts: row.attempts,
            next_attempt_at: row.next_attempt_at,
            lease_token: row.lease_token,
            last_status: row.last_status,
            last_error: row.last_error,
            created_at: row.created_at,
            updated_at: row.updated_at,
            fifo: row.fifo,
        })
    }
}

/// Sums over several webhooks' totals (NULL when there are none).
#[derive(sqlx::FromRow)]
struct Sums {
    total: Option<i64>,
    succeeded: Option<i64>,
    failed: Option<i64>,
    total_us: Option<i64>,
    last_success_at: Option<i64>,
    last_failure_at: Option<i64>,
}

/// Which of a webhook's deliveries to list: those with `status` (any, if `None`), older than
/// the delivery `before` (a cursor: the last id of the previous page), skipping `offset`.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryPage<'a> {
    pub status: Option<DeliveryStatus>,
    pub before: Option<&'a str>,
    pub limit: i64,
    pub offset: i64,
}

/// Deliveries replayed per statement: a few milliseconds of the write lock.
const REPLAY_CHUNK: i64 = 1_000;

const COLUMNS: &str = "id, event_id, target, webhook_id, company_id, event_type, status, attempts, \
     next_attempt_at, lease_token, last_status, last_error, created_at, updated_at, seq, fifo";

/// What an attempt teaches about its webhook's target.
#[derive(Debug, Clone, Copy)]
pub enum HealthChange {
    /// Closes the circuit.
    Success,
    /// Counts a failure; at `threshold` consecutive ones the circuit opens until `open_until`.
    Failure { threshold: i64, open_until: i64 },
    /// The target is gone for good (410): the webhook is switched off.
    Gone { reason: &'static str },
}

/// What a successful push to an agent's chat endpoint leaves behind, written with the attempt:
/// the reply in the agent's inbox, and the `chat.completed` event with its deliveries.
#[derive(Debug)]
pub struct Reply {
    pub message: AgentMessage,
    pub publication: Publication,
}

/// The outcome of one attempt, recorded atomically with its log entry.
#[derive(Debug)]
pub struct AttemptRecord {
    pub delivery_id: String,
    /// The event delivered, and its type (a delivery that fails for good is announced with
    /// them).
    pub event_id: String,
    pub event_type: String,
    pub target: TargetKind,
    pub webhook_id: String,
    pub lease_token: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub now: i64,
    pub log: LogEntry,
    pub health: HealthChange,
    /// Written only if the lease still held: otherwise the node that took the delivery over
    /// records its own.
    pub reply: Option<Reply>,
}

/// The table holding targets of this kind, and their circuit state.
fn target_table(target: TargetKind) -> &'static str {
    match target {
        TargetKind::Webhook => "outgoing_webhooks",
        TargetKind::Agent => "agents",
    }
}

/// What a group's attempts teach about one target, folded in order: a success resets the
/// failure count (and closes the circuit), each failure adds one.
#[derive(Debug, Default, PartialEq)]
pub(super) struct HealthFold {
    reset: bool,
    failures: i64,
    /// Of the last failure.
    threshold: i64,
    open_until: i64,
    gone: Option<&'static str>,
}

impl HealthFold {
    pub(super) fn add(&mut self, change: HealthChange) {
        match change {
            HealthChange::Success => {
                self.reset = true;
                self.failures = 0;
            }
            HealthChange::Failure {
                threshold,
                open_until,
            } => {
                self.failures += 1;
                self.threshold = threshold;
                self.open_until = open_until;
            }
            HealthChange::Gone { reason } => self.gone = Some(reason),
        }
    }

    /// Consecutive failures after the fold, on a target found with `consecutive_failures`.
    pub(super) fn failures_after(&self, consecutive_failures: i64) -> i64 {
        match (self.reset, self.failures) {
            (false, 0) => consecutive_failures,
            (true, failures) => failures,
            (false, failures) => consecutive_failures + failures,
        }
    }

    /// Whether the circuit is tripped (`circuit_open_until` set: open, or half-open waiting for
    /// its trial) after the fold, on a target found with `consecutive_failures` and `open_until`:
    /// what [`statements`](Self::statements) write, read without writing.
    pub(super) fn tripped_after(&self, consecutive_failures: i64, open_until: Option<i64>) -> bool {
        match (self.reset, self.failures) {
            (false, 0) => open_until.is_some(),
            (true, 0) => false,
            (reset, _) => {
                self.failures_after(consecutive_failures) >= self.threshold
                    || (!reset && open_until.is_some())
            }
        }
    }

    /// Whether the fold at most resets the target (successes only): a target found clean
    /// (no failures, circuit closed) stays as it is.
    pub(super) fn only_resets(&self) -> bool {
        self.failures == 0 && self.gone.is_none()
    }

    /// Why the target was switched off, if the fold did.
    pub(super) fn gone(&self) -> Option<&'static str> {
        self.gone
    }

    /// The threshold and the end of the cool-down of the fold's last failure.
    pub(super) fn opening(&self) -> (i64, i64) {
        (self.threshold, self.open_until)
    }

    /// The statements recording the fold on `target` row `$1`, with their further bind values.
    pub(super) fn statements(&self, target: TargetKind) -> Vec<(String, HealthBinds)> {
        let table = target_table(target);
        let mut statements = Vec::new();
        match (self.reset, self.failures) {
            (false, 0) => {}
            (true, 0) => statements.push((
                format!(
                    "UPDATE {table} SET consecutive_failures = 0, circuit_open_until = NULL
                     WHERE id = $1 AND (consecutive_failures <> 0 OR circuit_open_until IS NOT NULL)"
                ),
                HealthBinds::None,
            )),
            (reset, failures) => {
                let before = if reset { "0" } else { "consecutive_failures" };
                let otherwise = if reset { "NULL" } else { "circuit_open_until" };
                statements.push((
                    format!(
                        "UPDATE {table} SET consecutive_failures = {before} + $2,
                            circuit_open_until = CASE WHEN {before} + $2 >= $3 THEN $4
                                                      ELSE {otherwise} END
                         WHERE id = $1"
                    ),
                    HealthBinds::Failures(failures, self.threshold, self.open_until),
                ));
            }
        }
        // An agent has no switch: its pushes just end (the worker never sends Gone for one).
        if let (Some(reason), TargetKind::Webhook) = (self.gone, target) {
            statements.push((
                format!(
                    "UPDATE {table} SET is_active = FALSE, deactivated_reason = $2 WHERE id = $1"
                ),
                HealthBinds::Reason(reason),
            ));
        }
        statements
    }
}

/// The values a health statement binds after the target's id.
#[derive(Debug, PartialEq)]
pub(super) enum HealthBinds {
    None,
    /// Failures to add, the threshold, and until when the circuit opens.
    Failures(i64, i64, i64),
    Reason(&'static str),
}

impl Store {
    /// Leases up to `limit` due deliveries until `lease_until`, oldest publication first (by
    /// `seq`, not by `next_attempt_at`, which is one node's clock and moves with every retry or
    /// deferral): their `next_attempt_at` moves to the lease's end, so a worker that dies leaves
    /// them due again then. They come back in publish order.
    ///
    /// Each part is an ordered index walk that reads about what it takes, whatever is waiting:
    /// - deliveries untouched since publish (`deliveries_fresh`) are all due: the first by `seq`;
    /// - touched ones (a retry, a deferral or an expired lease, `deliveries_due`) by when they
    ///   fell due, so those still waiting sit past the cut; the two are merged by `seq`, so a
    ///   retry that falls due goes before later events still waiting;
    /// - of a FIFO webhook's deliveries only its head may go, the first pending one by `seq` (in
    ///   flight, waiting for a retry, or deferred, it holds the rest), and only while none of
    ///   the webhook's is in flight (a replayed older delivery becomes the head while a later
    ///   one is being made). `fifo_hooks` finds the webhooks with FIFO deliveries pending by
    ///   skipping through `deliveries_fifo` one webhook at a time, so the backlog behind a head
    ///   costs nothing; `deliveries_fifo_leased` answers "in flight?".
    ///
    /// (One walk by `seq` over all pending rows stepped over every waiting one, or read and
    /// sorted every due one, whichever the planner guessed cheaper from statistics that a young
    /// table lacks: 18–90 ms a claim in the cases of `docs/benchmarks.md`.) PostgreSQL skips
    /// rows other nodes are leasing at the same moment; SQLite has one writer anyway.
    pub async fn claim_due(
        &self,
        now: i64,
        lease_until: i64,
        token: &str,
        limit: i64,
    ) -> Result<Vec<Delivery>> {
        // Rows found by one part of the query are taken by their physical address (`ctid` on
        // PostgreSQL, always a TID scan; the rowid `seq` on SQLite), never by a lookup whose
        // plan the planner guesses: PostgreSQL planned `id = ANY(…)` as a scan of the whole
        // table when it made the plan while the table was small (≈100 ms a claim at 30,000
        // rows). SQLite, without statistics, would rather answer "in flight?" from
        // `deliveries_by_webhook`, reading every pending delivery of the webhook.
        //
        // SQLite plans an `ORDER BY … LIMIT ?` with the limit's value, and so marks the
        // statement to be prepared again whenever that parameter is bound, which is every claim
        // (4.6% of hookd's CPU in fan-out): `+$4` is the same number as an expression, which it
        // plans without (the same plan, by `EXPLAIN QUERY PLAN`).
        let (lock, row, rows_in, rows_end, leased, limit_at) = match self.backend() {
            "postgres" => (
                "FOR UPDATE OF d SKIP LOCKED",
                "ctid",
                "= ANY(ARRAY(",
                "))",
                "",
                "$4",
            ),
            _ => (
                "",
                "seq",
                "IN (",
                ")",
                "INDEXED BY deliveries_fifo_leased",
                "+$4",
            ),
        };
        let sql = format!(
            "WITH RECURSIVE fifo_hooks(webhook_id) AS (
                SELECT (SELECT f.webhook_id FROM deliveries f WHERE f.status = 'pending' AND f.fifo
                        ORDER BY f.webhook_id LIMIT 1)
                UNION ALL
                SELECT (SELECT f.webhook_id FROM deliveries f WHERE f.status = 'pending' AND f.fifo
                          AND f.webhook_id > h.webhook_id ORDER BY f.webhook_id LIMIT 1)
                FROM fifo_hooks h WHERE h.webhook_id IS NOT NULL),
             heads AS (
                SELECT d.{row} AS row_at, d.seq FROM deliveries d
                WHERE d.{row} {rows_in}
                        SELECT (SELECT f.{row} FROM deliveries f WHERE f.webhook_id = h.webhook_id
                                  AND f.status = 'pending' AND f.fifo ORDER BY f.seq LIMIT 1)
                        FROM fifo_hooks h WHERE h.webhook_id IS NOT NULL{rows_end}
                  AND d.status = 'pending' AND d.fifo AND d.next_attempt_at <= $3
                  AND NOT EXISTS (SELECT 1 FROM deliveries o {leased} WHERE o.webhook_id = d.webhook_id
                                    AND o.status = 'pending' AND o.fifo AND o.lease_token IS NOT NULL
                                    AND o.next_attempt_at > $3)
                ORDER BY d.seq LIMIT {limit_at} {lock}),
             fresh AS (
                SELECT d.{row} AS row_at, d.seq FROM deliveries d
                WHERE d.status = 'pending' AND NOT d.fifo AND d.next_attempt_at <= d.created_at
                  AND d.next_attempt_at <= $3
                ORDER BY d.seq LIMIT {limit_at} {lock}),
             again AS (
                SELECT d.{row} AS row_at, d.seq FROM deliveries d
                WHERE d.status = 'pending' AND NOT d.fifo AND d.next_attempt_at > d.created_at
                  AND d.next_attempt_at <= $3
                ORDER BY d.next_attempt_at, d.seq LIMIT {limit_at} {lock})
             UPDATE deliveries SET next_attempt_at = $1, lease_token = $2, updated_at = $3
             WHERE {row} {rows_in}SELECT row_at FROM (SELECT * FROM fresh UNION ALL SELECT * FROM again
                                                  UNION ALL SELECT * FROM heads) due
                                 ORDER BY seq LIMIT {limit_at}{rows_end}
             RETURNING {COLUMNS}"
        );
        let mut rows: Vec<DeliveryRow> = on_writer!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(lease_until)
            .bind(token)
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await?);
        // RETURNING promises no order.
        rows.sort_unstable_by_key(|row| row.seq);
        rows.into_iter().map(Delivery::try_from).collect()
    }

    /// When the next pending delivery falls due after `after` (the time of the claim that found
    /// nothing to take), if any. Rows due by `after` were there to be claimed: what is left of
    /// them waits behind a FIFO head, whose end wakes this node's workers. Of FIFO rows only
    /// those in flight count (a lease on another node ends); a FIFO head waiting for a retry or
    /// deferred is found by the workers' next poll, up to 500 ms late: counting those would read
    /// every FIFO row waiting behind them.
    pub async fn next_due_at(&self, after: i64) -> Result<Option<i64>> {
        Ok(on_pool!(self, pool => sqlx::query_scalar(
            "SELECT MIN(due) FROM (
                SELECT MIN(next_attempt_at) AS due FROM deliveries
                WHERE status = 'pending' AND NOT fifo AND next_attempt_at > created_at
                  AND next_attempt_at > $1
                UNION ALL
                SELECT MIN(next_attempt_at) FROM deliveries
                WHERE status = 'pending' AND fifo AND lease_token IS NOT NULL AND next_attempt_at > $1) soonest",
        )
        .bind(after)
        .fetch_one(pool)
        .await?))
    }

    /// Keeps PostgreSQL's statistics of `deliveries` close to the table: analyzes it when more
    /// than a fifth of its rows (and over 1,000) changed since its statistics were taken.
    /// Whether the claim walks an index or reads and sorts every due row, and whether it takes
    /// rows by their address or scans the table, is the planner's guess from those statistics;
    /// autovacuum refreshes them only once a minute at best, and a table that grew from empty
    /// meanwhile was claimed from at 10–100 ms a claim instead of ~1 ms (`docs/benchmarks.md`).
    /// Analyzing also makes PostgreSQL plan the prepared claim again. One node at a time does
    /// it (an advisory lock); SQLite has nothing to do.
    pub async fn keep_statistics(&self) -> Result<bool> {
        let Db::Postgres(pool) = &self.db else {
            return Ok(false);
        };
        let (changed, rows): (i64, i64) = sqlx::query_as(
            "SELECT n_mod_since_analyze, n_live_tup FROM pg_stat_user_tables
             WHERE relid = 'deliveries'::regclass",
        )
        .fetch_one(pool)
        .await?;
        if changed <= 1_000 || changed <= rows / 5 {
            return Ok(false);
        }
        let mut tx = pool.begin().await?;
        let ours: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_xact_lock(hashtext('hookd.analyze.deliveries'))",
        )
        .fetch_one(&mut *tx)
        .await?;
        if ours {
            sqlx::query("ANALYZE deliveries").execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(ours)
    }

    /// On SQLite one process owns the store, so leases found at start were held by an earlier
    /// run of this process, which is gone: they are due again now instead of when they expire.
    /// (On PostgreSQL another node may hold them; they expire by themselves.)
    pub async fn release_stale_leases(&self) -> Result<u64> {
        if self.backend() != "sqlite" {
            return Ok(0);
        }
        Ok(on_writer!(self, pool => sqlx::query(
            "UPDATE deliveries SET next_attempt_at = $1, lease_token = NULL
             WHERE status = 'pending' AND lease_token IS NOT NULL",
        )
        .bind(crate::domain::time::now_ms())
        .execute(pool)
        .await?
        .rows_affected()))
    }

    /// Puts a leased delivery back without spending an attempt (circuit open, rate limit, target
    /// busy), due again at `until`.
    pub async fn defer_delivery(&self, id: &str, token: &str, until: i64) -> Result<()> {
        on_writer!(self, pool => sqlx::query(
            "UPDATE deliveries SET next_attempt_at = $3, lease_token = NULL WHERE id = $1 AND lease_token = $2",
        )
        .bind(id)
        .bind(token)
        .bind(until)
        .execute(pool)
        .await
        .map(drop)?);
        Ok(())
    }

    /// Lengthens a lease held with `token` (for attempts whose timeout outlasts it).
    pub async fn extend_lease(&self, id: &str, token: &str, until: i64) -> Result<()> {
        on_writer!(self, pool => sqlx::query(
            "UPDATE deliveries SET next_attempt_at = $3 WHERE id = $1 AND lease_token = $2",
        )
        .bind(id)
        .bind(token)
        .bind(until)
        .execute(pool)
        .await
        .map(drop)?);
        Ok(())
    }

    /// Ends a leased delivery whose webhook is gone or inactive.
    pub async fn cancel_delivery(
        &self,
        id: &str,
        token: &str,
        reason: &str,
        now: i64,
    ) -> Result<()> {
        on_writer!(self, pool => sqlx::query(
            "UPDATE deliveries SET status = 'cancelled', last_error = $3, lease_token = NULL, updated_at = $4
             WHERE id = $1 AND lease_token = $2",
        )
        .bind(id)
        .bind(token)
        .bind(reason)
        .bind(now)
        .execute(pool)
        .await
        .map(drop)?);
        Ok(())
    }

    /// Takes the single trial attempt of a half-open circuit: true for exactly one caller, which
    /// holds the trial until `trial_until`; others keep waiting.
    pub async fn claim_circuit_trial(
        &self,
        target: TargetKind,
        id: &str,
        now: i64,
        trial_until: i64,
    ) -> Result<bool> {
        let table = target_table(target);
        let sql = format!(
            "UPDATE {table} SET circuit_open_until = $3
             WHERE id = $1 AND (circuit_open_until IS NULL OR circuit_open_until <= $2)"
        );
        let won = on_writer!(self, pool => sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(now)
        .bind(trial_until)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(won == 1)
    }

    /// Queues a finished delivery again with a fresh retry budget. `NotFound` unless it belongs
    /// to `webhook_id` and is not pending already.
    pub async fn retry_delivery(
        &self,
        webhook_id: &str,
        delivery_id: &str,
        now: i64,
    ) -> Result<()> {
        let done = on_writer!(self, pool => sqlx::query(
            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = $3, updated_at = $3
             WHERE id = $1 AND webhook_id = $2 AND status <> 'pending'",
        )
        .bind(delivery_id)
        .bind(webhook_id)
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected());
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Queues again every failed delivery of a webhook created at or after `since`, a chunk
    /// at a time: one statement over all of them held the write lock, and so every other
    /// tenant's writes, for as long as it ran (300,000 failed deliveries: 0.94 s, one publish of
    /// another company waiting as long). Between chunks other writes take their turn. A
    /// delivery that fails again meanwhile is not replayed twice (it ended after `now`); a
    /// replay cut short is completed by asking again.
    pub async fn replay_failed(&self, webhook_id: &str, since: i64, now: i64) -> Result<u64> {
        let mut replayed = 0;
        loop {
            let done = on_writer!(self, pool => sqlx::query(
                "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = $3,
                    updated_at = $3
                 WHERE status = 'failed' AND id IN (
                    SELECT id FROM deliveries
                    WHERE webhook_id = $1 AND status = 'failed' AND created_at >= $2
                        AND updated_at < $3
                    LIMIT $4)",
            )
            .bind(webhook_id)
            .bind(since)
            .bind(now)
            .bind(REPLAY_CHUNK)
            .execute(pool)
            .await?
            .rows_affected());
            replayed += done;
            if done < REPLAY_CHUNK.unsigned_abs() {
                return Ok(replayed);
            }
        }
    }

    /// A page of a webhook's deliveries, newest first (see [`DeliveryPage`]).
    ///
    /// Read a status at a time, each from the index by webhook and status in creation order,
    /// then merged: one `ORDER BY` over all statuses sorted every delivery the webhook had
    /// (300,000 of them: 320 ms for the first page), so a page cost what the webhook's history
    /// did. Now it costs what the page holds (each status reads at most `offset + limit`).
    pub async fn list_deliveries(
        &self,
        webhook_id: &str,
        page: &DeliveryPage<'_>,
    ) -> Result<Vec<Delivery>> {
        let before = match page.before {
            Some(id) => Some(self.delivery_created_at(webhook_id, id).await?),
            None => None,
        };
        let older = if before.is_some() {
            "AND created_at <= $5 AND (created_at < $5 OR id < $6)"
        } else {
            ""
        };
        let statuses = page
            .status
            .map_or(DeliveryStatus::ALL.to_vec(), |s| vec![s]);
        let per_status: Vec<String> = statuses
            .into_iter()
            .map(|status| {
                format!(
                    "SELECT * FROM (SELECT {COLUMNS} FROM deliveries
                     WHERE webhook_id = $1 AND status = '{}' {older}
                     ORDER BY created_at DESC, id DESC LIMIT $2) AS {}",
                    status.as_str(),
                    status.as_str(),
                )
            })
            .collect();
        let sql = format!(
            "{} ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4",
            per_status.join(" UNION ALL ")
        );
        let rows: Vec<DeliveryRow> = on_pool!(self, pool => {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(webhook_id)
                .bind(page.offset + page.limit)
                .bind(page.limit)
                .bind(page.offset);
            if let (Some(created_at), Some(id)) = (before, page.before) {
                query = query.bind(created_at).bind(id);
            }
            query.fetch_all(pool).await?
        });
        rows.into_iter().map(Delivery::try_from).collect()
    }

    /// When the webhook's delivery `id` was made; `NotFound` if it has no such delivery.
    async fn delivery_created_at(&self, webhook_id: &str, id: &str) -> Result<i64> {
        let found: Option<(i64,)> = self
            .point_read(
                "SELECT created_at FROM deliveries WHERE id = $1 AND webhook_id = $2",
                &[id, webhook_id],
            )
            .await?;
        found.map(|(at,)| at).ok_or(StoreError::NotFound)
    }

    /// Deliveries of a webhook still to be made.
    pub async fn pending_count(&self, webhook_id: &str) -> Result<i64> {
        Ok(on_pool!(self, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM deliveries WHERE webhook_id = $1 AND status = 'pending'",
        )
        .bind(webhook_id)
        .fetch_one(pool)
        .await?))
    }

    /// All pending deliveries (the queue depth, for metrics).
    pub async fn queue_depth(&self) -> Result<i64> {
        Ok(on_pool!(self, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM deliveries WHERE status = 'pending'",
        )
        .fetch_one(pool)
        .await?))
    }

    /// Webhooks whose circuit is open now.
    pub async fn open_circuits(&self, now: i64) -> Result<i64> {
        Ok(on_pool!(self, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM outgoing_webhooks WHERE circuit_open_until > $1",
        )
        .bind(now)
        .fetch_one(pool)
        .await?))
    }

    /// The tenant's totals over all its webhooks of both directions.
    pub async fn tenant_totals(&self, tenant: &Tenant) -> Result<Totals> {
        let sums: Sums = on_pool!(self, pool => sqlx::query_as(
            "SELECT CAST(SUM(total) AS BIGINT) AS total, CAST(SUM(succeeded) AS BIGINT) AS succeeded,
                    CAST(SUM(failed) AS BIGINT) AS failed, CAST(SUM(total_us) AS BIGINT) AS total_us,
                    MAX(last_success_at) AS last_success_at, MAX(last_failure_at) AS last_failure_at
             FROM webhook_stats WHERE webhook_id IN (
                SELECT id FROM outgoing_webhooks WHERE company_id = $1 AND user_id = $2
                UNION ALL SELECT id FROM incoming_webhooks WHERE company_id = $1 AND user_id = $2)",
        )
        .bind(&tenant.company_id)
        .bind(&tenant.user_id)
        .fetch_one(pool)
        .await?);
        Ok(Totals {
            total: sums.total.unwrap_or(0),
            succeeded: sums.succeeded.unwrap_or(0),
            failed: sums.failed.unwrap_or(0),
            total_us: sums.total_us.unwrap_or(0),
            last_success_at: sums.last_success_at,
            last_failure_at: sums.last_failure_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAIL: HealthChange = HealthChange::Failure {
        threshold: 5,
        open_until: 99,
    };

    fn fold(changes: &[HealthChange]) -> HealthFold {
        let mut fold = HealthFold::default();
        for change in changes {
            fold.add(*change);
        }
        fold
    }

    #[test]
    fn a_success_resets_what_came_before_it_in_the_group() {
        let statements = fold(&[FAIL, HealthChange::Success, FAIL]).statements(TargetKind::Agent);
        assert_eq!(statements.len(), 1);
        assert!(statements[0].0.contains("consecutive_failures = 0 + $2"));
        assert_eq!(statements[0].1, HealthBinds::Failures(1, 5, 99));
    }

    #[test]
    fn failures_add_to_the_stored_count_and_gone_switches_a_webhook_off() {
        let statements = fold(&[FAIL, FAIL, HealthChange::Gone { reason: "410" }])
            .statements(TargetKind::Webhook);
        assert!(
            statements[0]
                .0
                .contains("consecutive_failures = consecutive_failures + $2")
        );
        assert_eq!(statements[0].1, HealthBinds::Failures(2, 5, 99));
        assert_eq!(statements[1].1, HealthBinds::Reason("410"));
        assert!(
            fold(&[HealthChange::Gone { reason: "410" }])
                .statements(TargetKind::Agent)
                .is_empty()
        );
    }

    #[test]
    fn the_tripped_state_after_a_fold_is_what_its_statements_write() {
        // Crossing the threshold trips it; a success clears it; a failure past it keeps it.
        assert!(fold(&[FAIL, FAIL]).tripped_after(3, None));
        assert!(!fold(&[FAIL]).tripped_after(3, None));
        assert!(!fold(&[FAIL, HealthChange::Success]).tripped_after(9, Some(1)));
        assert!(fold(&[FAIL]).tripped_after(9, Some(1)));
        assert!(!fold(&[HealthChange::Success, FAIL]).tripped_after(9, Some(1)));
        assert!(fold(&[]).tripped_after(9, Some(1)));
        assert_eq!(
            fold(&[HealthChange::Success, FAIL, FAIL]).failures_after(9),
            2
        );
        assert_eq!(fold(&[FAIL, FAIL]).failures_after(3), 5);
    }

    #[test]
    fn successes_only_clear_a_dirty_circuit() {
        let statements = fold(&[HealthChange::Success]).statements(TargetKind::Webhook);
        assert_eq!(statements.len(), 1);
        assert!(statements[0].0.contains("consecutive_failures <> 0"));
    }
}
