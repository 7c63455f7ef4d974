use serde_json::json;

use crate::{
    browser::Browser,
    helpers::{Backend, spawn_app},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_arrives_in_the_agent_inbox_without_a_reload() {
    let app = spawn_app(Backend::Sqlite).await;
    let key = app.tenant_key().await;
    let Some(browser) = Browser::open("agents", &app.base).await else {
        return;
    };
    let hook = app
        .post(
            "/api/webhooks/incoming",
            &key,
            &json!({"name": "Support", "agent_id": "sales_agent",
                    "transform_template": "Ticket: {{ subject }}"}),
        )
        .await
        .expect(201);
    browser.sign_in(&key).await;
    browser.click("a[href='/ui/agents']").await;
    browser.wait_for_text("#agents", "sales_agent").await;
    browser.screenshot("list").await;
    browser.click("#agents a").await;
    browser.wait_for_text("#inbox-status", "live").await;
    browser.wait_for_text("#inbox", "No messages yet").await;

    let answer = reqwest::Client::new()
        .post(hook["url"].as_str().unwrap())
        .json(&json!({"subject": "printer on fire"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    browser
        .wait_for_text("#inbox", "Ticket: printer on fire")
        .await;
    browser.screenshot("inbox").await;

    // The endpoint is edited in place; the API's refusal shows beside the field.
    browser.fill("#endpoint", "ftp://agent.example").await;
    browser.click("#endpoint-form button[type=submit]").await;
    browser.find("#endpoint-error").await;
    browser.screenshot("endpoint-invalid").await;
    browser.fill("#endpoint", "").await;
    browser.click("#endpoint-form button[type=submit]").await;
    browser.wait_for_text("#endpoint-form", "Saved.").await;
    browser.close().await;
}
