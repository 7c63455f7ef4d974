//! Request extractors whose failures answer in our error format and name the field at fault.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, RawPathParams, Request, rejection::PathRejection},
    http::request::Parts,
};
use serde::{Deserialize, Deserializer, de::DeserializeOwned};
use serde_json::Value;

use super::{AppState, error::ApiError};
use crate::{
    domain::{Invalid, tenant::Tenant},
    ingest::read_bounded,
};

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
    // JSON can carry U+0000 only as the escape `\u0000` (a raw control character is invalid
    // inside a string), so the walk, which builds a path per item, runs only when it is there.
    if bytes.windows(6).any(|w| w == br"\u0000") {
        find_nul(&value, "")?;
    }
    serde_path_to_error::deserialize(value).map_err(|error| misfit(error, "body"))
}

/// A value of the wrong shape, named by its path; `whole` when the fault is not in one field
/// (e.g. a missing required field, which the message names).
fn misfit<E: std::fmt::Display>(error: serde_path_to_error::Error<E>, whole: &str) -> ApiError {
    let field = match error.path().to_string() {
        root if root == "." => whole.to_string(),
        path => path,
    };
    Invalid::new(field, error.into_inner().to_string()).into()
}

/// For nullable fields of a partial update: absent → `None`, `null` → `Some(None)`.
pub fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A field that may be left out but not sent as `null`: it has no empty value to clear to, so
/// a `null` is a mistake to point out, not a silent "unchanged".
pub fn not_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    match Option::<T>::deserialize(deserializer)? {
        Some(value) => Ok(Some(value)),
        None => Err(serde::de::Error::custom(
            "may not be null: it cannot be cleared (leave it out to keep its value)",
        )),
    }
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

/// Why U+0000 is refused everywhere in API input: PostgreSQL text cannot hold it (a 500 there,
/// while SQLite would keep it), and no name, id or setting means anything with it.
const NUL_MESSAGE: &str = "must not contain the NUL character (U+0000)";

/// Refuses U+0000 in `text`, naming `field`.
fn refuse_nul(field: &str, text: &str) -> Result<(), Invalid> {
    match text.contains('\0') {
        true => Err(Invalid::new(field, NUL_MESSAGE)),
        false => Ok(()),
    }
}

/// Finds U+0000 in any string or key of a JSON value, naming its path as serde_path_to_error
/// does (`name`, `headers.X-Foo`, `event_types[0]`); `path` is where `value` sits.
fn find_nul(value: &Value, path: &str) -> Result<(), Invalid> {
    let at = |key: &str| match path {
        "" => key.to_string(),
        _ => format!("{path}.{key}"),
    };
    match value {
        Value::String(text) => refuse_nul(path, text),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| find_nul(item, &format!("{path}[{i}]"))),
        Value::Object(fields) => fields.iter().try_for_each(|(key, item)| {
            // A bad key is named by where it stands, in the escaped form JSON gave it.
            refuse_nul(&at(&key.escape_debug().to_string()), key)?;
            find_nul(item, &at(key))
        }),
        _ => Ok(()),
    }
}

/// Path parameters. Any failure (a segment that is not UTF-8 once percent-decoded, a value of
/// the wrong type, U+0000) is a 422 naming the parameter, in our error format.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let value = axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map_err(path_rejection)?;
        // Decoding already succeeded above, so the raw parameters can be read.
        if let Ok(raw) = RawPathParams::from_request_parts(parts, state).await {
            for (key, text) in &raw {
                refuse_nul(key, text)?;
            }
        }
        Ok(Path(value.0))
    }
}

/// axum's reason, with the parameter it concerns where axum knows it.
fn path_rejection(rejection: PathRejection) -> ApiError {
    use axum::extract::path::ErrorKind;
    let PathRejection::FailedToDeserializePathParams(failure) = rejection else {
        // No parameters at all: a route wired to the wrong extractor, our mistake.
        return ApiError::Internal(anyhow::anyhow!("path parameters: {rejection}"));
    };
    let (field, message) = match failure.kind() {
        ErrorKind::InvalidUtf8InPathParam { key } => {
            (key.clone(), "is not UTF-8 once percent-decoded".to_string())
        }
        ErrorKind::ParseErrorAtKey {
            key, expected_type, ..
        } => (key.clone(), format!("must be a {expected_type}")),
        ErrorKind::DeserializeError { key, message, .. } => (key.clone(), message.clone()),
        other => ("path".to_string(), other.to_string()),
    };
    Invalid::new(field, message).into()
}

/// The query string. A value of the wrong type, a repeated single-valued parameter or U+0000 is
/// a 422 naming the parameter, in our error format.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default().as_bytes();
        for (key, value) in form_urlencoded::parse(query) {
            refuse_nul(&key.escape_debug().to_string(), &key)?;
            refuse_nul(&key, &value)?;
        }
        let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query));
        serde_path_to_error::deserialize(deserializer)
            .map(Query)
            .map_err(|error| misfit(error, "query"))
    }
}

/// A turn to build a large answer (see [`crate::state::LargeAnswers`]), held by the handler
/// until its answer is made: taken once the caller's key is checked, for its company; none
/// within the wait is a 503.
pub struct LargeAnswer {
    _turn: crate::state::LargeTurn,
}

impl LargeAnswer {
    pub async fn take(state: &AppState, tenant: &Tenant) -> Result<Self, ApiError> {
        match state.large_answers.turn(&tenant.company_id).await {
            Some(turn) => Ok(LargeAnswer { _turn: turn }),
            None => Err(ApiError::Overloaded(
                "every turn of this node to build a large answer is taken".into(),
            )),
        }
    }
}
