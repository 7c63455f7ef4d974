//! Builds a running node from a [`Config`]: store, HTTP server and background work. Tests build
//! the same [`Application`] on port 0.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, OnceLock},
};

use anyhow::Context;
use axum::{Router, response::IntoResponse};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::{
    net::TcpListener,
    sync::{Notify, Semaphore, mpsc, watch},
};
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};

use crate::{
    api::{self, error::ApiError},
    config::Config,
    delivery::{
        announce,
        catalogue::Catalogue,
        handoff::{Handed, Handoff},
        publish::Publisher,
        sender::Sender,
        worker::Worker,
    },
    domain::throttle::FailureThrottle,
    housekeeping,
    ingest::Ingest,
    sandbox::Sandbox,
    server,
    sources::nats,
    state::{AppState, LargeAnswers},
    store::Store,
    ui,
};

pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// Turned true when shutdown starts: workers, housekeeping and open event streams stop.
    stop: watch::Sender<bool>,
    wake: Arc<Notify>,
    /// The worker's attempt slots and the deliveries handed off to it (see
    /// [`handoff`](crate::delivery::handoff)); `None` on a node that does not deliver.
    worker_line: Option<(Arc<Semaphore>, mpsc::UnboundedReceiver<Handed>)>,
    /// The `[[sources.nats]]`, connected.
    nats_sources: Vec<nats::Source>,
}

/// The process-wide metrics recorder (one per process, shared by every app a test builds).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may be installed already (only in tests); ours still renders.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

impl Application {
    /// Opens (and migrates) the store and binds the listener; nothing is served until [`run`].
    ///
    /// [`run`]: Application::run
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let store = Store::connect(&config.database_url)
            .await
            .with_context(|| format!("opening store {}", redact_url(&config.database_url)))?;
        let listener = TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("binding {}", config.bind))?;
        let config = Arc::new(config);
        let wake = Arc::new(Notify::new());
        let (handoff, worker_line) = if config.workers {
            let slots = Arc::new(Semaphore::new(config.delivery_concurrency));
            let (handoff, handed) =
                Handoff::new(Arc::clone(&wake), Arc::clone(&slots), config.lease_ms);
            (handoff, Some((slots, handed)))
        } else {
            (Handoff::none(Arc::clone(&wake)), None)
        };
        let most = config.quotas.deliveries_per_request;
        let publisher = Publisher::new(store.clone(), Arc::clone(&wake), handoff, most);
        let sandbox = Sandbox::new(config.templates.clone());
        let ingest = Ingest::new(&config, publisher.clone(), sandbox.clone())
            .await
            .context("starting the incoming path (HOOKD_REDIS_URL?)")?;
        let catalogue = Arc::new(Catalogue::new(store.clone()));
        let mut nats_sources = Vec::new();
        for (n, source) in config.nats_sources.iter().enumerate() {
            nats_sources.push(
                nats::Source::connect(
                    source.clone(),
                    n,
                    publisher.clone(),
                    Arc::clone(&catalogue),
                    config.max_body_bytes,
                )
                .await?,
            );
        }
        let (stop, stopping) = watch::channel(false);
        let auth_failures = Arc::new(FailureThrottle::new(
            config.auth_failure_limit,
            config.auth_failure_window,
        ));
        Ok(Application {
            listener,
            stop,
            state: AppState {
                publisher,
                catalogue,
                sender: Arc::new(Sender::new(config.target_policy.clone(), sandbox)),
                metrics: metrics_handle(),
                store,
                config,
                ingest: Arc::new(ingest),
                stopping,
                auth_failures,
                large_answers: Arc::new(LargeAnswers::new(
                    std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
                    LargeAnswers::WAIT,
                )),
            },
            wake,
            worker_line,
            nats_sources,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// Serves (and, unless disabled, delivers) until `shutdown` completes; then stops taking
    /// requests and work, lets what is in flight finish (bounded), and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state;
        let stop = self.stop;
        let grace = state.config.shutdown_grace;
        let mut background = Vec::new();
        if let Some((slots, handed)) = self.worker_line {
            state.store.release_stale_leases().await?;
            let worker = Worker::new(
                state.store.clone(),
                Arc::clone(&state.sender),
                Arc::clone(&state.config),
                self.wake,
                state.publisher.clone(),
                state.ingest.inbox(),
                slots,
            );
            background.push(tokio::spawn(worker.run(handed, stop.subscribe(), grace)));
            background.push(tokio::spawn(housekeeping::run(
                state.store.clone(),
                Arc::clone(&state.config),
                stop.subscribe(),
            )));
        }
        // Every node: an API-only node writes notices too (a webhook switched off).
        background.push(tokio::spawn(announce::run(
            state.store.clone(),
            state.publisher.clone(),
            stop.subscribe(),
        )));
        background.push(tokio::spawn(tally_refusals(
            Arc::clone(&state.ingest),
            state.store.clone(),
            stop.subscribe(),
        )));
        background.push(tokio::spawn(keep_statistics(
            state.store.clone(),
            stop.subscribe(),
        )));
        for source in self.nats_sources {
            background.push(tokio::spawn(source.run(stop.subscribe(), grace)));
        }
        let store = state.store.clone();
        let timeouts = server::Timeouts {
            header: state.config.header_timeout,
            body: state.config.body_timeout,
        };
        let router = router(state);
        server::serve(self.listener, router, timeouts, grace, async move {
            shutdown.await;
            let _ = stop.send(true);
        })
        .await;
        for task in background {
            let _ = task.await;
        }
        store.close().await;
        Ok(())
    }
}

/// The whole HTTP surface: the API, and the dashboard at `/ui`, which is a client of the API
/// (it sends its calls through an in-process copy of the API router).
fn router(state: AppState) -> Router {
    let api = api::router(state.clone());
    let dashboard = ui::router(state, api.clone());
    api.merge(dashboard)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .layer(TraceLayer::new_for_http())
}

/// Counts the refusals left out of the incoming log in the statistics, every second and once
/// more when the node stops.
async fn tally_refusals(ingest: Arc<Ingest>, store: Store, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => ingest.tally_refusals(&store).await,
            _ = stop.changed() => break,
        }
    }
    ingest.tally_refusals(&store).await;
}

/// Keeps the database's statistics of the delivery queue fresh (see
/// [`Store::keep_statistics`]), every 2 s.
async fn keep_statistics(store: Store, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = tick.tick() => if let Err(error) = store.keep_statistics().await {
                tracing::debug!(%error, "refreshing the delivery queue's statistics failed");
            },
            _ = stop.changed() => break,
        }
    }
}

/// A database URL fit for logs: the password, if any, replaced.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}
