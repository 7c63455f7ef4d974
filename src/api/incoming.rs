//! Incoming webhook management: `/api/webhooks/incoming`.

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    auth::Caller,
    error::{ApiResult, ErrorBody, OrNotFound},
    extract::{JsonBody, ident, nullable},
};
use crate::domain::{
    Invalid,
    api_key::generate_secret,
    incoming::{IncomingChanges, IncomingSettings, IncomingWebhook, Transform},
    new_id,
    tenant::Scope,
    time::{iso8601, now_ms},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_incoming_webhook, list_incoming_webhooks))
        .routes(routes!(
            get_incoming_webhook,
            update_incoming_webhook,
            delete_incoming_webhook
        ))
}

/// Settings of an incoming webhook. On create, `name` and `agent_id` (or `agent_name`) are
/// required; on update (PUT), only the fields sent change and `null` clears a nullable field.
#[derive(Deserialize, ToSchema, Default)]
pub struct IncomingWebhookIn {
    name: Option<String>,
    /// The agent that receives the data (string or integer).
    #[serde(default, deserialize_with = "ident")]
    #[schema(value_type = Option<String>)]
    agent_id: Option<Option<String>>,
    /// The agent, by name.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    agent_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    /// Whether requests are accepted (default true). `active` is accepted as an alias.
    #[serde(alias = "active")]
    is_active: Option<bool>,
    /// A Jinja2 template (string) whose output, parsed as JSON when it is JSON, is what the
    /// agent receives. An object here is taken as `payload_transformation`.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    transform_template: Option<Option<Value>>,
    /// An object whose string leaves are Jinja2 templates.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    payload_transformation: Option<Option<Value>>,
    /// Requests per minute at most (default 100).
    rate_limit: Option<i64>,
    /// Addresses and CIDR ranges allowed to post; empty: anyone with the URL.
    allowed_ips: Option<Vec<String>>,
}

impl IncomingWebhookIn {
    fn into_changes(self) -> Result<IncomingChanges, Invalid> {
        let transform = match (self.transform_template, self.payload_transformation) {
            (Some(Some(_)), Some(Some(_))) => {
                return Err(Invalid::new(
                    "transform_template",
                    "give either transform_template or payload_transformation, not both",
                ));
            }
            (Some(Some(value)), _) => Some(Some(transform_from("transform_template", value)?)),
            (_, Some(Some(value))) => Some(Some(transform_from("payload_transformation", value)?)),
            (Some(None), _) | (_, Some(None)) => Some(None),
            (None, None) => None,
        };
        Ok(IncomingChanges {
            name: self.name,
            agent_id: self.agent_id,
            agent_name: self.agent_name,
            description: self.description,
            is_active: self.is_active,
            transform,
            rate_limit: self.rate_limit,
            allowed_ips: self.allowed_ips,
        })
    }
}

fn transform_from(field: &str, value: Value) -> Result<Transform, Invalid> {
    match value {
        Value::String(text) => Ok(Transform::Text(text)),
        object @ Value::Object(_) => Ok(Transform::Object(object)),
        _ => Err(Invalid::new(
            field,
            "must be a template string or an object of templates",
        )),
    }
}

/// An incoming webhook as the API shows it.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct IncomingWebhookOut {
    pub id: String,
    pub name: String,
    /// The secret part of the receiving URL (not shown in listings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Where outside systems POST (not shown in listings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub agent_id: Option<String>,
    pub agent_name: Option<String>,
    pub description: Option<String>,
    pub is_active: bool,
    pub active: bool,
    pub transform_template: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub payload_transformation: Option<Value>,
    pub rate_limit: i64,
    pub allowed_ips: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl IncomingWebhookOut {
    /// `base`: the receiving URL's base, when the token is to be shown.
    fn new(hook: IncomingWebhook, base: Option<&str>) -> Self {
        let s = hook.settings;
        let (transform_template, payload_transformation) = match s.transform {
            Some(Transform::Text(text)) => (Some(text), None),
            Some(Transform::Object(object)) => (None, Some(object)),
            None => (None, None),
        };
        IncomingWebhookOut {
            id: hook.id,
            name: s.name,
            url: base.map(|base| format!("{base}/webhook/{}", hook.token)),
            token: base.map(|_| hook.token),
            agent_id: s.agent_id,
            agent_name: s.agent_name,
            description: s.description,
            is_active: s.is_active,
            active: s.is_active,
            transform_template,
            payload_transformation,
            rate_limit: s.rate_limit,
            allowed_ips: s.allowed_ips.entries(),
            created_at: iso8601(hook.created_at),
            updated_at: iso8601(hook.updated_at),
        }
    }
}

/// The base of receiving URLs: `HOOKD_PUBLIC_URL`, else the Host this request was sent to.
fn public_base(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.config.public_url {
        return url.clone();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| state.config.bind.to_string(), str::to_string);
    format!("http://{host}")
}

/// Create an incoming webhook. The answer holds its token and receiving URL.
#[utoipa::path(post, path = "/api/webhooks/incoming", tag = "incoming", request_body = IncomingWebhookIn,
    security(("bearer" = [])),
    responses((status = 201, body = IncomingWebhookOut), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn create_incoming_webhook(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(input): JsonBody<IncomingWebhookIn>,
) -> ApiResult<(StatusCode, Json<IncomingWebhookOut>)> {
    let tenant = caller.tenant(Scope::WebhooksWrite)?;
    let settings = IncomingSettings::create(input.into_changes()?)?;
    let now = now_ms();
    let hook = IncomingWebhook {
        id: new_id(),
        tenant: tenant.clone(),
        token: generate_secret(""),
        settings,
        created_at: now,
        updated_at: now,
    };
    state.store.insert_incoming(&hook).await?;
    let base = public_base(&state, &headers);
    Ok((
        StatusCode::CREATED,
        Json(IncomingWebhookOut::new(hook, Some(&base))),
    ))
}

/// List the caller's incoming webhooks (tokens are shown only by GET of one webhook).
#[utoipa::path(get, path = "/api/webhooks/incoming", tag = "incoming", security(("bearer" = [])),
    responses((status = 200, body = Vec<IncomingWebhookOut>), (status = 401, body = ErrorBody)))]
async fn list_incoming_webhooks(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<IncomingWebhookOut>>> {
    let tenant = caller.tenant(Scope::WebhooksRead)?;
    let hooks = state.store.list_incoming(tenant).await?;
    Ok(Json(
        hooks
            .into_iter()
            .map(|h| IncomingWebhookOut::new(h, None))
            .collect(),
    ))
}

/// Get one incoming webhook, with its token and receiving URL.
#[utoipa::path(get, path = "/api/webhooks/incoming/{id}", tag = "incoming", security(("bearer" = [])),
    params(("id" = String, Path, description = "Incoming webhook id")),
    responses((status = 200, body = IncomingWebhookOut), (status = 404, body = ErrorBody)))]
async fn get_incoming_webhook(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<IncomingWebhookOut>> {
    let tenant = caller.tenant(Scope::WebhooksRead)?;
    let hook = state
        .store
        .get_incoming(tenant, &id)
        .await
        .or_not_found("incoming webhook")?;
    let base = public_base(&state, &headers);
    Ok(Json(IncomingWebhookOut::new(hook, Some(&base))))
}

/// Change an incoming webhook: only the fields sent change.
#[utoipa::path(put, path = "/api/webhooks/incoming/{id}", tag = "incoming", request_body = IncomingWebhookIn,
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Incoming webhook id")),
    responses((status = 200, body = IncomingWebhookOut), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn update_incoming_webhook(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<IncomingWebhookIn>,
) -> ApiResult<Json<IncomingWebhookOut>> {
    let tenant = caller.tenant(Scope::WebhooksWrite)?;
    let mut hook = state
        .store
        .get_incoming(tenant, &id)
        .await
        .or_not_found("incoming webhook")?;
    hook.settings = hook.settings.apply(input.into_changes()?)?;
    hook.updated_at = now_ms();
    state
        .store
        .update_incoming(&hook)
        .await
        .or_not_found("incoming webhook")?;
    let base = public_base(&state, &headers);
    Ok(Json(IncomingWebhookOut::new(hook, Some(&base))))
}

/// Delete an incoming webhook: its URL stops accepting requests at once.
#[utoipa::path(delete, path = "/api/webhooks/incoming/{id}", tag = "incoming", security(("bearer" = [])),
    params(("id" = String, Path, description = "Incoming webhook id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_incoming_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let tenant = caller.tenant(Scope::WebhooksDelete)?;
    state
        .store
        .delete_incoming(tenant, &id)
        .await
        .or_not_found("incoming webhook")?;
    Ok(StatusCode::NO_CONTENT)
}
