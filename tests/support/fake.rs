//! Scriptable HTTP servers on loopback: each request is recorded and answered by a handler,
//! which may forward it to a real Prometheus (a counting proxy), delay it (a slow Prometheus)
//! or answer canned JSON.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use futures::future::BoxFuture;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub uri: Uri,
    /// Headers.
    pub headers: HeaderMap,
    /// Body (form-encoded for queries).
    pub body: String,
}

impl Recorded {
    /// The form field `name` of the body.
    pub fn form(&self, name: &str) -> Option<String> {
        super::form_decode(&self.body)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// A header as a string.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// How to answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
    /// Wait this long first.
    pub delay: Duration,
}

/// The handler type.
pub type Handler = Arc<dyn Fn(Recorded) -> BoxFuture<'static, Reply> + Send + Sync>;

#[derive(Clone)]
struct Shared {
    handler: Handler,
    log: Arc<Mutex<Vec<Recorded>>>,
}

/// A running fake server.
pub struct FakeServer {
    /// Where it listens.
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
}

impl FakeServer {
    /// Start on a free loopback port.
    pub async fn start(handler: Handler) -> Self {
        let log = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake server");
        let addr = listener.local_addr().expect("fake server addr");
        let app = Router::new().fallback(serve).with_state(Shared {
            handler,
            log: Arc::clone(&log),
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, log }
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Forget the recorded requests.
    pub fn clear(&self) {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// A proxy to `upstream` (a Prometheus base URL) that records every request; `intercept`
    /// may answer a request itself instead of forwarding it.
    pub async fn proxy(
        upstream: String,
        intercept: impl Fn(&Recorded) -> Option<Reply> + Send + Sync + 'static,
    ) -> Self {
        Self::proxy_with(upstream, intercept, || Box::pin(async {})).await
    }

    /// [`FakeServer::proxy`] that first awaits `before_forward()` for every request it
    /// forwards: a test can hold a query (and so the cycle that sent it) for a while.
    pub async fn proxy_with(
        upstream: String,
        intercept: impl Fn(&Recorded) -> Option<Reply> + Send + Sync + 'static,
        before_forward: impl Fn() -> BoxFuture<'static, ()> + Send + Sync + 'static,
    ) -> Self {
        let client = reqwest::Client::new();
        let intercept = Arc::new(intercept);
        let before_forward = Arc::new(before_forward);
        Self::start(Arc::new(move |r: Recorded| {
            let client = client.clone();
            let upstream = upstream.clone();
            let intercept = Arc::clone(&intercept);
            let before_forward = Arc::clone(&before_forward);
            Box::pin(async move {
                if let Some(reply) = intercept(&r) {
                    return reply;
                }
                before_forward().await;
                let url = format!("{upstream}{}", r.uri);
                let resp = client
                    .post(url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(r.body.clone())
                    .send()
                    .await;
                match resp {
                    Ok(resp) => Reply {
                        status: resp.status().as_u16(),
                        body: resp.text().await.unwrap_or_default(),
                        delay: Duration::ZERO,
                    },
                    Err(e) => Reply {
                        status: 502,
                        body: format!("proxy error: {e}"),
                        delay: Duration::ZERO,
                    },
                }
            })
        }))
        .await
    }
}

async fn serve(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    let rec = Recorded {
        method,
        uri,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    shared
        .log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(rec.clone());
    let reply = (shared.handler)(rec).await;
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    (
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        reply.body,
    )
}
