//! The floor for the server's request/response throughput: the least any
//! server of this protocol on tokio and tokio-tungstenite must do.
//!
//! It accepts WebSocket upgrades to a path ending in `/diffusion`, sends one
//! fixed connection response (code 100, no system pings), and answers every
//! SERVICE_REQUEST frame at once from its bytes: a USER_PING (service 56)
//! with a SERVICE_RESPONSE, any other service with a SERVICE_ERROR 100
//! "unknown service", both carrying the request's conversation id copied as
//! it came. A CLOSE_REQUEST closes the connection. There is no session
//! layer: no registry, no sequence counting, no queue limits, no timers, and
//! no validation beyond finding the two varints a reply needs; anything it
//! cannot answer ends the connection.
//!
//! Replies to the frames that arrived together are written together, as a
//! server that batches its writes does.

use std::net::SocketAddr;

use bytes::{BufMut as _, Bytes, BytesMut};
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The connection response the floor sends to every client: protocol byte
/// 0x23, version 29, code 100, session id (server part 1, value part 2), a
/// 24-character printable token, system ping period 0 (no pings) and a
/// maximum message size of 64 KiB.
pub const CONNECTED: [u8; 55] = {
    let mut r = [0u8; 55];
    r[0] = 0x23;
    r[1] = 29;
    r[2] = 100;
    r[10] = 1;
    r[18] = 2;
    let token = *b"floor-floor-floor-floor-";
    let mut i = 0;
    while i < token.len() {
        r[19 + i] = token[i];
        i += 1;
    }
    // r[43..51]: ping period 0. r[51..55]: 65,536 (MAX_MESSAGE).
    r[52] = 1;
    r
};

/// Largest WebSocket message the floor reads.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// SERVICE_REQUEST, SERVICE_RESPONSE, SERVICE_ERROR and CLOSE_REQUEST type
/// bytes.
const REQUEST: u8 = 0;
const RESPONSE: u8 = 6;
const ERROR: u8 = 7;
const CLOSE: u8 = 29;
/// USER_PING's service id, a one-byte varint.
const USER_PING: u8 = 56;
/// The SERVICE_ERROR tail: message length, "unknown service", code 100.
const UNKNOWN_SERVICE_TAIL: &[u8] = b"\x0funknown service\x64";

/// The length of the varint at the start of `bytes`, when one ends there.
fn varint_len(bytes: &[u8]) -> Option<usize> {
    let end = bytes.iter().take(10).position(|b| b & 0x80 == 0)?;
    Some(end + 1)
}

/// What the floor does with one client frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send these bytes (the answer to a service request).
    Send(Bytes),
    /// Nothing to answer (a client's SERVICE_RESPONSE).
    Nothing,
    /// End the connection (CLOSE_REQUEST, or a frame the floor cannot
    /// answer).
    End,
}

/// The reply to one client frame; `out` is scratch space for the answer.
pub fn reply(frame: &[u8], out: &mut BytesMut) -> Reply {
    match frame.split_first() {
        Some((&REQUEST, body)) => {
            let Some(service) = varint_len(body) else {
                return Reply::End;
            };
            let rest = &body[service..];
            let Some(conversation) = varint_len(rest).map(|n| &rest[..n]) else {
                return Reply::End;
            };
            if body[..service] == [USER_PING] {
                out.put_u8(RESPONSE);
                out.put_slice(conversation);
            } else {
                out.put_u8(ERROR);
                out.put_slice(conversation);
                out.put_slice(UNKNOWN_SERVICE_TAIL);
            }
            Reply::Send(out.split().freeze())
        }
        Some((&RESPONSE, _)) => Reply::Nothing,
        Some((&CLOSE, _)) | Some(_) | None => Reply::End,
    }
}

/// Accepts an upgrade whose path ends in `/diffusion` (query aside); any
/// other path gets 404.
// tokio-tungstenite's `Callback` fixes this signature, large error included.
#[allow(clippy::result_large_err)]
fn check_path(request: &Request, response: Response) -> Result<Response, ErrorResponse> {
    if request.uri().path().ends_with("/diffusion") {
        Ok(response)
    } else {
        let mut refusal = ErrorResponse::new(None);
        *refusal.status_mut() = StatusCode::NOT_FOUND;
        Err(refusal)
    }
}

/// Serves one connection until it ends.
async fn connection(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let Ok(mut ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(config)).await
    else {
        return;
    };
    if ws
        .send(WsMessage::Binary(Bytes::from_static(&CONNECTED)))
        .await
        .is_err()
    {
        return;
    }
    let mut out = BytesMut::with_capacity(4096);
    'read: while let Some(Ok(first)) = ws.next().await {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            let WsMessage::Binary(frame) = message else {
                if matches!(message, WsMessage::Ping(_) | WsMessage::Pong(_)) {
                    next = ws.next().now_or_never().flatten().and_then(Result::ok);
                    continue;
                }
                break 'read;
            };
            match reply(&frame, &mut out) {
                Reply::Send(bytes) => {
                    if ws.feed(WsMessage::Binary(bytes)).await.is_err() {
                        return;
                    }
                }
                Reply::Nothing => {}
                Reply::End => break 'read,
            }
            // Frames already read are answered before the flush.
            next = ws.next().now_or_never().flatten().and_then(Result::ok);
        }
        if ws.flush().await.is_err() {
            return;
        }
    }
    let _ = ws.close(None).await;
}

/// Accepts connections on `listener` and serves each on its own task, until
/// the task running this is dropped or aborted.
pub async fn serve(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream));
            }
            // Out of file descriptors or a connection reset before accept:
            // wait a moment rather than spin.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}

/// Binds `addr` and returns the listener with its bound address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_2_floor_connection_response_is_a_100_with_session_fields() {
        assert_eq!(&CONNECTED[..3], &[0x23, 29, 100]);
        assert!(CONNECTED[19..43].iter().all(u8::is_ascii_graphic));
        assert_eq!(CONNECTED.len(), 3 + 16 + 24 + 8 + 4);
        assert_eq!(CONNECTED[51..], (MAX_MESSAGE as u32).to_be_bytes());
    }

    #[test]
    fn section_3_floor_answers_user_ping_and_unknown_service() {
        let mut out = BytesMut::new();
        // USER_PING, conversation 300 (two varint bytes).
        let ping = [REQUEST, 56, 0xac, 0x02];
        assert_eq!(
            reply(&ping, &mut out),
            Reply::Send(Bytes::from_static(&[RESPONSE, 0xac, 0x02]))
        );
        let other = [REQUEST, 0xff, 0x7f, 5];
        let mut error = vec![ERROR, 5];
        error.extend_from_slice(UNKNOWN_SERVICE_TAIL);
        assert_eq!(reply(&other, &mut out), Reply::Send(Bytes::from(error)));
        assert_eq!(reply(&[RESPONSE, 1], &mut out), Reply::Nothing);
        assert_eq!(reply(&[CLOSE], &mut out), Reply::End);
        assert_eq!(reply(&[], &mut out), Reply::End);
        // Cut short: no conversation id, or a varint that never ends.
        assert_eq!(reply(&[REQUEST, 56], &mut out), Reply::End);
        assert_eq!(reply(&[REQUEST, 0x80], &mut out), Reply::End);
        assert_eq!(reply(&[REQUEST, 56, 0x80, 0x80], &mut out), Reply::End);
    }

    #[test]
    fn section_3_floor_ends_the_connection_on_every_prefix_of_a_request() {
        let mut out = BytesMut::new();
        for request in [&[REQUEST, 56, 0xac, 0x02][..], &[REQUEST, 0xff, 0x7f, 5]] {
            for end in 0..request.len() {
                assert_eq!(
                    reply(&request[..end], &mut out),
                    Reply::End,
                    "{:02x?}",
                    &request[..end]
                );
            }
            assert!(matches!(reply(request, &mut out), Reply::Send(_)));
        }
    }
}
