//! Property tests (proptest) over everything that parses or evaluates untrusted input: templates
//! and routing conditions, filters, event-type patterns, event schemas and the data they check,
//! IP allowlists and forwarded-for chains, request bodies and signature headers. Each property
//! is "no panic, no hang, a bounded answer"; a failure proptest finds is shrunk to a small case,
//! which then belongs in a plain unit test.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::domain::{
    custom_types::EventSchema,
    event::Event,
    event_types,
    net::{IpAllowlist, client_ip},
    outgoing::{OutgoingChanges, OutgoingSettings},
    signature::SourceVerification,
    template::{MAX_OUTPUT_BYTES, Template},
};
use crate::ingest::body;

/// JSON values a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Schema-shaped JSON: objects whose keys are JSON Schema keywords (and a property name),
/// with references into the document, so generation reaches the compiler's and the bounds'
/// deeper paths (recursion, shared definitions, patterns) rather than only unknown keywords.
fn schema_like() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        (0i64..5).prop_map(|n| json!(n)),
        prop::sample::select(vec![
            "#",
            "#/$defs/a",
            "#/$defs/b",
            "#/properties/a",
            "#a",
            "x.json",
            "string",
            "object",
            "array",
            "integer",
            "^[a-z]+$",
            "(a|aa)*b",
            "(a)\\1",
            "a",
        ])
        .prop_map(|s| Value::String(s.to_string())),
    ];
    let keyword = prop::sample::select(vec![
        "type",
        "anyOf",
        "allOf",
        "oneOf",
        "not",
        "items",
        "properties",
        "required",
        "$ref",
        "$defs",
        "a",
        "b",
        "pattern",
        "minimum",
        "enum",
        "const",
        "additionalProperties",
        "unevaluatedProperties",
        "if",
        "then",
        "else",
        "contains",
        "uniqueItems",
        "$id",
        "$dynamicRef",
    ]);
    leaf.prop_recursive(4, 40, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keyword.clone(), inner, 0..4).prop_map(|m| {
                Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

/// Template sources stitched from Jinja fragments, so generation reaches the parser's and the
/// renderer's deeper paths rather than stopping at the first stray character.
fn jinja_source() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        Just("{{ ".to_string()),
        Just(" }}".to_string()),
        Just("{% ".to_string()),
        Just(" %}".to_string()),
        Just("for x in range(".to_string()),
        Just("endfor".to_string()),
        Just("if ".to_string()),
        Just("else".to_string()),
        Just("endif".to_string()),
        Just(" | ".to_string()),
        Just("default('d')".to_string()),
        Just("tojson".to_string()),
        Just("title".to_string()),
        Just(" contains ".to_string()),
        Just(" in ".to_string()),
        Just(" ~ ".to_string()),
        Just(" * ".to_string()),
        Just("data".to_string()),
        Just("x".to_string()),
        Just("loop.index".to_string()),
        Just(")".to_string()),
        Just("(".to_string()),
        Just("'a'".to_string()),
        Just("\"".to_string()),
        (0u32..100_000).prop_map(|n| n.to_string()),
        "[a-z.{}%| ]{0,6}",
    ];
    prop::collection::vec(fragment, 0..24).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn templates_compile_or_refuse_and_render_bounded(source in jinja_source(), payload in json_value()) {
        let Ok(template) = Template::compile_text(&source) else { return Ok(()) };
        let context = json!({"data": payload, "x": [1, 2, 3]}).into();
        let started = Instant::now();
        if let Ok(output) = template.render(&context) {
            prop_assert!(output.to_string().len() <= 2 * MAX_OUTPUT_BYTES);
        }
        prop_assert!(started.elapsed() < Duration::from_secs(2), "render took {:?}", started.elapsed());
    }

    #[test]
    fn object_templates_and_conditions_never_panic(source in jinja_source(), payload in json_value()) {
        if let Ok(template) = Template::compile_object(&json!({"a": source, "b": [source, 1]})) {
            let _ = template.render(&json!({"data": payload}).into());
        }
        if let Ok(condition) = Template::compile_condition(&source) {
            let _ = condition.matches(&json!({"data": payload}).into());
        }
    }

    #[test]
    fn filters_never_panic_and_a_field_always_matches_itself(
        filters in prop::collection::btree_map("[a-z.0-9]{1,8}", json_value(), 0..4),
        data in json_value(),
        key in "[a-z]{1,4}",
        value in json_value(),
    ) {
        let filters: Map<String, Value> = filters.into_iter().collect();
        if let Ok(settings) = OutgoingSettings::create(OutgoingChanges {
            name: Some("f".into()),
            url: Some("https://example.com/hook".into()),
            filters: Some(filters),
            ..Default::default()
        }) {
            let _ = settings.wants(&Event::sample("chat.completed", data));
        }
        // A filter on a field with exactly that field's value matches (lists mean "one of").
        let wanted = match &value { Value::Array(_) => json!([value.clone()]), other => other.clone() };
        let settings = OutgoingSettings::create(OutgoingChanges {
            name: Some("f".into()),
            url: Some("https://example.com/hook".into()),
            filters: Some([(format!("data.{key}"), wanted)].into_iter().collect()),
            ..Default::default()
        });
        if let Ok(settings) = settings {
            let data = json!({ key: value });
            prop_assert!(settings.wants(&Event::sample("chat.completed", data)));
        }
    }

    #[test]
    fn event_schemas_compile_or_refuse_and_check_quickly(schema in schema_like(), data in json_value()) {
        if let Ok(compiled) = EventSchema::compile(&schema) {
            let started = Instant::now();
            let _ = compiled.check("data", &data);
            prop_assert!(started.elapsed() < Duration::from_secs(1), "{schema} on {data}");
        }
    }

    #[test]
    fn event_type_patterns_never_panic(pattern in "[a-z.*]{0,20}", event_type in "[a-z.]{0,20}") {
        let patterns = [pattern.clone()];
        let _ = event_types::validate_patterns("p", &patterns);
        let _ = event_types::check_known_patterns("p", &patterns, std::slice::from_ref(&event_type));
        let _ = event_types::validate_custom_name("n", &pattern);
        let _ = event_types::matches(&pattern, &event_type);
        prop_assert!(event_types::matches("*", &event_type));
    }

    #[test]
    fn allowlists_and_forwarded_chains_never_panic(
        entries in prop::collection::vec("[0-9a-f.:/]{0,20}", 0..4),
        chain in "[0-9a-f.:, ]{0,60}",
        peer in any::<std::net::IpAddr>(),
    ) {
        if let Ok(list) = IpAllowlist::parse(&entries) {
            let _ = list.allows(peer);
        }
        let trusted = ["127.0.0.0/8".parse().unwrap()];
        let _ = client_ip(peer, Some(&chain), &trusted);
    }

    #[test]
    fn bodies_parse_or_refuse(
        content_type in prop::option::of("[a-z/+;= -]{0,30}"),
        bytes in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let _ = body::parse(content_type.as_deref(), &bytes);
        let _ = body::parse(Some("application/x-www-form-urlencoded"), &bytes);
        let _ = body::parse(Some("application/json"), &bytes);
    }

    #[test]
    fn signature_headers_never_panic(
        scheme in prop_oneof![Just("github"), Just("stripe"), Just("slack"), Just("standard_webhooks"), Just("hmac_sha256")],
        header in "[ -~]{0,80}",
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let setting = json!({"type": scheme, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "header": "x-sig"});
        let Ok(verification) = serde_json::from_value::<SourceVerification>(setting) else { return Ok(()) };
        let mut headers = http::HeaderMap::new();
        if let Ok(value) = http::HeaderValue::from_str(&header) {
            for name in ["x-hub-signature-256", "stripe-signature", "x-slack-signature",
                         "x-slack-request-timestamp", "webhook-id", "webhook-timestamp",
                         "webhook-signature", "x-sig"] {
                headers.insert(name, value.clone());
            }
        }
        prop_assert!(verification.verify(&headers, &body, 1_700_000_000).is_err());
    }
}
