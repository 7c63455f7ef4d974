//! Retention of the log: entries of days past the retention go (on PostgreSQL by dropping their
//! day partitions), newer ones stay, and no entry is refused for want of a partition. A database
//! made by the migrations before partitions keeps its entries through the migration.

use serde_json::json;
use sqlx::{Connection, PgConnection};

use crate::{
    both_backends,
    helpers::{Backend, TestApp, create_database, postgres_available, spawn_app_with},
    receiving::create_hook,
};
use hookd::{domain::time::now_ms, store::Store};

const DAY_MS: i64 = 24 * 60 * 60 * 1_000;

both_backends!(days_past_the_retention_go_and_later_entries_stay);

/// Writes a log entry of webhook `hook` as the node would, with id `id`, at `at`.
fn entry(hook: &str, id: &str, at: i64) -> String {
    format!(
        "INSERT INTO webhook_logs (id, webhook_type, webhook_id, status, request_headers,
            retry_count, processing_time_ms, processing_time_us, created_at)
         VALUES ('{id}', 'incoming', '{hook}', 'accepted', '{{}}', 0, 1, 1000, {at})"
    )
}

/// The ids of the webhook's log entries, newest first, through the API.
async fn logged(app: &TestApp, key: &str, hook: &str) -> Vec<String> {
    let path = format!("/api/webhooks/{hook}/logs?webhook_type=incoming&limit=1000");
    let logs = app.get(&path, key).await.expect(200);
    logs.as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["id"].as_str().unwrap().to_string())
        .collect()
}

/// Where PostgreSQL keeps each of the entries: (id, partition).
async fn placed(app: &TestApp) -> Vec<(String, String)> {
    let mut db = PgConnection::connect(&app.database_url).await.unwrap();
    sqlx::query_as("SELECT id, tableoid::regclass::text FROM webhook_logs ORDER BY created_at")
        .fetch_all(&mut db)
        .await
        .unwrap()
}

async fn days_past_the_retention_go_and_later_entries_stay(backend: Backend) {
    // The node's own retention (housekeeping) reaches back ten years, so only the calls below
    // remove anything.
    let app = spawn_app_with(backend, |settings| {
        settings.log_retention_days = Some(3_650);
    })
    .await;
    let key = app.tenant_key().await;
    let hook = create_hook(&app, &key, json!({"agent_id": "a"})).await.id;
    let now = now_ms();
    // Today's partition, should the day have turned since the migration made it.
    app.store.keep_log_partitions(now).await.unwrap();
    // The cut is the start of a UTC day, so whole days lie before it on either backend.
    let cut = (now.div_euclid(DAY_MS) - 30) * DAY_MS;
    let entries = [
        ("long-gone", cut - 40 * DAY_MS),
        ("day-before", cut - DAY_MS + 3_600_000),
        ("last-before", cut - 1),
        ("at-cut", cut),
        ("recent", now),
        // From a node whose clock is 10 days ahead: past the partitions made ahead of time.
        ("ahead", now + 10 * DAY_MS),
    ];
    for (id, at) in entries {
        app.execute_sql(&entry(&hook, id, at)).await;
    }
    if backend == Backend::Postgres {
        // The days of the old entries get partitions of their own, as if nodes had run then;
        // what was written for them meanwhile moves out of the DEFAULT partition.
        for at in [cut - 40 * DAY_MS, cut - DAY_MS, cut, now + 10 * DAY_MS] {
            assert!(app.store.keep_log_partitions(at).await.unwrap() > 0);
        }
        // Made once: a second node (or round) finds them there.
        assert_eq!(app.store.keep_log_partitions(cut).await.unwrap(), 0);
        let day = |at: i64| {
            let date = chrono::DateTime::from_timestamp_millis(at).unwrap();
            format!("webhook_logs_p{}", date.format("%Y%m%d"))
        };
        let expected: Vec<(String, String)> = entries
            .iter()
            .map(|(id, at)| (id.to_string(), day(*at)))
            .collect();
        assert_eq!(placed(&app).await, expected);
    }
    assert_eq!(
        logged(&app, &key, &hook).await,
        [
            "ahead",
            "recent",
            "at-cut",
            "last-before",
            "day-before",
            "long-gone"
        ]
    );

    let removed = app.store.prune_logs_older_than(cut).await.unwrap();
    assert_eq!(
        logged(&app, &key, &hook).await,
        ["ahead", "recent", "at-cut"]
    );
    if backend == Backend::Sqlite {
        assert_eq!(removed, 3);
    } else {
        // Nothing older than the cut is left in any partition: those days are gone whole.
        let partitions: Vec<String> = placed(&app).await.into_iter().map(|(_, p)| p).collect();
        assert!(
            partitions.iter().all(|p| p != "webhook_logs_default"),
            "{partitions:?}"
        );
        // A node writing for a day whose partition was dropped (its clock far behind) still
        // gets its entry stored, in the DEFAULT partition, and retention deletes it there.
        app.execute_sql(&entry(&hook, "behind", cut - 2 * DAY_MS))
            .await;
        assert_eq!(app.store.prune_logs_older_than(cut).await.unwrap(), 1);
    }
    assert_eq!(
        logged(&app, &key, &hook).await,
        ["ahead", "recent", "at-cut"]
    );
}

/// A database made by migrations 0001–0013 (one unpartitioned log) and holding entries of many
/// days: migration 0014 moves every entry into the partitioned log, each into its day's
/// partition, and reads find them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_from_before_partitions_migrates_with_its_entries() {
    if !postgres_available().await {
        return;
    }
    let (_db, url) = create_database(Backend::Postgres).await;
    let mut before = sqlx::migrate!("migrations/postgres");
    before.migrations = before
        .migrations
        .iter()
        .filter(|migration| migration.version < 14)
        .cloned()
        .collect();
    let mut db = PgConnection::connect(&url).await.unwrap();
    before.run(&mut db).await.unwrap();
    let now = now_ms();
    // One entry an hour over the last five days, and a failure among every three.
    sqlx::query(
        "INSERT INTO webhook_logs (id, webhook_type, webhook_id, status, request_headers,
            retry_count, processing_time_ms, processing_time_us, created_at)
         SELECT 'e' || i, 'outgoing', 'hook-' || (i % 2),
             CASE WHEN i % 3 = 0 THEN 'failed' ELSE 'delivered' END, '{}', 0, i, i * 1000,
             $1 - i * 3600000
         FROM generate_series(0, 119) AS i",
    )
    .bind(now)
    .execute(&mut db)
    .await
    .unwrap();

    let store = Store::connect(&url).await.unwrap();
    let misplaced: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM webhook_logs
         WHERE tableoid::regclass::text <> 'webhook_logs_p'
             || to_char(to_timestamp(created_at / 1000) AT TIME ZONE 'UTC', 'YYYYMMDD')",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(misplaced, 0);
    let everything = hookd::store::LogQuery {
        limit: 1_000,
        ..Default::default()
    };
    let entries = store.list_logs("hook-0", &everything).await.unwrap();
    assert_eq!(entries.len(), 60);
    assert_eq!(entries[0].id, "e0");
    assert_eq!(entries[59].id, "e118");
    assert_eq!(entries[1].processing_time_us, 2_000);
    let failures = hookd::store::LogQuery {
        status: Some("failed".into()),
        limit: 1_000,
        ..Default::default()
    };
    assert_eq!(
        store.list_logs("hook-1", &failures).await.unwrap().len(),
        20
    );
    store.close().await;
}
