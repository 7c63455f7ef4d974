//! Test harness: a hookd on a fresh store per test, and a client with the usual calls.

use std::{io::Write, sync::Mutex, time::Duration};

use sqlx::Connection;

use hookd::{
    app::Application,
    config::{Config, NatsSource, Settings},
    store::Store,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub const ADMIN_KEY: &str = "test-admin-key";

/// Where the PostgreSQL half of the suite creates its databases.
pub fn postgres_admin_url() -> String {
    std::env::var("HOOKD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `HOOKD_REQUIRE_POSTGRES=1` (set by CI) turns a missing PostgreSQL into a failure.
fn postgres_required() -> bool {
    std::env::var("HOOKD_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one test per backend for each scenario function `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if $crate::helpers::postgres_available().await {
                        super::$name($crate::helpers::Backend::Postgres).await
                    }
                }
            }
        )*
    };
}

/// The outcome of the first reachability check, shared by every test in the run.
static POSTGRES_CHECK: Mutex<Option<Result<(), String>>> = Mutex::new(None);

/// Whether PostgreSQL can be reached; panics when it cannot but is required.
pub async fn postgres_available() -> bool {
    let known = POSTGRES_CHECK.lock().unwrap().clone();
    let outcome = match known {
        Some(outcome) => outcome,
        None => {
            let attempt = tokio::time::timeout(
                Duration::from_secs(5),
                sqlx::PgConnection::connect(&postgres_admin_url()),
            )
            .await;
            let outcome = match attempt {
                Ok(Ok(connection)) => {
                    let _ = connection.close().await;
                    Ok(())
                }
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err("no answer within 5 s".to_string()),
            };
            let mut slot = POSTGRES_CHECK.lock().unwrap();
            if slot.is_none() {
                if let Err(error) = &outcome
                    && !postgres_required()
                {
                    // Written to the real stderr, past the test harness's capture, so that a
                    // passing run still says plainly what it did not test.
                    let _ = writeln!(
                        std::io::stderr(),
                        "\nSKIPPED: the PostgreSQL half of the suite ({error}); set \
                         HOOKD_TEST_POSTGRES_URL or start PostgreSQL on 127.0.0.1:5432 to run it\n"
                    );
                }
                *slot = Some(outcome.clone());
            }
            outcome
        }
    };
    match outcome {
        Ok(()) => true,
        Err(error) if postgres_required() => {
            panic!("HOOKD_REQUIRE_POSTGRES=1 but PostgreSQL is unreachable: {error}")
        }
        Err(_) => false,
    }
}

/// A database that exists for one test and is dropped with it, even when the test panics.
pub enum TestDb {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { name: String },
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { name } = self {
            let name = name.clone();
            // Drop runs outside any async context we may block, so use a thread of its own.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    let pool = sqlx::PgPool::connect(&postgres_admin_url()).await?;
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&pool)
                    .await?;
                    pool.close().await;
                    Ok::<_, anyhow::Error>(())
                })?;
                Ok::<_, anyhow::Error>(())
            })
            .join();
        }
    }
}

pub async fn create_database(backend: Backend) -> (TestDb, String) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("hookd.db").display());
            (TestDb::Sqlite(dir), url)
        }
        Backend::Postgres => {
            let name = format!("hookd_test_{}", uuid::Uuid::now_v7().simple());
            let pool = sqlx::PgPool::connect(&postgres_admin_url())
                .await
                .expect("postgres");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                .execute(&pool)
                .await
                .expect("create database");
            pool.close().await;
            let mut url = reqwest::Url::parse(&postgres_admin_url()).expect("postgres url");
            url.set_path(&name);
            (TestDb::Postgres { name }, url.to_string())
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Store,
    pub database_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _db: TestDb,
}

/// The settings tests run with: loopback, the admin key, and 127.0.0.0/8 allowed as a target.
pub fn test_settings(database_url: &str) -> Settings {
    Settings {
        bind: Some("127.0.0.1:0".parse().unwrap()),
        database_url: Some(database_url.to_string()),
        admin_key: Some(ADMIN_KEY.into()),
        allowed_target_cidrs: Some("127.0.0.0/8".into()),
        // The node runs inside the test binary, which cannot serve as a template worker.
        template_worker_program: Some(env!("CARGO_BIN_EXE_hookd").into()),
        // Generous: many tests share two cores, and an ordinary render must never time out.
        template_timeout_ms: Some(2_000),
        ..Default::default()
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    hookd::telemetry::init();
    let (db, database_url) = create_database(backend).await;
    let (base, store, stop) = start_node(&database_url, adjust).await;
    TestApp {
        base,
        client: reqwest::Client::new(),
        store,
        database_url,
        stop: Some(stop),
        _db: db,
    }
}

/// Starts a hookd node on `database_url`; the sender stops it (gracefully).
async fn start_node(
    database_url: &str,
    adjust: impl FnOnce(&mut Settings),
) -> (String, Store, tokio::sync::oneshot::Sender<()>) {
    let mut settings = test_settings(database_url);
    adjust(&mut settings);
    let app = Application::build(Config::resolve(settings).expect("config"))
        .await
        .expect("build app");
    let base = format!("http://{}", app.local_addr());
    let store = app.store().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));
    (base, store, stop)
}

/// An answer: status and body as JSON (`Value::Null` when empty or not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        self.body
    }

    /// Asserts an error answer of our shape and returns its detail.
    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str) -> String {
        let body = self.expect(status);
        assert_eq!(body["error"], code, "error body: {body}");
        body["detail"]
            .as_str()
            .expect("detail is a string")
            .to_string()
    }
}

pub async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body read");
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

impl TestApp {
    /// Stops this node gracefully and starts another on the same database, with `adjust`
    /// applied to the settings (a restart, or a second node with other settings).
    pub async fn restart(&mut self, adjust: impl FnOnce(&mut Settings)) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let (base, store, stop) = start_node(&self.database_url, adjust).await;
        self.base = base;
        self.store = store;
        self.stop = Some(stop);
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        send(request).await
    }

    pub async fn get(&self, path: &str, key: &str) -> Answer {
        self.request(Method::GET, path, Some(key), None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> Answer {
        self.request(Method::POST, path, Some(key), Some(body))
            .await
    }

    pub async fn put(&self, path: &str, key: &str, body: &Value) -> Answer {
        self.request(Method::PUT, path, Some(key), Some(body)).await
    }

    pub async fn delete(&self, path: &str, key: &str) -> Answer {
        self.request(Method::DELETE, path, Some(key), None).await
    }

    /// Sends raw bytes as the body.
    pub async fn post_raw(&self, path: &str, key: &str, body: impl Into<reqwest::Body>) -> Answer {
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body);
        send(request).await
    }

    /// Runs `sql` on the node's database directly, outside hookd: rows as an earlier version
    /// wrote them, for instance.
    pub async fn execute_sql(&self, sql: &str) {
        let query = sqlx::AssertSqlSafe(sql);
        let done = if self.database_url.starts_with("sqlite:") {
            let mut connection = sqlx::SqliteConnection::connect(&self.database_url)
                .await
                .expect("sqlite");
            sqlx::query(query).execute(&mut connection).await.map(drop)
        } else {
            let mut connection = sqlx::PgConnection::connect(&self.database_url)
                .await
                .expect("postgres");
            sqlx::query(query).execute(&mut connection).await.map(drop)
        };
        done.unwrap_or_else(|error| panic!("{sql}: {error}"));
    }

    /// Issues an API key through the admin API; `scopes` empty means all.
    pub async fn key_for(&self, user_id: &str, company_id: &str, scopes: &[&str]) -> String {
        let body = self
            .post(
                "/api/admin/keys",
                ADMIN_KEY,
                &json!({"user_id": user_id, "company_id": company_id, "scopes": scopes}),
            )
            .await
            .expect(201);
        body["key"].as_str().expect("key in answer").to_string()
    }

    /// A key with every scope for a fresh tenant.
    pub async fn tenant_key(&self) -> String {
        let user = uuid::Uuid::now_v7().to_string();
        self.key_for(&user, "company-1", &[]).await
    }
}

/// Where the NATS tests find JetStream.
pub fn nats_url() -> String {
    std::env::var("HOOKD_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// `HOOKD_REQUIRE_NATS=1` (set by CI) turns a missing NATS server into a failure.
fn nats_required() -> bool {
    std::env::var("HOOKD_REQUIRE_NATS").is_ok_and(|v| v == "1")
}

/// A JetStream client, or `None` (the test is skipped, and says so) when NATS cannot be reached
/// and is not required.
pub async fn nats() -> Option<async_nats::jetstream::Context> {
    let attempt = tokio::time::timeout(
        Duration::from_secs(5),
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(nats_url()),
    )
    .await;
    match attempt {
        Ok(Ok(client)) => Some(async_nats::jetstream::new(client)),
        failed => {
            let error = match failed {
                Ok(Err(error)) => error.to_string(),
                _ => "no answer within 5 s".to_string(),
            };
            assert!(
                !nats_required(),
                "HOOKD_REQUIRE_NATS=1 but NATS is unreachable: {error}"
            );
            let _ = writeln!(
                std::io::stderr(),
                "\nSKIPPED: a NATS test ({error}); set HOOKD_TEST_NATS_URL or start NATS with \
                 JetStream on 127.0.0.1:4222 to run it\n"
            );
            None
        }
    }
}

/// A JetStream stream that exists for one test (subjects `<name>.>`) and is deleted with it,
/// even when the test panics.
pub struct TestStream {
    pub name: String,
    pub jetstream: async_nats::jetstream::Context,
}

impl TestStream {
    /// A new stream; `duplicate_window` is how long JetStream itself drops a repeated
    /// `Nats-Msg-Id` (NATS's default is 2 minutes).
    pub async fn create(
        jetstream: &async_nats::jetstream::Context,
        duplicate_window: Option<Duration>,
    ) -> TestStream {
        let name = format!("HOOKD_TEST_{}", uuid::Uuid::now_v7().simple());
        let mut config = async_nats::jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.>")],
            ..Default::default()
        };
        if let Some(window) = duplicate_window {
            config.duplicate_window = window;
        }
        jetstream
            .create_stream(config)
            .await
            .expect("create stream");
        TestStream {
            name,
            jetstream: jetstream.clone(),
        }
    }

    /// The settings of a source on this stream that publishes as `tenant`.
    pub fn source(&self, consumer: &str, company_id: &str, user_id: &str) -> NatsSource {
        NatsSource {
            url: nats_url(),
            stream: self.name.clone(),
            consumer: consumer.into(),
            subject: format!("{}.>", self.name),
            company_id: company_id.into(),
            user_id: user_id.into(),
            concurrency: 64,
        }
    }

    /// Publishes `body` on the stream with `Nats-Msg-Id: id` (none if `None`) and waits until
    /// JetStream stored it.
    pub async fn publish(&self, id: Option<&str>, body: impl Into<axum::body::Bytes>) {
        let mut headers = async_nats::HeaderMap::new();
        if let Some(id) = id {
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        }
        self.jetstream
            .publish_with_headers(format!("{}.events", self.name), headers, body.into())
            .await
            .expect("publish")
            .await
            .expect("stored by JetStream");
    }

    /// Waits until the consumer has no message left to deliver or to be acknowledged.
    pub async fn wait_until_consumed(&self, consumer: &str, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let stream = self.jetstream.get_stream(&self.name).await.expect("stream");
            let info = stream.consumer_info(consumer).await.ok();
            if info
                .as_ref()
                .is_some_and(|i| i.num_pending == 0 && i.num_ack_pending == 0)
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "consumer {consumer} not done within {within:?}: {:?}",
                info.map(|i| (i.num_pending, i.num_ack_pending, i.num_redelivered))
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any async context we may block, so use a thread (and a connection)
        // of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                if let Ok(client) = async_nats::connect(nats_url()).await {
                    let _ = async_nats::jetstream::new(client)
                        .delete_stream(&name)
                        .await;
                }
            });
            Ok::<_, std::io::Error>(())
        })
        .join();
    }
}

/// A node's `/metrics` text.
pub async fn metrics_text(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The value of `hookd_nats_messages_total` for `stream` and `outcome` in a `/metrics` text.
pub fn nats_messages(metrics: &str, stream: &str, outcome: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("hookd_nats_messages_total{"))
        .filter(|line| line.contains(&format!("stream=\"{stream}\"")))
        .filter(|line| line.contains(&format!("outcome=\"{outcome}\"")))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
