//! Per-endpoint order: workers take due deliveries in publish order, and a webhook with
//! `"ordering": "fifo"` gets its events strictly one at a time in that order.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_backends;
use crate::delivery::webhook;
use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with};
use crate::receiver::{Received, Receiver, Reply};

both_backends!(
    fifo_webhook_gets_publishes_strictly_one_at_a_time_in_order,
    failing_fifo_head_holds_the_rest_until_it_succeeds_or_fails,
    ordinary_webhook_takes_due_deliveries_in_publish_order,
    changing_the_ordering_applies_to_pending_deliveries,
    the_delivery_queue_keeps_its_statistics_fresh,
);

const WAIT: Duration = Duration::from_secs(20);

/// Publishes events `range` as one batch.
async fn publish_batch(app: &TestApp, key: &str, range: std::ops::Range<i64>) {
    let events: Vec<Value> = range
        .map(|n| json!({"event_type": "task.completed", "data": {"n": n}}))
        .collect();
    app.post("/api/events/batch", key, &json!({ "events": events }))
        .await
        .expect(202);
}

/// The `n` of each request, in arrival order.
fn numbers(received: &[Received]) -> Vec<i64> {
    received
        .iter()
        .map(|r| r.json()["data"]["n"].as_i64().unwrap())
        .collect()
}

async fn fifo_webhook_gets_publishes_strictly_one_at_a_time_in_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    receiver.always(Reply::Stall(Duration::from_millis(50)));
    let key = app.tenant_key().await;
    let id = webhook(&app, &key, json!({"url": receiver.url, "ordering": "fifo"})).await;
    let hook = app
        .get(&format!("/api/webhooks/outgoing/{id}"), &key)
        .await
        .expect(200);
    assert_eq!(hook["ordering"], "fifo");
    let openapi = app
        .request(reqwest::Method::GET, "/openapi.json", None, None)
        .await
        .expect(200);
    let schemas = &openapi["components"]["schemas"];
    assert!(schemas["OutgoingWebhookIn"]["properties"]["ordering"].is_object());
    assert!(schemas["OutgoingWebhookOut"]["properties"]["ordering"].is_object());
    assert_eq!(
        schemas["Ordering"]["enum"],
        json!(["none", "fifo"]),
        "{}",
        schemas["Ordering"]
    );

    for n in 0..20 {
        app.post(
            "/api/events",
            &key,
            &json!({"event_type": "task.completed", "data": {"n": n}}),
        )
        .await
        .expect(202);
    }
    let got = receiver.wait_for(20, WAIT).await;
    assert_eq!(numbers(&got), (0..20).collect::<Vec<_>>());
    eprintln!(
        "fifo ({backend:?}): 20 deliveries to a 50 ms target, first to last arrival {:?}",
        got[19].at.duration_since(got[0].at)
    );
    // One at a time: each request arrives only after the previous one was answered.
    for pair in got.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_millis(45),
            "two deliveries overlapped: {gap:?} apart"
        );
    }
}

async fn failing_fifo_head_holds_the_rest_until_it_succeeds_or_fails(backend: Backend) {
    // retry_delay 1 is 20 ms here: 20, 40, 80 ms.
    let app = spawn_app_with(backend, |s| s.retry_unit_ms = Some(20)).await;
    let key = app.tenant_key().await;

    // The head fails three times, then succeeds: nothing behind it arrives before it.
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(500), Reply::Status(503), Reply::Status(500)]);
    webhook(
        &app,
        &key,
        json!({"url": receiver.url, "ordering": "fifo", "retry_count": 3, "retry_delay": 1}),
    )
    .await;
    publish_batch(&app, &key, 0..6).await;
    let got = receiver.wait_for(9, WAIT).await;
    assert_eq!(numbers(&got), [0, 0, 0, 0, 1, 2, 3, 4, 5]);

    // A head that spends its retries is marked failed, and the next ones go, in order.
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(500), Reply::Status(500), Reply::Status(500)]);
    let id = webhook(
        &app,
        &key,
        json!({"url": receiver.url, "ordering": "fifo", "retry_count": 2, "retry_delay": 1,
               "event_types": ["task.failed"]}),
    )
    .await;
    let events: Vec<Value> = (10..14)
        .map(|n| json!({"event_type": "task.failed", "data": {"n": n}}))
        .collect();
    app.post("/api/events/batch", &key, &json!({ "events": events }))
        .await
        .expect(202);
    let got = receiver.wait_for(6, WAIT).await;
    assert_eq!(numbers(&got), [10, 10, 10, 11, 12, 13]);
    let failed = crate::delivery::deliveries_with(&app, &key, &id, "failed").await;
    assert_eq!(failed.as_array().unwrap().len(), 1, "{failed}");
    assert_eq!(failed[0]["attempts"], 3);
    assert_eq!(failed[0]["last_error"], "target answered HTTP 500");
    let logs = app
        .get(
            &format!("/api/webhooks/{id}/logs?webhook_type=outgoing&status=failed"),
            &key,
        )
        .await
        .expect(200);
    assert_eq!(
        logs.as_array().unwrap().len(),
        3,
        "each failed attempt is logged"
    );
}

async fn ordinary_webhook_takes_due_deliveries_in_publish_order(backend: Backend) {
    // One delivery slot, so requests arrive in the order deliveries are claimed.
    let app = spawn_app_with(backend, |s| {
        s.retry_unit_ms = Some(20);
        s.delivery_concurrency = Some(1);
    })
    .await;
    let receiver = Receiver::start().await;
    // Event 0 fails (its retry is due 20 ms later); event 1 holds the slot for 300 ms, during
    // which that retry falls due, after events 2 and 3 were due. Publish order puts it first;
    // due time (as claims used to order) would put it last.
    receiver.script([Reply::Status(500), Reply::Stall(Duration::from_millis(300))]);
    let key = app.tenant_key().await;
    webhook(
        &app,
        &key,
        json!({"url": receiver.url, "retry_count": 3, "retry_delay": 1}),
    )
    .await;
    publish_batch(&app, &key, 0..4).await;
    let got = numbers(&receiver.wait_for(5, WAIT).await);
    let retried = got.iter().rposition(|n| *n == 0).unwrap();
    let two = got.iter().position(|n| *n == 2).unwrap();
    assert!(
        retried < two,
        "the retry of event 0 went after event 2: {got:?}"
    );
    assert_eq!(got[got.len() - 2..], [2, 3], "{got:?}");

    // With one slot, a batch arrives exactly in its order.
    publish_batch(&app, &key, 10..20).await;
    let got = numbers(&receiver.wait_for(15, WAIT).await);
    assert_eq!(got[5..], (10..20).collect::<Vec<_>>());
}

async fn changing_the_ordering_applies_to_pending_deliveries(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.retry_unit_ms = Some(1_000);
        s.circuit_threshold = Some(100);
    })
    .await;
    let receiver = Receiver::start().await;
    // The FIFO head fails and waits a second for its retry, holding the others.
    receiver.script([Reply::Status(500)]);
    let key = app.tenant_key().await;
    let id = webhook(
        &app,
        &key,
        json!({"url": receiver.url, "ordering": "fifo", "retry_count": 1, "retry_delay": 5}),
    )
    .await;
    publish_batch(&app, &key, 0..4).await;
    receiver.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 1, "the failed head holds the rest");

    // Without order, the ones behind it go at once; the head keeps its retry time.
    let changed = app
        .put(
            &format!("/api/webhooks/outgoing/{id}"),
            &key,
            &json!({"ordering": "none"}),
        )
        .await
        .expect(200);
    assert_eq!(changed["ordering"], "none");
    // Publishing wakes the workers (no more than the next poll would).
    publish_batch(&app, &key, 4..5).await;
    let got = numbers(&receiver.wait_for(5, Duration::from_secs(3)).await);
    let mut rest = got[1..].to_vec();
    rest.sort_unstable();
    assert_eq!(rest, [1, 2, 3, 4], "{got:?}");

    app.put(
        &format!("/api/webhooks/outgoing/{id}"),
        &key,
        &json!({"ordering": "sideways"}),
    )
    .await
    .expect(422);
}

/// Claims are planned from PostgreSQL's statistics of the queue; a node analyzes the table
/// itself once much of it changed, rather than wait for autovacuum (a minute or more).
async fn the_delivery_queue_keeps_its_statistics_fresh(backend: Backend) {
    let app = spawn_app(backend).await;
    if app.store.backend() != "postgres" {
        assert!(!app.store.keep_statistics().await.unwrap(), "nothing to do");
        return;
    }
    let receiver = Receiver::start().await;
    let key = app.tenant_key().await;
    webhook(&app, &key, json!({"url": receiver.url})).await;
    for first in (0..1_200).step_by(100) {
        publish_batch(&app, &key, first..first + 100).await;
    }
    receiver.wait_for(1_200, WAIT).await;
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&app.database_url)
        .await
        .unwrap();
    let analyzed = || {
        sqlx::query_scalar::<_, bool>(
            "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables
             WHERE relid = 'deliveries'::regclass",
        )
    };
    let deadline = std::time::Instant::now() + WAIT;
    while !analyzed().fetch_one(&mut db).await.unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "the node never analyzed the queue"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
