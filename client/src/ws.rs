//! The WebSocket transport (docs/protocol.md section 2): one binary WebSocket
//! message per protocol message, counted on both sides.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use sessionwire::message::service::{SYSTEM_PING, USER_PING};
use sessionwire::message::{ServiceRequest, ServiceResponse};
use sessionwire::session::handshake::ConnectionResponse;
use sessionwire::session::SessionToken;
use sessionwire::{Limits, Message, Violation};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use super::{ClientError, ConnectOptions};

/// Something that arrived on a WebSocket session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// A protocol message that decoded.
    Message(Message),
    /// A binary WebSocket message that is not a valid protocol message.
    Invalid {
        /// The bytes as received.
        bytes: Bytes,
        /// Why they do not decode.
        violation: Violation,
    },
    /// A text WebSocket message (never valid in this protocol).
    Text(String),
    /// The server closed the WebSocket with a close frame (or without one:
    /// `None`).
    Closed(Option<CloseFrame>),
    /// The connection dropped without a WebSocket close (reset, end of
    /// stream, or a protocol error on the socket).
    Dropped(String),
}

impl Inbound {
    /// Whether the connection is over.
    pub fn is_end(&self) -> bool {
        matches!(self, Inbound::Closed(_) | Inbound::Dropped(_))
    }
}

/// A session over WebSocket. Counts the protocol messages it sends and
/// receives (ABORT is not counted, as section 6 says) so a test can reconnect
/// with the right `cs` and `ss`.
#[derive(Debug)]
pub struct WsClient {
    ws: WebSocketStream<TcpStream>,
    response: ConnectionResponse,
    limits: Limits,
    sent: u32,
    received: u32,
    next_conversation: u64,
    answer_pings: bool,
    pings_answered: u64,
    backlog: VecDeque<Inbound>,
    ended: bool,
}

impl WsClient {
    /// Opens a session: TCP connect, WebSocket upgrade to the request target
    /// of `options`, then reads the connection response (the first message).
    ///
    /// A rejection (113, 115, ...) is not an error: look at
    /// [`response`](Self::response); the server then closes the socket.
    pub async fn connect(
        addr: SocketAddr,
        options: &ConnectOptions,
    ) -> Result<WsClient, ClientError> {
        let (ws, _http) = Self::upgrade(addr, options).await?;
        let mut client = WsClient {
            ws,
            response: ConnectionResponse::rejection(
                sessionwire::session::ResponseCode::ServerNotReady,
            ),
            // The client decodes what the server sends with generous bounds:
            // it is the server's limits that the tests are about.
            limits: Limits::builder()
                .max_message_size(16 << 20)
                .build()
                .unwrap_or_default(),
            sent: 0,
            received: 0,
            next_conversation: 1,
            answer_pings: true,
            pings_answered: 0,
            backlog: VecDeque::new(),
            ended: false,
        };
        client.response = client.read_response().await?;
        Ok(client)
    }

    /// Only the TCP connect and the WebSocket upgrade: the caller reads the
    /// stream (to see, say, a text frame where the response should be).
    pub async fn upgrade(
        addr: SocketAddr,
        options: &ConnectOptions,
    ) -> Result<
        (
            WebSocketStream<TcpStream>,
            tokio_tungstenite::tungstenite::handshake::client::Response,
        ),
        ClientError,
    > {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(size) = options.recv_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        let url = format!("ws://{addr}{}", options.ws_target());
        let config = WebSocketConfig::default()
            .read_buffer_size(options.read_buffer)
            .write_buffer_size(0);
        let (ws, response) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
        Ok((ws, response))
    }

    async fn read_response(&mut self) -> Result<ConnectionResponse, ClientError> {
        loop {
            match self.ws.next().await {
                Some(Ok(WsMessage::Binary(b))) => {
                    return ConnectionResponse::decode(&b).map_err(ClientError::Handshake)
                }
                Some(Ok(WsMessage::Text(_))) => return Err(ClientError::TextResponse),
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {}
                Some(Ok(WsMessage::Close(_))) | None => return Err(ClientError::Closed),
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// The connection response.
    pub fn response(&self) -> &ConnectionResponse {
        &self.response
    }

    /// The session token, when the server connected the session.
    pub fn token(&self) -> Option<SessionToken> {
        self.response.session.map(|s| s.token)
    }

    /// Protocol messages sent so far (the client's count: CLOSE_REQUEST
    /// included, raw bytes not).
    pub fn sent(&self) -> u32 {
        self.sent
    }

    /// Protocol messages received so far (ABORT not counted).
    pub fn received(&self) -> u32 {
        self.received
    }

    /// Sets both counters, for a session resumed on this connection: the
    /// messages the client had sent and received before.
    pub fn resume_counts(&mut self, sent: u32, received: u32, next_conversation: u64) {
        self.sent = sent;
        self.received = received;
        self.next_conversation = next_conversation;
    }

    /// SYSTEM_PINGs answered by [`recv`](Self::recv) so far.
    pub fn pings_answered(&self) -> u64 {
        self.pings_answered
    }

    /// Whether [`recv`](Self::recv) answers SYSTEM_PING itself (the default)
    /// or hands it to the caller. Turn it off for a client that goes silent.
    pub fn set_answer_pings(&mut self, on: bool) {
        self.answer_pings = on;
    }

    /// The next conversation id for a request of this client (from 1 up).
    pub fn next_conversation(&mut self) -> u64 {
        let c = self.next_conversation;
        self.next_conversation += 1;
        c
    }

    /// Sends one protocol message (counted).
    pub async fn send(&mut self, message: &Message) -> Result<(), ClientError> {
        self.ws.send(WsMessage::Binary(message.to_bytes())).await?;
        self.sent = self.sent.wrapping_add(1);
        Ok(())
    }

    /// Sends bytes as one binary WebSocket message, whatever they hold (not
    /// counted).
    pub async fn send_raw(&mut self, bytes: impl Into<Bytes>) -> Result<(), ClientError> {
        self.ws.send(WsMessage::Binary(bytes.into())).await?;
        Ok(())
    }

    /// Sends any WebSocket message (a text frame, a ping, a close...).
    pub async fn send_ws(&mut self, message: WsMessage) -> Result<(), ClientError> {
        self.ws.send(message).await?;
        Ok(())
    }

    /// Writes `payload` as one masked binary frame, one byte at a time with
    /// `delay` between bytes, straight to the socket: a slow client. Counted
    /// as a sent message.
    pub async fn send_trickled(
        &mut self,
        payload: Bytes,
        delay: Duration,
    ) -> Result<(), ClientError> {
        let mut frame = Frame::message(payload, OpCode::Data(Data::Binary), true);
        frame.header_mut().mask = Some(rand_mask());
        let mut wire = Vec::new();
        frame.format(&mut wire)?;
        // Everything tungstenite wrote is flushed (send awaits the flush), so
        // writing under it keeps the frame stream intact.
        let socket = self.ws.get_mut();
        for b in wire {
            socket.write_all(&[b]).await?;
            socket.flush().await?;
            tokio::time::sleep(delay).await;
        }
        self.sent = self.sent.wrapping_add(1);
        Ok(())
    }

    /// Sends a USER_PING and waits for its SERVICE_RESPONSE, answering
    /// SYSTEM_PINGs meanwhile; other messages are kept for
    /// [`recv`](Self::recv). Returns the round trip.
    pub async fn user_ping(&mut self) -> Result<Duration, ClientError> {
        let conversation = self.next_conversation();
        let start = Instant::now();
        self.send(&user_ping(conversation)).await?;
        let mut kept = VecDeque::new();
        let result = loop {
            match self.recv().await? {
                Inbound::Message(Message::ServiceResponse(r)) if r.conversation == conversation => {
                    break Ok(start.elapsed());
                }
                end if end.is_end() => {
                    kept.push_back(end);
                    break Err(ClientError::Closed);
                }
                other => kept.push_back(other),
            }
        };
        self.backlog.extend(kept);
        result
    }

    /// Reads the next thing that arrives, without answering anything: safe
    /// to cancel (in `select!`). SYSTEM_PINGs are returned like any message.
    pub async fn read(&mut self) -> Inbound {
        if let Some(i) = self.backlog.pop_front() {
            return i;
        }
        if self.ended {
            return Inbound::Dropped("already ended".to_owned());
        }
        loop {
            let inbound = match self.ws.next().await {
                Some(Ok(WsMessage::Binary(b))) => match Message::decode(&b, &self.limits) {
                    Ok(m) => {
                        if m != Message::Abort {
                            self.received = self.received.wrapping_add(1);
                        }
                        Inbound::Message(m)
                    }
                    Err(violation) => Inbound::Invalid {
                        bytes: b,
                        violation,
                    },
                },
                Some(Ok(WsMessage::Text(t))) => Inbound::Text(t.to_string()),
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => continue,
                Some(Ok(WsMessage::Close(frame))) => Inbound::Closed(frame),
                Some(Err(e)) => Inbound::Dropped(e.to_string()),
                None => Inbound::Dropped("end of stream".to_owned()),
            };
            if inbound.is_end() {
                self.ended = true;
            }
            return inbound;
        }
    }

    /// Reads the next thing that arrives; answers SYSTEM_PING itself unless
    /// turned off with [`set_answer_pings`](Self::set_answer_pings).
    pub async fn recv(&mut self) -> Result<Inbound, ClientError> {
        loop {
            let inbound = self.read().await;
            if let Inbound::Message(Message::ServiceRequest(req)) = &inbound {
                if self.answer_pings && req.service == SYSTEM_PING {
                    let answer = ping_response(req);
                    self.send(&answer).await?;
                    self.pings_answered += 1;
                    continue;
                }
            }
            return Ok(inbound);
        }
    }

    /// Receives until the connection ends or `limit` passes, answering
    /// pings: everything seen, the end last (if it came).
    pub async fn recv_until_end(&mut self, limit: Duration) -> Vec<Inbound> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        while let Ok(r) = tokio::time::timeout_at(deadline, self.recv()).await {
            match r {
                Ok(i) => {
                    let end = i.is_end();
                    seen.push(i);
                    if end {
                        break;
                    }
                }
                Err(e) => {
                    seen.push(Inbound::Dropped(e.to_string()));
                    break;
                }
            }
        }
        seen
    }

    /// Closes as the real client does (section 5): CLOSE_REQUEST, then waits
    /// up to a second for the server to close the socket, then closes it
    /// (code 1000). Returns what arrived meanwhile.
    pub async fn close(&mut self) -> Result<Vec<Inbound>, ClientError> {
        self.send(&Message::Close).await?;
        let seen = self.recv_until_end(Duration::from_secs(1)).await;
        if !self.ended {
            let _ = self.ws.close(None).await;
        }
        Ok(seen)
    }

    /// Drops the TCP connection without a WebSocket close: a lost connection.
    pub fn drop_connection(self) {
        drop(self);
    }

    /// The WebSocket stream, for anything this client does not do.
    pub fn stream_mut(&mut self) -> &mut WebSocketStream<TcpStream> {
        &mut self.ws
    }
}

/// A USER_PING request with this conversation id.
pub fn user_ping(conversation: u64) -> Message {
    Message::ServiceRequest(ServiceRequest {
        service: USER_PING,
        conversation,
        payload: Bytes::new(),
    })
}

/// The SERVICE_RESPONSE answering `request`.
pub fn ping_response(request: &ServiceRequest) -> Message {
    Message::ServiceResponse(ServiceResponse {
        conversation: request.conversation,
        payload: Bytes::new(),
    })
}

/// A frame mask: clients must mask, the value does not matter for a test.
fn rand_mask() -> [u8; 4] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0x5a5a_5a5a);
    nanos.to_be_bytes()
}
