//! Request extractors whose failures answer in our error format and name the field at fault.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
};
use serde::{Deserialize, Deserializer, de::DeserializeOwned};

use super::{AppState, error::ApiError};
use crate::{domain::Invalid, ingest::read_bounded};

/// A JSON body. Malformed JSON is a 400; well-formed JSON of the wrong shape is a 422 naming the
/// field path; a body over the limit is a 413. The Content-Type header is not required, since
/// `curl -d` users often forget it.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = read_body(request, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// The raw body, bounded in size (413) and in time (408) as the receiving URLs' bodies are.
pub async fn read_body(request: Request, state: &AppState) -> Result<Bytes, ApiError> {
    read_bounded(request.into_body(), state.config.max_body_bytes)
        .await
        .map_err(ApiError::from)
}

/// Parses a request body that must be a JSON object into `T`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::MalformedJson(format!("request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(Invalid::new("body", "must be a JSON object").into());
    }
    serde_path_to_error::deserialize(value).map_err(|error| {
        // A missing required field has the root as its path; the message names the field.
        let field = match error.path().to_string() {
            root if root == "." => "body".to_string(),
            path => path,
        };
        Invalid::new(field, error.into_inner().to_string()).into()
    })
}

/// For nullable fields of a partial update: absent → `None`, `null` → `Some(None)`.
pub fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// An identifier given as a string or a number (the spec writes `"agent_id": 1` and
/// `"agent_id": "sales_agent"`); kept as a string.
pub fn ident<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<String>>, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string or an integer")
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    deserializer.deserialize_any(Visitor).map(Some)
}

/// Like [`ident`], for fields that are not nullable.
pub fn required_ident<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    match ident(deserializer)? {
        Some(Some(value)) => Ok(Some(value)),
        _ => Err(serde::de::Error::custom(
            "must be a string or an integer, not null",
        )),
    }
}

/// A JSON body that may be absent: an empty body gives `T::default()`.
pub struct OptionalJsonBody<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = read_body(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        parse_json(&bytes).map(OptionalJsonBody)
    }
}
