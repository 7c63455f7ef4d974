//! Incoming webhook management: `/api/webhooks/incoming`.

use axum::{
    Json,
    extract::State,
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
    extract::{JsonBody, LargeAnswer, OptionalJsonBody, Path, ident, not_null, nullable},
    outgoing::{SecretRotationIn, SecretRotationOut},
};
use crate::{
    domain::{
        Invalid,
        api_key::generate_secret,
        incoming::{IncomingChanges, IncomingSettings, IncomingWebhook, Route, Transform},
        new_id,
        quota::Owned,
        rotation::{PreviousSecret, RotationRequest, keep_previous_if_unchanged},
        signature::SourceVerification,
        tenant::Scope,
        time::{iso8601, now_ms},
    },
    ingest,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_incoming_webhook, list_incoming_webhooks))
        .routes(routes!(
            get_incoming_webhook,
            update_incoming_webhook,
            delete_incoming_webhook
        ))
        .routes(routes!(preview_incoming_webhook))
        .routes(routes!(rotate_incoming_webhook_secret))
}

/// Settings of an incoming webhook. On create, `name` and `agent_id` (or `agent_name`) are
/// required; on update (PUT), only the fields sent change and `null` clears a nullable field.
#[derive(Deserialize, ToSchema, Default)]
pub struct IncomingWebhookIn {
    #[serde(default, deserialize_with = "not_null")]
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
    #[serde(default, deserialize_with = "not_null")]
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
    #[serde(default, deserialize_with = "not_null")]
    rate_limit: Option<i64>,
    /// Addresses and CIDR ranges allowed to post; empty: anyone with the URL.
    #[serde(default, deserialize_with = "not_null")]
    allowed_ips: Option<Vec<String>>,
    /// Source verification of each request: `{"type": "github"|"stripe"|"slack"|
    /// "standard_webhooks"|"hmac_sha256", "secret", …}`. Shown without its secret; sent back
    /// without `secret`, the stored secret is kept.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    verification: Option<Option<Value>>,
    /// Routing rules, first match wins: `[{"when": "priority == 'high'", "agent_id": …}]`;
    /// requests no rule matches go to the webhook's agent.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<RouteIn>>)]
    routes: Option<Option<Vec<RouteIn>>>,
    /// A header carrying the sender's delivery id (e.g. `X-GitHub-Delivery`): a repeated id is
    /// answered with the first answer and not processed again.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    dedup_header: Option<Option<String>>,
}

/// A routing rule: a Jinja expression over the request (`labels contains 'urgent'`,
/// `data.amount > 100`) and the agent (id or name) that gets matching requests.
#[derive(Deserialize, Serialize, ToSchema)]
pub struct RouteIn {
    when: String,
    #[serde(
        default,
        deserialize_with = "ident",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    agent_id: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent_name: Option<String>,
}

impl IncomingWebhookIn {
    /// `current`: the settings being updated, whose secret a redacted `verification` keeps.
    fn into_changes(self, current: Option<&IncomingSettings>) -> Result<IncomingChanges, Invalid> {
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
            verification: self
                .verification
                .map(|v| {
                    v.map(|v| verification_from(v, current.and_then(|c| c.verification.as_ref())))
                        .transpose()
                })
                .transpose()?,
            routes: self
                .routes
                .map(|routes| {
                    routes
                        .unwrap_or_default()
                        .into_iter()
                        .enumerate()
                        .map(|(i, r)| r.into_route(i))
                        .collect::<Result<_, _>>()
                })
                .transpose()?,
            dedup_header: self.dedup_header,
        })
    }
}

impl RouteIn {
    fn into_route(self, index: usize) -> Result<Route, Invalid> {
        let agent = self.agent_id.flatten().or(self.agent_name).ok_or_else(|| {
            Invalid::new(
                format!("routes[{index}].agent_id"),
                "is required (or give agent_name)",
            )
        })?;
        Ok(Route {
            when: self.when,
            agent,
        })
    }
}

/// Parses a verification setting; without `secret`, the current one's secret is kept.
fn verification_from(
    mut value: Value,
    current: Option<&SourceVerification>,
) -> Result<SourceVerification, Invalid> {
    if let Value::Object(fields) = &mut value {
        // What an answer shows about a rotation is not a setting: a client may send it back.
        fields.remove("previous_secret_set");
        fields.remove("previous_expires_at");
        if let Some(current) = current
            && !fields.contains_key("secret")
        {
            fields.remove("secret_set");
            fields.insert("secret".into(), Value::String(current.secret().to_string()));
        }
    }
    serde_json::from_value(value).map_err(|e| Invalid::new("verification", e.to_string()))
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
    /// The owning tenant (from the API key that created it), as in the spec's schema.
    pub user_id: String,
    pub company_id: String,
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
    /// The verification setting, with `secret_set` in place of the secret; while a rotation's
    /// overlap lasts also `previous_secret_set: true` and `previous_expires_at` (until when the
    /// replaced secret is still accepted).
    #[schema(value_type = Option<Object>)]
    pub verification: Option<Value>,
    pub routes: Vec<RouteIn>,
    pub dedup_header: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl IncomingWebhookOut {
    /// `base`: the receiving URL's base, when the token is to be shown.
    fn new(hook: IncomingWebhook, base: Option<&str>) -> Self {
        let previous = PreviousSecret::live(hook.previous_secret.as_ref(), now_ms());
        let verification = hook.settings.verification.as_ref().map(|v| {
            let mut shown = v.redacted();
            if let (Value::Object(fields), Some(previous)) = (&mut shown, previous) {
                fields.insert("previous_secret_set".into(), Value::Bool(true));
                fields.insert(
                    "previous_expires_at".into(),
                    Value::String(iso8601(previous.expires_at)),
                );
            }
            shown
        });
        let s = hook.settings;
        let (transform_template, payload_transformation) = match s.transform {
            Some(Transform::Text(text)) => (Some(text), None),
            Some(Transform::Object(object)) => (None, Some(object)),
            None => (None, None),
        };
        IncomingWebhookOut {
            id: hook.id,
            user_id: hook.tenant.user_id,
            company_id: hook.tenant.company_id,
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
            verification,
            routes: s
                .routes
                .into_iter()
                .map(|r| RouteIn {
                    when: r.when,
                    agent_id: Some(Some(r.agent)),
                    agent_name: None,
                })
                .collect(),
            dedup_header: s.dedup_header,
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

/// Creates the agents the settings name that do not exist yet (each with its `agent.created`),
/// so the spec's examples (which name agents without creating them) work as written.
async fn ensure_agents(
    state: &AppState,
    tenant: &crate::domain::tenant::Tenant,
    settings: &IncomingSettings,
) -> ApiResult<()> {
    let most = state.config.quotas.agents;
    for reference in settings.agents() {
        ingest::ensure_agent(
            &state.publisher,
            &state.store,
            tenant,
            reference,
            most,
            now_ms(),
        )
        .await?;
    }
    Ok(())
}

/// Create an incoming webhook. The answer holds its token and receiving URL. A company holding
/// the most the server allows is answered 409 `limit_reached`.
#[utoipa::path(post, path = "/api/webhooks/incoming", tag = "incoming", request_body = IncomingWebhookIn,
    security(("bearer" = [])),
    responses((status = 201, body = IncomingWebhookOut), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_incoming_webhook(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(input): JsonBody<IncomingWebhookIn>,
) -> ApiResult<(StatusCode, Json<IncomingWebhookOut>)> {
    let tenant = caller.tenant(Scope::WebhooksWrite)?;
    let settings = IncomingSettings::create(input.into_changes(None)?)?;
    // Before the agents it names are made: a create refused for the quota leaves none behind.
    let most = state.config.quotas.webhooks;
    let (owned, company) = (Owned::IncomingWebhooks, tenant.company_id.as_str());
    state.store.check_quota(owned, most, company).await?;
    ensure_agents(&state, tenant, &settings).await?;
    let now = now_ms();
    let hook = IncomingWebhook {
        id: new_id(),
        tenant: tenant.clone(),
        token: generate_secret(""),
        settings,
        previous_secret: None,
        created_at: now,
        updated_at: now,
    };
    state
        .store
        .insert_incoming(&hook, state.config.quotas.webhooks)
        .await?;
    let base = public_base(&state, &headers);
    Ok((
        StatusCode::CREATED,
        Json(IncomingWebhookOut::new(hook, Some(&base))),
    ))
}

/// List the caller's incoming webhooks (tokens are shown only by GET of one webhook).
#[utoipa::path(get, path = "/api/webhooks/incoming", tag = "incoming", security(("bearer" = [])),
    responses((status = 200, body = Vec<IncomingWebhookOut>), (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn list_incoming_webhooks(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<IncomingWebhookOut>>> {
    let tenant = caller.tenant(Scope::WebhooksRead)?;
    let _turn = LargeAnswer::take(&state, tenant).await?;
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
    let settings = hook
        .settings
        .apply(input.into_changes(Some(&hook.settings))?)?;
    let secret = |s: &IncomingSettings| s.verification.as_ref().map(|v| v.secret().to_string());
    keep_previous_if_unchanged(
        &mut hook.previous_secret,
        secret(&hook.settings).as_deref(),
        secret(&settings).as_deref(),
    );
    hook.settings = settings;
    ensure_agents(&state, tenant, &hook.settings).await?;
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

/// A sample payload to render, and optionally a template to try instead of the webhook's own.
#[derive(Deserialize, ToSchema)]
pub struct PreviewIn {
    /// The payload, as a sender would post it (JSON).
    #[serde(default)]
    #[schema(value_type = Object)]
    payload: Value,
    /// A template string, or an object of templates, used instead of the webhook's.
    #[schema(value_type = Option<Object>)]
    template: Option<Value>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct PreviewOut {
    /// What the agent would receive.
    #[schema(value_type = Object)]
    pub output: Value,
}

/// Render a sample payload through the webhook's template (or the one given) without routing
/// or storing anything. A template error is a 422 naming the field and the line.
#[utoipa::path(post, path = "/api/webhooks/incoming/{id}/preview", tag = "incoming",
    request_body = PreviewIn, security(("bearer" = [])),
    params(("id" = String, Path, description = "Incoming webhook id")),
    responses((status = 200, body = PreviewOut), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn preview_incoming_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<PreviewIn>,
) -> ApiResult<Json<PreviewOut>> {
    let tenant = caller.tenant(Scope::WebhooksRead)?;
    let hook = state
        .store
        .get_incoming(tenant, &id)
        .await
        .or_not_found("incoming webhook")?;
    let template = input
        .template
        .map(|t| transform_from("template", t))
        .transpose()?;
    let output = state
        .ingest
        .preview(&hook, &input.payload, template.as_ref())
        .await?;
    Ok(Json(PreviewOut { output }))
}

/// Rotate an incoming webhook's verification secret without a gap: requests signed with the new
/// secret are accepted at once, and requests signed with the replaced one until
/// `previous_expires_at`, so the sender can switch when it likes. The webhook must have a
/// `verification`; its scheme and other settings stay as they are.
#[utoipa::path(post, path = "/api/webhooks/incoming/{id}/rotate-secret", tag = "incoming",
    request_body = SecretRotationIn, security(("bearer" = [])),
    params(("id" = String, Path, description = "Incoming webhook id")),
    responses((status = 200, body = SecretRotationOut), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn rotate_incoming_webhook_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJsonBody(input): OptionalJsonBody<SecretRotationIn>,
) -> ApiResult<Json<SecretRotationOut>> {
    let tenant = caller.tenant(Scope::WebhooksWrite)?;
    let hook = state
        .store
        .get_incoming(tenant, &id)
        .await
        .or_not_found("incoming webhook")?;
    let Some(current) = &hook.settings.verification else {
        return Err(Invalid::new(
            "verification",
            "is not set, so there is no secret to rotate; set verification first",
        )
        .into());
    };
    let now = now_ms();
    let rotated = RotationRequest::from(input).apply(Some(current.secret()), now)?;
    let verification = current.with_secret(&rotated.secret);
    state
        .store
        .rotate_incoming_secret(
            tenant,
            &id,
            current,
            &verification,
            rotated.previous.as_ref(),
            now,
        )
        .await
        .or_not_found("incoming webhook")?;
    Ok(Json(SecretRotationOut::new(&rotated)))
}
