//! The receiving URLs: `POST /webhook/{token}`, and the aliases `/api/webhook/{token}` and
//! `/v1/webhook/{token}`. HTTP framing only; the pipeline is `crate::ingest`.

use std::{net::SocketAddr, time::Instant};

use axum::{
    Json,
    extract::{ConnectInfo, Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{AppState, error::ApiError, error::ErrorBody, extract::Path};
use crate::ingest::{self, Receipt};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(receive_webhook))
        // The same endpoint under the spellings the spec's examples use; documented once.
        .route("/api/webhook/{token}", post(receive_webhook))
        .route("/v1/webhook/{token}", post(receive_webhook))
}

/// Send data to an incoming webhook (also at `/api/webhook/{token}` and `/v1/webhook/{token}`).
/// JSON, form-urlencoded and text bodies are accepted. The answer comes once the routed message
/// is durable: 202 `{"status": "accepted", "id", "agent_id"}`, or 200 with the first answer
/// when the webhook's `dedup_header` repeats a delivery id already accepted. A Slack
/// `url_verification` request is answered 200 `{"challenge"}` and not routed.
#[utoipa::path(post, path = "/webhook/{token}", tag = "receiving",
    params(("token" = String, Path, description = "The secret token of the receiving URL")),
    request_body(content = Object, description = "Any JSON, form fields or text"),
    responses(
        (status = 202, description = "Accepted: `{\"status\": \"accepted\", \"id\", \"agent_id\"}`"),
        (status = 200, description = "A repeated delivery id: the first answer; or Slack's url_verification: `{\"challenge\"}`"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody, description = "Source verification failed"),
        (status = 403, body = ErrorBody, description = "Inactive webhook, or address not allowed"),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "The template or a routing rule failed on this payload"),
        (status = 429, body = ErrorBody, description = "Rate limit exceeded; see Retry-After")))]
async fn receive_webhook(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let query = request.uri().query().map(str::to_string);
    let (parts, body) = request.into_parts();
    let request = ingest::Request {
        token,
        peer: peer.ip(),
        headers: parts.headers,
        query,
        body,
    };
    let response = match state
        .ingest
        .receive(&state.store, &state.config, request)
        .await
    {
        Ok(Receipt::Accepted(answer)) => (StatusCode::ACCEPTED, Json(answer)).into_response(),
        Ok(Receipt::Duplicate(answer) | Receipt::Handshake(answer)) => {
            (StatusCode::OK, Json(answer)).into_response()
        }
        Err(ingest::Rejected { refusal, trail }) => {
            let error = ApiError::from(refusal);
            let detail = error.to_string();
            let response = error.into_response();
            state
                .ingest
                .log_refusal(&state.store, trail, response.status().as_u16(), detail);
            response
        }
    };
    // Every request counts here, including those to unknown tokens, which have no log entry.
    metrics::counter!("hookd_incoming_requests_total", "status" => response.status().as_str().to_string())
        .increment(1);
    metrics::histogram!("hookd_incoming_request_seconds").record(started.elapsed().as_secs_f64());
    response
}
