//! The inbox is read in commit order: a message whose id is older than one already read, but
//! which committed later, is still read, by pages after a cursor and by a live stream.

use std::{collections::HashSet, time::Duration};

use serde_json::{Value, json};
use sqlx::Connection;

use crate::agents::read_events;
use crate::both_backends;
use crate::helpers::{Backend, TestApp, spawn_app};
use crate::receiving::{Hook, create_hook, post_json};

both_backends!(a_message_committed_after_a_newer_one_is_still_read);

/// Writes a message to the inbox of agent `agent_id` (of the tenant `late-user`) as a node does.
fn insert_message(id: &str, agent_id: &str) -> String {
    format!(
        "INSERT INTO agent_messages (id, agent_id, user_id, company_id, incoming_webhook_id, kind,
            content, created_at)
         VALUES ('{id}', '{agent_id}', 'late-user', 'company-1', NULL, 'message', '{{}}', {})",
        hookd::domain::time::now_ms()
    )
}

/// Every message read by pages after `cursor` (which moves on), in order.
async fn read_pages(app: &TestApp, key: &str, cursor: &mut String) -> Vec<String> {
    let mut read = Vec::new();
    loop {
        let page = app
            .get(
                &format!("/api/agents/late/messages?limit=1&after={cursor}"),
                key,
            )
            .await
            .expect(200);
        let Some(next) = page["next_cursor"].as_str() else {
            return read;
        };
        read.push(page["messages"][0]["id"].as_str().unwrap().to_string());
        *cursor = next.to_string();
    }
}

/// Posts to `hook` in the background; the new message's id.
fn post_later(app: &TestApp, hook: &Hook) -> tokio::task::JoinHandle<String> {
    let request = app
        .client
        .post(format!("{}/webhook/{}", app.base, hook.token))
        .json(&json!({"n": "newer"}));
    tokio::spawn(async move {
        let answer = crate::helpers::send(request).await.expect(202);
        answer["id"].as_str().unwrap().to_string()
    })
}

/// Two ways a message whose id was made first commits after a newer one. First, its
/// transaction (another node's group commit) is held open while the newer message is accepted
/// and the inbox is read. Then, simply written after the newer one committed and was read. A
/// reader past the newer message, or a stream that showed it, used to skip the older one for
/// good: its id is below their cursor.
async fn a_message_committed_after_a_newer_one_is_still_read(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.key_for("late-user", "company-1", &[]).await;
    let hook = create_hook(&app, &key, json!({"agent_id": "late"})).await;
    let agent = app.get("/api/agents/late", &key).await.expect(200);
    let agent_id = agent["id"].as_str().unwrap();
    let stream_url = format!("{}/api/agents/late/messages/stream", app.base);
    let stream = app
        .client
        .get(&stream_url)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut cursor = String::new();
    let mut read = Vec::new();

    let held_older = hookd::domain::new_id();
    // The transaction's connection, of the backend's own type.
    macro_rules! held_open {
        ($connection:ty) => {{
            let mut connection = <$connection>::connect(&app.database_url).await.unwrap();
            let mut held = connection.begin().await.unwrap();
            let insert = sqlx::AssertSqlSafe(insert_message(&held_older, agent_id));
            sqlx::query(insert).execute(&mut *held).await.unwrap();
            let newer = post_later(&app, &hook);
            tokio::time::sleep(Duration::from_millis(300)).await;
            read.extend(read_pages(&app, &key, &mut cursor).await);
            held.commit().await.unwrap();
            newer.await.unwrap()
        }};
    }
    let held_newer = match backend {
        Backend::Postgres => held_open!(sqlx::PgConnection),
        Backend::Sqlite => held_open!(sqlx::SqliteConnection),
    };
    assert!(
        held_older < held_newer,
        "{held_older} made before {held_newer}"
    );
    read.extend(read_pages(&app, &key, &mut cursor).await);

    let later_older = hookd::domain::new_id();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let later_newer = post_json(&app, &hook, &json!({"n": "newer"}))
        .await
        .expect(202);
    let later_newer = later_newer["id"].as_str().unwrap().to_string();
    assert!(later_older < later_newer);
    read.extend(read_pages(&app, &key, &mut cursor).await);
    app.execute_sql(&insert_message(&later_older, agent_id))
        .await;
    read.extend(read_pages(&app, &key, &mut cursor).await);

    let all: HashSet<String> = [held_older, held_newer, later_older, later_newer].into();
    assert_eq!(read.len(), 4, "each message read once: {read:?}");
    assert_eq!(read.iter().cloned().collect::<HashSet<_>>(), all);
    let streamed: Vec<String> = read_events(stream, 4)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(streamed, read, "the stream in the same order");

    // A cursor names a message of this agent; anything else is refused, not read from.
    let detail = app
        .get("/api/agents/late/messages?after=no-such-message", &key)
        .await
        .expect_error(422, "validation_error");
    assert!(detail.starts_with("after"), "{detail}");
    let refused = app
        .client
        .get(&stream_url)
        .bearer_auth(&key)
        .header("last-event-id", "no-such-message")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("Last-Event-ID")
    );
}
