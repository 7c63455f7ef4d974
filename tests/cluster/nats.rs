//! The NATS source in real nodes: killed mid-stream and restarted, and through a store outage,
//! every message's event is published once and delivered.

use std::{
    collections::{HashMap, HashSet},
    io::Write,
    time::{Duration, Instant},
};

use async_nats::jetstream::consumer::{AckPolicy, pull};
use serde_json::json;
use sqlx::Connection;

use crate::helpers::{ADMIN_KEY, Backend, TestStream, nats, nats_messages};
use crate::node::{Node, cut_off_postgres, database, duplicates, wait_for_deliveries, wait_until};
use crate::receiver::Receiver;

const CONSUMER: &str = "hookd";
const USER: &str = "nats-publisher";
const COMPANY: &str = "company-nats";

/// A config file naming `stream` as a source, and the node's environment pointing at it.
fn config_file(stream: &TestStream) -> tempfile::NamedTempFile {
    let source = stream.source(CONSUMER, COMPANY, USER);
    let mut file = tempfile::NamedTempFile::new().expect("config file");
    write!(
        file,
        "[[sources.nats]]\nurl = {:?}\nstream = {:?}\nconsumer = {:?}\nsubject = {:?}\n\
         company_id = {:?}\nuser_id = {:?}\n",
        source.url,
        source.stream,
        source.consumer,
        source.subject,
        source.company_id,
        source.user_id
    )
    .expect("write config");
    file
}

/// The consumer hookd will find (and use as it is) with a short ack wait, so that what a killed
/// node took and never acknowledged comes back in a second, not in the default 30.
async fn consumer_with_short_ack_wait(stream: &TestStream) {
    stream
        .jetstream
        .get_stream(&stream.name)
        .await
        .expect("stream")
        .create_consumer(pull::Config {
            durable_name: Some(CONSUMER.into()),
            filter_subject: format!("{}.>", stream.name),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(1),
            ..Default::default()
        })
        .await
        .expect("consumer");
}

/// A node reading a fresh stream as the source's tenant, whose one webhook sends to `receiver`.
/// (Fields drop in order: the node stops before its stream is deleted.)
struct SourceNode {
    node: Node,
    receiver: Receiver,
    stream: TestStream,
    /// The config file's path, for starting the node again.
    config_path: String,
    url: String,
    _config: tempfile::NamedTempFile,
    _db: crate::helpers::TestDb,
}

impl SourceNode {
    /// On `backend`; with `short_ack_wait`, on a consumer made beforehand that redelivers what
    /// a dead node took after 1 s. `None` when NATS or PostgreSQL is not there (skipped).
    async fn start(backend: Backend, short_ack_wait: bool) -> Option<SourceNode> {
        let jetstream = nats().await?;
        let (db, url) = database(backend).await?;
        let stream = TestStream::create(&jetstream, None).await;
        if short_ack_wait {
            consumer_with_short_ack_wait(&stream).await;
        }
        let config = config_file(&stream);
        let config_path = config.path().to_str().expect("utf-8 path").to_string();
        let node = Node::start(&url, &[("HOOKD_CONFIG", config_path.as_str())]).await;
        let receiver = Receiver::start().await;
        let created = node
            .post(
                "/api/admin/keys",
                ADMIN_KEY,
                &json!({"user_id": USER, "company_id": COMPANY}),
            )
            .await
            .expect(201);
        let key = created["key"].as_str().expect("key");
        node.webhooks(key, &receiver, 1, json!({})).await;
        Some(SourceNode {
            node,
            receiver,
            stream,
            config_path,
            url,
            _config: config,
            _db: db,
        })
    }

    /// Another node like the first, on the same store and stream.
    async fn restart(&self) -> Node {
        Node::start(&self.url, &[("HOOKD_CONFIG", self.config_path.as_str())]).await
    }

    /// Messages the node has counted with `outcome`.
    async fn counted(&self, node: &Node, outcome: &str) -> u64 {
        nats_messages(&node.metrics().await, &self.stream.name, outcome)
    }

    async fn consumer_info(&self) -> async_nats::jetstream::consumer::Info {
        self.stream
            .jetstream
            .get_stream(&self.stream.name)
            .await
            .expect("stream")
            .consumer_info(CONSUMER)
            .await
            .expect("consumer")
    }
}

/// Publishes messages `range` on the stream, each with its number as `Nats-Msg-Id`, many in
/// flight at once; returns once JetStream stored them all.
async fn publish_tasks(stream: &TestStream, range: std::ops::Range<usize>) {
    let subject = format!("{}.events", stream.name);
    let mut stored = Vec::new();
    for n in range {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("task-{n}").as_str(),
        );
        let body = json!({"event_type": "task.completed", "data": {"n": n}}).to_string();
        stored.push(
            stream
                .jetstream
                .publish_with_headers(subject.clone(), headers, body.into())
                .await
                .expect("publish"),
        );
        if stored.len() == 1_000 {
            for ack in stored.drain(..) {
                ack.await.expect("stored by JetStream");
            }
        }
    }
    for ack in stored {
        ack.await.expect("stored by JetStream");
    }
}

/// Rows in `table` of the node's database, read beside hookd.
async fn count_rows(url: &str, table: &str) -> i64 {
    let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"));
    if url.starts_with("sqlite:") {
        let mut connection = sqlx::SqliteConnection::connect(url).await.expect("sqlite");
        sqlx::query_scalar(sql).fetch_one(&mut connection).await
    } else {
        let mut connection = sqlx::PgConnection::connect(url).await.expect("postgres");
        sqlx::query_scalar(sql).fetch_one(&mut connection).await
    }
    .expect("count")
}

/// Each task number received, with the distinct event ids it arrived under.
fn events_by_task(receiver: &Receiver) -> HashMap<u64, HashSet<String>> {
    let mut by_task: HashMap<u64, HashSet<String>> = HashMap::new();
    for request in receiver.received() {
        let body = request.json();
        let n = body["data"]["n"].as_u64().expect("n");
        let event = body["event_id"].as_str().expect("event_id").to_string();
        by_task.entry(n).or_default().insert(event);
    }
    by_task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_node_killed_mid_stream_publishes_every_message_once_after_restart() {
    const MESSAGES: usize = 10_000;
    let Some(mut source) = SourceNode::start(Backend::Sqlite, true).await else {
        return;
    };
    publish_tasks(&source.stream, 0..MESSAGES).await;
    // Killed once a fifth was published, however slow the machine is today.
    let mut published_before = 0;
    wait_until(
        "a fifth of the messages published",
        Duration::from_secs(120),
        async || {
            published_before = source.counted(&source.node, "published").await;
            published_before >= (MESSAGES / 5) as u64
        },
    )
    .await;
    source.node.kill();
    let restarted = source.restart().await;

    let started = Instant::now();
    source
        .stream
        .wait_until_consumed(CONSUMER, Duration::from_secs(180))
        .await;
    let consumed_in = started.elapsed();
    assert_eq!(
        count_rows(&source.url, "events").await,
        MESSAGES as i64,
        "each message published exactly once"
    );
    let tally = wait_for_deliveries(&source.receiver, MESSAGES, Duration::from_secs(180)).await;
    let by_task = events_by_task(&source.receiver);
    assert_eq!(by_task.len(), MESSAGES, "every message's event delivered");
    let twice = by_task.values().filter(|events| events.len() > 1).count();
    assert_eq!(twice, 0, "{twice} messages published as two events");
    let after = source.counted(&restarted, "published").await;
    eprintln!(
        "nats crash: killed after at least {published_before} of {MESSAGES} messages were \
         published; the restarted node acknowledged {after} in {consumed_in:.1?}; {MESSAGES} \
         events, {} deliveries, {} sent twice",
        tally.len(),
        duplicates(&tally)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_stops_fetching_finishes_in_flight_and_loses_nothing() {
    const MESSAGES: usize = 3_000;
    let Some(mut source) = SourceNode::start(Backend::Sqlite, true).await else {
        return;
    };
    publish_tasks(&source.stream, 0..MESSAGES).await;
    wait_until(
        "some messages published",
        Duration::from_secs(60),
        async || source.counted(&source.node, "published").await >= 300,
    )
    .await;
    let took = source.node.terminate(Duration::from_secs(15)).await;
    let info = source.consumer_info().await;
    assert!(
        info.num_pending > 0,
        "the stop came too late to test anything"
    );
    let _restarted = source.restart().await;
    source
        .stream
        .wait_until_consumed(CONSUMER, Duration::from_secs(120))
        .await;
    assert_eq!(count_rows(&source.url, "events").await, MESSAGES as i64);
    wait_for_deliveries(&source.receiver, MESSAGES, Duration::from_secs(120)).await;
    assert_eq!(events_by_task(&source.receiver).len(), MESSAGES);
    eprintln!(
        "nats sigterm: stopped in {took:.1?} with {} messages left in the stream, {} awaiting \
         acknowledgement; all {MESSAGES} published once after restart",
        info.num_pending, info.num_ack_pending
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_naks_messages_with_a_delay_and_loses_none() {
    const MESSAGES: usize = 100;
    let Some(source) = SourceNode::start(Backend::Postgres, false).await else {
        return;
    };
    let reconnect = cut_off_postgres(&source.url).await;
    publish_tasks(&source.stream, 0..MESSAGES).await;
    let outage = Duration::from_secs(5);
    tokio::time::sleep(outage).await;
    let retried = source.counted(&source.node, "retried").await;
    assert_eq!(source.counted(&source.node, "published").await, 0);
    assert!(retried > 0, "no message was tried during the outage");
    // Each of the 64 slots tries one message per 2 s delay: no busy loop.
    assert!(
        retried <= 64 * 4,
        "{retried} tries in {outage:?}: naks are not delayed"
    );
    assert_eq!(source.receiver.count(), 0);
    reconnect().await;

    source
        .stream
        .wait_until_consumed(CONSUMER, Duration::from_secs(60))
        .await;
    wait_for_deliveries(&source.receiver, MESSAGES, Duration::from_secs(30)).await;
    let by_task = events_by_task(&source.receiver);
    assert_eq!(by_task.len(), MESSAGES);
    assert!(by_task.values().all(|events| events.len() == 1));
    eprintln!(
        "nats store outage: {retried} tries naked in {outage:?}; all {MESSAGES} published and \
         delivered once the database came back"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_consumer_share_the_messages_and_publish_each_once() {
    const MESSAGES: usize = 2_000;
    let Some(source) = SourceNode::start(Backend::Postgres, false).await else {
        return;
    };
    let second = source.restart().await;
    publish_tasks(&source.stream, 0..MESSAGES).await;
    source
        .stream
        .wait_until_consumed(CONSUMER, Duration::from_secs(120))
        .await;
    let first_took = source.counted(&source.node, "published").await;
    let second_took = source.counted(&second, "published").await;
    // More than MESSAGES only if a message was redelivered (answered from its key then).
    assert!(first_took + second_took >= MESSAGES as u64);
    assert!(
        first_took > 0 && second_took > 0,
        "one node took every message: {first_took} and {second_took}"
    );
    assert_eq!(count_rows(&source.url, "events").await, MESSAGES as i64);
    wait_for_deliveries(&source.receiver, MESSAGES, Duration::from_secs(60)).await;
    assert_eq!(events_by_task(&source.receiver).len(), MESSAGES);
    eprintln!(
        "nats work queue: two nodes published {first_took} and {second_took} of {MESSAGES} \
         messages, each once"
    );
}
