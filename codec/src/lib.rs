//! A strict, zero-copy codec and validator for the session protocol
//! (protocol version 29), built to sit on the wire of a real-time messaging
//! server.
//!
//! Every inbound fault is a typed [`Violation`] that carries its byte offset and
//! maps, in one function, to the [`CloseReason`] the server closes the client
//! with. All bounds come from one [`Limits`] value.
//!
//! What a server author needs is re-exported here: the decoders ([`Message`],
//! [`polling`]), the faults ([`Violation`], [`CloseReason`]) and the session
//! layer's driving types ([`Registry`], [`Session`], [`Transmit`]). The file
//! system, the clock and the regression harness live in other crates
//! (`sessionwire-check`, `sessionwire-server`); the wire facts in
//! `docs/protocol.md`.
#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod close;
pub mod direction;
mod field;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod limits;
pub mod message;
pub mod mqtt;
mod parse;
pub mod polling;
pub mod session;
mod varint;
pub mod verdict;
pub mod violation;

pub use close::CloseReason;
pub use direction::Direction;
pub use limits::{Limits, LimitsBuilder};
pub use message::{Message, MessageType};
pub use session::{
    Close, Connect, ConnectOutcome, ConnectionRequest, ConnectionResponse, Event, HttpClose,
    Incoming, RandomSource, RandomSourceFailed, Refuse, Registry, ResponseCode, Session,
    SessionConfig, SessionEvent, SessionId, SessionMut, SessionState, SessionToken, Transmit,
};
pub use verdict::{Outcome, Verdict};
pub use violation::{Field, Violation, ViolationKind, ZlibFault};
