//! Templates that try to take the node down: every place a template runs (preview, receive,
//! routing, outgoing payloads) answers "too much work" within the sandbox's limits, and the node
//! keeps answering meanwhile.

use std::time::{Duration, Instant};

use hookd::{
    domain::template::Template,
    sandbox::{Sandbox, SandboxError, SandboxSettings},
};
use proptest::{prelude::*, test_runner::TestRunner};
use serde_json::json;

use crate::both_backends;
use crate::helpers::{Backend, spawn_app_with};
use crate::receiver::Receiver;
use crate::receiving::{create_hook, inbox, post_json};

both_backends!(
    template_bombs_get_a_422_quickly_while_the_node_keeps_answering,
    saved_template_bombs_are_refused_wherever_they_run,
    unknown_filters_are_refused_at_save_and_in_preview,
);

/// Each did, before the sandbox (or, the last, before `domain::template`'s fold check), hang a
/// runtime thread, or grow without bound, or both.
const BOMBS: &[&str] = &[
    "{% set ns = namespace(x=[1]) %}{% for i in range(34) %}{% set ns.x = ns.x + ns.x %}{% endfor %}{{ ns.x | length }}",
    "{{ [1] * 100000000 }}",
    "{{ [[1] * 10000] * 10000 }}",
    "{{ ([1] * 90000000) | tojson | length }}",
    "{{ ([1] * 90000000) | list | length }}",
    // Folded while compiling: it compared 10^8 items before any render began.
    "{{ ([1] * 100000000) == ([1] * 100000000) }}",
];

/// The production default, not the suite's generous one: the point is how fast a bomb ends.
const TIMEOUT_MS: u64 = 250;

fn is_too_much_work(detail: &str) -> bool {
    detail.contains("too much work") || detail.contains("output larger than")
}

async fn template_bombs_get_a_422_quickly_while_the_node_keeps_answering(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.template_timeout_ms = Some(TIMEOUT_MS as i64)).await;
    // Only `webhooks:read`: previewing is all such a key can do, and enough to try.
    let owner = app.key_for("user-1", "company-1", &[]).await;
    let hook = create_hook(&app, &owner, json!({"agent_id": "a"})).await;
    let reader = app.key_for("user-1", "company-1", &["webhooks:read"]).await;
    let path = format!("/api/webhooks/incoming/{}/preview", hook.id);
    let health = {
        let (client, url) = (app.client.clone(), format!("{}/healthz", app.base));
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            for _ in 0..40 {
                let started = Instant::now();
                let status = client.get(&url).send().await.unwrap().status();
                assert_eq!(status, 200);
                slowest = slowest.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            slowest
        })
    };
    let attacks = BOMBS.iter().chain(BOMBS).map(|bomb| {
        let (app, path, reader) = (&app, &path, &reader);
        async move {
            let started = Instant::now();
            let body = json!({"payload": {}, "template": bomb});
            let detail = app
                .post(path, reader, &body)
                .await
                .expect_error(422, "validation_error");
            (bomb, detail, started.elapsed())
        }
    });
    for (bomb, detail, took) in futures_util::future::join_all(attacks).await {
        assert!(is_too_much_work(&detail), "{bomb}: {detail}");
        assert!(detail.starts_with("transform_template"), "{detail}");
        // Ten bombs share two workers at 250 ms each; what matters is that none runs on.
        assert!(took < Duration::from_secs(15), "{bomb} took {took:?}");
    }
    // 16,000 terms (64 KiB) overflowed the compiler's stack, which aborted the node.
    let deep = format!("{{{{ x{} }}}}", " + 1".repeat(16_000));
    let body = json!({"payload": {}, "template": deep});
    let detail = app
        .post(&path, &reader, &body)
        .await
        .expect_error(422, "validation_error");
    assert!(detail.contains("expression too deep"), "{detail}");
    let slowest = health.await.unwrap();
    assert!(slowest < Duration::from_secs(1), "healthz took {slowest:?}");
    // The workers that were killed are replaced: ordinary renders go on working.
    let body = json!({"payload": {"a": 2}, "template": "{{ a * 21 }}"});
    let out = app.post(&path, &reader, &body).await.expect(200);
    assert_eq!(out["output"], 42);
}

async fn saved_template_bombs_are_refused_wherever_they_run(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.template_timeout_ms = Some(TIMEOUT_MS as i64)).await;
    let key = app.tenant_key().await;
    let bomb = BOMBS[0];
    let transform = create_hook(
        &app,
        &key,
        json!({"agent_id": "a", "transform_template": bomb}),
    )
    .await;
    let detail = post_json(&app, &transform, &json!({}))
        .await
        .expect_error(422, "validation_error");
    assert!(detail.starts_with("transform_template"), "{detail}");
    assert!(is_too_much_work(&detail), "{detail}");
    // Made of constants, the compiler would build it while saving: refused there.
    let constant = "(([1] * 90000000) | list | length) > 0";
    let routes =
        json!({"name": "r", "agent_id": "a", "routes": [{"when": constant, "agent_id": "b"}]});
    let detail = app
        .post("/api/webhooks/incoming", &key, &routes)
        .await
        .expect_error(422, "validation_error");
    assert!(detail.starts_with("routes[0].when"), "{detail}");
    assert!(is_too_much_work(&detail), "{detail}");
    // Made of the payload's values, only a render can find out.
    let condition = "(([1] * n) | list | length) > 0";
    let routed = create_hook(
        &app,
        &key,
        json!({"agent_id": "a", "routes": [{"when": condition, "agent_id": "b"}]}),
    )
    .await;
    let detail = post_json(&app, &routed, &json!({"n": 90_000_000}))
        .await
        .expect_error(422, "validation_error");
    assert!(detail.starts_with("routes[0].when"), "{detail}");
    assert!(inbox(&app, &key, "a").await.is_empty());
    assert!(inbox(&app, &key, "b").await.is_empty());

    let receiver = Receiver::start().await;
    let created = app
        .post(
            "/api/webhooks/outgoing",
            &key,
            &json!({"url": receiver.url, "payload_template": bomb}),
        )
        .await
        .expect(201);
    let id = created["id"].as_str().unwrap();
    let answer = app
        .post(
            &format!("/api/webhooks/outgoing/{id}/test"),
            &key,
            &json!({}),
        )
        .await
        .expect(200);
    assert_eq!(answer["success"], false);
    let error = answer["error"].as_str().unwrap();
    assert!(error.starts_with("payload_template: "), "{error}");
    assert!(is_too_much_work(error), "{error}");
    assert_eq!(receiver.count(), 0);
}

async fn unknown_filters_are_refused_at_save_and_in_preview(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let key = app.tenant_key().await;
    let bad = "{{ x | nosuchfilter }}";
    let attempts = [
        (
            "/api/webhooks/incoming",
            json!({"name": "t", "agent_id": "a", "transform_template": bad}),
            "transform_template",
        ),
        (
            "/api/webhooks/incoming",
            json!({"name": "o", "agent_id": "a", "transform_template": {"m": bad}}),
            "payload_transformation.m",
        ),
        (
            "/api/webhooks/incoming",
            json!({"name": "r", "agent_id": "a", "routes": [{"when": "x | nope", "agent_id": "b"}]}),
            "routes[0].when",
        ),
        (
            "/api/webhooks/outgoing",
            json!({"url": "http://127.0.0.1:9/x", "payload_template": bad}),
            "payload_template",
        ),
    ];
    for (path, body, field) in attempts {
        let detail = app
            .post(path, &key, &body)
            .await
            .expect_error(422, "validation_error");
        assert!(detail.starts_with(field), "{detail}");
        assert!(detail.contains("unknown filter"), "{detail}");
    }
    let hook = create_hook(&app, &key, json!({"agent_id": "a"})).await;
    let preview = format!("/api/webhooks/incoming/{}/preview", hook.id);
    let detail = app
        .post(&preview, &key, &json!({"payload": {}, "template": bad}))
        .await
        .expect_error(422, "validation_error");
    assert!(detail.contains("unknown filter `nosuchfilter`"), "{detail}");
}

fn sandbox(timeout_ms: u64, memory_mib: u64) -> Sandbox {
    Sandbox::new(SandboxSettings {
        timeout: Duration::from_millis(timeout_ms),
        memory_mib,
        workers: 2,
        program: Some(env!("CARGO_BIN_EXE_hookd").into()),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_the_memory_cap_ends_its_worker_not_the_node() {
    // No time limit to speak of: the cap alone has to stop it. A context of 40 MB cannot even
    // be read by a worker allowed 16 MiB.
    let sandbox = sandbox(60_000, 16);
    let template = Template::compile_text("{{ big | length }}").unwrap();
    let big = json!({"big": "x".repeat(40 << 20)}).into();
    match sandbox.render(&template, &big).await.unwrap_err() {
        SandboxError::Template(e) => assert!(e.message.contains("16 MiB"), "{e}"),
        other => panic!("{other}"),
    }
    let template = Template::compile_text("{{ 6 * 7 }}").unwrap();
    let nothing = json!({}).into();
    assert_eq!(sandbox.render(&template, &nothing).await.unwrap(), 42);
}

/// A cheap render never reaches a worker (here none can start); any other does.
#[tokio::test]
async fn cheap_renders_run_in_the_node_and_the_rest_in_workers() {
    let sandbox = Sandbox::new(SandboxSettings {
        timeout: Duration::from_secs(5),
        memory_mib: 64,
        workers: 1,
        program: Some("/nonexistent/hookd".into()),
    });
    let context = json!({"lead_name": "Ada", "items": [1, 2]}).into();
    let cheap = Template::compile_text("{{ lead_name | upper }}").unwrap();
    assert_eq!(sandbox.render(&cheap, &context).await.unwrap(), "ADA");
    let rule = Template::compile_condition("items contains 2").unwrap();
    assert!(sandbox.matches(&rule, &context).await.unwrap());
    let looping = Template::compile_text("{% for i in items %}{{ i }}{% endfor %}").unwrap();
    let error = sandbox.render(&looping, &context).await.unwrap_err();
    assert!(matches!(error, SandboxError::Unavailable(_)), "{error}");
    let huge = json!({"lead_name": "x".repeat(4 << 20)}).into();
    let error = sandbox.render(&cheap, &huge).await.unwrap_err();
    assert!(matches!(error, SandboxError::Unavailable(_)), "{error}");
}

/// Programs that grow a value by doubling, repetition or nesting in a loop, then use it the ways
/// that walk it: printing, serialising, joining, comparing, measuring.
fn growing_program() -> impl Strategy<Value = String> {
    let seed = prop_oneof![
        Just("[1]"),
        Just("'ab'"),
        Just("[[1, 2], [3]]"),
        Just("range(100) | list"),
        Just("{'k': [1]}"),
    ];
    let step = prop_oneof![
        Just("ns.x + ns.x"),
        Just("ns.x * 3"),
        Just("[ns.x, ns.x]"),
        Just("[ns.x] * 50"),
        Just("ns.x ~ ns.x"),
        Just("(ns.x | list) * 2"),
    ];
    let use_ = prop_oneof![
        Just("ns.x"),
        Just("ns.x | length"),
        Just("ns.x | tojson"),
        Just("ns.x | join(',')"),
        Just("ns.x == ns.x + []"),
        Just("ns.x | string | length"),
        Just("ns.x | list | length"),
    ];
    (seed, step, 1..48usize, use_).prop_map(|(seed, step, rounds, use_)| {
        format!(
            "{{% set ns = namespace(x={seed}) %}}{{% for i in range({rounds}) %}}\
             {{% set ns.x = {step} %}}{{% endfor %}}{{{{ {use_} }}}}"
        )
    })
}

#[test]
fn generated_growing_programs_end_within_the_limits() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sandbox = runtime.block_on(async { sandbox(TIMEOUT_MS, 128) });
    let mut runner = TestRunner::new(ProptestConfig::with_cases(32));
    runner
        .run(&growing_program(), |source| {
            let template = Template::compile_text(&source).unwrap();
            let started = Instant::now();
            let outcome = runtime.block_on(sandbox.render(&template, &json!({}).into()));
            // A kill plus a fresh worker's start, on a busy machine.
            prop_assert!(started.elapsed() < Duration::from_secs(5), "{source}");
            match outcome {
                Ok(output) => prop_assert!(output.to_string().len() <= 2 * 256 * 1024),
                Err(SandboxError::Template(_)) => {}
                Err(other) => prop_assert!(false, "{source}: {other}"),
            }
            Ok(())
        })
        .unwrap();
}
