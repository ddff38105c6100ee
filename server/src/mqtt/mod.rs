//! MQTT in the server: the broker's own state (who subscribes to what,
//! which messages are retained) beside the codec's session layer.
//!
//! - [`tree`]: the subscription index, a trie of topic levels;
//! - [`retained`]: retained messages by topic, found by filter.

pub mod retained;
pub mod tree;
