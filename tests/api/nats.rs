//! The NATS JetStream source against the real server: each test has a stream of its own,
//! deleted at its end. Skipped when NATS cannot be reached, unless `HOOKD_REQUIRE_NATS=1`.

use std::time::Duration;

use serde_json::{Value, json};

use hookd::config::Sources;

use crate::both_backends;
use crate::delivery::webhook;
use crate::helpers::{
    Backend, TestApp, TestStream, metrics_text, nats, nats_messages, spawn_app_with,
};
use crate::receiver::Receiver;

both_backends!(
    messages_are_published_as_the_sources_tenant_and_acknowledged,
    malformed_messages_are_terminated_logged_and_counted,
    a_repeated_nats_msg_id_publishes_nothing_new,
);

const WAIT: Duration = Duration::from_secs(20);
const CONSUMER: &str = "hookd";
const USER: &str = "nats-publisher";

/// A node reading a fresh stream as a fresh company's `USER`, with one webhook of that company
/// subscribed to `task.completed` and sending to a receiver.
/// (Fields drop in order: the node is told to stop before its stream is deleted.)
struct Source {
    app: TestApp,
    receiver: Receiver,
    stream: TestStream,
    key: String,
    hook: String,
}

/// A [`Source`] on `backend`, its stream with `duplicate_window` (see [`TestStream::create`]);
/// `None` when NATS is not there (the test is skipped).
async fn source(backend: Backend, duplicate_window: Option<Duration>) -> Option<Source> {
    let stream = TestStream::create(&nats().await?, duplicate_window).await;
    let receiver = Receiver::start().await;
    let company = format!("company-{}", uuid::Uuid::now_v7().simple());
    let source_settings = stream.source(CONSUMER, &company, USER);
    let app = spawn_app_with(backend, |settings| {
        settings.sources = Some(Sources {
            nats: vec![source_settings],
        });
        // Below NATS's own 1 MiB limit, so that a message can be too large for hookd.
        settings.max_body_bytes = Some(64 * 1024);
    })
    .await;
    let key = app.key_for(USER, &company, &[]).await;
    let hook = webhook(
        &app,
        &key,
        json!({"url": format!("{}/hook", receiver.url), "event_types": ["task.completed"]}),
    )
    .await;
    Some(Source {
        app,
        receiver,
        stream,
        key,
        hook,
    })
}

fn task(n: i64) -> String {
    json!({"event_type": "task.completed", "data": {"n": n}}).to_string()
}

impl Source {
    /// Messages the node has counted with `outcome`.
    async fn counted(&self, outcome: &str) -> u64 {
        let metrics = metrics_text(&self.app.client, &self.app.base).await;
        nats_messages(&metrics, &self.stream.name, outcome)
    }

    /// The webhook's deliveries, as the API lists them.
    async fn deliveries(&self) -> Vec<Value> {
        let path = format!("/api/webhooks/outgoing/{}/deliveries?limit=1000", self.hook);
        let listed = self.app.get(&path, &self.key).await.expect(200);
        listed.as_array().expect("deliveries").clone()
    }
}

async fn messages_are_published_as_the_sources_tenant_and_acknowledged(backend: Backend) {
    let Some(source) = source(backend, None).await else {
        return;
    };
    let Source {
        stream,
        receiver,
        app,
        ..
    } = &source;
    // Another company's webhook on the same node hears nothing of this source.
    let other_receiver = Receiver::start().await;
    let other = app.key_for(USER, "another-company", &[]).await;
    webhook(
        app,
        &other,
        json!({"url": format!("{}/hook", other_receiver.url), "event_types": ["*"]}),
    )
    .await;

    for n in 0..20 {
        stream.publish(Some(&format!("task-{n}")), task(n)).await;
    }
    let received = receiver.wait_for(20, WAIT).await;
    let mut seen: Vec<i64> = received
        .iter()
        .map(|r| r.json()["data"]["n"].as_i64().expect("n"))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
    stream.wait_until_consumed(CONSUMER, WAIT).await;
    assert_eq!(source.deliveries().await.len(), 20);
    assert_eq!(other_receiver.count(), 0);
    assert_eq!(source.counted("published").await, 20);
    assert_eq!(source.counted("terminated").await, 0);
}

async fn malformed_messages_are_terminated_logged_and_counted(backend: Backend) {
    let Some(source) = source(backend, None).await else {
        return;
    };
    let (stream, receiver) = (&source.stream, &source.receiver);
    let refused = [
        "not json".to_string(),
        "[1, 2]".to_string(),
        json!({"data": {"n": 1}}).to_string(),
        json!({"event_type": "no.such.type", "data": {}}).to_string(),
        json!({"event_type": "task.completed", "data": "x".repeat(100 * 1024)}).to_string(),
    ];
    for (n, body) in refused.iter().enumerate() {
        stream
            .publish(Some(&format!("bad-{n}")), body.clone())
            .await;
    }
    // A key too long for an Idempotency-Key is refused as the API refuses it.
    stream.publish(Some(&"k".repeat(256)), task(0)).await;
    stream.publish(Some("good"), task(1)).await;

    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got[0].json()["data"]["n"], 1);
    stream.wait_until_consumed(CONSUMER, WAIT).await;
    assert_eq!(source.counted("terminated").await, 6);
    assert_eq!(source.counted("published").await, 1);
    assert_eq!(source.counted("retried").await, 0);
    // Terminated, not left to come back: nothing was redelivered.
    let info = stream
        .jetstream
        .get_stream(&stream.name)
        .await
        .expect("stream")
        .consumer_info(CONSUMER)
        .await
        .expect("consumer");
    assert_eq!(info.num_redelivered, 0);
    assert_eq!(source.deliveries().await.len(), 1);
}

async fn a_repeated_nats_msg_id_publishes_nothing_new(backend: Backend) {
    // JetStream drops a repeated id itself within its duplicate window; past a short one, the
    // repeat reaches hookd, as a redelivery after a crash does.
    let window = Duration::from_millis(100);
    let Some(source) = source(backend, Some(window)).await else {
        return;
    };
    let stream = &source.stream;
    stream.publish(Some("order-1"), task(1)).await;
    stream.wait_until_consumed(CONSUMER, WAIT).await;
    tokio::time::sleep(window * 3).await;
    stream.publish(Some("order-1"), task(1)).await;
    tokio::time::sleep(window * 3).await;
    // The same key with another event: the API answers 422, so the message is terminated.
    stream.publish(Some("order-1"), task(2)).await;
    stream.wait_until_consumed(CONSUMER, WAIT).await;

    assert_eq!(source.counted("published").await, 2);
    assert_eq!(source.counted("terminated").await, 1);
    let listed = source.deliveries().await;
    assert_eq!(listed.len(), 1, "one event, one delivery: {listed:?}");
    let got = source.receiver.wait_for(1, WAIT).await;
    assert_eq!(got[0].json()["data"]["n"], 1);
}
