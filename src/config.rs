//! Settings, layered: built-in defaults < `hookd.toml` (or `--config FILE`) < `HOOKD_*` environment
//! < command-line flags. `docs/configuration.md` lists every setting; the doc comments below are
//! what `hookd serve --help` prints.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use ipnet::IpNet;
use serde::Deserialize;

use crate::{
    domain::{delivery::DeliveryPolicy, net::TargetPolicy, quota::Quotas},
    sandbox::SandboxSettings,
};

/// Every setting as it may be given: each is optional at each layer.
#[derive(clap::Args, Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address the HTTP server listens on [default: 0.0.0.0:7437]
    #[arg(long, global = true, env = "HOOKD_BIND")]
    pub bind: Option<SocketAddr>,
    /// Store: `sqlite://PATH` (embedded, the default: sqlite://hookd.db) or `postgres://…`
    #[arg(long, global = true, env = "HOOKD_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The operator's key: manages API keys under /api/admin. Unset: the admin API is closed
    #[arg(long, global = true, env = "HOOKD_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Redis for rate-limit state shared by several nodes; unset: limits hold per node
    #[arg(long, global = true, env = "HOOKD_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Comma-separated ranges that outgoing targets may use although private (e.g. 127.0.0.0/8)
    #[arg(long, global = true, env = "HOOKD_ALLOWED_TARGET_CIDRS")]
    pub allowed_target_cidrs: Option<String>,
    /// Comma-separated proxy ranges whose X-Forwarded-For is believed for incoming requests
    #[arg(long, global = true, env = "HOOKD_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// Base URL that receiving URLs are built from (e.g. https://hooks.example.com); unset: from
    /// the request's Host header
    #[arg(long, global = true, env = "HOOKD_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Largest request body accepted, in bytes [default: 1048576]
    #[arg(long, global = true, env = "HOOKD_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Milliseconds per unit of a webhook's `retry_delay` [default: 1000, i.e. seconds]; lower
    /// it only to watch retry schedules run fast in tests and demos
    #[arg(long, global = true, env = "HOOKD_RETRY_UNIT_MS")]
    pub retry_unit_ms: Option<i64>,
    /// Consecutive failures that open a webhook's circuit [default: 5]
    #[arg(long, global = true, env = "HOOKD_CIRCUIT_THRESHOLD")]
    pub circuit_threshold: Option<i64>,
    /// How long an open circuit waits before a trial attempt, in ms [default: 300000]
    #[arg(long, global = true, env = "HOOKD_CIRCUIT_COOLDOWN_MS")]
    pub circuit_cooldown_ms: Option<i64>,
    /// Days log entries (and finished deliveries) are kept [default: 30]
    #[arg(long, global = true, env = "HOOKD_LOG_RETENTION_DAYS")]
    pub log_retention_days: Option<i64>,
    /// Log entries kept per webhook at most [default: 10000]
    #[arg(long, global = true, env = "HOOKD_MAX_LOGS_PER_WEBHOOK")]
    pub max_logs_per_webhook: Option<i64>,
    /// Outgoing webhooks one company may have, and incoming webhooks (each counted on its own)
    /// [default: 1000]
    #[arg(long, global = true, env = "HOOKD_MAX_WEBHOOKS_PER_COMPANY")]
    pub max_webhooks_per_company: Option<i64>,
    /// Event types one company may define, archived ones included [default: 1000]
    #[arg(long, global = true, env = "HOOKD_MAX_EVENT_TYPES_PER_COMPANY")]
    pub max_event_types_per_company: Option<i64>,
    /// Agents one company may have [default: 1000]
    #[arg(long, global = true, env = "HOOKD_MAX_AGENTS_PER_COMPANY")]
    pub max_agents_per_company: Option<i64>,
    /// Deliveries one publish request may make (its events times the webhooks subscribed to
    /// each); at least max_webhooks_per_company [default: 10000]
    #[arg(long, global = true, env = "HOOKD_MAX_DELIVERIES_PER_REQUEST")]
    pub max_deliveries_per_request: Option<i64>,
    /// Deliveries in flight per node at most [default: 256]
    #[arg(long, global = true, env = "HOOKD_DELIVERY_CONCURRENCY")]
    pub delivery_concurrency: Option<usize>,
    /// Deliveries in flight to one webhook at most, so a slow target holds up only itself
    /// [default: 16]
    #[arg(long, global = true, env = "HOOKD_PER_TARGET_CONCURRENCY")]
    pub per_target_concurrency: Option<usize>,
    /// How long a node holds a claimed delivery before other nodes may take it over, in ms: a
    /// crashed node's deliveries are retried this long after it died [default: 60000]
    #[arg(long, global = true, env = "HOOKD_LEASE_MS")]
    pub lease_ms: Option<i64>,
    /// How long a client may take to send a request's headers, in ms, counted from when its
    /// connection opened or its previous answer was sent: so also how long an idle keep-alive
    /// connection is kept [default: 30000]
    #[arg(long, global = true, env = "HOOKD_HEADER_TIMEOUT_MS")]
    pub header_timeout_ms: Option<i64>,
    /// How long a client may take to send a request's whole body, in ms; slower is a 408
    /// [default: 30000]
    #[arg(long, global = true, env = "HOOKD_BODY_TIMEOUT_MS")]
    pub body_timeout_ms: Option<i64>,
    /// How long a stopping node waits for requests and deliveries in flight before it exits
    /// anyway, in ms [default: 10000]
    #[arg(long, global = true, env = "HOOKD_SHUTDOWN_GRACE_MS")]
    pub shutdown_grace_ms: Option<i64>,
    /// Failed authentications (wrong API, admin or dashboard key) one client address may make
    /// within the window; then it gets 429 until the window ends, whatever key it sends
    /// [default: 10]
    #[arg(long, global = true, env = "HOOKD_AUTH_FAILURE_LIMIT")]
    pub auth_failure_limit: Option<i64>,
    /// The window of `auth_failure_limit`, in seconds, counted from an address's first failure
    /// [default: 300]
    #[arg(long, global = true, env = "HOOKD_AUTH_FAILURE_WINDOW_SECS")]
    pub auth_failure_window_secs: Option<i64>,
    /// Run no delivery workers on this node (API and incoming only)
    #[arg(long, global = true, env = "HOOKD_NO_WORKERS")]
    #[serde(default)]
    pub no_workers: bool,
    /// Wall-clock time one template render may take before its worker is killed, in ms
    /// [default: 250]
    #[arg(long, global = true, env = "HOOKD_TEMPLATE_TIMEOUT_MS")]
    pub template_timeout_ms: Option<i64>,
    /// Memory one template worker may allocate, in MiB [default: 256]
    #[arg(long, global = true, env = "HOOKD_TEMPLATE_MEMORY_MIB")]
    pub template_memory_mib: Option<u64>,
    /// Template worker processes per node, i.e. renders in parallel [default: 2]
    #[arg(long, global = true, env = "HOOKD_TEMPLATE_WORKERS")]
    pub template_workers: Option<usize>,
    /// Executable run as `… render-worker` for templates [default: this executable]; for
    /// embedding hookd as a library
    #[arg(long, global = true, env = "HOOKD_TEMPLATE_WORKER_PROGRAM")]
    pub template_worker_program: Option<PathBuf>,
    /// Where events come in from besides the API: `[[sources.nats]]` tables, in the config file
    /// only (a list of tables has no flag or variable form)
    #[arg(skip)]
    pub sources: Option<Sources>,
}

/// The `[sources]` table of `hookd.toml`.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct Sources {
    #[serde(default)]
    pub nats: Vec<NatsSource>,
}

/// One `[[sources.nats]]` table: a JetStream stream whose messages are published as events, as
/// `POST /api/events` bodies of one tenant (see `src/sources/nats.rs`).
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NatsSource {
    /// The NATS server, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// The stream to read; it must exist (hookd does not choose a stream's retention).
    pub stream: String,
    /// The durable pull consumer's name, created if missing. Nodes that name the same consumer
    /// share its messages (a work queue).
    pub consumer: String,
    /// The consumer's filter subject, e.g. `events.>`.
    pub subject: String,
    /// The tenant the messages are published as.
    pub company_id: String,
    pub user_id: String,
    /// Messages in flight (being published) at once on this node [default: 64].
    #[serde(default = "NatsSource::default_concurrency")]
    pub concurrency: usize,
}

impl NatsSource {
    fn default_concurrency() -> usize {
        64
    }

    fn check(&self, n: usize) -> anyhow::Result<()> {
        for (name, value) in [
            ("url", &self.url),
            ("stream", &self.stream),
            ("consumer", &self.consumer),
            ("subject", &self.subject),
            ("company_id", &self.company_id),
            ("user_id", &self.user_id),
        ] {
            if value.trim().is_empty() {
                anyhow::bail!("sources.nats[{n}].{name} must not be empty");
            }
        }
        if self.concurrency == 0 {
            anyhow::bail!("sources.nats[{n}].concurrency must be at least 1");
        }
        Ok(())
    }
}

impl Settings {
    /// `self` where set, else `fallback`.
    fn or(self, fallback: Settings) -> Settings {
        Settings {
            bind: self.bind.or(fallback.bind),
            database_url: self.database_url.or(fallback.database_url),
            admin_key: self.admin_key.or(fallback.admin_key),
            redis_url: self.redis_url.or(fallback.redis_url),
            allowed_target_cidrs: self.allowed_target_cidrs.or(fallback.allowed_target_cidrs),
            trusted_proxies: self.trusted_proxies.or(fallback.trusted_proxies),
            public_url: self.public_url.or(fallback.public_url),
            max_body_bytes: self.max_body_bytes.or(fallback.max_body_bytes),
            retry_unit_ms: self.retry_unit_ms.or(fallback.retry_unit_ms),
            circuit_threshold: self.circuit_threshold.or(fallback.circuit_threshold),
            circuit_cooldown_ms: self.circuit_cooldown_ms.or(fallback.circuit_cooldown_ms),
            log_retention_days: self.log_retention_days.or(fallback.log_retention_days),
            max_logs_per_webhook: self.max_logs_per_webhook.or(fallback.max_logs_per_webhook),
            max_webhooks_per_company: self
                .max_webhooks_per_company
                .or(fallback.max_webhooks_per_company),
            max_event_types_per_company: self
                .max_event_types_per_company
                .or(fallback.max_event_types_per_company),
            max_agents_per_company: self
                .max_agents_per_company
                .or(fallback.max_agents_per_company),
            max_deliveries_per_request: self
                .max_deliveries_per_request
                .or(fallback.max_deliveries_per_request),
            delivery_concurrency: self.delivery_concurrency.or(fallback.delivery_concurrency),
            per_target_concurrency: self
                .per_target_concurrency
                .or(fallback.per_target_concurrency),
            lease_ms: self.lease_ms.or(fallback.lease_ms),
            header_timeout_ms: self.header_timeout_ms.or(fallback.header_timeout_ms),
            body_timeout_ms: self.body_timeout_ms.or(fallback.body_timeout_ms),
            shutdown_grace_ms: self.shutdown_grace_ms.or(fallback.shutdown_grace_ms),
            auth_failure_limit: self.auth_failure_limit.or(fallback.auth_failure_limit),
            auth_failure_window_secs: self
                .auth_failure_window_secs
                .or(fallback.auth_failure_window_secs),
            no_workers: self.no_workers || fallback.no_workers,
            template_timeout_ms: self.template_timeout_ms.or(fallback.template_timeout_ms),
            template_memory_mib: self.template_memory_mib.or(fallback.template_memory_mib),
            template_workers: self.template_workers.or(fallback.template_workers),
            template_worker_program: self
                .template_worker_program
                .or(fallback.template_worker_program),
            sources: self.sources.or(fallback.sources),
        }
    }
}

/// The resolved configuration a node runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub database_url: String,
    pub admin_key: Option<String>,
    pub redis_url: Option<String>,
    pub target_policy: TargetPolicy,
    pub trusted_proxies: Vec<IpNet>,
    pub public_url: Option<String>,
    pub max_body_bytes: usize,
    pub delivery: DeliveryPolicy,
    pub log_retention_days: i64,
    pub max_logs_per_webhook: i64,
    pub quotas: Quotas,
    pub delivery_concurrency: usize,
    pub per_target_concurrency: usize,
    /// How long a claimed delivery is held, in ms (see [`Settings::lease_ms`]).
    pub lease_ms: i64,
    /// See [`Settings::header_timeout_ms`].
    pub header_timeout: Duration,
    /// See [`Settings::body_timeout_ms`].
    pub body_timeout: Duration,
    /// See [`Settings::shutdown_grace_ms`].
    pub shutdown_grace: Duration,
    /// Failed authentications per client address and window (see [`Settings::auth_failure_limit`]).
    pub auth_failure_limit: u32,
    pub auth_failure_window: Duration,
    pub workers: bool,
    pub templates: SandboxSettings,
    /// See [`Settings::sources`].
    pub nats_sources: Vec<NatsSource>,
}

pub const DEFAULT_BIND: &str = "0.0.0.0:7437";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://hookd.db";
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
pub const DEFAULT_CONFIG_FILE: &str = "hookd.toml";

impl Config {
    /// Resolves `given` (flags and environment, as clap read them) over the config file: the
    /// file named, or `hookd.toml` when it exists.
    pub fn load(given: Settings, file: Option<&Path>) -> anyhow::Result<Config> {
        let from_file = match file {
            Some(path) => read_file(path)?,
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                read_file(Path::new(DEFAULT_CONFIG_FILE))?
            }
            None => Settings::default(),
        };
        Config::resolve(given.or(from_file))
    }

    /// Fills in the built-in defaults and checks the values.
    pub fn resolve(settings: Settings) -> anyhow::Result<Config> {
        let cidrs = |name: &str, value: Option<String>| {
            TargetPolicy::parse_allowed(value.as_deref().unwrap_or(""))
                .with_context(|| format!("{name} must be comma-separated CIDR ranges"))
        };
        let defaults = DeliveryPolicy::default();
        let quotas = quotas(&settings)?;
        let nats_sources = settings.sources.unwrap_or_default().nats;
        for (n, source) in nats_sources.iter().enumerate() {
            source.check(n)?;
        }
        let public_url = settings
            .public_url
            .map(|url| url.trim_end_matches('/').to_string())
            .filter(|url| !url.is_empty());
        Ok(Config {
            bind: settings
                .bind
                .unwrap_or_else(|| DEFAULT_BIND.parse().expect("valid default")),
            database_url: settings
                .database_url
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string()),
            admin_key: settings.admin_key.filter(|key| !key.is_empty()),
            redis_url: settings.redis_url.filter(|url| !url.is_empty()),
            target_policy: TargetPolicy::new(cidrs(
                "HOOKD_ALLOWED_TARGET_CIDRS",
                settings.allowed_target_cidrs,
            )?),
            trusted_proxies: cidrs("HOOKD_TRUSTED_PROXIES", settings.trusted_proxies)?,
            public_url,
            max_body_bytes: settings.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
            delivery: DeliveryPolicy {
                retry_unit_ms: positive(
                    "retry_unit_ms",
                    settings.retry_unit_ms,
                    defaults.retry_unit_ms,
                )?,
                circuit_threshold: positive(
                    "circuit_threshold",
                    settings.circuit_threshold,
                    defaults.circuit_threshold,
                )?,
                circuit_cooldown_ms: positive(
                    "circuit_cooldown_ms",
                    settings.circuit_cooldown_ms,
                    defaults.circuit_cooldown_ms,
                )?,
                ..defaults
            },
            log_retention_days: positive("log_retention_days", settings.log_retention_days, 30)?,
            max_logs_per_webhook: positive(
                "max_logs_per_webhook",
                settings.max_logs_per_webhook,
                10_000,
            )?,
            quotas,
            delivery_concurrency: settings.delivery_concurrency.unwrap_or(256).max(1),
            per_target_concurrency: settings.per_target_concurrency.unwrap_or(16).max(1),
            lease_ms: positive("lease_ms", settings.lease_ms, 60_000)?,
            header_timeout: millis("header_timeout_ms", settings.header_timeout_ms, 30_000)?,
            body_timeout: millis("body_timeout_ms", settings.body_timeout_ms, 30_000)?,
            shutdown_grace: millis("shutdown_grace_ms", settings.shutdown_grace_ms, 10_000)?,
            auth_failure_limit: u32::try_from(positive(
                "auth_failure_limit",
                settings.auth_failure_limit,
                10,
            )?)
            .unwrap_or(u32::MAX),
            auth_failure_window: Duration::from_secs(
                positive(
                    "auth_failure_window_secs",
                    settings.auth_failure_window_secs,
                    300,
                )?
                .unsigned_abs(),
            ),
            workers: !settings.no_workers,
            templates: SandboxSettings {
                timeout: millis("template_timeout_ms", settings.template_timeout_ms, 250)?,
                memory_mib: settings.template_memory_mib.unwrap_or(256).max(16),
                workers: settings.template_workers.unwrap_or(2).max(1),
                program: settings.template_worker_program,
            },
            nats_sources,
        })
    }
}

fn quotas(settings: &Settings) -> anyhow::Result<Quotas> {
    let defaults = Quotas::default();
    let webhooks = positive(
        "max_webhooks_per_company",
        settings.max_webhooks_per_company,
        defaults.webhooks,
    )?;
    let deliveries = positive(
        "max_deliveries_per_request",
        settings.max_deliveries_per_request,
        i64::try_from(defaults.deliveries_per_request).unwrap_or(i64::MAX),
    )?;
    // One event always goes to every webhook that wants it (an incoming request, an agent's
    // announcement): a request could not be refused for what a single event makes.
    if deliveries < webhooks {
        anyhow::bail!(
            "max_deliveries_per_request ({deliveries}) must be at least \
             max_webhooks_per_company ({webhooks}): one event reaches every webhook that wants it"
        );
    }
    Ok(Quotas {
        webhooks,
        event_types: positive(
            "max_event_types_per_company",
            settings.max_event_types_per_company,
            defaults.event_types,
        )?,
        agents: positive(
            "max_agents_per_company",
            settings.max_agents_per_company,
            defaults.agents,
        )?,
        deliveries_per_request: usize::try_from(deliveries).unwrap_or(usize::MAX),
    })
}

fn positive(name: &str, value: Option<i64>, default: i64) -> anyhow::Result<i64> {
    match value {
        Some(v) if v < 1 => anyhow::bail!("{name} must be at least 1, got {v}"),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

fn millis(name: &str, value: Option<i64>, default: i64) -> anyhow::Result<Duration> {
    let ms = positive(name, value, default)?;
    Ok(Duration::from_millis(ms.unsigned_abs()))
}

fn read_file(path: &Path) -> anyhow::Result<Settings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_and_defaults_fill_the_rest() {
        let given = Settings {
            bind: Some("127.0.0.1:9000".parse().unwrap()),
            ..Default::default()
        };
        let file: Settings =
            toml::from_str("bind = \"127.0.0.1:1\"\ndatabase_url = \"sqlite://x.db\"").unwrap();
        let config = Config::resolve(given.or(file)).unwrap();
        assert_eq!(config.bind.port(), 9000);
        assert_eq!(config.database_url, "sqlite://x.db");
        assert_eq!(config.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    }

    #[test]
    fn a_request_may_always_make_the_deliveries_of_one_event() {
        let settings = |webhooks, deliveries| Settings {
            max_webhooks_per_company: Some(webhooks),
            max_deliveries_per_request: Some(deliveries),
            ..Default::default()
        };
        let config = Config::resolve(settings(50, 50)).unwrap();
        assert_eq!(config.quotas.webhooks, 50);
        assert_eq!(config.quotas.deliveries_per_request, 50);
        let error = Config::resolve(settings(50, 49)).unwrap_err().to_string();
        assert!(error.contains("max_deliveries_per_request (49)"), "{error}");
        assert_eq!(
            Config::resolve(Settings::default()).unwrap().quotas,
            Quotas::default()
        );
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        assert!(toml::from_str::<Settings>("bnd = \"x\"").is_err());
        assert!(toml::from_str::<Settings>("[[sources.nats]]\nulr = \"x\"").is_err());
    }

    #[test]
    fn nats_sources_are_read_from_the_file_and_checked() {
        let file = |extra: &str| {
            format!(
                "[[sources.nats]]\nurl = \"nats://127.0.0.1:4222\"\nstream = \"EVENTS\"\n\
                 consumer = \"hookd\"\nsubject = \"events.>\"\ncompany_id = \"c\"\n{extra}"
            )
        };
        let settings: Settings = toml::from_str(&file("user_id = \"u\"")).unwrap();
        let config = Config::resolve(settings).unwrap();
        assert_eq!(config.nats_sources.len(), 1);
        assert_eq!(config.nats_sources[0].concurrency, 64);
        assert!(
            toml::from_str::<Settings>(&file("")).is_err(),
            "user_id is required"
        );
        let empty: Settings = toml::from_str(&file("user_id = \" \"")).unwrap();
        let error = Config::resolve(empty).unwrap_err().to_string();
        assert_eq!(error, "sources.nats[0].user_id must not be empty");
    }
}
