//! The connection layer against hostile clients, over raw TCP: silent or slow connections are
//! closed, slow bodies are cut, declared oversized bodies are refused before they are read.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with};
use crate::receiving::create_hook;

both_backends!(
    silent_slow_and_idle_connections_are_closed_after_the_header_timeout,
    a_trickled_body_is_cut_with_408,
    a_declared_length_over_the_limit_is_refused_at_once,
);

/// Far above the timeouts these tests set, so a loaded machine does not fail them; far below
/// "never", which is what they guard against.
const GENEROUS: Duration = Duration::from_secs(20);

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// Sends `head`, then trickles `drip` a byte every 100 ms (until the server stops taking it), and
/// returns everything the server sent until it closed the connection; panics if it is still
/// open after `within`.
async fn exchange(app: &TestApp, head: String, drip: &'static [u8], within: Duration) -> String {
    let stream = connect(app).await;
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(head.as_bytes()).await.expect("head sent");
    let trickle = tokio::spawn(async move {
        for byte in drip.iter().cycle() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
        }
        // Never half-closed: the server may close a connection at once when its client did.
        std::future::pending::<()>().await;
        drop(writer);
    });
    let mut received = Vec::new();
    let closed = tokio::time::timeout(within, async {
        let mut buffer = [0u8; 4096];
        while let Ok(n @ 1..) = reader.read(&mut buffer).await {
            received.extend_from_slice(&buffer[..n]);
        }
    })
    .await;
    trickle.abort();
    let received = String::from_utf8_lossy(&received).into_owned();
    assert!(
        closed.is_ok(),
        "connection still open after {within:?}; received: {received:?}"
    );
    received
}

async fn silent_slow_and_idle_connections_are_closed_after_the_header_timeout(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.header_timeout_ms = Some(1_000)).await;
    let started = Instant::now();
    let (silent, slow_head, idle) = tokio::join!(
        exchange(&app, String::new(), b"", GENEROUS),
        exchange(
            &app,
            "GET /healthz HTTP/1.1\r\nHost: hookd\r\n".into(),
            b"X-Slow: a\r\n",
            GENEROUS,
        ),
        exchange(
            &app,
            "GET /healthz HTTP/1.1\r\nHost: hookd\r\n\r\n".into(),
            b"",
            GENEROUS,
        ),
    );
    assert_eq!(silent, "", "nothing was asked, nothing is answered");
    assert!(
        !slow_head.starts_with("HTTP/1.1 2"),
        "an unfinished head is not served: {slow_head:?}"
    );
    assert!(
        idle.starts_with("HTTP/1.1 200"),
        "a kept-alive connection is served, then closed when idle: {idle:?}"
    );
    eprintln!(
        "silent, slow-header and idle connections closed within {:.1?}",
        started.elapsed()
    );
}

/// Sends the same POST, declaring `length` bytes and giving `start` of them, then trickling
/// `drip`, to the API (`/api/events`, with a valid key) and to a receiving URL; both answers.
async fn post_to_both(
    app: &TestApp,
    length: u64,
    start: &str,
    drip: &'static [u8],
    within: Duration,
) -> [String; 2] {
    let key = app.tenant_key().await;
    let hook = create_hook(app, &key, json!({"agent_id": "listener"})).await;
    let head = |path: &str, auth: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: hookd\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: {length}\r\n\r\n{start}"
        )
    };
    let bearer = format!("Authorization: Bearer {key}\r\n");
    let receiving = format!("/webhook/{}", hook.token);
    let (api, webhook) = tokio::join!(
        exchange(app, head("/api/events", &bearer), drip, within),
        exchange(app, head(&receiving, ""), drip, within),
    );
    [api, webhook]
}

#[track_caller]
fn assert_error(answer: &str, status: u16, code: &str) {
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {status}")),
        "{answer}"
    );
    assert!(answer.contains(&format!(r#""error":"{code}""#)), "{answer}");
}

async fn a_trickled_body_is_cut_with_408(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.body_timeout_ms = Some(1_000)).await;
    for answer in post_to_both(&app, 1000, "{", b" ", GENEROUS).await {
        assert_error(&answer, 408, "request_timeout");
    }
}

async fn a_declared_length_over_the_limit_is_refused_at_once(backend: Backend) {
    // Well under the body timeout (30 s by default): the declared length alone answers.
    let app = spawn_app(backend).await;
    let within = Duration::from_secs(10);
    for answer in post_to_both(&app, 999_999_999, "{\"a", b"", within).await {
        assert_error(&answer, 413, "payload_too_large");
    }
}
