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
