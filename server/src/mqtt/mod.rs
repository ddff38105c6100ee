//! MQTT in the server: the listeners, and the broker's own state (who
//! subscribes to what, which messages are retained) beside the codec's
//! session layer ([`sessionwire::mqtt::session`]).
//!
//! - `event_loop`: one thread with a `mio` poll that owns the broker and
//!   every MQTT-over-TCP socket (`--mqtt-listen`);
//! - `tcp`: one such socket, written once per loop turn;
//! - `trim`: freed memory handed back when the loop goes quiet;
//! - `conn`: MQTT over WebSocket (`/mqtt`, subprotocol `mqtt`), one task
//!   per connection, talking to the loop;
//! - `broker`: the codec's registry with the tree, the retained messages
//!   and the connections, driven by the loop;
//! - `conns`: the broker's connections by number, in a slab;
//! - `flow`: publishers paused for the subscribers they feed, and the
//!   count of messages lost;
//! - `channel`: what the loop and the rest of the server say to each
//!   other, and a WebSocket connection's bounded outbox;
//! - [`tree`]: the subscription index, a trie of topic levels;
//! - [`retained`]: retained messages by topic, found by filter;
//! - `ratelog`: log lines an attacker can cause, one per interval;
//! - [`heap`]: what the tree, the retained store and the slot tables take
//!   from the allocator, for their byte bounds.
//!
//! The tree and the retained store are public so that benchmarks (and
//! other brokers) can use them; the rest is the server's own.

pub(crate) mod broker;
pub(crate) mod channel;
pub(crate) mod conn;
mod conns;
pub(crate) mod event_loop;
mod flow;
pub mod heap;
mod ratelog;
pub mod retained;
mod tcp;
pub mod tree;
mod trim;
