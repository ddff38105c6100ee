//! What the registry and the server hand each other: connection names,
//! CONNECT attempts, messages, events and close decisions.

use std::time::Instant;

use bytes::Bytes;

use crate::mqtt::{Connect, Properties, QoS, Str, SubscriptionOptions, Version};
use crate::CloseReason;

/// The server's name for one transport connection (a TCP stream or a
/// WebSocket); it never reuses one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// A CONNECT that passed every check the registry makes on its own. The
/// server checks its user name and password, then hands it back to
/// [`Registry::accept`](super::Registry::accept) or
/// [`Registry::refuse`](super::Registry::refuse).
#[derive(Debug)]
#[must_use = "an Incoming must be accepted or refused"]
pub struct Incoming {
    pub(super) conn: ConnId,
    pub(super) connect: Connect,
    /// A cap on the session's expiry the server sets for this client
    /// alone (below [`MqttConfig::max_session_expiry`](super::MqttConfig)).
    pub(super) expiry_cap: Option<u32>,
}

impl Incoming {
    /// The connection the CONNECT came on.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// The CONNECT: user name, password, client identifier (empty when the
    /// server is to assign one), will, properties.
    pub fn connect(&self) -> &Connect {
        &self.connect
    }

    /// Caps how long this client's session may outlive its connection, in
    /// seconds, below the registry's `max_session_expiry` (for example for
    /// a client that did not authenticate). A 5.0 client is told the
    /// interval it gets in its CONNACK; a 3.1.1 session without clean
    /// session lives this long offline.
    pub fn limit_session_expiry(&mut self, secs: u32) {
        self.expiry_cap = Some(self.expiry_cap.map_or(secs, |c| c.min(secs)));
    }
}

/// What became of a message handed to
/// [`Registry::deliver`](super::Registry::deliver).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Delivered {
    /// Written for the client (QoS 0, or QoS 1 and 2 within its in-flight
    /// window).
    Sent,
    /// Waiting in the session's queue for room in flight or for the client
    /// to come back.
    Queued,
    /// Not kept, for this reason; nothing else the session holds changed.
    Dropped(Dropped),
    /// No session has this client identifier.
    NoSession,
}

/// Why a message was not kept for a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dropped {
    /// The session's queue holds `max_queued_messages` or
    /// `max_queued_bytes` already: the new message goes, what is queued
    /// stays.
    QueueFull,
    /// QoS 0 for a client that is offline.
    Offline,
    /// Expired, or with no topic to send it to.
    Expired,
    /// Over the client's maximum packet size (MQTT-3.1.2-25).
    TooLarge,
    /// The server-wide budget
    /// ([`MqttConfig::max_held_bytes`](super::MqttConfig::max_held_bytes))
    /// is spent, or three quarters held and the message would wait in the
    /// session's queue.
    Budget,
}

/// How far behind a session is: what it holds for its client and whether
/// the client is still taking it. See
/// [`Registry::backlog`](super::Registry::backlog).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backlog {
    /// Whether it has a connection.
    pub connected: bool,
    /// Messages waiting in its queue.
    pub queued: usize,
    /// Bytes of topic, payload and properties waiting in its queue.
    pub queued_bytes: usize,
    /// The queue's bound in messages (`max_queued_messages`).
    pub max_messages: usize,
    /// The queue's bound in bytes (`max_queued_bytes`).
    pub max_bytes: usize,
    /// Messages sent and not yet acknowledged.
    pub in_flight: usize,
    /// Its in-flight window.
    pub window: usize,
    /// Acknowledgements the client has completed (PUBACK, PUBCOMP, a
    /// refusing PUBREC) since its queue or flight last became empty: a
    /// client that keeps reading makes it grow.
    pub acked: u64,
}

impl Backlog {
    /// Whether its queue is at least `percent` full, in messages or bytes.
    pub fn fill_at_least(&self, percent: usize) -> bool {
        let over = |n: usize, max: usize| n.saturating_mul(100) >= max.saturating_mul(percent);
        over(self.queued, self.max_messages) || over(self.queued_bytes, self.max_bytes)
    }
}

/// Why the server refuses an [`Incoming`]; each gives the CONNACK code of
/// both versions and a close reason (ABORTED, or CONNECTION_LOST for
/// `Busy`, through [`ViolationKind::close_reason`](crate::ViolationKind::close_reason)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refuse {
    /// Wrong user name or password: 3.1.1 0x04, 5.0 0x86.
    BadCredentials,
    /// The client is not allowed in: 3.1.1 0x05, 5.0 0x87.
    NotAuthorized,
    /// The server takes no more clients: 3.1.1 0x03, 5.0 0x89.
    Busy,
}

/// Why the server closes a connected client of its own accord.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServerClose {
    /// The control API closed it: 5.0 DISCONNECT 0x98, CLOSED_BY_CONTROLLER;
    /// its session ends.
    Controller,
    /// The server shuts down: 5.0 DISCONNECT 0x8B, ABORTED.
    Shutdown,
}

/// An application message, as the broker routes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The topic name (an alias already resolved).
    pub topic: Str,
    /// The payload.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// The retain flag it was published with.
    pub retain: bool,
    /// The 5.0 properties passed on to subscribers (payload format, content
    /// type, response topic, correlation data, user properties); the
    /// message expiry is `expires_at`, topic alias and subscription
    /// identifiers are per connection and never kept.
    pub properties: Properties,
    /// When the message expires (5.0 message expiry interval), if ever.
    pub expires_at: Option<Instant>,
}

/// How one message goes to one client, as the broker decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The QoS to send it with (the lower of the message's and the
    /// subscription's); the session layer lowers it no further.
    pub qos: QoS,
    /// The retain flag to send.
    pub retain: bool,
    /// 5.0: the identifiers of every matching subscription that has one.
    pub subscription_ids: Vec<u32>,
}

/// One subscription of a SUBSCRIBE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionRequest {
    /// The topic filter (checked by the packet codec; `$share/...` kept
    /// whole).
    pub filter: String,
    /// The options, QoS already lowered to the maximum QoS: what the SUBACK
    /// grants unless the broker refuses the subscription.
    pub options: SubscriptionOptions,
    /// 5.0: the subscription identifier of the SUBSCRIBE, if any.
    pub id: Option<u32>,
}

/// Something the server acts on.
#[derive(Debug)]
pub enum Event {
    /// A CONNECT to check: hand the [`Incoming`] back to `accept` or
    /// `refuse`.
    Connect(Incoming),
    /// A client is connected (its CONNACK is queued).
    Connected {
        /// Its connection.
        conn: ConnId,
        /// Its client identifier (assigned by the server when it sent none).
        client_id: String,
        /// Its protocol version.
        version: Version,
        /// Whether an earlier session was resumed (its subscriptions hold).
        session_present: bool,
    },
    /// A client published a message (QoS handshakes are the registry's):
    /// route it.
    Publish {
        /// The publisher's client identifier.
        from: String,
        /// The message.
        message: Message,
    },
    /// A will is due: route it as a message of its client.
    Will {
        /// The client whose will it is.
        from: String,
        /// The will message.
        message: Message,
    },
    /// A client subscribes: apply it, then answer with
    /// [`Registry::suback`](super::Registry::suback) (one code per
    /// subscription). Until then its packet id is in use.
    Subscribe {
        /// The client.
        client_id: String,
        /// The SUBSCRIBE's packet identifier, for the answer.
        packet_id: u16,
        /// Its subscriptions, in packet order.
        subscriptions: Vec<SubscriptionRequest>,
    },
    /// A client unsubscribes: apply it, then answer with
    /// [`Registry::unsuback`](super::Registry::unsuback) (one code per
    /// filter). Until then its packet id is in use.
    Unsubscribe {
        /// The client.
        client_id: String,
        /// The UNSUBSCRIBE's packet identifier, for the answer.
        packet_id: u16,
        /// Its filters, in packet order.
        filters: Vec<String>,
    },
    /// A session ended (clean start, expiry, a controller close, or the
    /// offline-session cap): drop its subscriptions.
    SessionEnded {
        /// The client whose session ended.
        client_id: String,
    },
}

/// Why [`Registry::suback`](super::Registry::suback) or
/// [`Registry::unsuback`](super::Registry::unsuback) wrote nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnswerError {
    /// The client has no connection with such a request awaiting its
    /// answer (it is gone, or the id was answered already).
    NotAwaited,
    /// The number of codes is not the number of filters in the request.
    WrongCount {
        /// Filters in the request.
        expected: usize,
        /// Codes given.
        got: usize,
    },
    /// A code the packet cannot carry (5.0's list is the reference; a
    /// 3.1.1 SUBACK says 0x80 for every refusal).
    BadCode(u8),
    /// A SUBACK granting more than the configured maximum QoS.
    AboveMaximumQos(u8),
}

impl std::fmt::Display for AnswerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnswerError::NotAwaited => f.write_str("no such request awaits an answer"),
            AnswerError::WrongCount { expected, got } => {
                write!(f, "{got} codes for {expected} filters")
            }
            AnswerError::BadCode(c) => write!(f, "code {c:#04x} not allowed here"),
            AnswerError::AboveMaximumQos(q) => write!(f, "QoS {q} above the maximum QoS"),
        }
    }
}

impl std::error::Error for AnswerError {}

/// A decision to close a connection, handed out once by
/// [`Registry::poll_close`](super::Registry::poll_close) after the
/// connection's last transmit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Close {
    /// The close reason.
    pub reason: CloseReason,
    /// The MQTT 5.0 reason code of the decision: the one a 5.0 client was
    /// sent (DISCONNECT or CONNACK), and the one a 3.1.1 client would have
    /// been; the client's own code when it sent DISCONNECT; `None` when the
    /// connection was lost or no CONNECT came.
    pub code: Option<u8>,
    /// The client, once its CONNECT was read.
    pub client_id: Option<String>,
}

/// A session the registry holds, connected or offline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// Its client identifier.
    pub client_id: String,
    /// The version of its last connection.
    pub version: Version,
    /// Its connection; `None` while offline.
    pub conn: Option<ConnId>,
}
