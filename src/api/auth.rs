//! Who is calling: a tenant's API key (`Authorization: Bearer hk_…`) or the operator's admin key.

use std::{
    net::{IpAddr, SocketAddr},
    time::Instant,
};

use axum::{
    extract::{ConnectInfo, FromRequestParts, OptionalFromRequestParts},
    http::request::Parts,
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AppState, error::ApiError};
use crate::{
    delivery::publish::Publishing,
    domain::{
        api_key::hash_secret,
        tenant::{Scope, Tenant},
    },
    ingest::client_addr,
    store::KeyHolder,
};

/// A request authenticated with a live API key.
pub struct Caller(pub KeyHolder);

impl Caller {
    /// The caller's tenant, if its key holds `scope`; else a 403 naming the scope.
    pub fn tenant(&self, scope: Scope) -> Result<&Tenant, ApiError> {
        if self.0.key.allows(scope) {
            Ok(&self.0.key.tenant)
        } else {
            Err(ApiError::MissingScope(scope))
        }
    }

    /// Who publishes, if the key holds `scope`: its tenant, with the company's webhook version
    /// read with the key (see [`KeyHolder`]).
    pub fn publishing(&self, scope: Scope) -> Result<Publishing<'_>, ApiError> {
        Ok(Publishing {
            tenant: self.tenant(scope)?,
            company_version: Some(self.0.company_version),
        })
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
    match value.trim().split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        Some(_) => Err(ApiError::Unauthorized(
            "Authorization must be `Bearer <api key>`: another scheme was sent",
        )),
        None => Err(ApiError::Unauthorized(
            "Authorization must be `Bearer <api key>`: the `Bearer ` prefix is missing \
             (send `Authorization: Bearer hk_…`)",
        )),
    }
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
        let key = bearer(parts)?;
        throttled(state, client_of(parts, state), Caller::from_key(state, key)).await
    }
}

/// Where a key is optional (the event catalogue answers without one), a key that is sent must
/// still be a live one: a wrong key is a 401, not an anonymous answer.
impl OptionalFromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, ApiError> {
        if !parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION)
        {
            return Ok(None);
        }
        <Caller as FromRequestParts<AppState>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}

/// The address a request came from, as the receiving URLs see it (`X-Forwarded-For` only from
/// trusted proxies). `None` for the dashboard's in-process API calls: they carry the key the
/// dashboard has just checked, and throttled, for the browser's own address.
pub fn client_of(parts: &Parts, state: &AppState) -> Option<IpAddr> {
    let ConnectInfo(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>()?;
    Some(client_addr(
        peer.ip(),
        &parts.headers,
        &state.config.trusted_proxies,
    ))
}

/// Runs the key check `check` for `client`, unless that address has used up its failed
/// attempts: then it is refused (429) without the key being looked at, so a guesser learns
/// nothing even from a right guess. A wrong key counts against the address; a right one does not
/// reset the count, or a tenant could interleave its own key with guesses at the admin key.
pub async fn throttled<T>(
    state: &AppState,
    client: Option<IpAddr>,
    check: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    let Some(client) = client else {
        return check.await;
    };
    if let Err(retry_after_secs) = state.auth_failures.check(client, Instant::now()) {
        return Err(ApiError::TooManyFailures { retry_after_secs });
    }
    let outcome = check.await;
    if let Err(ApiError::Unauthorized(_)) = &outcome {
        state.auth_failures.failed(client, Instant::now());
    }
    outcome
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
        let key = bearer(parts)?;
        throttled(state, client_of(parts, state), async {
            Admin::from_key(state, key)
        })
        .await
    }
}
