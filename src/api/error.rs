//! The one place where failures become HTTP answers: `{"error": "<stable_code>", "detail": "…"}`.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{
    delivery::{catalogue::CatalogueError, publish::PublishError},
    domain::Invalid,
    domain::quota::Owned,
    domain::tenant::Scope,
    ingest::{BodyError, Refusal},
    store::StoreError,
};

/// The error body every non-2xx answer carries.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `validation_error`.
    pub error: String,
    /// A sentence for people, naming the field concerned.
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("this API key lacks the scope {0}")]
    MissingScope(Scope),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    MalformedJson(String),
    #[error("{0}")]
    BadBody(String),
    /// A receiving URL's source verification failed.
    #[error("{0}")]
    BadSignature(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("rate limit exceeded; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// Too many wrong keys from one address: refused before the key is looked at.
    #[error(
        "too many failed authentications from this address; Authorization is not checked \
         again for {retry_after_secs} s"
    )]
    TooManyFailures { retry_after_secs: u64 },
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the request body did not arrive within {} ms", .0.as_millis())]
    SlowBody(std::time::Duration),
    #[error("{0}")]
    Conflict(String),
    /// The company holds as many of a kind as the node allows.
    #[error("{0}")]
    LimitReached(String),
    #[error("{0}")]
    IdempotencyKeyReused(String),
    /// A value got past validation that the database would not hold.
    #[error("a value in this request cannot be stored: {0}")]
    Unstorable(String),
    #[error("method not allowed for this path")]
    MethodNotAllowed,
    #[error("the store is unavailable; nothing was written, retry later")]
    Unavailable,
    /// A part of the node other than the store cannot take the request now.
    #[error("{0}; retry later")]
    Overloaded(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// The answer's status and its `error` code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::MissingScope(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MalformedJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            ApiError::BadBody(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            ApiError::BadSignature(_) => (StatusCode::UNAUTHORIZED, "invalid_signature"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::RateLimited { .. } | ApiError::TooManyFailures { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
            }
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_error"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::SlowBody(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::LimitReached(_) => (StatusCode::CONFLICT, "limit_reached"),
            ApiError::Unstorable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unstorable_value"),
            ApiError::IdempotencyKeyReused(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Unavailable | ApiError::Overloaded(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => ApiError::NotFound("resource"),
            StoreError::Conflict(detail) => ApiError::Conflict(detail),
            StoreError::QuotaReached { owned, most } => ApiError::LimitReached(format!(
                "your company has {most} {}, the most this server allows ({}); {}",
                owned.label(),
                owned.setting(),
                match owned {
                    Owned::EventTypes => {
                        "archived types count too: restore one and change it (PUT) instead"
                    }
                    Owned::OutgoingWebhooks | Owned::IncomingWebhooks | Owned::Agents => {
                        "delete one to make another"
                    }
                }
            )),
            StoreError::Refused(detail) => ApiError::Unstorable(detail),
            StoreError::Unavailable(_) => ApiError::Unavailable,
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<CatalogueError> for ApiError {
    fn from(error: CatalogueError) -> Self {
        match error {
            CatalogueError::Store(error) => error.into(),
            CatalogueError::Invalid(invalid) => invalid.into(),
            aborted @ CatalogueError::Aborted(_) => ApiError::Internal(aborted.into()),
            busy @ CatalogueError::Busy => ApiError::Overloaded(busy.to_string()),
        }
    }
}

impl From<PublishError> for ApiError {
    fn from(error: PublishError) -> Self {
        match error {
            PublishError::Store(error) => error.into(),
            reused @ PublishError::KeyReused => ApiError::IdempotencyKeyReused(reused.to_string()),
            many @ PublishError::TooManyDeliveries { .. } => {
                ApiError::Invalid(Invalid::new("events", many.to_string()))
            }
            PublishError::Catalogue(error) => error.into(),
        }
    }
}

/// How the receiving URL answers each refusal. An inactive webhook is a 403, not a 410: it can
/// be switched on again, and 410 tells senders to give up for good.
impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        let detail = refusal.to_string();
        match refusal {
            Refusal::UnknownToken => ApiError::NotFound("webhook"),
            Refusal::Inactive | Refusal::IpNotAllowed(_) => ApiError::Forbidden(detail),
            Refusal::RateLimited { retry_after_secs } => ApiError::RateLimited { retry_after_secs },
            Refusal::TooLarge(limit) => ApiError::TooLarge(limit),
            Refusal::SlowBody(deadline) => ApiError::SlowBody(deadline),
            Refusal::Unreadable(_) => ApiError::BadBody(detail),
            Refusal::BadSignature(_) => ApiError::BadSignature(detail),
            Refusal::BadBody(BodyError::Json(_)) => ApiError::MalformedJson(detail),
            Refusal::BadBody(_) => ApiError::BadBody(detail),
            Refusal::Template(invalid) => ApiError::Invalid(invalid),
            Refusal::TemplatesUnavailable(_) => ApiError::Overloaded(detail),
            Refusal::Store(error) => error.into(),
        }
    }
}

/// Names the missing thing when the store finds nothing.
pub trait OrNotFound<T> {
    fn or_not_found(self, what: &'static str) -> Result<T, ApiError>;
}

impl<T> OrNotFound<T> for Result<T, StoreError> {
    fn or_not_found(self, what: &'static str) -> Result<T, ApiError> {
        self.map_err(|error| match error {
            StoreError::NotFound => ApiError::NotFound(what),
            other => other.into(),
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            // The cause chain goes to the log, never to the client.
            let cause = match &self {
                ApiError::Internal(e) => format!("{e:#}"),
                other => other.to_string(),
            };
            tracing::error!(error = %cause, "request failed");
        }
        let body = ErrorBody {
            error: code.to_string(),
            detail: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        match self {
            ApiError::Unauthorized(_) => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RateLimited { retry_after_secs }
            | ApiError::TooManyFailures { retry_after_secs } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
