use crate::{
    browser::Browser,
    helpers::{Backend, spawn_app},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_is_refused_and_a_good_one_lands_on_the_overview() {
    let app = spawn_app(Backend::Sqlite).await;
    let Some(browser) = Browser::open("sign-in", &app.base).await else {
        return;
    };
    browser.goto("/ui").await;
    assert_eq!(
        browser.path().await,
        "/ui/signin",
        "signed out: sent to sign in"
    );
    browser.screenshot("form").await;

    browser.sign_in("hk_not-a-key").await;
    browser.wait_for_text("#key-error", "not valid").await;
    browser.screenshot("bad-key").await;

    browser.sign_in(&app.tenant_key().await).await;
    browser.wait_for_text("h1", "Overview").await;
    browser.wait_for_text("#overview", "No webhooks yet").await;
    browser.screenshot("overview-empty").await;

    browser.click("header form button").await;
    browser.wait_for_text("h1", "Sign in").await;
    browser.goto("/ui").await;
    assert_eq!(browser.path().await, "/ui/signin", "signed out again");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_signed_out_at_its_next_page() {
    let app = spawn_app(Backend::Sqlite).await;
    let Some(browser) = Browser::open("revoked", &app.base).await else {
        return;
    };
    let key = app.tenant_key().await;
    browser.sign_in(&key).await;
    browser.wait_for_text("h1", "Overview").await;
    let keys = app
        .get("/api/admin/keys", crate::helpers::ADMIN_KEY)
        .await
        .expect(200);
    let id = keys[0]["id"].as_str().unwrap();
    app.delete(&format!("/api/admin/keys/{id}"), crate::helpers::ADMIN_KEY)
        .await
        .expect(204);
    browser.goto("/ui/agents").await;
    assert_eq!(browser.path().await, "/ui/signin");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_follow_a_dark_system_setting() {
    let app = spawn_app(Backend::Sqlite).await;
    let dark = ["--blink-settings=preferredColorScheme=0"];
    let Some(browser) = Browser::open_with("dark", &app.base, &dark).await else {
        return;
    };
    browser.sign_in(&app.tenant_key().await).await;
    browser.wait_for_text("h1", "Overview").await;
    let background = browser
        .client
        .execute(
            "return getComputedStyle(document.body).backgroundColor;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(background, "rgb(15, 18, 23)", "the dark palette applies");
    browser.screenshot("overview").await;
    browser.goto("/ui/outgoing/new").await;
    browser.screenshot("new-outgoing").await;
    browser.close().await;
}
