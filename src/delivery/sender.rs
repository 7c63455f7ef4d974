//! One HTTP attempt: body, headers and signatures as DESIGN.md's "What goes on the wire" lists
//! them, sent through a client that never follows redirects and only connects to addresses the
//! target policy allows (checked on the address actually used, so DNS tricks don't get around it).

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::{
    StatusCode,
    dns::{Addrs, Name, Resolve, Resolving},
    header::{HeaderMap, HeaderName, HeaderValue},
};

use crate::domain::{
    delivery::render_body,
    event::Event,
    log::{MAX_LOGGED_BODY, truncate},
    net::TargetPolicy,
    outgoing::OutgoingWebhook,
    signature::{hex_hmac_sha256, standard_webhooks_signature},
    time::iso8601,
};

/// What one attempt sent and got back.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub request_body: Vec<u8>,
    pub request_headers: Vec<(String, String)>,
    pub response_status: Option<u16>,
    /// Cut to [`MAX_LOGGED_BODY`].
    pub response_body: Option<String>,
    /// From a 429/503 answer's `Retry-After`.
    pub retry_after_ms: Option<i64>,
    pub error: Option<String>,
    pub elapsed_ms: i64,
}

impl Attempt {
    pub fn succeeded(&self) -> bool {
        self.response_status
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
}

const USER_AGENT: &str = concat!("hookd/", env!("CARGO_PKG_VERSION"));

impl Sender {
    pub fn new(policy: TargetPolicy) -> Sender {
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
        Sender { client, policy }
    }

    /// Sends `event` to `hook` as delivery `delivery_id`, once.
    pub async fn send(&self, hook: &OutgoingWebhook, event: &Event, delivery_id: &str) -> Attempt {
        let started = Instant::now();
        let settings = &hook.settings;
        let rendered = settings
            .compiled_template()
            .map_err(|e| e.message)
            .and_then(|template| {
                render_body(
                    event,
                    &hook.id,
                    settings.effective_format(),
                    template.as_ref(),
                )
                .map_err(|e| format!("payload_template: {e}"))
            });
        let body = match rendered {
            Ok(body) => body,
            Err(error) => return Attempt::error(Vec::new(), Vec::new(), error, started),
        };
        let headers = wire_headers(hook, event, delivery_id, &body);
        let shown: Vec<(String, String)> = headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or("").to_string()))
            .collect();
        // Names go through the checking resolver; literal addresses are checked here.
        if let Ok(ip) = hook.settings.url.host().parse::<IpAddr>()
            && let Err(refusal) = self.policy.check_ip(ip)
        {
            return Attempt::error(body, shown, refusal.to_string(), started);
        }
        let request = self
            .client
            .post(settings.url.url().clone())
            .headers(headers)
            .timeout(Duration::from_secs(
                u64::try_from(settings.timeout).unwrap_or(30),
            ))
            .body(body.clone());
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                let retry_after_ms = matches!(status.as_u16(), 429 | 503)
                    .then(|| retry_after_ms(response.headers()))
                    .flatten();
                let (response_body, read_error) = read_limited(response).await;
                Attempt {
                    request_body: body,
                    request_headers: shown,
                    response_status: Some(status.as_u16()),
                    response_body: Some(response_body),
                    retry_after_ms,
                    error: read_error,
                    elapsed_ms: elapsed_ms(started),
                }
            }
            Err(error) => Attempt::error(body, shown, describe(&error), started),
        }
    }
}

impl Attempt {
    fn error(
        body: Vec<u8>,
        headers: Vec<(String, String)>,
        error: String,
        started: Instant,
    ) -> Attempt {
        Attempt {
            request_body: body,
            request_headers: headers,
            response_status: None,
            response_body: None,
            retry_after_ms: None,
            error: Some(error),
            elapsed_ms: elapsed_ms(started),
        }
    }
}

fn elapsed_ms(started: Instant) -> i64 {
    i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// Content-Type and custom headers first, then hookd's own, which custom headers cannot replace.
fn wire_headers(
    hook: &OutgoingWebhook,
    event: &Event,
    delivery_id: &str,
    body: &[u8],
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    for (name, value) in &hook.settings.headers {
        // Both were validated when the webhook was saved.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    let now = chrono::Utc::now();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set("x-webhook-event", event.event_type.clone());
    set("x-webhook-id", hook.id.clone());
    set("x-webhook-timestamp", iso8601(now.timestamp_millis()));
    set("x-webhook-delivery", delivery_id.to_string());
    set("webhook-id", delivery_id.to_string());
    set("webhook-timestamp", now.timestamp().to_string());
    if let Some(secret) = &hook.settings.secret {
        set("x-webhook-signature", hex_hmac_sha256(secret, body));
        set(
            "webhook-signature",
            standard_webhooks_signature(secret, delivery_id, now.timestamp(), body),
        );
    }
    headers
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

/// The response body, cut to [`MAX_LOGGED_BODY`]; the rest is not read. A read error (e.g. the
/// timeout striking mid-body) is reported beside what was read.
async fn read_limited(mut response: reqwest::Response) -> (String, Option<String>) {
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                bytes.extend_from_slice(&chunk);
                if bytes.len() >= MAX_LOGGED_BODY {
                    break;
                }
            }
            Ok(None) => break,
            Err(error) => {
                return (
                    String::from_utf8_lossy(&bytes).into_owned(),
                    Some(describe(&error)),
                );
            }
        }
    }
    (
        truncate(&String::from_utf8_lossy(&bytes), MAX_LOGGED_BODY),
        None,
    )
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
