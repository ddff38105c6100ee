//! The library half of the `sessionwire` command: a protocol-level test
//! client and the load generator behind `sessionwire load`.
//!
//! - [`client`]: a client for the reference server over both transports
//!   (WebSocket and HTTP polling), built on the codec, that can also misbehave
//!   on purpose (raw bytes, unanswered pings, a socket it stops reading).
//! - [`load`]: opens many WebSocket sessions on loopback, exchanges pings and
//!   reports sessions held, throughput, latency percentiles, lost messages and
//!   the server's memory per session.
#![warn(missing_docs)]

pub mod client;
pub mod load;
