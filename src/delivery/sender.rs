//! One HTTP attempt: body, headers and signatures as DESIGN.md's "What goes on the wire" lists
//! them, sent through a client that never follows redirects and only connects to addresses the
//! target policy allows (checked on the address actually used, so DNS tricks don't get around it).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::{
    StatusCode,
    dns::{Addrs, Name, Resolve, Resolving},
    header::{HeaderMap, HeaderName, HeaderValue},
};
use serde_json::{Value, json};

use crate::{
    domain::{
        agent::{Agent, Endpoint, EndpointFormat},
        event::Event,
        log::{LoggedHeaders, MAX_LOGGED_BODY, log_text},
        net::{TargetPolicy, TargetUrl},
        outgoing::OutgoingWebhook,
        payload::{render_body, template_context},
        signature::{hex_hmac_sha256, standard_webhooks_signature},
        time::{iso8601, micros_since, now_ms},
    },
    sandbox::Sandbox,
};

/// What one attempt sent and got back.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// What was sent, as the log shows it ([`log_text`]).
    pub request_payload: String,
    /// As the log shows them.
    pub request_headers: LoggedHeaders,
    pub response_status: Option<u16>,
    /// As much as the caller asked to keep: [`MAX_LOGGED_BODY`], or more for a model's reply
    /// (the log cuts it).
    pub response_body: Option<String>,
    /// From a 429/503 answer's `Retry-After`.
    pub retry_after_ms: Option<i64>,
    pub error: Option<String>,
    /// Microseconds.
    pub elapsed_us: i64,
}

impl Attempt {
    /// A 2xx answer read as far as it is kept, within the timeout (and, for a model, holding a
    /// reply). An answer cut or stalled before that is retried: receivers dedupe on the delivery
    /// id.
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
            && self
                .response_status
                .is_some_and(|s| (200..300).contains(&s))
    }

    /// 410 Gone: the receiver asks never to be called again.
    pub fn gone(&self) -> bool {
        self.response_status == Some(StatusCode::GONE.as_u16())
    }

    /// A one-line reason for a failed attempt.
    pub fn failure(&self) -> Option<String> {
        if self.succeeded() {
            return None;
        }
        Some(match (&self.error, self.response_status) {
            (Some(error), _) => error.clone(),
            (None, Some(status)) => format!("target answered HTTP {status}"),
            (None, None) => "no answer".to_string(),
        })
    }
}

/// Resolves target names and keeps only the addresses the policy allows.
struct CheckedResolver {
    policy: TargetPolicy,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match policy.check_ip(addr.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        refusal.get_or_insert(e);
                        false
                    }
                })
                .collect();
            match refusal {
                Some(e) if allowed.is_empty() => Err(e.into()),
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}

pub struct Sender {
    client: reqwest::Client,
    policy: TargetPolicy,
    sandbox: Sandbox,
}

const USER_AGENT: &str = concat!("hookd/", env!("CARGO_PKG_VERSION"));

impl Sender {
    pub fn new(policy: TargetPolicy, sandbox: Sandbox) -> Sender {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(CheckedResolver {
                policy: policy.clone(),
            }))
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .user_agent(USER_AGENT)
            .build()
            .expect("static client configuration is valid");
        Sender {
            client,
            policy,
            sandbox,
        }
    }

    /// Sends `event` to `hook` as delivery `delivery_id`, once.
    pub async fn send(&self, hook: &OutgoingWebhook, event: &Event, delivery_id: &str) -> Attempt {
        let started = Instant::now();
        let settings = &hook.settings;
        let rendered = match settings.compiled_template() {
            Ok(Some(template)) => self
                .sandbox
                .render(&template, &template_context(event, &hook.id))
                .await
                .map(|body| serde_json::to_vec(&body).unwrap_or_default())
                .map_err(|e| format!("payload_template: {e}")),
            Ok(None) => Ok(render_body(event, &hook.id, settings.effective_format())),
            Err(e) => Err(e.message),
        };
        let body = match rendered {
            Ok(body) => body,
            Err(error) => {
                return Attempt::error(&[], LoggedHeaders::default(), error, started);
            }
        };
        // The secrets valid now, not when the event was published: a retry or replay after a
        // rotation is signed with the new secret (and the old one while it is still valid).
        let signer = Signer {
            custom: &settings.headers,
            source_id: &hook.id,
            secrets: hook.signing_secrets(now_ms()),
        };
        let headers = signer.headers(event, delivery_id, &body);
        self.execute(
            &settings.url,
            headers,
            body,
            settings.timeout,
            MAX_LOGGED_BODY,
            started,
        )
        .await
    }

    /// Pushes a message routed to `agent` (the `chat.message.received` event carrying it) to the
    /// agent's endpoint, once. For `openai_chat`, also the reply the model gave; an answer
    /// without one counts as a failed attempt.
    pub async fn push(
        &self,
        agent: &Agent,
        endpoint: &Endpoint,
        event: &Event,
        delivery_id: &str,
    ) -> (Attempt, Option<String>) {
        let started = Instant::now();
        let body = push_body(agent, endpoint, event);
        let signer = Signer {
            custom: &endpoint.headers,
            source_id: &agent.id,
            secrets: Vec::new(),
        };
        let headers = signer.headers(event, delivery_id, &body);
        let keep = match endpoint.format {
            EndpointFormat::OpenaiChat => MAX_REPLY_BYTES,
            EndpointFormat::Json => MAX_LOGGED_BODY,
        };
        let mut attempt = self
            .execute(
                &endpoint.url,
                headers,
                body,
                endpoint.timeout,
                keep,
                started,
            )
            .await;
        if endpoint.format != EndpointFormat::OpenaiChat || !attempt.succeeded() {
            return (attempt, None);
        }
        let reply = attempt.response_body.as_deref().and_then(chat_reply);
        if reply.is_none() {
            attempt.error = Some("the answer holds no choices[0].message.content".to_string());
        }
        (attempt, reply)
    }

    /// Makes one request and reads up to `keep` bytes of the answer.
    async fn execute(
        &self,
        url: &TargetUrl,
        headers: HeaderMap,
        body: Vec<u8>,
        timeout_secs: i64,
        keep: usize,
        started: Instant,
    ) -> Attempt {
        let shown = LoggedHeaders::redacted(
            headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.to_str().unwrap_or(""))),
            None,
        );
        // Names go through the checking resolver; literal addresses are checked here.
        if let Ok(ip) = url.host().parse::<IpAddr>()
            && let Err(refusal) = self.policy.check_ip(ip)
        {
            return Attempt::error(&body, shown, refusal.to_string(), started);
        }
        let logged_body = log_text(&body, MAX_LOGGED_BODY);
        // Built whole rather than through `RequestBuilder`, whose `headers` merges the map into
        // an empty one entry by entry.
        let mut request = reqwest::Request::new(reqwest::Method::POST, url.url().clone());
        *request.headers_mut() = headers;
        *request.timeout_mut() = Some(Duration::from_secs(
            u64::try_from(timeout_secs).unwrap_or(30),
        ));
        *request.body_mut() = Some(body.into());
        match self.client.execute(request).await {
            Ok(response) => {
                let status = response.status();
                let retry_after_ms = matches!(status.as_u16(), 429 | 503)
                    .then(|| retry_after_ms(response.headers()))
                    .flatten();
                let (response_body, read_error) = read_limited(response, keep).await;
                Attempt {
                    request_payload: logged_body,
                    request_headers: shown,
                    response_status: Some(status.as_u16()),
                    response_body: Some(response_body),
                    retry_after_ms,
                    error: read_error,
                    elapsed_us: micros_since(started),
                }
            }
            Err(error) => Attempt {
                request_payload: logged_body,
                ..Attempt::error(&[], shown, describe(&error), started)
            },
        }
    }
}

/// Most bytes of a model's answer kept (a reply longer than the log's cut is still whole).
const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// The body of a push. `json`: the message (the event's data: `message_id`, `agent_id`,
/// `agent_name`, `incoming_webhook_id`, `content`). `openai_chat`: a chat completion request
/// with the message as the user turn (a string as it is, anything else as JSON text) and the
/// endpoint's model, else the agent's name (AGiXT names its agents as models).
fn push_body(agent: &Agent, endpoint: &Endpoint, event: &Event) -> Vec<u8> {
    let body = match endpoint.format {
        EndpointFormat::Json => event.data.clone(),
        EndpointFormat::OpenaiChat => {
            let content = match event.data.get("content") {
                Some(Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            json!({
                "model": endpoint.model.as_deref().unwrap_or(&agent.settings.name),
                "messages": [{"role": "user", "content": content}],
            })
        }
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// `choices[0].message.content` of a chat completion.
fn chat_reply(answer: &str) -> Option<String> {
    let answer: Value = serde_json::from_str(answer).ok()?;
    answer
        .pointer("/choices/0/message/content")?
        .as_str()
        .map(str::to_string)
}

impl Attempt {
    fn error(sent: &[u8], headers: LoggedHeaders, error: String, started: Instant) -> Attempt {
        Attempt {
            request_payload: log_text(sent, MAX_LOGGED_BODY),
            request_headers: headers,
            response_status: None,
            response_body: None,
            retry_after_ms: None,
            error: Some(error),
            elapsed_us: micros_since(started),
        }
    }
}

/// Who a request comes from, as its headers say.
struct Signer<'a> {
    custom: &'a BTreeMap<String, String>,
    /// The outgoing webhook's or the agent's id (`X-Webhook-ID`).
    source_id: &'a str,
    /// The current secret first, then a replaced one still valid; none: unsigned.
    secrets: Vec<&'a str>,
}

impl Signer<'_> {
    /// Content-Type and custom headers first, then hookd's own, which custom headers cannot
    /// replace.
    fn headers(&self, event: &Event, delivery_id: &str, body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        for (name, value) in self.custom {
            // Both were validated when the target was saved.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
        let now = chrono::Utc::now();
        // Names made once (`from_static` validates and hashes its text at every call).
        static EVENT: HeaderName = HeaderName::from_static("x-webhook-event");
        static SOURCE: HeaderName = HeaderName::from_static("x-webhook-id");
        static TIMESTAMP: HeaderName = HeaderName::from_static("x-webhook-timestamp");
        static DELIVERY: HeaderName = HeaderName::from_static("x-webhook-delivery");
        static SIGNATURE: HeaderName = HeaderName::from_static("x-webhook-signature");
        static PREVIOUS: HeaderName = HeaderName::from_static("x-webhook-signature-previous");
        static STANDARD_ID: HeaderName = HeaderName::from_static("webhook-id");
        static STANDARD_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
        static STANDARD_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
        let mut set = |name: &HeaderName, value: String| {
            if let Ok(value) = HeaderValue::try_from(value) {
                headers.insert(name.clone(), value);
            }
        };
        set(&EVENT, event.event_type.clone());
        set(&SOURCE, self.source_id.to_string());
        set(&TIMESTAMP, iso8601(now.timestamp_millis()));
        set(&DELIVERY, delivery_id.to_string());
        set(&STANDARD_ID, delivery_id.to_string());
        set(&STANDARD_TIMESTAMP, now.timestamp().to_string());
        if let Some(current) = self.secrets.first() {
            set(&SIGNATURE, hex_hmac_sha256(current, body));
        }
        // The hex header holds one value, so a rotation's previous secret signs a header of its
        // own; Standard Webhooks lists every signature in one header, any of which may match.
        if let Some(previous) = self.secrets.get(1) {
            set(&PREVIOUS, hex_hmac_sha256(previous, body));
        }
        if !self.secrets.is_empty() {
            let signatures: Vec<String> = self
                .secrets
                .iter()
                .map(|secret| {
                    standard_webhooks_signature(secret, delivery_id, now.timestamp(), body)
                })
                .collect();
            set(&STANDARD_SIGNATURE, signatures.join(" "));
        }
        headers
    }
}

/// `Retry-After` as seconds or an HTTP date, in milliseconds from now.
fn retry_after_ms(headers: &HeaderMap) -> Option<i64> {
    let value = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<i64>() {
        return Some(seconds.saturating_mul(1_000));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some((at.timestamp_millis() - chrono::Utc::now().timestamp_millis()).max(0))
}

/// The response body as log text (see [`log_text`]), cut to `keep` bytes; the rest is not read.
/// A read error (e.g. the timeout striking mid-body) is reported beside what was read.
async fn read_limited(mut response: reqwest::Response, keep: usize) -> (String, Option<String>) {
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                bytes.extend_from_slice(&chunk);
                if bytes.len() >= keep {
                    break;
                }
            }
            Ok(None) => break,
            Err(error) => return (log_text(&bytes, keep), Some(describe(&error))),
        }
    }
    (log_text(&bytes, keep), None)
}

/// reqwest's error with its causes, which say what actually went wrong.
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut text = kind.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
