//! HTTP only: extract the request, call the domain and the store, map errors. Each resource
//! module owns its router and its DTOs; this module puts them together with the OpenAPI document.
//! The node's whole HTTP surface (this and the dashboard) is assembled in [`crate::app`].

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

use axum::{Router, extract::DefaultBodyLimit, response::IntoResponse};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{Http, HttpAuthScheme, SecurityScheme},
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::state::AppState;
use error::ApiError;

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

/// The JSON API. The OpenAPI document is at `/openapi.json`, its browsable form at `/docs`
/// (Swagger UI, served from the binary).
pub fn router(state: AppState) -> Router {
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
