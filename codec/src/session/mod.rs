//! The sans-IO session layer (PROTOCOL.md sections 1, 2, 4, 5, 6 and 7).
//!
//! A server links this layer and drives it: it feeds what arrived (bytes,
//! HTTP requests, connection events) together with the current [`Instant`]
//! and drains what to send, when to wake the session next and, once, the
//! decision to close with a [`CloseReason`](crate::CloseReason). There are no
//! sockets, threads or clock reads here.
//!
//! - [`handshake`]: the connection request (query string or HTTP headers)
//!   and the connection response of every section 2 code;
//! - [`ids`]: session ids and tokens from a secure random source;
//! - [`registry`]: connect, reconnect, lookup by token, client limit, identity
//!   takeover;
//! - [`state`]: one session: counting, pings, polls, closes, recovery;
//! - [`queue`], [`reorder`], [`recovery`]: the bounded buffers it holds;
//! - [`scenario`]: the scenario file format and its runner;
//! - `fuzz` (feature `fuzzing`): the `session` fuzz target body.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use bytes::Bytes;
//! use sessionwire::session::{handshake::ConnectionRequest, AllowAll, Registry, SessionConfig, Transmit};
//! use sessionwire::{CloseReason, Limits};
//!
//! let t0 = Instant::now(); // the server's clock, not the library's
//! let mut registry = Registry::new(Limits::default(), SessionConfig::default(), AllowAll);
//! let outcome = registry.connect(t0, ConnectionRequest::from_query("/diffusion?ty=WB&v=29&ca=8&r=0"));
//! let first_ws_message = outcome.response.to_bytes(); // 0x23 29 100 ...
//! assert_eq!(&first_ws_message[..3], &[0x23, 29, 100]);
//!
//! let token = outcome.session.unwrap();
//! let session = registry.session_mut(&token).unwrap();
//! session.handle_websocket(t0, Bytes::from_static(&[0x00, 0x38, 0x01])); // USER_PING
//! assert_eq!(session.poll_transmit(), Some(Transmit::WebSocket(Bytes::from_static(&[0x06, 0x01]))));
//! session.handle_websocket(t0 + Duration::from_millis(5), Bytes::from_static(&[0x1d])); // CLOSE_REQUEST
//! assert_eq!(session.poll_close().unwrap().reason, CloseReason::ClosedByClient);
//! ```
//!
//! [`Instant`]: std::time::Instant

pub mod handshake;
pub mod ids;
pub mod queue;
pub mod recovery;
pub mod registry;
pub mod reorder;
pub mod scenario;
pub mod state;

#[cfg(feature = "fuzzing")]
pub mod fuzz;

pub use handshake::{ConnectionRequest, ConnectionResponse, ResponseCode};
pub use ids::{SessionId, SessionToken};
pub use registry::{AllowAll, Authenticator, ConnectOutcome, Registry};
pub use scenario::{ScenarioError, ScenarioOutcome};
pub use state::{Close, Event, Session, SessionConfig, SessionEvent, SessionState, Transmit};
