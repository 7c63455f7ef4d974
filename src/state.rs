//! What the HTTP side of a node shares: the API's handlers and the dashboard's take it as their
//! state, so it belongs to neither (the dashboard calls the API; the API knows nothing of it).

use std::sync::Arc;

use crate::{
    config::Config,
    delivery::{catalogue::Catalogue, publish::Publisher, sender::Sender},
    domain::throttle::FailureThrottle,
    ingest::Ingest,
    store::Store,
};

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    pub publisher: Publisher,
    /// The types each company may publish and subscribe to, with compiled schemas.
    pub catalogue: Arc<Catalogue>,
    /// Shared with the workers: one connection pool to targets.
    pub sender: Arc<Sender>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub ingest: Arc<Ingest>,
    /// Turns true when the node starts shutting down; long-lived answers (event streams) end
    /// then, so that draining connections does not wait on them.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Failed authentications per client address (see [`crate::api::auth`]).
    pub auth_failures: Arc<FailureThrottle>,
}
