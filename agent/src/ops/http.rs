//! The operator's HTTP endpoints, `/metrics`, `/healthz` and `/readyz`,
//! served with hyper's HTTP/1.1 server.
//!
//! Owns the routes, their status codes and bodies ([`respond`], a function
//! from a request to a response, so it is tested without sockets), the
//! limits on a connection (GET and HEAD only, one request per connection,
//! a capped request head and a read timeout on it), and binding with
//! retries ([`run_listener`]).
//!
//! Boundary: renders no series (that is [`crate::ops::prometheus`]'s) and
//! decides no readiness (that is [`crate::ops::recorder`]'s); reading the
//! certificates for a scrape is [`crate::ops::inventory`]'s.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::{debug, error, info, warn};

use crate::ops::inventory::{self, InventorySources};
use crate::ops::prometheus::CONTENT_TYPE;
use crate::ops::recorder::Recorder;

/// A request head larger than this is refused (431).
const MAX_REQUEST_HEAD: usize = 8 * 1024;
// hyper's read buffer cannot be smaller than 8 KiB (it panics).
const _: () = assert!(MAX_REQUEST_HEAD >= 8 * 1024);
/// How long a client may take to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait before trying to bind again when the address is taken.
pub const BIND_RETRY: Duration = Duration::from_secs(30);
/// After a failed accept (EMFILE and friends): wait rather than spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
const TEXT: &str = "text/plain";

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {address} for /metrics: {source}; free the port or set metrics-address (`off` turns the listener off)")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// What the listener serves.
#[derive(Clone)]
pub struct Endpoint {
    pub recorder: Arc<Recorder>,
    /// Where the certificate gauges come from; `None` serves agent metrics only.
    pub certificates: Option<InventorySources>,
}

impl Endpoint {
    /// The whole `/metrics` body, or `None` if it could not be encoded.
    pub async fn render(&self) -> Option<String> {
        let mut certificates = None;
        if let Some(src) = self.certificates.clone() {
            // File reads: off the async thread.
            match tokio::task::spawn_blocking(move || inventory::gather_certificates(&src)).await {
                Ok(inv) => certificates = Some(inv),
                Err(e) => warn!("gathering certificates for /metrics failed: {e}"),
            }
        }
        let now = crate::time::now_unix();
        match self.recorder.metrics().render(certificates, now) {
            Ok(body) => Some(body),
            Err(e) => {
                error!("{}", crate::errors::error_chain(&e));
                None
            }
        }
    }
}

fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// The response to `request`. Its future owns what it needs (`Send`,
/// `'static`), so a connection task can run it.
pub fn respond<B>(
    endpoint: &Endpoint,
    request: &Request<B>,
) -> impl Future<Output = Response<Full<Bytes>>> + Send + 'static {
    let endpoint = endpoint.clone();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    async move {
        if method != Method::GET && method != Method::HEAD {
            return response(
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT,
                "only GET is served\n".into(),
            );
        }
        match path.as_str() {
            "/metrics" => match endpoint.render().await {
                Some(body) => response(StatusCode::OK, CONTENT_TYPE, body),
                None => response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    TEXT,
                    "cannot encode the metrics; see the agent's log\n".into(),
                ),
            },
            // The process answers, so its runtime and the loops on it are
            // alive: a loop that ends ends the process.
            "/healthz" => response(StatusCode::OK, TEXT, "ok\n".into()),
            "/readyz" => match endpoint.recorder.not_ready_reason() {
                None => response(StatusCode::OK, TEXT, "ok\n".into()),
                Some(why) => response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    TEXT,
                    format!("not ready: {why}\n"),
                ),
            },
            _ => response(
                StatusCode::NOT_FOUND,
                TEXT,
                "not found; try /metrics, /healthz or /readyz\n".into(),
            ),
        }
    }
}

/// Binds `address` and serves until the process ends. A taken address is
/// logged and retried every [`BIND_RETRY`]: the trust job matters more than
/// its metrics, and must not stop because a port is busy.
pub async fn run_listener(address: SocketAddr, endpoint: Endpoint) {
    loop {
        match TcpListener::bind(address).await {
            Ok(listener) => {
                info!(address = %address, "serving /metrics, /healthz and /readyz");
                serve(listener, endpoint.clone()).await;
            }
            Err(source) => {
                let e = HttpError::Bind { address, source };
                error!(retry_in_s = BIND_RETRY.as_secs(), "{e}");
                tokio::time::sleep(BIND_RETRY).await;
            }
        }
    }
}

/// The HTTP/1.1 server settings of every connection; `head_timeout` is
/// how long a client may take to send its request head.
fn connection_builder(head_timeout: Duration) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_buf_size(MAX_REQUEST_HEAD)
        .max_header_size(MAX_REQUEST_HEAD)
        // One request per connection (`Connection: close`): scrapers and
        // probes reconnect anyway, and no idle connection is kept.
        .keep_alive(false)
        .title_case_headers(true);
    b
}

/// Accepts connections on `listener` forever, one task per connection.
pub async fn serve(listener: TcpListener, endpoint: Endpoint) {
    accept_loop(listener, endpoint, connection_builder(REQUEST_TIMEOUT)).await
}

async fn accept_loop(listener: TcpListener, endpoint: Endpoint, builder: http1::Builder) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let endpoint = endpoint.clone();
                let connection = builder.serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |request| {
                        let response = respond(&endpoint, &request);
                        async move { Ok::<_, Infallible>(response.await) }
                    }),
                );
                tokio::spawn(async move {
                    // A client that hangs up or sends garbage concerns only itself.
                    if let Err(e) = connection.await {
                        debug!(peer = %peer, "/metrics connection: {e}");
                    }
                });
            }
            Err(e) => {
                warn!("accepting a /metrics connection failed: {e}");
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;
    use crate::ops::daemon_status::AgentMode;
    use crate::ops::recorder::RecorderOptions;
    use crate::trust::reconcile::Outcome;

    fn endpoint() -> Endpoint {
        Endpoint {
            recorder: Arc::new(Recorder::new(RecorderOptions {
                mode: AgentMode::Host,
                started_at: 1000,
                ca_job: true,
                kubelet_job: false,
                metrics_address: None,
            })),
            certificates: None,
        }
    }

    async fn call(e: &Endpoint, method: Method, path: &str) -> (StatusCode, String, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        let r = respond(e, &request).await;
        let content_type = r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        let status = r.status();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn routes_answer_without_a_socket() {
        let e = endpoint();
        let ok = (StatusCode::OK, TEXT.to_string(), "ok\n".to_string());
        assert_eq!(call(&e, Method::GET, "/healthz").await, ok);
        assert_eq!(
            call(&e, Method::GET, "/readyz").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT.to_string(),
                "not ready: the first pass has not completed\n".to_string()
            )
        );
        e.recorder.record_ca_pass(&Outcome::default(), 1);
        assert_eq!(call(&e, Method::GET, "/readyz?verbose").await, ok);
        let (status, content_type, body) = call(&e, Method::GET, "/metrics").await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::OK, CONTENT_TYPE)
        );
        assert!(body.contains("node_cert_agent_ready 1\n"), "{body}");
        assert_eq!(
            call(&e, Method::GET, "/nope").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(&e, Method::POST, "/metrics").await,
            (
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT.to_string(),
                "only GET is served\n".to_string()
            )
        );
    }

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn listener_serves_metrics_health_and_readiness() {
        let e = endpoint();
        let m = e.recorder.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, e));
        let req = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = get(addr, &req("/healthz")).await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Connection: close"), "{r}");
        let r = get(addr, &req("/readyz")).await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        m.record_ca_pass(&Outcome::default(), 1);
        let r = get(addr, &req("/readyz")).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        let r = get(addr, &req("/metrics")).await;
        assert!(r.contains(CONTENT_TYPE), "{r}");
        assert!(r.contains("node_cert_agent_ready 1"), "{r}");
        let r = get(addr, &req("/nope")).await;
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        let r = get(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 405"), "{r}");
        let r = get(addr, "HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 200") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
    }

    #[tokio::test]
    async fn an_oversized_request_head_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, endpoint()));
        let big = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(MAX_REQUEST_HEAD)
        );
        let r = get(addr, &big).await;
        assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_head_is_dropped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let timeout = Duration::from_millis(200);
        tokio::spawn(accept_loop(
            listener,
            endpoint(),
            connection_builder(timeout),
        ));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(timeout * 25, s.read_to_end(&mut out)).await;
        assert!(
            read.is_ok(),
            "the connection was still open after the timeout"
        );
        assert!(!String::from_utf8_lossy(&out).contains("200 OK"));
    }
}
