//! Periodic upkeep on every worker node: the log's partitions ahead of time (PostgreSQL),
//! retention of logs and finished work, and gauges. Running it on several nodes at once is
//! harmless (partitions are created and dropped by one node at a time, the deletes are
//! idempotent).

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

use crate::{config::Config, domain::time::now_ms, store::Store};

const EVERY: Duration = Duration::from_secs(60);
const DAY_MS: i64 = 24 * 60 * 60 * 1_000;

pub async fn run(store: Store, config: Arc<Config>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(error) = once(&store, &config).await {
            tracing::warn!(%error, "housekeeping failed; will try again");
        }
    }
}

async fn once(store: &Store, config: &Config) -> anyhow::Result<()> {
    let now = now_ms();
    // Not a reason to skip retention: the days ahead leave many rounds to succeed in.
    match store.keep_log_partitions(now).await {
        Ok(0) => {}
        Ok(created) => tracing::info!(created, "log partitions created"),
        Err(error) => tracing::warn!(%error, "log partitions not created; will try again"),
    }
    let before = now - config.log_retention_days * DAY_MS;
    let logs = store.prune_logs_older_than(before).await?
        + store
            .cap_logs_per_webhook(config.max_logs_per_webhook)
            .await?;
    let work = store.prune_finished_work(before).await?;
    if logs + work > 0 {
        tracing::info!(logs, work, "retention removed old rows");
    }
    metrics::gauge!("hookd_delivery_queue_depth").set(store.queue_depth().await? as f64);
    metrics::gauge!("hookd_open_circuits").set(store.open_circuits(now_ms()).await? as f64);
    Ok(())
}
