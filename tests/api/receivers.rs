//! The spec's receiver code verifies hookd's signatures, run as written (Python's `hmac` as in the
//! Flask example, Node's `crypto` over `JSON.stringify(req.body)` as in the Express example).
//! Skipped, saying so, where `python3` or `node` is not installed.

use std::{io::Write, process::Command, time::Duration};

use serde_json::json;

use crate::both_backends;
use crate::helpers::{Backend, spawn_app};
use crate::receiver::Receiver;

both_backends!(spec_receivers_accept_the_signature);

const PYTHON: &str = r#"
import hmac, hashlib, sys
def verify_webhook_signature(payload: bytes, signature: str, secret: str) -> bool:
    expected_signature = hmac.new(
        secret.encode(),
        payload,
        hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(signature, expected_signature)
payload = open(sys.argv[1], 'rb').read()
print(verify_webhook_signature(payload, sys.argv[2], 'your-webhook-secret'))
"#;

// With `node -e`, process.argv is [node, file, signature].
const NODE: &str = r#"
const crypto = require('crypto');
const fs = require('fs');
const req = { body: JSON.parse(fs.readFileSync(process.argv[1], 'utf8')) };
const signature = process.argv[2];
const payload = JSON.stringify(req.body);
const expectedSig = crypto
    .createHmac('sha256', 'your-webhook-secret')
    .update(payload, 'utf8')
    .digest('hex');
console.log(signature === expectedSig ? 'True' : 'False');
"#;

/// The public Standard Webhooks library's verification (PyPI `standardwebhooks`).
const STANDARD_WEBHOOKS: &str = r#"
import sys, json
from standardwebhooks.webhooks import Webhook
payload = open(sys.argv[1], 'rb').read()
headers = json.loads(sys.argv[2])
Webhook(headers.pop('secret')).verify(payload, headers)
print('True')
"#;

fn run(program: &str, script: &str, body: &[u8], signature: &str) -> Option<String> {
    let mut body_file = tempfile::NamedTempFile::new().unwrap();
    body_file.write_all(body).unwrap();
    let flag = if program == "node" { "-e" } else { "-c" };
    let output = Command::new(program)
        .args([flag, script])
        .arg(body_file.path())
        .arg(signature)
        .output()
        .ok()?;
    Some(
        String::from_utf8_lossy(&output.stdout).trim().to_string()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

async fn spec_receivers_accept_the_signature(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    let key = app.tenant_key().await;
    app.post(
        "/api/webhooks/outgoing",
        &key,
        &json!({"url": receiver.url, "secret": "your-webhook-secret"}),
    )
    .await
    .expect(201);
    let standard_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    app.post(
        "/api/webhooks/outgoing",
        &key,
        &json!({"url": format!("{}/standard", receiver.url), "secret": standard_secret}),
    )
    .await
    .expect(201);
    let data = json!({"task_name": "nightly", "error_message": "ünïcödé \"quoted\" </script>", "n": 42, "ok": true, "list": [1, 2]});
    app.post(
        "/api/events",
        &key,
        &json!({"event_type": "task.completed", "data": data}),
    )
    .await
    .expect(202);
    let received = receiver.wait_for(2, Duration::from_secs(10)).await;
    let got = received.iter().find(|r| r.path == "/").unwrap().clone();
    let standard = received
        .iter()
        .find(|r| r.path == "/standard")
        .unwrap()
        .clone();
    let signature = got.header("x-webhook-signature").to_string();
    let standard_headers = json!({
        "secret": standard_secret,
        "webhook-id": standard.header("webhook-id"),
        "webhook-timestamp": standard.header("webhook-timestamp"),
        "webhook-signature": standard.header("webhook-signature"),
    })
    .to_string();
    let has_library = Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .status()
        .is_ok_and(|s| s.success());
    let mut checks = vec![
        ("python3", PYTHON, got.body.clone(), signature.clone()),
        ("node", NODE, got.body.clone(), signature),
    ];
    if has_library {
        checks.push((
            "python3",
            STANDARD_WEBHOOKS,
            standard.body.clone(),
            standard_headers,
        ));
    } else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: Python package standardwebhooks is not installed"
        );
    }
    for (program, script, body, signature) in checks {
        let verdict = tokio::task::spawn_blocking(move || run(program, script, &body, &signature))
            .await
            .unwrap();
        match verdict {
            Some(verdict) => assert_eq!(verdict, "True", "{program} refused the signature"),
            None => {
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: {program} is not installed; its receiver check did not run"
                );
            }
        }
    }
}
