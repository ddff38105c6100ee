//! A strict, zero-copy codec and validator for the session protocol
//! (protocol version 29), built to sit on the wire of a real-time messaging
//! server.
//!
//! Every inbound fault is a typed [`Violation`] that carries its byte offset and
//! maps, in one function, to the [`CloseReason`] the server closes the client
//! with. All bounds come from one [`Limits`] value.
#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod close;
pub mod corpus;
pub mod direction;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod limits;
pub mod message;
mod parse;
pub mod polling;
pub mod session;
pub mod varint;
pub mod violation;

pub use close::CloseReason;
pub use direction::Direction;
pub use limits::{Limits, LimitsBuilder};
pub use message::{Message, MessageType};
pub use violation::{Field, Violation, ViolationKind, ZlibFault};
