//! The receiving URLs: `POST /webhook/{token}`, and the aliases `/api/webhook/{token}` and
//! `/v1/webhook/{token}`; each also takes an incoming webhook's id with an API key of its tenant
//! (the spec's `POST /api/webhook/{incoming_webhook_id}` with `Authorization: Bearer <key>`).
//! HTTP framing only; the pipeline is `crate::ingest`.

use std::{net::SocketAddr, time::Instant};

use axum::{
    Json,
    extract::{ConnectInfo, FromRequestParts, Request, State},
    http::{StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::post,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{AppState, auth::Caller, error::ApiError, error::ErrorBody, extract::Path};
use crate::{
    domain::tenant::Scope,
    ingest::{self, Receipt},
};

/// The spellings of the receiving URL besides `/webhook/{token}`, from the spec's examples.
const ALIASES: [&str; 2] = ["/api/webhook/{token}", "/v1/webhook/{token}"];

pub fn router() -> OpenApiRouter<AppState> {
    ALIASES.into_iter().fold(
        OpenApiRouter::new().routes(routes!(receive_webhook)),
        |router, alias| router.route(alias, post(receive_webhook)),
    )
}

/// Describes the aliases in the OpenAPI document as what they are: the same operation (with
/// their own operation ids, which clients generate names from).
pub fn document_aliases(mut openapi: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let Some(item) = openapi.paths.paths.get("/webhook/{token}").cloned() else {
        return openapi;
    };
    for (alias, prefix) in ALIASES.into_iter().zip(["api", "v1"]) {
        let mut item = item.clone();
        if let Some(operation) = item.post.as_mut() {
            operation.operation_id = Some(format!("receive_webhook_{prefix}"));
        }
        openapi.paths.paths.insert(alias.to_string(), item);
    }
    openapi
}

/// Send data to an incoming webhook (also at `/api/webhook/{token}` and `/v1/webhook/{token}`).
/// JSON, form-urlencoded and text bodies are accepted. The answer comes once the routed message
/// is durable: 202 `{"status": "accepted", "id", "agent_id"}`, or 200 with the first answer
/// when the webhook's `dedup_header` repeats a delivery id already accepted. A Slack
/// `url_verification` request is answered 200 `{"challenge"}` and not routed.
#[utoipa::path(post, path = "/webhook/{token}", tag = "receiving",
    params(("token" = String, Path, description = "The secret token of the receiving URL; or the incoming webhook's id, with an API key of its tenant (scope `webhooks:receive` or `webhooks:write`) as `Authorization: Bearer <key>`")),
    security((), ("bearer" = [])),
    request_body(content = Object, description = "Any JSON, form fields or text"),
    responses(
        (status = 202, description = "Accepted: `{\"status\": \"accepted\", \"id\", \"agent_id\"}`"),
        (status = 200, description = "A repeated delivery id: the first answer; or Slack's url_verification: `{\"challenge\"}`"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody, description = "Source verification failed; or, with an id, a missing or wrong API key"),
        (status = 403, body = ErrorBody, description = "Inactive webhook, address not allowed, or a key without the scope"),
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
    let (mut parts, body) = request.into_parts();
    let webhook = match address(&state, &mut parts, token).await {
        Ok(webhook) => webhook,
        Err(error) => return counted(error.into_response(), started),
    };
    let request = ingest::Request {
        webhook,
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
    counted(response, started)
}

/// Every request counts here, including those to unknown tokens, which have no log entry.
fn counted(response: Response, started: Instant) -> Response {
    metrics::counter!("hookd_incoming_requests_total", "status" => response.status().as_str().to_string())
        .increment(1);
    metrics::histogram!("hookd_incoming_request_seconds").record(started.elapsed().as_secs_f64());
    response
}

/// Which webhook the path names. Tokens are 43 base64url characters and ids are UUIDs, so a
/// UUID is an id, which needs an API key of the webhook's tenant with `webhooks:receive` or
/// `webhooks:write` (another tenant's id is a 404, as everywhere). Anything else is a token,
/// whatever `Authorization` says (the spec's curl sends a key to the token URL too).
async fn address(
    state: &AppState,
    parts: &mut Parts,
    segment: String,
) -> Result<ingest::Address, ApiError> {
    if uuid::Uuid::try_parse(&segment).is_err() {
        return Ok(ingest::Address::Token(segment));
    }
    if !parts.headers.contains_key(header::AUTHORIZATION) {
        return Err(ApiError::Unauthorized(
            "this is an incoming webhook's id: send an API key of its tenant as \
             `Authorization: Bearer <api key>`, or post to the webhook's token URL instead",
        ));
    }
    let caller = Caller::from_request_parts(parts, state).await?;
    let tenant = caller
        .tenant(Scope::WebhooksReceive)
        .or_else(|_| caller.tenant(Scope::WebhooksWrite))
        .map_err(|_| ApiError::MissingScope(Scope::WebhooksReceive))?;
    Ok(ingest::Address::Owned {
        tenant: tenant.clone(),
        id: segment,
    })
}
