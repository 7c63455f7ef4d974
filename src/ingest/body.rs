//! What a request body means to templates: JSON as JSON, form fields (as Slack sends them) as an
//! object of strings, anything else as a string.

use serde_json::{Map, Value};

/// Why a body could not be read as its Content-Type says.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BodyError {
    #[error("request body is not valid JSON: {0}")]
    Json(String),
    #[error("request body is not valid form data: {0}")]
    Form(String),
    #[error("request body is not UTF-8 text")]
    NotText,
}

/// Parses `body` by its media type. JSON is read when the type says JSON (`application/json`,
/// `…+json`), when no type is given and the body parses, and when the body is a JSON object or
/// array whatever the type says: `curl -d '{"a":1}'` sends form-urlencoded, and no sender means
/// a form field named `{"a":1}`. Otherwise form-urlencoded becomes an object (Slack's
/// `payload=…` included), a field given twice becomes a list; other text stays a string. An
/// empty body is `null`.
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Value, BodyError> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    let media = content_type
        .and_then(|t| t.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase());
    match media.as_deref() {
        Some(t) if t == "application/json" || t.ends_with("+json") => {
            serde_json::from_slice(body).map_err(|e| BodyError::Json(e.to_string()))
        }
        None => Ok(serde_json::from_slice(body).unwrap_or_else(|_| text(body))),
        _ if let Some(json) = json_container(body) => Ok(json),
        Some("application/x-www-form-urlencoded") => form_fields(body),
        Some(_) => std::str::from_utf8(body)
            .map(|s| Value::String(s.to_string()))
            .map_err(|_| BodyError::NotText),
    }
}

/// `body` as JSON if it is an object or an array (it starts with `{` or `[` and parses).
fn json_container(body: &[u8]) -> Option<Value> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    matches!(first, b'{' | b'[')
        .then(|| serde_json::from_slice(body).ok())
        .flatten()
}

fn text(body: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(body).into_owned())
}

/// Form-urlencoded fields as an object of strings; a field given twice becomes a list.
pub fn form_fields(body: &[u8]) -> Result<Value, BodyError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(body).map_err(|e| BodyError::Form(e.to_string()))?;
    let mut fields = Map::new();
    for (key, value) in pairs {
        match fields.get_mut(&key) {
            Some(Value::Array(items)) => items.push(Value::String(value)),
            Some(first) => *first = Value::Array(vec![first.take(), Value::String(value)]),
            None => {
                fields.insert(key, Value::String(value));
            }
        }
    }
    Ok(Value::Object(fields))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_by_type() {
        let json_type = Some("application/json; charset=utf-8");
        assert_eq!(parse(json_type, br#"{"a":1}"#), Ok(json!({"a": 1})));
        assert!(matches!(parse(json_type, b"{"), Err(BodyError::Json(_))));
        assert_eq!(
            parse(
                Some("application/x-www-form-urlencoded"),
                b"command=%2Fweather&text=94070&tag=a&tag=b"
            ),
            Ok(json!({"command": "/weather", "text": "94070", "tag": ["a", "b"]}))
        );
        assert_eq!(parse(Some("text/plain"), b"hi"), Ok(json!("hi")));
        // What `curl -d` sends: form-urlencoded by default, JSON in fact.
        let form = Some("application/x-www-form-urlencoded");
        assert_eq!(parse(form, br#"{"hello":"x"}"#), Ok(json!({"hello": "x"})));
        assert_eq!(parse(Some("text/plain"), b" [1, 2]"), Ok(json!([1, 2])));
        assert_eq!(
            parse(form, b"payload=%7B%22a%22%3A1%7D"),
            Ok(json!({"payload": "{\"a\":1}"}))
        );
        assert_eq!(parse(form, b"{not json"), Ok(json!({"{not json": ""})));
        assert_eq!(
            parse(Some("text/plain"), b"{not json"),
            Ok(json!("{not json"))
        );
        assert_eq!(parse(None, br#"[1]"#), Ok(json!([1])));
        assert_eq!(parse(None, b"hello"), Ok(json!("hello")));
        assert_eq!(parse(json_type, b""), Ok(Value::Null));
    }
}
