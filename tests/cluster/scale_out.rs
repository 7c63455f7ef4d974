//! Three nodes on one PostgreSQL database: the work is shared, nothing is lost or doubled, and a
//! node killed mid-run costs at most what it had in flight.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::Backend;
use crate::node::{Node, database, duplicates, publish, wait_for_deliveries};
use crate::receiver::{Receiver, Reply};

const WEBHOOKS: usize = 10;

async fn three_nodes(database_url: &str, env: &[(&str, &str)]) -> Vec<Node> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Node::start(database_url, env).await);
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_the_work_and_deliver_each_delivery_exactly_once() {
    // 6,000 deliveries: enough for every node to take a real share, short enough for a debug
    // build on two shared cores (2,000 events took 70 s there).
    const EVENTS: usize = 600;
    let Some((_db, url)) = database(Backend::Postgres).await else {
        return;
    };
    let nodes = three_nodes(&url, &[]).await;
    let receiver = Receiver::start().await;
    let key = nodes[0].tenant_key().await;
    nodes[0]
        .webhooks(&key, &receiver, WEBHOOKS, json!({}))
        .await;

    let started = Instant::now();
    let all: Vec<&Node> = nodes.iter().collect();
    publish(&all, &key, EVENTS, 100).await;
    let tally = wait_for_deliveries(&receiver, EVENTS * WEBHOOKS, Duration::from_secs(90)).await;
    let elapsed = started.elapsed();

    assert_eq!(duplicates(&tally), 0, "no delivery may arrive twice");
    let mut shares = Vec::new();
    for node in &nodes {
        shares.push(node.delivered().await);
    }
    eprintln!(
        "scale-out: {} deliveries in {elapsed:.1?} by 3 nodes, shares {shares:?}",
        tally.len()
    );
    assert_eq!(shares.iter().sum::<u64>(), (EVENTS * WEBHOOKS) as u64);
    for share in shares {
        assert!(
            share * 10 >= (EVENTS * WEBHOOKS) as u64,
            "each node delivers at least 10%: {share}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_loses_nothing_and_duplicates_at_most_its_in_flight_work() {
    const EVENTS: usize = 300;
    // The bound on what one node has in flight, and so on the duplicates its death may cause.
    const CONCURRENCY: usize = 32;
    let Some((_db, url)) = database(Backend::Postgres).await else {
        return;
    };
    let concurrency = CONCURRENCY.to_string();
    // A short lease so the dead node's deliveries are taken over within the test.
    let env = [
        ("HOOKD_LEASE_MS", "3000"),
        ("HOOKD_DELIVERY_CONCURRENCY", concurrency.as_str()),
    ];
    let mut nodes = three_nodes(&url, &env).await;
    let receiver = Receiver::start().await;
    // Slow enough that each node has attempts in flight when one is killed.
    receiver.always(Reply::Stall(Duration::from_millis(20)));
    let key = nodes[0].tenant_key().await;
    // timeout 1 s: the attempt and its recording fit in the 3 s lease without extending it.
    nodes[0]
        .webhooks(&key, &receiver, WEBHOOKS, json!({"timeout": 1}))
        .await;

    let all: Vec<&Node> = nodes.iter().collect();
    publish(&all, &key, EVENTS, 50).await;
    let total = EVENTS * WEBHOOKS;
    receiver.wait_for(total / 4, Duration::from_secs(60)).await;
    nodes[1].kill();
    let killed_at = Instant::now();

    let tally = wait_for_deliveries(&receiver, total, Duration::from_secs(60)).await;
    let duplicates = duplicates(&tally);
    eprintln!(
        "SIGKILL of one of 3 nodes: all {total} deliveries arrived {:.1?} after the kill, \
         {duplicates} duplicates",
        killed_at.elapsed()
    );
    assert!(
        duplicates <= CONCURRENCY,
        "{duplicates} duplicates, more than the {CONCURRENCY} the killed node could have had in flight"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_webhook_keeps_publish_order_across_three_nodes_and_a_killed_one() {
    const EVENTS: usize = 60;
    let Some((_db, url)) = database(Backend::Postgres).await else {
        return;
    };
    // A short lease so the dead node's delivery in flight is taken over within the test; a
    // retry_delay of 1 is 200 ms.
    let env = [("HOOKD_LEASE_MS", "3000"), ("HOOKD_RETRY_UNIT_MS", "200")];
    let mut nodes = three_nodes(&url, &env).await;
    let receiver = Receiver::start().await;
    // The first event fails once: the rest must wait for its retry. Each request then takes
    // 50 ms, so a delivery is in flight on some node most of the time.
    receiver.script([Reply::Status(500)]);
    receiver.always(Reply::Stall(Duration::from_millis(50)));
    let key = nodes[0].tenant_key().await;
    let settings = json!({"ordering": "fifo", "timeout": 1, "retry_delay": 1});
    nodes[0].webhooks(&key, &receiver, 1, settings).await;

    // Events one at a time, each to the next live node; one node is killed mid-stream.
    let mut live: Vec<usize> = vec![0, 1, 2];
    let mut accepted = Vec::with_capacity(EVENTS);
    let mut killed_at = None;
    for n in 0..EVENTS {
        if n == EVENTS / 2 {
            receiver.wait_for(3, Duration::from_secs(30)).await;
            nodes[1].kill();
            live.retain(|i| *i != 1);
            killed_at = Some(Instant::now());
        }
        let node = &nodes[live[n % live.len()]];
        let answer = node
            .post(
                "/api/events",
                &key,
                &json!({"event_type": "task.completed", "data": {"n": n}}),
            )
            .await
            .expect(202);
        accepted.push(answer["event_id"].as_str().expect("event_id").to_string());
    }
    let tally = wait_for_deliveries(&receiver, EVENTS, Duration::from_secs(60)).await;
    crate::node::assert_all_events_arrived(&receiver, &accepted);
    let arrived: Vec<usize> = receiver
        .received()
        .iter()
        .map(|r| r.json()["data"]["n"].as_u64().expect("n") as usize)
        .collect();
    let mut distinct = arrived.clone();
    distinct.dedup();
    eprintln!(
        "fifo on 3 nodes, one SIGKILLed: {EVENTS} events in order, {} requests repeated (one is the first event's retry), all there {:.1?} after the kill",
        duplicates(&tally),
        killed_at.expect("killed").elapsed()
    );
    assert_eq!(
        distinct,
        (0..EVENTS).collect::<Vec<_>>(),
        "publish order, repeats only adjacent: {arrived:?}"
    );
    // The first event's retry, and at most the delivery the killed node had in flight.
    assert!(
        arrived.len() - distinct.len() <= 2,
        "more repeated than the retry and the delivery in flight: {arrived:?}"
    );
}
