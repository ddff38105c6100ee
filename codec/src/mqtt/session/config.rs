//! The settings of the MQTT session layer: every bound it keeps.

use std::time::Duration;

use crate::mqtt::QoS;
use crate::Limits;

/// The MQTT session layer's settings. Every per-connection and per-session
/// buffer is bounded by one of them; a client can ask for less, never for
/// more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttConfig {
    /// `max_message_size` bounds every packet a client sends (fixed header
    /// included; 5.0 clients are told it as the maximum packet size), and
    /// `max_clients` the connected clients (offline sessions not included).
    pub limits: Limits,
    /// How many QoS 2 PUBLISH packets a client may have waiting for their
    /// PUBREL (QoS 1 is acknowledged at once); announced to 5.0 clients.
    pub receive_maximum: u16,
    /// How many QoS 1 and 2 messages the server has unacknowledged per
    /// session; the client's own receive maximum lowers it.
    pub max_inflight: u16,
    /// Messages a session may hold waiting for its in-flight window,
    /// offline included.
    pub max_queued_messages: usize,
    /// Bytes of payload and topic a session may hold waiting, offline
    /// included.
    pub max_queued_bytes: usize,
    /// Topic aliases a 5.0 client may set (0: none); announced to it.
    pub topic_alias_maximum: u16,
    /// Topic aliases the server sets on what it sends a 5.0 client, at
    /// most the client's own Topic Alias Maximum (0: none). The first
    /// topics sent to a connection get one each, in turn, until this many
    /// have one or their topics pass 4 KiB.
    pub outbound_topic_aliases: u16,
    /// A keep alive imposed on 5.0 clients (announced as the server keep
    /// alive); `None` keeps the client's. 3.1.1 clients keep their own.
    pub server_keep_alive: Option<u16>,
    /// The longest a session outlives its connection, in seconds: the cap
    /// on a 5.0 session expiry interval, and the life of a 3.1.1 session
    /// without clean session.
    pub max_session_expiry: u32,
    /// How long a connection may stay open before its CONNECT is whole.
    pub connect_timeout: Duration,
    /// The highest QoS clients may publish with; announced to 5.0 clients
    /// when below 2.
    pub maximum_qos: QoS,
    /// The most offline sessions kept; past it a session is ended: the one
    /// offline the longest among those holding no message, else the one
    /// offline the longest.
    pub max_sessions: usize,
    /// The server-wide budget, in bytes, over the message data every
    /// session holds (queued and in flight, one count for a message shared
    /// by many sessions) and what the server charges to
    /// [`Registry::budget`](super::Registry::budget) (a broker's retained
    /// messages). Once spent, PUBLISHes are refused (5.0: 0x97) and
    /// deliveries dropped until some is given back.
    pub max_held_bytes: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            limits: Limits::default(),
            receive_maximum: 64,
            max_inflight: 64,
            max_queued_messages: 1000,
            max_queued_bytes: 16 * 1024 * 1024,
            topic_alias_maximum: 16,
            outbound_topic_aliases: 16,
            server_keep_alive: None,
            max_session_expiry: 86_400,
            connect_timeout: Duration::from_secs(10),
            maximum_qos: QoS::ExactlyOnce,
            max_sessions: 10_000,
            max_held_bytes: 256 * 1024 * 1024,
        }
    }
}
