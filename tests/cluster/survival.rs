//! Survival: a crash, a failing receiver, an unreachable store and a graceful stop each leave
//! every accepted event delivered.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::Backend;
use crate::node::{
    Node, assert_all_events_arrived, cut_off_postgres, database, duplicates, publish,
    wait_for_deliveries, wait_until,
};
use crate::receiver::{Receiver, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_node_killed_mid_delivery_delivers_every_accepted_event_after_restart() {
    const EVENTS: usize = 10_000;
    let (_db, url) = database(Backend::Sqlite).await.expect("sqlite");
    let mut node = Node::start(&url, &[]).await;
    let receiver = Receiver::start().await;
    receiver.always(Reply::Stall(Duration::from_millis(5)));
    let key = node.tenant_key().await;
    node.webhooks(&key, &receiver, 1, json!({})).await;

    let accepted = publish(&[&node], &key, EVENTS, 1_000).await;
    receiver.wait_for(EVENTS / 5, Duration::from_secs(60)).await;
    node.kill();
    let before_restart = receiver.count();
    let _restarted = Node::start(&url, &[]).await;

    let tally = wait_for_deliveries(&receiver, EVENTS, Duration::from_secs(90)).await;
    assert_all_events_arrived(&receiver, &accepted);
    eprintln!(
        "crash: killed after {before_restart} requests; all {EVENTS} delivered after restart, \
         {} duplicates",
        duplicates(&tally)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_node_killed_mid_ingest_keeps_every_accepted_message_and_its_event() {
    let (_db, url) = database(Backend::Sqlite).await.expect("sqlite");
    node_killed_mid_ingest_keeps_every_accepted_message_and_its_event(&url, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_node_killed_mid_ingest_keeps_every_accepted_message_and_its_event() {
    let Some((_db, url)) = database(Backend::Postgres).await else {
        return;
    };
    // On PostgreSQL the dead node's leases are not released by a restart (another node could
    // hold them): a short lease lets its handed-off and claimed deliveries come due soon.
    node_killed_mid_ingest_keeps_every_accepted_message_and_its_event(
        &url,
        &[("HOOKD_LEASE_MS", "3000")],
    )
    .await;
}

async fn node_killed_mid_ingest_keeps_every_accepted_message_and_its_event(
    url: &str,
    env: &[(&str, &str)],
) {
    const SENDERS: usize = 16;
    let mut node = Node::start(url, env).await;
    let receiver = Receiver::start().await;
    let key = node.tenant_key().await;
    node.webhooks(
        &key,
        &receiver,
        1,
        json!({"event_types": ["chat.message.received"]}),
    )
    .await;
    let created = node
        .post(
            "/api/webhooks/incoming",
            &key,
            &json!({"name": "crm", "agent_id": "inbox", "rate_limit": 1_000_000}),
        )
        .await
        .expect(201);
    let receiving = created["url"].as_str().expect("url").to_string();

    // Senders post until the node dies under them; each keeps the ids of what was answered 202.
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let (client, receiving) = (node.client.clone(), receiving.clone());
        let answered = std::sync::Arc::clone(&answered);
        senders.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            for n in 0.. {
                let body = json!({"sender": sender, "n": n});
                let Ok(response) = client.post(&receiving).json(&body).send().await else {
                    break;
                };
                if response.status() != reqwest::StatusCode::ACCEPTED {
                    break;
                }
                let answer: serde_json::Value = response.json().await.expect("answer");
                accepted.push(answer["id"].as_str().expect("id").to_string());
                answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            accepted
        }));
    }
    // Killed mid-stream once enough was accepted, however slow the machine is today.
    wait_until(
        "200 requests accepted",
        Duration::from_secs(60),
        async || answered.load(std::sync::atomic::Ordering::Relaxed) >= 200,
    )
    .await;
    node.kill();
    let mut accepted = Vec::new();
    for sender in senders {
        accepted.extend(sender.await.expect("sender"));
    }
    assert!(
        accepted.len() > 100,
        "only {} accepted before the kill",
        accepted.len()
    );
    let restarted = Node::start(url, env).await;

    let mut inbox = std::collections::HashSet::new();
    let mut after = String::new();
    loop {
        let page = restarted
            .get(
                &format!("/api/agents/inbox/messages?limit=1000&after={after}"),
                &key,
            )
            .await
            .expect(200);
        let messages = page["messages"].as_array().expect("messages");
        if messages.is_empty() {
            break;
        }
        inbox.extend(
            messages
                .iter()
                .map(|m| m["id"].as_str().expect("id").to_string()),
        );
        after = page["next_cursor"].as_str().expect("cursor").to_string();
    }
    let lost: Vec<_> = accepted.iter().filter(|id| !inbox.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} accepted messages lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    // Each accepted message's chat.message.received event was durable with it, so it arrives.
    wait_until("every event arrives", Duration::from_secs(60), async || {
        let announced: std::collections::HashSet<String> = receiver
            .received()
            .iter()
            .map(|r| {
                r.json()["data"]["message_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        accepted.iter().all(|id| announced.contains(id))
    })
    .await;
    eprintln!(
        "ingest crash ({}): {} messages accepted before the kill, all in the inbox and announced after restart ({} in the inbox)",
        url.split(':').next().unwrap_or(url),
        accepted.len(),
        inbox.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_outage_opens_the_circuit_slows_to_trials_and_loses_nothing() {
    const EVENTS: usize = 20;
    const COOLDOWN: Duration = Duration::from_secs(1);
    let (_db, url) = database(Backend::Sqlite).await.expect("sqlite");
    let cooldown = COOLDOWN.as_millis().to_string();
    let node = Node::start(
        &url,
        &[
            ("HOOKD_CIRCUIT_COOLDOWN_MS", cooldown.as_str()),
            ("HOOKD_RETRY_UNIT_MS", "100"),
        ],
    )
    .await;
    let receiver = Receiver::start().await;
    receiver.always(Reply::Status(500));
    let key = node.tenant_key().await;
    let hook = node
        .webhooks(
            &key,
            &receiver,
            1,
            json!({"retry_count": 20, "retry_delay": 1, "timeout": 1}),
        )
        .await
        .remove(0);
    let accepted = publish(&[&node], &key, EVENTS, EVENTS).await;

    let path = format!("/api/webhooks/outgoing/{hook}");
    wait_until("the circuit opens", Duration::from_secs(10), async || {
        node.get(&path, &key).await.expect(200)["circuit_state"] == "open"
    })
    .await;
    // Now the receiver hangs past the webhook's 1 s timeout. The window is a span of time by
    // nature: what is measured is how many attempts it lets through.
    receiver.always(Reply::Stall(Duration::from_millis(1_500)));
    const WINDOW: Duration = Duration::from_secs(4);
    let before = receiver.count();
    tokio::time::sleep(WINDOW).await;
    let attempts = receiver.count() - before;
    let trials = (WINDOW.as_millis() / COOLDOWN.as_millis()) as usize;
    eprintln!("receiver outage: {attempts} attempts in {WINDOW:?} with the circuit open");
    assert!(
        attempts <= trials + 1,
        "an open circuit lets one trial per cool-down through, got {attempts} in {WINDOW:?}"
    );

    receiver.always(Reply::Status(200));
    let delivered_path = format!("{path}/deliveries?status=delivered&limit=100");
    wait_until(
        "every delivery is delivered after recovery",
        Duration::from_secs(20),
        async || {
            node.get(&delivered_path, &key)
                .await
                .expect(200)
                .as_array()
                .map_or(0, Vec::len)
                == EVENTS
        },
    )
    .await;
    assert_all_events_arrived(&receiver, &accepted);
    assert_eq!(
        node.get(&path, &key).await.expect(200)["circuit_state"],
        "closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_postgres_gets_503_never_a_false_202_and_the_node_recovers_by_itself() {
    let Some((_db, url)) = database(Backend::Postgres).await else {
        return;
    };
    let node = Node::start(&url, &[]).await;
    let receiver = Receiver::start().await;
    let key = node.tenant_key().await;
    node.webhooks(&key, &receiver, 1, json!({})).await;
    let mut accepted = publish(&[&node], &key, 1, 1).await;
    receiver.wait_for(1, Duration::from_secs(10)).await;

    let reconnect = cut_off_postgres(&url).await;

    // Writes while the store is out: each must be refused, none accepted.
    let event = json!({"events": [{"event_type": "task.completed", "data": {}}]});
    let outage = Instant::now();
    let mut refused = 0;
    while outage.elapsed() < Duration::from_secs(3) {
        let answer = node.post("/api/events/batch", &key, &event).await;
        answer.expect_error(503, "unavailable");
        refused += 1;
    }
    let ready = node
        .client
        .get(format!("{}/readyz", node.base))
        .send()
        .await;
    assert_eq!(ready.expect("readyz answers").status(), 503);
    reconnect().await;

    let recovered = Instant::now();
    let mut published = None;
    wait_until(
        "a publish is accepted again",
        Duration::from_secs(15),
        async || {
            let answer = node.post("/api/events/batch", &key, &event).await;
            if answer.status == 503 {
                return false;
            }
            published = Some(answer.expect(202));
            true
        },
    )
    .await;
    let published = published.expect("accepted");
    accepted.push(
        published["events"][0]["event_id"]
            .as_str()
            .expect("id")
            .to_string(),
    );
    wait_for_deliveries(&receiver, accepted.len(), Duration::from_secs(15)).await;
    assert_all_events_arrived(&receiver, &accepted);
    eprintln!(
        "store outage: {refused} publishes refused with 503 in 3 s; accepted again {:.1?} after \
         the database came back",
        recovered.elapsed()
    );
    assert_eq!(
        receiver.count(),
        accepted.len(),
        "refused events must not be delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_taking_requests_finishes_in_flight_work_and_exits_in_time() {
    const EVENTS: usize = 200;
    let (_db, url) = database(Backend::Sqlite).await.expect("sqlite");
    let mut node = Node::start(&url, &[]).await;
    let receiver = Receiver::start().await;
    receiver.always(Reply::Stall(Duration::from_millis(300)));
    let key = node.tenant_key().await;
    node.webhooks(&key, &receiver, 1, json!({})).await;
    let accepted = publish(&[&node], &key, EVENTS, EVENTS).await;
    receiver.wait_for(16, Duration::from_secs(10)).await;

    let base = node.base.clone();
    let took = tokio::join!(node.terminate(Duration::from_secs(15)), async {
        // A fresh connection during the stop is refused: the listener closed at once.
        let client = reqwest::Client::new();
        wait_until(
            "new requests are refused",
            Duration::from_secs(2),
            async || client.get(format!("{base}/healthz")).send().await.is_err(),
        )
        .await;
    })
    .0;
    assert!(!node.is_running());
    let before_restart = receiver.count();
    let _node = Node::start(&url, &[]).await;
    let tally = wait_for_deliveries(&receiver, EVENTS, Duration::from_secs(30)).await;
    assert_all_events_arrived(&receiver, &accepted);
    eprintln!(
        "SIGTERM: exited in {took:.1?} with {before_restart} of {EVENTS} delivered; the rest \
         after restart, {} duplicates",
        duplicates(&tally)
    );
    assert_eq!(
        duplicates(&tally),
        0,
        "in-flight attempts are finished, not repeated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_event_streams_and_exits_in_time() {
    let (_db, url) = database(Backend::Sqlite).await.expect("sqlite");
    // A grace longer than the bound below: exiting in time means the streams ended, not that
    // the grace ran out on them.
    let mut node = Node::start(&url, &[("HOOKD_SHUTDOWN_GRACE_MS", "60000")]).await;
    let key = node.tenant_key().await;
    let agent = node
        .post("/api/agents", &key, &json!({"name": "listener"}))
        .await
        .expect(201);
    let path = format!(
        "{}/api/agents/{}/messages/stream",
        node.base,
        agent["id"].as_str().expect("id")
    );
    let mut streams = Vec::new();
    for _ in 0..3 {
        let stream = node
            .client
            .get(&path)
            .bearer_auth(&key)
            .send()
            .await
            .expect("stream opens");
        assert_eq!(stream.status(), 200);
        streams.push(stream);
    }
    let readers: Vec<_> = streams
        .into_iter()
        .map(|stream| tokio::spawn(async move { stream.bytes().await.is_ok() }))
        .collect();
    let took = node.terminate(Duration::from_secs(20)).await;
    for reader in readers {
        assert!(
            reader.await.expect("reader"),
            "each stream ends cleanly, not cut"
        );
    }
    eprintln!("SIGTERM with 3 open event streams: exited in {took:.1?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cuts_requests_still_open_after_the_grace() {
    let (_db, url) = database(Backend::Sqlite).await.expect("sqlite");
    let mut node = Node::start(
        &url,
        &[
            ("HOOKD_SHUTDOWN_GRACE_MS", "1000"),
            ("HOOKD_BODY_TIMEOUT_MS", "600000"),
        ],
    )
    .await;
    let key = node.tenant_key().await;
    // A request whose body never finishes: only the grace can end it.
    let mut slow = tokio::net::TcpStream::connect(node.base.trim_start_matches("http://"))
        .await
        .expect("connect");
    let head = format!(
        "POST /api/events HTTP/1.1\r\nHost: hookd\r\nAuthorization: Bearer {key}\r\n\
         Content-Length: 100\r\n\r\n{{"
    );
    tokio::io::AsyncWriteExt::write_all(&mut slow, head.as_bytes())
        .await
        .expect("head sent");
    // Give the node a moment to take the request in before it is told to stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let took = node.terminate(Duration::from_secs(20)).await;
    eprintln!("SIGTERM with a request stuck mid-body: exited in {took:.1?}");
}
