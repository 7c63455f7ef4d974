//! Builds a running node from a [`Config`]: store, HTTP server and background work. Tests build
//! the same [`Application`] on port 0.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use tokio::net::TcpListener;

use crate::{
    api::{self, AppState},
    config::Config,
    ingest::Ingest,
    store::Store,
};

pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Opens (and migrates) the store and binds the listener; nothing is served until [`run`].
    ///
    /// [`run`]: Application::run
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let store = Store::connect(&config.database_url)
            .await
            .with_context(|| format!("opening store {}", redact_url(&config.database_url)))?;
        let ingest = Ingest::new(&config)
            .await
            .context("starting the incoming path (HOOKD_REDIS_URL?)")?;
        let listener = TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("binding {}", config.bind))?;
        Ok(Application {
            listener,
            state: AppState {
                store,
                config: Arc::new(config),
                ingest: Arc::new(ingest),
            },
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

    /// Serves until `shutdown` completes, then lets in-flight requests finish.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let store = self.state.store.clone();
        let router = api::router(self.state);
        axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")?;
        store.close().await;
        Ok(())
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
