//! Who is calling: a tenant's API key (`Authorization: Bearer hk_…`) or the operator's admin key.

use axum::{extract::FromRequestParts, http::request::Parts};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AppState, error::ApiError};
use crate::domain::{
    api_key::{ApiKey, hash_secret},
    tenant::{Scope, Tenant},
};

/// A request authenticated with a live API key.
pub struct Caller(pub ApiKey);

impl Caller {
    /// The caller's tenant, if its key holds `scope`; else a 403 naming the scope.
    pub fn tenant(&self, scope: Scope) -> Result<&Tenant, ApiError> {
        if self.0.allows(scope) {
            Ok(&self.0.tenant)
        } else {
            Err(ApiError::MissingScope(scope))
        }
    }
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    const MISSING: &str = "missing header Authorization: Bearer <api key>";
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized(MISSING))?
        .to_str()
        .map_err(|_| ApiError::Unauthorized(MISSING))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(ApiError::Unauthorized(MISSING))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::Unauthorized(MISSING));
    }
    Ok(token.trim())
}

impl Caller {
    /// The caller holding `key`, if it is a live API key. Shared by the bearer header and the
    /// dashboard's session cookie, so both accept exactly the same keys.
    pub async fn from_key(state: &AppState, key: &str) -> Result<Self, ApiError> {
        state
            .store
            .find_api_key(&hash_secret(key))
            .await?
            .map(Caller)
            .ok_or(ApiError::Unauthorized("invalid or revoked API key"))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Caller::from_key(state, bearer(parts)?).await
    }
}

/// A request authenticated with `HOOKD_ADMIN_KEY`.
pub struct Admin;

impl Admin {
    /// `Admin` if `given` is the operator's key.
    pub fn from_key(state: &AppState, given: &str) -> Result<Self, ApiError> {
        let Some(expected) = &state.config.admin_key else {
            return Err(ApiError::Unauthorized(
                "the admin API is disabled: start hookd with HOOKD_ADMIN_KEY set",
            ));
        };
        // Comparing digests keeps the comparison constant-time whatever the lengths.
        let same: bool = Sha256::digest(given.as_bytes())
            .ct_eq(&Sha256::digest(expected.as_bytes()))
            .into();
        if same {
            Ok(Admin)
        } else {
            Err(ApiError::Unauthorized("invalid admin key"))
        }
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Admin::from_key(state, bearer(parts)?)
    }
}
