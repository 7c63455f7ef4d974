//! Outgoing webhook management: `/api/webhooks/outgoing`.

use std::collections::BTreeMap;

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    auth::Caller,
    error::{ApiResult, ErrorBody, OrNotFound},
    extract::{JsonBody, LargeAnswer, OptionalJsonBody, Path, ident, not_null, nullable},
};
use crate::domain::{
    Invalid,
    delivery::{CircuitState, DeliveryPolicy, Health},
    log::{REDACTED, is_sensitive_header},
    new_id,
    outgoing::{Ordering, OutgoingChanges, OutgoingSettings, OutgoingWebhook},
    payload::PayloadFormat,
    rotation::{PreviousSecret, Rotated, RotationRequest, keep_previous_if_unchanged},
    tenant::{Scope, Tenant},
    time::{iso8601, now_ms},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_outgoing_webhook, list_outgoing_webhooks))
        .routes(routes!(
            get_outgoing_webhook,
            update_outgoing_webhook,
            delete_outgoing_webhook
        ))
        .routes(routes!(rotate_outgoing_webhook_secret))
}

/// Settings of an outgoing webhook. On create, `url` is required and the rest defaults; on
/// update (PUT), only the fields sent change, and `null` clears a nullable field.
#[derive(Deserialize, ToSchema, Default)]
pub struct OutgoingWebhookIn {
    /// Display name; defaults to the target's host.
    #[serde(default, deserialize_with = "not_null")]
    name: Option<String>,
    /// Target URL, http or https. `target_url` is accepted as an alias.
    #[serde(alias = "target_url")]
    #[serde(default, deserialize_with = "not_null")]
    url: Option<String>,
    /// Event types to receive: names from `/api/webhooks/event-types`, `chat.*`, or `*`
    /// (the default: every event).
    #[serde(default, deserialize_with = "not_null")]
    event_types: Option<Vec<String>>,
    /// Whether events are delivered (default true). `active` is accepted as an alias.
    #[serde(alias = "active")]
    #[serde(default, deserialize_with = "not_null")]
    is_active: Option<bool>,
    /// HMAC-SHA256 signing secret; deliveries are signed when set.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    secret: Option<Option<String>>,
    /// Extra HTTP headers sent with each delivery.
    #[serde(default, deserialize_with = "not_null")]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    /// The agent this webhook concerns (string or integer).
    #[serde(default, deserialize_with = "ident")]
    #[schema(value_type = Option<String>)]
    agent_id: Option<Option<String>>,
    /// Further attempts after a failed one (default 3, 0–20).
    #[serde(default, deserialize_with = "not_null")]
    retry_count: Option<i64>,
    /// Seconds before the first retry, doubling each time (default 60).
    #[serde(default, deserialize_with = "not_null")]
    retry_delay: Option<i64>,
    /// Seconds to wait for the target's answer (default 30, 1–300).
    #[serde(default, deserialize_with = "not_null")]
    timeout: Option<i64>,
    /// Deliveries per minute at most; `null` for no limit (the default).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    rate_limit: Option<Option<i64>>,
    /// Deliver only events whose fields (or `data` fields, dotted paths allowed) equal these
    /// values; a list means any of its values.
    #[schema(value_type = Option<Object>)]
    #[serde(default, deserialize_with = "not_null")]
    filters: Option<Map<String, Value>>,
    /// A MiniJinja template for the delivered body (context: the standard payload's fields and
    /// `event`); output that is JSON is sent as that JSON.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    payload_template: Option<Option<String>>,
    /// `standard`, `slack` or `discord`; `null` (the default): chosen from the target's host.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<PayloadFormat>)]
    payload_format: Option<Option<PayloadFormat>>,
    /// `none` (the default): events are taken in publish order but delivered concurrently, so
    /// they arrive close to that order. `fifo`: strictly one at a time in publish order, across
    /// nodes and restarts; a failing delivery holds the ones behind it until it succeeds or has
    /// spent its retries (then it is marked failed and the next one goes). A change applies to
    /// the deliveries still pending too.
    #[serde(default, deserialize_with = "not_null")]
    ordering: Option<Ordering>,
}

impl From<OutgoingWebhookIn> for OutgoingChanges {
    fn from(input: OutgoingWebhookIn) -> Self {
        OutgoingChanges {
            name: input.name,
            url: input.url,
            event_types: input.event_types,
            is_active: input.is_active,
            secret: input.secret,
            headers: input.headers,
            description: input.description,
            agent_id: input.agent_id,
            retry_count: input.retry_count,
            retry_delay: input.retry_delay,
            timeout: input.timeout,
            rate_limit: input.rate_limit,
            filters: input.filters,
            payload_template: input.payload_template,
            payload_format: input.payload_format,
            ordering: input.ordering,
        }
    }
}

/// An outgoing webhook as the API shows it. `target_url` and `active` mirror `url` and
/// `is_active` for clients written against the spec's other spelling.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct OutgoingWebhookOut {
    pub id: String,
    /// The owning tenant (from the API key that created it), as in the spec's schema.
    pub user_id: String,
    pub company_id: String,
    pub name: String,
    pub url: String,
    pub target_url: String,
    pub event_types: Vec<String>,
    pub is_active: bool,
    pub active: bool,
    pub description: Option<String>,
    /// Custom headers; values of credential-like headers (Authorization, *token*, *key*, …)
    /// show as `********` except in the answer that set them.
    pub headers: BTreeMap<String, String>,
    /// Whether a signing secret is set. The secret itself is shown only at creation.
    pub has_secret: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// While a rotation's overlap lasts: until when deliveries are also signed with the secret
    /// it replaced (ISO 8601); `null` otherwise.
    pub previous_secret_expires_at: Option<String>,
    pub agent_id: Option<String>,
    pub retry_count: i64,
    pub retry_delay: i64,
    pub timeout: i64,
    pub rate_limit: Option<i64>,
    #[schema(value_type = Object)]
    pub filters: Map<String, Value>,
    pub payload_template: Option<String>,
    /// As set; `null` means chosen from the target's host.
    pub payload_format: Option<PayloadFormat>,
    /// `none` or `fifo` (see the request body).
    pub ordering: Ordering,
    /// The circuit breaker's state for this target.
    pub circuit_state: CircuitState,
    pub consecutive_failures: i64,
    /// Why hookd deactivated this webhook, if it did (e.g. the target answered 410 Gone).
    pub deactivated_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl OutgoingWebhookOut {
    /// `reveal`: the answer to a create, which shows the secret and header values once.
    pub(crate) fn new(hook: OutgoingWebhook, reveal: bool, policy: &DeliveryPolicy) -> Self {
        let now = now_ms();
        let circuit_state = hook.health.circuit(policy, now);
        let previous_secret_expires_at =
            PreviousSecret::live(hook.previous_secret.as_ref(), now).map(|p| iso8601(p.expires_at));
        let s = hook.settings;
        let headers = s
            .headers
            .into_iter()
            .map(|(name, value)| {
                let shown = if reveal || !is_sensitive_header(&name) {
                    value
                } else {
                    REDACTED.into()
                };
                (name, shown)
            })
            .collect();
        OutgoingWebhookOut {
            id: hook.id,
            user_id: hook.tenant.user_id,
            company_id: hook.tenant.company_id,
            name: s.name,
            url: s.url.as_str().to_string(),
            target_url: s.url.as_str().to_string(),
            event_types: s.event_types,
            is_active: s.is_active,
            active: s.is_active,
            description: s.description,
            headers,
            has_secret: s.secret.is_some(),
            secret: if reveal { s.secret } else { None },
            previous_secret_expires_at,
            agent_id: s.agent_id,
            retry_count: s.retry_count,
            retry_delay: s.retry_delay,
            timeout: s.timeout,
            rate_limit: s.rate_limit,
            filters: s.filters,
            payload_template: s.payload_template,
            payload_format: s.payload_format,
            ordering: s.ordering,
            circuit_state,
            consecutive_failures: hook.health.consecutive_failures,
            deactivated_reason: hook.health.deactivated_reason,
            created_at: iso8601(hook.created_at),
            updated_at: iso8601(hook.updated_at),
        }
    }
}

/// Refuses subscriptions to types that neither hookd nor the tenant's company defines.
async fn check_subscriptions(
    state: &AppState,
    tenant: &Tenant,
    settings: &OutgoingSettings,
) -> ApiResult<()> {
    Ok(state
        .catalogue
        .check_patterns(&tenant.company_id, "event_types", &settings.event_types)
        .await?)
}

/// Refuses targets that resolve to addresses deliveries may not reach.
async fn check_target(state: &AppState, settings: &OutgoingSettings) -> ApiResult<()> {
    state
        .config
        .target_policy
        .check_target(&settings.url)
        .await
        .map_err(|e| Invalid::new("url", e.to_string()).into())
}

/// Create an outgoing webhook. A company holding the most the server allows is answered 409
/// `limit_reached`.
#[utoipa::path(post, path = "/api/webhooks/outgoing", tag = "outgoing", request_body = OutgoingWebhookIn,
    security(("bearer" = [])),
    responses((status = 201, body = OutgoingWebhookOut), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn create_outgoing_webhook(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(input): JsonBody<OutgoingWebhookIn>,
) -> ApiResult<(StatusCode, Json<OutgoingWebhookOut>)> {
    let tenant = caller.tenant(Scope::WebhooksWrite)?;
    let settings = OutgoingSettings::create(input.into())?;
    check_subscriptions(&state, tenant, &settings).await?;
    check_target(&state, &settings).await?;
    let now = now_ms();
    let hook = OutgoingWebhook {
        id: new_id(),
        tenant: tenant.clone(),
        settings,
        health: Health::default(),
        previous_secret: None,
        created_at: now,
        updated_at: now,
    };
    state
        .store
        .insert_outgoing(&hook, state.config.quotas.webhooks)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(OutgoingWebhookOut::new(hook, true, &state.config.delivery)),
    ))
}

/// List the caller's outgoing webhooks.
#[utoipa::path(get, path = "/api/webhooks/outgoing", tag = "outgoing", security(("bearer" = [])),
    responses((status = 200, body = Vec<OutgoingWebhookOut>), (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn list_outgoing_webhooks(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<OutgoingWebhookOut>>> {
    let tenant = caller.tenant(Scope::WebhooksRead)?;
    let _turn = LargeAnswer::take(&state, tenant).await?;
    let hooks = state.store.list_outgoing(tenant).await?;
    Ok(Json(
        hooks
            .into_iter()
            .map(|h| OutgoingWebhookOut::new(h, false, &state.config.delivery))
            .collect(),
    ))
}

/// Get one outgoing webhook.
#[utoipa::path(get, path = "/api/webhooks/outgoing/{id}", tag = "outgoing", security(("bearer" = [])),
    params(("id" = String, Path, description = "Outgoing webhook id")),
    responses((status = 200, body = OutgoingWebhookOut), (status = 404, body = ErrorBody)))]
async fn get_outgoing_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<OutgoingWebhookOut>> {
    let tenant = caller.tenant(Scope::WebhooksRead)?;
    let hook = state
        .store
        .get_outgoing(tenant, &id)
        .await
        .or_not_found("outgoing webhook")?;
    Ok(Json(OutgoingWebhookOut::new(
        hook,
        false,
        &state.config.delivery,
    )))
}

/// Change an outgoing webhook: only the fields sent change.
#[utoipa::path(put, path = "/api/webhooks/outgoing/{id}", tag = "outgoing", request_body = OutgoingWebhookIn,
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Outgoing webhook id")),
    responses((status = 200, body = OutgoingWebhookOut), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn update_outgoing_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<OutgoingWebhookIn>,
) -> ApiResult<Json<OutgoingWebhookOut>> {
    let tenant = caller.tenant(Scope::WebhooksWrite)?;
    let mut hook = state
        .store
        .get_outgoing(tenant, &id)
        .await
        .or_not_found("outgoing webhook")?;
    let mut changes = OutgoingChanges::from(input);
    // A client that sends back what it read must not overwrite credentials with the mask.
    if let Some(headers) = &mut changes.headers {
        for (name, value) in headers.iter_mut() {
            if value == REDACTED
                && let Some(current) = hook.settings.headers.get(name)
            {
                value.clone_from(current);
            }
        }
    }
    let url_changed = changes.url.is_some();
    let subscriptions_changed = changes.event_types.is_some();
    let settings = hook.settings.apply(changes)?;
    if subscriptions_changed {
        check_subscriptions(&state, tenant, &settings).await?;
    }
    keep_previous_if_unchanged(
        &mut hook.previous_secret,
        hook.settings.secret.as_deref(),
        settings.secret.as_deref(),
    );
    hook.settings = settings;
    if url_changed {
        check_target(&state, &hook.settings).await?;
    }
    hook.updated_at = now_ms();
    state
        .store
        .update_outgoing(&hook)
        .await
        .or_not_found("outgoing webhook")?;
    Ok(Json(OutgoingWebhookOut::new(
        hook,
        false,
        &state.config.delivery,
    )))
}

/// Delete an outgoing webhook.
#[utoipa::path(delete, path = "/api/webhooks/outgoing/{id}", tag = "outgoing", security(("bearer" = [])),
    params(("id" = String, Path, description = "Outgoing webhook id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_outgoing_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let tenant = caller.tenant(Scope::WebhooksDelete)?;
    state
        .store
        .delete_outgoing(tenant, &id)
        .await
        .or_not_found("outgoing webhook")?;
    Ok(StatusCode::NO_CONTENT)
}

/// A secret rotation: the new secret (generated when not given) and how long the replaced one
/// stays valid.
#[derive(Deserialize, ToSchema, Default)]
pub struct SecretRotationIn {
    /// The new secret; without it a Standard Webhooks secret (`whsec_` + 24 random bytes in
    /// base64) is generated.
    #[serde(default, deserialize_with = "not_null")]
    secret: Option<String>,
    /// Seconds the replaced secret stays valid (default 86400, 0–2592000; 0 ends it at once).
    #[serde(default, deserialize_with = "not_null")]
    previous_valid_for: Option<i64>,
}

impl From<SecretRotationIn> for RotationRequest {
    fn from(input: SecretRotationIn) -> Self {
        RotationRequest {
            secret: input.secret,
            previous_valid_for: input.previous_valid_for,
        }
    }
}

/// The outcome of a rotation. The secret is shown here only, never in listings.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct SecretRotationOut {
    pub secret: String,
    /// Until when the replaced secret is still valid (ISO 8601); `null` when there was none or
    /// `previous_valid_for` was 0.
    pub previous_expires_at: Option<String>,
}

impl SecretRotationOut {
    pub(crate) fn new(rotated: &Rotated) -> Self {
        SecretRotationOut {
            secret: rotated.secret.clone(),
            previous_expires_at: rotated.previous.as_ref().map(|p| iso8601(p.expires_at)),
        }
    }
}

/// Rotate an outgoing webhook's signing secret without a gap: deliveries from now on are signed
/// with the new secret and, until `previous_expires_at`, with the replaced one too
/// (`webhook-signature: v1,<new> v1,<old>`; `X-Webhook-Signature` with the new one and
/// `X-Webhook-Signature-Previous` with the old one). Retries and replays sign with the secrets
/// valid when they are sent.
#[utoipa::path(post, path = "/api/webhooks/outgoing/{id}/rotate-secret", tag = "outgoing",
    request_body = SecretRotationIn, security(("bearer" = [])),
    params(("id" = String, Path, description = "Outgoing webhook id")),
    responses((status = 200, body = SecretRotationOut), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn rotate_outgoing_webhook_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJsonBody(input): OptionalJsonBody<SecretRotationIn>,
) -> ApiResult<Json<SecretRotationOut>> {
    let tenant = caller.tenant(Scope::WebhooksWrite)?;
    let hook = state
        .store
        .get_outgoing(tenant, &id)
        .await
        .or_not_found("outgoing webhook")?;
    let now = now_ms();
    let current = hook.settings.secret.as_deref();
    let rotated = RotationRequest::from(input).apply(current, now)?;
    state
        .store
        .rotate_outgoing_secret(
            tenant,
            &id,
            current,
            &rotated.secret,
            rotated.previous.as_ref(),
            now,
        )
        .await
        .or_not_found("outgoing webhook")?;
    Ok(Json(SecretRotationOut::new(&rotated)))
}
