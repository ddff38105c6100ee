//! WebSocket connections (docs/protocol.md sections 2, 3, 5 and 7).
//!
//! The upgrade is answered by hyper (101, no subprotocol, no extension:
//! permessage-deflate is declined); the connection then runs as one task
//! with tokio-tungstenite: the first message it writes is the binary
//! connection response, then one protocol message per binary WebSocket
//! message each way. A text frame from the client is an invalid message; a
//! message over `--max-message-size` is refused by the WebSocket layer
//! before it is buffered (MESSAGE_TOO_LARGE).
//!
//! RFC 6455: the upgrade needs a `Sec-WebSocket-Key` that is base64 of 16
//! bytes (else 400) and a free WebSocket slot, taken before the 101 (else
//! 503); a client's close frame is answered with a close frame; one with a
//! code that must not be sent, a 1-byte payload or a reason that is not
//! UTF-8 closes the session INVALID_INBOUND_MESSAGE.
//!
//! On the hub's [`Out::Close`] the task writes the ABORT it carries (if any)
//! and then ends the WebSocket with a close frame, or just drops the socket
//! (recoverable reasons, so that the client reconnects).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::Full;
use hyper::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    UPGRADE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sessionwire::session::handshake::ConnectionRequest;
use sessionwire::session::SessionToken;
use sessionwire::{Field, Violation, ViolationKind};
use tokio::io::AsyncReadExt as _;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use super::channel::{Attach, Command, ConnSignal, Connected, Out, WsConn, CONN_QUEUE};
use super::Shared;

/// WebSocket connections allowed beyond --max-clients (closing ones, refused
/// ones being answered).
pub(crate) const WS_SLACK: usize = 256;

/// How long the hub's close order may take to arrive once signalled.
const FINAL_WRITE: Duration = Duration::from_secs(1);
/// How long the last writes (ABORT, close frame) may wait for a client that
/// is slow to read.
const LINGER: Duration = Duration::from_secs(5);
/// How long to wait for the client's close frame after ours.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Whether the request asks for a WebSocket upgrade.
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    let has = |name, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|p| p.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    has(UPGRADE, "websocket") && has(CONNECTION, "upgrade")
}

/// Checks an upgrade request (RFC 6455 section 4.2.1: GET, version 13, a
/// valid key) and takes a WebSocket slot; `Ok` holds the slot, which the
/// connection task keeps, and the `Sec-WebSocket-Accept` value. Shared by
/// the protocol's upgrades and MQTT's (`/mqtt`).
pub(crate) fn check_upgrade<B>(
    req: &Request<B>,
    shared: &Shared,
    peer: SocketAddr,
) -> Result<(OwnedSemaphorePermit, String), Box<Response<Full<Bytes>>>> {
    let version_ok = req
        .headers()
        .get("sec-websocket-version")
        .is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY) else {
        return Err(Box::new(super::response::respond(
            StatusCode::BAD_REQUEST,
            "missing Sec-WebSocket-Key\n",
        )));
    };
    if req.method() != Method::GET || !version_ok {
        let mut r = super::response::respond(StatusCode::BAD_REQUEST, "");
        r.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("13"));
        return Err(Box::new(r));
    }
    if !valid_key(key.as_bytes()) {
        return Err(Box::new(super::response::respond(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key must be base64 of 16 bytes\n",
        )));
    }
    // Every session has at most one WebSocket; a few more may be closing.
    // The slot is taken here, before the 101, and held by the connection
    // task: a burst of upgrades cannot get more 101s than there are slots.
    let Ok(slot) = Arc::clone(&shared.ws_slots).try_acquire_owned() else {
        // Debug, not warn: a burst would flood the log with one line each.
        tracing::debug!(%peer, "too many WebSocket connections: upgrade refused");
        return Err(Box::new(super::response::respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy\n",
        )));
    };
    Ok((slot, derive_accept_key(key.as_bytes())))
}

/// The 101 answer, with the accept key and the chosen subprotocol if any.
pub(crate) fn switching(accept: &str, protocol: Option<&'static str>) -> Response<Full<Bytes>> {
    let mut r = super::response::respond(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(accept) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = protocol {
        h.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    r
}

/// Answers an upgrade request with 101 and starts the connection task.
pub fn upgrade<B>(req: Request<B>, shared: Arc<Shared>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let (slot, accept) = match check_upgrade(&req, &shared, peer) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let target = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_default();
    let request = ConnectionRequest::from_query(&target);
    let config = shared.ws_config;
    spawn_upgraded(
        req,
        slot,
        shared,
        peer,
        config,
        move |ws, shared| async move {
            run(ws, request, &shared, peer).await;
        },
    );
    switching(&accept, None)
}

/// Spawns the connection task for when hyper hands the upgraded socket
/// over: the task holds the WebSocket slot and counts among the tasks
/// shutdown waits for; `config` sets the WebSocket's limits.
pub(crate) fn spawn_upgraded<B, F, Fut>(
    mut req: Request<B>,
    slot: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    peer: SocketAddr,
    config: WebSocketConfig,
    task: F,
) where
    F: FnOnce(Ws, Arc<Shared>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let on_upgrade = hyper::upgrade::on(&mut req);
    drop(req);
    tokio::spawn(async move {
        let _slot = slot;
        match on_upgrade.await {
            Ok(upgraded) => {
                shared.ws_tasks.fetch_add(1, Ordering::AcqRel);
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                task(ws, Arc::clone(&shared)).await;
                shared.ws_tasks.fetch_sub(1, Ordering::AcqRel);
            }
            Err(e) => tracing::debug!(%peer, error = %e, "upgrade failed"),
        }
    });
}

/// How a WebSocket read ended or failed.
fn classify(e: &WsError, limit: usize) -> Result<Violation, bool> {
    match e {
        WsError::Capacity(_) => Ok(Violation::new(
            ViolationKind::MessageTooLarge {
                size: u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1),
                limit,
            },
            limit,
        )),
        WsError::Io(io) => Err(!matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionAborted
        )),
        // Bytes that are no valid WebSocket frame (reserved bits, unmasked
        // or unknown frames, ...) or a text frame that is not even UTF-8:
        // not a valid message.
        WsError::Protocol(p)
            if !matches!(
                p,
                ProtocolError::ResetWithoutClosingHandshake
                    | ProtocolError::SendAfterClosing
                    | ProtocolError::ReceivedAfterClosing
            ) =>
        {
            Ok(frame_fault())
        }
        WsError::Utf8(_) => Ok(frame_fault()),
        // Closed, or reset without a closing handshake: the connection is
        // gone.
        _ => Err(false),
    }
}

/// A frame the protocol does not allow (a text frame, broken framing).
fn frame_fault() -> Violation {
    Violation::new(
        ViolationKind::MalformedField(Field::Named("websocket frame")),
        0,
    )
}

/// Whether a client's close frame carried a code RFC 6455 section 7.4 does
/// not allow on the wire (below 1000, 1004 to 1006, 1015, 1016 to 2999,
/// 5000 and up). tungstenite hands such a frame on with the code replaced
/// by 1002 and this reason (and answers it with that 1002 itself), so that
/// pair is what an invalid code looks like from here.
fn replaced_close_code(frame: &CloseFrame) -> bool {
    frame.code == CloseCode::Protocol && frame.reason.as_str() == TUNGSTENITE_REPLACED_REASON
}

/// The reason tungstenite puts in place of an invalid close code's frame.
const TUNGSTENITE_REPLACED_REASON: &str = "Protocol violation";

/// A close frame with a code that must not be sent.
fn close_code_fault() -> Violation {
    Violation::new(
        ViolationKind::MalformedField(Field::Named("websocket close code")),
        0,
    )
}

/// A WebSocket over an upgraded HTTP/1.1 connection.
pub(crate) type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Whether a `Sec-WebSocket-Key` is what RFC 6455 section 4.1 asks: the
/// base64 of 16 bytes (so 24 characters, padding included).
fn valid_key(key: &[u8]) -> bool {
    use base64::Engine as _;
    let mut out = [0u8; 18];
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode_slice(key, &mut out)
            .is_ok_and(|n| n == 16)
}

async fn run(
    mut ws: Ws,
    request: Result<ConnectionRequest, Violation>,
    shared: &Shared,
    peer: SocketAddr,
) {
    let conn = shared.next_conn();
    let (tx, mut rx) = mpsc::channel(CONN_QUEUE);
    let signal = Arc::new(ConnSignal::default());
    let (reply_tx, reply_rx) = oneshot::channel::<Connected>();
    let command = Command::Connect {
        request,
        peer: peer.ip(),
        attach: Attach::WebSocket(WsConn {
            conn,
            tx,
            signal: Arc::clone(&signal),
        }),
        reply: reply_tx,
    };
    if shared.hub.send(command).await.is_err() {
        return;
    }
    let Ok(connected) = reply_rx.await else {
        return;
    };
    // Section 2: the connection response is the first message.
    let sent = ws.send(WsMessage::Binary(connected.response)).await;
    let Some(token) = connected.token else {
        // Refused: close after the response.
        finish(ws, CloseOrder::frame_only()).await;
        return;
    };
    if sent.is_err() {
        lost(shared, token, conn, true).await;
        return;
    }
    let limit = shared.limits.max_message_size();
    // A frame read past the end of a batch, handled before reading again.
    let mut carried: Option<Option<Result<WsMessage, WsError>>> = None;
    loop {
        let msg = match carried.take() {
            Some(msg) => msg,
            None => tokio::select! {
                out = rx.recv() => {
                    match write_ready(&mut ws, &mut rx, &signal, out).await {
                        Written::Flushed => {}
                        Written::Closed(order) => {
                            if let Some(order) = order {
                                finish(ws, order).await;
                            }
                            return;
                        }
                        Written::Failed => {
                            lost(shared, token, conn, true).await;
                            return;
                        }
                    }
                    if signal.blocked.swap(false, Ordering::AcqRel) {
                        let _ = shared.hub.send(Command::Writable { token, conn }).await;
                    }
                    continue;
                }
                msg = ws.next() => msg,
            },
        };
        let command = match msg {
            Some(Ok(WsMessage::Binary(data))) => {
                let data = read_ready(&mut ws, data, limit, &mut carried).await;
                Command::Inbound { token, conn, data }
            }
            Some(Ok(WsMessage::Text(_))) => Command::Fault {
                token,
                conn,
                violation: frame_fault(),
            },
            // Control frames: tungstenite answers pings itself.
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => continue,
            Some(Ok(WsMessage::Close(Some(frame)))) if replaced_close_code(&frame) => {
                Command::Fault {
                    token,
                    conn,
                    violation: close_code_fault(),
                }
            }
            Some(Ok(WsMessage::Close(_))) => {
                // RFC 6455 section 5.5.1: answer with a close frame before
                // the socket goes (tungstenite queued it, echoing the code;
                // flushing writes it).
                let _ = tokio::time::timeout(CLOSE_WAIT, ws.flush()).await;
                lost(shared, token, conn, false).await;
                return;
            }
            None => {
                lost(shared, token, conn, false).await;
                return;
            }
            Some(Err(e)) => match classify(&e, limit) {
                Ok(violation) => Command::Fault {
                    token,
                    conn,
                    violation,
                },
                Err(io_error) => {
                    lost(shared, token, conn, io_error).await;
                    return;
                }
            },
        };
        let fault = matches!(command, Command::Fault { .. });
        if shared.hub.send(command).await.is_err() {
            return;
        }
        if fault {
            // The session closes: wait for its last words (ABORT), reading
            // nothing more.
            if let Some(order) = close_order(&mut rx).await {
                finish(ws, order).await;
            }
            return;
        }
    }
}

/// Most messages read into one [`Command::Inbound`].
const READ_BATCH: usize = 32;
/// Most messages fed before one flush.
const WRITE_BATCH: usize = 64;

/// Gathers, after `first`, the binary messages already buffered or readable
/// without waiting: at most [`READ_BATCH`] and `limit` bytes in all (so that
/// a command into the hub holds no more than one largest message could),
/// control frames skipped. Anything else read (a message that does not fit,
/// another frame, an error, the end) goes to `carried`, handled next.
async fn read_ready(
    ws: &mut Ws,
    first: Bytes,
    limit: usize,
    carried: &mut Option<Option<Result<WsMessage, WsError>>>,
) -> Vec<Bytes> {
    let mut bytes = first.len();
    let mut batch = Vec::with_capacity(READ_BATCH);
    batch.push(first);
    while batch.len() < READ_BATCH {
        // Polled once with this task's waker: pending means nothing is
        // buffered and the socket has nothing to read now.
        let ready = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match ws.poll_next_unpin(cx) {
                std::task::Poll::Ready(msg) => Some(msg),
                std::task::Poll::Pending => None,
            })
        })
        .await;
        match ready {
            None => break,
            Some(Some(Ok(WsMessage::Binary(data))))
                if bytes.checked_add(data.len()).is_some_and(|b| b <= limit) =>
            {
                bytes += data.len();
                batch.push(data);
            }
            Some(Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_)))) => {}
            Some(other) => {
                *carried = Some(other);
                break;
            }
        }
    }
    batch
}

/// How [`write_ready`] ended.
enum Written {
    /// Everything fed was flushed.
    Flushed,
    /// The session closes with this order (`None`: the hub is gone, or
    /// its order did not come): the task ends.
    Closed(Option<CloseOrder>),
    /// A write failed: the connection is lost.
    Failed,
}

/// Feeds the batch `first` and every batch already queued for the
/// connection (until [`WRITE_BATCH`] messages), then flushes once: one
/// system call for what the hub answered together. A close order met on
/// the way is handed back (what was fed goes out with its last writes).
async fn write_ready(
    ws: &mut Ws,
    rx: &mut mpsc::Receiver<Out>,
    signal: &ConnSignal,
    first: Option<Out>,
) -> Written {
    let mut next = first;
    let mut fed = 0usize;
    loop {
        match next {
            Some(Out::Messages(batch)) => {
                signal.queued.fetch_sub(batch.len(), Ordering::AcqRel);
                let mut batch = batch.into_iter();
                while let Some(b) = batch.next() {
                    // `feed` buffers the message (waiting first for room
                    // when the client is slow). The wait ends when the
                    // session closes meanwhile.
                    let ok = tokio::select! {
                        r = ws.feed(WsMessage::Binary(b.clone())) => r.is_ok(),
                        () = signal.closing.notified() => {
                            // Not buffered: they go first in the last writes.
                            let mut order = close_order(rx).await;
                            if let Some(order) = order.as_mut() {
                                let rest: Vec<Bytes> = std::iter::once(b).chain(batch).collect();
                                order.before.splice(0..0, rest);
                            }
                            return Written::Closed(order);
                        }
                    };
                    if !ok {
                        return Written::Failed;
                    }
                    fed = fed.saturating_add(1);
                }
            }
            Some(Out::Close { last, frame }) => {
                return Written::Closed(Some(CloseOrder {
                    before: Vec::new(),
                    last,
                    frame,
                }));
            }
            // The hub is gone (shutdown).
            None => return Written::Closed(None),
        }
        if fed >= WRITE_BATCH {
            break;
        }
        match rx.try_recv() {
            Ok(out) => next = Some(out),
            Err(_) => break,
        }
    }
    let flushed = tokio::select! {
        r = ws.flush() => r.is_ok(),
        () = signal.closing.notified() => return Written::Closed(close_order(rx).await),
    };
    if flushed {
        Written::Flushed
    } else {
        Written::Failed
    }
}

/// The hub's close order: the messages queued before it, the last message
/// (ABORT) and whether to send a close frame.
struct CloseOrder {
    before: Vec<Bytes>,
    last: Option<Bytes>,
    frame: bool,
}

impl CloseOrder {
    /// Nothing more to write but the close frame.
    fn frame_only() -> CloseOrder {
        CloseOrder {
            before: Vec::new(),
            last: None,
            frame: true,
        }
    }
}

/// Waits (bounded) for the hub's close order.
async fn close_order(rx: &mut mpsc::Receiver<Out>) -> Option<CloseOrder> {
    tokio::time::timeout(FINAL_WRITE, async {
        let mut before = Vec::new();
        loop {
            match rx.recv().await {
                // What was queued before the close: at most CONN_QUEUE
                // messages and what the session still had queued.
                Some(Out::Messages(b)) => before.extend(b),
                Some(Out::Close { last, frame }) => {
                    return Some(CloseOrder {
                        before,
                        last,
                        frame,
                    })
                }
                None => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

async fn lost(shared: &Shared, token: SessionToken, conn: u64, io_error: bool) {
    let _ = shared
        .hub
        .send(Command::Lost {
            token,
            conn,
            io_error,
        })
        .await;
}

/// Writes what is left and the last message (ABORT), then ends the
/// connection with a close frame; or just drops the socket (recoverable
/// reasons). While writing, and a moment after, what the client sends is
/// read and discarded, so that the socket ends with a FIN rather than a reset
/// that could destroy the last messages before the client reads them.
/// Bounded in time by [`LINGER`]: a client that does not read loses them.
async fn finish(ws: Ws, order: CloseOrder) {
    if !order.frame && order.last.is_none() {
        return;
    }
    let _ = tokio::time::timeout(LINGER, finish_writes(ws, order)).await;
}

async fn finish_writes(ws: Ws, order: CloseOrder) {
    let (mut sink, mut stream) = ws.split();
    let write = async move {
        for b in order.before.into_iter().chain(order.last) {
            if sink.send(WsMessage::Binary(b)).await.is_err() {
                break;
            }
        }
        if order.frame {
            let _ = sink.close().await;
        }
        sink
    };
    tokio::pin!(write);
    // Read (and discard) while writing, so that a client blocked on its own
    // writes gets to read ours.
    let mut frames_ok = true;
    let sink = loop {
        tokio::select! {
            sink = &mut write => break sink,
            msg = stream.next(), if frames_ok => {
                if !matches!(msg, Some(Ok(_))) {
                    frames_ok = false;
                }
            }
        }
    };
    let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
    if frames_ok {
        // Until the client's close frame, or its end.
        let _ = tokio::time::timeout_at(deadline, async {
            while let Some(Ok(_)) = stream.next().await {}
        })
        .await;
    }
    // Then raw bytes (framing may be broken: the fault that closed the
    // session), until the client closes its side.
    if let Ok(mut ws) = stream.reunite(sink) {
        let io = ws.get_mut();
        let mut buf = [0u8; 1024];
        let _ = tokio::time::timeout_at(deadline, async {
            while let Ok(n) = io.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_2_upgrade_needs_upgrade_and_connection_tokens() {
        let req = |upgrade: &str, connection: &str| {
            Request::builder()
                .header(UPGRADE, upgrade)
                .header(CONNECTION, connection)
                .body(())
                .unwrap()
        };
        assert!(is_upgrade(&req("websocket", "Upgrade")));
        assert!(is_upgrade(&req("WebSocket", "keep-alive, Upgrade")));
        assert!(!is_upgrade(&req("h2c", "Upgrade")));
        assert!(!is_upgrade(&req("websocket", "keep-alive")));
    }

    #[test]
    fn section_1_transport_faults_map_to_their_close_reasons() {
        let e = WsError::Capacity(
            tokio_tungstenite::tungstenite::error::CapacityError::MessageTooLong {
                size: 40_000,
                max_size: 32_768,
            },
        );
        let v = classify(&e, 32_768).unwrap();
        assert_eq!(v.close_reason(), sessionwire::CloseReason::MessageTooLarge);
        let reset = WsError::Io(std::io::ErrorKind::ConnectionReset.into());
        assert_eq!(classify(&reset, 1), Err(false));
        let other = WsError::Io(std::io::ErrorKind::PermissionDenied.into());
        assert_eq!(classify(&other, 1), Err(true));
        assert_eq!(classify(&WsError::ConnectionClosed, 1), Err(false));
        let reset = WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake);
        assert_eq!(classify(&reset, 1), Err(false));
        let unmasked = WsError::Protocol(ProtocolError::UnmaskedFrameFromClient);
        let v = classify(&unmasked, 1).unwrap();
        assert_eq!(
            v.close_reason(),
            sessionwire::CloseReason::InvalidInboundMessage
        );
    }
}
