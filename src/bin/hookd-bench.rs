//! hookd's benchmark harness. Each scenario starts what it needs on loopback — a counting
//! receiver, and `hookd serve` as a child process on a fresh store — runs a fixed workload, and
//! prints one table whose figures are set against a baseline measured in the same run (these
//! machines are noisy, so only same-run ratios mean anything). Beside each rate it prints CPU
//! time per unit of work, hookd's and the baseline's, the figure noise moves least.
//! `docs/benchmarks.md` has the commands, what each figure covers, and the results.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use axum::{Router, body::Bytes, extract::State, http::StatusCode};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(about = "hookd benchmarks: same-run baselines, ratios, JSON results")]
struct Cli {
    /// `sqlite` (a fresh temp file) or a PostgreSQL server URL (a fresh database is created on it)
    #[arg(long, default_value = "sqlite", global = true)]
    store: String,
    /// Also write the results here as JSON
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Concurrent clients
    #[arg(long, default_value_t = 64, global = true)]
    concurrency: usize,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Clone, Copy)]
enum Scenario {
    /// 10 webhooks subscribed, 20,000 events published → 200,000 deliveries
    Fanout {
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        #[arg(long, default_value_t = 10)]
        webhooks: usize,
    },
    /// 64 senders POST a 1 KiB JSON body to an incoming webhook with a template and routing
    Ingest {
        #[arg(long, default_value_t = 50_000)]
        requests: usize,
    },
    /// Costs that must not grow with what is not involved: fan-out with 10 vs 10,000 configured
    /// webhooks (10 subscribed), and the logs/statistics endpoints with 10k vs 1M log rows
    Growth {
        #[arg(long, default_value_t = 5_000)]
        events: usize,
        #[arg(long, default_value_t = 10_000)]
        webhooks: usize,
        #[arg(long, default_value_t = 1_000_000)]
        log_rows: usize,
    },
    /// A steady 1,000 events/s for 30 s to one webhook: publish→receive latency
    Steady {
        #[arg(long, default_value_t = 1_000)]
        rate: u64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
}

/// CPU time (user + system) read from `/proc`.
mod cpu {
    use std::collections::HashMap;

    /// `/proc` counts CPU in ticks of USER_HZ, which Linux fixes at 100 for user space.
    const TICKS_PER_S: f64 = 100.0;

    /// A process's parent, its own CPU ticks, and those of the children it has reaped.
    struct Stat {
        parent: u32,
        own: u64,
        reaped: u64,
    }

    fn stat(path: &str) -> Option<Stat> {
        let text = std::fs::read_to_string(path).ok()?;
        // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
        let fields: Vec<&str> = text.get(text.rfind(')')? + 2..)?.split(' ').collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        Some(Stat {
            parent: u32::try_from(field(4)?).ok()?,
            own: field(14)? + field(15)?,
            reaped: field(16)? + field(17)?,
        })
    }

    /// CPU seconds of `root`, of every descendant alive now (hookd's template workers), and of
    /// the descendants already reaped.
    pub fn tree_seconds(root: u32) -> f64 {
        let mut children: HashMap<u32, Vec<(u32, u64)>> = HashMap::new();
        let mut root_ticks = 0;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Some(stat) = stat(&format!("/proc/{pid}/stat")) else {
                continue;
            };
            if pid == root {
                root_ticks = stat.own + stat.reaped;
            } else {
                children
                    .entry(stat.parent)
                    .or_default()
                    .push((pid, stat.own + stat.reaped));
            }
        }
        let (mut ticks, mut queue) = (root_ticks, vec![root]);
        while let Some(pid) = queue.pop() {
            for (child, child_ticks) in children.remove(&pid).unwrap_or_default() {
                ticks += child_ticks;
                queue.push(child);
            }
        }
        ticks as f64 / TICKS_PER_S
    }

    /// CPU seconds of this process (all its threads; not its children).
    pub fn own_seconds() -> f64 {
        stat("/proc/self/stat").map_or(0.0, |s| s.own as f64 / TICKS_PER_S)
    }
}

/// Microseconds of CPU per unit of work.
fn cpu_us_per(seconds: f64, units: u64) -> f64 {
    round2(seconds * 1e6 / units.max(1) as f64)
}

/// Counts what arrives and how long after its event was published.
#[derive(Default)]
struct Counter {
    received: AtomicU64,
    latencies_ms: Mutex<Vec<i64>>,
}

async fn count(State(counter): State<Arc<Counter>>, body: Bytes) -> StatusCode {
    let now = chrono::Utc::now().timestamp_millis();
    // The envelope's "timestamp" is the event's publish time; find it without parsing the body.
    let text = String::from_utf8_lossy(&body);
    if let Some(start) = text.find("\"timestamp\":\"") {
        let rest = &text[start + 13..];
        if let Some(stamp) = rest.split('"').next()
            && let Ok(at) = chrono::DateTime::parse_from_rfc3339(stamp)
        {
            counter
                .latencies_ms
                .lock()
                .unwrap()
                .push(now - at.timestamp_millis());
        }
    }
    counter.received.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}

async fn start_receiver() -> anyhow::Result<(SocketAddr, Arc<Counter>)> {
    let counter = Arc::new(Counter::default());
    let app = Router::new()
        .fallback(count)
        .with_state(Arc::clone(&counter));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, counter))
}

/// A `hookd serve` child process on a fresh store; killed (and its store dropped) on drop.
struct Hookd {
    child: Child,
    base: String,
    client: reqwest::Client,
    key: String,
    database_url: String,
    drop_database: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

const ADMIN_KEY: &str = "bench-admin-key";

impl Hookd {
    async fn start(store: &str) -> anyhow::Result<Hookd> {
        let dir = tempfile::tempdir()?;
        let (database_url, drop_database) = if store == "sqlite" {
            (
                format!("sqlite://{}", dir.path().join("bench.db").display()),
                None,
            )
        } else {
            let name = format!("hookd_bench_{}", uuid::Uuid::now_v7().simple());
            let admin = sqlx::PgPool::connect(store)
                .await
                .context("connecting to --store")?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                .execute(&admin)
                .await?;
            admin.close().await;
            let mut url = reqwest::Url::parse(store)?;
            url.set_path(&name);
            (url.to_string(), Some((store.to_string(), name)))
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let binary = std::env::current_exe()?.with_file_name("hookd");
        let child = Command::new(&binary)
            .arg("serve")
            .env("HOOKD_BIND", format!("127.0.0.1:{port}"))
            .env("HOOKD_DATABASE_URL", &database_url)
            .env("HOOKD_ADMIN_KEY", ADMIN_KEY)
            .env("HOOKD_ALLOWED_TARGET_CIDRS", "127.0.0.0/8")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (build it with --release first)",
                    binary.display()
                )
            })?;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?;
        let mut hookd = Hookd {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client,
            key: String::new(),
            database_url: database_url.clone(),
            drop_database,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while hookd
            .client
            .get(format!("{}/readyz", hookd.base))
            .send()
            .await
            .map(|r| r.status())
            .ok()
            != Some(reqwest::StatusCode::OK)
        {
            if Instant::now() > deadline {
                bail!("hookd did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let key: Value = hookd
            .client
            .post(format!("{}/api/admin/keys", hookd.base))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"user_id": "bench", "company_id": "bench"}))
            .send()
            .await?
            .json()
            .await?;
        hookd.key = key["key"].as_str().context("no key")?.to_string();
        Ok(hookd)
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path}: {status} {body}");
        }
        Ok(body)
    }

    async fn get(&self, path: &str) -> anyhow::Result<()> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await?;
        let status = response.status();
        let _ = response.bytes().await?;
        if !status.is_success() {
            bail!("{path}: {status}");
        }
        Ok(())
    }

    /// Writes `count` log rows straight into hookd's store, `webhook_id(i)` choosing each one's
    /// webhook (an SQL expression over `i`): the API would take hours to produce a million.
    async fn insert_log_rows(
        &self,
        count: usize,
        webhook_id: &str,
        tag: &str,
    ) -> anyhow::Result<()> {
        let now = chrono::Utc::now().timestamp_millis();
        let columns = "id, webhook_type, webhook_id, delivery_id, event_type, status, request_payload, \
             request_headers, response_status, response_body, error_message, retry_count, \
             processing_time_ms, created_at";
        let values = format!(
            "'{tag}-' || i, 'outgoing', {webhook_id}, NULL, 'chat.completed', 'delivered', \
             '{{\"n\": 1}}', '{{}}', 200, 'ok', NULL, 0, i % 50, {now} - {count} + i"
        );
        if self.database_url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&self.database_url).await?;
            let sql = format!(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {count})
                 INSERT INTO webhook_logs ({columns}) SELECT {values} FROM n"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await?;
            pool.close().await;
        } else {
            let pool = sqlx::PgPool::connect(&self.database_url).await?;
            let sql = format!(
                "INSERT INTO webhook_logs ({columns})
                 SELECT {values} FROM generate_series(0, {count} - 1) AS i"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await?;
            sqlx::query("ANALYZE webhook_logs").execute(&pool).await?;
            pool.close().await;
        }
        Ok(())
    }

    /// CPU seconds used so far by the hookd process and its descendants.
    fn cpu_seconds(&self) -> f64 {
        cpu::tree_seconds(self.child.id())
    }

    /// Peak resident memory of the hookd process so far, in MiB.
    fn peak_rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| {
                        l.split_whitespace()
                            .nth(1)
                            .and_then(|kb| kb.parse::<f64>().ok())
                    })
            })
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

impl Drop for Hookd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some((server, name)) = self.drop_database.take() {
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    let admin = sqlx::PgPool::connect(&server).await?;
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&admin)
                    .await?;
                    Ok::<_, anyhow::Error>(())
                })
            })
            .join();
        }
    }
}

/// Runs `total` calls of `call(i)` with `concurrency` in flight; returns the elapsed time.
async fn drive<F, Fut>(total: usize, concurrency: usize, call: F) -> anyhow::Result<Duration>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (call, next) = (Arc::clone(&call), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            loop {
                let i = usize::try_from(next.fetch_add(1, Ordering::Relaxed)).unwrap_or(usize::MAX);
                if i >= total {
                    return Ok::<_, anyhow::Error>(());
                }
                call(i).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed())
}

async fn wait_for(counter: &Counter, count: u64, within: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while counter.received.load(Ordering::Relaxed) < count {
        if started.elapsed() > within {
            bail!(
                "only {} of {count} arrived within {within:?}",
                counter.received.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(started.elapsed())
}

fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn latencies(counter: &Counter) -> (i64, i64, i64) {
    let mut all = std::mem::take(&mut *counter.latencies_ms.lock().unwrap());
    all.sort_unstable();
    (
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or(0),
    )
}

fn event_body(i: usize) -> Value {
    json!({"event_type": "chat.completed", "agent_name": "bench",
           "data": {"message": "benchmark event", "conversation_id": format!("conv-{i}"), "n": i}})
}

async fn fanout(cli: &Cli, events: usize, webhooks: usize) -> anyhow::Result<Value> {
    let concurrency = cli.concurrency;
    let total = (events * webhooks) as u64;

    // Baseline: the same receiver driven directly by a pooled client with bodies of the same
    // size, at the same concurrency: the most this machine can deliver.
    let (addr, counter) = start_receiver().await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let sample = serde_json::to_vec(
        &json!({"event_id": uuid::Uuid::now_v7().to_string(), "event_type": "chat.completed",
        "timestamp": chrono::Utc::now().to_rfc3339(), "webhook_id": uuid::Uuid::now_v7().to_string(), "user_id": "bench",
        "company_id": "bench", "agent_id": null, "agent_name": "bench", "data": event_body(0)["data"]}),
    )?;
    let url = format!("http://{addr}/");
    let baseline_cpu = cpu::own_seconds();
    let baseline = drive(total as usize, concurrency, move |_| {
        let (client, url, body) = (client.clone(), url.clone(), sample.clone());
        async move {
            client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?
                .error_for_status()?;
            Ok(())
        }
    })
    .await?;
    let baseline_rate = total as f64 / baseline.as_secs_f64();
    let baseline_cpu = cpu::own_seconds() - baseline_cpu;

    drop(counter);
    let run = fanout_through_hookd(cli, events, webhooks, 0).await?;
    Ok(json!({
        "scenario": "fanout", "store": store_name(&cli.store), "events": events, "webhooks": webhooks,
        "deliveries": total, "concurrency": concurrency,
        "publish_per_s": run.publish_per_s,
        "deliveries_per_s": run.deliveries_per_s,
        "baseline_deliveries_per_s": round(baseline_rate),
        "ratio_to_baseline": round2(run.deliveries_per_s / baseline_rate),
        "hookd_cpu_us_per_delivery": run.cpu_us_per_delivery,
        "baseline_cpu_us_per_request": cpu_us_per(baseline_cpu, total),
        "latency_ms": run.latency_ms,
        "peak_rss_mib": run.peak_rss_mib,
    }))
}

/// What one fan-out through hookd measured.
struct FanoutRun {
    publish_per_s: f64,
    deliveries_per_s: f64,
    latency_ms: Value,
    /// hookd's, from the first publish until the last delivery arrived.
    cpu_us_per_delivery: f64,
    peak_rss_mib: f64,
}

/// Publishes `events` to a fresh hookd with `subscribed` webhooks wanting them and `idle` more
/// that want something else, and waits until every delivery has arrived.
async fn fanout_through_hookd(
    cli: &Cli,
    events: usize,
    subscribed: usize,
    idle: usize,
) -> anyhow::Result<FanoutRun> {
    let total = (events * subscribed) as u64;
    let (addr, counter) = start_receiver().await?;
    let hookd = Arc::new(Hookd::start(&cli.store).await?);
    for i in 0..subscribed {
        hookd
            .post("/api/webhooks/outgoing", &json!({"url": format!("http://{addr}/hook/{i}"), "event_types": ["chat.*"], "secret": "bench-secret"}))
            .await?;
    }
    let creator = Arc::clone(&hookd);
    drive(idle, 16, move |i| {
        let hookd = Arc::clone(&creator);
        let body =
            json!({"url": format!("http://{addr}/idle/{i}"), "event_types": ["task.failed"]});
        async move { hookd.post("/api/webhooks/outgoing", &body).await.map(drop) }
    })
    .await?;
    let cpu_before = hookd.cpu_seconds();
    let started = Instant::now();
    let publisher = Arc::clone(&hookd);
    let publish = drive(events, cli.concurrency, move |i| {
        let hookd = Arc::clone(&publisher);
        async move { hookd.post("/api/events", &event_body(i)).await.map(drop) }
    })
    .await?;
    wait_for(&counter, total, Duration::from_secs(600)).await?;
    let all_in = started.elapsed();
    let cpu = hookd.cpu_seconds() - cpu_before;
    let (p50, p99, max) = latencies(&counter);
    Ok(FanoutRun {
        publish_per_s: round(events as f64 / publish.as_secs_f64()),
        deliveries_per_s: round(total as f64 / all_in.as_secs_f64()),
        latency_ms: json!({"p50": p50, "p99": p99, "max": max}),
        cpu_us_per_delivery: cpu_us_per(cpu, total),
        peak_rss_mib: round(hookd.peak_rss_mib()),
    })
}

/// p50 and p99 in ms of `rounds` sequential GETs of each path.
async fn read_latencies(hookd: &Hookd, paths: &[String], rounds: usize) -> anyhow::Result<Value> {
    let mut figures = serde_json::Map::new();
    for path in paths {
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let started = Instant::now();
            hookd.get(path).await?;
            times.push(i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX));
        }
        times.sort_unstable();
        let ms = |us: i64| round2(us as f64 / 1_000.0);
        let name = path.rsplit('/').next().unwrap_or(path).to_string();
        figures.insert(
            name,
            json!({"p50": ms(percentile(&times, 0.5)), "p99": ms(percentile(&times, 0.99))}),
        );
    }
    Ok(Value::Object(figures))
}

async fn growth(
    cli: &Cli,
    events: usize,
    webhooks: usize,
    log_rows: usize,
) -> anyhow::Result<Value> {
    const SUBSCRIBED: usize = 10;
    let few = fanout_through_hookd(cli, events, SUBSCRIBED, 0).await?;
    let many =
        fanout_through_hookd(cli, events, SUBSCRIBED, webhooks.saturating_sub(SUBSCRIBED)).await?;

    // One webhook's log of 10,000 entries read through the API; then the table grows to
    // `log_rows` with other webhooks' entries, and the same reads are timed again.
    const OWN_ROWS: usize = 10_000;
    let hookd = Hookd::start(&cli.store).await?;
    let created = hookd
        .post(
            "/api/webhooks/outgoing",
            &json!({"url": "http://127.0.0.1:9/never", "event_types": ["task.failed"]}),
        )
        .await?;
    let id = created["id"].as_str().context("no webhook id")?;
    hookd
        .insert_log_rows(OWN_ROWS, &format!("'{id}'"), "own")
        .await?;
    let paths = [
        format!("/api/webhooks/{id}/logs?limit=100"),
        format!("/api/webhooks/{id}/logs?limit=100&status=failed"),
        format!("/api/webhooks/{id}/statistics"),
    ];
    let small = read_latencies(&hookd, &paths, 200).await?;
    let others = log_rows.saturating_sub(OWN_ROWS);
    hookd
        .insert_log_rows(others, "'other-' || (i % 99)", "other")
        .await?;
    let large = read_latencies(&hookd, &paths, 200).await?;

    let ratio = |a: f64, b: f64| if b > 0.0 { round2(a / b) } else { 0.0 };
    let p99 = |run: &FanoutRun| run.latency_ms["p99"].as_f64().unwrap_or(0.0);
    Ok(json!({
        "scenario": "growth", "store": store_name(&cli.store), "events": events, "subscribed": SUBSCRIBED,
        "fanout": {
            "deliveries_per_s": {"webhooks_10": few.deliveries_per_s, format!("webhooks_{webhooks}"): many.deliveries_per_s,
                                 "slowdown": ratio(few.deliveries_per_s, many.deliveries_per_s)},
            "latency_p99_ms": {"webhooks_10": p99(&few), format!("webhooks_{webhooks}"): p99(&many),
                               "growth": ratio(p99(&many), p99(&few))},
            "hookd_cpu_us_per_delivery": {"webhooks_10": few.cpu_us_per_delivery, format!("webhooks_{webhooks}"): many.cpu_us_per_delivery,
                               "growth": ratio(many.cpu_us_per_delivery, few.cpu_us_per_delivery)},
        },
        "reads_ms": {format!("rows_{OWN_ROWS}"): small, format!("rows_{log_rows}"): large},
        "peak_rss_mib": few.peak_rss_mib.max(many.peak_rss_mib),
    }))
}

/// A 1 KiB JSON body like a CRM would send.
fn ingest_body() -> Vec<u8> {
    let filler = "x".repeat(820);
    serde_json::to_vec(&json!({"lead_name": "Ada Lovelace", "company": "Analytical Engines", "email": "ada@example.com",
        "phone": "+44 20 0000 0000", "priority": "high", "notes": filler}))
    .unwrap_or_default()
}

/// Sends `requests` POSTs of `body` to `url` at `concurrency`; returns (elapsed, sorted latencies ms).
async fn hammer(
    url: String,
    body: Vec<u8>,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<(Duration, Vec<i64>)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(requests)));
    let recorded = Arc::clone(&latencies);
    let elapsed = drive(requests, concurrency, move |_| {
        let (client, url, body, recorded) = (
            client.clone(),
            url.clone(),
            body.clone(),
            Arc::clone(&recorded),
        );
        async move {
            let started = Instant::now();
            let response = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?;
            if response.status() != reqwest::StatusCode::ACCEPTED {
                bail!("{url}: {}", response.status());
            }
            let _ = response.bytes().await?;
            recorded
                .lock()
                .unwrap()
                .push(i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX));
            Ok(())
        }
    })
    .await?;
    let mut all = std::mem::take(&mut *latencies.lock().unwrap());
    all.sort_unstable();
    Ok((elapsed, all))
}

async fn ingest(cli: &Cli, requests: usize) -> anyhow::Result<Value> {
    // Baseline: a bare axum handler answering 202 to the same requests.
    let app =
        Router::new().fallback(|| async { (StatusCode::ACCEPTED, "{\"status\":\"accepted\"}") });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bare = format!("http://{}/webhook/token", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let baseline_cpu = cpu::own_seconds();
    let (baseline, baseline_latencies) =
        hammer(bare, ingest_body(), requests, cli.concurrency).await?;
    let baseline_cpu = cpu::own_seconds() - baseline_cpu;
    server.abort();

    let hookd = Hookd::start(&cli.store).await?;
    let created = hookd
        .post(
            "/api/webhooks/incoming",
            &json!({"name": "bench", "agent_id": "bench_agent", "rate_limit": 1_000_000,
                    "transform_template": "{\"message\": \"New lead: {{ lead_name }} from {{ company }}\", \"priority\": \"{{ priority | default('medium') }}\"}"}),
        )
        .await?;
    let url = created["url"]
        .as_str()
        .context("no receiving url")?
        .to_string();
    let cpu_before = hookd.cpu_seconds();
    let (elapsed, latencies) = hammer(url, ingest_body(), requests, cli.concurrency).await?;
    let hookd_cpu = hookd.cpu_seconds() - cpu_before;
    let rate = requests as f64 / elapsed.as_secs_f64();
    let baseline_rate = requests as f64 / baseline.as_secs_f64();
    let ms = |us: i64| round2(us as f64 / 1_000.0);
    Ok(json!({
        "scenario": "ingest", "store": store_name(&cli.store), "requests": requests, "concurrency": cli.concurrency,
        "body_bytes": ingest_body().len(),
        "accepted_per_s": round(rate),
        "baseline_per_s": round(baseline_rate),
        "ratio_to_baseline": round2(rate / baseline_rate),
        "hookd_cpu_us_per_request": cpu_us_per(hookd_cpu, requests as u64),
        "baseline_cpu_us_per_request": cpu_us_per(baseline_cpu, requests as u64),
        "latency_ms": {"p50": ms(percentile(&latencies, 0.5)), "p99": ms(percentile(&latencies, 0.99))},
        "baseline_latency_ms": {"p50": ms(percentile(&baseline_latencies, 0.5)), "p99": ms(percentile(&baseline_latencies, 0.99))},
        "peak_rss_mib": round(hookd.peak_rss_mib()),
    }))
}

async fn steady(cli: &Cli, rate: u64, seconds: u64) -> anyhow::Result<Value> {
    let (addr, counter) = start_receiver().await?;
    let hookd = Arc::new(Hookd::start(&cli.store).await?);
    hookd
        .post(
            "/api/webhooks/outgoing",
            &json!({"url": format!("http://{addr}/steady"), "event_types": ["*"]}),
        )
        .await?;
    let total = rate * seconds;
    let gate = Arc::new(Semaphore::new(cli.concurrency));
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut late = 0_u64;
    let cpu_before = hookd.cpu_seconds();
    for i in 0..total {
        tick.tick().await;
        let Ok(permit) = Arc::clone(&gate).try_acquire_owned() else {
            late += 1;
            continue;
        };
        let hookd = Arc::clone(&hookd);
        tokio::spawn(async move {
            let _ = hookd.post("/api/events", &event_body(i as usize)).await;
            drop(permit);
        });
    }
    let sent = total - late;
    wait_for(&counter, sent, Duration::from_secs(120)).await?;
    let cpu = hookd.cpu_seconds() - cpu_before;
    let (p50, p99, max) = latencies(&counter);
    Ok(json!({
        "scenario": "steady", "store": store_name(&cli.store), "target_rate": rate, "seconds": seconds,
        "published": sent, "skipped_because_publishers_were_busy": late,
        "achieved_rate": round(sent as f64 / started.elapsed().as_secs_f64()),
        "latency_ms": {"p50": p50, "p99": p99, "max": max},
        "hookd_cpu_us_per_delivery": cpu_us_per(cpu, sent),
        "peak_rss_mib": round(hookd.peak_rss_mib()),
    }))
}

fn store_name(store: &str) -> &str {
    if store == "sqlite" {
        "sqlite"
    } else {
        "postgres"
    }
}

fn round(x: f64) -> f64 {
    x.round()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// One row per figure, nested figures with dotted names.
fn print_table(value: &Value, prefix: &str) {
    if let Value::Object(map) = value {
        for (key, value) in map {
            let name = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                Value::Object(_) => print_table(value, &name),
                other => println!("{name:<40} {other}"),
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let result = match cli.scenario {
        Scenario::Fanout { events, webhooks } => fanout(&cli, events, webhooks).await?,
        Scenario::Steady { rate, seconds } => steady(&cli, rate, seconds).await?,
        Scenario::Growth {
            events,
            webhooks,
            log_rows,
        } => growth(&cli, events, webhooks, log_rows).await?,
        Scenario::Ingest { requests } => ingest(&cli, requests).await?,
    };
    print_table(&result, "");
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_vec_pretty(&result)?)?;
    }
    Ok(())
}
