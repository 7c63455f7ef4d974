//! The dashboard's only way to read or change anything: calls to the JSON API, sent through an
//! in-process copy of its router with the signed-in key as the bearer token. Every rule (scopes,
//! validation, tenancy) is therefore the API's own, applied once.

use axum::{
    Router,
    body::Body,
    http::{HeaderValue, Method, Request, StatusCode, header},
    response::Response,
};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// What the API answered when it did not succeed: its `{"error", "detail"}` body.
#[derive(Debug, Clone)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub detail: String,
}

impl ApiFailure {
    /// The form field a validation message names: the API's details read `field: message`,
    /// and nested names (`event_types[0]`, `endpoint.url`) belong to their top-level field.
    pub fn field(&self) -> Option<&str> {
        if self.status != StatusCode::UNPROCESSABLE_ENTITY {
            return None;
        }
        let (name, _) = self.detail.split_once(": ")?;
        name.split(['[', '.']).next()
    }

    /// The message without the field name, for showing beside that field.
    pub fn message(&self) -> &str {
        match self.field() {
            Some(_) => self.detail.split_once(": ").map_or("", |(_, m)| m),
            None => &self.detail,
        }
    }
}

/// The API, called as one signed-in user.
#[derive(Clone)]
pub struct Backend {
    api: Router,
    key: String,
    /// The browser's Host, so answers that build URLs (receiving URLs) name the right host.
    host: Option<HeaderValue>,
}

impl Backend {
    pub fn new(api: Router, key: String, host: Option<HeaderValue>) -> Self {
        Backend { api, key, host }
    }

    /// Sends one call and returns the raw answer (the agent stream is passed through as is).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        extra: &[(header::HeaderName, HeaderValue)],
    ) -> Response {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.key));
        if let Some(host) = &self.host {
            request = request.header(header::HOST, host);
        }
        for (name, value) in extra {
            request = request.header(name, value);
        }
        let request = match body {
            Some(json) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(json.to_string())),
            None => request.body(Body::empty()),
        }
        .expect("a request built from valid parts");
        match self.api.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// Sends one call and reads its JSON answer (`Null` for an empty one).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiFailure> {
        let response = self.send(method, path, body, &[]).await;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(json);
        }
        Err(ApiFailure {
            status,
            detail: json["detail"]
                .as_str()
                .map_or_else(|| format!("the API answered {status}"), str::to_string),
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, ApiFailure> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ApiFailure> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, ApiFailure> {
        self.call(Method::PUT, path, Some(body)).await
    }
}

/// Percent-encodes one path segment or query value (ids and names come from users).
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(status: StatusCode, detail: &str) -> ApiFailure {
        ApiFailure {
            status,
            detail: detail.into(),
        }
    }

    #[test]
    fn a_validation_message_belongs_to_the_top_level_field_it_names() {
        let nested = failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            "event_types[0]: unknown type",
        );
        assert_eq!(nested.field(), Some("event_types"));
        assert_eq!(nested.message(), "unknown type");
        let dotted = failure(StatusCode::UNPROCESSABLE_ENTITY, "endpoint.url: refused");
        assert_eq!(dotted.field(), Some("endpoint"));
    }

    #[test]
    fn other_failures_name_no_field_and_keep_their_whole_detail() {
        let missing = failure(StatusCode::NOT_FOUND, "outgoing webhook not found");
        assert_eq!(missing.field(), None);
        assert_eq!(missing.message(), "outgoing webhook not found");
        let scope = failure(StatusCode::FORBIDDEN, "scope: webhooks:write");
        assert_eq!(scope.field(), None, "only validation errors name fields");
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode("sales agent/1"), "sales%20agent%2F1");
        assert_eq!(encode("01936c1e-ab_c.~"), "01936c1e-ab_c.~");
    }
}
