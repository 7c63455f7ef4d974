//! Secret rotation without a gap: outgoing deliveries signed with both secrets during the
//! overlap (checked with the public Standard Webhooks library), retries and replays signed with
//! the secrets valid when sent, and incoming verification accepting the replaced secret until it
//! expires.

use std::{io::Write, process::Command, time::Duration};

use hookd::domain::signature::hex_hmac_sha256;
use serde_json::{Value, json};

use crate::both_backends;
use crate::delivery::{wait_for_status, webhook};
use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with};
use crate::receiver::{Received, Receiver, Reply};
use crate::receiving::{create_hook, headers, post_with};

both_backends!(
    outgoing_rotation_signs_with_both_secrets_until_the_overlap_ends,
    retries_and_replays_sign_with_the_secrets_valid_when_sent,
    rotate_secret_needs_write_scope_and_the_tenants_own_webhook,
    incoming_rotation_accepts_the_replaced_secret_until_it_expires,
);

const WAIT: Duration = Duration::from_secs(10);
const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Whether the public Standard Webhooks library (PyPI `standardwebhooks`, installed by
/// `.ci/run`) accepts `received` under `secret`.
fn standard_webhooks_accepts(secret: &str, received: &Received) -> bool {
    const SCRIPT: &str = r#"
import sys, json
from standardwebhooks.webhooks import Webhook
payload = open(sys.argv[1], 'rb').read()
headers = json.loads(sys.argv[2])
try:
    Webhook(sys.argv[3]).verify(payload, headers)
    print('True')
except Exception as e:
    print('False', e)
"#;
    let mut body = tempfile::NamedTempFile::new().unwrap();
    body.write_all(&received.body).unwrap();
    let headers = json!({
        "webhook-id": received.header("webhook-id"),
        "webhook-timestamp": received.header("webhook-timestamp"),
        "webhook-signature": received.header("webhook-signature"),
    });
    let output = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(body.path())
        .arg(headers.to_string())
        .arg(secret)
        .output()
        .expect("python3 runs");
    let verdict = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(
        verdict.starts_with("True") || verdict.starts_with("False"),
        "the standardwebhooks library did not run: {verdict} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    verdict == "True"
}

async fn publish(app: &TestApp, key: &str) {
    app.post(
        "/api/events",
        key,
        &json!({"event_type": "task.completed", "data": {"n": 1}}),
    )
    .await
    .expect(202);
}

async fn rotate(app: &TestApp, key: &str, path: &str, body: Value) -> Value {
    app.post(&format!("{path}/rotate-secret"), key, &body)
        .await
        .expect(200)
}

async fn outgoing_rotation_signs_with_both_secrets_until_the_overlap_ends(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    let key = app.tenant_key().await;
    let id = webhook(&app, &key, json!({"url": receiver.url, "secret": OLD})).await;
    let path = format!("/api/webhooks/outgoing/{id}");

    let rotated = rotate(&app, &key, &path, json!({"previous_valid_for": 2})).await;
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert!(new.starts_with("whsec_") && new != OLD, "{rotated}");
    let expires = rotated["previous_expires_at"].as_str().unwrap().to_string();
    // The new secret is shown once: never in the webhook or the listing.
    let shown = app.get(&path, &key).await.expect(200);
    assert_eq!(shown["previous_secret_expires_at"], expires.as_str());
    assert_eq!(shown["has_secret"], true);
    let listing = app
        .get("/api/webhooks/outgoing", &key)
        .await
        .expect(200)
        .to_string();
    assert!(!listing.contains(&new) && !listing.contains(OLD));

    // During the overlap: both signatures, each verified by the public library.
    publish(&app, &key).await;
    let during = receiver.wait_for(1, WAIT).await[0].clone();
    assert_eq!(
        during.header("webhook-signature").split(' ').count(),
        2,
        "v1,<new> v1,<old>"
    );
    assert!(standard_webhooks_accepts(&new, &during));
    assert!(standard_webhooks_accepts(OLD, &during));
    assert!(!standard_webhooks_accepts(
        "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX",
        &during
    ));
    assert_eq!(
        during.header("x-webhook-signature"),
        hex_hmac_sha256(&new, &during.body)
    );
    assert_eq!(
        during.header("x-webhook-signature-previous"),
        hex_hmac_sha256(OLD, &during.body)
    );

    // After it: the new secret only.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(
        app.get(&path, &key).await.expect(200)["previous_secret_expires_at"],
        Value::Null
    );
    publish(&app, &key).await;
    let after = receiver.wait_for(2, WAIT).await[1].clone();
    assert_eq!(after.header("webhook-signature").split(' ').count(), 1);
    assert!(standard_webhooks_accepts(&new, &after));
    assert!(!standard_webhooks_accepts(OLD, &after));
    assert!(after.headers.get("x-webhook-signature-previous").is_none());
    assert_eq!(
        after.header("x-webhook-signature"),
        hex_hmac_sha256(&new, &after.body)
    );

    // Setting the secret another way takes effect at once: no overlap.
    rotate(&app, &key, &path, json!({"secret": "third"})).await;
    let changed = app
        .put(&path, &key, &json!({"secret": "fourth"}))
        .await
        .expect(200);
    assert_eq!(changed["previous_secret_expires_at"], Value::Null);
}

async fn retries_and_replays_sign_with_the_secrets_valid_when_sent(backend: Backend) {
    // One unit of retry_delay is 500 ms: time to rotate between the attempt and its retry.
    let app = spawn_app_with(backend, |s| s.retry_unit_ms = Some(500)).await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(500)]);
    let key = app.tenant_key().await;
    let id = webhook(
        &app,
        &key,
        json!({"url": receiver.url, "secret": "first", "retry_count": 1, "retry_delay": 1}),
    )
    .await;
    let path = format!("/api/webhooks/outgoing/{id}");
    publish(&app, &key).await;
    let first = receiver.wait_for(1, WAIT).await[0].clone();
    assert_eq!(
        first.header("x-webhook-signature"),
        hex_hmac_sha256("first", &first.body)
    );
    // No overlap: from now on only the new secret signs, the pending retry included.
    let rotated = rotate(
        &app,
        &key,
        &path,
        json!({"secret": "second", "previous_valid_for": 0}),
    )
    .await;
    assert_eq!(rotated["previous_expires_at"], Value::Null);
    let retry = receiver.wait_for(2, WAIT).await[1].clone();
    assert_eq!(retry.header("webhook-id"), first.header("webhook-id"));
    assert_eq!(
        retry.header("x-webhook-signature"),
        hex_hmac_sha256("second", &retry.body)
    );
    assert!(retry.headers.get("x-webhook-signature-previous").is_none());

    // A replay of the delivered delivery, after another rotation, with an overlap. The retry
    // has arrived, but its outcome may not be recorded yet: until it is, the delivery is
    // pending and cannot be retried.
    let delivery = wait_for_status(&app, &key, &id, "delivered").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    rotate(&app, &key, &path, json!({"secret": "third"})).await;
    app.post(
        &format!("{path}/deliveries/{delivery}/retry"),
        &key,
        &json!({}),
    )
    .await
    .expect(202);
    let replay = receiver.wait_for(3, WAIT).await[2].clone();
    assert_eq!(
        replay.header("x-webhook-signature"),
        hex_hmac_sha256("third", &replay.body)
    );
    assert_eq!(
        replay.header("x-webhook-signature-previous"),
        hex_hmac_sha256("second", &replay.body)
    );
}

async fn rotate_secret_needs_write_scope_and_the_tenants_own_webhook(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.key_for("alice", "acme", &[]).await;
    let reader = app.key_for("alice", "acme", &["webhooks:read"]).await;
    let other = app.key_for("mallory", "evil", &[]).await;
    let id = webhook(&app, &key, json!({"url": "http://127.0.0.1:9/hook"})).await;
    let path = format!("/api/webhooks/outgoing/{id}/rotate-secret");
    let incoming = create_hook(
        &app,
        &key,
        json!({"agent_id": "a", "verification": {"type": "github", "secret": "s"}}),
    )
    .await;
    let incoming_path = format!("/api/webhooks/incoming/{}/rotate-secret", incoming.id);
    for path in [&path, &incoming_path] {
        app.post(path, &reader, &json!({}))
            .await
            .expect_error(403, "forbidden");
        app.post(path, &other, &json!({}))
            .await
            .expect_error(404, "not_found");
        let detail = app
            .post(path, &key, &json!({"previous_valid_for": -5}))
            .await
            .expect_error(422, "validation_error");
        assert!(detail.starts_with("previous_valid_for"), "{detail}");
        let detail = app
            .post(path, &key, &json!({"secret": 5}))
            .await
            .expect_error(422, "validation_error");
        assert!(detail.contains("secret"), "{detail}");
    }
    app.post(
        "/api/webhooks/outgoing/nope/rotate-secret",
        &key,
        &json!({}),
    )
    .await
    .expect_error(404, "not_found");
    let openapi = app
        .request(reqwest::Method::GET, "/openapi.json", None, None)
        .await
        .expect(200);
    for documented in [
        "/api/webhooks/outgoing/{id}/rotate-secret",
        "/api/webhooks/incoming/{id}/rotate-secret",
    ] {
        assert!(
            openapi["paths"][documented]["post"].is_object(),
            "{documented} is not in the OpenAPI document"
        );
    }

    // A webhook without a secret gets its first one: nothing to keep valid beside it. No body
    // is needed.
    let answer = app
        .request(reqwest::Method::POST, &path, Some(&key), None)
        .await
        .expect(200);
    assert!(answer["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(answer["previous_expires_at"], Value::Null);
    let same = json!({"secret": answer["secret"]});
    let detail = app
        .post(&path, &key, &same)
        .await
        .expect_error(422, "validation_error");
    assert!(detail.starts_with("secret"), "{detail}");

    let plain = create_hook(&app, &key, json!({"agent_id": "a"})).await;
    let detail = app
        .post(
            &format!("/api/webhooks/incoming/{}/rotate-secret", plain.id),
            &key,
            &json!({}),
        )
        .await
        .expect_error(422, "validation_error");
    assert!(detail.starts_with("verification"), "{detail}");
}

async fn incoming_rotation_accepts_the_replaced_secret_until_it_expires(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let hook = create_hook(
        &app,
        &key,
        json!({"agent_id": "a", "verification": {"type": "github", "secret": "old-secret"}}),
    )
    .await;
    let path = format!("/api/webhooks/incoming/{}", hook.id);
    let body = r#"{"action":"opened"}"#;
    let signed = |secret: &str| {
        let signature = format!("sha256={}", hex_hmac_sha256(secret, body.as_bytes()));
        headers(&[("x-hub-signature-256", &signature)])
    };
    let rotated = rotate(&app, &key, &path, json!({"previous_valid_for": 2})).await;
    let new = rotated["secret"].as_str().unwrap().to_string();
    let shown = app.get(&path, &key).await.expect(200);
    assert_eq!(shown["verification"]["type"], "github");
    assert_eq!(shown["verification"]["secret_set"], true);
    assert_eq!(shown["verification"]["previous_secret_set"], true);
    assert_eq!(
        shown["verification"]["previous_expires_at"],
        rotated["previous_expires_at"]
    );
    assert!(!shown.to_string().contains(&new));
    assert!(
        !app.get("/api/webhooks/incoming", &key)
            .await
            .expect(200)
            .to_string()
            .contains(&new)
    );

    for secret in ["old-secret", new.as_str()] {
        post_with(&app, &hook, "application/json", body, signed(secret))
            .await
            .expect(202);
    }
    post_with(&app, &hook, "application/json", body, signed("wrong"))
        .await
        .expect_error(401, "invalid_signature");
    // Sending back what was read keeps the setting and the overlap.
    let sent_back = json!({"verification": shown["verification"], "name": "renamed"});
    let updated = app.put(&path, &key, &sent_back).await.expect(200);
    assert_eq!(updated["verification"]["previous_secret_set"], true);

    tokio::time::sleep(Duration::from_millis(2_100)).await;
    post_with(&app, &hook, "application/json", body, signed("old-secret"))
        .await
        .expect_error(401, "invalid_signature");
    post_with(&app, &hook, "application/json", body, signed(&new))
        .await
        .expect(202);
    let after = app.get(&path, &key).await.expect(200);
    assert_eq!(after["verification"].get("previous_secret_set"), None);
}
