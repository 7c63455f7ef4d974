use std::process::Command;

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, spawn_app};

both_backends!(cli_issues_keys_that_the_api_accepts);

fn hookd(database_url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hookd"))
        .args(args)
        .env("HOOKD_DATABASE_URL", database_url)
        .env_remove("HOOKD_ADMIN_KEY")
        .output()
        .expect("hookd runs")
}

async fn cli_issues_keys_that_the_api_accepts(backend: Backend) {
    let app = spawn_app(backend).await;
    let url = app.database_url.clone();
    let created = tokio::task::spawn_blocking(move || {
        hookd(
            &url,
            &[
                "keys",
                "create",
                "--user-id",
                "7",
                "--company-id",
                "acme",
                "--scope",
                "webhooks:read",
            ],
        )
    })
    .await
    .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let created: Value = serde_json::from_slice(&created.stdout).expect("JSON on stdout");
    let key = created["key"].as_str().unwrap();
    assert_eq!(created["scopes"], json!(["webhooks:read"]));
    app.get("/api/webhooks/outgoing", key).await.expect(200);

    let url = app.database_url.clone();
    let id = created["id"].as_str().unwrap().to_string();
    let revoked = tokio::task::spawn_blocking(move || hookd(&url, &["keys", "revoke", &id]))
        .await
        .unwrap();
    assert!(revoked.status.success());
    app.get("/api/webhooks/outgoing", key)
        .await
        .expect_error(401, "unauthorized");

    let url = app.database_url.clone();
    let bad = tokio::task::spawn_blocking(move || {
        hookd(
            &url,
            &[
                "keys",
                "create",
                "--user-id",
                "7",
                "--company-id",
                "c",
                "--scope",
                "nope",
            ],
        )
    })
    .await
    .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("scopes[0]"));
}
