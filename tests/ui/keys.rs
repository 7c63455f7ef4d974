use crate::{
    browser::Browser,
    helpers::{ADMIN_KEY, Backend, spawn_app},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_creates_a_key_shown_once_that_then_signs_in() {
    let app = spawn_app(Backend::Sqlite).await;
    let Some(browser) = Browser::open("keys", &app.base).await else {
        return;
    };
    browser.sign_in(ADMIN_KEY).await;
    browser.wait_for_text("h1", "API keys").await;
    assert_eq!(browser.path().await, "/ui/keys");

    browser
        .click("form[action='/ui/keys'] button[type=submit]")
        .await;
    browser
        .wait_for_text("#user_id-error", "must not be empty")
        .await;
    browser.screenshot("validation").await;

    browser.fill("#user_id", "alice").await;
    browser.fill("#company_id", "acme").await;
    browser.fill("#name", "laptop").await;
    browser
        .click("form[action='/ui/keys'] button[type=submit]")
        .await;
    let key = browser.wait_for_text("#created-key", "hk_").await;
    browser.wait_for_text("#keys", "alice / acme").await;
    browser.screenshot("created").await;

    browser.goto("/ui/keys").await;
    let page = browser.client.source().await.unwrap();
    assert!(!page.contains(&key), "the key is shown only once");

    browser.click("header form button").await;
    browser.sign_in(&key).await;
    browser.wait_for_text("h1", "Overview").await;

    // Revoked by the operator, the key no longer signs in.
    browser.click("header form button").await;
    browser.sign_in(ADMIN_KEY).await;
    browser.click("#keys form button").await;
    browser.wait_for_text("#keys", "revoked").await;
    browser.screenshot("revoked").await;
    browser.click("header form button").await;
    browser.sign_in(&key).await;
    browser.wait_for_text("#key-error", "not valid").await;
    browser.close().await;
}
