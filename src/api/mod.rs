//! HTTP only: extract the request, call the domain and the store, map errors. Each resource
//! module owns its router and its DTOs; this module puts them together with the OpenAPI document.

pub mod activity;
pub mod admin;
pub mod agents;
pub mod auth;
pub mod deliveries;
pub mod error;
pub mod event_types;
pub mod events;
pub mod extract;
pub mod incoming;
pub mod meta;
pub mod outgoing;
pub mod receive;

use std::sync::Arc;

use axum::{Router, extract::DefaultBodyLimit, response::IntoResponse};
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{Http, HttpAuthScheme, SecurityScheme},
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::{
    config::Config,
    delivery::{catalogue::Catalogue, publish::Publisher, sender::Sender},
    domain::throttle::FailureThrottle,
    ingest::Ingest,
    store::Store,
};
use error::ApiError;

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
    /// Failed authentications per client address (see [`auth`]).
    pub auth_failures: Arc<FailureThrottle>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "hookd", description = "Webhook gateway: outgoing and incoming webhooks for agent platforms."),
    modifiers(&BearerAuth),
    tags(
        (name = "outgoing", description = "Outgoing webhooks: where events are delivered"),
        (name = "incoming", description = "Incoming webhooks: URLs outside systems post to"),
        (name = "receiving", description = "The receiving URLs themselves (no API key: the token is the credential)"),
        (name = "agents", description = "Agents: where incoming data is routed, with their inboxes"),
        (name = "events", description = "Publishing events and the event catalogue"),
        (name = "logs", description = "Logs and statistics of both directions"),
        (name = "admin", description = "API keys (operator only, HOOKD_ADMIN_KEY)"),
        (name = "health", description = "Probes"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
        }
    }
}

/// The whole HTTP surface: the API, and the dashboard at `/ui`, which is a client of the API
/// (it sends its calls through an in-process copy of the API router).
pub fn router(state: AppState) -> Router {
    let api = api_router(state.clone());
    let dashboard = crate::ui::router(state, api.clone());
    api.merge(dashboard)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .layer(TraceLayer::new_for_http())
}

/// The JSON API. The OpenAPI document is at `/openapi.json`, its browsable form at `/docs`
/// (Swagger UI, served from the binary).
fn api_router(state: AppState) -> Router {
    let (api, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(admin::router())
        .merge(outgoing::router())
        .merge(deliveries::router())
        .merge(events::router())
        .merge(event_types::router())
        .merge(activity::router())
        .merge(incoming::router())
        .merge(receive::router())
        .merge(agents::router())
        .merge(meta::router())
        .split_for_parts();
    let openapi = receive::document_aliases(openapi);
    let api_limit = state.config.max_body_bytes;
    api.with_state(state)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .fallback(|| async { ApiError::NotFound("route").into_response() })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed.into_response() })
        .layer(DefaultBodyLimit::max(api_limit))
}
