//! The day partitions of the log on PostgreSQL (migration 0014): every node keeps the next days'
//! created and drops those wholly past the retention. SQLite keeps one table (its retention
//! figures are in `docs/benchmarks.md`), so there is nothing to do there.

use sqlx::{PgConnection, PgPool};

use super::{Db, Result, Store};

const DAY_MS: i64 = 24 * 60 * 60 * 1_000;

/// Today's partition and the next ones up to this many days on: nodes down for two days, or a
/// clock two days ahead, still find their day's partition. Beyond that rows go to the DEFAULT
/// partition, which takes anything (no insert fails for want of a partition).
const DAYS_AHEAD: i64 = 2;

/// Partition upkeep takes turns across nodes: two nodes creating the same day's partition at
/// once would otherwise collide on its name.
const TURN: &str = "SELECT pg_advisory_xact_lock(hashtext('hookd.log_partitions'))";

/// Creating or dropping a partition takes a lock that briefly holds up the log's readers and
/// writers; waiting for it behind a long statement would hold up everything queued behind the
/// wait too. Upkeep gives up instead and tries again at the next round (a minute later).
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '1s'";

/// A day partition of `webhook_logs`: rows with `from <= created_at < to`.
#[derive(sqlx::FromRow)]
struct Partition {
    name: String,
    from: i64,
    to: i64,
}

/// The log's partitions but the DEFAULT one, with their bounds as PostgreSQL states them, each
/// named as SQL can use it (quoted if need be).
async fn partitions(conn: &mut PgConnection) -> Result<Vec<Partition>> {
    Ok(sqlx::query_as(
        r"SELECT c.oid::regclass::text AS name, b[1]::bigint AS from, b[2]::bigint AS to
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid,
         LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                              'FROM \(''?(-?\d+)''?\) TO \(''?(-?\d+)''?\)') b
         WHERE i.inhparent = 'webhook_logs'::regclass AND b IS NOT NULL",
    )
    .fetch_all(conn)
    .await?)
}

/// `webhook_logs_pYYYYMMDD` for the UTC day `day` (days since the epoch).
fn partition_name(day: i64) -> String {
    let date = chrono::DateTime::from_timestamp_millis(day * DAY_MS)
        .map(|at| at.format("%Y%m%d").to_string())
        .unwrap_or_else(|| day.to_string());
    format!("webhook_logs_p{date}")
}

impl Store {
    /// Creates the log partitions of today and the next [`DAYS_AHEAD`] days (by `now`, unix ms)
    /// that do not exist yet; returns how many it created. Rows of such a day already in the
    /// DEFAULT partition (written by a node whose clock was ahead) move into the new partition.
    ///
    /// A partition is made as a table of its own and then attached, rather than with
    /// `CREATE TABLE … PARTITION OF`: attaching locks the log against other schema changes only,
    /// where `PARTITION OF` would lock out its readers and writers (only the DEFAULT partition
    /// is locked out, for as long as it takes to check it holds none of the day's rows).
    pub async fn keep_log_partitions(&self, now: i64) -> Result<usize> {
        let Db::Postgres(pool) = &self.write_db else {
            return Ok(0);
        };
        let today = now.div_euclid(DAY_MS);
        let mut tx = pool.begin().await?;
        sqlx::query(LOCK_TIMEOUT).execute(&mut *tx).await?;
        sqlx::query(TURN).execute(&mut *tx).await?;
        let existing = partitions(&mut tx).await?;
        let missing: Vec<i64> = (today..=today + DAYS_AHEAD)
            .filter(|day| {
                let (from, to) = (day * DAY_MS, (day + 1) * DAY_MS);
                !existing.iter().any(|p| p.from < to && from < p.to)
            })
            .collect();
        if missing.is_empty() {
            return Ok(0);
        }
        sqlx::query("LOCK TABLE webhook_logs_default IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        for &day in &missing {
            let (name, from, to) = (partition_name(day), day * DAY_MS, (day + 1) * DAY_MS);
            for sql in [
                format!("CREATE TABLE {name} (LIKE webhook_logs INCLUDING DEFAULTS)"),
                format!(
                    "WITH moved AS (DELETE FROM webhook_logs_default
                                    WHERE created_at >= {from} AND created_at < {to} RETURNING *)
                     INSERT INTO {name} SELECT * FROM moved"
                ),
                format!(
                    "ALTER TABLE webhook_logs ATTACH PARTITION {name} FOR VALUES FROM ({from}) TO ({to})"
                ),
            ] {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(missing.len())
    }
}

/// Drops the log partitions that hold only rows older than `before` (unix ms); returns about
/// how many rows they held (PostgreSQL's estimate: counting them would read them all).
pub(super) async fn drop_log_partitions(pool: &PgPool, before: i64) -> Result<u64> {
    let mut tx = pool.begin().await?;
    sqlx::query(LOCK_TIMEOUT).execute(&mut *tx).await?;
    sqlx::query(TURN).execute(&mut *tx).await?;
    let mut rows = 0;
    for partition in partitions(&mut tx).await? {
        if partition.to > before {
            continue;
        }
        let estimate: f32 =
            sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = to_regclass($1)")
                .bind(&partition.name)
                .fetch_one(&mut *tx)
                .await?;
        // -1: never analyzed.
        rows += estimate.max(0.0) as u64;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP TABLE {}",
            partition.name
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::{DAY_MS, partition_name};

    #[test]
    fn partitions_are_named_by_their_utc_day() {
        assert_eq!(partition_name(0), "webhook_logs_p19700101");
        // 2026-11-30T00:00:00Z
        assert_eq!(
            partition_name(1_796_083_200_000 / DAY_MS - 1),
            "webhook_logs_p20261130"
        );
    }
}
