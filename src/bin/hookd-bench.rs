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
    /// `hookd serve` processes sharing the store (more than one needs PostgreSQL); publishers and
    /// senders are spread over them in turn
    #[arg(long, default_value_t = 1, global = true)]
    nodes: usize,
    /// Redis for the nodes' shared limits (`HOOKD_REDIS_URL`); its commands are then counted
    #[arg(long, global = true)]
    redis: Option<String>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Clone)]
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
        /// Spread the other webhooks' log rows evenly over this many days before now (at most
        /// 29: hookd's own retention keeps 30), each day in its partition on PostgreSQL as nodes
        /// running through those days would have made it, and then time retention of one whole
        /// day of them; 0: all within the last `log_rows` ms, no retention timed
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..30))]
        log_days: u32,
        /// Only the logs part: no fan-out runs
        #[arg(long)]
        logs_only: bool,
    },
    /// The same events into the same webhooks twice: by `POST /api/events`, then as messages
    /// of a NATS JetStream stream that hookd reads (`[[sources.nats]]`; with --nodes, every node
    /// reads it through the one durable consumer)
    Nats {
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        #[arg(long, default_value_t = 1)]
        webhooks: usize,
        /// The NATS server (with JetStream); a stream of its own is made and deleted
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats: String,
    },
    /// A steady 1,000 events/s for 30 s to one webhook: publish→receive latency
    Steady {
        #[arg(long, default_value_t = 1_000)]
        rate: u64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
}

/// CPU time (user + system) and disk writes, read from `/proc`.
mod procfs {
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

    /// The ids of the processes alive now.
    fn pids() -> impl Iterator<Item = u32> {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
    }

    /// CPU seconds of `root`, of every descendant alive now (hookd's template workers), and of
    /// the descendants already reaped.
    pub fn tree_seconds(root: u32) -> f64 {
        let mut children: HashMap<u32, Vec<(u32, u64)>> = HashMap::new();
        let mut root_ticks = 0;
        for pid in pids() {
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

    /// The processes alive now whose command line (as the process shows it: PostgreSQL puts its
    /// role and database there) `kind` recognises: (pid, kind, own CPU seconds).
    pub fn seconds_by_title<K>(kind: impl Fn(&str) -> Option<K>) -> Vec<(u32, K, f64)> {
        pids()
            .filter_map(|pid| {
                let line = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let kind = kind(&String::from_utf8_lossy(&line))?;
                let stat = stat(&format!("/proc/{pid}/stat"))?;
                Some((pid, kind, stat.own as f64 / TICKS_PER_S))
            })
            .collect()
    }

    /// Bytes `pid` has caused to be written to storage (`write_bytes` of `/proc/PID/io`; its
    /// own threads, not its children).
    pub fn written_bytes(pid: u32) -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/io"))
            .ok()
            .and_then(|io| {
                io.lines()
                    .find_map(|l| l.strip_prefix("write_bytes: "))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Peak resident memory of `pid` so far, in MiB.
    pub fn peak_rss_mib(pid: u32) -> f64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|l| {
                        l.split_whitespace()
                            .next()
                            .and_then(|kb| kb.parse::<f64>().ok())
                    })
            })
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

/// Microseconds of CPU per unit of work.
fn cpu_us_per(seconds: f64, units: u64) -> f64 {
    round2(seconds * 1e6 / units.max(1) as f64)
}

/// The ratio to the baseline that the CPU figures allow when the machine's cores are what limits
/// both runs: the baseline's CPU per request (its client and server, both in this process) over
/// what a unit of the hookd run costs the machine: hookd's CPU, this process's (the load
/// generator and receiver), and PostgreSQL's and Redis's where measured. On a machine where both
/// runs keep every core busy, the measured ratio is close to it, and it is moved by CPU time
/// alone.
fn cpu_bound_ratio(baseline_cpu: f64, hookd: &Costs, bench_cpu: f64) -> f64 {
    let spent = hookd.cpu_us_per_unit + hookd.servers_cpu_us_per_unit + bench_cpu;
    round2(baseline_cpu / spent.max(f64::EPSILON))
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

/// PostgreSQL's side of a measured phase on a bench database: its commits and the rows written
/// to its tables (the server's statistics of that database), the WAL the server wrote and its
/// WAL fsyncs (cluster-wide: other databases' writes count too), and, when the server runs on
/// this machine, the CPU of its processes.
mod pg_costs {
    use std::{
        collections::{BTreeMap, HashMap},
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
        thread::JoinHandle,
        time::{Duration, Instant},
    };

    use anyhow::bail;
    use serde_json::{Map, Value, json};
    use sqlx::{PgPool, postgres::PgConnectOptions, postgres::PgPoolOptions};

    use super::{cpu_us_per, procfs, round, round3};

    /// Our own connections' name, so that waiting for hookd's to end can tell them apart.
    const APPLICATION_NAME: &str = "hookd-bench";

    /// How often the CPU of PostgreSQL's processes is read: often enough to see most of a
    /// short-lived autovacuum worker before it exits.
    const SAMPLE_EVERY: Duration = Duration::from_millis(200);

    pub struct Account {
        /// On the server's own database: the cluster-wide views.
        server: PgPool,
        /// On the bench database: its tables' statistics.
        bench: PgPool,
        name: String,
        /// Whether the server's processes are this machine's (loopback or a local socket).
        local: bool,
    }

    /// Counters at one moment.
    pub struct Snapshot {
        counters: Counters,
        /// Rows inserted, updated, deleted, and updated in place (HOT: no index touched), per table
        /// (partitions counted under their table).
        rows: BTreeMap<String, [i64; 4]>,
    }

    #[derive(sqlx::FromRow)]
    struct Counters {
        /// The database's transactions committed, read-only ones included.
        commits: i64,
        /// Those of the server's other databases: if they moved, the cluster-wide figures hold
        /// other work too.
        other_commits: i64,
        /// The next transaction id: it moves once per transaction that wrote (cluster-wide).
        next_xid: i64,
        wal_bytes: i64,
        wal_syncs: i64,
        wal_full_pages: i64,
    }

    /// Where a measured phase started.
    pub struct Phase {
        before: Snapshot,
        sampler: Option<CpuSampler>,
        /// CPU seconds per kind of process, once sampling stopped.
        cpu: Option<HashMap<Process, f64>>,
    }

    #[derive(Clone, Copy, PartialEq, Eq, Hash)]
    enum Process {
        /// Serving the bench database: hookd's connections and autovacuum on its tables.
        Backend,
        /// The cluster's WAL writer, checkpointer and background writer.
        Writer,
    }

    fn process(title: &str, database: &str) -> Option<Process> {
        let title = title.strip_prefix("postgres: ")?;
        if title.contains(database) {
            Some(Process::Backend)
        } else if ["walwriter", "checkpointer", "background writer"]
            .iter()
            .any(|name| title.contains(name))
        {
            Some(Process::Writer)
        } else {
            None
        }
    }

    /// Reads the CPU of PostgreSQL's processes until stopped (or dropped), so that a backend
    /// that exits within the phase still counts up to its last sample.
    pub struct CpuSampler {
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<HashMap<Process, f64>>>,
    }

    impl CpuSampler {
        fn start(database: String) -> CpuSampler {
            let stop = Arc::new(AtomicBool::new(false));
            let stopped = Arc::clone(&stop);
            let thread = std::thread::spawn(move || {
                // pid → (kind, seconds at the start or when first seen, seconds last seen)
                let mut seen: HashMap<u32, (Process, f64, f64)> = HashMap::new();
                let mut first = true;
                loop {
                    let last = stopped.load(Ordering::Acquire);
                    let now = procfs::seconds_by_title(|title| process(title, &database));
                    for (pid, kind, seconds) in now {
                        // A process born within the phase spent all its CPU in it.
                        let start = if first { seconds } else { 0.0 };
                        seen.entry(pid).or_insert((kind, start, seconds)).2 = seconds;
                    }
                    first = false;
                    if last {
                        break;
                    }
                    std::thread::sleep(SAMPLE_EVERY);
                }
                let mut spent = HashMap::new();
                for (kind, start, end) in seen.into_values() {
                    *spent.entry(kind).or_insert(0.0) += end - start;
                }
                spent
            });
            CpuSampler {
                stop,
                thread: Some(thread),
            }
        }

        /// Takes a last sample; CPU seconds per kind of process since the start.
        fn stop(mut self) -> HashMap<Process, f64> {
            self.stop.store(true, Ordering::Release);
            self.thread
                .take()
                .and_then(|thread| thread.join().ok())
                .unwrap_or_default()
        }
    }

    impl Drop for CpuSampler {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Release);
        }
    }

    impl Phase {
        /// Stops reading PostgreSQL's CPU (before hookd's connections end and take their
        /// processes with them).
        pub fn stop_sampling(&mut self) {
            self.cpu = self.sampler.take().map(CpuSampler::stop);
        }
    }

    impl Account {
        pub async fn connect(server: &str, name: &str) -> anyhow::Result<Account> {
            let options: PgConnectOptions = server.parse()?;
            let options = options.application_name(APPLICATION_NAME);
            let host = options.get_host();
            let local = ["127.0.0.1", "localhost", "::1"].contains(&host) || host.starts_with('/');
            let pool = |options| {
                PgPoolOptions::new()
                    .max_connections(1)
                    .connect_with(options)
            };
            Ok(Account {
                server: pool(options.clone()).await?,
                bench: pool(options.database(name)).await?,
                name: name.to_string(),
                local,
            })
        }

        async fn snapshot(&self) -> anyhow::Result<Snapshot> {
            let counters: Counters = sqlx::query_as(
                "SELECT d.xact_commit AS commits,
                        (SELECT sum(xact_commit) FROM pg_stat_database
                         WHERE datname IS DISTINCT FROM $1)::bigint AS other_commits,
                        pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next_xid,
                        (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS wal_bytes,
                        w.wal_sync AS wal_syncs, w.wal_fpi AS wal_full_pages
                 FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = $1",
            )
            .bind(&self.name)
            .fetch_one(&self.server)
            .await?;
            let tables: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
                "SELECT COALESCE(pg_partition_root(relid), relid::regclass)::text,
                        n_tup_ins, n_tup_upd, n_tup_del, n_tup_hot_upd
                 FROM pg_stat_user_tables",
            )
            .fetch_all(&self.bench)
            .await?;
            let mut rows: BTreeMap<String, [i64; 4]> = BTreeMap::new();
            for (table, inserted, updated, deleted, in_place) in tables {
                let counts = rows.entry(table).or_default();
                for (count, n) in counts
                    .iter_mut()
                    .zip([inserted, updated, deleted, in_place])
                {
                    *count += n;
                }
            }
            Ok(Snapshot { counters, rows })
        }

        pub async fn start(&self) -> anyhow::Result<Phase> {
            let sampler = self.local.then(|| CpuSampler::start(self.name.clone()));
            Ok(Phase {
                before: self.snapshot().await?,
                sampler,
                cpu: None,
            })
        }

        /// A backend publishes its statistics at most once a second while busy, and only
        /// after 10 s when it goes idle, but always when it exits: once hookd's connections
        /// have ended, the counters hold all they did.
        async fn wait_for_hookd_to_disconnect(&self) -> anyhow::Result<()> {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (connected,): (i64,) = sqlx::query_as(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = $1 AND backend_type = 'client backend'
                       AND application_name <> $2",
                )
                .bind(&self.name)
                .bind(APPLICATION_NAME)
                .fetch_one(&self.server)
                .await?;
                if connected == 0 {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!("{connected} connections of the stopped nodes still open after 10 s");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        /// The phase's figures per unit of work, once hookd's nodes are stopped.
        pub async fn figures(&self, phase: Phase, units: u64, unit: &str) -> anyhow::Result<Value> {
            self.wait_for_hookd_to_disconnect().await?;
            let after = self.snapshot().await?;
            let before = phase.before;
            let per = |n: i64| round3(n as f64 / units.max(1) as f64);
            let (mut tables, mut total) = (Map::new(), 0);
            for (table, counts) in &after.rows {
                let was = before.rows.get(table).copied().unwrap_or_default();
                let mut written = Map::new();
                for (i, name) in ["ins", "upd", "del", "hot_upd"].into_iter().enumerate() {
                    // HOT updates are among the updates already counted.
                    if name != "hot_upd" {
                        total += counts[i] - was[i];
                    }
                    // The setup's few rows may land in the phase: what rounds to nothing is left out.
                    let figure = per(counts[i] - was[i]);
                    if figure != 0.0 {
                        written.insert(name.into(), figure.into());
                    }
                }
                if !written.is_empty() {
                    tables.insert(table.clone(), written.into());
                }
            }
            let mut rows = Map::new();
            rows.insert("total".into(), per(total).into());
            rows.extend(tables);
            let (was, now) = (&before.counters, &after.counters);
            let mut figures = json!({
                format!("commits_per_{unit}"): per(now.commits - was.commits),
                format!("write_commits_per_{unit}"): per(now.next_xid - was.next_xid),
                format!("wal_bytes_per_{unit}"): round((now.wal_bytes - was.wal_bytes) as f64 / units.max(1) as f64),
                format!("wal_syncs_per_{unit}"): per(now.wal_syncs - was.wal_syncs),
                format!("wal_full_pages_per_{unit}"): per(now.wal_full_pages - was.wal_full_pages),
                format!("rows_per_{unit}"): rows,
                // A count, not per unit; the bench's own few queries on the server's database
                // are in it.
                "other_databases_commits": now.other_commits - was.other_commits,
            });
            if let Some(cpu) = phase.cpu {
                let spent = |kind| cpu_us_per(cpu.get(&kind).copied().unwrap_or(0.0), units);
                figures[format!("postgres_cpu_us_per_{unit}")] = json!({
                    "backends": spent(Process::Backend),
                    "wal_writer_and_checkpointer": spent(Process::Writer),
                });
            }
            Ok(figures)
        }
    }
}

/// Where a measured phase started.
struct Meter {
    cpu: f64,
    written: u64,
    postgres: Option<pg_costs::Phase>,
    redis: Option<RedisCounters>,
}

/// Redis's own counters (all its clients'): commands processed, those that scripts call
/// included, and its CPU seconds.
#[derive(Clone, Copy)]
struct RedisCounters {
    commands: u64,
    cpu: f64,
}

/// What a measured phase cost.
struct Costs {
    /// hookd's CPU (every node, with its template workers) per unit of work.
    cpu_us_per_unit: f64,
    /// PostgreSQL's and Redis's CPU per unit of work, where measured (see `figures`).
    servers_cpu_us_per_unit: f64,
    /// Of the node that grew most.
    peak_rss_mib: f64,
    /// `database` (PostgreSQL's figures, or for SQLite the bytes hookd wrote to disk) and
    /// `redis`, per unit of work.
    figures: serde_json::Map<String, Value>,
}

/// hookd on a fresh store: `--nodes` `hookd serve` child processes sharing it; killed (and the
/// store dropped) on drop.
struct Hookd {
    nodes: Mutex<Vec<Child>>,
    pids: Vec<u32>,
    bases: Vec<String>,
    client: reqwest::Client,
    key: String,
    database_url: String,
    postgres: Option<pg_costs::Account>,
    redis: Option<redis::aio::MultiplexedConnection>,
    drop_database: Option<(String, String)>,
    /// Added to each node's environment.
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

const ADMIN_KEY: &str = "bench-admin-key";

impl Hookd {
    async fn start(cli: &Cli) -> anyhow::Result<Hookd> {
        Hookd::start_with(cli, &[]).await
    }

    /// Starts the nodes with `env` added to their environment.
    async fn start_with(cli: &Cli, env: &[(&str, &str)]) -> anyhow::Result<Hookd> {
        let store = cli.store.as_str();
        if cli.nodes == 0 {
            bail!("--nodes: at least 1");
        }
        if store == "sqlite" && cli.nodes > 1 {
            bail!("--nodes: several nodes share a PostgreSQL database (--store postgres://…)");
        }
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
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?;
        let mut hookd = Hookd {
            nodes: Mutex::new(Vec::new()),
            pids: Vec::new(),
            bases: Vec::new(),
            client,
            key: String::new(),
            database_url,
            postgres: None,
            redis: None,
            drop_database,
            env: env
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            _dir: dir,
        };
        // One at a time: the first node creates the schema, the others find it there.
        for _ in 0..cli.nodes {
            hookd.start_node(cli.redis.as_deref()).await?;
        }
        if let Some((server, name)) = &hookd.drop_database {
            hookd.postgres = Some(pg_costs::Account::connect(server, name).await?);
        }
        if let Some(url) = &cli.redis {
            let client = redis::Client::open(url.as_str())?;
            hookd.redis = Some(client.get_multiplexed_async_connection().await?);
        }
        let key: Value = hookd
            .client
            .post(format!("{}/api/admin/keys", hookd.bases[0]))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"user_id": "bench", "company_id": "bench"}))
            .send()
            .await?
            .json()
            .await?;
        hookd.key = key["key"].as_str().context("no key")?.to_string();
        Ok(hookd)
    }

    async fn start_node(&mut self, redis: Option<&str>) -> anyhow::Result<()> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let binary = std::env::current_exe()?.with_file_name("hookd");
        let mut command = Command::new(&binary);
        command
            .arg("serve")
            .env("HOOKD_BIND", format!("127.0.0.1:{port}"))
            .env("HOOKD_DATABASE_URL", &self.database_url)
            .env("HOOKD_ADMIN_KEY", ADMIN_KEY)
            .env("HOOKD_ALLOWED_TARGET_CIDRS", "127.0.0.0/8")
            // The growth scenario gives one company 10,000 webhooks, past the default quota.
            .env("HOOKD_MAX_WEBHOOKS_PER_COMPANY", "20000")
            .env("HOOKD_MAX_DELIVERIES_PER_REQUEST", "20000")
            .env("RUST_LOG", "warn")
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::null());
        if let Some(redis) = redis {
            command.env("HOOKD_REDIS_URL", redis);
        }
        let child = command.spawn().with_context(|| {
            format!(
                "starting {} (build it with --release first)",
                binary.display()
            )
        })?;
        self.pids.push(child.id());
        self.nodes.get_mut().unwrap().push(child);
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .client
            .get(format!("{base}/readyz"))
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
        self.bases.push(base);
        Ok(())
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.post_via(0, path, body).await
    }

    /// POSTs through node `i` (modulo the node count), so that callers numbered in turn spread
    /// their requests over the nodes.
    async fn post_via(&self, i: usize, path: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .client
            .post(format!("{}{path}", self.bases[i % self.bases.len()]))
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
            .get(format!("{}{path}", self.bases[0]))
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
    /// webhook (an SQL expression over `i`), spread evenly over the `span_ms` before now: the
    /// API would take hours to produce a million.
    async fn insert_log_rows(
        &self,
        count: usize,
        webhook_id: &str,
        tag: &str,
        span_ms: i64,
    ) -> anyhow::Result<()> {
        // SQLite's counter below yields its first row whatever the count.
        if count == 0 {
            return Ok(());
        }
        let now = chrono::Utc::now().timestamp_millis();
        let columns = "id, webhook_type, webhook_id, delivery_id, event_type, status, request_payload, \
             request_headers, response_status, response_body, error_message, retry_count, \
             processing_time_ms, created_at";
        let values = format!(
            "'{tag}-' || i, 'outgoing', {webhook_id}, NULL, 'chat.completed', 'delivered', \
             '{{\"n\": 1}}', '{{}}', 200, 'ok', NULL, 0, i % 50, {now} - {span_ms} + CAST(i AS BIGINT) * {span_ms} / {count}"
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

    /// CPU seconds used so far by the nodes and their descendants.
    fn cpu_seconds(&self) -> f64 {
        self.pids.iter().map(|&pid| procfs::tree_seconds(pid)).sum()
    }

    /// Bytes the nodes have written to disk so far (on SQLite, the store's WAL and checkpoints).
    fn written_bytes(&self) -> u64 {
        self.pids
            .iter()
            .map(|&pid| procfs::written_bytes(pid))
            .sum()
    }

    async fn redis_counters(&self) -> anyhow::Result<Option<RedisCounters>> {
        let Some(connection) = &self.redis else {
            return Ok(None);
        };
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .arg("cpu")
            .query_async(&mut connection.clone())
            .await?;
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|n| n.trim().parse::<f64>().ok())
                .with_context(|| format!("no {name} in Redis's INFO"))
        };
        Ok(Some(RedisCounters {
            commands: field("total_commands_processed")? as u64,
            cpu: field("used_cpu_user")? + field("used_cpu_sys")?,
        }))
    }

    /// Starts measuring a phase: from now until [`Hookd::finish`].
    async fn meter(&self) -> anyhow::Result<Meter> {
        let postgres = match &self.postgres {
            Some(account) => Some(account.start().await?),
            None => None,
        };
        Ok(Meter {
            cpu: self.cpu_seconds(),
            written: self.written_bytes(),
            postgres,
            redis: self.redis_counters().await?,
        })
    }

    /// Ends the phase `meter` started, which did `units` of work (each a `unit`), and stops the
    /// nodes: PostgreSQL's counters hold a connection's work only once it has ended.
    async fn finish(&self, mut meter: Meter, units: u64, unit: &str) -> anyhow::Result<Costs> {
        if let Some(phase) = &mut meter.postgres {
            phase.stop_sampling();
        }
        let cpu = self.cpu_seconds() - meter.cpu;
        let written = self.written_bytes().saturating_sub(meter.written);
        let peak_rss_mib = self
            .pids
            .iter()
            .map(|&pid| procfs::peak_rss_mib(pid))
            .fold(0.0, f64::max);
        let redis = self.redis_counters().await?;
        self.stop();
        let mut figures = serde_json::Map::new();
        let database = match (&self.postgres, meter.postgres) {
            (Some(account), Some(phase)) => account.figures(phase, units, unit).await?,
            _ => json!({
                format!("hookd_disk_write_bytes_per_{unit}"): round(written as f64 / units.max(1) as f64)
            }),
        };
        figures.insert("database".into(), database);
        if let (Some(before), Some(after)) = (meter.redis, redis) {
            let commands = after.commands.saturating_sub(before.commands);
            figures.insert(
                "redis".into(),
                json!({
                    format!("commands_per_{unit}"): round3(commands as f64 / units.max(1) as f64),
                    format!("cpu_us_per_{unit}"): cpu_us_per(after.cpu - before.cpu, units),
                }),
            );
        }
        // The servers hookd leans on, when they share this machine's cores.
        let postgres = format!("postgres_cpu_us_per_{unit}");
        let database = figures.get("database");
        let servers_cpu_us_per_unit = [
            database.and_then(|d| d[&postgres]["backends"].as_f64()),
            database.and_then(|d| d[&postgres]["wal_writer_and_checkpointer"].as_f64()),
            (figures.get("redis")).and_then(|r| r[format!("cpu_us_per_{unit}")].as_f64()),
        ]
        .into_iter()
        .flatten()
        .sum();
        Ok(Costs {
            cpu_us_per_unit: cpu_us_per(cpu, units),
            servers_cpu_us_per_unit,
            peak_rss_mib: round(peak_rss_mib),
            figures,
        })
    }

    /// Kills the nodes.
    fn stop(&self) {
        for child in self.nodes.lock().unwrap().iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Hookd {
    fn drop(&mut self) {
        self.stop();
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

/// `events` events published one per `POST /api/events`, spread over the nodes, at
/// `concurrency`; how long it took.
async fn publish_events(
    hookd: &Arc<Hookd>,
    events: usize,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let publisher = Arc::clone(hookd);
    drive(events, concurrency, move |i| {
        let hookd = Arc::clone(&publisher);
        async move {
            hookd
                .post_via(i, "/api/events", &event_body(i))
                .await
                .map(drop)
        }
    })
    .await
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
    let baseline_cpu = procfs::own_seconds();
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
    let baseline_cpu = procfs::own_seconds() - baseline_cpu;

    drop(counter);
    let bench_cpu = procfs::own_seconds();
    let run = fanout_through_hookd(cli, events, webhooks, 0).await?;
    let bench_cpu = cpu_us_per(procfs::own_seconds() - bench_cpu, total);
    let baseline_cpu = cpu_us_per(baseline_cpu, total);
    let result = json!({
        "scenario": "fanout", "store": store_name(&cli.store), "nodes": cli.nodes, "events": events, "webhooks": webhooks,
        "deliveries": total, "concurrency": concurrency,
        "publish_per_s": run.publish_per_s,
        "deliveries_per_s": run.deliveries_per_s,
        "baseline_deliveries_per_s": round(baseline_rate),
        "ratio_to_baseline": round2(run.deliveries_per_s / baseline_rate),
        "hookd_cpu_us_per_delivery": run.costs.cpu_us_per_unit,
        "baseline_cpu_us_per_request": baseline_cpu,
        "bench_cpu_us_per_delivery": bench_cpu,
        "cpu_bound_ratio": cpu_bound_ratio(baseline_cpu, &run.costs, bench_cpu),
        "latency_ms": run.latency_ms,
        "peak_rss_mib": run.costs.peak_rss_mib,
    });
    Ok(with_figures(result, run.costs.figures))
}

/// What one fan-out through hookd measured.
struct FanoutRun {
    publish_per_s: f64,
    deliveries_per_s: f64,
    latency_ms: Value,
    /// From the first publish until the last delivery arrived.
    costs: Costs,
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
    let hookd = Arc::new(Hookd::start(cli).await?);
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
    let meter = hookd.meter().await?;
    let started = Instant::now();
    let publish = publish_events(&hookd, events, cli.concurrency).await?;
    wait_for(&counter, total, Duration::from_secs(600)).await?;
    let all_in = started.elapsed();
    let costs = hookd.finish(meter, total, "delivery").await?;
    let (p50, p99, max) = latencies(&counter);
    Ok(FanoutRun {
        publish_per_s: round(events as f64 / publish.as_secs_f64()),
        deliveries_per_s: round(total as f64 / all_in.as_secs_f64()),
        latency_ms: json!({"p50": p50, "p99": p99, "max": max}),
        costs,
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
    logs: LogVolume,
) -> anyhow::Result<Value> {
    const SUBSCRIBED: usize = 10;
    let fanout = if logs.only {
        Value::Null
    } else {
        let few = fanout_through_hookd(cli, events, SUBSCRIBED, 0).await?;
        let many =
            fanout_through_hookd(cli, events, SUBSCRIBED, webhooks.saturating_sub(SUBSCRIBED))
                .await?;
        let ratio = |a: f64, b: f64| if b > 0.0 { round2(a / b) } else { 0.0 };
        let p99 = |run: &FanoutRun| run.latency_ms["p99"].as_f64().unwrap_or(0.0);
        let cpu = |run: &FanoutRun| run.costs.cpu_us_per_unit;
        json!({
            "deliveries_per_s": {"webhooks_10": few.deliveries_per_s, format!("webhooks_{webhooks}"): many.deliveries_per_s,
                                 "slowdown": ratio(few.deliveries_per_s, many.deliveries_per_s)},
            "latency_p99_ms": {"webhooks_10": p99(&few), format!("webhooks_{webhooks}"): p99(&many),
                               "growth": ratio(p99(&many), p99(&few))},
            "hookd_cpu_us_per_delivery": {"webhooks_10": cpu(&few), format!("webhooks_{webhooks}"): cpu(&many),
                               "growth": ratio(cpu(&many), cpu(&few))},
            "peak_rss_mib": few.costs.peak_rss_mib.max(many.costs.peak_rss_mib),
        })
    };

    // One webhook's log of 10,000 entries read through the API; then the table grows to
    // `log_rows` with other webhooks' entries, and the same reads are timed again.
    const OWN_ROWS: usize = 10_000;
    let hookd = Hookd::start(cli).await?;
    let created = hookd
        .post(
            "/api/webhooks/outgoing",
            &json!({"url": "http://127.0.0.1:9/never", "event_types": ["task.failed"]}),
        )
        .await?;
    let id = created["id"].as_str().context("no webhook id")?;
    hookd
        .insert_log_rows(OWN_ROWS, &format!("'{id}'"), "own", OWN_ROWS as i64)
        .await?;
    let paths = [
        format!("/api/webhooks/{id}/logs?limit=100"),
        format!("/api/webhooks/{id}/logs?limit=100&status=failed"),
        format!("/api/webhooks/{id}/statistics"),
    ];
    let small = read_latencies(&hookd, &paths, 200).await?;
    let others = log_rows_over(logs.rows.saturating_sub(OWN_ROWS), logs.days);
    let store = hookd::store::Store::connect(&hookd.database_url).await?;
    let now = chrono::Utc::now().timestamp_millis();
    for day in 0..=i64::from(logs.days) {
        store.keep_log_partitions(now - day * DAY_MS).await?;
    }
    let started = Instant::now();
    hookd
        .insert_log_rows(others.rows, "'other-' || (i % 99)", "other", others.span_ms)
        .await?;
    let loaded_s = round2(started.elapsed().as_secs_f64());
    let large = read_latencies(&hookd, &paths, 200).await?;
    let retention = if logs.days >= 3 {
        retention_of_a_day(&store, &hookd.database_url, now - others.span_ms).await?
    } else {
        Value::Null
    };
    store.close().await;

    Ok(json!({
        "scenario": "growth", "store": store_name(&cli.store), "events": events, "subscribed": SUBSCRIBED,
        "fanout": fanout,
        "log_rows": {"rows": logs.rows, "days": logs.days, "load_s": loaded_s},
        "reads_ms": {format!("rows_{OWN_ROWS}"): small, format!("rows_{}", logs.rows): large},
        "retention": retention,
    }))
}

const DAY_MS: i64 = 24 * 60 * 60 * 1_000;

/// The log rows `growth` writes: how many, over how many days, and whether it skips fan-out.
#[derive(Clone, Copy)]
struct LogVolume {
    rows: usize,
    days: u32,
    only: bool,
}

/// `rows` log rows spread over `days` days (0: one row per ms up to now, as before days were
/// a choice).
struct Spread {
    rows: usize,
    span_ms: i64,
}

fn log_rows_over(rows: usize, days: u32) -> Spread {
    let span_ms = match days {
        0 => rows as i64,
        days => i64::from(days) * DAY_MS,
    };
    Spread { rows, span_ms }
}

/// The number `sql` answers, read on a connection of the bench's own to the store.
async fn scalar(database_url: &str, sql: String) -> anyhow::Result<i64> {
    macro_rules! on {
        ($pool:ty) => {{
            let pool = <$pool>::connect(database_url).await?;
            let value = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&pool)
                .await?;
            pool.close().await;
            value
        }};
    }
    Ok(if database_url.starts_with("sqlite:") {
        on!(sqlx::SqlitePool)
    } else {
        on!(sqlx::PgPool)
    })
}

/// Times retention of the second-oldest day of rows (the oldest is only partly filled: the
/// rows begin at `oldest`), a whole UTC day: first as hookd does it
/// (`Store::prune_logs_older_than`: a partition dropped on PostgreSQL, a batched `DELETE` on
/// SQLite); then, on PostgreSQL, the day after it as retention did before partitions, a batched
/// `DELETE` (on that day's partition: a lower bound of its cost on one big table, whose indexes
/// are larger) and the `VACUUM` that must follow it to make the space reusable.
async fn retention_of_a_day(
    store: &hookd::store::Store,
    database_url: &str,
    oldest: i64,
) -> anyhow::Result<Value> {
    let first = oldest.div_euclid(DAY_MS) + 1;
    store.prune_logs_older_than(first * DAY_MS).await?;
    let count_sql = format!(
        "SELECT COUNT(*) FROM webhook_logs WHERE created_at >= {} AND created_at < {}",
        first * DAY_MS,
        (first + 1) * DAY_MS
    );
    let rows = scalar(database_url, count_sql).await?;
    let started = Instant::now();
    store.prune_logs_older_than((first + 1) * DAY_MS).await?;
    let hookd_ms = started.elapsed();
    let mut figures = json!({
        "day_rows": rows,
        "hookd_retention_ms": round2(hookd_ms.as_secs_f64() * 1_000.0),
    });
    if !database_url.starts_with("sqlite:") {
        let pool = sqlx::PgPool::connect(database_url).await?;
        let day = first + 1;
        let partition = format!(
            "webhook_logs_p{}",
            chrono::DateTime::from_timestamp_millis(day * DAY_MS)
                .context("day out of range")?
                .format("%Y%m%d")
        );
        let delete = format!(
            "DELETE FROM {partition} WHERE id IN
                (SELECT id FROM {partition} WHERE created_at < $1 LIMIT 5000)"
        );
        let started = Instant::now();
        let mut deleted = 0;
        loop {
            let done = sqlx::query(sqlx::AssertSqlSafe(delete.clone()))
                .bind((day + 1) * DAY_MS)
                .execute(&pool)
                .await?
                .rows_affected();
            deleted += done;
            if done < 5_000 {
                break;
            }
        }
        let delete_ms = started.elapsed();
        let started = Instant::now();
        sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM {partition}")))
            .execute(&pool)
            .await?;
        let vacuum_ms = started.elapsed();
        pool.close().await;
        figures["delete_rows"] = json!(deleted);
        figures["delete_ms"] = json!(round2(delete_ms.as_secs_f64() * 1_000.0));
        figures["vacuum_after_delete_ms"] = json!(round2(vacuum_ms.as_secs_f64() * 1_000.0));
    }
    Ok(figures)
}

/// A 1 KiB JSON body like a CRM would send.
fn ingest_body() -> Vec<u8> {
    let filler = "x".repeat(820);
    serde_json::to_vec(&json!({"lead_name": "Ada Lovelace", "company": "Analytical Engines", "email": "ada@example.com",
        "phone": "+44 20 0000 0000", "priority": "high", "notes": filler}))
    .unwrap_or_default()
}

/// Sends `requests` POSTs of `body` at `concurrency`, the i-th to `urls[i % urls.len()]`; returns
/// (elapsed, sorted latencies ms).
async fn hammer(
    urls: Vec<String>,
    body: Vec<u8>,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<(Duration, Vec<i64>)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(requests)));
    let recorded = Arc::clone(&latencies);
    let elapsed = drive(requests, concurrency, move |i| {
        let (client, url, body, recorded) = (
            client.clone(),
            urls[i % urls.len()].clone(),
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
    let baseline_cpu = procfs::own_seconds();
    let (baseline, baseline_latencies) =
        hammer(vec![bare], ingest_body(), requests, cli.concurrency).await?;
    let baseline_cpu = procfs::own_seconds() - baseline_cpu;
    server.abort();

    let hookd = Hookd::start(cli).await?;
    let created = hookd
        .post(
            "/api/webhooks/incoming",
            &json!({"name": "bench", "agent_id": "bench_agent", "rate_limit": 1_000_000,
                    "transform_template": "{\"message\": \"New lead: {{ lead_name }} from {{ company }}\", \"priority\": \"{{ priority | default('medium') }}\"}"}),
        )
        .await?;
    // The receiving URL names the node that answered; every node takes the same path.
    let url = created["url"].as_str().context("no receiving url")?;
    let path = reqwest::Url::parse(url)?.path().to_string();
    let urls = hookd
        .bases
        .iter()
        .map(|base| format!("{base}{path}"))
        .collect();
    let meter = hookd.meter().await?;
    let bench_cpu = procfs::own_seconds();
    let (elapsed, latencies) = hammer(urls, ingest_body(), requests, cli.concurrency).await?;
    let bench_cpu = cpu_us_per(procfs::own_seconds() - bench_cpu, requests as u64);
    let baseline_cpu = cpu_us_per(baseline_cpu, requests as u64);
    let costs = hookd.finish(meter, requests as u64, "request").await?;
    let rate = requests as f64 / elapsed.as_secs_f64();
    let baseline_rate = requests as f64 / baseline.as_secs_f64();
    let ms = |us: i64| round2(us as f64 / 1_000.0);
    let result = json!({
        "scenario": "ingest", "store": store_name(&cli.store), "nodes": cli.nodes, "requests": requests, "concurrency": cli.concurrency,
        "body_bytes": ingest_body().len(),
        "accepted_per_s": round(rate),
        "baseline_per_s": round(baseline_rate),
        "ratio_to_baseline": round2(rate / baseline_rate),
        "hookd_cpu_us_per_request": costs.cpu_us_per_unit,
        "baseline_cpu_us_per_request": baseline_cpu,
        "bench_cpu_us_per_request": bench_cpu,
        "cpu_bound_ratio": cpu_bound_ratio(baseline_cpu, &costs, bench_cpu),
        "latency_ms": {"p50": ms(percentile(&latencies, 0.5)), "p99": ms(percentile(&latencies, 0.99))},
        "baseline_latency_ms": {"p50": ms(percentile(&baseline_latencies, 0.5)), "p99": ms(percentile(&baseline_latencies, 0.99))},
        "peak_rss_mib": costs.peak_rss_mib,
    });
    Ok(with_figures(result, costs.figures))
}

/// `events` published to `webhooks` subscribed webhooks, by `POST /api/events` at the
/// benchmark's concurrency and then through a NATS source with as many messages in flight per
/// node: how fast each way takes them in (answered 202, or acknowledged), and what each event
/// costs over the whole run, from the first publish until the last delivery arrived.
async fn nats(cli: &Cli, events: usize, webhooks: usize, url: &str) -> anyhow::Result<Value> {
    let jetstream = async_nats::jetstream::new(
        async_nats::connect(url)
            .await
            .with_context(|| format!("connecting to NATS at {url}"))?,
    );
    let api = ingress_run(cli, events, webhooks, None).await?;
    let stream = format!("HOOKD_BENCH_{}", uuid::Uuid::now_v7().simple());
    jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{stream}.>")],
            ..Default::default()
        })
        .await?;
    let bus = ingress_run(cli, events, webhooks, Some((&jetstream, url, &stream))).await;
    jetstream.delete_stream(&stream).await?;
    let bus = bus?;
    let rate = |run: &Value| run["accepted_per_s"].as_f64().unwrap_or(0.0);
    let cpu = |run: &Value| run["hookd_cpu_us_per_event"].as_f64().unwrap_or(0.0);
    Ok(json!({
        "scenario": "nats", "store": store_name(&cli.store), "nodes": cli.nodes, "events": events,
        "webhooks": webhooks, "concurrency": cli.concurrency,
        "api": api,
        "nats": bus,
        "nats_to_api_rate": round2(rate(&bus) / rate(&api).max(1.0)),
        "nats_to_api_cpu": round2(cpu(&bus) / cpu(&api).max(0.01)),
    }))
}

/// One run of [`nats`]: by the API when `bus` is `None`, else through a source on the stream
/// (`bus` = the client, the server's URL and the stream's name).
async fn ingress_run(
    cli: &Cli,
    events: usize,
    webhooks: usize,
    bus: Option<(&async_nats::jetstream::Context, &str, &str)>,
) -> anyhow::Result<Value> {
    let total = (events * webhooks) as u64;
    let (addr, counter) = start_receiver().await?;
    let config = tempfile::NamedTempFile::new()?;
    let config_path = config.path().display().to_string();
    if let Some((_, url, stream)) = bus {
        std::fs::write(
            config.path(),
            format!(
                "[[sources.nats]]\nurl = {url:?}\nstream = {stream:?}\nconsumer = \"hookd\"\n\
                 subject = \"{stream}.>\"\ncompany_id = \"bench\"\nuser_id = \"bench\"\n\
                 concurrency = {}\n",
                cli.concurrency
            ),
        )?;
    }
    let env: &[(&str, &str)] = match bus {
        Some(_) => &[("HOOKD_CONFIG", config_path.as_str())],
        None => &[],
    };
    let hookd = Arc::new(Hookd::start_with(cli, env).await?);
    for i in 0..webhooks {
        hookd
            .post("/api/webhooks/outgoing", &json!({"url": format!("http://{addr}/hook/{i}"), "event_types": ["chat.*"], "secret": "bench-secret"}))
            .await?;
    }
    let meter = hookd.meter().await?;
    let nats_server_before = nats_server_seconds();
    let started = Instant::now();
    let accepted = match bus {
        None => publish_events(&hookd, events, cli.concurrency).await?,
        Some((jetstream, _, stream)) => {
            publish_to_stream(jetstream, stream, events).await?;
            let stream = jetstream.get_stream(stream).await?;
            loop {
                let info = stream.consumer_info("hookd").await?;
                if info.num_pending == 0 && info.num_ack_pending == 0 {
                    break started.elapsed();
                }
                if started.elapsed() > Duration::from_secs(600) {
                    bail!("the source did not drain the stream within 600 s: {info:?}");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(&counter, total, Duration::from_secs(600)).await?;
    let all_in = started.elapsed();
    let nats_server = nats_server_seconds() - nats_server_before;
    let costs = hookd.finish(meter, events as u64, "event").await?;
    let (p50, p99, max) = latencies(&counter);
    let result = json!({
        "accepted_per_s": round(events as f64 / accepted.as_secs_f64()),
        "deliveries_per_s": round(total as f64 / all_in.as_secs_f64()),
        "hookd_cpu_us_per_event": costs.cpu_us_per_unit,
        "nats_server_cpu_us_per_event": cpu_us_per(nats_server, events as u64),
        "latency_ms": {"p50": p50, "p99": p99, "max": max},
        "peak_rss_mib": costs.peak_rss_mib,
    });
    Ok(with_figures(result, costs.figures))
}

/// CPU seconds of the `nats-server` processes on this machine (storing the bench's messages
/// and serving hookd's pulls and acknowledgements, in the source's run).
fn nats_server_seconds() -> f64 {
    procfs::seconds_by_title(|title| title.contains("nats-server").then_some(()))
        .iter()
        .map(|(_, (), seconds)| seconds)
        .sum()
}

/// Publishes `events` event bodies on `stream`, each with its number as `Nats-Msg-Id`, up to
/// 1,000 awaiting JetStream's answer at once; returns once all are stored.
async fn publish_to_stream(
    jetstream: &async_nats::jetstream::Context,
    stream: &str,
    events: usize,
) -> anyhow::Result<()> {
    let subject = format!("{stream}.events");
    let mut stored = Vec::new();
    for i in 0..events {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("bench-{i}").as_str());
        let body = serde_json::to_vec(&event_body(i))?;
        stored.push(
            jetstream
                .publish_with_headers(subject.clone(), headers, body.into())
                .await?,
        );
        if stored.len() == 1_000 {
            for ack in stored.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in stored {
        ack.await?;
    }
    Ok(())
}

async fn steady(cli: &Cli, rate: u64, seconds: u64) -> anyhow::Result<Value> {
    let (addr, counter) = start_receiver().await?;
    let hookd = Arc::new(Hookd::start(cli).await?);
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
    let meter = hookd.meter().await?;
    for i in 0..total {
        tick.tick().await;
        let Ok(permit) = Arc::clone(&gate).try_acquire_owned() else {
            late += 1;
            continue;
        };
        let hookd = Arc::clone(&hookd);
        tokio::spawn(async move {
            let i = i as usize;
            let _ = hookd.post_via(i, "/api/events", &event_body(i)).await;
            drop(permit);
        });
    }
    let sent = total - late;
    wait_for(&counter, sent, Duration::from_secs(120)).await?;
    let costs = hookd.finish(meter, sent, "delivery").await?;
    let (p50, p99, max) = latencies(&counter);
    let result = json!({
        "scenario": "steady", "store": store_name(&cli.store), "nodes": cli.nodes, "target_rate": rate, "seconds": seconds,
        "published": sent, "skipped_because_publishers_were_busy": late,
        "achieved_rate": round(sent as f64 / started.elapsed().as_secs_f64()),
        "latency_ms": {"p50": p50, "p99": p99, "max": max},
        "hookd_cpu_us_per_delivery": costs.cpu_us_per_unit,
        "peak_rss_mib": costs.peak_rss_mib,
    });
    Ok(with_figures(result, costs.figures))
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

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `result` with `figures` added to its fields.
fn with_figures(mut result: Value, figures: serde_json::Map<String, Value>) -> Value {
    if let Value::Object(fields) = &mut result {
        fields.extend(figures);
    }
    result
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
    let result = match cli.scenario.clone() {
        Scenario::Fanout { events, webhooks } => fanout(&cli, events, webhooks).await?,
        Scenario::Steady { rate, seconds } => steady(&cli, rate, seconds).await?,
        Scenario::Growth {
            events,
            webhooks,
            log_rows,
            log_days,
            logs_only,
        } => {
            let logs = LogVolume {
                rows: log_rows,
                days: log_days,
                only: logs_only,
            };
            growth(&cli, events, webhooks, logs).await?
        }
        Scenario::Ingest { requests } => ingest(&cli, requests).await?,
        Scenario::Nats {
            events,
            webhooks,
            nats,
        } => self::nats(&cli, events, webhooks, &nats).await?,
    };
    print_table(&result, "");
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_vec_pretty(&result)?)?;
    }
    Ok(())
}
