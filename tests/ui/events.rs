use serde_json::json;

use crate::{
    browser::Browser,
    helpers::{Backend, spawn_app},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_event_type_is_defined_on_the_events_page_and_shows_its_schema() {
    let app = spawn_app(Backend::Sqlite).await;
    let Some(browser) = Browser::open("events", &app.base).await else {
        return;
    };
    let key = app.tenant_key().await;
    browser.sign_in(&key).await;
    browser.click("a[href='/ui/events']").await;

    // A schema that is not a JSON Schema: the API's message shows beside the field.
    browser.fill("#name", "billing.invoice.paid").await;
    browser.fill("#schema", r#"{"type": "no-such-type"}"#).await;
    browser
        .click("#define-event-type button[type=submit]")
        .await;
    let error = browser
        .wait_for_text("#schema-error", "not a valid JSON Schema")
        .await;
    assert!(!error.is_empty());
    browser.screenshot("define-invalid").await;

    browser.fill("#description", "An invoice was paid").await;
    browser
        .fill("#schema", r#"{"type": "object", "required": ["amount"]}"#)
        .await;
    browser
        .click("#define-event-type button[type=submit]")
        .await;
    browser
        .wait_for_text("#custom-event-types", "billing.invoice.paid")
        .await;
    browser.click("#custom-event-types summary").await;
    browser
        .wait_for_text("#custom-event-types pre", "\"required\"")
        .await;
    browser.screenshot("custom-types").await;
    let defined = app
        .get("/api/event-types/billing.invoice.paid", &key)
        .await
        .expect(200);
    assert_eq!(defined["description"], "An invoice was paid");
    assert_eq!(
        defined["schema"],
        json!({"type": "object", "required": ["amount"]})
    );

    // It can be published from the same page, checked against its schema.
    browser
        .find("#event_type")
        .await
        .select_by_value("billing.invoice.paid")
        .await
        .unwrap();
    browser.fill("#data", r#"{"total": 3}"#).await;
    browser.click("main form button[type=submit]").await;
    browser
        .wait_for_text("#publish-result", "\"amount\" is a required property")
        .await;
    browser.close().await;
}
