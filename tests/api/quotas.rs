//! What one company may hold and ask for at once: webhooks and event types per company, counted
//! exactly under concurrent creates, and deliveries per publish request, refused before anything
//! is written.

use std::sync::Arc;

use hookd::{
    domain::custom_types::{CustomEventType, CustomTypeChanges},
    store::StoreError,
};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Answer, Backend, TestApp, send, spawn_app_with};

both_backends!(
    a_company_holds_at_most_its_quota_of_webhooks_even_when_created_at_once,
    event_types_archived_count_toward_the_quota,
    concurrent_inserts_are_counted_one_after_another,
    a_publish_making_more_deliveries_than_allowed_is_refused_whole,
    a_company_holds_at_most_its_quota_of_agents_however_they_are_made,
    a_request_routed_to_an_agent_deleted_meanwhile_makes_it_again_within_the_quota,
);

const MOST: i64 = 4;

async fn quota_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |s| {
        s.max_webhooks_per_company = Some(MOST);
        s.max_event_types_per_company = Some(2);
        s.max_agents_per_company = Some(3);
        s.max_deliveries_per_request = Some(5);
    })
    .await
}

/// Creates `count` of a kind at once for `key`; the statuses, sorted.
async fn create_at_once(app: &Arc<TestApp>, key: &str, path: &str, body: Value) -> Vec<u16> {
    let creates = (0..12).map(|_| {
        let (app, key, body) = (Arc::clone(app), key.to_string(), body.clone());
        let path = path.to_string();
        tokio::spawn(async move { app.post(&path, &key, &body).await.status.as_u16() })
    });
    let creates: Vec<_> = creates.collect();
    let mut statuses = Vec::new();
    for create in creates {
        statuses.push(create.await.unwrap());
    }
    statuses.sort_unstable();
    statuses
}

async fn a_company_holds_at_most_its_quota_of_webhooks_even_when_created_at_once(backend: Backend) {
    let app = Arc::new(quota_app(backend).await);
    let key = app.key_for("u1", "acme", &[]).await;
    let colleague = app.key_for("u2", "acme", &[]).await;
    let other = app.key_for("u3", "globex", &[]).await;
    let kinds = [
        (
            "/api/webhooks/outgoing",
            json!({"url": "http://127.0.0.1:9/hook", "event_types": ["*"]}),
        ),
        (
            "/api/webhooks/incoming",
            json!({"name": "in", "agent_id": "a1"}),
        ),
    ];
    for (path, body) in kinds {
        // Twelve at once for a quota of four: exactly four are made, the rest refused.
        let statuses = create_at_once(&app, &key, path, body.clone()).await;
        let made = statuses.iter().filter(|&&s| s == 201).count();
        assert_eq!(made, 4, "{path}: {statuses:?}");
        assert!(
            statuses.iter().all(|&s| s == 201 || s == 409),
            "{statuses:?}"
        );
        let listed = app.get(path, &key).await.expect(200);
        assert_eq!(listed.as_array().unwrap().len(), 4, "{path}");

        // The quota is the company's: a colleague in it is refused too, another company is not.
        let detail = app
            .post(path, &colleague, &body)
            .await
            .expect_error(409, "limit_reached");
        assert!(
            detail.contains("HOOKD_MAX_WEBHOOKS_PER_COMPANY") && detail.contains("4"),
            "{detail}"
        );
        app.post(path, &other, &body).await.expect(201);

        // Deleting one makes room for one.
        let id = listed[0]["id"].as_str().unwrap();
        app.delete(&format!("{path}/{id}"), &key).await.expect(204);
        app.post(path, &colleague, &body).await.expect(201);
        app.post(path, &colleague, &body)
            .await
            .expect_error(409, "limit_reached");
    }
    // An incoming webhook refused for the quota makes none of the agents it names.
    let naming = json!({"name": "in", "agent_id": "never-made"});
    app.post("/api/webhooks/incoming", &key, &naming)
        .await
        .expect_error(409, "limit_reached");
    app.get("/api/agents/never-made", &key)
        .await
        .expect_error(404, "not_found");
}

async fn event_types_archived_count_toward_the_quota(backend: Backend) {
    let app = quota_app(backend).await;
    let key = app.tenant_key().await;
    for name in ["invoice.paid", "invoice.voided"] {
        app.post("/api/event-types", &key, &json!({"name": name}))
            .await
            .expect(201);
    }
    app.delete("/api/event-types/invoice.voided", &key)
        .await
        .expect(204);
    let detail = app
        .post("/api/event-types", &key, &json!({"name": "invoice.sent"}))
        .await
        .expect_error(409, "limit_reached");
    assert!(
        detail.contains("HOOKD_MAX_EVENT_TYPES_PER_COMPANY"),
        "{detail}"
    );
    assert!(detail.contains("archived"), "{detail}");
    // A refused create leaves nothing behind: the name is still free once there is room.
    let listed = app
        .get("/api/event-types?archived=true", &key)
        .await
        .expect(200);
    assert!(!listed.to_string().contains("invoice.sent"), "{listed}");
}

async fn a_publish_making_more_deliveries_than_allowed_is_refused_whole(backend: Backend) {
    let app = quota_app(backend).await;
    let key = app.tenant_key().await;
    let mut hooks = Vec::new();
    for filter in [json!({}), json!({}), json!({"n": 0})] {
        let hook = app
            .post(
                "/api/webhooks/outgoing",
                &key,
                &json!({"url": "http://127.0.0.1:9/hook", "event_types": ["task.*", "task.failed"], "filters": filter}),
            )
            .await
            .expect(201);
        hooks.push(hook["id"].as_str().unwrap().to_string());
    }
    let event = |n: i64| json!({"event_type": "task.failed", "data": {"n": n}});

    // Two events, three webhooks subscribed to their type (each once, though it names the type
    // twice): six deliveries by subscription, over the five allowed, though the filter would
    // have let only five through. Counted before filters, so the answer does not depend on data.
    let detail = app
        .post(
            "/api/events/batch",
            &key,
            &json!({"events": [event(0), event(1)]}),
        )
        .await
        .expect_error(422, "validation_error");
    assert!(detail.starts_with("events"), "{detail}");
    assert!(
        detail.contains("HOOKD_MAX_DELIVERIES_PER_REQUEST") && detail.contains('6'),
        "{detail}"
    );
    for id in &hooks {
        let deliveries = app
            .get(&format!("/api/webhooks/outgoing/{id}/deliveries"), &key)
            .await
            .expect(200);
        assert_eq!(
            deliveries,
            json!([]),
            "nothing of the refused batch was written"
        );
    }

    // One event at a time goes through, to every webhook that wants it.
    let published = app.post("/api/events", &key, &event(1)).await.expect(202);
    assert_eq!(published["deliveries"], 2, "{published}");
    let batch = app
        .post("/api/events/batch", &key, &json!({"events": [event(0)]}))
        .await
        .expect(202);
    assert_eq!(batch["deliveries"], 3, "{batch}");
}

/// The store's own count, without HTTP in between to spread the inserts out: 40 at once for a
/// quota of 4 (on PostgreSQL, without the lock, several counted 3 before any committed).
async fn concurrent_inserts_are_counted_one_after_another(backend: Backend) {
    let app = quota_app(backend).await;
    // The pool's connections opened first, so that the inserts do not wait for them one by one.
    let reads = (0..40).map(|_| {
        let store = app.store.clone();
        tokio::spawn(async move { store.list_event_types("acme").await.unwrap() })
    });
    let reads: Vec<_> = reads.collect();
    for read in reads {
        read.await.unwrap();
    }
    let inserts = (0..40).map(|i| {
        let store = app.store.clone();
        tokio::spawn(async move {
            let name = format!("kind.n{i}");
            let changes = CustomTypeChanges::default();
            let event_type = CustomEventType::create("acme", &name, "u", changes, 0).unwrap();
            store.insert_event_type(&event_type, MOST).await
        })
    });
    let inserts: Vec<_> = inserts.collect();
    let (mut made, mut refused) = (0, 0);
    for insert in inserts {
        match insert.await.unwrap() {
            Ok(()) => made += 1,
            Err(StoreError::QuotaReached { most: MOST, .. }) => refused += 1,
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!((made, refused), (MOST, 40 - MOST));
}

async fn a_company_holds_at_most_its_quota_of_agents_however_they_are_made(backend: Backend) {
    let app = Arc::new(quota_app(backend).await);
    let key = app.key_for("u1", "acme", &[]).await;
    let colleague = app.key_for("u2", "acme", &[]).await;
    let other = app.key_for("u3", "globex", &[]).await;
    // Twelve differently named agents at once for a quota of three.
    let creates: Vec<_> = (0..12)
        .map(|n| {
            let (app, key) = (Arc::clone(&app), key.clone());
            tokio::spawn(async move {
                let body = json!({"name": format!("agent-{n}")});
                app.post("/api/agents", &key, &body).await.status.as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for create in creates {
        statuses.push(create.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|&&s| s == 201).count(),
        3,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|&s| s == 201 || s == 409),
        "{statuses:?}"
    );
    let listed = app.get("/api/agents", &key).await.expect(200);
    assert_eq!(listed.as_array().unwrap().len(), 3);

    let detail = app
        .post("/api/agents", &colleague, &json!({"name": "colleague"}))
        .await
        .expect_error(409, "limit_reached");
    assert!(
        detail.contains("HOOKD_MAX_AGENTS_PER_COMPANY") && detail.contains("3 agents"),
        "{detail}"
    );
    app.post("/api/agents", &other, &json!({"name": "elsewhere"}))
        .await
        .expect(201);

    // The agents an incoming webhook names count too: with the quota full, a webhook naming a
    // new one is refused and not made; naming one that exists is fine.
    let naming = json!({"name": "in", "agent_id": "one-too-many"});
    app.post("/api/webhooks/incoming", &key, &naming)
        .await
        .expect_error(409, "limit_reached");
    let hooks = app.get("/api/webhooks/incoming", &key).await.expect(200);
    assert_eq!(hooks.as_array().unwrap().len(), 0);
    let existing = listed[0]["name"].as_str().unwrap();
    app.post(
        "/api/webhooks/incoming",
        &key,
        &json!({"name": "in", "agent_id": existing}),
    )
    .await
    .expect(201);

    // Deleting one makes room for one.
    let id = listed[1]["id"].as_str().unwrap();
    app.delete(&format!("/api/agents/{id}"), &key)
        .await
        .expect(204);
    app.post("/api/webhooks/incoming", &colleague, &naming)
        .await
        .expect(201);
    app.get("/api/agents/one-too-many", &colleague)
        .await
        .expect(200);

    // The tenant's totals count its webhooks (each user's own) without reading them.
    for (who, incoming) in [(&key, 1), (&colleague, 1), (&other, 0)] {
        let totals = app.get("/api/webhooks/stats", who).await.expect(200);
        assert_eq!(totals["incoming_webhooks"], incoming, "{totals}");
        assert_eq!(totals["outgoing_webhooks"], 0, "{totals}");
    }
}

async fn a_request_routed_to_an_agent_deleted_meanwhile_makes_it_again_within_the_quota(
    backend: Backend,
) {
    let app = quota_app(backend).await;
    let key = app.tenant_key().await;
    let created = app
        .post(
            "/api/webhooks/incoming",
            &key,
            &json!({"name": "in", "agent_id": "a0"}),
        )
        .await
        .expect(201);
    let receiving = format!(
        "{}/webhook/{}",
        app.base,
        created["token"].as_str().unwrap()
    );
    let (app, key) = (&app, key.as_str());
    let receive = || async {
        let body = json!({"text": "hello"});
        send(app.client.post(&receiving).json(&body)).await
    };
    let delete_agent = |name: &'static str| async move {
        let agent = app
            .get(&format!("/api/agents/{name}"), key)
            .await
            .expect(200);
        let id = agent["id"].as_str().unwrap().to_string();
        app.delete(&format!("/api/agents/{id}"), key)
            .await
            .expect(204);
    };
    let create_agent = |name: &'static str| async move {
        app.post("/api/agents", key, &json!({"name": name}))
            .await
            .expect(201);
    };
    receive().await.expect(202);

    // Deleted meanwhile: the next request makes it again.
    delete_agent("a0").await;
    let accepted: Answer = receive().await;
    let answer = accepted.expect(202);
    let again = app.get("/api/agents/a0", key).await.expect(200);
    assert_eq!(answer["agent_id"], again["id"]);

    // Deleted while the company's agents fill the quota: the request is refused, nothing made.
    create_agent("b1").await;
    create_agent("b2").await;
    delete_agent("a0").await;
    create_agent("b3").await;
    let detail = receive().await.expect_error(409, "limit_reached");
    assert!(detail.contains("HOOKD_MAX_AGENTS_PER_COMPANY"), "{detail}");
    app.get("/api/agents/a0", key)
        .await
        .expect_error(404, "not_found");
}
