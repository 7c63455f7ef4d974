//! Event types that tenants define beside the built-in catalogue, and the JSON Schemas that
//! check the `data` of their events.

use serde_json::Value;

use super::{Invalid, check_text, event_types};

/// Largest schema accepted, in bytes of JSON. Compiling and applying a schema costs about its
/// size; this keeps both small beside an event's own limit.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// Longest description of a type.
pub const MAX_DESCRIPTION: usize = 1_000;

/// Largest compiled form of one `pattern` / `patternProperties` regular expression. The `regex`
/// engine runs in time linear in the input; this bounds the memory of the automaton a hostile
/// pattern (`(a{100}){100}`) would build.
const MAX_REGEX_BYTES: usize = 1 << 20;

/// A type a company defined. `version` grows with every change (see [`CustomEventType::apply`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CustomEventType {
    pub company_id: String,
    pub name: String,
    pub description: Option<String>,
    /// The JSON Schema the `data` of its events must match; checked by [`EventSchema::compile`]
    /// before it is stored.
    pub schema: Option<Value>,
    pub version: i64,
    /// The user whose key created it.
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// Set when archived: no new publishes, subscriptions keep working.
    pub archived_at: Option<i64>,
}

/// What a create or update request sets; `None` leaves a field as it is, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct CustomTypeChanges {
    pub description: Option<Option<String>>,
    pub schema: Option<Option<Value>>,
    pub archived: Option<bool>,
}

impl CustomEventType {
    /// A new type named `name`, version 1. (A built-in name passes the checks here: refusing
    /// it is the caller's, as a conflict rather than a malformed name.)
    pub fn create(
        company_id: &str,
        name: &str,
        created_by: &str,
        changes: CustomTypeChanges,
        now: i64,
    ) -> Result<CustomEventType, Invalid> {
        event_types::validate_custom_name("name", name)?;
        let blank = CustomEventType {
            company_id: company_id.to_string(),
            name: name.to_string(),
            description: None,
            schema: None,
            version: 0,
            created_by: created_by.to_string(),
            created_at: now,
            updated_at: now,
            archived_at: None,
        };
        blank.apply(changes, now)
    }

    /// This type with `changes` applied, checked, as its next version.
    pub fn apply(&self, changes: CustomTypeChanges, now: i64) -> Result<CustomEventType, Invalid> {
        let mut next = self.clone();
        if let Some(description) = changes.description {
            if let Some(text) = &description {
                check_text("description", text, 0, MAX_DESCRIPTION)?;
            }
            next.description = description;
        }
        if let Some(schema) = changes.schema {
            if let Some(schema) = &schema {
                EventSchema::compile(schema)?;
            }
            next.schema = schema;
        }
        match changes.archived {
            Some(true) => next.archived_at = next.archived_at.or(Some(now)),
            Some(false) => next.archived_at = None,
            None => {}
        }
        next.version += 1;
        next.updated_at = now;
        Ok(next)
    }
}

/// A compiled JSON Schema for the `data` of events. Built only by [`EventSchema::compile`], so
/// holding one means the schema is valid, small, and refers to nothing outside itself.
pub struct EventSchema(jsonschema::Validator);

impl std::fmt::Debug for EventSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventSchema")
    }
}

impl EventSchema {
    /// Compiles `schema` (any draft the document names with `$schema`; 2020-12 when it names
    /// none). Refused, naming `schema`: more than [`MAX_SCHEMA_BYTES`], not a valid JSON Schema,
    /// a `$ref` to anything outside the document (nothing is ever fetched: an event's check must
    /// not wait on, or be steered by, another server), or a pattern the linear-time `regex`
    /// engine cannot run (backreferences, look-around) or that compiles too large.
    pub fn compile(schema: &Value) -> Result<EventSchema, Invalid> {
        let size = serde_json::to_vec(schema).map_or(usize::MAX, |bytes| bytes.len());
        if size > MAX_SCHEMA_BYTES {
            return Err(Invalid::new(
                "schema",
                format!("is {size} bytes of JSON; at most {MAX_SCHEMA_BYTES}"),
            ));
        }
        if !schema.is_object() && !schema.is_boolean() {
            return Err(Invalid::new(
                "schema",
                "must be a JSON Schema: an object (or true / false)",
            ));
        }
        expanded_size(schema).map_err(|message| Invalid::new("schema", message))?;
        jsonschema::options()
            .offline()
            .with_pattern_options(
                jsonschema::PatternOptions::regex()
                    .size_limit(MAX_REGEX_BYTES)
                    .dfa_size_limit(MAX_REGEX_BYTES),
            )
            .build(schema)
            .map(EventSchema)
            .map_err(|error| {
                Invalid::new(
                    "schema",
                    format!(
                        "is not a valid JSON Schema: {error} (at {})",
                        pointer(&error.schema_path().to_string())
                    ),
                )
            })
    }

    /// Checks `data` against the schema; the refusal names `field` (`data`, `events[3].data`)
    /// and the JSON pointer of the first value that fails.
    pub fn check(&self, field: &str, data: &Value) -> Result<(), Invalid> {
        self.0.validate(data).map_err(|error| {
            let at = error.instance_path().to_string();
            Invalid::new(
                field,
                format!(
                    "at {} (JSON pointer in data): {error}; the schema's rule is at {}",
                    pointer(&at),
                    pointer(&error.schema_path().to_string())
                ),
            )
        })
    }
}

/// Most JSON values a schema may hold with each `$ref` replaced by what it points at.
const MAX_EXPANDED_VALUES: usize = 20_000;

/// The size of `schema` with its references expanded, which bounds the cost of checking data
/// against it: each (expanded) subschema is applied at most once to each value of the data, so
/// the work is at most this size times the data's. References can break that bound two ways,
/// both refused here: recursion (`{"anyOf": [{"$ref": "#"}, {"$ref": "#"}]}` doubles the work
/// at each level of the data: 5 s for 12 levels of three branches, measured), and chains of
/// shared definitions whose expansion is exponential in the schema's length. So references
/// must be JSON pointers into the document itself (`#/$defs/price`), the document must not
/// change its base (`$id` only at the top), and there are no dynamic references.
fn expanded_size(schema: &Value) -> Result<usize, String> {
    struct Expansion<'a> {
        root: &'a Value,
        /// Expanded sizes of the pointers already measured.
        sizes: std::collections::HashMap<&'a str, usize>,
        /// The pointers being expanded now: meeting one again is recursion.
        open: Vec<&'a str>,
    }

    impl<'a> Expansion<'a> {
        fn size(&mut self, node: &'a Value, top: bool) -> Result<usize, String> {
            let mut size = 1usize;
            match node {
                Value::Array(items) => {
                    for item in items {
                        size = size.saturating_add(self.size(item, false)?);
                    }
                }
                Value::Object(map) => {
                    for keyword in ["$dynamicRef", "$recursiveRef"] {
                        if map.contains_key(keyword) {
                            return Err(format!("{keyword} is not supported: use \"$ref\""));
                        }
                    }
                    if !top && map.get("$id").is_some_and(Value::is_string) {
                        return Err("$id is allowed only at the top of the schema".into());
                    }
                    if let Some(Value::String(reference)) = map.get("$ref") {
                        size = size.saturating_add(self.referenced(reference)?);
                    }
                    for value in map.values() {
                        size = size.saturating_add(self.size(value, false)?);
                    }
                }
                _ => {}
            }
            if size > MAX_EXPANDED_VALUES {
                return Err(format!(
                    "is too large with its $refs expanded (over {MAX_EXPANDED_VALUES} values): \
                     checking each event would cost too much"
                ));
            }
            Ok(size)
        }

        fn referenced(&mut self, reference: &'a str) -> Result<usize, String> {
            let Some(pointer) = reference.strip_prefix('#') else {
                return Err(format!(
                    "$ref {reference:?} points outside the schema; only references into it \
                     (\"#/$defs/…\") are followed, nothing is fetched"
                ));
            };
            if !pointer.is_empty() && !pointer.starts_with('/') {
                return Err(format!(
                    "$ref {reference:?}: only JSON pointers (\"#/$defs/…\") are supported, not anchors"
                ));
            }
            if let Some(size) = self.sizes.get(pointer) {
                return Ok(*size);
            }
            if self.open.contains(&pointer) {
                return Err(format!(
                    "$ref {reference:?} is recursive: recursive schemas are not supported, since \
                     their cost can grow exponentially with the data"
                ));
            }
            let target = self
                .root
                .pointer(pointer)
                .ok_or_else(|| format!("$ref {reference:?} points at nothing in the schema"))?;
            self.open.push(pointer);
            let size = self.size(target, pointer.is_empty())?;
            self.open.pop();
            self.sizes.insert(pointer, size);
            Ok(size)
        }
    }

    Expansion {
        root: schema,
        sizes: std::collections::HashMap::new(),
        open: Vec::new(),
    }
    .size(schema, true)
}

/// A JSON pointer as people read it: the whole document is `/`, not the empty string.
fn pointer(path: &str) -> &str {
    if path.is_empty() { "/" } else { path }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn invoice_schema() -> Value {
        json!({
            "type": "object",
            "required": ["amount"],
            "properties": {
                "amount": {"type": "number", "minimum": 0},
                "lines": {"type": "array", "items": {"type": "object",
                    "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$"}}}}
            }
        })
    }

    #[test]
    fn data_is_checked_and_the_failure_names_its_pointer() {
        let schema = EventSchema::compile(&invoice_schema()).unwrap();
        assert!(schema.check("data", &json!({"amount": 3})).is_ok());
        let err = schema
            .check(
                "data",
                &json!({"amount": 1, "lines": [{"sku": "ABC-1"}, {"sku": "x"}]}),
            )
            .unwrap_err();
        assert_eq!(err.field, "data");
        assert!(err.message.contains("/lines/1/sku"), "{}", err.message);
        let err = schema.check("events[2].data", &json!({})).unwrap_err();
        assert_eq!(err.field, "events[2].data");
        assert!(err.message.contains("at / "), "{}", err.message);
    }

    #[test]
    fn invalid_remote_and_oversized_schemas_are_refused() {
        for bad in [
            json!({"type": "no-such-type"}),
            json!({"minimum": "zero"}),
            json!({"$ref": "https://example.com/schema.json"}),
            json!({"$ref": "file:///etc/passwd"}),
            json!({"type": "string", "pattern": "(a)\\1"}),
            json!({"type": "string", "pattern": "^(?=a)"}),
            json!({"type": "string", "pattern": "(a{1000}){1000}"}),
            json!("a string"),
            json!({"enum": ["x".repeat(MAX_SCHEMA_BYTES)]}),
            json!({"anyOf": [{"$ref": "#"}, {"properties": {"a": {"$ref": "#"}}}]}),
            json!({"$defs": {"a": {"items": {"$ref": "#/$defs/b"}}, "b": {"$ref": "#/$defs/a"}}}),
            json!({"$defs": {"a": {"$anchor": "a"}}, "$ref": "#a"}),
            json!({"$ref": "other.json"}),
            json!({"$ref": "#/$defs/missing"}),
            json!({"$defs": {"a": {"$id": "https://example.com/a", "$ref": "#"}}}),
            json!({"$dynamicRef": "#"}),
            doubling_chain(16),
        ] {
            let err = EventSchema::compile(&bad).unwrap_err();
            assert_eq!(err.field, "schema", "{bad}");
        }
        let local = json!({"$defs": {"n": {"type": "integer"}}, "properties": {"n": {"$ref": "#/$defs/n"}}});
        assert!(EventSchema::compile(&local).is_ok());
        assert!(EventSchema::compile(&doubling_chain(8)).is_ok());
    }

    /// `$defs` d0 … dn where each uses the next twice: 2^n subschemas once expanded.
    fn doubling_chain(n: usize) -> Value {
        let mut defs = serde_json::Map::new();
        for i in 0..n {
            let next = format!("#/$defs/d{}", i + 1);
            defs.insert(
                format!("d{i}"),
                json!({"anyOf": [{"$ref": next}, {"properties": {"a": {"$ref": next}}}]}),
            );
        }
        defs.insert(format!("d{n}"), json!({"type": "integer"}));
        json!({"$defs": defs, "$ref": "#/$defs/d0"})
    }

    #[test]
    fn changes_bump_the_version_and_archive_once() {
        let created = CustomEventType::create(
            "acme",
            "billing.invoice.paid",
            "alice",
            CustomTypeChanges {
                schema: Some(Some(invoice_schema())),
                ..Default::default()
            },
            10,
        )
        .unwrap();
        assert_eq!((created.version, created.created_by.as_str()), (1, "alice"));
        let archived = created
            .apply(
                CustomTypeChanges {
                    archived: Some(true),
                    ..Default::default()
                },
                20,
            )
            .unwrap();
        assert_eq!((archived.version, archived.archived_at), (2, Some(20)));
        let again = archived
            .apply(
                CustomTypeChanges {
                    archived: Some(true),
                    description: Some(Some("paid".into())),
                    ..Default::default()
                },
                30,
            )
            .unwrap();
        assert_eq!(again.archived_at, Some(20));
        let bad = created.apply(
            CustomTypeChanges {
                schema: Some(Some(json!({"type": 1}))),
                ..Default::default()
            },
            40,
        );
        assert_eq!(bad.unwrap_err().field, "schema");
    }
}
