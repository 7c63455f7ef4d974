//! Signing in: the key lives in a browser-session cookie and is checked again on every request
//! with the API's own key checks, so a revoked key is signed out at its next click. Nothing is
//! kept on the server, so any node can serve any page.

use std::net::IpAddr;

use axum::{
    extract::{FromRequestParts, Request},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
};

use super::{UiState, backend::Backend};
use crate::api::{
    auth::{Admin, Caller, client_of, throttled},
    error::ApiError,
};

pub const COOKIE: &str = "hookd_session";

/// Who is signed in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A tenant's API key: webhooks, agents, events.
    Tenant,
    /// `HOOKD_ADMIN_KEY`: the API keys page.
    Operator,
}

/// A signed-in request, with the API client acting as its key.
pub struct Session {
    pub role: Role,
    pub api: Backend,
}

/// Which role `key` opens, with the same checks, and the same count of failures from `client`,
/// that the API applies to a bearer token.
pub async fn role_of(state: &UiState, client: Option<IpAddr>, key: &str) -> Result<Role, ApiError> {
    throttled(&state.app, client, async {
        if Admin::from_key(&state.app, key).is_ok() {
            return Ok(Role::Operator);
        }
        Caller::from_key(&state.app, key)
            .await
            .map(|_| Role::Tenant)
    })
    .await
}

/// The `Set-Cookie` value that signs `key` in. No `Max-Age`: the browser forgets it when it
/// closes. The key is hex-encoded, so whatever characters an admin key has, the cookie is valid.
pub fn sign_in_cookie(key: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::try_from(format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/ui{secure}",
        hex::encode(key)
    ))
    .expect("hex and fixed attributes are a valid header value")
}

pub fn sign_out_cookie() -> HeaderValue {
    HeaderValue::from_static("hookd_session=; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=0")
}

/// Whether the browser reached us over https (directly or, as a proxy says, before it).
pub fn came_over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn cookie_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .and_then(|(_, value)| hex::decode(value).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

impl FromRequestParts<UiState> for Session {
    /// Not signed in (or the key was revoked): back to the sign-in page.
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &UiState) -> Result<Self, Response> {
        // htmx requests follow redirects inside their fragment; they are told to load the
        // sign-in page as a whole instead.
        let from_htmx = parts.headers.contains_key("hx-request");
        let signed_out = || {
            let mut response = if from_htmx {
                [("hx-redirect", "/ui/signin")].into_response()
            } else {
                Redirect::to("/ui/signin").into_response()
            };
            response
                .headers_mut()
                .insert(header::SET_COOKIE, sign_out_cookie());
            response
        };
        let key = cookie_key(&parts.headers).ok_or_else(signed_out)?;
        let client = client_of(parts, &state.app);
        let role = role_of(state, client, &key)
            .await
            .map_err(|_| signed_out())?;
        let host = parts.headers.get(header::HOST).cloned();
        Ok(Session {
            role,
            api: Backend::new(state.api.clone(), key, host),
        })
    }
}

/// CSRF defence for every state-changing request: the browser must say it comes from this
/// site (`Sec-Fetch-Site`), or, from browsers that do not send that, an `Origin` naming our host.
/// `SameSite=Strict` already keeps the cookie off cross-site requests; this is the second lock.
pub async fn same_origin_only(request: Request, next: Next) -> Response {
    if request.method() == Method::GET || request.method() == Method::HEAD {
        return next.run(request).await;
    }
    let headers = request.headers();
    let allowed = match headers.get("sec-fetch-site") {
        Some(site) => site == "same-origin" || site == "none",
        None => {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
            let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
            match (host, origin) {
                (Some(host), Some(origin)) => {
                    origin.split_once("://").map(|(_, rest)| rest) == Some(host)
                }
                _ => false,
            }
        }
    };
    if allowed {
        next.run(request).await
    } else {
        (
            StatusCode::FORBIDDEN,
            "cross-site request refused: submit the form from the dashboard itself",
        )
            .into_response()
    }
}
