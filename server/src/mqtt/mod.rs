//! MQTT in the server: the listeners, and the broker's own state (who
//! subscribes to what, which messages are retained) beside the codec's
//! session layer ([`sessionwire::mqtt::session`]).
//!
//! - `conn`: MQTT over TCP (`--mqtt-listen`) and over WebSocket (`/mqtt`,
//!   subprotocol `mqtt`), one task per connection;
//! - `broker`: the codec's registry with the tree and the retained
//!   messages, driven by the hub;
//! - `channel`: what a connection and the hub say to each other, and the
//!   connection's bounded outbox;
//! - [`tree`]: the subscription index, a trie of topic levels;
//! - [`retained`]: retained messages by topic, found by filter.
//!
//! The tree and the retained store are public so that benchmarks (and
//! other brokers) can use them; the rest is the server's own.

pub(crate) mod broker;
pub(crate) mod channel;
pub(crate) mod conn;
pub mod retained;
pub mod tree;
