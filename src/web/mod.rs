//! The node's HTTP side, on with `--http ADDR`: `/metrics` (Prometheus text
//! exposition of [`crate::metrics`]), `/` (the status page, one HTML file
//! compiled in) and `/status.json` (what the page draws, see [`status`]).
//!
//! HTTP/1.1 only, with hyper: an operator's browser and a Prometheus scraper
//! are the clients, so no HTTP/2, TLS or routing framework. It runs as its
//! own tasks on the node's runtime, apart from the Thrift server, and stops
//! with it. What one client can cost is bounded the way the Thrift server
//! bounds it, more tightly: a few connections at once (others wait in the
//! backlog), request headers within a deadline, and no request body read.

pub(crate) mod status;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::node::Node;

/// The status page: self-contained (no scripts, styles or fonts from
/// elsewhere), so it works on a ring with no way out to the internet.
const STATUS_PAGE: &str = include_str!("status.html");

/// HTTP connections served at once; more wait in the listen backlog. A few
/// browsers and a scraper need far fewer.
const MAX_CONNECTIONS: usize = 32;

/// A client must send its request headers within this long.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for HTTP connections to finish their request.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves HTTP on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    while let Some((socket, permit)) =
        crate::wire::server::accept(&listener, &permits, &mut shutdown, "http: ").await
    {
        let node = node.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(node.clone(), request));
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(socket), service);
            tokio::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = stopped(&mut shutdown) => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = served {
                log::debug!("http: connection closed: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, permits.acquire_many(all)).await;
}

/// Resolves once shutdown is signalled (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}

/// Answers one request. The body, if any, is never read: no route takes one.
async fn answer(
    node: Arc<Node>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Ok(plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served\n",
        ));
    }
    Ok(match request.uri().path() {
        "/" | "/index.html" => body(
            StatusCode::OK,
            "text/html; charset=utf-8",
            Bytes::from_static(STATUS_PAGE.as_bytes()),
        ),
        "/metrics" => {
            let stats = node.stats();
            let statuses = node.table().into_iter().map(|row| row.status);
            let text = node.metrics().render(&stats, statuses);
            body(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                Bytes::from(text),
            )
        }
        "/status.json" => {
            let report = status::report(&node).await;
            match serde_json::to_vec(&report) {
                Ok(json) => body(StatusCode::OK, "application/json", Bytes::from(json)),
                Err(e) => plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("cannot encode the status: {e}\n"),
                ),
            }
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found; try /, /metrics or /status.json\n",
        ),
    })
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    body(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(text.to_owned()),
    )
}

fn body(status: StatusCode, content_type: &'static str, bytes: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(bytes));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Every answer is the state now: never serve one from a cache.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
