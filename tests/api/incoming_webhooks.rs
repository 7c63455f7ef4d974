use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, spawn_app, spawn_app_with};

both_backends!(
    spec_example_creates_a_webhook_with_a_secret_url,
    spec_transformations_are_accepted,
    bad_templates_and_ranges_are_refused_with_line,
    update_and_delete,
);

async fn spec_example_creates_a_webhook_with_a_secret_url(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.key_for("user-7", "company-7", &[]).await;
    let created = app
        .post(
            "/api/webhooks/incoming",
            &key,
            &json!({
              "name": "External System Webhook",
              "agent_id": 1,
              "description": "Receives data from external system",
              "is_active": true,
              "transform_template": "{{ data | tojson }}"
            }),
        )
        .await
        .expect(201);
    let token = created["token"].as_str().unwrap();
    assert!(token.len() >= 43, "256 random bits, base64: {token}");
    assert_eq!(created["url"], format!("{}/webhook/{token}", app.base));
    assert_eq!(
        created["agent_id"], "1",
        "ids are strings; a number is kept as its text"
    );
    assert_eq!(created["user_id"], "user-7", "the owner, from the key");
    assert_eq!(created["company_id"], "company-7");
    assert_eq!(created["rate_limit"], 100);
    assert_eq!(created["transform_template"], "{{ data | tojson }}");
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));

    let other = app
        .post(
            "/api/webhooks/incoming",
            &key,
            &json!({"name": "second", "agent_name": "bot"}),
        )
        .await
        .expect(201);
    assert_ne!(other["token"], created["token"]);

    let listed = app.get("/api/webhooks/incoming", &key).await.expect(200);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(
        listed[0].get("token").is_none(),
        "listings do not show tokens: {listed}"
    );
    let path = format!("/api/webhooks/incoming/{}", created["id"].as_str().unwrap());
    assert_eq!(app.get(&path, &key).await.expect(200)["token"], token);

    // With HOOKD_PUBLIC_URL the receiving URL uses it.
    let public = spawn_app_with(backend, |s| {
        s.public_url = Some("https://hooks.example.com/".into())
    })
    .await;
    let key = public.tenant_key().await;
    let created = public
        .post(
            "/api/webhooks/incoming",
            &key,
            &json!({"name": "n", "agent_id": "a"}),
        )
        .await
        .expect(201);
    assert!(
        created["url"]
            .as_str()
            .unwrap()
            .starts_with("https://hooks.example.com/webhook/")
    );
}

async fn spec_transformations_are_accepted(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let crm = json!({
        "message": "New lead: {{ lead_name }} from {{ company }}",
        "context": {"email": "{{ email }}", "phone": "{{ phone }}", "source": "CRM System",
                    "priority": "{{ priority | default('medium') }}"}
    });
    let created = app
        .post(
            "/api/webhooks/incoming",
            &key,
            &json!({"name": "CRM Lead Processor", "agent_id": "sales_agent", "payload_transformation": crm}),
        )
        .await
        .expect(201);
    assert_eq!(created["payload_transformation"], crm);
    assert_eq!(created["transform_template"], Value::Null);

    // The spec's "Payload Transformation Templates": an object given as transform_template,
    // with the `contains` spelling.
    let github = json!({
        "message": "{% if action == 'create' %}New {{ object_type }}: {{ object_name }}{% else %}{{ action | title }} {{ object_type }}: {{ object_name }}{% endif %}",
        "metadata": {"source": "github", "timestamp": "{{ timestamp }}",
            "priority": "{% if object_type == 'issue' and labels contains 'urgent' %}high{% else %}normal{% endif %}",
            "assignee": "{{ assignee.login | default('unassigned') }}"},
        "context": {"repository": "{{ repository.full_name }}", "branch": "{{ ref | default('main') }}",
            "commit": "{{ head_commit.id | default('unknown') }}"}
    });
    let created = app
        .post(
            "/api/webhooks/incoming",
            &key,
            &json!({"name": "gh", "agent_id": "dev", "transform_template": github}),
        )
        .await
        .expect(201);
    assert_eq!(created["payload_transformation"], github);

    // The spec's rate-limit and allowlist examples.
    let created = app
        .post(
            "/api/webhooks/incoming",
            &key,
            &json!({"name": "High-Volume Webhook", "agent_id": "processor_agent", "rate_limit": 1000,
                    "allowed_ips": ["192.168.1.100", "10.0.0.0/8", "203.0.113.0/24", "2001:db8::/32"]}),
        )
        .await
        .expect(201);
    assert_eq!(created["rate_limit"], 1000);
    assert_eq!(created["allowed_ips"].as_array().unwrap().len(), 4);
}

async fn bad_templates_and_ranges_are_refused_with_line(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let detail = app
        .post(
            "/api/webhooks/incoming",
            &key,
            &json!({"name": "n", "agent_id": "a", "transform_template": "{\n \"m\": \"{{ data.text }\"\n}"}),
        )
        .await
        .expect_error(422, "validation_error");
    assert!(
        detail.starts_with("transform_template") && detail.contains("line 2"),
        "{detail}"
    );
    let detail = app
        .post(
            "/api/webhooks/incoming",
            &key,
            &json!({"name": "n", "agent_id": "a", "payload_transformation": {"context": {"email": "{% if %}"}}}),
        )
        .await
        .expect_error(422, "validation_error");
    assert!(
        detail.starts_with("payload_transformation.context.email"),
        "{detail}"
    );
    for (body, field) in [
        (
            json!({"name": "n", "agent_id": "a", "allowed_ips": ["10.0.0.0/33"]}),
            "allowed_ips",
        ),
        (
            json!({"name": "n", "agent_id": "a", "allowed_ips": ["not-an-ip"]}),
            "allowed_ips",
        ),
        (
            json!({"name": "n", "agent_id": "a", "rate_limit": 0}),
            "rate_limit",
        ),
        (
            json!({"name": "n", "agent_id": "a", "transform_template": 5}),
            "transform_template",
        ),
        (json!({"agent_id": "a"}), "name"),
        (json!({"name": "n"}), "agent_id"),
    ] {
        let detail = app
            .post("/api/webhooks/incoming", &key, &body)
            .await
            .expect_error(422, "validation_error");
        assert!(detail.starts_with(field), "{body} → {detail}");
    }
    assert_eq!(
        app.get("/api/webhooks/incoming", &key).await.expect(200),
        json!([])
    );
}

async fn update_and_delete(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let created = app
        .post(
            "/api/webhooks/incoming",
            &key,
            &json!({"name": "n", "agent_id": "a", "transform_template": "{{ message }}", "allowed_ips": ["10.0.0.0/8"]}),
        )
        .await
        .expect(201);
    let path = format!("/api/webhooks/incoming/{}", created["id"].as_str().unwrap());
    // The spec's update example.
    let updated = app
        .put(
            &path,
            &key,
            &json!({"name": "Updated Webhook Name", "is_active": false}),
        )
        .await
        .expect(200);
    assert_eq!(updated["name"], "Updated Webhook Name");
    assert_eq!(updated["active"], false);
    assert_eq!(updated["transform_template"], "{{ message }}");
    assert_eq!(updated["allowed_ips"], json!(["10.0.0.0/8"]));
    assert_eq!(
        updated["token"], created["token"],
        "the URL survives an update"
    );
    let updated = app
        .put(
            &path,
            &key,
            &json!({"transform_template": null, "allowed_ips": []}),
        )
        .await
        .expect(200);
    assert_eq!(updated["transform_template"], Value::Null);
    assert_eq!(updated["allowed_ips"], json!([]));
    app.delete(&path, &key).await.expect(204);
    app.get(&path, &key).await.expect_error(404, "not_found");
}
