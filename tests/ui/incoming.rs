use serde_json::json;

use crate::{
    browser::Browser,
    helpers::{Backend, spawn_app},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_preview_follows_edits_and_names_the_line_of_an_error() {
    let app = spawn_app(Backend::Sqlite).await;
    let key = app.tenant_key().await;
    let Some(browser) = Browser::open("incoming", &app.base).await else {
        return;
    };
    browser.sign_in(&key).await;
    browser.click("a[href='/ui/incoming/new']").await;
    browser.fill("#name", "CRM").await;
    browser.fill("#agent_id", "sales_agent").await;
    browser
        .fill("#transform_template", "{{ data | tojson }}")
        .await;
    browser.click("main button[type=submit]").await;
    browser.wait_for_text("h1", "Incoming: CRM").await;
    browser.wait_for_text("#receiving-url", "/webhook/").await;
    browser.wait_for_text("#preview", "Ada Lovelace").await;

    browser
        .fill(
            "#template",
            "New lead: {{ lead_name | upper }} ({{ priority }})",
        )
        .await;
    browser
        .wait_for_text("#preview", "New lead: ADA LOVELACE (high)")
        .await;
    browser.screenshot("preview").await;

    browser.fill("#template", "line one\n{{ lead_name ").await;
    let error = browser.wait_for_text("#preview-error", "line").await;
    assert!(error.contains('2'), "names line 2: {error}");
    browser.screenshot("preview-error").await;

    browser.fill("#template", "Lead: {{ lead_name }}").await;
    browser
        .wait_for_text("#preview", "Lead: Ada Lovelace")
        .await;
    browser.click("#template-editor button").await;
    browser
        .wait_for_text("#template-result", "Template saved")
        .await;

    let hooks = app.get("/api/webhooks/incoming", &key).await.expect(200);
    let id = hooks[0]["id"].as_str().unwrap();
    let hook = app
        .get(&format!("/api/webhooks/incoming/{id}"), &key)
        .await
        .expect(200);
    assert_eq!(hook["transform_template"], "Lead: {{ lead_name }}");

    // Access settings are edited in place; a bad address is refused beside its field.
    browser.fill("#allowed_ips", "not-an-address").await;
    browser.click("#settings button[type=submit]").await;
    browser.find("#allowed_ips-error").await;
    browser.screenshot("access-invalid").await;
    browser.fill("#allowed_ips", "127.0.0.0/8").await;
    browser.click("#settings button[type=submit]").await;
    browser.wait_for_text("#settings", "Saved.").await;

    // A request shows in the request log.
    let url = hook["url"].as_str().unwrap();
    let answer = reqwest::Client::new()
        .post(url)
        .json(&json!({"lead_name": "Grace"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    browser.goto(&format!("/ui/incoming/{id}")).await;
    browser.wait_for_text("#log", "accepted").await;
    browser.screenshot("page").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verification_secret_is_rotated_from_the_webhook_page() {
    let app = spawn_app(Backend::Sqlite).await;
    let key = app.tenant_key().await;
    let Some(browser) = Browser::open("incoming-rotate", &app.base).await else {
        return;
    };
    let plain = app
        .post(
            "/api/webhooks/incoming",
            &key,
            &json!({"name": "Plain", "agent_id": "a"}),
        )
        .await
        .expect(201);
    let signed = app
        .post(
            "/api/webhooks/incoming",
            &key,
            &json!({"name": "GitHub", "agent_id": "a",
                    "verification": {"type": "github", "secret": "old"}}),
        )
        .await
        .expect(201);
    browser.sign_in(&key).await;
    browser
        .goto(&format!("/ui/incoming/{}", plain["id"].as_str().unwrap()))
        .await;
    browser.wait_for_text("main", "the URL alone admits").await;
    browser
        .goto(&format!("/ui/incoming/{}", signed["id"].as_str().unwrap()))
        .await;
    browser.click("#rotate-secret").await;
    browser
        .wait_for_text("#new-secret", "shown only this once")
        .await;
    browser
        .wait_for_text("#previous-secret", "valid until")
        .await;
    browser.screenshot("rotated").await;
    let hook = app
        .get(
            &format!("/api/webhooks/incoming/{}", signed["id"].as_str().unwrap()),
            &key,
        )
        .await
        .expect(200);
    assert_eq!(hook["verification"]["previous_secret_set"], true);
    browser.close().await;
}
