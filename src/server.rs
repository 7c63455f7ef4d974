//! The HTTP/1.1 connection layer: accepts connections, closes those that take too long to send a
//! request's headers (or sit idle between requests), gives each request body a deadline, and
//! drains connections on shutdown within the grace period. axum's own `serve` has no header
//! timeout, so hyper is driven here directly.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body, extract::ConnectInfo};
use hyper::{
    body::{Body as _, Bytes, Frame, Incoming, SizeHint},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{net::TcpListener, time::Sleep};
use tower::ServiceExt;

/// How long connections may take over their parts of a request.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From waiting for a request (on a new connection, or after the previous answer) to its
    /// complete head.
    pub header: Duration,
    /// From the first read of a request's body to its end.
    pub body: Duration,
}

/// Serves `router` on `listener` until `shutdown` completes; then closes the listener, lets the
/// open connections finish their requests for up to `grace`, and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    timeouts: Timeouts,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = http1::Builder::new();
    // hyper starts this clock when it waits for a request's head: on a new connection and after
    // each answer, so the one setting bounds slow headers and idle keep-alive alike.
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    pause_after(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let router = router.clone();
        let service = service_fn(move |mut request: hyper::Request<Incoming>| {
            // The IP allowlist and the rate limits read the peer as axum's `ConnectInfo`.
            request.extensions_mut().insert(ConnectInfo(peer));
            router
                .clone()
                .oneshot(request.map(|body| Deadline::wrap(body, timeouts.body)))
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection closed with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "connections still open after the shutdown grace are cut"
        );
    }
}

/// After a failed accept: a client that gave up is nothing to wait for; anything else (out of
/// file descriptors, mostly) would fail again at once, so the loop pauses rather than spins.
async fn pause_after(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Why a request body read failed when its client sent it too slowly.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} ms", .0.as_millis())]
pub struct BodyTimeout(pub Duration);

/// A request body that must arrive whole within `after` of its first read: a deadline for the
/// whole body, not per chunk, so trickling a byte at a time does not hold a request open.
struct Deadline {
    body: Incoming,
    after: Duration,
    /// Started by the first read, so a handler that never reads the body costs no timer.
    expires: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    fn wrap(body: Incoming, after: Duration) -> Body {
        if body.is_end_stream() {
            return Body::new(body);
        }
        Body::new(Deadline {
            body,
            after,
            expires: None,
        })
    }
}

impl hyper::body::Body for Deadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let after = self.after;
        let expires = self
            .expires
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
        match expires.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(after))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
