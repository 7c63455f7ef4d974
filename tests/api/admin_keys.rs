use serde_json::json;

use crate::both_backends;
use crate::helpers::{ADMIN_KEY, Backend, spawn_app};

both_backends!(admin_issues_lists_and_revokes_keys, keys_are_stored_hashed);

async fn admin_issues_lists_and_revokes_keys(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = app
        .post(
            "/api/admin/keys",
            ADMIN_KEY,
            &json!({"user_id": 123, "company_id": "acme", "name": "ci", "scopes": ["webhooks:read"]}),
        )
        .await
        .expect(201);
    let key = created["key"].as_str().unwrap();
    assert!(key.starts_with("hk_") && key.len() >= 40, "{key}");
    assert_eq!(created["user_id"], "123");
    assert_eq!(created["scopes"], json!(["webhooks:read"]));

    let listed = app.get("/api/admin/keys", ADMIN_KEY).await.expect(200);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(
        listed[0].get("key").is_none(),
        "listing must not show the key: {listed}"
    );
    assert_eq!(listed[0]["key_prefix"], created["key_prefix"]);

    app.get("/api/webhooks/outgoing", key).await.expect(200);
    let id = created["id"].as_str().unwrap();
    app.delete(&format!("/api/admin/keys/{id}"), ADMIN_KEY)
        .await
        .expect(204);
    app.get("/api/webhooks/outgoing", key)
        .await
        .expect_error(401, "unauthorized");
    let listed = app.get("/api/admin/keys", ADMIN_KEY).await.expect(200);
    assert!(listed[0]["revoked_at"].is_string());

    app.delete("/api/admin/keys/nope", ADMIN_KEY)
        .await
        .expect_error(404, "not_found");
}

async fn keys_are_stored_hashed(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let stored = app.store.list_api_keys().await.unwrap();
    let debug = format!("{stored:?}");
    assert!(!debug.contains(&key), "the key itself must not be stored");
    assert!(
        app.store.find_api_key(&key).await.unwrap().is_none(),
        "lookup is by hash only"
    );
}
