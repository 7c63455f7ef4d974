//! The command line: `hookd serve` (the default), `hookd keys …`, `hookd migrate`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::{
    api::admin::{ApiKeyOut, parse_scopes},
    app::{Application, redact_url},
    config::{Config, Settings},
    domain::{
        api_key::{ApiKey, hash_secret},
        tenant::Tenant,
        time::now_ms,
    },
    store::Store,
};

#[derive(Parser, Debug)]
#[command(name = "hookd", version, about = "Webhook gateway for agent platforms")]
pub struct Cli {
    /// TOML config file [default: ./hookd.toml when it exists]
    #[arg(long, global = true, env = "HOOKD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the API, the incoming endpoint and the delivery workers (the default command)
    Serve,
    /// Manage API keys directly in the store, without the HTTP API
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Apply pending database migrations and exit
    Migrate,
    /// Render templates for a node (started by the node itself; see `hookd::sandbox`)
    #[command(hide = true)]
    RenderWorker {
        #[arg(long)]
        memory_mib: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Issue a key for a tenant and print it (shown only this once)
    Create {
        #[arg(long)]
        user_id: String,
        #[arg(long)]
        company_id: String,
        /// A scope the key holds (repeatable); none: all scopes
        #[arg(long = "scope")]
        scopes: Vec<String>,
        #[arg(long)]
        name: Option<String>,
    },
    /// List keys (never the keys themselves)
    List,
    /// Revoke a key by id
    Revoke { id: String },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.settings, cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            Store::connect(&config.database_url).await?;
            println!("migrations applied to {}", redact_url(&config.database_url));
            Ok(())
        }
        Command::Keys(command) => keys(config, command).await,
        Command::RenderWorker { memory_mib } => crate::sandbox::worker::run(memory_mib),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let admin = config.admin_key.is_some();
    let app = Application::build(config).await?;
    let addr = app.local_addr();
    tracing::info!(%addr, store = app.store().backend(), "hookd listening");
    println!(
        "hookd listening on http://{addr} (store: {})",
        app.store().backend()
    );
    println!("  API docs: http://{addr}/docs");
    if admin {
        println!(
            "  API keys: POST http://{addr}/api/admin/keys with Authorization: Bearer $HOOKD_ADMIN_KEY"
        );
    } else {
        println!("  API keys: hookd keys create --user-id USER --company-id COMPANY");
        println!("            (or set HOOKD_ADMIN_KEY to issue them over HTTP at /api/admin/keys)");
    }
    app.run(shutdown_signal()).await
}

async fn keys(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    let store = Store::connect(&config.database_url).await?;
    match command {
        KeysCommand::Create {
            user_id,
            company_id,
            scopes,
            name,
        } => {
            let scopes = parse_scopes(&scopes).map_err(|e| anyhow::anyhow!("--scope {e}"))?;
            let (key, secret) = ApiKey::generate(
                Tenant {
                    user_id,
                    company_id,
                },
                scopes,
                name,
                now_ms(),
            );
            store.insert_api_key(&key, &hash_secret(&secret)).await?;
            print_json(&ApiKeyOut::new(key, Some(secret)))
        }
        KeysCommand::List => {
            let keys: Vec<_> = store
                .list_api_keys()
                .await?
                .into_iter()
                .map(|key| ApiKeyOut::new(key, None))
                .collect();
            print_json(&keys)
        }
        KeysCommand::Revoke { id } => {
            store
                .revoke_api_key(&id, now_ms())
                .await
                .with_context(|| format!("revoking key {id}"))?;
            println!("revoked {id}");
            Ok(())
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
