use clap::Parser;

use hookd::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // A template worker is a plain loop on its pipes: no runtime, no telemetry, no config.
    if let Some(Command::RenderWorker { memory_mib }) = cli.command {
        return hookd::sandbox::worker::run(memory_mib);
    }
    hookd::telemetry::init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(hookd::cli::run(cli))
}
