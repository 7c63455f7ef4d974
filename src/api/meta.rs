//! What needs no key: the event catalogue and health probes.

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    auth::Caller,
    error::ApiResult,
    event_types::{EventTypesOut, catalogue},
    extract::LargeAnswer,
};
use crate::domain::tenant::Scope;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_event_types))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// Every event type outgoing webhooks can subscribe to: the spec's list, without a key. With a
/// key (`webhooks:read`), the caller's company's own types follow hookd's.
#[utoipa::path(get, path = "/api/webhooks/event-types", tag = "events",
    security((), ("bearer" = [])),
    responses((status = 200, body = EventTypesOut), (status = 401, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody), (status = 503, body = super::error::ErrorBody)))]
async fn list_event_types(
    State(state): State<AppState>,
    caller: Option<Caller>,
) -> ApiResult<Json<EventTypesOut>> {
    let tenant = caller
        .as_ref()
        .map(|caller| caller.tenant(Scope::WebhooksRead))
        .transpose()?;
    // Without a key the answer is hookd's own types only: small.
    let _turn = match tenant {
        Some(tenant) => Some(LargeAnswer::take(&state, tenant).await?),
        None => None,
    };
    Ok(Json(catalogue(&state, tenant).await?))
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
