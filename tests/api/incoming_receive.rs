//! Receiving URLs end to end: the spec's templates and payloads, access rules, limits, source
//! verification, dedup, routing and the refusals' log entries.

use std::time::{Duration, Instant};

use hookd::{
    app::Application,
    config::Config,
    domain::signature::{hex_hmac_sha256, standard_webhooks_signature},
};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with, test_settings};
use crate::receiving::{
    Hook, create_hook, headers, inbox, logs, logs_settled, only_message, post_json, post_with,
};

both_backends!(
    spec_send_data_example_is_accepted_after_a_durable_write,
    spec_crm_and_external_api_examples_render,
    spec_github_template_renders_with_contains_default_and_title,
    spec_multi_line_json_string_template_becomes_json,
    form_encoded_and_text_bodies_reach_templates,
    spec_curl_alias_paths_accept_and_log_redacted_headers,
    spec_curl_with_the_webhook_id_and_an_api_key,
    allowed_ips_by_cidr_v4_and_v6_and_spoofed_forwarded_for_is_ignored,
    rate_limit_defaults_to_100_per_minute_and_can_be_overridden,
    rate_limit_is_shared_across_nodes_through_redis,
    a_change_made_through_another_node_is_seen_by_the_next_request,
    each_verification_scheme_accepts_valid_and_refuses_tampered,
    repeated_delivery_id_answers_the_first_result,
    dedup_records_expire_with_the_logs,
    slack_url_verification_is_answered_once_signed,
    routing_rules_first_match_wins_with_the_webhook_agent_as_fallback,
    hostile_templates_are_stopped_quickly_and_logged,
    refused_requests_write_nothing_but_their_log_entry,
    a_flood_of_refusals_is_logged_sampled,
    inactive_unknown_and_oversized,
    preview_renders_a_sample_or_names_the_line,
);

async fn spec_send_data_example_is_accepted_after_a_durable_write(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let hook = create_hook(
        &app,
        &key,
        json!({"name": "External System Webhook", "agent_id": 1,
               "transform_template": "{{ data | tojson }}"}),
    )
    .await;
    let payload = json!({
        "message": "Data from external system",
        "timestamp": "2025-01-01T00:00:00Z",
        "custom_data": {"key": "value"}
    });
    let answer = post_json(&app, &hook, &payload).await.expect(202);
    assert_eq!(answer["status"], "accepted");
    let agent = app.get("/api/agents/1", &key).await.expect(200);
    assert_eq!(
        agent["name"], "1",
        "created on the fly, named by the reference"
    );
    assert_eq!(answer["agent_id"], agent["id"]);
    let messages = inbox(&app, &key, "1").await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["id"], answer["id"]);
    assert_eq!(messages[0]["content"], payload);
    assert_eq!(messages[0]["kind"], "message");
    assert_eq!(messages[0]["incoming_webhook_id"], hook.id.as_str());

    let entries = logs(&app, &hook).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].status, "accepted");
    assert_eq!(entries[0].response_status, Some(202));
    assert_eq!(
        serde_json::from_str::<Value>(entries[0].request_payload.as_deref().unwrap()).unwrap(),
        payload
    );
}

async fn spec_crm_and_external_api_examples_render(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let crm = create_hook(
        &app,
        &key,
        json!({
            "name": "CRM Lead Processor",
            "agent_id": "sales_agent",
            "description": "Process new leads from CRM system",
            "payload_transformation": {
                "message": "New lead: {{ lead_name }} from {{ company }}",
                "context": {
                    "email": "{{ email }}",
                    "phone": "{{ phone }}",
                    "source": "CRM System",
                    "priority": "{{ priority | default('medium') }}"
                }
            }
        }),
    )
    .await;
    post_json(
        &app,
        &crm,
        &json!({"lead_name": "Ada Lovelace", "company": "Analytical Engines",
                "email": "ada@example.com", "phone": "+44 20 0000"}),
    )
    .await
    .expect(202);
    assert_eq!(
        only_message(&app, &key, "sales_agent").await,
        json!({
            "message": "New lead: Ada Lovelace from Analytical Engines",
            "context": {"email": "ada@example.com", "phone": "+44 20 0000",
                        "source": "CRM System", "priority": "medium"}
        })
    );

    let api = create_hook(
        &app,
        &key,
        json!({
            "name": "API Data Processor",
            "agent_id": "data_agent",
            "payload_transformation": {
                "message": "Process this data: {{ data | tojson }}",
                "metadata": {
                    "source": "{{ source | default('external_api') }}",
                    "timestamp": "{{ timestamp }}",
                    "processed": false
                }
            }
        }),
    )
    .await;
    post_json(
        &app,
        &api,
        &json!({"readings": [1, 2], "timestamp": "2025-01-01T00:00:00Z"}),
    )
    .await
    .expect(202);
    assert_eq!(
        only_message(&app, &key, "data_agent").await,
        json!({
            "message": r#"Process this data: {"readings":[1,2],"timestamp":"2025-01-01T00:00:00Z"}"#,
            "metadata": {"source": "external_api", "timestamp": "2025-01-01T00:00:00Z",
                         "processed": false}
        })
    );
}

async fn spec_github_template_renders_with_contains_default_and_title(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let hook = create_hook(
        &app,
        &key,
        json!({
            "agent_id": "github_agent",
            "transform_template": {
                "message": "{% if action == 'create' %}New {{ object_type }}: {{ object_name }}{% else %}{{ action | title }} {{ object_type }}: {{ object_name }}{% endif %}",
                "metadata": {
                    "source": "github",
                    "timestamp": "{{ timestamp }}",
                    "priority": "{% if object_type == 'issue' and labels contains 'urgent' %}high{% else %}normal{% endif %}",
                    "assignee": "{{ assignee.login | default('unassigned') }}"
                },
                "context": {
                    "repository": "{{ repository.full_name }}",
                    "branch": "{{ ref | default('main') }}",
                    "commit": "{{ head_commit.id | default('unknown') }}"
                }
            }
        }),
    )
    .await;
    post_json(
        &app,
        &hook,
        &json!({"action": "create", "object_type": "issue", "object_name": "Crash on start",
                "timestamp": "2025-01-01T00:00:00Z", "labels": ["bug", "urgent"],
                "repository": {"full_name": "acme/app"}}),
    )
    .await
    .expect(202);
    post_json(
        &app,
        &hook,
        &json!({"action": "closed", "object_type": "issue", "object_name": "Crash on start",
                "timestamp": "2025-01-02T00:00:00Z", "labels": ["bug"],
                "assignee": {"login": "octocat"}, "ref": "dev", "head_commit": {"id": "abc123"},
                "repository": {"full_name": "acme/app"}}),
    )
    .await
    .expect(202);
    let messages = inbox(&app, &key, "github_agent").await;
    assert_eq!(
        messages[0]["content"],
        json!({
            "message": "New issue: Crash on start",
            "metadata": {"source": "github", "timestamp": "2025-01-01T00:00:00Z",
                         "priority": "high", "assignee": "unassigned"},
            "context": {"repository": "acme/app", "branch": "main", "commit": "unknown"}
        })
    );
    assert_eq!(
        messages[1]["content"],
        json!({
            "message": "Closed issue: Crash on start",
            "metadata": {"source": "github", "timestamp": "2025-01-02T00:00:00Z",
                         "priority": "normal", "assignee": "octocat"},
            "context": {"repository": "acme/app", "branch": "dev", "commit": "abc123"}
        })
    );
}

async fn spec_multi_line_json_string_template_becomes_json(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let hook = create_hook(
        &app,
        &key,
        json!({
            "agent_name": "chat_agent",
            "transform_template": "{\n    \"message\": \"{{ data.text }}\",\n    \"user\": \"{{ data.user.name }}\",\n    \"timestamp\": \"{{ data.created_at }}\"\n  }"
        }),
    )
    .await;
    post_json(
        &app,
        &hook,
        &json!({"text": "hello", "user": {"name": "ada"}, "created_at": "2025-01-01T00:00:00Z"}),
    )
    .await
    .expect(202);
    assert_eq!(
        only_message(&app, &key, "chat_agent").await,
        json!({"message": "hello", "user": "ada", "timestamp": "2025-01-01T00:00:00Z"})
    );
    assert_eq!(logs_settled(&app, &hook, 1).await[0].error_message, None);
    // A quote too few: kept as the string it is, and the log entry says why.
    let sloppy = create_hook(
        &app,
        &key,
        json!({"agent_name": "sloppy", "transform_template": "{\"message\": {{ data.text }}}"}),
    )
    .await;
    post_json(&app, &sloppy, &json!({"text": "hello"}))
        .await
        .expect(202);
    assert_eq!(
        only_message(&app, &key, "sloppy").await,
        json!("{\"message\": hello}")
    );
    let note = logs_settled(&app, &sloppy, 1).await[0]
        .error_message
        .clone();
    let note = note.expect("a note on the log entry");
    assert!(note.contains("not valid JSON"), "{note}");
}

async fn form_encoded_and_text_bodies_reach_templates(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    // As a Slack slash command posts.
    let hook = create_hook(
        &app,
        &key,
        json!({"agent_id": "slack_agent",
               "payload_transformation": {"message": "{{ user_name }} ran {{ command }} {{ text }}",
                                          "via": "{{ query.source | default('none') }}"}}),
    )
    .await;
    let request = app
        .client
        .post(format!("{}/webhook/{}?source=slack", app.base, hook.token))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=x&user_name=ada&command=%2Fweather&text=94070");
    crate::helpers::send(request).await.expect(202);
    assert_eq!(
        only_message(&app, &key, "slack_agent").await,
        json!({"message": "ada ran /weather 94070", "via": "slack"})
    );

    let text = create_hook(
        &app,
        &key,
        json!({"agent_id": "text_agent", "transform_template": "got: {{ data }}"}),
    )
    .await;
    post_with(&app, &text, "text/plain", "plain words", headers(&[]))
        .await
        .expect(202);
    assert_eq!(
        only_message(&app, &key, "text_agent").await,
        json!("got: plain words")
    );
    // `curl -d '{…}'` labels JSON as a form: an object or array body is JSON whatever its type.
    let curl = create_hook(&app, &key, json!({"agent_id": "curl_agent"})).await;
    post_with(
        &app,
        &curl,
        "application/x-www-form-urlencoded",
        r#"{"hello":"x"}"#,
        headers(&[]),
    )
    .await
    .expect(202);
    assert_eq!(
        only_message(&app, &key, "curl_agent").await,
        json!({"hello": "x"})
    );
    // JSON that does not parse, sent as JSON, is a 400.
    post_with(&app, &text, "application/json", "{oops", headers(&[]))
        .await
        .expect_error(400, "invalid_json");
}

async fn spec_curl_with_the_webhook_id_and_an_api_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.key_for("user-1", "company-1", &[]).await;
    // The spec's body has a `data` of its own: `data.key` reaches it, `data` is still the body.
    let hook = create_hook(
        &app,
        &key,
        json!({"agent_id": "a",
               "payload_transformation": {"key": "{{ data.key }}", "body": "{{ data | tojson }}"}}),
    )
    .await;
    let receive_only = app
        .key_for("user-1", "company-1", &["webhooks:receive"])
        .await;
    let read_only = app.key_for("user-1", "company-1", &["webhooks:read"]).await;
    let stranger = app.key_for("user-2", "company-2", &[]).await;
    let send = |prefix: &str, authorization: Option<String>| {
        let mut request = app
            .client
            .post(format!("{}{prefix}/{}", app.base, hook.id))
            .json(&json!({"message": "Test message", "data": {"key": "value"}}));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        crate::helpers::send(request)
    };
    // The spec's curl, and AGiXT's path, with a key of the webhook's tenant.
    send("/api/webhook", Some(format!("Bearer {key}")))
        .await
        .expect(202);
    send("/v1/webhook", Some(format!("Bearer {receive_only}")))
        .await
        .expect(202);
    let messages = inbox(&app, &key, "a").await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["content"]["key"], "value");
    let body: Value =
        serde_json::from_str(messages[0]["content"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"message": "Test message", "data": {"key": "value"}})
    );
    let detail = send("/api/webhook", Some(format!("Bearer {read_only}")))
        .await
        .expect_error(403, "forbidden");
    assert!(detail.contains("webhooks:receive"), "{detail}");
    send("/api/webhook", Some(format!("Bearer {stranger}")))
        .await
        .expect_error(404, "not_found");
    let detail = send("/api/webhook", None)
        .await
        .expect_error(401, "unauthorized");
    assert!(detail.contains("Authorization: Bearer"), "{detail}");
    let detail = send("/api/webhook", Some(key.clone()))
        .await
        .expect_error(401, "unauthorized");
    assert!(detail.contains("`Bearer ` prefix is missing"), "{detail}");
    assert_eq!(
        inbox(&app, &key, "a").await.len(),
        2,
        "refusals route nothing"
    );
}

async fn spec_curl_alias_paths_accept_and_log_redacted_headers(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let hook = create_hook(&app, &key, json!({"agent_id": "a"})).await;
    for prefix in ["/api/webhook", "/v1/webhook"] {
        let request = app
            .client
            .post(format!("{}{prefix}/{}", app.base, hook.token))
            .header("authorization", "Bearer your-api-key")
            .json(&json!({"message": "Test message", "data": {"key": "value"}}));
        crate::helpers::send(request).await.expect(202);
    }
    assert_eq!(inbox(&app, &key, "a").await.len(), 2);
    let entries = logs(&app, &hook).await;
    let logged = entries[0].request_headers.to_map().expect("headers");
    assert_eq!(logged["authorization"], "********");
}

async fn allowed_ips_by_cidr_v4_and_v6_and_spoofed_forwarded_for_is_ignored(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let elsewhere = create_hook(
        &app,
        &key,
        json!({"agent_id": "secure_agent", "allowed_ips": ["192.168.1.100", "10.0.0.0/8", "203.0.113.0/24"]}),
    )
    .await;
    let detail = post_json(&app, &elsewhere, &json!({}))
        .await
        .expect_error(403, "forbidden");
    assert!(detail.contains("127.0.0.1"), "{detail}");
    // Without a trusted proxy, X-Forwarded-For is anyone's to write: ignored.
    post_with(
        &app,
        &elsewhere,
        "application/json",
        "{}",
        headers(&[("x-forwarded-for", "10.1.2.3")]),
    )
    .await
    .expect_error(403, "forbidden");
    let loopback = create_hook(
        &app,
        &key,
        json!({"agent_id": "secure_agent", "allowed_ips": ["127.0.0.0/8", "2001:db8::/32"]}),
    )
    .await;
    post_json(&app, &loopback, &json!({})).await.expect(202);
    assert_eq!(inbox(&app, &key, "secure_agent").await.len(), 1);

    // Behind a trusted proxy (127.0.0.0/8), the forwarded client address decides, v4 and v6.
    let proxied = spawn_app_with(backend, |s| s.trusted_proxies = Some("127.0.0.0/8".into())).await;
    let key = proxied.tenant_key().await;
    let hook = create_hook(
        &proxied,
        &key,
        json!({"agent_id": "b", "allowed_ips": ["10.0.0.0/8", "2001:db8::/32"]}),
    )
    .await;
    for (forwarded, status) in [
        ("10.1.2.3", 202),
        ("2001:db8::5", 202),
        ("11.0.0.1", 403),
        ("2001:db9::1", 403),
        // The proxy appends the real client: a spoofed left part does not help.
        ("10.1.2.3, 198.51.100.7", 403),
    ] {
        let answer = post_with(
            &proxied,
            &hook,
            "application/json",
            "{}",
            headers(&[("x-forwarded-for", forwarded)]),
        )
        .await;
        assert_eq!(
            answer.status.as_u16(),
            status,
            "{forwarded}: {}",
            answer.body
        );
    }
}

/// Sends `n` requests, 10 at a time, and returns their statuses.
async fn burst(app: &TestApp, hook: &Hook, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..n.div_ceil(10) {
        let bodies: Vec<Value> = (0..10.min(n - statuses.len()))
            .map(|i| json!({"i": i}))
            .collect();
        let batch = bodies.iter().map(|body| post_json(app, hook, body));
        statuses.extend(
            futures_util::future::join_all(batch)
                .await
                .into_iter()
                .map(|a| a.status.as_u16()),
        );
    }
    statuses
}

async fn rate_limit_defaults_to_100_per_minute_and_can_be_overridden(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let default = create_hook(&app, &key, json!({"agent_id": "a"})).await;
    let started = Instant::now();
    let statuses = burst(&app, &default, 100).await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    // After the burst of 100, one request per 0.6 s is allowed: the few that the time taken
    // so far earned, then a refusal.
    let mut extra = 0;
    let refused = loop {
        let answer = post_json(&app, &default, &json!({})).await;
        if answer.status.as_u16() != 202 {
            break answer;
        }
        extra += 1;
    };
    assert!(
        extra as f64 <= started.elapsed().as_secs_f64() / 0.6 + 1.0,
        "{extra}"
    );
    assert_eq!(refused.status.as_u16(), 429);
    assert_eq!(refused.headers["retry-after"], "1", "one request per 0.6 s");

    let low = create_hook(&app, &key, json!({"agent_id": "a", "rate_limit": 3})).await;
    assert_eq!(burst(&app, &low, 3).await, [202, 202, 202]);
    let refused = post_json(&app, &low, &json!({})).await;
    assert_eq!(refused.body["error"], "rate_limited");
    assert_eq!(refused.headers["retry-after"], "20");
    // Raising the limit takes effect at once.
    app.put(
        &format!("/api/webhooks/incoming/{}", low.id),
        &key,
        &json!({"rate_limit": 1000}),
    )
    .await
    .expect(200);
    post_json(&app, &low, &json!({})).await.expect(202);
}

/// A node keeps the webhooks it received for (`store::incoming::AddressedCache`); what another
/// node changes meanwhile (the webhook, its agent) must reach the very next request.
async fn a_change_made_through_another_node_is_seen_by_the_next_request(backend: Backend) {
    let first = spawn_app(backend).await;
    let node = Application::build(Config::resolve(test_settings(&first.database_url)).unwrap())
        .await
        .unwrap();
    let second = format!("http://{}", node.local_addr());
    tokio::spawn(node.run(std::future::pending()));
    let key = first.tenant_key().await;
    let post = |hook: &Hook, body: Value| {
        let url = format!("{second}/webhook/{}", hook.token);
        crate::helpers::send(first.client.post(url).json(&body))
    };
    let hook = create_hook(
        &first,
        &key,
        json!({"agent_id": "a", "transform_template": "{\"v\": 1, \"n\": {{ n }}}"}),
    )
    .await;
    post(&hook, json!({"n": 1})).await.expect(202);
    let path = format!("/api/webhooks/incoming/{}", hook.id);

    first
        .put(&path, &key, &json!({"is_active": false}))
        .await
        .expect(200);
    let refused = post(&hook, json!({"n": 2})).await;
    assert_ne!(refused.status.as_u16(), 202, "{:?}", refused.body);

    let changed = json!({"is_active": true, "transform_template": "{\"v\": 2, \"n\": {{ n }}}"});
    first.put(&path, &key, &changed).await.expect(200);
    post(&hook, json!({"n": 3})).await.expect(202);
    let contents: Vec<Value> = (inbox(&first, &key, "a").await.iter())
        .map(|message| message["content"].clone())
        .collect();
    assert_eq!(contents, [json!({"v": 1, "n": 1}), json!({"v": 2, "n": 3})]);

    // The agent the webhook falls back to is deleted: the next request makes a new one.
    let agent = first.get("/api/agents/a", &key).await.expect(200);
    let old_id = agent["id"].as_str().unwrap().to_string();
    (first.delete(&format!("/api/agents/{old_id}"), &key).await).expect(204);
    let answer = post(&hook, json!({"n": 4})).await.expect(202);
    assert_ne!(answer["agent_id"], json!(old_id));
    let messages = inbox(&first, &key, "a").await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["content"], json!({"v": 2, "n": 4}));
}

async fn rate_limit_is_shared_across_nodes_through_redis(backend: Backend) {
    const REDIS: &str = "redis://127.0.0.1:6379";
    if tokio::net::TcpStream::connect("127.0.0.1:6379")
        .await
        .is_err()
    {
        eprintln!("SKIPPED: no Redis at 127.0.0.1:6379");
        return;
    }
    let first = spawn_app_with(backend, |s| s.redis_url = Some(REDIS.into())).await;
    // A second node on the same store and the same Redis.
    let mut settings = test_settings(&first.database_url);
    settings.redis_url = Some(REDIS.into());
    let node = Application::build(Config::resolve(settings).unwrap())
        .await
        .unwrap();
    let second = format!("http://{}", node.local_addr());
    tokio::spawn(node.run(std::future::pending()));

    let key = first.tenant_key().await;
    // Webhook ids are fresh UUIDs, so their Redis keys are unique to this test.
    let hook = create_hook(&first, &key, json!({"agent_id": "a", "rate_limit": 4})).await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let base = if i % 2 == 0 { &first.base } else { &second };
        let answer = crate::helpers::send(
            first
                .client
                .post(format!("{base}/webhook/{}", hook.token))
                .json(&json!({"i": i})),
        )
        .await;
        statuses.push(answer.status.as_u16());
    }
    assert_eq!(statuses, [202, 202, 202, 202, 429, 429]);
}

async fn each_verification_scheme_accepts_valid_and_refuses_tampered(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let body = r#"{"action":"opened","number":1}"#;
    let tampered = r#"{"action":"opened","number":2}"#;
    let now = hookd::domain::time::now_ms() / 1000;
    let ts = now.to_string();

    let secret = "It's a Secret to Everybody";
    let github = create_hook(
        &app,
        &key,
        json!({"agent_id": "a", "verification": {"type": "github", "secret": secret}}),
    )
    .await;
    let sig = format!("sha256={}", hex_hmac_sha256(secret, body.as_bytes()));
    let h = headers(&[("x-hub-signature-256", &sig)]);
    post_with(&app, &github, "application/json", body, h.clone())
        .await
        .expect(202);
    post_with(&app, &github, "application/json", tampered, h)
        .await
        .expect_error(401, "invalid_signature");
    post_with(&app, &github, "application/json", body, headers(&[]))
        .await
        .expect_error(401, "invalid_signature");

    let stripe = create_hook(
        &app,
        &key,
        json!({"agent_id": "a", "verification": {"type": "stripe", "secret": "whsec_test"}}),
    )
    .await;
    let v1 = hex_hmac_sha256("whsec_test", format!("{ts}.{body}").as_bytes());
    let h = headers(&[("stripe-signature", &format!("t={ts},v1={v1}"))]);
    post_with(&app, &stripe, "application/json", body, h.clone())
        .await
        .expect(202);
    post_with(&app, &stripe, "application/json", tampered, h)
        .await
        .expect_error(401, "invalid_signature");
    let old = (now - 600).to_string();
    let v1 = hex_hmac_sha256("whsec_test", format!("{old}.{body}").as_bytes());
    let detail = post_with(
        &app,
        &stripe,
        "application/json",
        body,
        headers(&[("stripe-signature", &format!("t={old},v1={v1}"))]),
    )
    .await
    .expect_error(401, "invalid_signature");
    assert!(detail.contains("tolerance"), "{detail}");

    let slack = create_hook(
        &app,
        &key,
        json!({"agent_id": "a", "verification": {"type": "slack", "secret": "8f742231b10e8888abcd99yyyzzz85a5"}}),
    )
    .await;
    let form = "token=x&team_id=T1&command=%2Fweather&text=94070";
    let sig = format!(
        "v0={}",
        hex_hmac_sha256(
            "8f742231b10e8888abcd99yyyzzz85a5",
            format!("v0:{ts}:{form}").as_bytes()
        )
    );
    let h = headers(&[
        ("x-slack-request-timestamp", &ts),
        ("x-slack-signature", &sig),
    ]);
    let form_type = "application/x-www-form-urlencoded";
    post_with(&app, &slack, form_type, form, h.clone())
        .await
        .expect(202);
    post_with(&app, &slack, form_type, "token=x&text=evil", h)
        .await
        .expect_error(401, "invalid_signature");

    let standard = create_hook(
        &app,
        &key,
        json!({"agent_id": "a", "verification": {"type": "standard_webhooks",
               "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}),
    )
    .await;
    let sig = standard_webhooks_signature(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_1",
        now,
        body.as_bytes(),
    );
    let h = headers(&[
        ("webhook-id", "msg_1"),
        ("webhook-timestamp", &ts),
        ("webhook-signature", &sig),
    ]);
    post_with(&app, &standard, "application/json", body, h.clone())
        .await
        .expect(202);
    post_with(&app, &standard, "application/json", tampered, h)
        .await
        .expect_error(401, "invalid_signature");

    let generic = create_hook(
        &app,
        &key,
        json!({"agent_id": "a", "verification": {"type": "hmac_sha256", "secret": "s3",
               "header": "X-Signature", "prefix": "sha256="}}),
    )
    .await;
    let sig = format!("sha256={}", hex_hmac_sha256("s3", body.as_bytes()));
    let h = headers(&[("x-signature", &sig)]);
    post_with(&app, &generic, "application/json", body, h.clone())
        .await
        .expect(202);
    post_with(&app, &generic, "application/json", tampered, h)
        .await
        .expect_error(401, "invalid_signature");

    assert_eq!(
        inbox(&app, &key, "a").await.len(),
        5,
        "one per valid request"
    );
    // The setting is shown without its secret; sent back as shown, the secret is kept.
    let path = format!("/api/webhooks/incoming/{}", github.id);
    let shown = app.get(&path, &key).await.expect(200);
    assert_eq!(
        shown["verification"],
        json!({"type": "github", "secret_set": true})
    );
    app.put(&path, &key, &json!({"verification": shown["verification"]}))
        .await
        .expect(200);
    let sig = format!("sha256={}", hex_hmac_sha256(secret, body.as_bytes()));
    post_with(
        &app,
        &github,
        "application/json",
        body,
        headers(&[("x-hub-signature-256", &sig)]),
    )
    .await
    .expect(202);
    // Bad settings are refused at save.
    let detail = app
        .post(
            "/api/webhooks/incoming",
            &key,
            &json!({"name": "n", "agent_id": "a", "verification": {"type": "github", "secret": ""}}),
        )
        .await
        .expect_error(422, "validation_error");
    assert!(detail.starts_with("verification"), "{detail}");
}

async fn repeated_delivery_id_answers_the_first_result(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let hook = create_hook(
        &app,
        &key,
        json!({"agent_id": "a", "dedup_header": "X-GitHub-Delivery"}),
    )
    .await;
    let first = post_with(
        &app,
        &hook,
        "application/json",
        r#"{"n":1}"#,
        headers(&[("x-github-delivery", "d-1")]),
    )
    .await
    .expect(202);
    let again = post_with(
        &app,
        &hook,
        "application/json",
        r#"{"n":1}"#,
        headers(&[("x-github-delivery", "d-1")]),
    )
    .await
    .expect(200);
    assert_eq!(again, first);
    post_with(
        &app,
        &hook,
        "application/json",
        r#"{"n":2}"#,
        headers(&[("x-github-delivery", "d-2")]),
    )
    .await
    .expect(202);
    post_json(&app, &hook, &json!({"n": 3})).await.expect(202);
    assert_eq!(inbox(&app, &key, "a").await.len(), 3);
    assert_eq!(
        logs(&app, &hook).await.len(),
        4,
        "the duplicate is logged too"
    );
}

async fn dedup_records_expire_with_the_logs(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let hook = create_hook(
        &app,
        &key,
        json!({"agent_id": "a", "dedup_header": "webhook-id"}),
    )
    .await;
    let once = || {
        post_with(
            &app,
            &hook,
            "application/json",
            "{}",
            headers(&[("webhook-id", "msg_1")]),
        )
    };
    once().await.expect(202);
    once().await.expect(200);
    // What housekeeping runs once the retention period has passed.
    let later = hookd::domain::time::now_ms() + 1;
    app.store.prune_finished_work(later).await.unwrap();
    once().await.expect(202);
    assert_eq!(inbox(&app, &key, "a").await.len(), 2);
}

async fn slack_url_verification_is_answered_once_signed(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let secret = "8f742231b10e8888abcd99yyyzzz85a5";
    let hook = create_hook(
        &app,
        &key,
        json!({"agent_id": "a", "verification": {"type": "slack", "secret": secret}}),
    )
    .await;
    let body = r#"{"token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let ts = (hookd::domain::time::now_ms() / 1000).to_string();
    let sig = format!(
        "v0={}",
        hex_hmac_sha256(secret, format!("v0:{ts}:{body}").as_bytes())
    );
    let answer = post_with(
        &app,
        &hook,
        "application/json",
        body,
        headers(&[
            ("x-slack-request-timestamp", &ts),
            ("x-slack-signature", &sig),
        ]),
    )
    .await
    .expect(200);
    assert_eq!(
        answer,
        json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );
    // Not routed: the handshake is not a message.
    assert!(inbox(&app, &key, "a").await.is_empty());
    // Unsigned, it is refused like any other request.
    post_with(&app, &hook, "application/json", body, headers(&[]))
        .await
        .expect_error(401, "invalid_signature");
}

async fn routing_rules_first_match_wins_with_the_webhook_agent_as_fallback(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let hook = create_hook(
        &app,
        &key,
        json!({
            "agent_id": "triage",
            "routes": [
                {"when": "labels contains 'urgent'", "agent_id": "oncall"},
                {"when": "'billing' in labels or data.amount > 100", "agent_name": "finance"},
                {"when": "labels contains 'urgent'", "agent_id": "never"}
            ]
        }),
    )
    .await;
    for payload in [
        json!({"labels": ["urgent", "billing"]}),
        json!({"labels": ["billing"]}),
        json!({"labels": [], "amount": 500}),
        json!({"labels": ["question"]}),
        json!("just text"),
    ] {
        post_json(&app, &hook, &payload).await.expect(202);
    }
    assert_eq!(inbox(&app, &key, "oncall").await.len(), 1);
    assert_eq!(inbox(&app, &key, "finance").await.len(), 2);
    assert_eq!(inbox(&app, &key, "triage").await.len(), 2);
    // Agents named by rules exist as soon as the webhook is saved.
    app.get("/api/agents/never", &key).await.expect(200);

    let detail = app
        .post(
            "/api/webhooks/incoming",
            &key,
            &json!({"name": "n", "agent_id": "a", "routes": [{"when": "a ==", "agent_id": "b"}]}),
        )
        .await
        .expect_error(422, "validation_error");
    assert!(detail.starts_with("routes[0].when: line 1"), "{detail}");
    let detail = app
        .post(
            "/api/webhooks/incoming",
            &key,
            &json!({"name": "n", "agent_id": "a", "routes": [{"when": "true"}]}),
        )
        .await
        .expect_error(422, "validation_error");
    assert!(detail.starts_with("routes[0].agent_id"), "{detail}");
}

async fn hostile_templates_are_stopped_quickly_and_logged(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    for template in [
        "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
        "{{ 'x' * 100000000 }}",
        "{% for a in range(5000) %}{{ data | tojson }}{% endfor %}",
    ] {
        let hook = create_hook(
            &app,
            &key,
            json!({"agent_id": "victim", "transform_template": template}),
        )
        .await;
        let started = Instant::now();
        let detail = post_json(&app, &hook, &json!({"pad": "y".repeat(200)}))
            .await
            .expect_error(422, "validation_error");
        assert!(started.elapsed() < Duration::from_secs(2), "{template}");
        assert!(detail.starts_with("transform_template"), "{detail}");
        let entries = logs_settled(&app, &hook, 1).await;
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].response_status, Some(422));
        assert!(
            entries[0]
                .error_message
                .as_deref()
                .unwrap()
                .contains("transform_template")
        );
    }
    assert!(inbox(&app, &key, "victim").await.is_empty());
}

async fn refused_requests_write_nothing_but_their_log_entry(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let hook = create_hook(
        &app,
        &key,
        json!({"agent_id": "a", "dedup_header": "webhook-id", "allowed_ips": ["127.0.0.1"],
               "verification": {"type": "github", "secret": "s"}}),
    )
    .await;
    post_with(
        &app,
        &hook,
        "application/json",
        "{}",
        headers(&[("webhook-id", "x"), ("x-hub-signature-256", "sha256=00")]),
    )
    .await
    .expect_error(401, "invalid_signature");
    let entries = logs_settled(&app, &hook, 1).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].status, "rejected");
    let logged = entries[0].request_headers.to_map().expect("headers");
    assert_eq!(logged["x-hub-signature-256"], "********");
    assert!(inbox(&app, &key, "a").await.is_empty());
    // The delivery id was not remembered: a valid request with it is processed.
    let sig = format!("sha256={}", hex_hmac_sha256("s", b"{}"));
    post_with(
        &app,
        &hook,
        "application/json",
        "{}",
        headers(&[("webhook-id", "x"), ("x-hub-signature-256", &sig)]),
    )
    .await
    .expect(202);
    let totals = app.store.webhook_totals(&hook.id).await.unwrap();
    assert_eq!((totals.total, totals.succeeded, totals.failed), (2, 1, 1));
}

async fn a_flood_of_refusals_is_logged_sampled(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let hook = create_hook(&app, &key, json!({"agent_id": "a", "rate_limit": 1})).await;
    post_json(&app, &hook, &json!({})).await.expect(202);
    let started = Instant::now();
    let statuses = burst(&app, &hook, 50).await;
    assert!(statuses.iter().all(|s| *s == 429));
    // The sampler buckets by wall-clock second, so a burst lasting under d seconds can touch
    // floor(d) + 2 buckets when it straddles a boundary.
    let buckets = started.elapsed().as_secs() as usize + 2;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // One more refusal, in a later second, carries the count of those left out.
    post_json(&app, &hook, &json!({})).await.expect(429);
    // Refusals are logged in the background: wait until every one is accounted for.
    let (mut written, mut accounted) = (0, 0);
    for _ in 0..100 {
        let entries = logs(&app, &hook).await;
        let refused: Vec<_> = entries.iter().filter(|e| e.status == "rejected").collect();
        let suppressed: usize = refused
            .iter()
            .filter_map(|e| {
                let m = e.error_message.as_deref()?;
                let (_, rest) = m.split_once('(')?;
                rest.split_whitespace().next()?.parse::<usize>().ok()
            })
            .sum();
        (written, accounted) = (refused.len(), suppressed + refused.len());
        if accounted == 51 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(accounted, 51, "every refusal accounted for");
    assert!(written <= buckets + 1, "{written} entries for 51 refusals");
    // The log is sampled; the statistics are not (refusals left out are counted within ~1 s).
    let path = format!("/api/webhooks/{}/statistics?webhook_type=incoming", hook.id);
    let mut stats = Value::Null;
    for _ in 0..100 {
        stats = app.get(&path, &key).await.expect(200);
        if stats["total_requests"] == 52 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stats["total_requests"], 52, "{stats}");
    assert_eq!(stats["successful_requests"], 1);
    assert_eq!(stats["failed_requests"], 51);
}

async fn inactive_unknown_and_oversized(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.max_body_bytes = Some(1024)).await;
    let key = app.tenant_key().await;
    let hook = create_hook(&app, &key, json!({"agent_id": "a"})).await;
    post_with(
        &app,
        &hook,
        "application/json",
        "x".repeat(2048),
        headers(&[]),
    )
    .await
    .expect_error(413, "payload_too_large");
    let path = format!("/api/webhooks/incoming/{}", hook.id);
    app.put(&path, &key, &json!({"is_active": false}))
        .await
        .expect(200);
    let detail = post_json(&app, &hook, &json!({}))
        .await
        .expect_error(403, "forbidden");
    assert!(detail.contains("inactive"), "{detail}");
    let entries = logs_settled(&app, &hook, 2).await;
    assert_eq!(entries.len(), 2);

    let unknown = Hook {
        id: String::new(),
        token: "no-such-token".into(),
    };
    post_json(&app, &unknown, &json!({}))
        .await
        .expect_error(404, "not_found");
    // Another tenant's webhook answers exactly like no webhook at all to the API.
    let other = app.tenant_key().await;
    app.get(&path, &other).await.expect_error(404, "not_found");
    app.delete(&path, &key).await.expect(204);
    post_json(&app, &hook, &json!({}))
        .await
        .expect_error(404, "not_found");
    assert!(inbox(&app, &key, "a").await.is_empty());
}

async fn preview_renders_a_sample_or_names_the_line(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let hook = create_hook(
        &app,
        &key,
        json!({"agent_id": "a",
               "payload_transformation": {"message": "New lead: {{ lead_name }}",
                                          "priority": "{{ priority | default('medium') }}"}}),
    )
    .await;
    let path = format!("/api/webhooks/incoming/{}/preview", hook.id);
    let out = app
        .post(&path, &key, &json!({"payload": {"lead_name": "Ada"}}))
        .await
        .expect(200);
    assert_eq!(
        out["output"],
        json!({"message": "New lead: Ada", "priority": "medium"})
    );
    let out = app
        .post(
            &path,
            &key,
            &json!({"payload": {"a": [1, 2]}, "template": "{\"n\": {{ a | length }}}"}),
        )
        .await
        .expect(200);
    assert_eq!(out["output"], json!({"n": 2}));
    let detail = app
        .post(
            &path,
            &key,
            &json!({"payload": {}, "template": "line one\n{{ a.b( }}"}),
        )
        .await
        .expect_error(422, "validation_error");
    assert!(detail.contains("line 2"), "{detail}");
    let detail = app
        .post(
            &path,
            &key,
            &json!({"payload": {}, "template": "ok\n{{ 1 / 0 }}"}),
        )
        .await
        .expect_error(422, "validation_error");
    assert!(detail.contains("line 2"), "{detail}");
    // Nothing was routed or logged.
    assert!(inbox(&app, &key, "a").await.is_empty());
    assert!(logs(&app, &hook).await.is_empty());
    let other = app.tenant_key().await;
    app.post(&path, &other, &json!({"payload": {}}))
        .await
        .expect_error(404, "not_found");
}

/// A `redis-server` of this test's own on a free port, so it can be killed and started again.
struct OwnRedis {
    port: u16,
    process: Option<std::process::Child>,
}

impl OwnRedis {
    /// `None` when `redis-server` is not installed.
    async fn start() -> Option<OwnRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let mut redis = OwnRedis {
            port,
            process: None,
        };
        redis.restart().await.then_some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) and waits until it accepts connections.
    async fn restart(&mut self) -> bool {
        let Ok(process) = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
        else {
            return false;
        };
        self.process = Some(process);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_is_skipped_at_once_and_used_again_when_it_returns() {
    let Some(mut redis) = OwnRedis::start().await else {
        eprintln!("SKIPPED: redis-server is not installed");
        return;
    };
    let url = redis.url();
    let app = spawn_app_with(Backend::Sqlite, |s| s.redis_url = Some(url.clone())).await;
    let key = app.tenant_key().await;
    let hook = create_hook(&app, &key, json!({"agent_id": "a", "rate_limit": 1000})).await;
    post_json(&app, &hook, &json!({})).await.expect(202);

    redis.kill();
    // Before: every request waited out the 250 ms Redis timeout. Now the first failure takes
    // Redis out of the path; the bound leaves room for that one and for a slow machine.
    let mut waited = 0;
    for i in 0..20 {
        let started = Instant::now();
        post_json(&app, &hook, &json!({ "i": i })).await.expect(202);
        if started.elapsed() >= Duration::from_millis(250) {
            waited += 1;
        }
    }
    assert!(
        waited <= 3,
        "{waited} of 20 requests waited for the dead Redis"
    );

    // Back again: a limit exhausted in Redis (a theoretical arrival time far in the future)
    // refuses requests that the node's own limiter would let through.
    redis.restart().await;
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("hookd:ratelimit:incoming:{}", hook.id))
        .arg("99999999999999999")
        .query_async(&mut connection)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = post_json(&app, &hook, &json!({})).await;
        if answer.status.as_u16() == 429 {
            break;
        }
        assert_eq!(answer.status.as_u16(), 202, "{}", answer.body);
        assert!(
            Instant::now() < deadline,
            "Redis was not used again within 30 s of its return"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
