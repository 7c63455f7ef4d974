//! The dashboard's HTTP rules that need no browser: the session cookie, CSRF defence, assets.
//! (The pages themselves are driven in a real browser by `tests/ui`.)

use reqwest::{StatusCode, header};

use crate::{
    both_backends,
    helpers::{Backend, TestApp, spawn_app},
};

both_backends!(
    signing_in_sets_a_browser_session_cookie_that_opens_the_pages,
    cross_site_posts_are_refused,
    assets_are_served_from_the_binary_with_their_types,
    the_overview_reads_statistics_of_the_newest_webhooks_only,
);

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

const FORM: &str = "application/x-www-form-urlencoded";

fn form_key(key: &str) -> String {
    serde_urlencoded::to_string([("key", key)]).unwrap()
}

pub(crate) async fn sign_in(app: &TestApp, key: &str) -> reqwest::Response {
    no_redirects()
        .post(format!("{}/ui/signin", app.base))
        .header("origin", &app.base)
        .header(header::CONTENT_TYPE, FORM)
        .body(form_key(key))
        .send()
        .await
        .unwrap()
}

async fn signing_in_sets_a_browser_session_cookie_that_opens_the_pages(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;

    let refused = sign_in(&app, "hk_wrong").await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().get(header::SET_COOKIE).is_none());

    let answer = sign_in(&app, &key).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(answer.headers()[header::LOCATION], "/ui");
    let cookie = answer.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(
        !cookie.contains("Max-Age") && !cookie.contains("Expires"),
        "a browser-session cookie: {cookie}"
    );
    assert!(
        !cookie.contains(&key),
        "the key is not in the cookie as typed"
    );
    let session = cookie.split(';').next().unwrap().to_string();

    let overview = no_redirects()
        .get(format!("{}/ui", app.base))
        .header(header::COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(overview.status(), StatusCode::OK);
    assert!(overview.text().await.unwrap().contains("Overview"));

    let signed_out = no_redirects()
        .get(format!("{}/ui", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), StatusCode::SEE_OTHER);
    assert_eq!(signed_out.headers()[header::LOCATION], "/ui/signin");
}

async fn cross_site_posts_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let cross_site = no_redirects()
        .post(format!("{}/ui/signin", app.base))
        .header("sec-fetch-site", "cross-site")
        .header(header::CONTENT_TYPE, FORM)
        .body(form_key(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    let other_origin = no_redirects()
        .post(format!("{}/ui/signin", app.base))
        .header("origin", "https://evil.example")
        .header(header::CONTENT_TYPE, FORM)
        .body(form_key(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(other_origin.status(), StatusCode::FORBIDDEN);
    assert_eq!(sign_in(&app, &key).await.status(), StatusCode::SEE_OTHER);
}

async fn assets_are_served_from_the_binary_with_their_types(backend: Backend) {
    let app = spawn_app(backend).await;
    for (name, content_type) in [
        ("hookd.css", "text/css; charset=utf-8"),
        ("hookd.js", "text/javascript; charset=utf-8"),
        ("htmx.min.js", "text/javascript; charset=utf-8"),
    ] {
        let answer = app
            .client
            .get(format!("{}/ui/assets/{name}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{name}");
        assert_eq!(answer.headers()[header::CONTENT_TYPE], content_type);
        assert!(answer.headers().contains_key(header::CACHE_CONTROL));
    }
    let missing = app
        .client
        .get(format!("{}/ui/assets/nope.js", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

both_backends!(pages_may_not_be_framed_or_cached_and_carry_no_inline_code);

/// The session cookie `key` signs in with.
async fn session_cookie(app: &TestApp, key: &str) -> String {
    let answer = sign_in(app, key).await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let cookie = answer.headers()[header::SET_COOKIE].to_str().unwrap();
    cookie.split(';').next().unwrap().to_string()
}

async fn pages_may_not_be_framed_or_cached_and_carry_no_inline_code(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let session = session_cookie(&app, &key).await;
    // The incoming page shows a receiving token: the page a cache must not keep.
    let hook = app
        .post(
            "/api/webhooks/incoming",
            &key,
            &serde_json::json!({"name": "hook", "agent_id": "a"}),
        )
        .await
        .expect(201);
    let incoming = format!("/ui/incoming/{}", hook["id"].as_str().unwrap());
    let outgoing = app
        .post(
            "/api/webhooks/outgoing",
            &key,
            &serde_json::json!({"url": "http://127.0.0.1:9/hook"}),
        )
        .await
        .expect(201);
    let outgoing = format!("/ui/outgoing/{}", outgoing["id"].as_str().unwrap());
    for path in [
        "/ui/signin",
        "/ui",
        "/ui/incoming/new",
        incoming.as_str(),
        outgoing.as_str(),
        "/ui/agents",
        "/ui/events",
    ] {
        let answer = no_redirects()
            .get(format!("{}{path}", app.base))
            .header(header::COOKIE, &session)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{path}");
        let headers = answer.headers();
        let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(policy.contains("default-src 'self'"), "{path}: {policy}");
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{path}");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store", "{path}");
        let html = answer.text().await.unwrap();
        // What the policy would block: the page must not need it.
        if let Some(found) = inline_code(&html) {
            panic!("{path} has inline code: {found}");
        }
    }
    // Assets are the same for everyone and keep their own caching.
    let css = app
        .client
        .get(format!("{}/ui/assets/hookd.css", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(css.headers()[header::CACHE_CONTROL], "public, max-age=300");
}

/// The start of the first inline style, inline script or event handler attribute in `html`.
fn inline_code(html: &str) -> Option<String> {
    let html = html.to_ascii_lowercase();
    let excerpt = |at: usize| html[at..].chars().take(80).collect::<String>();
    if let Some(at) = html.find(" style=").or_else(|| html.find("<style")) {
        return Some(excerpt(at));
    }
    for (at, _) in html.match_indices("<script") {
        let tag = &html[at..at + html[at..].find('>').unwrap_or(0)];
        if !tag.contains(" src=") {
            return Some(excerpt(at));
        }
    }
    html.match_indices(" on").map(|(at, _)| at).find_map(|at| {
        let name = html[at + 3..]
            .bytes()
            .take_while(u8::is_ascii_lowercase)
            .count();
        (name > 0 && html[at + 3 + name..].starts_with('=')).then(|| excerpt(at))
    })
}

both_backends!(wrong_sign_ins_from_one_address_are_throttled);

async fn wrong_sign_ins_from_one_address_are_throttled(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    for _ in 0..10 {
        assert_eq!(
            sign_in(&app, "hk_wrong").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let refused = sign_in(&app, "hk_wrong").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key(header::RETRY_AFTER));
    assert!(refused.headers().get(header::SET_COOKIE).is_none());
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("Too many failed sign-ins")
    );
    // Until the window ends, not even the right key signs in from there.
    let right = sign_in(&app, &key).await;
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(right.headers().get(header::SET_COOKIE).is_none());
}

/// Every webhook is listed, but only the 20 newest of a direction cost reads of their
/// statistics at each refresh.
async fn the_overview_reads_statistics_of_the_newest_webhooks_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let session = session_cookie(&app, &key).await;
    for i in 0..22 {
        let body = serde_json::json!({"name": format!("hook-{i}"), "url": "http://127.0.0.1:9/x"});
        app.post("/api/webhooks/outgoing", &key, &body)
            .await
            .expect(201);
    }
    let overview = no_redirects()
        .get(format!("{}/ui/overview/live", app.base))
        .header(header::COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(overview.status(), StatusCode::OK);
    let html = overview.text().await.unwrap();
    assert_eq!(html.matches("<tr data-webhook=").count(), 22, "{html}");
    assert!(html.contains("hook-0") && html.contains("hook-21"));
    // Rows with statistics show the pending count (0); the two oldest show a dash.
    assert_eq!(html.matches("<td>0</td>").count(), 20, "{html}");
    assert!(
        html.contains("data-without-statistics=\"outgoing\"") && html.contains("2 older"),
        "{html}"
    );
}
