//! The operator's API: issue, list and revoke tenants' API keys.

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState,
    auth::Admin,
    error::{ApiResult, ErrorBody, OrNotFound},
    extract::{JsonBody, Path, required_ident},
};
use crate::domain::{
    Invalid,
    api_key::{ApiKey, hash_secret},
    check_text,
    tenant::{Scope, Tenant},
    time::{iso8601, now_ms},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_api_key, list_api_keys))
        .routes(routes!(revoke_api_key))
}

#[derive(Deserialize, ToSchema)]
pub struct ApiKeyIn {
    /// The tenant's user (string or integer).
    #[serde(default, deserialize_with = "required_ident")]
    #[schema(value_type = String)]
    user_id: Option<String>,
    /// The tenant's company (string or integer).
    #[serde(default, deserialize_with = "required_ident")]
    #[schema(value_type = String)]
    company_id: Option<String>,
    /// Scopes the key holds; omitted or empty: all of them.
    #[serde(default)]
    scopes: Vec<String>,
    /// A label for people.
    name: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ApiKeyOut {
    pub id: String,
    pub name: Option<String>,
    /// The key itself: present only in the answer that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The first characters of the key, to tell keys apart.
    pub key_prefix: String,
    pub user_id: String,
    pub company_id: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

impl ApiKeyOut {
    pub(crate) fn new(key: ApiKey, secret: Option<String>) -> Self {
        ApiKeyOut {
            id: key.id,
            name: key.name,
            key: secret,
            key_prefix: key.key_prefix,
            user_id: key.tenant.user_id,
            company_id: key.tenant.company_id,
            scopes: key.scopes.iter().map(|s| s.to_string()).collect(),
            created_at: iso8601(key.created_at),
            revoked_at: key.revoked_at.map(iso8601),
        }
    }
}

/// Parses scope names, naming the first unknown one.
pub fn parse_scopes(names: &[String]) -> Result<Vec<Scope>, Invalid> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            Scope::parse(name).ok_or_else(|| {
                let known: Vec<_> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                Invalid::new(
                    format!("scopes[{i}]"),
                    format!("unknown scope {name:?}; known: {}", known.join(", ")),
                )
            })
        })
        .collect()
}

/// Issue an API key for a tenant. The key is in the answer's `key` field and is never shown again.
#[utoipa::path(post, path = "/api/admin/keys", tag = "admin", request_body = ApiKeyIn,
    security(("bearer" = [])),
    responses((status = 201, body = ApiKeyOut), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_api_key(
    State(state): State<AppState>,
    _: Admin,
    JsonBody(input): JsonBody<ApiKeyIn>,
) -> ApiResult<(StatusCode, Json<ApiKeyOut>)> {
    let user_id = input
        .user_id
        .ok_or_else(|| Invalid::new("user_id", "is required"))?;
    let company_id = input
        .company_id
        .ok_or_else(|| Invalid::new("company_id", "is required"))?;
    check_text("user_id", &user_id, 1, 200)?;
    check_text("company_id", &company_id, 1, 200)?;
    if let Some(name) = &input.name {
        check_text("name", name, 0, 200)?;
    }
    let scopes = parse_scopes(&input.scopes)?;
    let (key, secret) = ApiKey::generate(
        Tenant {
            user_id,
            company_id,
        },
        scopes,
        input.name,
        now_ms(),
    );
    state
        .store
        .insert_api_key(&key, &hash_secret(&secret))
        .await?;
    Ok((StatusCode::CREATED, Json(ApiKeyOut::new(key, Some(secret)))))
}

/// List every API key (without the keys themselves), revoked ones included.
#[utoipa::path(get, path = "/api/admin/keys", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<ApiKeyOut>), (status = 401, body = ErrorBody)))]
async fn list_api_keys(State(state): State<AppState>, _: Admin) -> ApiResult<Json<Vec<ApiKeyOut>>> {
    let keys = state.store.list_api_keys().await?;
    Ok(Json(
        keys.into_iter().map(|k| ApiKeyOut::new(k, None)).collect(),
    ))
}

/// Revoke an API key: it stops working at once.
#[utoipa::path(delete, path = "/api/admin/keys/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "API key id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn revoke_api_key(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .store
        .revoke_api_key(&id, now_ms())
        .await
        .or_not_found("API key")?;
    Ok(StatusCode::NO_CONTENT)
}
