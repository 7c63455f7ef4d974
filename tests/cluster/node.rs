//! Real `hookd serve` processes on a test's store, and the calls the scenarios make on them.

use std::{
    collections::{HashMap, HashSet},
    io::Read,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_KEY, Answer, Backend, TestDb, create_database, metrics_text, postgres_admin_url,
    postgres_available, send,
};
use crate::receiver::Receiver;

/// A fresh database for one test; `None` (the test is skipped) when PostgreSQL is wanted but
/// unreachable and not required.
pub async fn database(backend: Backend) -> Option<(TestDb, String)> {
    if backend == Backend::Postgres && !postgres_available().await {
        return None;
    }
    Some(create_database(backend).await)
}

/// One `hookd serve` process. Dropping it kills it, so a failing test leaves nothing behind.
pub struct Node {
    child: Child,
    pub base: String,
    pub client: reqwest::Client,
    log: tempfile::NamedTempFile,
}

/// A loopback port that is free now (the node binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}

impl Node {
    /// Starts a node on `database_url` with the test settings plus `env`, and waits until it is
    /// ready.
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> Node {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_hookd"))
            .arg("serve")
            .env("HOOKD_BIND", &addr)
            .env("HOOKD_DATABASE_URL", database_url)
            .env("HOOKD_ADMIN_KEY", ADMIN_KEY)
            .env("HOOKD_ALLOWED_TARGET_CIDRS", "127.0.0.0/8")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("log file"))
            .spawn()
            .expect("hookd starts");
        let mut node = Node {
            child,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            log,
        };
        node.wait_ready().await;
        node
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "hookd exited with {status} before it was ready:\n{}",
                    self.log()
                );
            }
            let ready = self
                .client
                .get(format!("{}/readyz", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "hookd not ready within 30 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the node wrote to stderr, for failure messages.
    pub fn log(&self) -> String {
        let mut text = String::new();
        let _ = self.log.reopen().map(|mut f| f.read_to_string(&mut text));
        text
    }

    /// SIGKILL: the process ends at once, with whatever it had in flight.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (at most `within`) for the process to exit; how long it took.
    pub async fn terminate(&mut self, within: Duration) -> Duration {
        let sent = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                assert!(
                    status.success(),
                    "hookd exited with {status}:\n{}",
                    self.log()
                );
                return sent.elapsed();
            }
            assert!(
                sent.elapsed() < within,
                "hookd still running {within:?} after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> Answer {
        send(
            self.client
                .post(format!("{}{path}", self.base))
                .bearer_auth(key)
                .json(body),
        )
        .await
    }

    pub async fn get(&self, path: &str, key: &str) -> Answer {
        send(
            self.client
                .get(format!("{}{path}", self.base))
                .bearer_auth(key),
        )
        .await
    }

    /// A key with every scope for a fresh tenant.
    pub async fn tenant_key(&self) -> String {
        let user = uuid::Uuid::now_v7().to_string();
        let body = self
            .post(
                "/api/admin/keys",
                ADMIN_KEY,
                &json!({"user_id": user, "company_id": "company-1"}),
            )
            .await
            .expect(201);
        body["key"].as_str().expect("key").to_string()
    }

    /// `count` webhooks to `receiver`, each with `settings` added; their ids.
    pub async fn webhooks(
        &self,
        key: &str,
        receiver: &Receiver,
        count: usize,
        settings: Value,
    ) -> Vec<String> {
        let mut ids = Vec::with_capacity(count);
        for n in 0..count {
            let mut body = json!({"url": format!("{}/hook/{n}", receiver.url)});
            body.as_object_mut()
                .expect("object")
                .extend(settings.as_object().cloned().unwrap_or_default());
            let created = self
                .post("/api/webhooks/outgoing", key, &body)
                .await
                .expect(201);
            ids.push(created["id"].as_str().expect("id").to_string());
        }
        ids
    }

    /// The node's `/metrics` text.
    pub async fn metrics(&self) -> String {
        metrics_text(&self.client, &self.base).await
    }

    /// Successful attempts this node made, from its `/metrics`.
    pub async fn delivered(&self) -> u64 {
        self.metrics()
            .await
            .lines()
            .find_map(|line| {
                line.strip_prefix("hookd_delivery_attempts_total{outcome=\"delivered\"} ")
            })
            .map_or(0, |n| n.trim().parse().expect("counter value"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Publishes `count` events in batches of `batch`, handing the batches to `nodes` in turn; the
/// ids of the accepted events (every batch must be accepted).
pub async fn publish(nodes: &[&Node], key: &str, count: usize, batch: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for (n, start) in (0..count).step_by(batch).enumerate() {
        let events: Vec<Value> = (start..count.min(start + batch))
            .map(|i| json!({"event_type": "task.completed", "data": {"n": i}}))
            .collect();
        let answer = nodes[n % nodes.len()]
            .post("/api/events/batch", key, &json!({"events": events}))
            .await
            .expect(202);
        ids.extend(
            answer["events"]
                .as_array()
                .expect("events")
                .iter()
                .map(|e| e["event_id"].as_str().expect("event_id").to_string()),
        );
    }
    ids
}

/// Polls `done` until it holds; panics naming `what` after `within`.
pub async fn wait_until(what: &str, within: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `count` distinct deliveries arrived; how often each arrived.
pub async fn wait_for_deliveries(
    receiver: &Receiver,
    count: usize,
    within: Duration,
) -> HashMap<String, usize> {
    let deadline = Instant::now() + within;
    let mut want = count;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let received = receiver.wait_for(want, left).await;
        let mut tally = HashMap::new();
        for request in &received {
            *tally
                .entry(request.header("webhook-id").to_string())
                .or_insert(0) += 1;
        }
        if tally.len() >= count {
            return tally;
        }
        // Some were duplicates: wait for as many more requests as deliveries are missing.
        want = received.len() + count - tally.len();
    }
}

/// Requests beyond the first per delivery.
pub fn duplicates(tally: &HashMap<String, usize>) -> usize {
    tally.values().map(|n| n - 1).sum()
}

/// Asserts that every event in `accepted` reached the receiver.
pub fn assert_all_events_arrived(receiver: &Receiver, accepted: &[String]) {
    let arrived: HashSet<String> = receiver
        .received()
        .iter()
        .map(|r| r.json()["event_id"].as_str().expect("event_id").to_string())
        .collect();
    let missing = accepted.iter().filter(|id| !arrived.contains(*id)).count();
    assert_eq!(missing, 0, "{missing} accepted events never arrived");
}

/// Cuts the PostgreSQL database at `url` off: no new connections, the open ones ended. The
/// returned function lets connections in again.
pub async fn cut_off_postgres(url: &str) -> impl AsyncFnOnce() {
    let name = url.rsplit('/').next().expect("database name").to_string();
    let admin = sqlx::PgPool::connect(&postgres_admin_url())
        .await
        .expect("admin connection");
    let allow = async |admin: &sqlx::PgPool, name: &str, allowed: bool| {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS {allowed}"
        )))
        .execute(admin)
        .await
        .expect("alter database");
    };
    allow(&admin, &name, false).await;
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&admin)
        .await
        .expect("terminate backends");
    async move || allow(&admin, &name, true).await
}
