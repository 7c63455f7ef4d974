//! Event types that a company defines: `POST/GET /api/event-types`, `GET/PUT/DELETE
//! /api/event-types/{name}`; publishes checked against their JSON Schemas; subscriptions to
//! them (wildcards too); archiving; and companies not seeing each other's types.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::delivery::webhook;
use crate::helpers::{Backend, TestApp, spawn_app};
use crate::receiver::Receiver;

both_backends!(
    custom_types_are_created_listed_changed_and_archived,
    publishes_of_a_type_with_a_schema_are_checked_and_name_the_failing_path,
    wildcards_cover_custom_types_and_archiving_keeps_subscriptions,
    a_company_sees_and_validates_only_its_own_types,
    a_retried_publish_gets_its_first_answer_after_its_type_is_archived,
);

const WAIT: Duration = Duration::from_secs(10);

const PAID: &str = "billing.invoice.paid";

fn invoice_schema() -> Value {
    json!({
        "type": "object",
        "required": ["amount"],
        "properties": {
            "amount": {"type": "number", "minimum": 0},
            "lines": {"type": "array", "items": {
                "type": "object",
                "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$"}}
            }}
        }
    })
}

async fn define(app: &TestApp, key: &str, body: Value) -> Value {
    app.post("/api/event-types", key, &body).await.expect(201)
}

/// The names `path` lists, with or without a key.
async fn listed(app: &TestApp, path: &str, key: Option<&str>) -> Vec<String> {
    let body = app.request(Method::GET, path, key, None).await.expect(200);
    body["event_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap().to_string())
        .collect()
}

async fn publish(
    app: &TestApp,
    key: &str,
    event_type: &str,
    data: Value,
) -> crate::helpers::Answer {
    app.post(
        "/api/events",
        key,
        &json!({"event_type": event_type, "data": data}),
    )
    .await
}

async fn custom_types_are_created_listed_changed_and_archived(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.key_for("alice", "acme", &[]).await;

    let created = define(
        &app,
        &key,
        json!({"name": PAID, "description": "An invoice was paid", "schema": invoice_schema()}),
    )
    .await;
    assert_eq!(created["type"], PAID);
    assert_eq!(created["name"], PAID);
    assert_eq!(created["builtin"], false);
    assert_eq!(created["publishable"], true);
    assert_eq!(created["version"], 1);
    assert_eq!(created["created_by"], "alice");
    assert_eq!(created["schema"], invoice_schema());
    define(&app, &key, json!({"name": "crm.lead-created"})).await;

    let all = listed(&app, "/api/event-types", Some(&key)).await;
    assert!(
        all.contains(&"chat.completed".to_string()),
        "built-in types listed"
    );
    assert!(all.contains(&PAID.to_string()) && all.contains(&"crm.lead-created".to_string()));
    // The spec's list answers without a key as before, and adds the company's types with one.
    let public = listed(&app, "/api/webhooks/event-types", None).await;
    assert!(!public.contains(&PAID.to_string()));
    assert_eq!(public.len(), all.len() - 2);
    assert_eq!(
        listed(&app, "/api/webhooks/event-types", Some(&key)).await,
        all
    );
    app.request(
        Method::GET,
        "/api/webhooks/event-types",
        Some("hk_wrong"),
        None,
    )
    .await
    .expect_error(401, "unauthorized");

    let one = app
        .get(&format!("/api/event-types/{PAID}"), &key)
        .await
        .expect(200);
    assert_eq!(one["description"], "An invoice was paid");
    let builtin = app
        .get("/api/event-types/task.failed", &key)
        .await
        .expect(200);
    assert_eq!(builtin["builtin"], true);

    let changed = app
        .put(
            &format!("/api/event-types/{PAID}"),
            &key,
            &json!({"description": "Paid in full", "schema": {"type": "object"}}),
        )
        .await
        .expect(200);
    assert_eq!(changed["version"], 2);
    assert_eq!(changed["schema"], json!({"type": "object"}));
    let cleared = app
        .put(
            &format!("/api/event-types/{PAID}"),
            &key,
            &json!({"schema": null}),
        )
        .await
        .expect(200);
    assert_eq!(
        (cleared["version"].clone(), cleared.get("schema")),
        (json!(3), None)
    );
    assert_eq!(cleared["description"], "Paid in full");

    app.delete(&format!("/api/event-types/{PAID}"), &key)
        .await
        .expect(204);
    let archived = app
        .get(&format!("/api/event-types/{PAID}"), &key)
        .await
        .expect(200);
    assert_eq!(
        (
            archived["archived"].clone(),
            archived["publishable"].clone()
        ),
        (json!(true), json!(false))
    );
    // The name stays taken while archived; PUT restores.
    let detail = app
        .post("/api/event-types", &key, &json!({"name": PAID}))
        .await
        .expect_error(409, "conflict");
    assert!(detail.contains("archived"), "{detail}");
    let restored = app
        .put(
            &format!("/api/event-types/{PAID}"),
            &key,
            &json!({"archived": false}),
        )
        .await
        .expect(200);
    assert_eq!(restored["archived"], false);

    // Built-in names are hookd's: defining, changing or archiving one is a conflict.
    for answer in [
        app.post("/api/event-types", &key, &json!({"name": "chat.completed"}))
            .await,
        app.put(
            "/api/event-types/task.failed",
            &key,
            &json!({"description": "x"}),
        )
        .await,
        app.delete("/api/event-types/webhook.test", &key).await,
    ] {
        answer.expect_error(409, "conflict");
    }
    let refused = [
        (json!({}), "name"),
        (json!({"name": "billing"}), "name"),
        (json!({"name": "Billing.Paid"}), "name"),
        (json!({"name": "webhook.mine"}), "name"),
        (
            json!({"name": "billing.x", "schema": {"type": "no-such-type"}}),
            "schema",
        ),
        (
            json!({"name": "billing.x", "schema": {"$ref": "https://example.com/s.json"}}),
            "schema",
        ),
        (
            json!({"name": "billing.x", "schema": {"pattern": "(a)\\1"}}),
            "schema",
        ),
        (json!({"name": "billing.x", "schema": "text"}), "schema"),
        (
            json!({"name": "billing.x", "description": "d".repeat(1_001)}),
            "description",
        ),
    ];
    for (body, field) in refused {
        let detail = app
            .post("/api/event-types", &key, &body)
            .await
            .expect_error(422, "validation_error");
        assert!(
            detail.starts_with(&format!("{field}: ")),
            "{body}: {detail}"
        );
    }
    app.put(
        &format!("/api/event-types/{PAID}"),
        &key,
        &json!({"name": "billing.other"}),
    )
    .await
    .expect_error(422, "validation_error");
    app.get("/api/event-types/billing.nothing", &key)
        .await
        .expect_error(404, "not_found");

    // Reading takes webhooks:read, defining webhooks:write.
    let reader = app.key_for("alice", "acme", &["webhooks:read"]).await;
    assert_eq!(listed(&app, "/api/event-types", Some(&reader)).await, all);
    for answer in [
        app.post("/api/event-types", &reader, &json!({"name": "billing.y"}))
            .await,
        app.put(&format!("/api/event-types/{PAID}"), &reader, &json!({}))
            .await,
        app.delete(&format!("/api/event-types/{PAID}"), &reader)
            .await,
    ] {
        answer.expect_error(403, "forbidden");
    }
    let publisher = app.key_for("alice", "acme", &["events:publish"]).await;
    app.get("/api/event-types", &publisher)
        .await
        .expect_error(403, "forbidden");
}

async fn publishes_of_a_type_with_a_schema_are_checked_and_name_the_failing_path(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.key_for("alice", "acme", &[]).await;
    // Before it is defined, the type is unknown (as every unknown type was).
    publish(&app, &key, PAID, json!({"amount": 1}))
        .await
        .expect_error(422, "validation_error");
    define(
        &app,
        &key,
        json!({"name": PAID, "schema": invoice_schema()}),
    )
    .await;

    publish(
        &app,
        &key,
        PAID,
        json!({"amount": 12.5, "lines": [{"sku": "ABC-1"}]}),
    )
    .await
    .expect(202);
    let detail = publish(
        &app,
        &key,
        PAID,
        json!({"amount": 1, "lines": [{"sku": "ABC-1"}, {"sku": "abc"}]}),
    )
    .await
    .expect_error(422, "validation_error");
    assert!(detail.starts_with("data: at /lines/1/sku"), "{detail}");
    let detail = publish(&app, &key, PAID, json!({"amount": "12"}))
        .await
        .expect_error(422, "validation_error");
    assert!(detail.starts_with("data: at /amount"), "{detail}");
    let detail = publish(&app, &key, PAID, json!({}))
        .await
        .expect_error(422, "validation_error");
    assert!(detail.contains("amount"), "{detail}");

    // In a batch, the failing event is named.
    let detail = app
        .post(
            "/api/events/batch",
            &key,
            &json!({"events": [
                {"event_type": PAID, "data": {"amount": 1}},
                {"event_type": "task.failed", "data": {}},
                {"event_type": PAID, "data": {"amount": -1}}
            ]}),
        )
        .await
        .expect_error(422, "validation_error");
    assert!(detail.starts_with("events[2].data: at /amount"), "{detail}");

    // A changed schema applies to the next publish (the compiled one is kept per version).
    app.put(
        &format!("/api/event-types/{PAID}"),
        &key,
        &json!({"schema": {"type": "object", "required": ["currency"]}}),
    )
    .await
    .expect(200);
    publish(&app, &key, PAID, json!({"amount": 1}))
        .await
        .expect_error(422, "validation_error");
    publish(&app, &key, PAID, json!({"currency": "EUR"}))
        .await
        .expect(202);
    // The test endpoint sends what a publish of the type could carry.
    let receiver = Receiver::start().await;
    let id = webhook(
        &app,
        &key,
        json!({"url": receiver.url, "event_types": [PAID]}),
    )
    .await;
    let test = format!("/api/webhooks/outgoing/{id}/test");
    let detail = app
        .post(
            &test,
            &key,
            &json!({"event_type": PAID, "test_payload": {"amount": 1}}),
        )
        .await
        .expect_error(422, "validation_error");
    assert!(detail.starts_with("data: at /"), "{detail}");
    let sent = app
        .post(
            &test,
            &key,
            &json!({"event_type": PAID, "test_payload": {"currency": "EUR"}}),
        )
        .await
        .expect(200);
    assert_eq!(sent["success"], true);
    assert_eq!(
        receiver.wait_for(1, WAIT).await[0].header("x-webhook-event"),
        PAID
    );
    // A type without a schema takes any data.
    define(&app, &key, json!({"name": "crm.lead-created"})).await;
    publish(&app, &key, "crm.lead-created", json!([1, "two"]))
        .await
        .expect(202);
}

async fn wildcards_cover_custom_types_and_archiving_keeps_subscriptions(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.key_for("alice", "acme", &[]).await;
    let family = Receiver::start().await;
    let exact = Receiver::start().await;
    // Subscribing to a type nobody defined is refused, as before: a typo receives nothing.
    let detail = app
        .post(
            "/api/webhooks/outgoing",
            &key,
            &json!({"url": family.url, "event_types": ["task.failed", "billing.*"]}),
        )
        .await
        .expect_error(422, "validation_error");
    assert!(detail.starts_with("event_types[1]"), "{detail}");

    define(&app, &key, json!({"name": PAID})).await;
    let family_id = webhook(
        &app,
        &key,
        json!({"url": family.url, "event_types": ["billing.*"]}),
    )
    .await;
    let exact_id = webhook(&app, &key, json!({"url": exact.url, "event_types": [PAID]})).await;

    let published = publish(&app, &key, PAID, json!({"amount": 1}))
        .await
        .expect(202);
    assert_eq!(published["deliveries"], 2);
    for receiver in [&family, &exact] {
        let got = receiver.wait_for(1, WAIT).await;
        assert_eq!(got[0].header("x-webhook-event"), PAID);
        assert_eq!(got[0].json()["data"], json!({"amount": 1}));
    }

    // Archived: no new publishes, but the webhooks keep (and may re-save) their subscriptions.
    app.delete(&format!("/api/event-types/{PAID}"), &key)
        .await
        .expect(204);
    let detail = publish(&app, &key, PAID, json!({"amount": 2}))
        .await
        .expect_error(422, "validation_error");
    assert!(
        detail.starts_with("event_type: ") && detail.contains("archived"),
        "{detail}"
    );
    let hook = app
        .get(&format!("/api/webhooks/outgoing/{exact_id}"), &key)
        .await
        .expect(200);
    assert_eq!(hook["event_types"], json!([PAID]));
    app.put(
        &format!("/api/webhooks/outgoing/{family_id}"),
        &key,
        &json!({"event_types": ["billing.*"], "description": "still here"}),
    )
    .await
    .expect(200);
    // Restored, the same webhooks receive its events again.
    app.put(
        &format!("/api/event-types/{PAID}"),
        &key,
        &json!({"archived": false}),
    )
    .await
    .expect(200);
    publish(&app, &key, PAID, json!({"amount": 3}))
        .await
        .expect(202);
    for receiver in [&family, &exact] {
        let got = receiver.wait_for(2, WAIT).await;
        assert_eq!(got[1].json()["data"], json!({"amount": 3}));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        (family.count(), exact.count()),
        (2, 2),
        "the archived publish sent nothing"
    );
}

async fn a_company_sees_and_validates_only_its_own_types(backend: Backend) {
    let app = spawn_app(backend).await;
    let acme = app.key_for("alice", "acme", &[]).await;
    let acme_bob = app.key_for("bob", "acme", &[]).await;
    let globex = app.key_for("carol", "globex", &[]).await;
    define(
        &app,
        &acme,
        json!({"name": PAID, "schema": invoice_schema()}),
    )
    .await;
    let path = format!("/api/event-types/{PAID}");

    // Another company: not listed, not found, not publishable, not subscribable.
    assert!(
        !listed(&app, "/api/event-types", Some(&globex))
            .await
            .contains(&PAID.to_string())
    );
    assert!(
        !listed(&app, "/api/webhooks/event-types", Some(&globex))
            .await
            .contains(&PAID.to_string())
    );
    app.get(&path, &globex).await.expect_error(404, "not_found");
    app.put(&path, &globex, &json!({"description": "mine now"}))
        .await
        .expect_error(404, "not_found");
    app.delete(&path, &globex)
        .await
        .expect_error(404, "not_found");
    publish(&app, &globex, PAID, json!({"amount": 1}))
        .await
        .expect_error(422, "validation_error");
    let receiver = Receiver::start().await;
    app.post(
        "/api/webhooks/outgoing",
        &globex,
        &json!({"url": receiver.url, "event_types": ["billing.*"]}),
    )
    .await
    .expect_error(422, "validation_error");
    let untouched = app.get(&path, &acme).await.expect(200);
    assert_eq!(
        (untouched["version"].clone(), untouched["archived"].clone()),
        (json!(1), json!(false))
    );

    // The same name in another company is its own type: acme's schema does not check it.
    define(&app, &globex, json!({"name": PAID})).await;
    publish(&app, &globex, PAID, json!({"amount": "free"}))
        .await
        .expect(202);
    publish(&app, &acme, PAID, json!({"amount": "free"}))
        .await
        .expect_error(422, "validation_error");

    // Within the company, types are shared: another user sees, publishes and subscribes.
    let seen = app.get(&path, &acme_bob).await.expect(200);
    assert_eq!(seen["created_by"], "alice");
    webhook(
        &app,
        &acme_bob,
        json!({"url": receiver.url, "event_types": [PAID]}),
    )
    .await;
    publish(&app, &acme_bob, PAID, json!({"amount": 5}))
        .await
        .expect(202);
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got[0].json()["company_id"], "acme");
}

/// An `Idempotency-Key` retry answers what the first publish answered, even when the checks
/// would now refuse the publish (its type archived in between); a new publish is refused.
async fn a_retried_publish_gets_its_first_answer_after_its_type_is_archived(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.key_for("alice", "acme", &[]).await;
    define(&app, &key, json!({"name": PAID})).await;
    let send = |idempotency_key: &str| {
        let request = app
            .client
            .post(format!("{}/api/events", app.base))
            .bearer_auth(&key)
            .header("Idempotency-Key", idempotency_key)
            .json(&json!({"event_type": PAID, "data": {"amount": 1}}));
        crate::helpers::send(request)
    };
    let first = send("pay-1").await.expect(202);
    app.delete(&format!("/api/event-types/{PAID}"), &key)
        .await
        .expect(204);
    assert_eq!(send("pay-1").await.expect(202), first);
    let detail = send("pay-2").await.expect_error(422, "validation_error");
    assert!(detail.contains("archived"), "{detail}");
}
