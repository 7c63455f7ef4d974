//! Each write fails alone: writes of many requests share a group commit, and a write the
//! database refuses must fail only itself, never the writes of other requests or tenants
//! committed with it; an attempt whose outcome cannot be stored is not made again and again.

use std::{sync::Arc, time::Duration};

use hookd::{
    domain::{
        delivery::{Delivery, TargetKind},
        event::{Event, NewEvent},
        new_id,
        tenant::Tenant,
        time::now_ms,
    },
    store::{Publication, StoreError},
};
use serde_json::json;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with};
use crate::receiver::{Receiver, Reply};

both_backends!(
    refused_writes_fail_alone_among_another_tenants_publishes,
    an_answer_the_store_cannot_hold_is_recorded_once_not_resent,
);

/// A publication the database refuses: its event's id is taken already (on every backend), and
/// on PostgreSQL its type also holds U+0000, which a text column cannot.
fn poison(taken_id: &str, postgres: bool) -> Publication {
    let tenant = Tenant {
        user_id: "poisoner".into(),
        company_id: "company-poison".into(),
    };
    let event_type = if postgres {
        "task.\0failed"
    } else {
        "task.failed"
    };
    let new = NewEvent {
        event_type: event_type.into(),
        data: json!({"bad": true}),
        agent_id: None,
        agent_name: None,
        metadata: None,
    };
    let event = Event::new(taken_id.to_string(), tenant.clone(), new, now_ms());
    let delivery = Delivery::pending(&event, TargetKind::Webhook, &new_id(), now_ms());
    Publication {
        tenant,
        events: vec![Arc::new(event)],
        deliveries: vec![delivery],
        idempotency: None,
    }
}

async fn refused_writes_fail_alone_among_another_tenants_publishes(backend: Backend) {
    let app = Arc::new(spawn_app(backend).await);
    let key = app.tenant_key().await;
    let receiver = Receiver::start().await;
    app.post(
        "/api/webhooks/outgoing",
        &key,
        &json!({"url": receiver.url, "event_types": ["task.completed"]}),
    )
    .await
    .expect(201);
    // An event whose id the poison writes reuse.
    let first = app
        .post(
            "/api/events",
            &key,
            &json!({"event_type": "task.completed", "data": {}}),
        )
        .await
        .expect(202);
    let taken = first["event_id"].as_str().unwrap().to_string();
    let postgres = app.store.backend() == "postgres";

    let publishes = (0..1_000).map(|n| {
        let (app, key) = (Arc::clone(&app), key.clone());
        tokio::spawn(async move {
            let body = json!({"event_type": "task.completed", "data": {"n": n}});
            let answer = app.post("/api/events", &key, &body).await;
            (answer.status.as_u16(), answer.body)
        })
    });
    let publishes: Vec<_> = publishes.collect();
    let poisons: Vec<_> = (0..100)
        .map(|_| {
            let (store, publication) = (app.store.clone(), poison(&taken, postgres));
            tokio::spawn(async move { store.publish(publication).await })
        })
        .collect();

    let mut event_ids = Vec::new();
    let mut failed = Vec::new();
    for publish in publishes {
        match publish.await.unwrap() {
            (202, body) => event_ids.push(body["event_id"].as_str().unwrap().to_string()),
            other => failed.push(other),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 1,000 failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    for poison in poisons {
        let refused = poison.await.unwrap();
        assert!(
            matches!(
                refused,
                Err(StoreError::Conflict(_) | StoreError::Refused(_) | StoreError::Database(_))
            ),
            "{refused:?}"
        );
    }
    let ids: Vec<&str> = event_ids.iter().map(String::as_str).collect();
    assert_eq!(app.store.events_by_id(&ids).await.unwrap().len(), 1_000);
    let kept = app.store.events_by_id(&[taken.as_str()]).await.unwrap();
    assert_eq!(
        kept[0].event_type, "task.completed",
        "the taken event is untouched"
    );
    // Every accepted event reaches the receiver.
    receiver.wait_for(1_001, Duration::from_secs(60)).await;
}

async fn an_answer_the_store_cannot_hold_is_recorded_once_not_resent(backend: Backend) {
    // A short lease: an attempt left unrecorded would be made again within the test.
    let app: TestApp = spawn_app_with(backend, |settings| settings.lease_ms = Some(1_000)).await;
    let key = app.tenant_key().await;
    let receiver = Receiver::start().await;
    receiver.always(Reply::Bytes(200, b"a\0b"));
    let created = app
        .post(
            "/api/webhooks/outgoing",
            &key,
            &json!({"url": receiver.url, "event_types": ["task.completed"]}),
        )
        .await
        .expect(201);
    let id = created["id"].as_str().unwrap();
    app.post(
        "/api/events",
        &key,
        &json!({"event_type": "task.completed", "data": {}}),
    )
    .await
    .expect(202);
    receiver.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    assert_eq!(receiver.received().len(), 1, "the attempt was made again");
    let logs = app
        .get(&format!("/api/webhooks/{id}/logs"), &key)
        .await
        .expect(200);
    assert_eq!(logs.as_array().unwrap().len(), 1, "{logs}");
    assert_eq!(logs[0]["status"], "delivered");
    assert_eq!(logs[0]["response_body"], "a\u{FFFD}b");
}
