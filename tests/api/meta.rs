use reqwest::Method;
use serde_json::json;

use crate::both_backends;
use crate::helpers::{Backend, spawn_app};

both_backends!(
    event_types_need_no_key_and_cover_the_spec,
    docs_health_and_unknown_routes,
);

async fn event_types_need_no_key_and_cover_the_spec(backend: Backend) {
    let app = spawn_app(backend).await;
    let answer = app
        .request(Method::GET, "/api/webhooks/event-types", None, None)
        .await;
    let body = answer.expect(200);
    let types: Vec<&str> = body["event_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert!(t["description"].as_str().is_some_and(|d| !d.is_empty()));
            t["type"].as_str().unwrap()
        })
        .collect();
    for expected in [
        "command.executed",
        "command.failed",
        "chat.started",
        "chat.completed",
        "chat.message",
        "agent.created",
        "agent.updated",
        "agent.deleted",
        "memory.created",
        "memory.updated",
        "memory.deleted",
        "chain.started",
        "chain.step.completed",
        "chain.completed",
        "chain.failed",
        "task.created",
        "task.started",
        "task.completed",
        "task.failed",
        "provider.changed",
        "extension.enabled",
        "extension.disabled",
        "file.uploaded",
        "file.processed",
        "transcription.completed",
        "training.started",
        "training.completed",
        "chat.message.received",
        "chat.response.sent",
        "webhook.test",
    ] {
        assert!(types.contains(&expected), "{expected} missing");
    }
}

async fn docs_health_and_unknown_routes(backend: Backend) {
    let app = spawn_app(backend).await;
    let openapi = app
        .request(Method::GET, "/openapi.json", None, None)
        .await
        .expect(200);
    for path in [
        "/api/webhooks/outgoing",
        "/api/webhooks/outgoing/{id}",
        "/api/webhooks/incoming",
        "/api/webhooks/incoming/{id}",
        "/api/webhooks/event-types",
        "/api/event-types",
        "/api/event-types/{name}",
        "/api/admin/keys",
        "/webhook/{token}",
        "/api/webhook/{token}",
        "/v1/webhook/{token}",
        "/metrics",
        "/healthz",
        "/readyz",
    ] {
        assert!(
            openapi["paths"].get(path).is_some(),
            "{path} not documented"
        );
    }
    // The receiving URLs also take an id with an API key: the key is optional there.
    let receive = &openapi["paths"]["/api/webhook/{token}"]["post"];
    assert_eq!(
        receive["security"],
        json!([{}, {"bearer": []}]),
        "{receive}"
    );
    assert_ne!(
        receive["operationId"],
        openapi["paths"]["/webhook/{token}"]["post"]["operationId"]
    );
    let docs = app
        .client
        .get(format!("{}/docs/", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    assert!(
        docs.text().await.unwrap().contains("swagger"),
        "docs page is Swagger UI"
    );

    assert_eq!(
        app.request(Method::GET, "/healthz", None, None)
            .await
            .expect(200)["status"],
        "ok"
    );
    assert_eq!(
        app.request(Method::GET, "/readyz", None, None)
            .await
            .expect(200)["status"],
        "ready"
    );
    app.request(Method::GET, "/nope", None, None)
        .await
        .expect_error(404, "not_found");
    app.request(Method::PATCH, "/api/webhooks/event-types", None, None)
        .await
        .expect_error(405, "method_not_allowed");
}
