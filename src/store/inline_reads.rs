//! The reads every request makes — its API key, its incoming webhook, its company's webhook
//! version, an idempotency or dedup key — are point lookups that SQLite answers in a few
//! microseconds. Through sqlx each was a trip to one of its connection threads and back, and a
//! second one when the connection went back to the pool (sqlx 0.9 pings every returned
//! connection): in the ingest profile those thread wake-ups were a third of hookd's CPU. On a
//! SQLite file these reads run inline instead, on the calling thread, on read-only connections
//! kept here with their statements prepared. Only point reads belong here: anything that may
//! scan would hold a runtime thread.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use rusqlite::{Connection, OpenFlags, Row, Statement, params_from_iter};
use serde::de::DeserializeOwned;

use super::{Result, StoreError};

/// Connections kept between reads. Reads never wait for one: a read that finds none opens its
/// own, so at most one per runtime thread is ever in use at once.
const KEPT: usize = 8;

/// Statements each connection keeps prepared: more than there are hot reads.
const CACHED_STATEMENTS: usize = 16;

/// A WAL reader waits only in rare moments (another connection recovering the WAL); it must not
/// hold a runtime thread long, so it gives up soon and the request gets a 503.
const BUSY_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub(super) struct InlineReads {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl InlineReads {
    pub(super) fn new(path: &Path) -> InlineReads {
        InlineReads {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::with_capacity(KEPT)),
        }
    }

    /// The first row of `sql` (its parameters all text) as `map` reads it, if there is one.
    pub(super) fn row<R>(
        &self,
        sql: &str,
        params: &[&str],
        map: impl FnOnce(&Row<'_>) -> Result<R>,
    ) -> Result<Option<R>> {
        self.read(sql, |statement| {
            let mut rows = statement.query(params_from_iter(params))?;
            rows.next()?.map(map).transpose()
        })
    }

    /// Every row of `sql`, whose one parameter is `keys` as a JSON array (read with
    /// `json_each`, so the statement's text, and its prepared form, is the same for any count).
    pub(super) fn rows_by_keys<R: DeserializeOwned>(
        &self,
        sql: &str,
        keys: &[&str],
    ) -> Result<Vec<R>> {
        let keys = serde_json::to_string(keys).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.read(sql, |statement| {
            let mut rows = statement.query([keys])?;
            let mut read = Vec::new();
            while let Some(row) = rows.next()? {
                read.push(by_name(row)?);
            }
            Ok(read)
        })
    }

    /// Runs `read` on `sql` prepared on a kept connection.
    fn read<T>(&self, sql: &str, read: impl FnOnce(&mut Statement<'_>) -> Result<T>) -> Result<T> {
        let connection = self.take()?;
        let result = connection
            .prepare_cached(sql)
            .map_err(StoreError::from)
            .and_then(|mut statement| read(&mut statement));
        // A connection whose read failed is dropped, not kept: whatever went wrong stays with it.
        if result.is_ok() {
            self.give_back(connection);
        }
        result
    }

    fn take(&self) -> Result<Connection> {
        if let Some(connection) = self.lock().pop() {
            return Ok(connection);
        }
        let connection = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(BUSY_TIMEOUT)?;
        connection.set_prepared_statement_cache_capacity(CACHED_STATEMENTS);
        Ok(connection)
    }

    fn give_back(&self, connection: Connection) {
        let mut idle = self.lock();
        if idle.len() < KEPT {
            idle.push(connection);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // Poisoning needs a panic while the list is held; nothing in here panics.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads a row into `R` by column name (the same names sqlx's `FromRow` reads).
pub(super) fn by_name<R: DeserializeOwned>(row: &Row<'_>) -> Result<R> {
    serde_rusqlite::from_row(row).map_err(|e| StoreError::Corrupt(e.to_string()))
}
