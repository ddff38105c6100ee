//! WebSocket connections (PROTOCOL.md sections 2, 3, 5 and 7).
//!
//! The upgrade is answered by hyper (101, no subprotocol, no extension:
//! permessage-deflate is declined); the connection then runs as one task
//! with tokio-tungstenite: the first message it writes is the binary
//! connection response, then one protocol message per binary WebSocket
//! message each way. A text frame from the client is an invalid message; a
//! message over `--max-message-size` is refused by the WebSocket layer
//! before it is buffered (MESSAGE_TOO_LARGE).
//!
//! On the hub's [`Out::Close`] the task writes the ABORT it carries (if any)
//! and then ends the WebSocket with a close frame, or just drops the socket
//! (recoverable reasons, so that the client reconnects).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::Full;
use hyper::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sessionwire::session::handshake::ConnectionRequest;
use sessionwire::session::SessionToken;
use sessionwire::{Field, Violation, ViolationKind};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use super::hub::{Attach, Command, Connected, Out, WsConn, CONN_QUEUE};
use super::Shared;

/// How long the last writes (ABORT, close frame) may take.
const FINAL_WRITE: Duration = Duration::from_secs(1);

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

/// Answers an upgrade request with 101 and starts the connection task.
pub fn upgrade<B>(
    mut req: Request<B>,
    shared: Arc<Shared>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let version_ok = req
        .headers()
        .get("sec-websocket-version")
        .is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY).cloned() else {
        return super::http::respond(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    if req.method() != Method::GET || !version_ok {
        let mut r = super::http::respond(StatusCode::BAD_REQUEST, "");
        r.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("13"));
        return r;
    }
    let target = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_default();
    let request = ConnectionRequest::from_query(&target);
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    drop(req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                shared.ws_tasks.fetch_add(1, Ordering::AcqRel);
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(shared.ws_config),
                )
                .await;
                run(ws, request, &shared).await;
                shared.ws_tasks.fetch_sub(1, Ordering::AcqRel);
            }
            Err(e) => tracing::debug!(%peer, error = %e, "upgrade failed"),
        }
    });
    let mut r = super::http::respond(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    r
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
        // Closed, reset without a closing handshake, broken framing: the
        // connection is gone.
        _ => Err(false),
    }
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

async fn run(mut ws: Ws, request: Result<ConnectionRequest, Violation>, shared: &Shared) {
    let authenticated = shared.authenticate(&request).await;
    let conn = shared.next_conn();
    let (tx, mut rx) = mpsc::channel(CONN_QUEUE);
    let blocked = Arc::new(AtomicBool::new(false));
    let (reply_tx, reply_rx) = oneshot::channel::<Connected>();
    let command = Command::Connect {
        request,
        authenticated,
        attach: Attach::WebSocket(WsConn {
            conn,
            tx,
            blocked: Arc::clone(&blocked),
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
        let _ = tokio::time::timeout(FINAL_WRITE, ws.close(None)).await;
        return;
    };
    if sent.is_err() {
        lost(shared, token, conn, true).await;
        return;
    }
    let limit = shared.limits.max_message_size();
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Out::Message(b)) => {
                    if ws.send(WsMessage::Binary(b)).await.is_err() {
                        lost(shared, token, conn, true).await;
                        return;
                    }
                    if blocked.swap(false, Ordering::AcqRel) {
                        let _ = shared.hub.send(Command::Writable { token, conn }).await;
                    }
                }
                Some(Out::Close { last, frame }) => {
                    finish(ws, last, frame).await;
                    return;
                }
                // The hub is gone (shutdown).
                None => return,
            },
            msg = ws.next() => {
                let command = match msg {
                    Some(Ok(WsMessage::Binary(data))) => Command::Inbound { token, conn, data },
                    Some(Ok(WsMessage::Text(_))) => Command::Fault {
                        token,
                        conn,
                        violation: Violation::new(
                            ViolationKind::MalformedField(Field::Named("text frame")),
                            0,
                        ),
                    },
                    // Control frames: tungstenite answers pings itself.
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => continue,
                    Some(Ok(WsMessage::Close(_))) | None => {
                        lost(shared, token, conn, false).await;
                        return;
                    }
                    Some(Err(e)) => match classify(&e, limit) {
                        Ok(violation) => Command::Fault { token, conn, violation },
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
                    // The session closes: wait for its last words (ABORT),
                    // reading nothing more.
                    if let Ok(Some(Out::Close { last, frame })) =
                        tokio::time::timeout(FINAL_WRITE, async {
                            loop {
                                match rx.recv().await {
                                    Some(Out::Message(_)) => continue,
                                    other => return other,
                                }
                            }
                        })
                        .await
                    {
                        finish(ws, last, frame).await;
                    }
                    return;
                }
            }
        }
    }
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

/// Writes the last message (ABORT) and ends the connection: a close frame,
/// or just dropping the socket.
async fn finish(mut ws: Ws, last: Option<Bytes>, frame: bool) {
    let _ = tokio::time::timeout(FINAL_WRITE, async {
        if let Some(b) = last {
            if ws.send(WsMessage::Binary(b)).await.is_err() {
                return;
            }
        }
        if frame {
            let _ = ws.close(None).await;
        }
    })
    .await;
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
    fn section_1_oversized_message_is_message_too_large() {
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
    }
}
