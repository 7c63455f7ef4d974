//! Events about webhooks themselves: `webhook.circuit_opened`, `webhook.circuit_closed`,
//! `webhook.delivery_failed` and `webhook.disabled`, published to the tenant's other webhooks
//! that subscribe to them, never to the one they are about, and never about the failure of an
//! announcement (so failing webhooks cannot announce each other's failures forever).

use std::time::Duration;

use hookd::domain::signature::hex_hmac_sha256;
use serde_json::{Value, json};

use crate::both_backends;
use crate::delivery::webhook;
use crate::helpers::{Backend, TestApp, spawn_app_with};
use crate::receiver::{Received, Receiver, Reply};

both_backends!(
    circuit_and_failure_events_reach_the_other_subscribed_webhooks,
    disabled_is_announced_for_a_410_and_for_the_owner_switching_it_off,
    failures_of_announcements_are_not_announced_so_failing_webhooks_cannot_loop,
);

const WAIT: Duration = Duration::from_secs(10);

async fn publish(app: &TestApp, key: &str, n: i64) {
    app.post(
        "/api/events",
        key,
        &json!({"event_type": "task.failed", "data": {"n": n}}),
    )
    .await
    .expect(202);
}

fn types(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .map(|r| r.header("x-webhook-event").to_string())
        .collect()
}

fn of_type<'a>(received: &'a [Received], event_type: &str) -> Vec<&'a Received> {
    received
        .iter()
        .filter(|r| r.header("x-webhook-event") == event_type)
        .collect()
}

async fn circuit_and_failure_events_reach_the_other_subscribed_webhooks(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.circuit_cooldown_ms = Some(1_500)).await;
    let key = app.key_for("alice", "acme", &[]).await;
    let watcher = Receiver::start().await;
    let failing = Receiver::start().await;
    let stranger = Receiver::start().await;
    failing.always(Reply::Status(500));
    let watcher_id = webhook(
        &app,
        &key,
        json!({"url": watcher.url, "event_types": ["webhook.*"], "secret": "watch"}),
    )
    .await;
    // Subscribed to everything: it would get announcements about itself if they were sent.
    let failing_id = webhook(
        &app,
        &key,
        json!({"url": failing.url, "name": "flaky crm", "retry_count": 0}),
    )
    .await;
    let other_tenant = app.key_for("mallory", "evil", &[]).await;
    webhook(&app, &other_tenant, json!({"url": stranger.url})).await;

    for n in 0..5 {
        publish(&app, &key, n).await;
        failing.wait_for(n as usize + 1, WAIT).await;
    }
    // Five deliveries failed for good (no retries), and the fifth opened the circuit.
    let got = watcher.wait_for(6, WAIT).await;
    let failed = of_type(&got, "webhook.delivery_failed");
    assert_eq!(failed.len(), 5, "{:?}", types(&got));
    let opened = of_type(&got, "webhook.circuit_opened");
    assert_eq!(opened.len(), 1, "{:?}", types(&got));
    let opened = opened[0];
    let body = opened.json();
    assert_eq!(body["event_type"], "webhook.circuit_opened");
    assert_eq!(
        body["webhook_id"],
        watcher_id.as_str(),
        "the receiving webhook"
    );
    assert_eq!(body["data"]["webhook_id"], failing_id.as_str());
    assert_eq!(body["data"]["webhook_name"], "flaky crm");
    assert_eq!(body["data"]["reason"], "target answered HTTP 500");
    assert_eq!(body["data"]["consecutive_failures"], 5);
    assert_eq!(body["data"]["failure_threshold"], 5);
    assert!(body["data"]["open_until"].as_str().is_some());
    // Signed like any delivery.
    assert_eq!(
        opened.header("x-webhook-signature"),
        hex_hmac_sha256("watch", &opened.body)
    );
    let first = failed[0].json();
    assert_eq!(first["data"]["webhook_id"], failing_id.as_str());
    assert_eq!(first["data"]["event_type"], "task.failed");
    assert_eq!(first["data"]["attempts"], 1);
    assert_eq!(first["data"]["last_status"], 500);
    assert_eq!(first["data"]["reason"], "target answered HTTP 500");
    assert!(first["data"]["delivery_id"].as_str().is_some());

    // The cool-down ends, the waiting delivery's trial succeeds: the circuit closes.
    failing.always(Reply::Status(200));
    publish(&app, &key, 5).await;
    let got = watcher.wait_for(7, WAIT).await;
    let closed = of_type(&got, "webhook.circuit_closed");
    assert_eq!(closed.len(), 1, "{:?}", types(&got));
    let closed = closed[0].json();
    assert_eq!(closed["data"]["webhook_id"], failing_id.as_str());
    assert_eq!(closed["data"]["failures_before"], 5);
    assert_eq!(closed["data"]["consecutive_failures"], 0);

    // Never to the webhook they are about, never to another tenant; logged like any event.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        types(&failing.received())
            .iter()
            .all(|t| t == "task.failed"),
        "{:?}",
        types(&failing.received())
    );
    assert_eq!(stranger.count(), 0);
    assert_eq!(watcher.count(), 7);
    let logs = app
        .get(
            &format!("/api/webhooks/{watcher_id}/logs?webhook_type=outgoing"),
            &key,
        )
        .await
        .expect(200);
    assert_eq!(logs.as_array().unwrap().len(), 7);
    assert!(
        logs.as_array()
            .unwrap()
            .iter()
            .all(|l| l["status"] == "delivered")
    );
}

async fn disabled_is_announced_for_a_410_and_for_the_owner_switching_it_off(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let key = app.tenant_key().await;
    let watcher = Receiver::start().await;
    let gone = Receiver::start().await;
    gone.always(Reply::Status(410));
    webhook(
        &app,
        &key,
        json!({"url": watcher.url, "event_types": ["webhook.*"]}),
    )
    .await;
    let gone_id = webhook(
        &app,
        &key,
        json!({"url": gone.url, "event_types": ["task.*"], "name": "old endpoint"}),
    )
    .await;
    publish(&app, &key, 1).await;
    let got = watcher.wait_for(1, WAIT).await;
    let body = got[0].json();
    assert_eq!(body["event_type"], "webhook.disabled");
    assert_eq!(body["data"]["webhook_id"], gone_id.as_str());
    assert_eq!(body["data"]["webhook_name"], "old endpoint");
    assert_eq!(body["data"]["reason"], "target answered 410 Gone");

    let manual = webhook(
        &app,
        &key,
        json!({"url": format!("{}/manual", gone.url), "event_types": ["task.*"]}),
    )
    .await;
    let path = format!("/api/webhooks/outgoing/{manual}");
    app.put(&path, &key, &json!({"is_active": false}))
        .await
        .expect(200);
    let got = watcher.wait_for(2, WAIT).await;
    let body = got[1].json();
    assert_eq!(body["event_type"], "webhook.disabled");
    assert_eq!(body["data"]["webhook_id"], manual.as_str());
    assert_eq!(body["data"]["reason"], "switched off by its owner");
    // Only a change is announced: switching off what is off, or other edits, say nothing.
    app.put(&path, &key, &json!({"is_active": false, "name": "renamed"}))
        .await
        .expect(200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A 410 is not also a delivery that spent its retries.
    assert_eq!(types(&watcher.received()), ["webhook.disabled"; 2]);
}

async fn failures_of_announcements_are_not_announced_so_failing_webhooks_cannot_loop(
    backend: Backend,
) {
    // A threshold the test never reaches: only delivery failures are announced here.
    let app = spawn_app_with(backend, |s| s.circuit_threshold = Some(100)).await;
    let key = app.tenant_key().await;
    let a = Receiver::start().await;
    let b = Receiver::start().await;
    a.always(Reply::Status(500));
    b.always(Reply::Status(500));
    let a_id = webhook(&app, &key, json!({"url": a.url, "retry_count": 0})).await;
    let b_id = webhook(&app, &key, json!({"url": b.url, "retry_count": 0})).await;
    publish(&app, &key, 1).await;
    // Each fails the event, and is told of the other's failure, and fails that too...
    let got_a = a.wait_for(2, WAIT).await;
    let got_b = b.wait_for(2, WAIT).await;
    // ...which is not announced: nothing more comes.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        types(&a.received()),
        ["task.failed", "webhook.delivery_failed"]
    );
    assert_eq!(
        types(&b.received()),
        ["task.failed", "webhook.delivery_failed"]
    );
    assert_eq!(got_a[1].json()["data"]["webhook_id"], b_id.as_str());
    assert_eq!(got_b[1].json()["data"]["webhook_id"], a_id.as_str());
    let failed = app
        .get(
            &format!("/api/webhooks/outgoing/{a_id}/deliveries?status=failed"),
            &key,
        )
        .await
        .expect(200);
    assert_eq!(failed.as_array().map(Vec::len), Some(2));

    // Only hookd publishes them.
    let detail = app
        .post(
            "/api/events",
            &key,
            &json!({"event_type": "webhook.disabled", "data": {}}),
        )
        .await
        .expect_error(422, "validation_error");
    assert!(detail.starts_with("event_type"), "{detail}");
    let catalogue = app
        .request(
            reqwest::Method::GET,
            "/api/webhooks/event-types",
            None,
            None,
        )
        .await
        .expect(200);
    let listed: Vec<&Value> = catalogue["event_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["type"])
        .collect();
    assert_eq!(listed.len(), 34);
    for about in [
        "webhook.disabled",
        "webhook.circuit_opened",
        "webhook.circuit_closed",
        "webhook.delivery_failed",
    ] {
        assert!(listed.contains(&&json!(about)), "{about}");
    }
}
