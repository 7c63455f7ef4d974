use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    hookd::telemetry::init();
    hookd::cli::run(hookd::cli::Cli::parse()).await
}
