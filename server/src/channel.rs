//! What connection tasks and the hub say to each other: the [`Command`]s
//! into the hub, and what it answers ([`Connected`], [`HttpAnswer`], the
//! [`Out`] batches of a WebSocket connection and its [`ConnSignal`]), with
//! the [`OsRandom`] source its registries draw session tokens from.
//!
//! Kept apart from the hub (`hub.rs`), the WebSocket transport (`ws.rs`) and
//! the MQTT connections and broker (`mqtt/`), which all use them, so that
//! each of those imports this module and none imports another back.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use bytes::Bytes;
use sessionwire::session::handshake::ConnectionRequest;
use sessionwire::session::ids::RandomSourceFailed;
use sessionwire::session::{HttpClose, Incoming, RandomSource, SessionEvent, SessionToken};
use sessionwire::Violation;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::passwords::Verdict;

/// Most messages handed to one WebSocket connection and not yet taken by
/// it (and the capacity of its channel: a batch holds at least one). One
/// slot is always left free for the final [`Out::Close`].
pub const CONN_QUEUE: usize = 16;

/// What a connection asks of the hub.
#[derive(Debug)]
pub enum Command {
    /// A (re)connection request. The registry answers it, or it becomes
    /// an [`Incoming`] whose password, when the server has a users file, is
    /// checked off the hub's loop ([`Command::Checked`] brings the verdict).
    Connect {
        /// The parsed request, or its fault.
        request: Result<ConnectionRequest, Violation>,
        /// The client's address (password checks are bounded per address).
        peer: IpAddr,
        /// The transport asking.
        attach: Attach,
        /// Where the answer goes.
        reply: oneshot::Sender<Connected>,
    },
    /// The password check of an [`Incoming`] is over.
    Checked {
        /// The attempt, to accept or refuse.
        incoming: Incoming,
        /// What the check found.
        verdict: Verdict,
        /// The transport asking.
        attach: Attach,
        /// Where the answer goes.
        reply: oneshot::Sender<Connected>,
    },
    /// Binary WebSocket messages from the client, in the order read: what
    /// the connection had read when it went to the hub (at least one).
    Inbound {
        /// The session.
        token: SessionToken,
        /// The connection they came on.
        conn: u64,
        /// The messages.
        data: Vec<Bytes>,
    },
    /// A fault the WebSocket transport found (text frame, message too large).
    Fault {
        /// The session.
        token: SessionToken,
        /// The connection it came on.
        conn: u64,
        /// The fault.
        violation: Violation,
    },
    /// The WebSocket connection is gone.
    Lost {
        /// The session.
        token: SessionToken,
        /// The connection that was lost.
        conn: u64,
        /// An I/O operation failed (IO_EXCEPTION) rather than the peer
        /// going away (CONNECTION_LOST).
        io_error: bool,
    },
    /// The WebSocket connection drained its channel after it was full.
    Writable {
        /// The session.
        token: SessionToken,
        /// The connection.
        conn: u64,
    },
    /// An HTTP poll (`m=1`).
    Poll {
        /// The `c` header.
        token: SessionToken,
        /// The `s` header as received.
        sequence: String,
        /// Where the answer goes.
        reply: oneshot::Sender<HttpAnswer>,
    },
    /// An HTTP send (`m=2`) with its body.
    Send {
        /// The `c` header.
        token: SessionToken,
        /// The `s` header as received.
        sequence: String,
        /// The base64 body.
        body: Bytes,
        /// The body's place in the server's budget for bodies being read,
        /// given back once the session has taken the body (and counts it,
        /// if it holds it).
        reading: Option<OwnedSemaphorePermit>,
        /// Where the answer goes.
        reply: oneshot::Sender<HttpAnswer>,
    },
    /// An HTTP send whose body is over the limit (declared or read so far).
    SendTooLarge {
        /// The `c` header.
        token: SessionToken,
        /// Where the answer goes.
        reply: oneshot::Sender<HttpAnswer>,
    },
    /// Control: list the sessions.
    List {
        /// Where the answer goes.
        reply: oneshot::Sender<Vec<SessionInfo>>,
    },
    /// Control: close or mark one session.
    Act {
        /// The session id as listed.
        id: String,
        /// What happens to it.
        event: SessionEvent,
        /// Whether the session was found.
        reply: oneshot::Sender<bool>,
    },
    /// Abort every session and stop.
    Shutdown {
        /// Answered once every session is aborted.
        done: oneshot::Sender<()>,
    },
}

/// The clients of each protocol, for `--max-clients` across both: each
/// count is written by its owner (the hub, the MQTT event loop) and read by
/// the other.
#[derive(Debug, Default)]
pub struct Clients {
    /// Live sessions of the session protocol.
    pub sessions: AtomicUsize,
    /// Connected MQTT clients.
    pub mqtt: AtomicUsize,
}

/// The transport of a connection request.
#[derive(Debug)]
pub enum Attach {
    /// A WebSocket connection and its channel.
    WebSocket(WsConn),
    /// An HTTP polling connect.
    Http,
}

/// The hub's end of a WebSocket connection.
#[derive(Debug)]
pub struct WsConn {
    /// The connection number.
    pub conn: u64,
    /// Messages to write.
    pub tx: mpsc::Sender<Out>,
    /// Signals beside the channel.
    pub signal: Arc<ConnSignal>,
}

/// What the hub signals to a WebSocket connection outside its channel.
#[derive(Debug, Default)]
pub struct ConnSignal {
    /// Set by the hub when it stopped draining because the connection had
    /// [`CONN_QUEUE`] less one messages waiting.
    pub blocked: AtomicBool,
    /// Messages in the channel: added by the hub as it sends a batch, taken
    /// off by the connection as it receives one.
    pub queued: AtomicUsize,
    /// Notified when an [`Out::Close`] was queued: a connection stuck
    /// writing to a client that does not read stops waiting.
    pub closing: Notify,
}

impl WsConn {
    /// Queues the close (the channel always has a slot left for it) and
    /// wakes the connection even if it is stuck in a write.
    pub fn close(self, last: Option<Bytes>, frame: bool) {
        let _ = self.tx.try_send(Out::Close { last, frame });
        self.signal.closing.notify_one();
    }
}

/// What the hub tells a WebSocket connection.
#[derive(Debug)]
pub enum Out {
    /// Write these binary messages, in order (at least one), with one
    /// flush.
    Messages(Vec<Bytes>),
    /// Write `last` (the ABORT) if any, then close: with a close frame
    /// (`frame`) or by dropping the socket.
    Close {
        /// The last message.
        last: Option<Bytes>,
        /// Send a close frame rather than just dropping the socket.
        frame: bool,
    },
}

/// The answer to a connection request.
#[derive(Debug)]
pub struct Connected {
    /// The connection response bytes.
    pub response: Bytes,
    /// The session now attached; `None`: refused, close after the response.
    pub token: Option<SessionToken>,
}

/// The answer to an HTTP poll or send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpAnswer {
    /// 200 with this base64 body (a poll).
    Body(String),
    /// An empty 200 (a send).
    Ack,
    /// An empty 200 with `diffusion-connection: reconnect`.
    Reconnect,
    /// 200 with a batch holding ABORT.
    Abort,
    /// Drop the connection without an answer.
    Drop,
}

/// One session, as the control API lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SessionInfo {
    /// `mqtt` for an MQTT session (absent: the session protocol).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<&'static str>,
    /// The session id (`server-value` in hex); MQTT: the client id.
    pub id: String,
    /// MQTT: `3.1.1` or `5.0`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'static str>,
    /// The principal; `None`: anonymous (and MQTT).
    pub principal: Option<String>,
    /// `ws`, `http` or `mqtt`.
    pub transport: &'static str,
    /// `connected` or `disconnected` (waiting for a reconnection); MQTT:
    /// `connected` or `offline`.
    pub state: &'static str,
    /// Milliseconds since the session opened (not for MQTT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_ms: Option<u64>,
    /// Messages waiting in the outbound queue (not for MQTT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<usize>,
}

/// The operating system's secure random source: session tokens are the keys
/// to sessions and must be unguessable.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomSourceFailed> {
        getrandom::fill(buf).map_err(|_| RandomSourceFailed)
    }
}

impl From<HttpClose> for HttpAnswer {
    fn from(c: HttpClose) -> HttpAnswer {
        match c {
            HttpClose::Abort => HttpAnswer::Abort,
            HttpClose::Reconnect => HttpAnswer::Reconnect,
            HttpClose::Drop => HttpAnswer::Drop,
        }
    }
}
