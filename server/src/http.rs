//! The main listener (docs/protocol.md sections 2 and 6): on any path ending in
//! `/diffusion`, a WebSocket upgrade goes to [`ws`](super::ws), and a POST
//! is the HTTP polling transport, its parameters in headers:
//!
//! - `m=0` connect (the section 2 keys, `ty=B`): answered with the raw
//!   connection response bytes;
//! - `m=1` poll (`c`, `s`): held until the session has messages or the poll
//!   timeout passes, then 200 with a base64 batch (empty: none);
//! - `m=2` send (`c`, `s`, base64 batch body): an empty 200 once accepted.
//!
//! A send body over the limit is refused before it is buffered: a
//! `Content-Length` over it, or a streamed body crossing it, closes the
//! session MESSAGE_TOO_LARGE and drops the connection unread.
//!
//! A session waiting for a reconnection answers with an empty 200 and
//! `diffusion-connection: reconnect`; an unknown (or aborted) session with a
//! batch holding ABORT; a session closed without ABORT drops the connection.
//!
//! Against hostile clients (SECURITY.md): a request head over [`MAX_HEAD`]
//! gets 431, a 503 or 431 closes the connection, connections waiting for a
//! head are capped per source address ([`slots`](super::slots)), and CORS
//! headers go only to the `--allow-origin` origins.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS,
    ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS, CONNECTION, CONTENT_LENGTH,
    CONTENT_TYPE, ORIGIN, VARY,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use sessionwire::session::handshake::ConnectionRequest;
use sessionwire::session::SessionToken;
use sessionwire::{polling, Message};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::channel::{Attach, Command, Connected, HttpAnswer};
use super::response::respond;
use super::slots::ConnSlot;
use super::Shared;

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a send's body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of send bodies being read at once, over all connections, unless
/// one body may be larger ([`read_budget`]).
pub const READ_BUDGET: usize = 16 << 20;

/// The server-wide bound on bytes of send bodies read and not yet taken by
/// their session: [`READ_BUDGET`], or one body of the largest size when
/// that is more (so that a body can always be read whole). What a session
/// holds after that counts against `--max-buffered-bytes`.
pub fn read_budget(limits: &sessionwire::Limits) -> usize {
    READ_BUDGET.max(limits.max_batch_text())
}

/// Largest request head accepted (hyper's read buffer is bounded by it too;
/// a larger head is refused with 431).
pub const MAX_HEAD: usize = 64 * 1024;

/// The header that tells an HTTP polling client to reconnect.
pub const RECONNECT_HEADER: &str = "diffusion-connection";

/// The connection is dropped without an answer (hyper closes it when the
/// service fails).
#[derive(Debug)]
pub struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped")
    }
}

impl std::error::Error for DropConnection {}

/// Accepts connections until shutdown.
pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut stop = shared.stop.clone();
    let mut dropped = Dropped::default();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, most likely: back off.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Ok(permit) = Arc::clone(&shared.connections).try_acquire_owned() else {
            dropped.note(peer, "too many connections");
            continue;
        };
        let Some(slot) = shared.pending.take(peer.ip()) else {
            dropped.note(
                peer,
                "too many connections waiting for a request from this address",
            );
            continue;
        };
        let slot = Arc::new(ConnSlot::new(Arc::clone(&shared.pending), peer.ip(), slot));
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                let slot = Arc::clone(&slot);
                async move {
                    slot.head_received();
                    let mut r = handle(req, shared, peer).await?;
                    // A refusal ends the connection (a client told 503 has
                    // no reason to keep it open); so does an address
                    // holding too many idle connections.
                    let upgraded = r.status() == StatusCode::SWITCHING_PROTOCOLS;
                    let refused = r.status() == StatusCode::SERVICE_UNAVAILABLE
                        || r.status() == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
                    if !upgraded && (refused || !slot.wait_again()) {
                        r.headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    Ok::<_, DropConnection>(r)
                }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::trace!(%peer, error = %e, "connection ended");
            }
        });
    }
}

/// Connections dropped at the accept: one warning a second at most (a flood
/// must not flood the log), with the count since the last one.
#[derive(Default)]
struct Dropped {
    since_warning: u64,
    last_warning: Option<tokio::time::Instant>,
}

impl Dropped {
    fn note(&mut self, peer: SocketAddr, why: &str) {
        self.since_warning = self.since_warning.saturating_add(1);
        let now = tokio::time::Instant::now();
        if self
            .last_warning
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            tracing::warn!(%peer, dropped = self.since_warning, "{why}: connection dropped");
            self.since_warning = 0;
            self.last_warning = Some(now);
        } else {
            tracing::debug!(%peer, "{why}: connection dropped");
        }
    }
}

fn header<'a, B>(req: &'a Request<B>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    if head_size(&req) > MAX_HEAD {
        tracing::debug!(%peer, "request head over {MAX_HEAD} bytes: refused");
        return Ok(respond(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request head too large\n",
        ));
    }
    if req.uri().path() == "/mqtt" {
        if super::ws::is_upgrade(&req) {
            return Ok(super::mqtt::conn::upgrade(req, shared, peer));
        }
        return Ok(respond(
            StatusCode::BAD_REQUEST,
            "MQTT here is over WebSocket only\n",
        ));
    }
    if !req.uri().path().ends_with("/diffusion") {
        return Ok(respond(StatusCode::NOT_FOUND, "not found\n"));
    }
    if super::ws::is_upgrade(&req) {
        return Ok(super::ws::upgrade(req, shared, peer));
    }
    let origin = req
        .headers()
        .get(ORIGIN)
        .filter(|o| shared.allow_origins.contains(o))
        .cloned();
    if req.method() == Method::OPTIONS {
        return Ok(with_cors(preflight(&req), origin));
    }
    if req.method() != Method::POST {
        return Ok(respond(StatusCode::METHOD_NOT_ALLOWED, ""));
    }
    let r = match header(&req, "m") {
        Some("0") => Ok(connect(req, &shared, peer).await),
        Some("1") => poll(req, &shared).await,
        Some("2") => send(req, &shared).await,
        _ => Ok(respond(StatusCode::BAD_REQUEST, "m must be 0, 1 or 2\n")),
    };
    r.map(|r| with_cors(r, origin))
}

/// The answer to a browser's CORS preflight: POST with the polling headers.
fn preflight<B>(req: &Request<B>) -> Response<Full<Bytes>> {
    let mut r = respond(StatusCode::NO_CONTENT, Bytes::new());
    let h = r.headers_mut();
    h.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    let asked = req
        .headers()
        .get(ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_static("m, c, s, ty, v, ca, r, sp, username, password, cs, ss")
        });
    h.insert(ACCESS_CONTROL_ALLOW_HEADERS, asked);
    h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    r
}

/// The size of a request head as it came: request line and header lines,
/// each with its CRLF, and the empty line. hyper bounds its read buffer, but
/// a head that arrives in one segment can get past that bound; this is the
/// exact check.
fn head_size<B>(req: &Request<B>) -> usize {
    let line =
        req.method().as_str().len() + req.uri().to_string().len() + " HTTP/1.1\r\n".len() + 1;
    req.headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + ": \r\n".len() + v.len())
        .fold(line + 2, usize::saturating_add)
}

/// Lets a browser page from `origin` read the answer (HTTP polling is the
/// browsers' transport), including the reconnect header. `origin` is the
/// request's `Origin` when it is one of the `--allow-origin` values, `None`
/// otherwise: then no CORS header is given and the browser keeps the answer
/// from the page.
fn with_cors(mut r: Response<Full<Bytes>>, origin: Option<HeaderValue>) -> Response<Full<Bytes>> {
    let h = r.headers_mut();
    // The answer depends on the Origin: caches must not share it.
    h.insert(VARY, HeaderValue::from_static("Origin"));
    if let Some(o) = origin {
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        h.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(RECONNECT_HEADER),
        );
    }
    r
}

async fn connect(
    req: Request<Incoming>,
    shared: &Shared,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    // Header values that are not visible ASCII cannot be fields: skipped.
    let request = ConnectionRequest::from_headers(
        req.headers()
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v))),
    );
    drop(req);
    let (tx, rx) = oneshot::channel::<Connected>();
    let command = Command::Connect {
        request,
        peer: peer.ip(),
        attach: Attach::Http,
        reply: tx,
    };
    if shared.hub.send(command).await.is_err() {
        return respond(StatusCode::SERVICE_UNAVAILABLE, "");
    }
    match rx.await {
        Ok(c) => connection_response(c.response),
        Err(_) => respond(StatusCode::SERVICE_UNAVAILABLE, ""),
    }
}

/// The answer to a connect: the connection response's bytes.
fn connection_response(response: Bytes) -> Response<Full<Bytes>> {
    let mut r = respond(StatusCode::OK, response);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r
}

fn token_of<B>(req: &Request<B>) -> Option<SessionToken> {
    req.headers()
        .get("c")
        .and_then(|v| SessionToken::from_bytes(v.as_bytes()))
}

async fn poll(
    req: Request<Incoming>,
    shared: &Shared,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let Some(token) = token_of(&req) else {
        return answer(HttpAnswer::Abort);
    };
    let sequence = header(&req, "s").unwrap_or("").to_owned();
    drop(req);
    let (tx, rx) = oneshot::channel();
    let command = Command::Poll {
        token,
        sequence,
        reply: tx,
    };
    ask(shared, command, rx).await
}

async fn send(
    req: Request<Incoming>,
    shared: &Shared,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let Some(token) = token_of(&req) else {
        return answer(HttpAnswer::Abort);
    };
    let sequence = header(&req, "s").unwrap_or("").to_owned();
    let limit = shared.limits.max_batch_text();
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = declared.is_some_and(|n| n > limit as u64);
    let (body, reading) = if too_large {
        (None, None)
    } else {
        // A place for the whole body, declared or as large as allowed,
        // taken at once: a reader never waits holding part of the budget.
        let need = declared.map_or(limit, |n| usize::try_from(n).unwrap_or(limit));
        let read = read_within(req.into_body(), limit, Some((&shared.reading, need)));
        match tokio::time::timeout(BODY_TIMEOUT, read).await {
            Ok(Ok(Some((b, reading)))) => (Some(b), reading),
            Ok(Ok(None)) => (None, None),
            // The client went away or stalled: nothing to answer.
            Ok(Err(())) | Err(_) => return Err(DropConnection),
        }
    };
    let (tx, rx) = oneshot::channel();
    let command = match body {
        Some(body) => Command::Send {
            token,
            sequence,
            body,
            reading,
            reply: tx,
        },
        None => Command::SendTooLarge { token, reply: tx },
    };
    ask(shared, command, rx).await
}

/// Reads a body of at most `limit` bytes: `Ok(None)` as soon as it crosses
/// the limit (the rest is never read), `Err` when the client fails.
#[cfg(test)]
pub async fn read_limited<B>(body: B, limit: usize) -> Result<Option<Bytes>, ()>
where
    B: Body<Data = Bytes> + Unpin,
{
    Ok(read_within(body, limit, None).await?.map(|(b, _)| b))
}

/// [`read_limited`], first taking `need` (at least the body's size) permits
/// from a budget, waiting while it is spent (back-pressure on every
/// sender); the permits for the bytes read come back with the body.
async fn read_within<B>(
    mut body: B,
    limit: usize,
    budget: Option<(&Arc<Semaphore>, usize)>,
) -> Result<Option<(Bytes, Option<OwnedSemaphorePermit>)>, ()>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut taken = match budget {
        Some((budget, need)) => {
            let n = u32::try_from(need).map_err(|_| ())?;
            Some(
                Arc::clone(budget)
                    .acquire_many_owned(n)
                    .await
                    .map_err(|_| ())?,
            )
        }
        None => None,
    };
    let hint = body.size_hint().lower();
    let start = usize::try_from(hint)
        .unwrap_or(limit)
        .min(limit)
        .min(64 * 1024);
    let mut buf = BytesMut::with_capacity(start);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ())?;
        if let Ok(data) = frame.into_data() {
            // Within `limit`, hence within the places taken: hyper ends a
            // body at its declared length.
            match buf.len().checked_add(data.len()) {
                Some(n) if n <= limit => buf.extend_from_slice(&data),
                _ => return Ok(None),
            }
        }
    }
    // Give back at once what the body did not use.
    if let Some(t) = taken.as_mut() {
        let unused = t.num_permits().saturating_sub(buf.len());
        drop(t.split(unused));
    }
    Ok(Some((buf.freeze(), taken)))
}

async fn ask(
    shared: &Shared,
    command: Command,
    rx: oneshot::Receiver<HttpAnswer>,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    if shared.hub.send(command).await.is_err() {
        return Err(DropConnection);
    }
    match rx.await {
        Ok(a) => answer(a),
        Err(_) => Err(DropConnection),
    }
}

fn abort_body() -> String {
    polling::encode_body(&[Message::Abort]).unwrap_or_default()
}

/// The HTTP response for a hub answer.
pub fn answer(a: HttpAnswer) -> Result<Response<Full<Bytes>>, DropConnection> {
    let mut r = match a {
        HttpAnswer::Body(text) => respond(StatusCode::OK, text),
        HttpAnswer::Ack => respond(StatusCode::OK, ""),
        HttpAnswer::Reconnect => {
            let mut r = respond(StatusCode::OK, "");
            r.headers_mut()
                .insert(RECONNECT_HEADER, HeaderValue::from_static("reconnect"));
            r
        }
        HttpAnswer::Abort => respond(StatusCode::OK, abort_body()),
        HttpAnswer::Drop => return Err(DropConnection),
    };
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Frame;
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A body that hands out its chunks one frame at a time.
    struct Chunks(VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn chunks(parts: &[&'static [u8]]) -> Chunks {
        Chunks(parts.iter().map(|p| Bytes::from_static(p)).collect())
    }

    #[tokio::test]
    async fn section_6_send_body_within_the_limit_is_read_whole() {
        let mut body = chunks(&[b"AAAA", b"AgA4", b"AQ=="]);
        let b = read_limited(&mut body, 12).await.unwrap();
        assert_eq!(b.as_deref(), Some(&b"AAAAAgA4AQ=="[..]));
    }

    #[tokio::test]
    async fn section_6_send_body_crossing_the_limit_stops_reading() {
        let mut body = chunks(&[b"AAAA", b"AgA4A", b"never read"]);
        let b = read_limited(&mut body, 8).await.unwrap();
        assert_eq!(b, None);
        assert_eq!(body.0.len(), 1, "reading stopped at the crossing");
    }

    #[test]
    fn cors_allowed_origin_is_reflected_with_credentials() {
        let req = Request::builder()
            .method(Method::OPTIONS)
            .header(ACCESS_CONTROL_REQUEST_HEADERS, "m, c, s")
            .body(())
            .unwrap();
        let r = with_cors(
            preflight(&req),
            Some(HeaderValue::from_static("http://app")),
        );
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "http://app");
        assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_HEADERS], "m, c, s");
        assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(r.headers()[ACCESS_CONTROL_EXPOSE_HEADERS], RECONNECT_HEADER);
        assert_eq!(r.headers()[VARY], "Origin");
    }

    #[test]
    fn cors_other_origins_get_no_cors_headers() {
        let r = with_cors(answer(HttpAnswer::Reconnect).unwrap(), None);
        for h in [
            ACCESS_CONTROL_ALLOW_ORIGIN,
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            ACCESS_CONTROL_EXPOSE_HEADERS,
        ] {
            assert!(r.headers().get(&h).is_none(), "{h}");
        }
        assert_eq!(r.headers()[VARY], "Origin");
    }

    #[test]
    fn http_head_size_counts_every_line_as_sent() {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/diffusion")
            .header("m", "1")
            .body(())
            .unwrap();
        // "POST /diffusion HTTP/1.1\r\n" "m: 1\r\n" "\r\n"
        assert_eq!(head_size(&req), 26 + 6 + 2);
    }

    #[test]
    fn section_6_answers_map_to_http() {
        let r = answer(HttpAnswer::Reconnect).unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[RECONNECT_HEADER], "reconnect");
        let r = answer(HttpAnswer::Abort).unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(abort_body(), "AAAAABw=");
        assert!(answer(HttpAnswer::Drop).is_err());
    }
}
