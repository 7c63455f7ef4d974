//! Persistence. One interface ([`Store`]) over two backends: embedded SQLite (the default) and
//! PostgreSQL (for several nodes). Each query is written once and runs on either pool through
//! [`on_pool!`]; the schema lives in versioned migrations per backend (`migrations/`).
//! Timestamps are unix milliseconds and JSON is text in both, so rows read back identically.

mod agents;
mod batch;
mod deliveries;
mod event_types;
mod events;
mod inbox;
mod incoming;
mod inline_reads;
mod keys;
mod logs;
mod notices;
mod outgoing;
mod partitions;
mod postgres_writer;
mod sqlite_writer;

pub use deliveries::{AttemptRecord, DeliveryPage, HealthChange, Reply};
pub use events::{Idempotency, Publication};
pub use inbox::{Acceptance, InboxPage, InboxPosition};
pub use incoming::Addressed;
pub use keys::KeyHolder;
pub use logs::{LogQuery, Tally};

use std::{str::FromStr, time::Duration};

use crate::domain::quota::Owned;

use sqlx::{
    PgPool, SqlitePool,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

/// Failures of the storage layer, in terms the API can map to a status.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    /// The company holds as many of these as it may (see [`crate::domain::quota`]).
    #[error("the company has {most} {}, the most allowed", .owned.label())]
    QuotaReached { owned: Owned, most: i64 },
    /// The database refused a value (SQLSTATE class 22, a data exception): the write that
    /// carried it fails; nothing else does.
    #[error("value refused by the database: {0}")]
    Refused(String),
    /// The database could not be reached or did not answer in time: the caller may retry.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("unsupported database url {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("stored row is unreadable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Database(sqlx::Error),
    /// A statement of the SQLite group commit failed.
    #[error(transparent)]
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match error.sqlite_error_code() {
            Some(ErrorCode::ConstraintViolation) => StoreError::Conflict(error.to_string()),
            Some(
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen,
            ) => StoreError::Unavailable(sqlx::Error::Io(std::io::Error::other(error))),
            _ => StoreError::Sqlite(error),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::PoolTimedOut
            | sqlx::Error::Io(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(error),
            sqlx::Error::Database(db) if db.code().as_deref().is_some_and(unreachable_code) => {
                StoreError::Unavailable(error)
            }
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(db.message().to_string())
            }
            sqlx::Error::Database(db) if db.code().is_some_and(|code| code.starts_with("22")) => {
                StoreError::Refused(db.message().to_string())
            }
            _ => StoreError::Database(error),
        }
    }
}

/// SQLSTATEs that say the database cannot be reached now rather than that the statement is wrong:
/// connection exceptions (class 08), too many connections, an administrator ending the session
/// or the server (57P01–57P03), and a database not accepting connections (55000, as after
/// `ALTER DATABASE … ALLOW_CONNECTIONS false` or while it is being dropped).
fn unreachable_code(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "53300" | "57P01" | "57P02" | "57P03" | "55000")
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Clone, Debug)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever pool the store has. The body is compiled once
/// per backend, so the same SQL and row mapping serve both.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.db {
            crate::store::Db::Sqlite($pool) => $body,
            crate::store::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// [`on_pool!`] for statements that write: on SQLite they go to the single write connection and
/// take their turn with the group commit's thread, so writers queue (fairly, without sleeping)
/// instead of colliding on SQLite's one write lock and backing off in its busy handler (seen:
/// claims waiting over a second behind group commits). On PostgreSQL it is the same pool.
macro_rules! on_writer {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.write_db {
            crate::store::Db::Sqlite($pool) => {
                let _turn = $store.turn.lock().await;
                $body
            }
            crate::store::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_writer;

/// [`on_writer!`] for a row that a company may hold only so many of: `$insert` (statements on
/// the transaction `$tx`) runs after the company's rows of that kind are counted in the same
/// transaction, and not at all if it has `$most` already ([`StoreError::QuotaReached`]).
/// Counts are exact under concurrency: SQLite's writes take turns, and on PostgreSQL a
/// transaction-scoped advisory lock per company and kind makes concurrent inserts count one
/// after another (under READ COMMITTED each statement sees what committed before it began).
macro_rules! insert_within_quota {
    ($store:expr, $owned:expr, $most:expr, $company:expr, $tx:ident => $insert:expr) => {{
        let (owned, most, company): (crate::domain::quota::Owned, i64, &str) =
            ($owned, $most, $company);
        let table = crate::store::owned_table(owned);
        let postgres = matches!($store.write_db, crate::store::Db::Postgres(_));
        on_writer!($store, pool => {
            let mut $tx = pool.begin().await?;
            if postgres {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                    .bind(format!("{table}/{company}"))
                    .execute(&mut *$tx)
                    .await?;
            }
            let count = format!("SELECT count(*) FROM {table} WHERE company_id = $1");
            let (held,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(count))
                .bind(company)
                .fetch_one(&mut *$tx)
                .await?;
            if held >= most {
                return Err(crate::store::StoreError::QuotaReached { owned, most });
            }
            $insert;
            $tx.commit().await?;
        })
    }};
}
pub(crate) use insert_within_quota;

impl Store {
    /// Refuses with [`StoreError::QuotaReached`] if `company` already holds `most` of `owned`:
    /// for a create with side effects before its insert, so that a refused one leaves none in
    /// the usual case (the insert's own count stays the exact one).
    pub async fn check_quota(&self, owned: Owned, most: i64, company: &str) -> Result<()> {
        let table = owned_table(owned);
        let count = format!("SELECT count(*) FROM {table} WHERE company_id = $1");
        let held: i64 = on_pool!(self, pool => sqlx::query_scalar(sqlx::AssertSqlSafe(count))
            .bind(company)
            .fetch_one(pool)
            .await?);
        if held >= most {
            return Err(StoreError::QuotaReached { owned, most });
        }
        Ok(())
    }

    /// How many of `owned` the tenant has, counted in the store rather than by reading them.
    pub async fn count_owned(
        &self,
        owned: Owned,
        tenant: &crate::domain::tenant::Tenant,
    ) -> Result<i64> {
        let table = owned_table(owned);
        let count = format!("SELECT count(*) FROM {table} WHERE company_id = $1 AND user_id = $2");
        Ok(
            on_pool!(self, pool => sqlx::query_scalar(sqlx::AssertSqlSafe(count))
            .bind(&tenant.company_id)
            .bind(&tenant.user_id)
            .fetch_one(pool)
            .await?),
        )
    }
}

/// The table that holds the companies' `owned`.
fn owned_table(owned: Owned) -> &'static str {
    match owned {
        Owned::OutgoingWebhooks => "outgoing_webhooks",
        Owned::IncomingWebhooks => "incoming_webhooks",
        Owned::EventTypes => "event_types",
        Owned::Agents => "agents",
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    /// For reads (and, on PostgreSQL, writes too).
    db: Db,
    /// For writes; see [`on_writer!`].
    write_db: Db,
    /// The group-commit writer of this node (see [`batch`], [`sqlite_writer`],
    /// [`postgres_writer`]).
    writer: tokio::sync::mpsc::Sender<batch::Job>,
    /// SQLite's write lock, taken in turns (first come, first served) by the group commit and
    /// the other writes, so that none of them waits in SQLite's busy handler.
    turn: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Told when this node wrote notices about webhooks, which wait to be published.
    noticed: std::sync::Arc<tokio::sync::Notify>,
    /// On a SQLite file, the hot paths' point reads (see [`Store::point_read`]).
    inline: Option<std::sync::Arc<inline_reads::InlineReads>>,
    /// The incoming webhooks requests were sent to (see [`incoming::AddressedCache`]).
    addressed: std::sync::Arc<incoming::AddressedCache>,
    /// The directory of a `sqlite::memory:` store's file, removed with the last clone.
    scratch: Option<std::sync::Arc<tempfile::TempDir>>,
}

/// A row type that either backend's pool reads, and the inline reads by column name.
trait StoredRow:
    serde::de::DeserializeOwned
    + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
    + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
    + Send
    + Unpin
{
}

impl<R> StoredRow for R where
    R: serde::de::DeserializeOwned
        + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
        + Send
        + Unpin
{
}

/// How long a request waits for a pooled connection before the store counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A PostgreSQL connection idle this long is pinged before it is handed out (one that fails is
/// replaced). sqlx pings every connection it hands out by default: a round trip before each
/// read and each group commit (at 1,000 events/s, two per delivery), where a connection in
/// steady use has just shown that it works; one that died meanwhile fails its statement, which
/// answers 503 like any outage.
const PING_IF_IDLE: Duration = Duration::from_secs(1);

/// A PostgreSQL pool of `size` connections.
fn pg_pool(size: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

impl Store {
    /// Connects to `url` (`sqlite://hookd.db`, `sqlite::memory:`, `postgres://…`) and applies
    /// pending migrations.
    ///
    /// `sqlite::memory:` is a database in a file of a temporary directory, removed when the
    /// last clone of the store is dropped: SQLite's in-memory database exists once per
    /// connection, and the group commit's thread, the readers and sqlx's writer need one that
    /// they can all open.
    pub async fn connect(url: &str) -> Result<Store> {
        if url.starts_with("sqlite:") && (url.contains(":memory:") || url.contains("mode=memory")) {
            let dir = tempfile::Builder::new()
                .prefix("hookd-memory-")
                .tempdir()
                .map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))?;
            let file = format!("sqlite://{}", dir.path().join("hookd.db").display());
            let mut store = Box::pin(Store::connect(&file)).await?;
            store.scratch = Some(std::sync::Arc::new(dir));
            return Ok(store);
        }
        let turn = std::sync::Arc::new(tokio::sync::Mutex::new(()));
        let noticed = std::sync::Arc::new(tokio::sync::Notify::new());
        let mut inline = None;
        let (db, write_db, writer) = if url.starts_with("sqlite:") {
            // WAL lets readers run beside the writer; synchronous=FULL makes a commit survive
            // power loss, which is what a 2xx promises.
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            // No ping before handing out a connection: an embedded database cannot have hung
            // up, and each ping is a round trip to the connection's thread (on the one writer,
            // it was most of a group commit's wait to begin).
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options.clone())
                .await?;
            sqlx::migrate!("migrations/sqlite").run(&writer).await?;
            let group_writer =
                sqlite_writer::start(options.get_filename(), turn.clone(), noticed.clone())?;
            inline = Some(std::sync::Arc::new(inline_reads::InlineReads::new(
                options.get_filename(),
            )));
            let readers = SqlitePoolOptions::new()
                .max_connections(8)
                .test_before_acquire(false)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await?;
            (Db::Sqlite(readers), Db::Sqlite(writer), group_writer)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url)?;
            let pool = pg_pool(16).connect_with(options.clone()).await?;
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
            // The group commit has a connection of its own: one group is written at a time,
            // and its statements (rows bound as JSON, primary-key lookups) plan the same
            // whatever their parameters, so they are planned once, not at each execution.
            let group_pool = pg_pool(1)
                .connect_lazy_with(options.options([("plan_cache_mode", "force_generic_plan")]));
            let group_writer = postgres_writer::start(group_pool, noticed.clone());
            let db = Db::Postgres(pool);
            (db.clone(), db, group_writer)
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        Ok(Store {
            writer,
            db,
            write_db,
            turn,
            noticed,
            inline,
            addressed: Default::default(),
            scratch: None,
        })
    }

    /// The first row of `sql` (its parameters all text), for the point reads every request
    /// makes: inline on a SQLite file (see [`inline_reads`]), else through the pool.
    async fn point_read<R: StoredRow>(&self, sql: &str, params: &[&str]) -> Result<Option<R>> {
        self.point_read_as(sql, params, inline_reads::by_name).await
    }

    /// [`Store::point_read`] with the inline read's own way of reading its row.
    async fn point_read_as<R>(
        &self,
        sql: &str,
        params: &[&str],
        inline_row: impl FnOnce(&rusqlite::Row<'_>) -> Result<R>,
    ) -> Result<Option<R>>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin,
    {
        if let Some(inline) = &self.inline {
            return inline.row(sql, params, inline_row);
        }
        Ok(on_pool!(self, pool => {
            let mut query = sqlx::query_as::<_, R>(sqlx::AssertSqlSafe(sql.to_string()));
            for param in params {
                query = query.bind(*param);
            }
            query.fetch_optional(pool).await?
        }))
    }

    /// The rows of `select` (a `SELECT … FROM … WHERE` without its last condition) whose `key`
    /// column is one of `keys`: primary-key reads for the delivery engine's batches, inline on a
    /// SQLite file like [`Store::point_read`].
    async fn rows_by_keys<R: StoredRow>(
        &self,
        select: &str,
        key: &str,
        keys: &[&str],
    ) -> Result<Vec<R>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(inline) = &self.inline {
            let sql = format!("{select} {key} IN (SELECT value FROM json_each($1))");
            return inline.rows_by_keys(&sql, keys);
        }
        let sql = format!("{select} {key} IN ({})", events::in_list(keys.len()));
        Ok(on_pool!(self, pool => {
            let mut query = sqlx::query_as::<_, R>(sqlx::AssertSqlSafe(sql));
            for key in keys {
                query = query.bind(*key);
            }
            query.fetch_all(pool).await?
        }))
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop)?);
        Ok(())
    }

    pub fn backend(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Deletes row `id` of `table` if the tenant owns it; `NotFound` otherwise.
    async fn delete_owned(
        &self,
        table: &'static str,
        tenant: &crate::domain::tenant::Tenant,
        id: &str,
    ) -> Result<()> {
        let sql = format!("DELETE FROM {table} WHERE id = $1 AND company_id = $2 AND user_id = $3");
        let done = on_writer!(self, pool => sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(&tenant.company_id)
            .bind(&tenant.user_id)
            .execute(pool)
            .await?
            .rows_affected());
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Sets `column` of the tenant's row `id` of `table` (a webhook) to `swap.next` and its
    /// previous secret to `swap.previous`, only if `column` still holds `swap.current`: a
    /// compare-and-swap, so that of two concurrent rotations only one wins. `Conflict`: another
    /// rotation or change came first (its caller holds the secret that counts); `NotFound`: no
    /// such row.
    async fn replace_secret(
        &self,
        table: &'static str,
        column: &'static str,
        tenant: &crate::domain::tenant::Tenant,
        id: &str,
        swap: SecretSwap<'_>,
    ) -> Result<()> {
        let sql = format!(
            "UPDATE {table} SET {column} = $5, previous_secret = $6,
                previous_secret_expires_at = $7, updated_at = $8
             WHERE id = $1 AND company_id = $2 AND user_id = $3
               AND {column} IS NOT DISTINCT FROM $4"
        );
        let done = on_writer!(self, pool => sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(&tenant.company_id)
            .bind(&tenant.user_id)
            .bind(swap.current)
            .bind(swap.next)
            .bind(swap.previous.map(|p| &p.secret))
            .bind(swap.previous.map(|p| p.expires_at))
            .bind(swap.now)
            .execute(pool)
            .await?
            .rows_affected());
        if done == 1 {
            return Ok(());
        }
        let exists = format!(
            "SELECT COUNT(*) FROM {table} WHERE id = $1 AND company_id = $2 AND user_id = $3"
        );
        let found: i64 = on_pool!(self, pool => sqlx::query_scalar(sqlx::AssertSqlSafe(exists))
            .bind(id)
            .bind(&tenant.company_id)
            .bind(&tenant.user_id)
            .fetch_one(pool)
            .await?);
        Err(match found {
            0 => StoreError::NotFound,
            _ => StoreError::Conflict("the secret was changed meanwhile; rotate again".into()),
        })
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await);
        on_writer!(self, pool => pool.close().await);
    }
}

/// A secret replaced by [`Store::replace_secret`]: what the column must still hold, what it
/// gets, and the replaced secret to keep valid beside it.
struct SecretSwap<'a> {
    current: Option<&'a str>,
    next: &'a str,
    previous: Option<&'a crate::domain::rotation::PreviousSecret>,
    now: i64,
}

/// Encodes a value for a JSON text column.
fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Serialising plain maps, vectors and JSON values cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// Decodes a JSON text column; a failure means the row was written by something else.
fn from_json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::domain::{
        delivery::{Delivery, TargetKind},
        event::Event,
    };

    /// `sqlite::memory:` goes through the same group commit and reads as a file, and leaves
    /// nothing behind once the store is gone.
    #[tokio::test]
    async fn a_memory_store_works_as_a_file_does_and_is_removed_with_the_store() {
        let store = Store::connect("sqlite::memory:").await.expect("store");
        let dir = store
            .scratch
            .as_ref()
            .expect("a directory")
            .path()
            .to_path_buf();
        assert!(dir.join("hookd.db").exists());
        let event = Arc::new(Event::sample("chat.completed", json!({"n": 1})));
        let publication = Publication {
            tenant: event.tenant.clone(),
            deliveries: vec![Delivery::pending(&event, TargetKind::Webhook, "hook", 0)],
            events: vec![Arc::clone(&event)],
            idempotency: None,
        };
        assert!(store.publish(publication).await.expect("publish"));
        let read = store.events_by_id(&[&event.id]).await.expect("read");
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].data, json!({"n": 1}));
        drop(store);
        assert!(!dir.exists());
    }
}
