use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, spawn_app, spawn_app_with};

both_backends!(
    spec_example_round_trips_with_defaults_and_aliases,
    update_changes_only_the_fields_sent,
    secrets_and_credential_headers_are_not_echoed,
    bad_input_is_a_clear_4xx_and_writes_nothing,
    private_targets_are_refused_unless_allowed,
    required_fields_cannot_be_cleared_with_null,
);

async fn required_fields_cannot_be_cleared_with_null(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let created = app
        .post(
            "/api/webhooks/outgoing",
            &key,
            &json!({"url": "https://e.com/h", "event_types": ["task.*"]}),
        )
        .await
        .expect(201);
    let path = format!("/api/webhooks/outgoing/{}", created["id"].as_str().unwrap());
    for field in [
        "url",
        "target_url",
        "event_types",
        "name",
        "is_active",
        "timeout",
    ] {
        let detail = app
            .put(&path, &key, &json!({ field: null }))
            .await
            .expect_error(422, "validation_error");
        assert!(detail.starts_with(field), "{field}: {detail}");
        assert!(detail.contains("may not be null"), "{detail}");
    }
    let kept = app.get(&path, &key).await.expect(200);
    assert_eq!(kept["url"], "https://e.com/h");
    assert_eq!(kept["event_types"], json!(["task.*"]));
    // Nullable fields still clear with null.
    let cleared = app
        .put(
            &path,
            &key,
            &json!({"description": null, "rate_limit": null}),
        )
        .await
        .expect(200);
    assert_eq!(cleared["rate_limit"], Value::Null);
    let incoming = app
        .post(
            "/api/webhooks/incoming",
            &key,
            &json!({"name": "in", "agent_id": "a"}),
        )
        .await
        .expect(201);
    let path = format!(
        "/api/webhooks/incoming/{}",
        incoming["id"].as_str().unwrap()
    );
    let detail = app
        .put(&path, &key, &json!({"name": null}))
        .await
        .expect_error(422, "validation_error");
    assert!(detail.starts_with("name"), "{detail}");
}

async fn spec_example_round_trips_with_defaults_and_aliases(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.key_for("user-7", "company-7", &[]).await;
    // The spec's "Create Outgoing Webhook" body, verbatim.
    let created = app
        .post(
            "/api/webhooks/outgoing",
            &key,
            &json!({
              "url": "https://example.com/webhook",
              "event_types": ["chat.message.received", "chat.response.sent"],
              "is_active": true,
              "description": "My webhook",
              "headers": {"X-Custom-Header": "value"},
              "secret": "webhook-secret",
              "agent_id": 1,
              "retry_count": 3,
              "retry_delay": 60
            }),
        )
        .await
        .expect(201);
    assert_eq!(
        created["secret"], "webhook-secret",
        "shown once, at creation"
    );
    assert_eq!(
        created["agent_id"], "1",
        "ids are strings; a number is kept as its text"
    );
    assert_eq!(created["user_id"], "user-7", "the owner, from the key");
    assert_eq!(created["company_id"], "company-7");
    assert_eq!(created["timeout"], 30);
    assert_eq!(created["target_url"], "https://example.com/webhook");
    assert_eq!(created["active"], true);
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));

    // The spec's SDK form: target_url, no event types, a secret.
    let sdk = app
        .post(
            "/api/webhooks/outgoing",
            &key,
            &json!({"name": "My Webhook", "target_url": "https://my-service.com/webhook",
                    "event_types": ["chat.completed", "task.completed"], "secret": "webhook-secret-123"}),
        )
        .await
        .expect(201);
    assert_eq!(sdk["url"], "https://my-service.com/webhook");
    let minimal = app
        .post(
            "/api/webhooks/outgoing",
            &key,
            &json!({"url": "https://x.example.com/h"}),
        )
        .await
        .expect(201);
    assert_eq!(minimal["event_types"], json!(["*"]));
    assert_eq!(
        (
            minimal["retry_count"].clone(),
            minimal["retry_delay"].clone()
        ),
        (json!(3), json!(60))
    );

    let listed = app.get("/api/webhooks/outgoing", &key).await.expect(200);
    let ids: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|h| &h["id"])
        .collect();
    assert_eq!(ids, vec![&created["id"], &sdk["id"], &minimal["id"]]);

    let path = format!("/api/webhooks/outgoing/{}", created["id"].as_str().unwrap());
    let fetched = app.get(&path, &key).await.expect(200);
    assert_eq!(fetched["event_types"], created["event_types"]);
    app.delete(&path, &key).await.expect(204);
    app.get(&path, &key).await.expect_error(404, "not_found");
    app.delete(&path, &key).await.expect_error(404, "not_found");
}

async fn update_changes_only_the_fields_sent(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let created = app
        .post(
            "/api/webhooks/outgoing",
            &key,
            &json!({"url": "https://example.com/h", "event_types": ["chat.*"], "description": "d",
                    "rate_limit": 10, "filters": {"agent_name": "production_agent"}}),
        )
        .await
        .expect(201);
    let path = format!("/api/webhooks/outgoing/{}", created["id"].as_str().unwrap());
    // The spec's update example.
    let updated = app
        .put(
            &path,
            &key,
            &json!({"event_types": ["agent.created", "agent.deleted"], "is_active": false}),
        )
        .await
        .expect(200);
    assert_eq!(
        updated["event_types"],
        json!(["agent.created", "agent.deleted"])
    );
    assert_eq!(updated["is_active"], false);
    assert_eq!(updated["description"], "d");
    assert_eq!(updated["rate_limit"], 10);
    assert_eq!(
        updated["filters"],
        json!({"agent_name": "production_agent"})
    );
    // The SDK's alias, and null clearing a nullable field.
    let updated = app
        .put(
            &path,
            &key,
            &json!({"active": true, "description": null, "rate_limit": null}),
        )
        .await
        .expect(200);
    assert_eq!(updated["is_active"], true);
    assert_eq!(updated["description"], Value::Null);
    assert_eq!(updated["rate_limit"], Value::Null);
    let fetched = app.get(&path, &key).await.expect(200);
    assert_eq!(fetched, updated);
    assert_ne!(fetched["updated_at"], created["updated_at"]);
}

async fn secrets_and_credential_headers_are_not_echoed(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let created = app
        .post(
            "/api/webhooks/outgoing",
            &key,
            &json!({"url": "https://api.github.com/repos/o/r/issues", "secret": "s3cret",
                    "headers": {"Authorization": "token ghp_abc", "Accept": "application/vnd.github.v3+json"}}),
        )
        .await
        .expect(201);
    assert_eq!(created["headers"]["Authorization"], "token ghp_abc");
    let path = format!("/api/webhooks/outgoing/{}", created["id"].as_str().unwrap());
    for shown in [
        app.get(&path, &key).await.expect(200),
        app.get("/api/webhooks/outgoing", &key).await.expect(200)[0].clone(),
    ] {
        assert!(shown.get("secret").is_none(), "{shown}");
        assert_eq!(shown["has_secret"], true);
        assert_eq!(shown["headers"]["Authorization"], "********");
        assert_eq!(shown["headers"]["Accept"], "application/vnd.github.v3+json");
    }
    // Sending back what was read keeps the real credential.
    let fetched = app.get(&path, &key).await.expect(200);
    app.put(&path, &key, &json!({"headers": fetched["headers"]}))
        .await
        .expect(200);
    let tenant = app.store.list_api_keys().await.unwrap()[0].tenant.clone();
    let stored = app
        .store
        .get_outgoing(&tenant, created["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(stored.settings.headers["Authorization"], "token ghp_abc");
    assert_eq!(stored.settings.secret.as_deref(), Some("s3cret"));
}

async fn bad_input_is_a_clear_4xx_and_writes_nothing(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.max_body_bytes = Some(4096)).await;
    let key = app.tenant_key().await;
    let post = |body: Value| {
        let app = &app;
        let key = key.clone();
        async move { app.post("/api/webhooks/outgoing", &key, &body).await }
    };
    let cases = [
        (json!({}), "url"),
        (json!({"url": "ftp://example.com/x"}), "url"),
        (json!({"url": "not a url"}), "url"),
        (
            json!({"url": "https://e.com", "event_types": ["chat.unknown"]}),
            "event_types[0]",
        ),
        (
            json!({"url": "https://e.com", "event_types": "chat.completed"}),
            "event_types",
        ),
        (
            json!({"url": "https://e.com", "retry_count": -1}),
            "retry_count",
        ),
        (
            json!({"url": "https://e.com", "retry_delay": -5}),
            "retry_delay",
        ),
        (
            json!({"url": "https://e.com", "timeout": "slow"}),
            "timeout",
        ),
        (
            json!({"url": "https://e.com", "headers": {"X-A": 1}}),
            "headers.X-A",
        ),
        (
            json!({"url": "https://e.com", "headers": {"X-Webhook-Signature": "forged"}}),
            "X-Webhook-Signature",
        ),
        (
            json!({"url": "https://e.com", "headers": {"X-Webhook-Custom": "mine"}}),
            "X-Webhook-Custom",
        ),
        (
            json!({"url": "https://e.com", "headers": {"webhook-version": "2"}}),
            "webhook-version",
        ),
        (
            json!({"url": "https://e.com", "is_active": "yes"}),
            "is_active",
        ),
        (json!([1, 2]), "body"),
    ];
    for (body, field) in cases {
        let detail = post(body.clone())
            .await
            .expect_error(422, "validation_error");
        assert!(detail.contains(field), "{body} → {detail}");
    }
    let detail = app
        .post_raw("/api/webhooks/outgoing", &key, "{\"url\": ")
        .await
        .expect_error(400, "invalid_json");
    assert!(detail.contains("JSON"), "{detail}");
    let big = json!({"url": "https://e.com", "description": "x".repeat(10_000)});
    app.post("/api/webhooks/outgoing", &key, &big)
        .await
        .expect_error(413, "payload_too_large");
    app.get("/api/webhooks/outgoing/does-not-exist", &key)
        .await
        .expect_error(404, "not_found");
    assert_eq!(
        app.get("/api/webhooks/outgoing", &key).await.expect(200),
        json!([])
    );
}

async fn private_targets_are_refused_unless_allowed(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    for url in [
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/x",
    ] {
        let detail = app
            .post("/api/webhooks/outgoing", &key, &json!({"url": url}))
            .await
            .expect_error(422, "validation_error");
        assert!(detail.starts_with("url:"), "{url} → {detail}");
    }
    // Allowed by the operator setting the tests run with (127.0.0.0/8).
    app.post(
        "/api/webhooks/outgoing",
        &key,
        &json!({"url": "http://127.0.0.1:9/x"}),
    )
    .await
    .expect(201);
    // A name that does not resolve yet is accepted; delivery checks it again.
    app.post(
        "/api/webhooks/outgoing",
        &key,
        &json!({"url": "https://not-yet.invalid/x"}),
    )
    .await
    .expect(201);
    // `localhost` is 127.0.0.1 and ::1; with only 127.0.0.0/8 allowed it is accepted, and
    // delivery reaches it over 127.0.0.1.
    let receiver = crate::receiver::Receiver::start().await;
    let url = receiver.url.replace("127.0.0.1", "localhost") + "/x";
    app.post(
        "/api/webhooks/outgoing",
        &key,
        &json!({"url": url, "event_types": ["task.completed"]}),
    )
    .await
    .expect(201);
    app.post(
        "/api/events",
        &key,
        &json!({"event_type": "task.completed", "data": {}}),
    )
    .await
    .expect(202);
    receiver
        .wait_for(1, std::time::Duration::from_secs(10))
        .await;
}
