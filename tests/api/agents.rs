//! Agents and their inboxes: management, tenant isolation, cursor pagination and the live stream.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, spawn_app};
use crate::receiver::Receiver;
use crate::receiving::{create_hook, post_json};

both_backends!(
    agents_are_managed_per_tenant,
    agent_endpoints_are_checked_and_credentials_hidden,
    inbox_pages_oldest_first_by_cursor,
    an_inbox_page_ends_early_at_its_content_budget,
    inbox_stream_catches_up_then_follows_live,
    agent_changes_and_received_messages_reach_outgoing_subscribers,
    incoming_logs_and_statistics_are_served_by_the_logs_api,
    an_agent_created_by_receiving_is_announced_exactly_once,
);

async fn agents_are_managed_per_tenant(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let created = app
        .post("/api/agents", &key, &json!({"name": "sales_agent"}))
        .await
        .expect(201);
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["endpoint"], Value::Null);
    app.post("/api/agents", &key, &json!({"name": "sales_agent"}))
        .await
        .expect_error(409, "conflict");
    app.post("/api/agents", &key, &json!({}))
        .await
        .expect_error(422, "validation_error");
    // By id or by name.
    assert_eq!(
        app.get(&format!("/api/agents/{id}"), &key)
            .await
            .expect(200)["name"],
        "sales_agent"
    );
    assert_eq!(
        app.get("/api/agents/sales_agent", &key).await.expect(200)["id"],
        id
    );
    let renamed = app
        .put(
            &format!("/api/agents/{id}"),
            &key,
            &json!({"name": "closer"}),
        )
        .await
        .expect(200);
    assert_eq!(renamed["name"], "closer");
    assert_eq!(
        app.get("/api/agents", &key)
            .await
            .expect(200)
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Another tenant sees nothing, by id or by name, and its names are its own.
    let other = app.tenant_key().await;
    app.get(&format!("/api/agents/{id}"), &other)
        .await
        .expect_error(404, "not_found");
    app.get("/api/agents/closer", &other)
        .await
        .expect_error(404, "not_found");
    app.delete(&format!("/api/agents/{id}"), &other)
        .await
        .expect_error(404, "not_found");
    app.post("/api/agents", &other, &json!({"name": "closer"}))
        .await
        .expect(201);
    assert!(
        app.get("/api/agents", &other)
            .await
            .expect(200)
            .as_array()
            .unwrap()
            .len()
            == 1
    );

    // Scopes.
    let reader = app.key_for("reader", "company-1", &["agents:read"]).await;
    app.post("/api/agents", &reader, &json!({"name": "x"}))
        .await
        .expect_error(403, "forbidden");

    app.delete(&format!("/api/agents/{id}"), &key)
        .await
        .expect(204);
    app.get(&format!("/api/agents/{id}"), &key)
        .await
        .expect_error(404, "not_found");
}

async fn agent_endpoints_are_checked_and_credentials_hidden(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let created = app
        .post(
            "/api/agents",
            &key,
            &json!({"name": "bot", "endpoint": {
                "url": "http://127.0.0.1:9/v1/chat/completions", "format": "openai_chat",
                "model": "gpt-4o-mini", "headers": {"Authorization": "Bearer sk-test"}}}),
        )
        .await
        .expect(201);
    assert_eq!(
        created["endpoint"]["headers"]["Authorization"],
        "Bearer sk-test"
    );
    let shown = app.get("/api/agents/bot", &key).await.expect(200);
    assert_eq!(shown["endpoint"]["headers"]["Authorization"], "********");
    assert_eq!(shown["endpoint"]["format"], "openai_chat");
    // Private targets are refused (127.0.0.0/8 is allowed in tests; 10/8 is not).
    let detail = app
        .put(
            "/api/agents/bot",
            &key,
            &json!({"endpoint": {"url": "http://10.0.0.1/"}}),
        )
        .await
        .expect_error(422, "validation_error");
    assert!(detail.starts_with("endpoint.url"), "{detail}");
    let detail = app
        .put(
            "/api/agents/bot",
            &key,
            &json!({"endpoint": {"url": "https://x.example.com", "format": "xml"}}),
        )
        .await
        .expect_error(422, "validation_error");
    assert!(detail.contains("endpoint"), "{detail}");
    let cleared = app
        .put("/api/agents/bot", &key, &json!({"endpoint": null}))
        .await
        .expect(200);
    assert_eq!(cleared["endpoint"], Value::Null);
}

/// Posts `n` numbered messages to a webhook routed to agent `agent`; returns the message ids.
async fn fill_inbox(app: &TestApp, key: &str, agent: &str, n: usize) -> Vec<String> {
    let hook = create_hook(app, key, json!({"agent_id": agent})).await;
    let mut ids = Vec::new();
    for i in 0..n {
        let answer = post_json(app, &hook, &json!({"n": i})).await.expect(202);
        ids.push(answer["id"].as_str().unwrap().to_string());
    }
    ids
}

/// Six messages of ~900 KB each: a page holds four (within 4 MiB of content), however large
/// its `limit`, and the cursor goes on to the rest.
async fn an_inbox_page_ends_early_at_its_content_budget(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let hook = create_hook(&app, &key, json!({"agent_id": "big"})).await;
    let filler = "x".repeat(900_000);
    for i in 0..6 {
        post_json(&app, &hook, &json!({"n": i, "filler": filler}))
            .await
            .expect(202);
    }
    let numbers = |page: &Value| -> Vec<Value> {
        let messages = page["messages"].as_array().unwrap();
        messages.iter().map(|m| m["content"]["n"].clone()).collect()
    };
    let first = app
        .get("/api/agents/big/messages?limit=1000", &key)
        .await
        .expect(200);
    assert_eq!(numbers(&first), [0, 1, 2, 3]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = app
        .get(
            &format!("/api/agents/big/messages?limit=1000&after={cursor}"),
            &key,
        )
        .await
        .expect(200);
    assert_eq!(numbers(&rest), [4, 5]);
}

async fn inbox_pages_oldest_first_by_cursor(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let ids = fill_inbox(&app, &key, "pager", 5).await;
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = app
            .get(
                &format!("/api/agents/pager/messages?limit=2&after={cursor}"),
                &key,
            )
            .await
            .expect(200);
        let messages = page["messages"].as_array().unwrap();
        if messages.is_empty() {
            assert_eq!(page["next_cursor"], Value::Null);
            break;
        }
        assert!(messages.len() <= 2);
        seen.extend(
            messages
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_string()),
        );
        cursor = page["next_cursor"].as_str().unwrap().to_string();
    }
    assert_eq!(seen, ids);
    let page = app
        .get("/api/agents/pager/messages?limit=10", &key)
        .await
        .expect(200);
    let numbers: Vec<_> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"]["n"].clone())
        .collect();
    assert_eq!(numbers, [0, 1, 2, 3, 4]);
    app.get("/api/agents/pager/messages?limit=0", &key)
        .await
        .expect_error(422, "validation_error");
    let other = app.tenant_key().await;
    app.get("/api/agents/pager/messages", &other)
        .await
        .expect_error(404, "not_found");
}

/// Reads SSE events (`id`, parsed `data`) until `n` have arrived.
pub async fn read_events(response: reqwest::Response, n: usize) -> Vec<(String, Value)> {
    let mut stream = response.bytes_stream();
    let (mut buffer, mut events) = (String::new(), Vec::new());
    while events.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event within 10 s")
            .expect("stream open")
            .expect("chunk");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut id, mut data) = (None, None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ").or(line.strip_prefix("id:")) {
                    id = Some(v.to_string());
                }
                if let Some(v) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
                    data = Some(serde_json::from_str(v).unwrap());
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                events.push((id, data));
            }
        }
    }
    events
}

async fn inbox_stream_catches_up_then_follows_live(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let mut ids = fill_inbox(&app, &key, "streamer", 2).await;
    let url = format!("{}/api/agents/streamer/messages/stream", app.base);
    let response = app.client.get(&url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let hook = create_hook(&app, &key, json!({"agent_id": "streamer"})).await;
    let live = tokio::spawn({
        let (client, base, token) = (app.client.clone(), app.base.clone(), hook.token.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let answer = client
                .post(format!("{base}/webhook/{token}"))
                .json(&json!({"n": "live"}))
                .send()
                .await
                .unwrap();
            let body: Value = answer.json().await.unwrap();
            body["id"].as_str().unwrap().to_string()
        }
    });
    let events = read_events(response, 3).await;
    ids.push(live.await.unwrap());
    let got: Vec<_> = events.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(got, ids);
    assert_eq!(events[2].1["content"], json!({"n": "live"}));
    assert_eq!(events[2].1["id"], ids[2].as_str());

    // Resuming with Last-Event-ID starts after that message.
    let response = app
        .client
        .get(&url)
        .bearer_auth(&key)
        .header("last-event-id", &ids[0])
        .send()
        .await
        .unwrap();
    let resumed = read_events(response, 2).await;
    assert_eq!(resumed[0].0, ids[1]);
    assert_eq!(resumed[1].0, ids[2]);

    let other = app.tenant_key().await;
    let response = app
        .client
        .get(&url)
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

async fn agent_changes_and_received_messages_reach_outgoing_subscribers(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    let key = app.tenant_key().await;
    app.post(
        "/api/webhooks/outgoing",
        &key,
        &json!({"url": format!("{}/events", receiver.url),
                "event_types": ["agent.*", "chat.message.received"]}),
    )
    .await
    .expect(201);
    app.post("/api/agents", &key, &json!({"name": "made"}))
        .await
        .expect(201);
    app.put("/api/agents/made", &key, &json!({"name": "renamed"}))
        .await
        .expect(200);
    app.delete("/api/agents/renamed", &key).await.expect(204);
    // Saving a webhook that names a new agent creates it; receiving emits the message event.
    let hook = create_hook(&app, &key, json!({"agent_id": "sales_agent"})).await;
    let accepted = post_json(&app, &hook, &json!({"lead": "Ada"}))
        .await
        .expect(202);

    let received = receiver.wait_for(5, Duration::from_secs(10)).await;
    let mut seen: Vec<(String, Value)> = received
        .iter()
        .map(|r| {
            let body = r.json();
            (body["event_type"].as_str().unwrap().to_string(), body)
        })
        .collect();
    seen.sort_by_key(|(_, body)| body["timestamp"].as_str().unwrap_or_default().to_string());
    let types: Vec<_> = seen.iter().map(|(t, _)| t.as_str()).collect();
    for expected in [
        "agent.created",
        "agent.updated",
        "agent.deleted",
        "chat.message.received",
    ] {
        assert!(types.contains(&expected), "{types:?}");
    }
    let created: Vec<_> = seen
        .iter()
        .filter(|(t, _)| t == "agent.created")
        .map(|(_, b)| b["data"]["agent_name"].clone())
        .collect();
    assert_eq!(created, [json!("made"), json!("sales_agent")]);
    let (_, message) = seen
        .iter()
        .find(|(t, _)| t == "chat.message.received")
        .unwrap();
    assert_eq!(message["data"]["message_id"], accepted["id"]);
    assert_eq!(message["data"]["agent_name"], "sales_agent");
    assert_eq!(message["data"]["content"], json!({"lead": "Ada"}));
}

async fn incoming_logs_and_statistics_are_served_by_the_logs_api(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.tenant_key().await;
    let hook = create_hook(&app, &key, json!({"agent_id": "a", "rate_limit": 1})).await;
    post_json(&app, &hook, &json!({"n": 1})).await.expect(202);
    post_json(&app, &hook, &json!({"n": 2})).await.expect(429);
    let logs = crate::receiving::logs_settled(&app, &hook, 2).await;
    assert_eq!(logs.len(), 2);
    let listed = app
        .get(
            &format!("/api/webhooks/{}/logs?webhook_type=incoming", hook.id),
            &key,
        )
        .await
        .expect(200);
    let statuses: Vec<_> = listed
        .as_array()
        .or(listed["logs"].as_array())
        .expect("a list of entries")
        .iter()
        .map(|e| (e["webhook_type"].clone(), e["response_status"].clone()))
        .collect();
    assert_eq!(
        statuses,
        [
            (json!("incoming"), json!(429)),
            (json!("incoming"), json!(202))
        ],
        "newest first"
    );
    let stats = app
        .get(
            &format!("/api/webhooks/{}/statistics?webhook_type=incoming", hook.id),
            &key,
        )
        .await
        .expect(200);
    assert_eq!(stats["total_requests"], 2);
    assert_eq!(stats["successful_requests"], 1);
    assert_eq!(stats["failed_requests"], 1);
}

/// An agent that receiving creates is written with its `agent.created` in one transaction:
/// the event is never lost to the request that created it failing or losing a race (here, 20
/// copies of one delivery id racing to a deleted agent: only one request is accepted, and it
/// need not be the one that created the agent).
async fn an_agent_created_by_receiving_is_announced_exactly_once(backend: Backend) {
    let app = std::sync::Arc::new(spawn_app(backend).await);
    let receiver = Receiver::start().await;
    let key = app.tenant_key().await;
    let hook = create_hook(
        &app,
        &key,
        json!({"agent_id": "recreated", "dedup_header": "X-Delivery-Id"}),
    )
    .await;
    app.delete("/api/agents/recreated", &key).await.expect(204);
    app.post(
        "/api/webhooks/outgoing",
        &key,
        &json!({"url": receiver.url, "event_types": ["agent.created"]}),
    )
    .await
    .expect(201);
    let racers: Vec<_> = (0..20)
        .map(|_| {
            let (app, token) = (std::sync::Arc::clone(&app), hook.token.clone());
            tokio::spawn(async move {
                let request = app
                    .client
                    .post(format!("{}/webhook/{token}", app.base))
                    .header("x-delivery-id", "same")
                    .json(&json!({"n": 1}));
                crate::helpers::send(request).await.status.as_u16()
            })
        })
        .collect();
    for racer in racers {
        assert!(matches!(racer.await.unwrap(), 200 | 202));
    }
    receiver.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let names: Vec<Value> = receiver
        .received()
        .iter()
        .map(|r| r.json()["data"]["agent_name"].clone())
        .collect();
    assert_eq!(names, [json!("recreated")]);
}
