//! The event catalogue of a company: `GET /api/event-types` (hookd's types and the company's
//! own) and the company's own types, defined with `POST` and changed or archived by name.

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult, ErrorBody, OrNotFound},
    extract::{JsonBody, LargeAnswer, Path, nullable},
};
use crate::domain::{
    Invalid,
    custom_types::{CustomEventType, CustomTypeChanges},
    event_types::{CATALOG, is_about_webhooks, is_builtin},
    tenant::{Scope, Tenant},
    time::{iso8601, now_ms},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_event_type, list_event_types))
        .routes(routes!(
            get_event_type,
            update_event_type,
            archive_event_type
        ))
}

/// One event type: hookd's own (`builtin`), or one the caller's company defined.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct EventTypeOut {
    /// The name, as webhooks subscribe to it and events carry it.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The same name (the spelling `POST /api/event-types` takes).
    pub name: String,
    pub description: String,
    /// Whether `POST /api/events` accepts it now: not for the events hookd publishes about
    /// webhooks themselves (`webhook.disabled`, …), nor for archived types.
    pub publishable: bool,
    /// Defined by hookd (`true`) or by the caller's company (`false`).
    pub builtin: bool,
    /// The JSON Schema the `data` of its events must match (the company's types only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    /// Archived: no new publishes; webhooks subscribed to it keep their subscription.
    #[serde(default)]
    pub archived: bool,
    /// Grows with every change (the company's types only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// The user whose key defined it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

impl EventTypeOut {
    fn builtin(name: &str, description: &str) -> EventTypeOut {
        EventTypeOut {
            event_type: name.to_string(),
            name: name.to_string(),
            description: description.to_string(),
            publishable: !is_about_webhooks(name),
            builtin: true,
            schema: None,
            archived: false,
            version: None,
            created_by: None,
            created_at: None,
            updated_at: None,
        }
    }

    fn custom(event_type: CustomEventType) -> EventTypeOut {
        let archived = event_type.archived_at.is_some();
        EventTypeOut {
            event_type: event_type.name.clone(),
            name: event_type.name,
            description: event_type.description.unwrap_or_default(),
            publishable: !archived,
            builtin: false,
            schema: event_type.schema,
            archived,
            version: Some(event_type.version),
            created_by: Some(event_type.created_by),
            created_at: Some(iso8601(event_type.created_at)),
            updated_at: Some(iso8601(event_type.updated_at)),
        }
    }
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct EventTypesOut {
    pub event_types: Vec<EventTypeOut>,
}

/// hookd's types, then the company's own (`tenant`'s company; none without a tenant).
pub async fn catalogue(state: &AppState, tenant: Option<&Tenant>) -> ApiResult<EventTypesOut> {
    let own = match tenant {
        Some(tenant) => state.store.list_event_types(&tenant.company_id).await?,
        None => Vec::new(),
    };
    let event_types = CATALOG
        .iter()
        .map(|(name, description)| EventTypeOut::builtin(name, description))
        .chain(own.into_iter().map(EventTypeOut::custom))
        .collect();
    Ok(EventTypesOut { event_types })
}

/// A type to define (`POST`) or the fields to change (`PUT`: only the fields sent change;
/// `null` clears `description` or `schema`).
#[derive(Deserialize, ToSchema)]
pub struct EventTypeIn {
    /// Dotted like the built-in types (`billing.invoice.paid`): two or more segments of
    /// lowercase letters, digits, `_` or `-`. Required to define a type; a `PUT` may repeat it.
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    /// A JSON Schema (any draft it names with `$schema`, else 2020-12) for the `data` of its
    /// events; at most 64 KiB, no references outside itself.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    schema: Option<Option<Value>>,
    /// `true` archives (as `DELETE` does), `false` restores.
    archived: Option<bool>,
}

impl EventTypeIn {
    fn changes(self) -> CustomTypeChanges {
        CustomTypeChanges {
            description: self.description,
            schema: self.schema,
            archived: self.archived,
        }
    }
}

/// The refusal for changing a built-in type, or defining one with its name.
fn builtin_conflict(name: &str) -> ApiError {
    ApiError::Conflict(format!(
        "name: {name:?} is one of hookd's built-in event types: it cannot be defined, changed \
         or archived"
    ))
}

/// Define an event type for your company: its events can then be published and subscribed to
/// (`billing.*` covers it too). A name of a built-in type, or one your company has already
/// (archived ones included), is a 409, as is a company holding the most types the server allows
/// (`limit_reached`).
#[utoipa::path(post, path = "/api/event-types", tag = "events", request_body = EventTypeIn,
    security(("bearer" = [])),
    responses((status = 201, body = EventTypeOut), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn create_event_type(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(input): JsonBody<EventTypeIn>,
) -> ApiResult<(StatusCode, Json<EventTypeOut>)> {
    let tenant = caller.tenant(Scope::WebhooksWrite)?;
    let name = input
        .name
        .clone()
        .ok_or_else(|| Invalid::new("name", "is required"))?;
    if is_builtin(&name) {
        return Err(builtin_conflict(&name));
    }
    let event_type = CustomEventType::create(
        &tenant.company_id,
        &name,
        &tenant.user_id,
        input.changes(),
        now_ms(),
    )?;
    let most = state.config.quotas.event_types;
    state.store.insert_event_type(&event_type, most).await?;
    Ok((StatusCode::CREATED, Json(EventTypeOut::custom(event_type))))
}

/// hookd's built-in event types, then your company's own (archived ones with
/// `"archived": true`).
#[utoipa::path(get, path = "/api/event-types", tag = "events", security(("bearer" = [])),
    responses((status = 200, body = EventTypesOut), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn list_event_types(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<EventTypesOut>> {
    let tenant = caller.tenant(Scope::WebhooksRead)?;
    let _turn = LargeAnswer::take(&state, tenant).await?;
    Ok(Json(catalogue(&state, Some(tenant)).await?))
}

/// One event type by name: a built-in one, or your company's (another company's is a 404).
#[utoipa::path(get, path = "/api/event-types/{name}", tag = "events", security(("bearer" = [])),
    params(("name" = String, Path, description = "Event type name")),
    responses((status = 200, body = EventTypeOut), (status = 404, body = ErrorBody)))]
async fn get_event_type(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<EventTypeOut>> {
    let tenant = caller.tenant(Scope::WebhooksRead)?;
    if let Some((name, description)) = CATALOG.iter().find(|(known, _)| *known == name) {
        return Ok(Json(EventTypeOut::builtin(name, description)));
    }
    let event_type = state
        .store
        .get_event_type(&tenant.company_id, &name)
        .await
        .or_not_found("event type")?;
    Ok(Json(EventTypeOut::custom(event_type)))
}

/// Change one of your company's event types: only the fields sent change. A new `schema`
/// applies to the next publish on every node. Built-in types cannot be changed (409).
#[utoipa::path(put, path = "/api/event-types/{name}", tag = "events", request_body = EventTypeIn,
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Event type name")),
    responses((status = 200, body = EventTypeOut), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_event_type(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(input): JsonBody<EventTypeIn>,
) -> ApiResult<Json<EventTypeOut>> {
    let tenant = caller.tenant(Scope::WebhooksWrite)?;
    if input.name.as_ref().is_some_and(|given| *given != name) {
        return Err(Invalid::new(
            "name",
            "a type cannot be renamed: define a new one (and archive this one)",
        )
        .into());
    }
    let changes = input.changes();
    Ok(Json(EventTypeOut::custom(
        change(&state, tenant, &name, changes).await?,
    )))
}

/// Archive one of your company's event types: it takes no new events (422 at publish), and
/// webhooks subscribed to it keep their subscription. `PUT {"archived": false}` restores it;
/// its name stays taken meanwhile.
#[utoipa::path(delete, path = "/api/event-types/{name}", tag = "events", security(("bearer" = [])),
    params(("name" = String, Path, description = "Event type name")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn archive_event_type(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let tenant = caller.tenant(Scope::WebhooksWrite)?;
    let archive = CustomTypeChanges {
        archived: Some(true),
        ..Default::default()
    };
    change(&state, tenant, &name, archive).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Applies `changes` to the company's type `name` and saves it as its next version.
async fn change(
    state: &AppState,
    tenant: &Tenant,
    name: &str,
    changes: CustomTypeChanges,
) -> ApiResult<CustomEventType> {
    if is_builtin(name) {
        return Err(builtin_conflict(name));
    }
    let current = state
        .store
        .get_event_type(&tenant.company_id, name)
        .await
        .or_not_found("event type")?;
    let next = current.apply(changes, now_ms())?;
    state.store.update_event_type(&current, &next).await?;
    Ok(next)
}
