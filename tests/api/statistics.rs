//! Statistics over the last hour, beside the all-time ones.

use serde_json::json;

use crate::{
    both_backends,
    helpers::{Backend, spawn_app},
};
use hookd::domain::{
    log::{LogEntry, WebhookType},
    time::now_ms,
};

both_backends!(statistics_give_the_last_hour_beside_all_time);

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
        processing_time_ms: ms,
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
        (json!(4), json!(3), json!(1), json!(75.0), json!(40)),
        "{stats}"
    );
}
