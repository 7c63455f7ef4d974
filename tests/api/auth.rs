use reqwest::Method;
use serde_json::json;

use crate::both_backends;
use crate::helpers::{ADMIN_KEY, Answer, Backend, send, spawn_app, spawn_app_with};

both_backends!(
    missing_wrong_and_revoked_keys_are_401,
    missing_scope_is_403_naming_it,
    admin_api_needs_the_admin_key,
    tenants_never_see_each_others_webhooks,
);

async fn missing_wrong_and_revoked_keys_are_401(backend: Backend) {
    let app = spawn_app(backend).await;
    let answer = app
        .request(Method::GET, "/api/webhooks/outgoing", None, None)
        .await;
    assert_eq!(answer.headers["www-authenticate"], "Bearer");
    assert!(
        answer
            .expect_error(401, "unauthorized")
            .contains("Authorization")
    );
    app.get("/api/webhooks/outgoing", "hk_wrong")
        .await
        .expect_error(401, "unauthorized");
    app.get("/api/webhooks/incoming", ADMIN_KEY)
        .await
        .expect_error(401, "unauthorized");
}

async fn missing_scope_is_403_naming_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let reader = app.key_for("u1", "c1", &["webhooks:read"]).await;
    app.get("/api/webhooks/outgoing", &reader).await.expect(200);
    let detail = app
        .post(
            "/api/webhooks/outgoing",
            &reader,
            &json!({"url": "https://example.com/h"}),
        )
        .await
        .expect_error(403, "forbidden");
    assert!(detail.contains("webhooks:write"), "{detail}");
    let detail = app
        .delete("/api/webhooks/incoming/x", &reader)
        .await
        .expect_error(403, "forbidden");
    assert!(detail.contains("webhooks:delete"), "{detail}");

    let detail = app
        .post(
            "/api/admin/keys",
            ADMIN_KEY,
            &json!({"user_id": "u", "company_id": "c", "scopes": ["webhooks:rule"]}),
        )
        .await
        .expect_error(422, "validation_error");
    assert!(detail.contains("scopes[0]"), "{detail}");
}

async fn admin_api_needs_the_admin_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let tenant = app.tenant_key().await;
    app.get("/api/admin/keys", &tenant)
        .await
        .expect_error(401, "unauthorized");
    app.get("/api/admin/keys", "not-it")
        .await
        .expect_error(401, "unauthorized");

    let closed = spawn_app_with(backend, |s| s.admin_key = None).await;
    let detail = closed
        .get("/api/admin/keys", ADMIN_KEY)
        .await
        .expect_error(401, "unauthorized");
    assert!(detail.contains("HOOKD_ADMIN_KEY"), "{detail}");
}

async fn tenants_never_see_each_others_webhooks(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.key_for("alice", "acme", &[]).await;
    let bob = app.key_for("bob", "globex", &[]).await;
    let out = app
        .post(
            "/api/webhooks/outgoing",
            &alice,
            &json!({"url": "https://example.com/a"}),
        )
        .await
        .expect(201);
    let inc = app
        .post(
            "/api/webhooks/incoming",
            &alice,
            &json!({"name": "in", "agent_id": "a1"}),
        )
        .await
        .expect(201);

    for (kind, id) in [("outgoing", &out["id"]), ("incoming", &inc["id"])] {
        let path = format!("/api/webhooks/{kind}/{}", id.as_str().unwrap());
        app.get(&path, &bob).await.expect_error(404, "not_found");
        app.put(&path, &bob, &json!({"is_active": false}))
            .await
            .expect_error(404, "not_found");
        app.delete(&path, &bob).await.expect_error(404, "not_found");
        let listed = app
            .get(&format!("/api/webhooks/{kind}"), &bob)
            .await
            .expect(200);
        assert_eq!(listed, json!([]));
        // Still there, unchanged, for its owner.
        let mine = app.get(&path, &alice).await.expect(200);
        assert_eq!(mine["is_active"], true);
    }
}

both_backends!(wrong_keys_from_one_address_are_refused_before_checking_while_others_pass);

/// A GET of the webhook list as `client` (behind the trusted proxy 127.0.0.1) with `key`.
async fn list_from(app: &crate::helpers::TestApp, client: &str, key: &str) -> Answer {
    send(
        app.client
            .get(format!("{}/api/webhooks/outgoing", app.base))
            .header("x-forwarded-for", client)
            .bearer_auth(key),
    )
    .await
}

async fn wrong_keys_from_one_address_are_refused_before_checking_while_others_pass(
    backend: Backend,
) {
    let app = spawn_app_with(backend, |s| {
        s.trusted_proxies = Some("127.0.0.1/32".into());
    })
    .await;
    let key = app.tenant_key().await;
    const GUESSER: &str = "203.0.113.7";

    // The default allows 10 failures per address and window.
    for _ in 0..10 {
        list_from(&app, GUESSER, "hk_wrong")
            .await
            .expect_error(401, "unauthorized");
    }
    for _ in 0..20 {
        let refused = list_from(&app, GUESSER, "hk_wrong").await;
        let retry_after: u64 = refused.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=300).contains(&retry_after), "{retry_after}");
        assert!(
            refused
                .expect_error(429, "rate_limited")
                .contains("failed authentications")
        );
    }
    // The admin API shares the count, and a right key does not open a throttled address: it is
    // not even looked at.
    let admin = send(
        app.client
            .get(format!("{}/api/admin/keys", app.base))
            .header("x-forwarded-for", GUESSER)
            .bearer_auth(ADMIN_KEY),
    )
    .await;
    admin.expect_error(429, "rate_limited");
    list_from(&app, GUESSER, &key)
        .await
        .expect_error(429, "rate_limited");

    // Another address is not slowed, however often it calls with its good key.
    for _ in 0..30 {
        list_from(&app, "198.51.100.9", &key).await.expect(200);
    }
}
