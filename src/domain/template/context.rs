//! What a template sees. An incoming request's context is built from its parts (the payload
//! borrowed, not copied) and converted for MiniJinja once, however many templates and routing
//! rules read it: the payload converted a single time and shared by its top-level keys and
//! `data`. The JSON form, which a template worker needs, is made only when one does. Building
//! the JSON context, copying the payload twice, and converting it all again for each render was
//! about 8% of an incoming request's CPU (docs/benchmarks.md).

use std::{
    borrow::Cow,
    sync::{Arc, OnceLock},
};

use minijinja::value::Value as MjValue;
use serde_json::{Map, Value};

use super::cost::{CHEAP_WORK_BYTES, weight};

/// The names a context sets itself; they win over payload keys of the same name.
const RESERVED: [&str; 4] = ["data", "headers", "query", "webhook"];

/// A rendering context; see [`Context::request`] for its variables.
pub struct Context<'a> {
    /// `None` for a context given whole, as JSON (held in `json` from the start).
    request: Option<Request<'a>>,
    json: OnceLock<Value>,
    jinja: OnceLock<MjValue>,
    weight: OnceLock<u64>,
}

/// The parts of a request's context.
struct Request<'a> {
    payload: Cow<'a, Value>,
    headers: Value,
    query: Value,
    webhook: Value,
}

impl From<Value> for Context<'static> {
    /// A context whose keys (when it is an object) are the variables.
    fn from(context: Value) -> Self {
        Context {
            request: None,
            json: OnceLock::from(context),
            jinja: OnceLock::new(),
            weight: OnceLock::new(),
        }
    }
}

impl<'a> Context<'a> {
    /// The standard context of a request.
    ///
    /// Variables: every top-level key of `payload` (when it is an object), so
    /// `{{ lead_name }}` works; plus `data` (always the whole payload, of any JSON
    /// type: `{{ data | tojson }}` echoes it, `{{ data.text }}` reads its field),
    /// `headers`, `query` and `webhook`. These four win over payload keys of the
    /// same name. A payload's own `data` object is reachable both as `data.data` and
    /// through `data`: `data.key` is the payload's `key`, else its `data.key` (see
    /// [`PayloadData`]), so the spec's `{"message", "data": {"key"}}` body serves
    /// `{{ data.key }}` as well as `{{ data | tojson }}`.
    pub fn request(payload: Cow<'a, Value>, headers: Value, query: Value, webhook: Value) -> Self {
        Context {
            request: Some(Request {
                payload,
                headers,
                query,
                webhook,
            }),
            json: OnceLock::new(),
            jinja: OnceLock::new(),
            weight: OnceLock::new(),
        }
    }

    /// The context as one JSON object, as a template worker gets it.
    pub fn json(&self) -> &Value {
        // A context given whole holds its JSON from the start.
        (self.json).get_or_init(|| self.request.as_ref().map_or(Value::Null, Request::json))
    }

    /// The context as MiniJinja reads it.
    pub(super) fn jinja(&self) -> &MjValue {
        self.jinja.get_or_init(|| match &self.request {
            Some(request) => request.jinja(),
            None => match self.json() {
                Value::Object(map) => MjValue::from_pairs(map.iter().map(|(key, value)| {
                    let converted = match key.as_str() {
                        "data" => data(value, to_jinja(value)),
                        _ => to_jinja(value),
                    };
                    (key.as_str(), converted)
                })),
                other => to_jinja(other),
            },
        })
    }

    /// What reading the whole context costs a render, counted until it passes the bound of a
    /// cheap render (see `cost`): a request's payload counts twice, as its keys and as `data`.
    pub(super) fn weight(&self) -> u64 {
        *self.weight.get_or_init(|| match &self.request {
            Some(request) => [request.payload.as_ref()]
                .into_iter()
                .chain(request.parts())
                .map(|part| weight(part, CHEAP_WORK_BYTES))
                .fold(0, u64::saturating_add),
            None => weight(self.json(), CHEAP_WORK_BYTES),
        })
    }
}

impl Request<'_> {
    /// The values of [`RESERVED`], in its order.
    fn parts(&self) -> [&Value; 4] {
        [&self.payload, &self.headers, &self.query, &self.webhook]
    }

    fn json(&self) -> Value {
        let mut context = match self.payload.as_ref() {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        for (name, value) in RESERVED.into_iter().zip(self.parts()) {
            context.insert(name.into(), value.clone());
        }
        Value::Object(context)
    }

    /// The payload converted once: its top-level keys are the converted payload's items.
    fn jinja(&self) -> MjValue {
        let converted = to_jinja(&self.payload);
        let own: Vec<(&str, MjValue)> = match self.payload.as_ref() {
            Value::Object(map) => map
                .keys()
                .filter(|key| !RESERVED.contains(&key.as_str()))
                .map(|key| (key.as_str(), converted.get_attr(key).unwrap_or_default()))
                .collect(),
            _ => Vec::new(),
        };
        let set = [
            ("data", data(&self.payload, converted)),
            ("headers", to_jinja(&self.headers)),
            ("query", to_jinja(&self.query)),
            ("webhook", to_jinja(&self.webhook)),
        ];
        MjValue::from_pairs(own.into_iter().chain(set))
    }
}

/// `data`, the payload converted: a [`PayloadData`] when the payload has a `data` object of its
/// own.
fn data(payload: &Value, converted: MjValue) -> MjValue {
    match payload {
        Value::Object(map) if map.get("data").is_some_and(Value::is_object) => {
            MjValue::from_object(PayloadData {
                keys: map.keys().map(|k| MjValue::from(k.as_str())).collect(),
                own: converted.get_attr("data").unwrap_or_default(),
                payload: converted,
            })
        }
        _ => converted,
    }
}

/// The payload as `data`, when the payload has a `data` object of its own: it is the payload
/// (its keys, its JSON, its length), and a key the payload lacks is looked up in the payload's
/// own `data`. The payload's keys win.
#[derive(Debug)]
struct PayloadData {
    keys: Vec<MjValue>,
    payload: MjValue,
    own: MjValue,
}

impl minijinja::value::Object for PayloadData {
    fn get_value(self: &Arc<Self>, key: &MjValue) -> Option<MjValue> {
        [&self.payload, &self.own]
            .into_iter()
            .filter_map(|map| map.get_item(key).ok())
            .find(|value| !value.is_undefined())
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        minijinja::value::Enumerator::Values(self.keys.clone())
    }
}

fn to_jinja(value: &Value) -> MjValue {
    match value {
        Value::Null => MjValue::from(()),
        Value::Bool(b) => MjValue::from(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => MjValue::from(i),
            (None, Some(u), _) => MjValue::from(u),
            (.., f) => MjValue::from(f),
        },
        Value::String(s) => MjValue::from(s.as_str()),
        Value::Array(items) => items.iter().map(to_jinja).collect(),
        Value::Object(map) => {
            MjValue::from_pairs(map.iter().map(|(k, v)| (k.as_str(), to_jinja(v))))
        }
    }
}
