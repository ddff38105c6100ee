//! The sans-IO session layer: handshake, registry, session state machine,
//! queues and recovery (PROTOCOL.md sections 1, 2, 4, 5, 6 and 7).

#[cfg(feature = "fuzzing")]
pub mod fuzz;
pub mod handshake;
pub mod ids;
pub mod queue;
pub mod recovery;
pub mod registry;
pub mod reorder;
pub mod scenario;
pub mod state;
