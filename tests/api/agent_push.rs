//! Messages routed to an agent with an endpoint are pushed there through the delivery engine:
//! an OpenAI-compatible model server (a local one, real HTTP) answers, the reply lands in the
//! inbox and `chat.completed` reaches outgoing subscribers; plain JSON endpoints are retried,
//! logged and circuit-broken like outgoing webhooks.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, spawn_app_with};
use crate::receiver::{Receiver, Reply};
use crate::receiving::{create_hook, inbox, post_json};

both_backends!(
    openai_chat_reply_lands_in_the_inbox_and_emits_chat_completed,
    json_pushes_are_retried_logged_and_circuit_broken,
    a_model_answer_without_a_reply_is_a_failed_attempt,
);

const WAIT: Duration = Duration::from_secs(10);

fn completion(text: &str) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
    })
}

/// Polls `path` until `done` holds for its answer.
async fn settled(app: &TestApp, key: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let answer = app.get(path, key).await.expect(200);
        if done(&answer) {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never settled");
}

async fn openai_chat_reply_lands_in_the_inbox_and_emits_chat_completed(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let model = Receiver::start().await;
    model.always(Reply::Json(completion("Hello Ada, a rep will call you.")));
    let subscriber = Receiver::start().await;
    let key = app.tenant_key().await;
    app.post(
        "/api/webhooks/outgoing",
        &key,
        &json!({"name": "done", "url": subscriber.url, "event_types": ["chat.completed"]}),
    )
    .await
    .expect(201);
    let agent = app
        .post(
            "/api/agents",
            &key,
            &json!({"name": "sales_agent", "endpoint": {
                "url": format!("{}/v1/chat/completions", model.url),
                "format": "openai_chat",
                "model": "gpt-sales",
                "headers": {"Authorization": "Bearer sk-test"},
            }}),
        )
        .await
        .expect(201);
    let agent_id = agent["id"].as_str().unwrap();
    let hook = create_hook(
        &app,
        &key,
        json!({"agent_name": "sales_agent", "transform_template": "New lead: {{ name }}"}),
    )
    .await;
    let accepted = post_json(&app, &hook, &json!({"name": "Ada"}))
        .await
        .expect(202);

    let calls = model.wait_for(1, WAIT).await;
    assert_eq!(calls[0].path, "/v1/chat/completions");
    assert_eq!(calls[0].header("authorization"), "Bearer sk-test");
    assert_eq!(calls[0].header("x-webhook-event"), "chat.message.received");
    assert_eq!(
        calls[0].json(),
        json!({"model": "gpt-sales", "messages": [{"role": "user", "content": "New lead: Ada"}]})
    );

    let completed = subscriber.wait_for(1, WAIT).await[0].json();
    assert_eq!(completed["event_type"], "chat.completed");
    assert_eq!(completed["data"]["agent_id"], agent_id);
    assert_eq!(completed["data"]["message_id"], accepted["id"]);
    assert_eq!(completed["data"]["message"], "New lead: Ada");
    assert_eq!(
        completed["data"]["reply"],
        "Hello Ada, a rep will call you."
    );

    let messages = inbox(&app, &key, agent_id).await;
    let kinds: Vec<_> = messages.iter().map(|m| m["kind"].clone()).collect();
    assert_eq!(kinds, [json!("message"), json!("reply")]);
    assert_eq!(messages[1]["content"], "Hello Ada, a rep will call you.");
    assert_eq!(messages[1]["id"], completed["data"]["reply_id"]);

    // The push is logged under the agent, credentials redacted, and counted.
    let logs = app
        .get(
            &format!("/api/webhooks/{agent_id}/logs?webhook_type=agent"),
            &key,
        )
        .await
        .expect(200);
    assert_eq!(logs[0]["webhook_type"], "agent");
    assert_eq!(logs[0]["status"], "delivered");
    assert_eq!(logs[0]["request_headers"]["authorization"], "********");
    let stats = app
        .get(&format!("/api/webhooks/{agent_id}/statistics"), &key)
        .await
        .expect(200);
    assert_eq!(stats["webhook_type"], "agent");
    assert_eq!(stats["successful_requests"], 1);
    assert_eq!(stats["circuit_state"], "closed");
    // Exactly one call: the reply was recorded once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(model.count(), 1);
}

async fn json_pushes_are_retried_logged_and_circuit_broken(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.retry_unit_ms = Some(20);
        s.circuit_threshold = Some(3);
    })
    .await;
    let endpoint = Receiver::start().await;
    endpoint.script([Reply::Status(500), Reply::Status(503)]);
    let key = app.tenant_key().await;
    let agent = app
        .post(
            "/api/agents",
            &key,
            &json!({"name": "crm", "endpoint": {"url": endpoint.url, "retry_delay": 1}}),
        )
        .await
        .expect(201);
    assert_eq!(agent["endpoint"]["format"], "json");
    assert_eq!(agent["endpoint"]["retry_count"], 3);
    assert_eq!(agent["endpoint"]["timeout"], 60);
    let agent_id = agent["id"].as_str().unwrap();
    let hook = create_hook(&app, &key, json!({"agent_id": agent_id})).await;
    let accepted = post_json(&app, &hook, &json!({"lead": 7}))
        .await
        .expect(202);

    let calls = endpoint.wait_for(3, WAIT).await;
    let body = calls[2].json();
    assert_eq!(body["message_id"], accepted["id"]);
    assert_eq!(body["agent_id"], agent_id);
    assert_eq!(body["content"], json!({"lead": 7}));
    // One delivery id across attempts: the endpoint can dedupe.
    let ids: Vec<_> = calls
        .iter()
        .map(|c| c.header("webhook-id").to_string())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]));

    let path = format!("/api/webhooks/{agent_id}/logs?webhook_type=agent");
    let logs = settled(&app, &key, &path, |l| l.as_array().unwrap().len() == 3).await;
    let statuses: Vec<_> = logs
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, ["delivered", "failed", "failed"]);

    // Three failures in a row open the endpoint's circuit; the messages wait, none is lost.
    endpoint.always(Reply::Status(500));
    for n in 0..3 {
        post_json(&app, &hook, &json!({"lead": n}))
            .await
            .expect(202);
        endpoint.wait_for(4 + n, WAIT).await;
    }
    let stats_path = format!("/api/webhooks/{agent_id}/statistics?webhook_type=agent");
    let stats = settled(&app, &key, &stats_path, |s| s["circuit_state"] == "open").await;
    assert!(stats["pending"].as_i64().unwrap() >= 1);
    // An attempt already in flight when the circuit opened may still land.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let calls_when_opened = endpoint.count();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        endpoint.count(),
        calls_when_opened,
        "an open circuit sends nothing"
    );
}

async fn a_model_answer_without_a_reply_is_a_failed_attempt(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.retry_unit_ms = Some(20)).await;
    let model = Receiver::start().await;
    model.script([Reply::Json(json!({"unexpected": true}))]);
    model.always(Reply::Json(completion("ok")));
    let key = app.tenant_key().await;
    let agent = app
        .post(
            "/api/agents",
            &key,
            &json!({"name": "bot", "endpoint": {
                "url": model.url, "format": "openai_chat", "retry_delay": 1}}),
        )
        .await
        .expect(201);
    let agent_id = agent["id"].as_str().unwrap();
    let hook = create_hook(&app, &key, json!({"agent_id": agent_id})).await;
    post_json(&app, &hook, &json!({"text": "hi"}))
        .await
        .expect(202);

    let calls = model.wait_for(2, WAIT).await;
    // A JSON payload goes to the model as JSON text; the model defaults to the agent's name.
    assert_eq!(calls[0].json()["model"], "bot");
    assert_eq!(
        calls[0].json()["messages"][0]["content"],
        r#"{"text":"hi"}"#
    );
    let path = format!("/api/webhooks/{agent_id}/logs");
    let logs = settled(&app, &key, &path, |l| l.as_array().unwrap().len() == 2).await;
    assert_eq!(logs[1]["status"], "failed");
    assert!(
        logs[1]["error_message"]
            .as_str()
            .unwrap()
            .contains("choices[0].message.content")
    );
    let messages = inbox(&app, &key, agent_id).await;
    assert_eq!(messages.len(), 2, "one reply, from the second attempt");
    assert_eq!(messages[1]["content"], "ok");
}
