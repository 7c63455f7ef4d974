//! A real HTTP receiver on a loopback port: records what it gets and answers as scripted.

use std::{
    collections::VecDeque,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use futures_util::{StreamExt, stream};
use tokio::sync::Notify;

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    Status(u16),
    /// A status with extra response headers (e.g. `Retry-After`, `Location`).
    WithHeaders(u16, Vec<(&'static str, String)>),
    /// Waits this long, then answers 200 (to exercise timeouts).
    Stall(Duration),
    /// 200 with this JSON body (e.g. a model's chat completion).
    Json(serde_json::Value),
    /// This status with these bytes as the body.
    Bytes(u16, &'static [u8]),
    /// 200 with a body that never ends.
    Endless,
    /// 200 with the start of a body, then nothing more on a connection held open.
    StallBody,
}

#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("received body is JSON")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("header {name} missing"))
            .to_str()
            .unwrap()
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Option<Reply>>,
    arrived: Notify,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    shared: Arc<Shared>,
}

async fn record(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = shared
        .script
        .lock()
        .unwrap()
        .pop_front()
        .or_else(|| shared.default.lock().unwrap().clone())
        .unwrap_or(Reply::Status(200));
    shared.received.lock().unwrap().push(Received {
        path: uri.path().to_string(),
        headers,
        body,
        at: Instant::now(),
    });
    shared.arrived.notify_waiters();
    match reply {
        Reply::Status(code) => (StatusCode::from_u16(code).unwrap(), "answer").into_response(),
        Reply::WithHeaders(code, headers) => {
            let mut response = (StatusCode::from_u16(code).unwrap(), "answer").into_response();
            for (name, value) in headers {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
        Reply::Json(body) => axum::Json(body).into_response(),
        Reply::Bytes(code, body) => (StatusCode::from_u16(code).unwrap(), body).into_response(),
        Reply::Endless => {
            let chunk = Bytes::from(vec![b'x'; 8192]);
            Body::from_stream(stream::repeat(Ok::<_, Infallible>(chunk))).into_response()
        }
        Reply::StallBody => {
            let start = stream::iter([Ok::<_, Infallible>(Bytes::from_static(b"{\"ok\":"))]);
            Body::from_stream(start.chain(stream::pending())).into_response()
        }
        Reply::Stall(wait) => {
            tokio::time::sleep(wait).await;
            (StatusCode::OK, "late").into_response()
        }
    }
}

impl Receiver {
    pub async fn start() -> Receiver {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .fallback(record)
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, shared }
    }

    /// Answers these first, in order, then the default (200 unless set).
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.script.lock().unwrap().extend(replies);
    }

    pub fn always(&self, reply: Reply) {
        *self.shared.default.lock().unwrap() = Some(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.shared.received.lock().unwrap().len()
    }

    /// Waits until at least `count` requests arrived; panics after `within`.
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let arrived = self.shared.arrived.notified();
            // Count without copying: thousands of requests may be recorded.
            let got = self.count();
            if got >= count {
                return self.received();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "expected {count} requests within {within:?}, got {got}"
            );
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), arrived).await;
        }
    }
}
