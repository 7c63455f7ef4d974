//! The PostgreSQL group commit ([`super::batch`] gathers a group and answers each of its writes;
//! [`super::sqlite_writer`] is the same for a SQLite file).
//!
//! Each statement a group sends is a round trip, and on a machine where hookd and PostgreSQL
//! share the cores each round trip is two wake-ups more than the work it carries: at 1,000
//! events/s the group writer took about eight per group and PostgreSQL's backends spent
//! ~660 µs per delivery, two thirds of it outside executing statements. So a group's rows of one
//! table go in as one JSON parameter read by `jsonb_to_recordset`, every table's rows in one
//! statement, and the statement's text does not depend on how many rows there are (it is
//! prepared once per connection, not once per group size):
//! - publishes and accepted requests without a unique key (no `Idempotency-Key`, no provider
//!   delivery id) are that one statement, in its own implicit transaction;
//! - a group with unique keys or attempts is a transaction: the unique keys one by one (whether
//!   each was fresh decides the rest of its write), then the attempts' outcomes applied with the
//!   webhooks whose health they change read and locked in the same statement, the health
//!   updates (rare: failures, and the first success after them), and the rows statement.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, LazyLock},
};

use serde::{Serialize, Serializer};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, types::Json};
use tokio::sync::{Notify, mpsc};

use super::{
    Publication, Result,
    batch::{Job, MAX_GROUP, Op, Rows, arrived, attempts, commit, health, plan, writer},
    deliveries::{AttemptRecord, HealthBinds},
    events::INSERT_IDEMPOTENCY,
    inbox::{Acceptance, INSERT_DEDUP},
    logs::{STATS_UPSERT, sum_by_webhook},
    notices::{self, FOUND_COLUMNS, Found, FoundRow},
    to_json,
};
use crate::domain::notice::Notice;

/// Starts the writer task; it ends when every sender (every clone of the store) is gone.
/// `noticed` is told when a group wrote notices (see [`super::notices`]).
pub(super) fn start(pool: PgPool, noticed: Arc<Notify>) -> mpsc::Sender<Job> {
    let (sender, mut receiver) = mpsc::channel::<Job>(4 * MAX_GROUP);
    tokio::spawn(async move {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while receiver.recv_many(&mut group, MAX_GROUP).await > 0 {
            let write = writer(|ops| {
                let pool = pool.clone();
                let noticed = Arc::clone(&noticed);
                Box::pin(async move { write(&pool, ops, &noticed).await })
            });
            commit(write, std::mem::take(&mut group)).await;
        }
    });
    sender
}

/// Writes `ops` atomically; each op's answer, or the error that rolled it all back.
async fn write(pool: &PgPool, ops: &[Op], noticed: &Notify) -> Result<Vec<Result<bool>>> {
    let settled = attempts(ops);
    if settled.is_empty() && !ops.iter().any(keyed) {
        let plan = plan(ops, &vec![true; ops.len()], &HashSet::new());
        insert_rows(&mut *pool.acquire().await?, &plan.rows, &[]).await?;
        return Ok(plan.results);
    }
    let mut tx = pool.begin().await?;
    let mut fresh = Vec::with_capacity(ops.len());
    for op in ops {
        fresh.push(insert_key(&mut tx, op).await?);
    }
    let (held, found) = if settled.is_empty() {
        Default::default()
    } else {
        let webhooks = notices::webhooks_of(&health(ops));
        settle(&mut tx, &settled, &webhooks).await?
    };
    let plan = plan(ops, &fresh, &held);
    let notices = notices::of_attempts(&arrived(ops), &plan.health, &held, &found);
    // Before the rows: those may take inbox locks, which must not be held while waiting for a
    // row lock (see `super::inbox`).
    for ((target, id), fold) in &plan.health {
        if !notices::health_written((*target, id), fold, &found) {
            continue;
        }
        for (sql, binds) in fold.statements(*target) {
            let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(*id);
            let query = match binds {
                HealthBinds::None => query,
                HealthBinds::Failures(count, threshold, until) => {
                    query.bind(count).bind(threshold).bind(until)
                }
                HealthBinds::Reason(reason) => query.bind(reason),
            };
            query.execute(&mut *tx).await?;
        }
    }
    insert_rows(&mut tx, &plan.rows, &notices).await?;
    tx.commit().await?;
    if !notices.is_empty() {
        noticed.notify_one();
    }
    Ok(plan.results)
}

/// Whether `op` carries a unique key that another write may have taken.
fn keyed(op: &Op) -> bool {
    match op {
        Op::Publish(publication) => publication.idempotency.is_some(),
        Op::Accept(accepted) => accepted.dedup.is_some(),
        Op::Attempt(_) | Op::Log(_) | Op::Tally(_) => false,
    }
}

/// Records `op`'s unique key, if it has one; `false` (nothing written) when it was taken.
async fn insert_key(tx: &mut PgConnection, op: &Op) -> Result<bool> {
    let inserted = match op {
        Op::Publish(Publication {
            idempotency: Some(idem),
            tenant,
            events,
            ..
        }) => sqlx::query(INSERT_IDEMPOTENCY)
            .bind(&tenant.company_id)
            .bind(&tenant.user_id)
            .bind(&idem.key)
            .bind(&idem.response)
            .bind(&idem.request_hash)
            .bind(events.first().map_or(0, |e| e.created_at))
            .execute(tx)
            .await?
            .rows_affected(),
        Op::Accept(accepted) => match accepted.as_ref() {
            Acceptance {
                dedup: Some((key, response)),
                log,
                message,
                ..
            } => sqlx::query(INSERT_DEDUP)
                .bind(&log.webhook_id)
                .bind(key)
                .bind(to_json(response))
                .bind(message.created_at)
                .execute(tx)
                .await?
                .rows_affected(),
            _ => 1,
        },
        _ => 1,
    };
    Ok(inserted == 1)
}

/// Applies the attempts' outcomes, each only if its lease still holds, and reads the webhooks
/// `webhooks` as the group finds them, locked in id order as the health updates after it lock
/// them (see `notices::webhooks_of`: one the group only resets is read only if not clean).
/// The ids of the deliveries whose lease held, and the webhooks found.
///
/// The planner takes a JSON row set for 100 rows whatever it holds, and a plan made once (see
/// `Store::connect`) then joined a young `deliveries` table by reading all of it (seen: 1.3 ms
/// per group at 15,000 rows); `= ANY (ARRAY(…))` reads the rows it names through the primary
/// key however large the table grows.
const SETTLE: &str = "WITH outcome AS (
        SELECT * FROM jsonb_to_recordset($1) AS o(delivery_id text, lease_token text,
            status text, attempts bigint, next_attempt_at bigint, last_status bigint,
            last_error text, now bigint)
    ), held AS (
        UPDATE deliveries d SET status = o.status, attempts = o.attempts,
            next_attempt_at = o.next_attempt_at, last_status = o.last_status,
            last_error = o.last_error, lease_token = NULL, updated_at = o.now
        FROM outcome o
        WHERE d.id = ANY (ARRAY(SELECT delivery_id FROM outcome))
          AND d.id = o.delivery_id AND d.lease_token = o.lease_token
        RETURNING d.id
    ), changed AS (
        SELECT * FROM jsonb_to_recordset($2) AS c(id text, only_resets boolean)
    ), found AS (
        SELECT FOUND_COLUMNS FROM outgoing_webhooks w
        WHERE w.id = ANY (ARRAY(SELECT id FROM changed))
          AND (w.consecutive_failures <> 0 OR w.circuit_open_until IS NOT NULL
               OR w.id IN (SELECT id FROM changed WHERE NOT only_resets))
        ORDER BY w.id FOR UPDATE
    )
    SELECT TRUE AS held, id, NULL AS user_id, NULL AS company_id, NULL AS name,
           NULL::boolean AS is_active, NULL::bigint AS consecutive_failures,
           NULL::bigint AS circuit_open_until
    FROM held
    UNION ALL
    SELECT FALSE, FOUND_COLUMNS FROM found";

static SETTLE_SQL: LazyLock<String> =
    LazyLock::new(|| SETTLE.replace("FOUND_COLUMNS", FOUND_COLUMNS));

/// A row of [`SETTLE`]: a delivery whose lease held, or a webhook found.
#[derive(sqlx::FromRow)]
struct Settled {
    held: bool,
    id: String,
    user_id: Option<String>,
    company_id: Option<String>,
    name: Option<String>,
    is_active: Option<bool>,
    consecutive_failures: Option<i64>,
    circuit_open_until: Option<i64>,
}

async fn settle(
    tx: &mut PgConnection,
    records: &[&AttemptRecord],
    webhooks: &[(&str, bool)],
) -> Result<(HashSet<String>, HashMap<String, Found>)> {
    #[derive(Serialize)]
    struct Outcome<'a> {
        delivery_id: &'a str,
        lease_token: &'a str,
        status: &'static str,
        attempts: i64,
        next_attempt_at: i64,
        last_status: Option<i64>,
        last_error: Option<&'a str>,
        now: i64,
    }
    #[derive(Serialize)]
    struct Changed<'a> {
        id: &'a str,
        only_resets: bool,
    }
    let outcomes: Vec<Outcome> = records
        .iter()
        .map(|r| Outcome {
            delivery_id: &r.delivery_id,
            lease_token: &r.lease_token,
            status: r.status.as_str(),
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            last_status: r.last_status,
            last_error: r.last_error.as_deref(),
            now: r.now,
        })
        .collect();
    let changed: Vec<Changed> = webhooks
        .iter()
        .map(|&(id, only_resets)| Changed { id, only_resets })
        .collect();
    let rows: Vec<Settled> = sqlx::query_as(sqlx::AssertSqlSafe(SETTLE_SQL.as_str()))
        .bind(Json(&outcomes))
        .bind(Json(&changed))
        .fetch_all(tx)
        .await?;
    let mut held = HashSet::new();
    let mut found = HashMap::new();
    for row in rows {
        if row.held {
            held.insert(row.id);
            continue;
        }
        let (Some(user_id), Some(company_id), Some(name), Some(is_active), Some(failures)) = (
            row.user_id,
            row.company_id,
            row.name,
            row.is_active,
            row.consecutive_failures,
        ) else {
            continue;
        };
        let found_row = FoundRow {
            id: row.id,
            user_id,
            company_id,
            name,
            is_active,
            consecutive_failures: failures,
            circuit_open_until: row.circuit_open_until,
        };
        found.extend([found_row.into_entry()]);
    }
    Ok((held, found))
}

/// One table's part of the rows statement: `record` is the JSON rows' columns with their types
/// (the insert's columns, in order), `rest` what follows the insert's `SELECT`.
struct Part {
    table: &'static str,
    record: &'static str,
    rest: &'static str,
}

const EVENTS: Part = Part::plain(
    "events",
    "id text, user_id text, company_id text, event_type text, agent_id text, \
     agent_name text, data text, metadata text, created_at bigint",
);
const DELIVERIES: Part = Part::plain(
    "deliveries",
    "id text, event_id text, target text, webhook_id text, company_id text, \
     event_type text, status text, attempts bigint, next_attempt_at bigint, \
     lease_token text, created_at bigint, updated_at bigint, fifo boolean",
);
const LOGS: Part = Part::plain(
    "webhook_logs",
    "id text, webhook_type text, webhook_id text, delivery_id text, event_type text, \
     status text, request_payload text, request_headers text, response_status bigint, \
     response_body text, error_message text, retry_count bigint, \
     processing_time_ms bigint, processing_time_us bigint, created_at bigint",
);
const STATS: Part = Part {
    table: "webhook_stats",
    record: "webhook_id text, webhook_type text, total bigint, succeeded bigint, \
     failed bigint, total_ms bigint, total_us bigint, last_success_at bigint, \
     last_failure_at bigint",
    rest: STATS_UPSERT,
};
const NOTICES: Part = Part::plain(
    "webhook_notices",
    "id text, user_id text, company_id text, webhook_id text, event_type text, \
     data text, created_at bigint",
);
const MESSAGES: Part = Part::plain(
    "agent_messages",
    "id text, agent_id text, user_id text, company_id text, \
     incoming_webhook_id text, kind text, content text, created_at bigint",
);

impl Part {
    /// A part inserting its rows as they are.
    const fn plain(table: &'static str, record: &'static str) -> Part {
        Part {
            table,
            record,
            rest: "",
        }
    }

    /// The insert's columns: `record` without the types.
    fn columns(&self) -> String {
        self.record
            .split(',')
            .filter_map(|column| column.split_whitespace().next())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `INSERT … SELECT` of the rows in parameter `$param`, in the array's order (a function
    /// scan returns them so, and deliveries draw their `seq` as they are inserted); `guard`, a
    /// condition on the rows' `WHERE`.
    fn insert(&self, param: usize, guard: &str) -> String {
        let columns = self.columns();
        format!(
            "INSERT INTO {table} ({columns}) SELECT {columns} \
             FROM jsonb_to_recordset(${param}::jsonb) AS r({record}) {guard} {rest}",
            table = self.table,
            record = self.record,
            rest = self.rest,
        )
    }
}

/// The parts in the order of their parameters.
const PARTS: [&Part; 6] = [&EVENTS, &DELIVERIES, &LOGS, &STATS, &NOTICES, &MESSAGES];

/// The rows statement for each set of parts present (bit `i` for `PARTS[i]`): at most 63
/// texts, each prepared once per connection.
static ROWS_STATEMENTS: LazyLock<Vec<String>> =
    LazyLock::new(|| (0..1_usize << PARTS.len()).map(rows_statement).collect());

/// The statement inserting the parts in `present`. The sub-statements of one statement run in
/// no set order, but inbox messages take their inbox's lock (see `super::inbox`), which must not
/// be held while the totals' upsert waits for a row lock: the messages are the main statement,
/// and a scalar subquery over the totals' `RETURNING` (evaluated once, before the first message
/// row) makes the totals go first.
fn rows_statement(present: usize) -> String {
    let here = |table: &str| {
        let index = PARTS.iter().position(|part| part.table == table);
        index.is_some_and(|i| present & (1 << i) != 0)
    };
    let mut inserts: Vec<(String, String)> = Vec::new();
    for (param, part) in (1..).zip(PARTS.iter().filter(|part| here(part.table))) {
        let (name, guard, returning) = match part.table {
            "webhook_stats" => ("stats".to_string(), "", " RETURNING 1"),
            "agent_messages" if here(STATS.table) => {
                (String::new(), "WHERE (SELECT count(*) FROM stats) >= 0", "")
            }
            _ => (format!("p{param}"), "", ""),
        };
        inserts.push((name, format!("{}{returning}", part.insert(param, guard))));
    }
    // The last part (the messages when there are any) is the main statement.
    let Some((_, main)) = inserts.pop() else {
        return String::new();
    };
    if inserts.is_empty() {
        return main;
    }
    let ctes: Vec<String> = inserts
        .into_iter()
        .map(|(name, insert)| format!("{name} AS ({insert})"))
        .collect();
    format!("WITH {} {main}", ctes.join(", "))
}

/// Inserts `rows` and `notices` in one statement on `conn`, and adds the log entries and tallies
/// to their webhooks' totals (one row per webhook, in webhook order: concurrent groups lock
/// totals rows in one order).
async fn insert_rows(conn: &mut PgConnection, rows: &Rows<'_>, notices: &[Notice]) -> Result<()> {
    let events: Vec<EventRow> = rows.events.iter().map(|e| EventRow::from(*e)).collect();
    let deliveries: Vec<DeliveryRow> = rows
        .deliveries
        .iter()
        .map(|d| DeliveryRow::from(*d))
        .collect();
    let logs: Vec<LogRow> = rows.logs.iter().map(|l| LogRow::from(*l)).collect();
    let stats: Vec<StatsRow> = sum_by_webhook(&rows.logs, &rows.tallies)
        .into_iter()
        .map(|(webhook_id, webhook_type, t)| StatsRow {
            webhook_id,
            webhook_type: webhook_type.as_str(),
            total: t.total,
            succeeded: t.succeeded,
            failed: t.failed,
            total_ms: t.total_us / 1000,
            total_us: t.total_us,
            last_success_at: t.last_success_at,
            last_failure_at: t.last_failure_at,
        })
        .collect();
    let notices: Vec<NoticeRow> = notices.iter().map(NoticeRow::from).collect();
    let messages: Vec<MessageRow> = rows.messages.iter().map(|m| MessageRow::from(*m)).collect();
    let parts = [
        json_rows(&events),
        json_rows(&deliveries),
        json_rows(&logs),
        json_rows(&stats),
        json_rows(&notices),
        json_rows(&messages),
    ];
    let shape = (0..).zip(&parts).fold(0, |shape, (i, part)| {
        shape | (usize::from(part.is_some()) << i)
    });
    if shape == 0 {
        return Ok(());
    }
    let mut query = sqlx::query(sqlx::AssertSqlSafe(ROWS_STATEMENTS[shape].as_str()));
    for rows in parts.into_iter().flatten() {
        query = query.bind(rows);
    }
    query.execute(conn).await?;
    Ok(())
}

/// `rows` as a JSON array, `None` if there are none.
fn json_rows<T: Serialize>(rows: &[T]) -> Option<String> {
    (!rows.is_empty()).then(|| to_json(&rows))
}

/// A JSON value stored as its text (the columns holding JSON are text in both backends), written
/// into the row's JSON without an intermediate string.
fn json_text<S: Serializer>(value: &Value, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

fn optional_json_text<S: Serializer>(
    value: &Option<&Value>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serializer.collect_str(value),
        None => serializer.serialize_none(),
    }
}

#[derive(Serialize)]
struct EventRow<'a> {
    id: &'a str,
    user_id: &'a str,
    company_id: &'a str,
    event_type: &'a str,
    agent_id: Option<&'a str>,
    agent_name: Option<&'a str>,
    #[serde(serialize_with = "json_text")]
    data: &'a Value,
    #[serde(serialize_with = "optional_json_text")]
    metadata: Option<&'a Value>,
    created_at: i64,
}

impl<'a> From<&'a crate::domain::event::Event> for EventRow<'a> {
    fn from(event: &'a crate::domain::event::Event) -> Self {
        EventRow {
            id: &event.id,
            user_id: &event.tenant.user_id,
            company_id: &event.tenant.company_id,
            event_type: &event.event_type,
            agent_id: event.agent_id.as_deref(),
            agent_name: event.agent_name.as_deref(),
            data: &event.data,
            metadata: event.metadata.as_ref(),
            created_at: event.created_at,
        }
    }
}

#[derive(Serialize)]
struct DeliveryRow<'a> {
    id: &'a str,
    event_id: &'a str,
    target: &'static str,
    webhook_id: &'a str,
    company_id: &'a str,
    event_type: &'a str,
    status: &'static str,
    attempts: i64,
    next_attempt_at: i64,
    lease_token: Option<&'a str>,
    created_at: i64,
    updated_at: i64,
    fifo: bool,
}

impl<'a> From<&'a crate::domain::delivery::Delivery> for DeliveryRow<'a> {
    fn from(d: &'a crate::domain::delivery::Delivery) -> Self {
        DeliveryRow {
            id: &d.id,
            event_id: &d.event_id,
            target: d.target.as_str(),
            webhook_id: &d.webhook_id,
            company_id: &d.company_id,
            event_type: &d.event_type,
            status: d.status.as_str(),
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            lease_token: d.lease_token.as_deref(),
            created_at: d.created_at,
            updated_at: d.updated_at,
            fifo: d.fifo,
        }
    }
}

#[derive(Serialize)]
struct LogRow<'a> {
    id: &'a str,
    webhook_type: &'static str,
    webhook_id: &'a str,
    delivery_id: Option<&'a str>,
    event_type: Option<&'a str>,
    status: &'a str,
    request_payload: Option<&'a str>,
    request_headers: &'a str,
    response_status: Option<i64>,
    response_body: Option<&'a str>,
    error_message: Option<&'a str>,
    retry_count: i64,
    processing_time_ms: i64,
    processing_time_us: i64,
    created_at: i64,
}

impl<'a> From<&'a crate::domain::log::LogEntry> for LogRow<'a> {
    fn from(e: &'a crate::domain::log::LogEntry) -> Self {
        LogRow {
            id: &e.id,
            webhook_type: e.webhook_type.as_str(),
            webhook_id: &e.webhook_id,
            delivery_id: e.delivery_id.as_deref(),
            event_type: e.event_type.as_deref(),
            status: &e.status,
            request_payload: e.request_payload.as_deref(),
            request_headers: e.request_headers.as_json(),
            response_status: e.response_status,
            response_body: e.response_body.as_deref(),
            error_message: e.error_message.as_deref(),
            retry_count: e.retry_count,
            processing_time_ms: e.processing_time_us / 1000,
            processing_time_us: e.processing_time_us,
            created_at: e.created_at,
        }
    }
}

#[derive(Serialize)]
struct StatsRow<'a> {
    webhook_id: &'a str,
    webhook_type: &'static str,
    total: i64,
    succeeded: i64,
    failed: i64,
    total_ms: i64,
    total_us: i64,
    last_success_at: Option<i64>,
    last_failure_at: Option<i64>,
}

#[derive(Serialize)]
struct NoticeRow<'a> {
    id: &'a str,
    user_id: &'a str,
    company_id: &'a str,
    webhook_id: &'a str,
    event_type: &'a str,
    #[serde(serialize_with = "json_text")]
    data: &'a Value,
    created_at: i64,
}

impl<'a> From<&'a Notice> for NoticeRow<'a> {
    fn from(n: &'a Notice) -> Self {
        NoticeRow {
            id: &n.id,
            user_id: &n.tenant.user_id,
            company_id: &n.tenant.company_id,
            webhook_id: &n.webhook_id,
            event_type: &n.event_type,
            data: &n.data,
            created_at: n.created_at,
        }
    }
}

#[derive(Serialize)]
struct MessageRow<'a> {
    id: &'a str,
    agent_id: &'a str,
    user_id: &'a str,
    company_id: &'a str,
    incoming_webhook_id: Option<&'a str>,
    kind: &'static str,
    #[serde(serialize_with = "json_text")]
    content: &'a Value,
    created_at: i64,
}

impl<'a> From<&'a crate::domain::agent::AgentMessage> for MessageRow<'a> {
    fn from(m: &'a crate::domain::agent::AgentMessage) -> Self {
        MessageRow {
            id: &m.id,
            agent_id: &m.agent_id,
            user_id: &m.tenant.user_id,
            company_id: &m.tenant.company_id,
            incoming_webhook_id: m.incoming_webhook_id.as_deref(),
            kind: m.kind.as_str(),
            content: &m.content,
            created_at: m.created_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{
        events::{DELIVERY_COLUMNS, EVENT_COLUMNS},
        inbox::MESSAGE_COLUMNS,
        logs::{LOG_COLUMNS, STATS_COLUMNS},
        notices::NOTICE_COLUMNS,
    };

    /// The JSON rows' columns are the ones the other writers insert, in the same order.
    #[test]
    fn each_part_inserts_the_columns_the_other_writers_do() {
        for (part, columns) in [
            (&EVENTS, EVENT_COLUMNS),
            (&DELIVERIES, DELIVERY_COLUMNS),
            (&LOGS, LOG_COLUMNS),
            (&STATS, STATS_COLUMNS),
            (&NOTICES, NOTICE_COLUMNS),
            (&MESSAGES, MESSAGE_COLUMNS),
        ] {
            let normal = |s: &str| s.split(',').map(str::trim).collect::<Vec<_>>().join(", ");
            assert_eq!(part.columns(), normal(columns), "{}", part.table);
        }
    }

    #[test]
    fn messages_come_last_and_wait_for_the_totals() {
        let all = rows_statement(0b11_1111);
        assert!(all.starts_with("WITH p1 AS (INSERT INTO events"), "{all}");
        let main = all.rsplit_once("INSERT INTO").expect("main").1;
        assert!(main.starts_with(" agent_messages"), "{all}");
        assert!(main.contains("(SELECT count(*) FROM stats) >= 0"), "{all}");
        assert!(all.contains("stats AS (INSERT INTO webhook_stats"), "{all}");
        let publishes = rows_statement(0b11);
        assert!(
            publishes.starts_with("WITH p1 AS (INSERT INTO events")
                && publishes.contains(") INSERT INTO deliveries"),
            "{publishes}"
        );
        let alone = rows_statement(0b100);
        assert!(alone.starts_with("INSERT INTO webhook_logs"), "{alone}");
    }
}
