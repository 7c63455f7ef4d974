//! Statistics over the last hour, beside the all-time ones, and durations to the microsecond.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    both_backends,
    helpers::{Backend, TestApp, spawn_app},
    receiver::Receiver,
    receiving::{create_hook, post_json},
};
use hookd::domain::{
    log::{LogEntry, WebhookType},
    time::now_ms,
};

both_backends!(
    statistics_give_the_last_hour_beside_all_time,
    short_work_is_reported_in_fractions_of_a_millisecond_not_zero,
    log_entries_from_before_microseconds_read_as_their_whole_milliseconds,
);

async fn statistics_give_the_last_hour_beside_all_time(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let hook = app
        .post(
            "/api/webhooks/incoming",
            &key,
            &json!({"name": "CRM", "agent_id": "sales_agent"}),
        )
        .await
        .expect(201);
    let id = hook["id"].as_str().unwrap();
    let entry = |status: &str, minutes_ago: i64, ms: i64| LogEntry {
        id: hookd::domain::new_id(),
        webhook_type: WebhookType::Incoming,
        webhook_id: id.to_string(),
        delivery_id: None,
        event_type: None,
        status: status.to_string(),
        succeeded: LogEntry::counts_as_success(status),
        request_payload: None,
        request_headers: Default::default(),
        response_status: None,
        response_body: None,
        error_message: None,
        retry_count: 0,
        processing_time_us: ms * 1000,
        created_at: now_ms() - minutes_ago * 60_000,
    };
    // Two hours ago: failures. Within the hour: three accepted, one rejected.
    for entry in [
        entry("rejected", 120, 900),
        entry("rejected", 110, 900),
        entry("accepted", 50, 10),
        entry("accepted", 20, 20),
        entry("rejected", 10, 30),
        entry("accepted", 1, 40),
    ] {
        app.store.record_log(entry).await.unwrap();
    }
    let stats = app
        .get(&format!("/api/webhooks/{id}/statistics"), &key)
        .await
        .expect(200);
    assert_eq!(stats["total_requests"], 6);
    assert_eq!(stats["success_rate"], 50.0);
    let hour = &stats["last_hour"];
    assert_eq!(
        (
            hour["total_requests"].clone(),
            hour["successful_requests"].clone(),
            hour["failed_requests"].clone(),
            hour["success_rate"].clone(),
            hour["p95_processing_time_ms"].clone(),
        ),
        (json!(4), json!(3), json!(1), json!(75.0), json!(40.0)),
        "{stats}"
    );
}

/// A webhook's log, once it holds `count` entries.
async fn logs_of(app: &TestApp, key: &str, id: &str, kind: &str, count: usize) -> Vec<Value> {
    let path = format!("/api/webhooks/{id}/logs?webhook_type={kind}&limit=1000");
    for _ in 0..100 {
        let logs = app.get(&path, key).await.expect(200);
        let logs = logs.as_array().unwrap().clone();
        if logs.len() >= count {
            return logs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{kind} webhook {id}: fewer than {count} log entries");
}

/// Receiving without a template and delivering to a receiver on loopback take about a
/// millisecond, often less. Logged in whole milliseconds, such work read 0 (and so did averages
/// and percentiles over it); now every duration is milliseconds with fractions, in both
/// directions.
async fn short_work_is_reported_in_fractions_of_a_millisecond_not_zero(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let receiver = Receiver::start().await;
    let outgoing = crate::delivery::webhook(
        &app,
        &key,
        json!({"url": format!("{}/hook", receiver.url), "event_types": ["task.completed"]}),
    )
    .await;
    let incoming = create_hook(&app, &key, json!({"agent_id": "timed"})).await;
    const N: usize = 20;
    for n in 0..N {
        post_json(&app, &incoming, &json!({"n": n}))
            .await
            .expect(202);
        let event = json!({"event_type": "task.completed", "data": {"n": n}});
        app.post("/api/events", &key, &event).await.expect(202);
    }
    receiver.wait_for(N, Duration::from_secs(10)).await;

    for (id, kind) in [(incoming.id.as_str(), "incoming"), (&outgoing, "outgoing")] {
        let logs = logs_of(&app, &key, id, kind, N).await;
        let times: Vec<f64> = logs
            .iter()
            .map(|entry| entry["processing_time_ms"].as_f64().expect("a number"))
            .collect();
        assert!(times.iter().all(|&ms| ms > 0.0), "{kind}: {times:?}");
        assert!(
            times.iter().any(|ms| ms.fract() != 0.0),
            "{kind}: whole milliseconds only: {times:?}"
        );
        let stats = app
            .get(
                &format!("/api/webhooks/{id}/statistics?webhook_type={kind}"),
                &key,
            )
            .await
            .expect(200);
        for figure in [
            &stats["average_processing_time_ms"],
            &stats["p50_processing_time_ms"],
            &stats["p95_processing_time_ms"],
            &stats["p99_processing_time_ms"],
            &stats["last_hour"]["p95_processing_time_ms"],
        ] {
            assert!(figure.as_f64().expect("a number") > 0.0, "{kind}: {stats}");
        }
        let p50 = stats["p50_processing_time_ms"].as_f64().unwrap();
        assert!(
            times.contains(&p50),
            "{kind}: p50 {p50} is one of {times:?}"
        );
    }
    let tenant = app.get("/api/webhooks/stats", &key).await.expect(200);
    assert!(tenant["average_processing_time_ms"].as_f64().unwrap() > 0.0);
}

/// Entries logged before durations were kept in microseconds have only their whole
/// milliseconds: they read as those.
async fn log_entries_from_before_microseconds_read_as_their_whole_milliseconds(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let hook = create_hook(&app, &key, json!({"agent_id": "old"})).await;
    // As the previous version wrote it: no `processing_time_us`.
    app.execute_sql(&format!(
        "INSERT INTO webhook_logs (id, webhook_type, webhook_id, status, request_headers,
            retry_count, processing_time_ms, created_at)
         VALUES ('before', 'incoming', '{}', 'accepted', '{{}}', 0, 7, {})",
        hook.id,
        now_ms() - 1_000
    ))
    .await;
    let logs = logs_of(&app, &key, &hook.id, "incoming", 1).await;
    assert_eq!(logs[0]["processing_time_ms"], json!(7.0));
    let stats = app
        .get(&format!("/api/webhooks/{}/statistics", hook.id), &key)
        .await
        .expect(200);
    assert_eq!(stats["p50_processing_time_ms"], json!(7.0), "{stats}");
    assert_eq!(stats["last_hour"]["p95_processing_time_ms"], json!(7.0));
}
