//! The outgoing path end to end: publish over the API, deliveries to a real receiver.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with};
use crate::receiver::{Receiver, Reply};

both_backends!(
    published_event_is_delivered_signed_with_the_spec_headers,
    failed_delivery_is_retried_with_exponential_backoff,
    exhausted_delivery_fails_and_can_be_retried_or_replayed,
    a_replay_takes_every_failed_delivery_however_many_chunks,
    deliveries_page_newest_first_by_cursor_or_offset,
    each_kind_of_failure_is_logged_with_its_reason,
    gone_target_deactivates_its_webhook,
    circuit_opens_after_five_failures_waits_then_closes,
    rate_limit_defers_without_loss,
    subscriptions_filters_and_tenants_decide_who_receives,
    pending_deliveries_survive_a_restart,
    delivery_time_check_refuses_private_addresses,
    test_endpoint_sends_to_its_own_webhook_only,
    idempotency_key_and_batches,
    logs_statistics_and_metrics_report_attempts,
    chat_targets_get_their_own_body_shape,
    answers_are_read_only_as_far_as_the_log_needs_and_only_within_the_timeout,
);

const WAIT: Duration = Duration::from_secs(10);

/// Creates an outgoing webhook; its id.
pub async fn webhook(app: &TestApp, key: &str, body: Value) -> String {
    let created = app
        .post("/api/webhooks/outgoing", key, &body)
        .await
        .expect(201);
    created["id"].as_str().unwrap().to_string()
}

async fn publish(app: &TestApp, key: &str, event_type: &str, data: Value) -> Value {
    app.post(
        "/api/events",
        key,
        &json!({"event_type": event_type, "data": data}),
    )
    .await
    .expect(202)
}

fn hmac_hex(secret: &[u8], message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

async fn published_event_is_delivered_signed_with_the_spec_headers(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    let key = app.tenant_key().await;
    let id = webhook(
        &app,
        &key,
        json!({"url": format!("{}/webhook/agixt", receiver.url), "event_types": ["chat.completed"],
               "secret": "your-webhook-secret", "headers": {"X-Custom-Header": "value", "User-Agent": "AGiXT-Webhook/1.0"},
               "agent_id": 789}),
    )
    .await;
    let published = publish(
        &app,
        &key,
        "chat.completed",
        json!({"message": "hi", "conversation_id": "conv-123"}),
    )
    .await;
    assert_eq!(published["deliveries"], 1);
    let got = receiver.wait_for(1, WAIT).await.remove(0);

    // The body, exactly the signed bytes, in the spec's payload format.
    let body = got.json();
    assert_eq!(body["event_id"], published["event_id"]);
    assert_eq!(body["event_type"], "chat.completed");
    assert_eq!(body["webhook_id"], id);
    assert_eq!(body["data"]["conversation_id"], "conv-123");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(body.get("user_id").is_some() && body.get("company_id").is_some());

    // X-Webhook-Signature: what the spec's Flask receiver computes.
    assert_eq!(
        got.header("x-webhook-signature"),
        hmac_hex(b"your-webhook-secret", &got.body)
    );
    // Standard Webhooks: v1,base64(HMAC(secret, "{id}.{timestamp}.{body}")).
    let signed = [
        got.header("webhook-id").as_bytes(),
        b".",
        got.header("webhook-timestamp").as_bytes(),
        b".",
        &got.body,
    ]
    .concat();
    let mut mac = Hmac::<Sha256>::new_from_slice(b"your-webhook-secret").unwrap();
    mac.update(&signed);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(got.header("webhook-signature"), format!("v1,{expected}"));

    assert_eq!(got.header("x-webhook-event"), "chat.completed");
    assert_eq!(got.header("x-webhook-id"), id);
    assert_eq!(got.header("x-webhook-delivery"), got.header("webhook-id"));
    assert!(got.header("x-webhook-timestamp").ends_with('Z'));
    assert_eq!(got.header("content-type"), "application/json");
    assert_eq!(got.header("x-custom-header"), "value");
    assert_eq!(got.header("user-agent"), "AGiXT-Webhook/1.0");
    assert_eq!(got.path, "/webhook/agixt");
}

async fn failed_delivery_is_retried_with_exponential_backoff(backend: Backend) {
    // One unit of retry_delay is 200 ms here: retry_delay 1 gives 200, 400, 800 ms.
    let app = spawn_app_with(backend, |s| s.retry_unit_ms = Some(200)).await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(500), Reply::Status(502), Reply::Status(503)]);
    let key = app.tenant_key().await;
    let id = webhook(
        &app,
        &key,
        json!({"url": receiver.url, "retry_count": 3, "retry_delay": 1}),
    )
    .await;
    publish(&app, &key, "task.failed", json!({})).await;
    let got = receiver.wait_for(4, WAIT).await;
    let ids: Vec<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert!(
        ids.iter().all(|d| *d == ids[0]),
        "the delivery id is stable across retries"
    );
    // Never early; late by at most a second even on a loaded machine.
    for (n, expected_ms) in [(1, 200), (2, 400), (3, 800)] {
        let gap = got[n].at.duration_since(got[n - 1].at).as_millis();
        assert!(
            gap >= expected_ms - 5 && gap < expected_ms + 1_000,
            "gap before attempt {} was {gap} ms, expected about {expected_ms}",
            n + 1
        );
    }
    let delivered = wait_for_status(&app, &key, &id, "delivered").await;
    assert_eq!(delivered[0]["attempts"], 4);
    let logs = app
        .get(
            &format!("/api/webhooks/{id}/logs?webhook_type=outgoing"),
            &key,
        )
        .await
        .expect(200);
    let retry_counts: Vec<i64> = logs
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["retry_count"].as_i64().unwrap())
        .collect();
    assert_eq!(retry_counts, [3, 2, 1, 0], "newest first");
    assert_eq!(logs[3]["response_status"], 500);
    assert_eq!(logs[0]["status"], "delivered");
}

/// The webhook's deliveries with `status`, newest first.
pub(crate) async fn deliveries_with(app: &TestApp, key: &str, id: &str, status: &str) -> Value {
    let path = format!("/api/webhooks/outgoing/{id}/deliveries?status={status}");
    app.get(&path, key).await.expect(200)
}

/// Polls the webhook's deliveries until the newest has `status`.
pub(crate) async fn wait_for_status(app: &TestApp, key: &str, id: &str, status: &str) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let list = app
            .get(&format!("/api/webhooks/outgoing/{id}/deliveries"), key)
            .await
            .expect(200);
        if list[0]["status"] == status {
            return list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "delivery never became {status}: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn exhausted_delivery_fails_and_can_be_retried_or_replayed(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.retry_unit_ms = Some(10)).await;
    let receiver = Receiver::start().await;
    receiver.always(Reply::Status(500));
    let key = app.tenant_key().await;
    let id = webhook(
        &app,
        &key,
        json!({"url": receiver.url, "retry_count": 1, "retry_delay": 1}),
    )
    .await;
    let since = chrono::Utc::now().to_rfc3339();
    publish(&app, &key, "task.failed", json!({"n": 1})).await;
    let failed = wait_for_status(&app, &key, &id, "failed").await;
    assert_eq!(failed[0]["attempts"], 2);
    assert_eq!(failed[0]["last_error"], "target answered HTTP 500");
    assert_eq!(receiver.received().len(), 2);

    receiver.always(Reply::Status(200));
    let delivery = failed[0]["id"].as_str().unwrap();
    app.post(
        &format!("/api/webhooks/outgoing/{id}/deliveries/{delivery}/retry"),
        &key,
        &json!({}),
    )
    .await
    .expect(202);
    wait_for_status(&app, &key, &id, "delivered").await;
    assert_eq!(
        receiver.received()[2].header("webhook-id"),
        delivery,
        "a replay keeps the delivery id"
    );
    app.post(
        &format!("/api/webhooks/outgoing/{id}/deliveries/nope/retry"),
        &key,
        &json!({}),
    )
    .await
    .expect_error(404, "not_found");

    // Bulk replay of what failed since a time.
    receiver.always(Reply::Status(500));
    publish(&app, &key, "task.failed", json!({"n": 2})).await;
    publish(&app, &key, "task.failed", json!({"n": 3})).await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let failed = deliveries_with(&app, &key, &id, "failed").await;
        if failed.as_array().unwrap().len() == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    receiver.always(Reply::Status(200));
    let replayed = app
        .post(
            &format!("/api/webhooks/outgoing/{id}/replay"),
            &key,
            &json!({"since": since}),
        )
        .await
        .expect(202);
    assert_eq!(replayed["replayed"], 2);
    receiver.wait_for(2 + 1 + 4 + 2, WAIT).await;
    app.post(
        &format!("/api/webhooks/outgoing/{id}/replay"),
        &key,
        &json!({"since": "yesterday"}),
    )
    .await
    .expect_error(422, "validation_error");
}

/// Replays go a chunk at a time (of 1,000) so other writes interleave: all of them are still
/// replayed, once.
async fn a_replay_takes_every_failed_delivery_however_many_chunks(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.no_workers = true).await;
    let key = app.tenant_key().await;
    let id = webhook(&app, &key, json!({"url": "http://127.0.0.1:9/x"})).await;
    let events: Vec<Value> = (0..500)
        .map(|n| json!({"event_type": "task.failed", "data": {"n": n}}))
        .collect();
    for _ in 0..5 {
        app.post("/api/events/batch", &key, &json!({"events": events}))
            .await
            .expect(202);
    }
    app.execute_sql("UPDATE deliveries SET status = 'failed', updated_at = created_at")
        .await;
    let path = format!("/api/webhooks/outgoing/{id}/replay");
    let since = json!({"since": "2000-01-01T00:00:00Z"});
    let replay = || app.post(&path, &key, &since);
    assert_eq!(replay().await.expect(202)["replayed"], 2_500);
    assert_eq!(replay().await.expect(202)["replayed"], 0);
    assert_eq!(deliveries_with(&app, &key, &id, "failed").await, json!([]));
}

/// Listings of mixed statuses are merged newest first, the same by `before` as by `offset`.
async fn deliveries_page_newest_first_by_cursor_or_offset(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.no_workers = true).await;
    let key = app.tenant_key().await;
    let id = webhook(&app, &key, json!({"url": "http://127.0.0.1:9/x"})).await;
    for batch in 0..5 {
        let events: Vec<Value> = (0..50)
            .map(|n| json!({"event_type": "task.failed", "data": {"n": batch * 50 + n}}))
            .collect();
        app.post("/api/events/batch", &key, &json!({"events": events}))
            .await
            .expect(202);
    }
    app.execute_sql(
        "UPDATE deliveries SET status = CASE
            WHEN substr(id, length(id)) IN ('0', '1', '2', '3', '4') THEN 'delivered'
            WHEN substr(id, length(id)) IN ('5', '6', '7') THEN 'failed'
            WHEN substr(id, length(id)) = '8' THEN 'cancelled'
            ELSE status END",
    )
    .await;
    let path = format!("/api/webhooks/outgoing/{id}/deliveries");
    let list = |query: String| {
        let app = &app;
        let (path, key) = (&path, &key);
        async move {
            let page = app.get(&format!("{path}?{query}"), key).await.expect(200);
            page.as_array().unwrap().clone()
        }
    };
    let (mut by_cursor, mut by_offset) = (Vec::new(), Vec::new());
    loop {
        let before = by_cursor
            .last()
            .map(|d: &Value| format!("&before={}", d["id"].as_str().unwrap()))
            .unwrap_or_default();
        let page = list(format!("limit=40{before}")).await;
        if page.is_empty() {
            break;
        }
        by_cursor.extend(page);
    }
    loop {
        let page = list(format!("limit=40&offset={}", by_offset.len())).await;
        if page.is_empty() {
            break;
        }
        by_offset.extend(page);
    }
    assert_eq!(by_cursor.len(), 250);
    assert_eq!(by_cursor, by_offset);
    let keys: Vec<(String, String)> = by_cursor
        .iter()
        .map(|d| (d["created_at"].to_string(), d["id"].to_string()))
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] > w[1]),
        "newest first, each once"
    );
    let statuses: std::collections::BTreeSet<&str> = by_cursor
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.len(), 4, "{statuses:?}");

    // One status, by cursor too. Which are failed depends on the ids' last digit (~47 of 250).
    let expected: Vec<&Value> = by_cursor
        .iter()
        .filter(|d| d["status"] == "failed")
        .collect();
    assert!(expected.len() > 10, "{}", expected.len());
    let failed = list("limit=10&status=failed".into()).await;
    assert_eq!(failed.iter().collect::<Vec<_>>(), expected[..10]);
    let last = failed.last().unwrap()["id"].as_str().unwrap();
    let older = list(format!("limit=1000&status=failed&before={last}")).await;
    assert_eq!(older.iter().collect::<Vec<_>>(), expected[10..]);

    app.get(&format!("{path}?offset=10001"), &key)
        .await
        .expect_error(422, "validation_error");
    let detail = app
        .get(&format!("{path}?before=nope"), &key)
        .await
        .expect_error(422, "validation_error");
    assert!(detail.starts_with("before"), "{detail}");
}

async fn each_kind_of_failure_is_logged_with_its_reason(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    let key = app.tenant_key().await;
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let cases = [
        (Reply::Status(404), "target answered HTTP 404"),
        (Reply::Status(500), "target answered HTTP 500"),
        (
            Reply::WithHeaders(
                302,
                vec![("location", "http://127.0.0.1:1/elsewhere".into())],
            ),
            "target answered HTTP 302",
        ),
        (Reply::Stall(Duration::from_millis(2_500)), "timed out"),
    ];
    for (reply, reason) in cases {
        receiver.script([reply]);
        let id = webhook(&app, &key, json!({"url": receiver.url, "timeout": 1})).await;
        let answer = app
            .post(
                &format!("/api/webhooks/outgoing/{id}/test"),
                &key,
                &json!({}),
            )
            .await
            .expect(200);
        assert_eq!(answer["success"], false);
        assert!(
            answer["error"].as_str().unwrap().starts_with(reason),
            "{answer}"
        );
        let logs = app
            .get(&format!("/api/webhooks/{id}/logs"), &key)
            .await
            .expect(200);
        assert!(
            logs[0]["error_message"]
                .as_str()
                .unwrap()
                .starts_with(reason)
        );
    }
    let id = webhook(
        &app,
        &key,
        json!({"url": format!("http://127.0.0.1:{closed_port}/x")}),
    )
    .await;
    let answer = app
        .post(&format!("/api/webhooks/test/{id}"), &key, &json!({}))
        .await
        .expect(200);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("could not connect"),
        "{answer}"
    );
    assert_eq!(answer["status_code"], Value::Null);
}

async fn gone_target_deactivates_its_webhook(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    receiver.always(Reply::Status(410));
    let key = app.tenant_key().await;
    let id = webhook(&app, &key, json!({"url": receiver.url})).await;
    publish(&app, &key, "task.completed", json!({})).await;
    wait_for_status(&app, &key, &id, "failed").await;
    let hook = app
        .get(&format!("/api/webhooks/outgoing/{id}"), &key)
        .await
        .expect(200);
    assert_eq!(hook["is_active"], false);
    assert_eq!(hook["deactivated_reason"], "target answered 410 Gone");
    assert_eq!(receiver.received().len(), 1, "410 is not retried");
    assert_eq!(
        publish(&app, &key, "task.completed", json!({})).await["deliveries"],
        0
    );
}

async fn circuit_opens_after_five_failures_waits_then_closes(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.circuit_cooldown_ms = Some(1_500)).await;
    let receiver = Receiver::start().await;
    receiver.always(Reply::Status(500));
    let key = app.tenant_key().await;
    let id = webhook(&app, &key, json!({"url": receiver.url, "retry_count": 0})).await;
    let path = format!("/api/webhooks/outgoing/{id}");
    for n in 0..4 {
        publish(&app, &key, "task.failed", json!({"n": n})).await;
        receiver.wait_for(n + 1, WAIT).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        app.get(&path, &key).await.expect(200)["circuit_state"],
        "closed"
    );
    publish(&app, &key, "task.failed", json!({"n": 4})).await;
    receiver.wait_for(5, WAIT).await;
    let deadline = std::time::Instant::now() + WAIT;
    while app.get(&path, &key).await.expect(200)["circuit_state"] != "open" {
        assert!(std::time::Instant::now() < deadline, "circuit never opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // While open, a new event waits: not sent, not failed, retries not spent.
    receiver.always(Reply::Status(200));
    publish(&app, &key, "task.failed", json!({"n": 5})).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        receiver.received().len(),
        5,
        "nothing is sent while the circuit is open"
    );
    let waiting = app
        .get(&format!("{path}/deliveries?status=pending"), &key)
        .await
        .expect(200);
    assert_eq!(waiting[0]["attempts"], 0);
    let stats = app
        .get(
            &format!("/api/webhooks/{id}/statistics?webhook_type=outgoing"),
            &key,
        )
        .await
        .expect(200);
    assert_eq!(stats["circuit_state"], "open");
    assert_eq!(stats["pending"], 1);
    // After the cool-down one trial goes through, succeeds, and closes the circuit.
    receiver.wait_for(6, WAIT).await;
    wait_for_status(&app, &key, &id, "delivered").await;
    assert_eq!(
        app.get(&path, &key).await.expect(200)["circuit_state"],
        "closed"
    );
}

async fn rate_limit_defers_without_loss(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    let key = app.tenant_key().await;
    let id = webhook(&app, &key, json!({"url": receiver.url, "rate_limit": 3})).await;
    for n in 0..5 {
        publish(&app, &key, "task.completed", json!({"n": n})).await;
    }
    receiver.wait_for(3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 3, "3 per minute");
    let pending = app
        .get(
            &format!("/api/webhooks/outgoing/{id}/deliveries?status=pending"),
            &key,
        )
        .await
        .expect(200);
    assert_eq!(
        pending.as_array().unwrap().len(),
        2,
        "the rest wait: {pending}"
    );
    for waiting in pending.as_array().unwrap() {
        assert_eq!(waiting["attempts"], 0, "waiting spends no attempt");
        let due =
            chrono::DateTime::parse_from_rfc3339(waiting["next_attempt_at"].as_str().unwrap())
                .unwrap();
        assert!(
            due > chrono::Utc::now() + chrono::Duration::seconds(5),
            "due when the limit allows: {due}"
        );
    }
}

async fn subscriptions_filters_and_tenants_decide_who_receives(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    let key = app.key_for("u1", "acme", &[]).await;
    let other_company = app.key_for("u2", "globex", &[]).await;
    let colleague = app.key_for("u3", "acme", &[]).await;
    let url = |path: &str| format!("{}/{path}", receiver.url);
    webhook(&app, &key, json!({"url": url("all")})).await;
    webhook(
        &app,
        &key,
        json!({"url": url("chat"), "event_types": ["chat.*"]}),
    )
    .await;
    webhook(&app, &key, json!({"url": url("monitor"), "event_types": ["command.failed", "chain.failed", "task.failed", "agent.updated"],
        "filters": {"severity": "high"}})).await;
    webhook(
        &app,
        &key,
        json!({"url": url("agent"), "event_types": ["command.executed", "command.failed"],
        "filters": {"agent_name": "production_agent"}}),
    )
    .await;
    webhook(&app, &other_company, json!({"url": url("globex")})).await;

    let sent = [
        ("chat.message.received", json!({"message": "hi"}), 2),
        ("task.failed", json!({"severity": "high"}), 2),
        ("task.failed", json!({"severity": "low"}), 1),
        (
            "command.failed",
            json!({"severity": "high", "agent_name": "production_agent"}),
            3,
        ),
        ("command.executed", json!({"agent_name": "staging"}), 1),
    ];
    let mut expected = 0;
    for (event_type, data, deliveries) in sent {
        assert_eq!(
            publish(&app, &key, event_type, data).await["deliveries"],
            deliveries,
            "{event_type}"
        );
        expected += deliveries;
    }
    // A colleague in the same company reaches the company's webhooks (as AGiXT does).
    assert_eq!(
        publish(&app, &colleague, "task.completed", json!({})).await["deliveries"],
        1
    );
    let got = receiver.wait_for(expected + 1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paths: Vec<String> = receiver.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths.len(), got.len(), "no extra deliveries");
    assert!(
        !paths.iter().any(|p| p == "/globex"),
        "another company's webhook received nothing"
    );
    assert_eq!(paths.iter().filter(|p| *p == "/monitor").count(), 2);
    assert_eq!(paths.iter().filter(|p| *p == "/agent").count(), 1);
    assert_eq!(paths.iter().filter(|p| *p == "/chat").count(), 1);

    app.post("/api/events", &key, &json!({"event_type": "nope.nope"}))
        .await
        .expect_error(422, "validation_error");
    let reader = app.key_for("u1", "acme", &["webhooks:read"]).await;
    app.post(
        "/api/events",
        &reader,
        &json!({"event_type": "task.failed"}),
    )
    .await
    .expect_error(403, "forbidden");
}

async fn pending_deliveries_survive_a_restart(backend: Backend) {
    // A node that only takes API calls accepts the event; nothing is sent.
    let mut app = spawn_app_with(backend, |s| s.no_workers = true).await;
    let receiver = Receiver::start().await;
    let key = app.tenant_key().await;
    webhook(&app, &key, json!({"url": receiver.url})).await;
    let published = publish(&app, &key, "task.completed", json!({"n": 1})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.received().is_empty());
    // A node with workers, started on the same store, delivers it.
    app.restart(|_| {}).await;
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got[0].json()["event_id"], published["event_id"]);
}

async fn delivery_time_check_refuses_private_addresses(backend: Backend) {
    let mut app = spawn_app_with(backend, |s| {
        s.no_workers = true;
        s.allowed_target_cidrs = Some("127.0.0.0/8, ::1".into());
    })
    .await;
    let receiver = Receiver::start().await;
    let key = app.tenant_key().await;
    let by_ip = webhook(&app, &key, json!({"url": receiver.url})).await;
    let port = receiver.url.rsplit(':').next().unwrap().to_string();
    let by_name = webhook(
        &app,
        &key,
        json!({"url": format!("http://localhost:{port}/x")}),
    )
    .await;
    // The operator withdraws the allowance: deliveries to loopback are refused at send time.
    app.restart(|s| s.allowed_target_cidrs = None).await;
    for id in [&by_ip, &by_name] {
        let answer = app
            .post(
                &format!("/api/webhooks/outgoing/{id}/test"),
                &key,
                &json!({}),
            )
            .await
            .expect(200);
        assert_eq!(answer["success"], false);
        assert!(
            answer["error"].as_str().unwrap().contains("not allowed"),
            "{answer}"
        );
    }
    assert!(receiver.received().is_empty());
}

async fn test_endpoint_sends_to_its_own_webhook_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    let key = app.tenant_key().await;
    let mine = webhook(&app, &key, json!({"url": format!("{}/mine", receiver.url)})).await;
    webhook(
        &app,
        &key,
        json!({"url": format!("{}/other", receiver.url)}),
    )
    .await;
    // The spec's raw-HTTP example: POST /api/webhooks/test/{id} with test_payload.
    let answer = app
        .post(
            &format!("/api/webhooks/test/{mine}"),
            &key,
            &json!({"test_payload": {"message": "Hello, webhook!"}}),
        )
        .await
        .expect(200);
    assert_eq!(answer["success"], true);
    assert_eq!(answer["status_code"], 200);
    assert_eq!(answer["response_body"], "answer");
    assert!(answer["processing_time_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(answer["error"], Value::Null);
    // The spec's other path, with no body at all.
    let response = app
        .client
        .post(format!("{}/api/webhooks/outgoing/{mine}/test", app.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|r| r.path == "/mine"));
    assert_eq!(got[0].json()["event_type"], "webhook.test");
    assert_eq!(got[0].json()["data"], json!({"message": "Hello, webhook!"}));
    let stranger = app.key_for("x", "y", &[]).await;
    app.post(&format!("/api/webhooks/test/{mine}"), &stranger, &json!({}))
        .await
        .expect_error(404, "not_found");
}

async fn idempotency_key_and_batches(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    let key = app.tenant_key().await;
    webhook(&app, &key, json!({"url": receiver.url})).await;
    let send = || {
        app.client
            .post(format!("{}/api/events", app.base))
            .bearer_auth(&key)
            .header("Idempotency-Key", "order-42")
            .json(&json!({"event_type": "task.created", "data": {"id": 42}}))
            .send()
    };
    let first: Value = send().await.unwrap().json().await.unwrap();
    let again: Value = send().await.unwrap().json().await.unwrap();
    assert_eq!(first, again);
    // The same request spelled differently is the same request.
    let respelled = app
        .client
        .post(format!("{}/api/events", app.base))
        .bearer_auth(&key)
        .header("Idempotency-Key", "order-42")
        .header("content-type", "application/json")
        .body(r#"{ "data": {"id": 42},  "event_type": "task.created" }"#);
    assert_eq!(crate::helpers::send(respelled).await.expect(202), first);
    // The same key with another request is refused, not answered with the first one's result.
    let other = app
        .client
        .post(format!("{}/api/events", app.base))
        .bearer_auth(&key)
        .header("Idempotency-Key", "order-42")
        .json(&json!({"event_type": "task.created", "data": {"id": 43}}));
    let detail = crate::helpers::send(other)
        .await
        .expect_error(422, "idempotency_key_reused");
    assert!(detail.starts_with("Idempotency-Key"), "{detail}");
    let batch = app
        .post(
            "/api/events/batch",
            &key,
            &json!({"events": [{"event_type": "task.started"}, {"event_type": "task.completed", "data": {"ok": true}},
                               {"event_type": "chat.message", "agent_id": 7}]}),
        )
        .await
        .expect(202);
    assert_eq!(batch["deliveries"], 3);
    receiver.wait_for(4, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.received().len(),
        4,
        "the repeated publish delivered nothing more"
    );
    let detail = app
        .post(
            "/api/events/batch",
            &key,
            &json!({"events": [{"event_type": "task.started"}, {"event_type": "bad"}]}),
        )
        .await
        .expect_error(422, "validation_error");
    assert!(detail.starts_with("events[1].event_type"), "{detail}");
    app.post("/api/events/batch", &key, &json!({"events": []}))
        .await
        .expect_error(422, "validation_error");
}

async fn logs_statistics_and_metrics_report_attempts(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(500)]);
    let key = app.tenant_key().await;
    let id = webhook(
        &app,
        &key,
        json!({"url": receiver.url, "retry_count": 0, "secret": "s",
        "headers": {"Authorization": "Bearer downstream"}}),
    )
    .await;
    publish(&app, &key, "task.failed", json!({"n": 1})).await;
    publish(&app, &key, "task.completed", json!({"n": 2})).await;
    publish(&app, &key, "task.completed", json!({"n": 3})).await;
    receiver.wait_for(3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let logs = app
        .get(
            &format!("/api/webhooks/{id}/logs?webhook_type=outgoing&limit=100&offset=0"),
            &key,
        )
        .await
        .expect(200);
    assert_eq!(logs.as_array().unwrap().len(), 3);
    let entry = &logs[0];
    for field in [
        "id",
        "webhook_type",
        "webhook_id",
        "event_type",
        "request_payload",
        "request_headers",
        "response_status",
        "response_body",
        "error_message",
        "retry_count",
        "processing_time_ms",
        "created_at",
        "delivery_id",
        "status",
    ] {
        assert!(entry.get(field).is_some(), "{field} missing: {entry}");
    }
    assert_eq!(entry["request_headers"]["authorization"], "********");
    assert_eq!(entry["request_headers"]["x-webhook-signature"], "********");
    assert!(entry["request_payload"]["data"].is_object());
    let failed = app
        .get(&format!("/api/webhooks/{id}/logs?status=failed"), &key)
        .await
        .expect(200);
    assert_eq!(failed.as_array().unwrap().len(), 1);
    let completed = app
        .get(
            &format!("/api/webhooks/{id}/logs?event_type=task.completed&limit=1"),
            &key,
        )
        .await
        .expect(200);
    assert_eq!(completed.as_array().unwrap().len(), 1);
    app.get(&format!("/api/webhooks/{id}/logs?limit=0"), &key)
        .await
        .expect_error(422, "validation_error");

    let stats = app
        .get(
            &format!("/api/webhooks/{id}/statistics?webhook_type=outgoing"),
            &key,
        )
        .await
        .expect(200);
    assert_eq!(
        (
            stats["total_requests"].clone(),
            stats["successful_requests"].clone(),
            stats["failed_requests"].clone()
        ),
        (json!(3), json!(2), json!(1))
    );
    assert_eq!(stats["success_rate"], 66.67);
    assert!(stats["p99_processing_time_ms"].is_f64());
    assert!(stats["last_failure_at"].is_string() && stats["last_success_at"].is_string());
    let stranger = app.key_for("x", "y", &[]).await;
    app.get(&format!("/api/webhooks/{id}/statistics"), &stranger)
        .await
        .expect_error(404, "not_found");
    app.get(&format!("/api/webhooks/{id}/logs"), &stranger)
        .await
        .expect_error(404, "not_found");
    app.get(
        &format!("/api/webhooks/{id}/logs?webhook_type=incoming"),
        &key,
    )
    .await
    .expect_error(404, "not_found");

    let totals = app.get("/api/webhooks/stats", &key).await.expect(200);
    assert_eq!(totals["total_requests"], 3);
    assert_eq!(totals["outgoing_webhooks"], 1);

    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("hookd_delivery_attempts_total"),
        "{metrics}"
    );
}

async fn chat_targets_get_their_own_body_shape(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    let key = app.tenant_key().await;
    webhook(&app, &key, json!({"url": format!("{}/slack", receiver.url), "payload_format": "slack", "event_types": ["chat.completed"]})).await;
    webhook(&app, &key, json!({"url": format!("{}/discord", receiver.url), "payload_format": "discord", "event_types": ["chat.completed"]})).await;
    webhook(&app, &key, json!({"url": format!("{}/custom", receiver.url), "event_types": ["chat.completed"],
        "payload_template": "{\"text\": \"{{ event_type }} by {{ data.agent_name }}\"}", "secret": "s"})).await;
    publish(
        &app,
        &key,
        "chat.completed",
        json!({"message": "All done", "agent_name": "MyAgent"}),
    )
    .await;
    let got = receiver.wait_for(3, WAIT).await;
    let by_path = |p: &str| got.iter().find(|r| r.path == p).unwrap().clone();
    assert_eq!(
        by_path("/slack").json(),
        json!({"text": "*chat.completed*: All done"})
    );
    assert_eq!(
        by_path("/discord").json(),
        json!({"content": "*chat.completed*: All done"})
    );
    let custom = by_path("/custom");
    assert_eq!(custom.json(), json!({"text": "chat.completed by MyAgent"}));
    assert_eq!(
        custom.header("x-webhook-signature"),
        hmac_hex(b"s", &custom.body),
        "the signature covers the bytes sent"
    );
    let detail = app
        .post(
            "/api/webhooks/outgoing",
            &key,
            &json!({"url": receiver.url, "payload_template": "{{ oops"}),
        )
        .await
        .expect_error(422, "validation_error");
    assert!(detail.starts_with("payload_template"), "{detail}");
}

async fn answers_are_read_only_as_far_as_the_log_needs_and_only_within_the_timeout(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let endless = Receiver::start().await;
    endless.always(Reply::Endless);
    let stalled = Receiver::start().await;
    stalled.always(Reply::StallBody);
    let counted = webhook(
        &app,
        &key,
        json!({"url": endless.url, "timeout": 5, "event_types": ["task.completed"]}),
    )
    .await;
    let cut = webhook(
        &app,
        &key,
        json!({"url": stalled.url, "timeout": 1, "retry_count": 0,
               "event_types": ["task.started"]}),
    )
    .await;
    publish(&app, &key, "task.completed", json!({})).await;
    publish(&app, &key, "task.started", json!({})).await;
    wait_for_status(&app, &key, &counted, "delivered").await;
    wait_for_status(&app, &key, &cut, "failed").await;

    let logs = app
        .get(&format!("/api/webhooks/{counted}/logs"), &key)
        .await
        .expect(200);
    let entry = &logs[0];
    assert_eq!(entry["response_status"], 200);
    assert_eq!(
        entry["response_body"].as_str().unwrap().len(),
        16 * 1024,
        "the first 16 KiB are kept; the rest is not read"
    );
    assert!(
        entry["processing_time_ms"].as_f64().unwrap() < 5_000.0,
        "{entry}"
    );

    let logs = app
        .get(&format!("/api/webhooks/{cut}/logs"), &key)
        .await
        .expect(200);
    let entry = &logs[0];
    assert_eq!(entry["response_status"], 200);
    assert!(
        entry["error_message"]
            .as_str()
            .unwrap()
            .starts_with("timed out"),
        "{entry}"
    );
    let took = entry["processing_time_ms"].as_f64().unwrap();
    assert!(
        (900.0..10_000.0).contains(&took),
        "a stalled answer holds the attempt for its 1 s timeout, no longer: {took} ms"
    );
}
