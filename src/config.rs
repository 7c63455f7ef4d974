//! Settings, layered: built-in defaults < `hookd.toml` (or `--config FILE`) < `HOOKD_*` environment
//! < command-line flags. `docs/configuration.md` lists every setting; the doc comments below are
//! what `hookd serve --help` prints.

use std::{net::SocketAddr, path::Path};

use anyhow::Context;
use ipnet::IpNet;
use serde::Deserialize;

use crate::domain::net::TargetPolicy;

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
        })
    }
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
    fn unknown_file_keys_are_refused() {
        assert!(toml::from_str::<Settings>("bnd = \"x\"").is_err());
    }
}
