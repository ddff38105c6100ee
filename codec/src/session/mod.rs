//! The sans-IO session layer (docs/protocol.md sections 1, 2, 4, 5, 6 and 7).
//!
//! A server links this layer and drives it: it feeds what arrived (bytes,
//! HTTP requests, connection events) together with the current [`Instant`]
//! and drains what to send, when to wake the session next and, once, the
//! decision to close with a [`CloseReason`](crate::CloseReason). There are no
//! sockets or threads here, and the session layer never reads the clock: only
//! the drivers that stand in for a server, the scenario runner (crate
//! `sessionwire-check`) and the fuzz target, read it once, as the origin of
//! their virtual time.
//!
//! - [`handshake`]: the connection request (query string or HTTP headers)
//!   and the connection response of every section 2 code;
//! - `properties` (private): the strict reader of the `sp` field;
//! - [`ids`]: session ids and tokens from a random source the caller injects;
//! - [`registry`]: connection attempts the server accepts or refuses,
//!   reconnection, the id/token/principal index, the client limit, the timers
//!   of every session, the close decisions;
//! - [`state`]: one session: counting, pings, polls, closes, recovery;
//! - `queue`, `reorder`, `recovery` (private): the bounded buffers it holds;
//! - `fuzz` (feature `fuzzing`): the `session` fuzz target body.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use bytes::Bytes;
//! use sessionwire::session::{handshake::ConnectionRequest, Connect, Registry, SessionConfig, Transmit};
//! use sessionwire::session::ids::SeededRandom;
//! use sessionwire::{CloseReason, Limits};
//!
//! let t0 = Instant::now(); // the server's clock, not the library's
//! // A server passes a secure random source; a test a seeded one.
//! let mut registry = Registry::new(Limits::default(), SessionConfig::default(), SeededRandom::new(1));
//! let request = ConnectionRequest::from_query("/diffusion?ty=WB&v=29&ca=8&r=0");
//! let Connect::Incoming(incoming) = registry.handle_connect(t0, request) else { unreachable!() };
//! // ... the server checks the credentials, then:
//! let outcome = registry.accept(t0, incoming, None);
//! let first_ws_message = outcome.response.to_bytes(); // 0x23 29 100 ...
//! assert_eq!(&first_ws_message[..3], &[0x23, 29, 100]);
//!
//! let token = outcome.session.unwrap();
//! let mut session = registry.session_mut(&token).unwrap();
//! session.handle_websocket(t0, Bytes::from_static(&[0x00, 0x38, 0x01])); // USER_PING
//! assert_eq!(session.poll_transmit(), Some(Transmit::WebSocket(Bytes::from_static(&[0x06, 0x01]))));
//! session.handle_websocket(t0 + Duration::from_millis(5), Bytes::from_static(&[0x1d])); // CLOSE_REQUEST
//! drop(session);
//! let (closed, close) = registry.poll_close().unwrap();
//! assert_eq!((closed, close.reason), (token, CloseReason::ClosedByClient));
//! ```
//!
//! # Readings of the protocol
//!
//! Where docs/protocol.md leaves a choice, this layer decides as follows (to be
//! checked against the real client):
//!
//! - Message numbers start at 1 on each side; `ss` = 0 means the client
//!   received nothing; `cs` is the oldest client number it can resend. The
//!   105 value is the next client number expected (received + 1).
//! - 105 when both gaps can be covered; otherwise 118 and LOST_MESSAGES, or
//!   106 when [`SessionConfig::allow_message_loss`] is on. An `ss` above what
//!   was sent is impossible: always 118.
//! - A (re)connection for a session that is still connected, and a
//!   reconnection without `c`, are answered 115 and close the attempt
//!   CONNECTION_LOST; request faults are answered 115 (102 for the version)
//!   and close ABORTED.
//! - Over WebSocket a ping must be answered before the next one is due;
//!   over HTTP polling liveness is judged by polls instead
//!   ([`SessionConfig::poll_gap`]).
//! - ABORT is sent on every final close that is not recoverable, except
//!   CLOSED_BY_CLIENT and FAILED_OVER (the client should reconnect elsewhere).
//!   Over HTTP it can only go in an open poll.
//! - The client numbers its requests from 1 upward, so a request whose
//!   conversation id is not above every earlier one is a duplicate: this is
//!   how the known quirk of resending the wrong messages is detected. Ids
//!   may skip (checked against the real client: a request that fails while
//!   it is disconnected spends one), so a gap is not a lost message.
//!
//! [`Instant`]: std::time::Instant

pub mod handshake;
pub mod ids;
pub(crate) mod properties;
mod queue;
mod recovery;
pub mod registry;
mod reorder;
pub mod state;

#[cfg(feature = "fuzzing")]
pub mod fuzz;

pub use handshake::{ConnectionRequest, ConnectionResponse, ResponseCode};
pub use ids::{RandomSource, RandomSourceFailed, SeededRandom, SessionId, SessionToken};
pub use registry::{Connect, ConnectOutcome, Incoming, Refusal, Refuse, Registry, SessionMut};
pub use state::{
    Close, Event, HttpClose, Session, SessionConfig, SessionEvent, SessionState, Transmit,
};
