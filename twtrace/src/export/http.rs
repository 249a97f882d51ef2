//! The HTTP(S) side of `twtrace serve`: `/metrics`, `/healthz`, `/`.
//!
//! It runs on the same (current-thread) runtime as the drive loop, so nothing here may take
//! long on it: a scrape answers from the last published [`Exposition`] (encoded once per
//! publication, off the loop, on tokio's blocking pool), bcrypt checks run there too, and
//! every connection is bounded: at most [`MAX_CONNECTIONS`] at once (more are closed at
//! once), [`HEADER_TIMEOUT`] to send a request's headers, [`HANDSHAKE_TIMEOUT`] for TLS, and
//! [`MAX_LIFETIME`] in all (a keep-alive connection is then closed after its request; a
//! client that stops reading is cut [`GRACE`] later). A stop finishes the requests in flight
//! for up to [`GRACE`].

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::TcpListener,
    sync::{Mutex, Semaphore, watch},
    task::JoinSet,
};

use super::{
    ExportError,
    format::{self, Format},
    model,
    model::Exposition,
    webconfig::WebConfig,
};

pub const MAX_CONNECTIONS: usize = 64;
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_LIFETIME: Duration = Duration::from_secs(120);
pub const GRACE: Duration = Duration::from_secs(5);
/// `/healthz` fails when the model was last published longer ago than this: the drive loop
/// is stuck (it publishes every tick, events or not).
pub const STALE_AFTER: Duration = Duration::from_secs(15);
/// bcrypt checks at once (each takes tens of milliseconds of a core by design).
const AUTH_CHECKS: usize = 2;

/// What the drive loop publishes for the server: the latest exposition and when it was made.
#[derive(Clone)]
pub struct Published {
    pub exposition: Arc<Exposition>,
    pub at: Instant,
}

/// One generation's bodies, each made by the first scrape that asks for it: OpenMetrics and
/// 0.0.4 text, each plain and gzipped ([`Encoded::slot`]).
struct Encoded {
    generation: u64,
    bodies: [Option<Bytes>; 4],
}

impl Encoded {
    fn slot(format: Format, gzip: bool) -> usize {
        usize::from(format == Format::Text004) * 2 + usize::from(gzip)
    }
}

struct State {
    published: watch::Receiver<Published>,
    /// The bodies of the latest generation encoded so far.
    encoded: Mutex<Option<Encoded>>,
    web: WebConfig,
    auth_checks: Semaphore,
    index: Bytes,
}

/// A running server; [`Server::stop`] ends it gracefully.
pub struct Server {
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Binds `addr` (errors say so before any probe is loaded).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ExportError> {
    TcpListener::bind(addr).await.map_err(|source| ExportError::Listen { addr, source })
}

/// Serves on `listener` until [`Server::stop`].
pub fn spawn(listener: TcpListener, web: WebConfig, published: watch::Receiver<Published>) -> Server {
    let local_addr = listener.local_addr().expect("a bound socket has an address");
    let scheme = if web.tls.is_some() { "https" } else { "http" };
    let index = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>twtrace</title></head><body>\
         <h1>twtrace serve</h1><p>TIME_WAIT, ephemeral port and PAWS metrics for Prometheus.</p>\
         <ul><li><a href=\"/metrics\">/metrics</a>: OpenMetrics, or the 0.0.4 text format for a client that asks for text/plain</li>\
         <li><a href=\"/healthz\">/healthz</a>: 200 while the event loop publishes</li></ul>\
         <p>Scrape {scheme}://{local_addr}/metrics.</p></body></html>\n"
    );
    let state = Arc::new(State {
        published,
        encoded: Mutex::new(None),
        web,
        auth_checks: Semaphore::new(AUTH_CHECKS),
        index: Bytes::from(index),
    });
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, state, stopped));
    Server { local_addr, stop, task }
}

impl Server {
    /// Stops accepting, lets the requests in flight finish (up to [`GRACE`]), and returns.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(GRACE * 2, self.task).await.is_err() {
            log::warn!("the metrics server did not stop within {:?}", GRACE * 2);
        }
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, mut stopped: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let acceptor = state.web.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => accepted,
            // Finished connections are reaped as they go: the set stays as small as the load.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: wait a little rather than spin.
                log::warn!("accepting a metrics connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            log::debug!("{peer}: {MAX_CONNECTIONS} connections open already; closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let acceptor = acceptor.clone();
        let stopped = stopped.clone();
        connections.spawn(async move {
            let _slot = slot;
            match acceptor {
                None => serve_connection(TokioIo::new(stream), state, stopped).await,
                Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => serve_connection(TokioIo::new(tls), state, stopped).await,
                    Ok(Err(e)) => log::debug!("{peer}: TLS handshake: {e}"),
                    Err(_) => log::debug!("{peer}: TLS handshake timed out"),
                },
            }
        });
    }
    drop(listener);
    // In flight: each connection sees the stop and finishes its request within the grace.
    let _ = tokio::time::timeout(GRACE * 2, async { while connections.join_next().await.is_some() {} }).await;
    connections.abort_all();
}

async fn serve_connection<I>(io: TokioIo<I>, state: Arc<State>, mut stopped: watch::Receiver<bool>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| handle(req, state.clone()));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stopped.wait_for(|s| *s) => {}
        () = tokio::time::sleep(MAX_LIFETIME) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(GRACE, conn).await;
}

fn response(status: StatusCode, content_type: &str, body: Bytes, web: &WebConfig) -> Response<Full<Bytes>> {
    let mut builder = Response::builder().status(status).header(header::CONTENT_TYPE, content_type);
    for (name, value) in &web.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder.body(Full::new(body)).expect("valid headers (checked when the configuration was read)")
}

async fn handle(req: Request<Incoming>, state: Arc<State>) -> Result<Response<Full<Bytes>>, Infallible> {
    let web = &state.web;
    let text = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = response(StatusCode::METHOD_NOT_ALLOWED, text, Bytes::from_static(b"GET or HEAD\n"), web);
        r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    let path = req.uri().path();
    // Liveness for kubelet probes: open even with basic auth, and it says nothing but that.
    if path == "/healthz" {
        let age = state.published.borrow().at.elapsed();
        return Ok(if age <= STALE_AFTER {
            response(StatusCode::OK, text, Bytes::from_static(b"ok\n"), web)
        } else {
            let body = format!("stale: the model was last published {:.0} s ago\n", age.as_secs_f64());
            response(StatusCode::SERVICE_UNAVAILABLE, text, Bytes::from(body), web)
        });
    }
    if let Some(auth) = &web.auth {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let ok = auth.remembered(given.as_deref()) || {
            let _permit = state.auth_checks.acquire().await.expect("never closed");
            let auth = auth.clone();
            tokio::task::spawn_blocking(move || auth.check(given.as_deref())).await.unwrap_or(false)
        };
        if !ok {
            let mut r = response(StatusCode::UNAUTHORIZED, text, Bytes::from_static(b"Unauthorized\n"), web);
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"twtrace\""));
            return Ok(r);
        }
    }
    Ok(match path {
        "/metrics" => {
            let asked = |name: header::HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
            let format = Format::negotiate(asked(header::ACCEPT));
            let gzip = format::accepts_gzip(asked(header::ACCEPT_ENCODING));
            let mut r = response(StatusCode::OK, format.content_type(), metrics(&state, format, gzip).await, web);
            let headers = r.headers_mut();
            if gzip {
                headers.insert(header::CONTENT_ENCODING, header::HeaderValue::from_static("gzip"));
            }
            headers.insert(header::VARY, header::HeaderValue::from_static("Accept, Accept-Encoding"));
            r
        }
        "/" => response(StatusCode::OK, "text/html; charset=utf-8", state.index.clone(), web),
        _ => response(StatusCode::NOT_FOUND, text, Bytes::from_static(b"Not found: try /metrics\n"), web),
    })
}

/// The latest exposition in `format`, gzipped if asked: each body made by the first scrape
/// after a publication that asks for it (off the event loop, on the blocking pool), shared by
/// the others. The OpenMetrics text is the source of the rest.
async fn metrics(state: &State, format: Format, gzip: bool) -> Bytes {
    let exposition = state.published.borrow().exposition.clone();
    let mut encoded = state.encoded.lock().await;
    if encoded.as_ref().is_none_or(|e| e.generation != exposition.generation) {
        *encoded = Some(Encoded { generation: exposition.generation, bodies: Default::default() });
    }
    let e = encoded.as_mut().expect("set above");
    if let Some(body) = &e.bodies[Encoded::slot(format, gzip)] {
        return body.clone();
    }
    let openmetrics = e.bodies[Encoded::slot(Format::OpenMetrics, false)].clone();
    let made = tokio::task::spawn_blocking(move || {
        let openmetrics = openmetrics.unwrap_or_else(|| Bytes::from(model::encode(exposition)));
        let text = match format {
            Format::OpenMetrics => openmetrics.clone(),
            Format::Text004 => Bytes::from(format::text_004(&String::from_utf8_lossy(&openmetrics))),
        };
        let body = if gzip { Bytes::from(format::gzip(&text)) } else { text };
        (openmetrics, body)
    })
    .await;
    match made {
        Ok((openmetrics, body)) => {
            e.bodies[Encoded::slot(Format::OpenMetrics, false)] = Some(openmetrics);
            e.bodies[Encoded::slot(format, gzip)] = Some(body.clone());
            body
        }
        Err(err) => {
            log::error!("encoding the metrics: {err}");
            let eof = Bytes::from_static(b"# EOF\n");
            if gzip { Bytes::from(format::gzip(&eof)) } else { eof }
        }
    }
}
