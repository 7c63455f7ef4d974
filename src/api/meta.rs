//! What needs no key: the event catalogue and health probes.

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{AppState, error::ApiResult};
use crate::domain::event_types::{CATALOG, is_about_webhooks};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_event_types))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct EventTypeOut {
    #[serde(rename = "type")]
    pub event_type: String,
    pub description: String,
    /// Whether `POST /api/events` accepts it: not for the events hookd publishes about webhooks
    /// themselves (`webhook.disabled`, …), which only hookd emits.
    pub publishable: bool,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct EventTypesOut {
    pub event_types: Vec<EventTypeOut>,
}

/// Every event type outgoing webhooks can subscribe to. No key needed.
#[utoipa::path(get, path = "/api/webhooks/event-types", tag = "events",
    responses((status = 200, body = EventTypesOut)))]
async fn list_event_types() -> Json<EventTypesOut> {
    let event_types = CATALOG
        .iter()
        .map(|(name, description)| EventTypeOut {
            event_type: name.to_string(),
            description: description.to_string(),
            publishable: !is_about_webhooks(name),
        })
        .collect();
    Json(EventTypesOut { event_types })
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct HealthOut {
    pub status: String,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = HealthOut)))]
async fn healthz() -> Json<HealthOut> {
    Json(HealthOut {
        status: "ok".into(),
    })
}

/// Readiness: the store answers. 503 when it does not.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = HealthOut), (status = 503, body = super::error::ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> ApiResult<(StatusCode, Json<HealthOut>)> {
    state.store.ping().await?;
    Ok((
        StatusCode::OK,
        Json(HealthOut {
            status: "ready".into(),
        }),
    ))
}

/// Prometheus metrics: delivery attempts by outcome, attempt latency, queue depth, open
/// circuits, receiving requests by status. No key needed (expose it only to your scraper).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, content_type = "text/plain", body = String,
        description = "Prometheus text exposition format")))]
async fn metrics(State(state): State<AppState>) -> String {
    state.metrics.render()
}
