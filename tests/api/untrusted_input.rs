//! Untrusted values at the door: U+0000 anywhere a request or a receiver's answer can put it,
//! malformed paths and query strings, IPv6 spellings of refused IPv4 targets, and credential
//! headers. Each answer is a 4xx in our error format or a faithful store, never a 500.

use std::time::{Duration, Instant};

use axum::{Router, http::StatusCode};
use hookd::domain::{log::REDACTED, signature::hex_hmac_sha256};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, send, spawn_app, spawn_app_with};
use crate::receiver::Receiver;
use crate::receiving::{create_hook, headers, logs, only_message, post_with};

both_backends!(
    nul_bytes_in_api_json_are_refused_naming_the_field,
    nul_bytes_in_path_and_query_are_refused_naming_the_parameter,
    nul_bytes_received_are_kept_in_the_message_and_replaced_in_the_log,
    nul_bytes_in_a_receivers_answer_are_replaced_in_the_attempt_log,
    bad_query_and_path_values_answer_in_the_json_error_format,
    ipv6_forms_of_refused_ipv4_targets_are_refused_at_save_and_at_connect,
    credential_and_signature_headers_are_hidden_from_logs_and_templates,
    nul_bytes_in_a_dashboard_form_are_shown_beside_the_field,
);

/// Generous: deliveries run in the background on a loaded machine.
const WAIT: Duration = Duration::from_secs(20);

/// Asserts a 422 in our format whose detail names `field`.
#[track_caller]
fn names_field(answer: crate::helpers::Answer, field: &str) {
    let detail = answer.expect_error(422, "validation_error");
    assert!(
        detail.starts_with(&format!("{field}: ")),
        "detail {detail:?} should name {field}"
    );
}

async fn nul_bytes_in_api_json_are_refused_naming_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let url = "http://127.0.0.1:9/hook";
    let outgoing = "/api/webhooks/outgoing";
    for (body, field) in [
        (json!({"url": url, "name": "a\u{0}b"}), "name"),
        (json!({"url": url, "secret": "s\u{0}"}), "secret"),
        (
            json!({"url": url, "headers": {"X-Foo": "a\u{0}"}}),
            "headers.X-Foo",
        ),
        (
            json!({"url": url, "event_types": ["*", "\u{0}"]}),
            "event_types[1]",
        ),
    ] {
        names_field(app.post(outgoing, &key, &body).await, field);
    }
    // A key is named where it stands.
    let body = json!({"url": url, "headers": {"X-\u{0}": "v"}});
    let detail = app
        .post(outgoing, &key, &body)
        .await
        .expect_error(422, "validation_error");
    assert!(detail.starts_with("headers.X-"), "{detail}");
    names_field(
        app.post("/api/agents", &key, &json!({"name": "x\u{0}"}))
            .await,
        "name",
    );
    names_field(
        app.post(
            "/api/webhooks/incoming",
            &key,
            &json!({"name": "n\u{0}", "agent_id": "a"}),
        )
        .await,
        "name",
    );
    names_field(
        app.post(
            "/api/events",
            &key,
            &json!({"event_type": "task.completed", "data": {"note": "\u{0}"}}),
        )
        .await,
        "data.note",
    );
    // Nothing was stored by any of them.
    let listed = app.get(outgoing, &key).await.expect(200);
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
}

async fn nul_bytes_in_path_and_query_are_refused_naming_the_parameter(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    names_field(app.get("/api/webhooks/outgoing/a%00b", &key).await, "id");
    names_field(app.get("/api/agents/x%00/messages", &key).await, "id");
    names_field(app.delete("/api/agents/x%00", &key).await, "id");
    let agent = app
        .post("/api/agents", &key, &json!({"name": "reader"}))
        .await
        .expect(201);
    let id = agent["id"].as_str().unwrap();
    names_field(
        app.get(&format!("/api/agents/{id}/messages?after=a%00"), &key)
            .await,
        "after",
    );
    names_field(
        app.get(&format!("/api/webhooks/{id}/logs?status=a%00b"), &key)
            .await,
        "status",
    );
    let receiving = app
        .client
        .post(format!("{}/webhook/t%00", app.base))
        .body("{}");
    names_field(send(receiving).await, "token");
}

async fn nul_bytes_received_are_kept_in_the_message_and_replaced_in_the_log(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let hook = create_hook(&app, &key, json!({"agent_id": "nul-text"})).await;
    post_with(&app, &hook, "text/plain", &b"a\x00b"[..], headers(&[]))
        .await
        .expect(202);
    assert_eq!(only_message(&app, &key, "nul-text").await, json!("a\u{0}b"));
    let entries = logs(&app, &hook).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].request_payload.as_deref(), Some("a\u{FFFD}b"));

    let hook = create_hook(&app, &key, json!({"agent_id": "nul-json"})).await;
    let body = r#"{"text": "a\u0000b", "k\u0000": 1}"#;
    post_with(&app, &hook, "application/json", body, headers(&[]))
        .await
        .expect(202);
    assert_eq!(
        only_message(&app, &key, "nul-json").await,
        json!({"text": "a\u{0}b", "k\u{0}": 1})
    );
    // JSON text keeps the escape, which any text column holds.
    assert_eq!(
        logs(&app, &hook).await[0].request_payload.as_deref(),
        Some(body)
    );
}

/// A receiver that answers every request 200 with `body`.
async fn answering(body: &'static [u8]) -> String {
    let app = Router::new().fallback(move || async move { (StatusCode::OK, body) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Creates an outgoing webhook to `url`; its id.
async fn webhook_to(app: &TestApp, key: &str, url: &str) -> String {
    let created = app
        .post("/api/webhooks/outgoing", key, &json!({"url": url}))
        .await
        .expect(201);
    created["id"].as_str().unwrap().to_string()
}

/// Publishes one event and waits for the first attempt's log entry at webhook `id`.
async fn publish_and_log(app: &TestApp, key: &str, id: &str) -> Vec<Value> {
    let event = json!({"event_type": "task.completed", "data": {}});
    app.post("/api/events", key, &event).await.expect(202);
    let deadline = Instant::now() + WAIT;
    loop {
        let entries = app
            .get(&format!("/api/webhooks/{id}/logs"), key)
            .await
            .expect(200);
        let entries = entries.as_array().unwrap().clone();
        if !entries.is_empty() {
            return entries;
        }
        assert!(Instant::now() < deadline, "no attempt logged in {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn nul_bytes_in_a_receivers_answer_are_replaced_in_the_attempt_log(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let url = answering(b"ok\x00done").await;
    let id = webhook_to(&app, &key, &url).await;
    let entries = publish_and_log(&app, &key, &id).await;
    assert_eq!(entries[0]["status"], "delivered", "{}", entries[0]);
    assert_eq!(entries[0]["response_body"], "ok\u{FFFD}done");
}

async fn bad_query_and_path_values_answer_in_the_json_error_format(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let id = webhook_to(&app, &key, "http://127.0.0.1:9/").await;
    let logs = format!("/api/webhooks/{id}/logs");
    for (query, field) in [
        ("limit=abc", "limit"),
        ("webhook_type=nope", "webhook_type"),
        ("limit=1&limit=2", "query"),
    ] {
        let answer = app.get(&format!("{logs}?{query}"), &key).await;
        assert_eq!(
            answer.headers["content-type"], "application/json",
            "{query}"
        );
        let detail = answer.expect_error(422, "validation_error");
        assert!(
            detail.starts_with(&format!("{field}: ")),
            "{query}: {detail}"
        );
        if query.contains('&') {
            assert!(detail.contains("limit"), "{detail}");
        }
    }
    names_field(app.get("/api/webhooks/outgoing/%FF%FE", &key).await, "id");
    let receiving = app
        .client
        .post(format!("{}/webhook/%FF%FE", app.base))
        .body("{}");
    names_field(send(receiving).await, "token");
    app.get("/api/no-such-route", &key)
        .await
        .expect_error(404, "not_found");
    app.delete("/api/webhooks/event-types", &key)
        .await
        .expect_error(405, "method_not_allowed");
}

async fn ipv6_forms_of_refused_ipv4_targets_are_refused_at_save_and_at_connect(backend: Backend) {
    let receiver = Receiver::start().await;
    let port = receiver.url.rsplit(':').next().unwrap().to_string();
    let translated = format!("http://[::ffff:0:127.0.0.1]:{port}/");
    // Save: nothing private is allowed on this node.
    let mut app = spawn_app_with(backend, |s| s.allowed_target_cidrs = Some(String::new())).await;
    let key = app.tenant_key().await;
    for url in [
        translated.as_str(),
        "http://[::ffff:0:a9fe:a9fe]/",
        "http://[64:ff9b::7f00:1]/",
        "http://[2002:a00:1::1]/",
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
    ] {
        let body = json!({"url": url});
        names_field(app.post("/api/webhooks/outgoing", &key, &body).await, "url");
        let agent = json!({"name": format!("a{}", url.len()), "endpoint": {"url": url}});
        names_field(app.post("/api/agents", &key, &agent).await, "endpoint.url");
    }
    // Connect: saved while the operator allowed loopback, delivered after that was withdrawn.
    app.restart(|s| s.allowed_target_cidrs = Some("127.0.0.0/8".into()))
        .await;
    let id = webhook_to(&app, &key, &translated).await;
    app.restart(|s| s.allowed_target_cidrs = Some(String::new()))
        .await;
    let entries = publish_and_log(&app, &key, &id).await;
    assert_eq!(entries[0]["status"], "failed");
    let error = entries[0]["error_message"].as_str().unwrap_or_default();
    assert!(error.contains("loopback"), "{error}");
    assert_eq!(receiver.count(), 0, "nothing reached the receiver");
}

async fn credential_and_signature_headers_are_hidden_from_logs_and_templates(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let hook = create_hook(
        &app,
        &key,
        json!({"agent_id": "heads", "transform_template": "{{ headers | tojson }}",
               "verification": {"type": "hmac_sha256", "secret": "s", "header": "X-Body-Check"}}),
    )
    .await;
    let body = r#"{"n": 1}"#;
    let mac = hex_hmac_sha256("s", body.as_bytes());
    let sent = [
        ("X-Body-Check", mac.as_str()),
        ("Set-Cookie", "sid=1"),
        ("X-Session-Id", "sess"),
        ("X-Credential", "cred"),
        ("X-Jwt", "eyJ"),
        ("X-Shopify-Hmac-Sha256", "mac"),
        ("X-Plain", "visible"),
    ];
    post_with(&app, &hook, "application/json", body, headers(&sent))
        .await
        .expect(202);
    let seen = only_message(&app, &key, "heads").await;
    let logged = logs(&app, &hook).await[0]
        .request_headers
        .to_map()
        .expect("headers");
    for (name, _) in &sent[..6] {
        let name = name.to_ascii_lowercase();
        assert_eq!(seen[&name], REDACTED, "template sees {name}: {seen}");
        assert_eq!(logged[&name], REDACTED, "log shows {name}");
    }
    assert_eq!(seen["x-plain"], "visible");
    assert_eq!(logged["x-plain"], "visible");
}

async fn nul_bytes_in_a_dashboard_form_are_shown_beside_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let signed_in = crate::dashboard::sign_in(&app, &key).await;
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap();
    let session = cookie.split(';').next().unwrap().to_string();
    let form = "name=a%00b&url=http%3A%2F%2F127.0.0.1%3A9%2F&event_types=*&is_active=on";
    let page = app
        .client
        .post(format!("{}/ui/outgoing", app.base))
        .header("cookie", session)
        .header("origin", &app.base)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("name-error") && html.contains("must not contain the NUL character"),
        "{html}"
    );
}
