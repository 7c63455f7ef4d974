use serde_json::json;

use crate::{
    browser::Browser,
    helpers::{Backend, spawn_app, spawn_app_with},
    receiver::{Receiver, Reply},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outgoing_webhook_is_created_through_the_form_and_its_test_shows_in_the_log() {
    let app = spawn_app(Backend::Sqlite).await;
    let receiver = Receiver::start().await;
    let Some(browser) = Browser::open("outgoing", &app.base).await else {
        return;
    };
    let key = app.tenant_key().await;
    browser.sign_in(&key).await;
    browser.click("a[href='/ui/outgoing/new']").await;

    browser.fill("#url", "not a url").await;
    browser.click("main button[type=submit]").await;
    let error = browser.wait_for_text("#url-error", "").await;
    assert!(
        !error.is_empty(),
        "the API's message shows beside the URL field"
    );
    browser.screenshot("new-invalid").await;

    browser
        .fill("#url", &format!("{}/hook", receiver.url))
        .await;
    browser.fill("#name", "Receiver").await;
    browser.click("main button[type=submit]").await;
    browser.wait_for_text("h1", "Outgoing: Receiver").await;
    assert!(browser.path().await.starts_with("/ui/outgoing/"));

    browser.click("#send-test").await;
    browser
        .wait_for_text("#test-result", "Test delivered")
        .await;
    assert_eq!(receiver.count(), 1, "the test reached the receiver");
    browser.wait_for_text("#log", "webhook.test").await;
    browser.click("#log details summary").await;
    browser
        .wait_for_text("#log details", "Request headers")
        .await;
    browser.screenshot("page").await;

    // Filters reload the log in place.
    browser
        .find("#log-status")
        .await
        .select_by_value("failed")
        .await
        .unwrap();
    browser.click("#log form button").await;
    browser.wait_for_text("#log", "Nothing logged yet").await;
    browser
        .find("#log-status")
        .await
        .select_by_value("delivered")
        .await
        .unwrap();
    browser.click("#log form button").await;
    browser.wait_for_text("#log", "webhook.test").await;

    // Settings edited in place: a bad value shows its message, a good one saves.
    browser.fill("#timeout", "999").await;
    browser.click("#settings button[type=submit]").await;
    browser.wait_for_text("#timeout-error", "").await;
    browser.fill("#timeout", "10").await;
    browser.click("#settings button[type=submit]").await;
    browser.wait_for_text("#settings", "Saved.").await;
    browser.screenshot("settings-saved").await;

    // FIFO is a checkbox that sets the webhook's `ordering`.
    let id = browser
        .path()
        .await
        .trim_start_matches("/ui/outgoing/")
        .to_string();
    browser.click("#fifo").await;
    browser.click("#settings button[type=submit]").await;
    // "Saved." still shows from the save above, so wait for the webhook itself to change.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let hook = app
            .get(&format!("/api/webhooks/outgoing/{id}"), &key)
            .await
            .expect(200);
        if hook["ordering"] == "fifo" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the FIFO box never saved: {hook}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // A test event published from the event types page reaches the webhook.
    browser.click("a[href='/ui/events']").await;
    browser
        .wait_for_text("#event-types", "chat.completed")
        .await;
    browser
        .find("#event_type")
        .await
        .select_by_value("chat.completed")
        .await
        .unwrap();
    browser.click("main form button[type=submit]").await;
    browser
        .wait_for_text("#publish-result", "to 1 webhook(s)")
        .await;
    receiver
        .wait_for(2, std::time::Duration::from_secs(10))
        .await;
    browser.screenshot("events").await;

    // More entries than a page holds: the log pages through them.
    let events: Vec<_> = (0..21)
        .map(|n| json!({"event_type": "task.completed", "data": {"n": n}}))
        .collect();
    app.post("/api/events/batch", &key, &json!({ "events": events }))
        .await
        .expect(202);
    receiver
        .wait_for(23, std::time::Duration::from_secs(15))
        .await;
    browser.client.back().await.unwrap();
    browser.client.refresh().await.unwrap();
    browser.wait_for_text("#log", "Older").await;
    browser.click("#log [data-page=older]").await;
    browser.wait_for_text("#log", "webhook.test").await;
    browser.click("#log [data-page=newer]").await;
    browser.wait_for_text("#log", "Older").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_opens_the_circuit_shown_on_the_overview() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.circuit_threshold = Some(3)).await;
    let receiver = Receiver::start().await;
    receiver.always(Reply::Status(500));
    let key = app.tenant_key().await;
    let Some(browser) = Browser::open("circuit", &app.base).await else {
        return;
    };
    app.post(
        "/api/webhooks/outgoing",
        &key,
        &json!({"url": receiver.url, "name": "Flaky", "retry_count": 0}),
    )
    .await
    .expect(201);
    browser.sign_in(&key).await;
    browser.wait_for_text("#webhooks", "Flaky").await;
    browser.wait_for_text("[data-circuit]", "closed").await;
    browser.screenshot("overview-closed").await;

    for n in 0..3 {
        app.post(
            "/api/events",
            &key,
            &json!({"event_type": "task.failed", "data": {"n": n}}),
        )
        .await
        .expect(202);
        receiver
            .wait_for(n + 1, std::time::Duration::from_secs(10))
            .await;
    }
    // The overview refreshes itself: no reload.
    browser.wait_for_text("[data-circuit]", "open").await;
    browser.wait_for_text("#webhooks", "HTTP 500").await;
    browser.screenshot("overview-open").await;
    browser.resize(390, 844).await;
    browser.screenshot("overview-open-phone").await;
    browser.resize(1280, 900).await;

    browser.click("#webhooks a").await;
    browser.wait_for_text("main", "circuit open").await;
    browser.click("#log details summary").await;
    browser.click("#log details .actions button").await;
    browser.wait_for_text("#log", "Queued again").await;
    browser.screenshot("page-failing").await;

    // Replay every failure since a time before the test (datetime inputs take a value, not keys).
    browser
        .client
        .execute(
            "document.querySelector('#since').value = '2020-01-01T00:00';",
            vec![],
        )
        .await
        .unwrap();
    browser.click("form[hx-post$='/replay'] button").await;
    browser
        .wait_for_text("#replay-result", "failed deliveries queued again")
        .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_a_secret_shows_the_new_one_once_and_the_previous_ones_expiry() {
    let app = spawn_app(Backend::Sqlite).await;
    let key = app.tenant_key().await;
    let Some(browser) = Browser::open("rotate", &app.base).await else {
        return;
    };
    let created = app
        .post(
            "/api/webhooks/outgoing",
            &key,
            &json!({"url": "http://127.0.0.1:9/hook", "name": "Signed", "secret": "old-secret"}),
        )
        .await
        .expect(201);
    let id = created["id"].as_str().unwrap();
    browser.sign_in(&key).await;
    browser.goto(&format!("/ui/outgoing/{id}")).await;
    browser.fill("#previous_valid_for", "3600").await;
    browser.click("#rotate-secret").await;
    browser
        .wait_for_text("#new-secret", "shown only this once")
        .await;
    let secret = browser.find("#rotated-secret").await.text().await.unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let until = browser
        .wait_for_text("#previous-secret", "valid until")
        .await;
    browser.screenshot("rotated").await;
    let hook = app
        .get(&format!("/api/webhooks/outgoing/{id}"), &key)
        .await
        .expect(200);
    let expires = hook["previous_secret_expires_at"].as_str().unwrap();
    assert!(until.contains(expires), "{until} / {expires}");

    // Shown once: a fresh page has the expiry, not the secret.
    browser.client.refresh().await.unwrap();
    browser.wait_for_text("#previous-secret", expires).await;
    let page = browser.find("main").await.text().await.unwrap();
    assert!(!page.contains(&secret));

    // A bad value gets the API's message.
    browser.fill("#previous_valid_for", "-1").await;
    browser.click("#rotate-secret").await;
    browser
        .wait_for_text("#rotate-result", "previous_valid_for")
        .await;
    browser.close().await;
}
