//! The sans-IO MQTT session layer: one registry of every MQTT connection
//! and session, in the shape of the protocol-29 [`session`](crate::session)
//! layer. The server feeds it what happened (a connection opened, bytes
//! arrived, a socket closed, a message to route to a client, time passed)
//! with the current [`Instant`](std::time::Instant) and drains what to
//! write, what to act on, what to close and when to wake it next. It reads
//! no clock and touches no socket.
//!
//! - [`Registry::open`], [`handle_bytes`](Registry::handle_bytes) (or
//!   [`handle_bytes_with`](Registry::handle_bytes_with) and a
//!   [`PublishGate`]),
//!   [`connection_lost`](Registry::connection_lost): the transport;
//! - [`Event::Connect`] hands out an [`Incoming`] the server checks (user
//!   name, password) and gives back to [`accept`](Registry::accept) or
//!   [`refuse`](Registry::refuse);
//! - [`Event::Publish`] and [`Event::Will`] are messages for the broker to
//!   route, which it hands back per client to [`deliver`](Registry::deliver);
//! - [`poll_transmit`](Registry::poll_transmit),
//!   [`poll_event`](Registry::poll_event),
//!   [`poll_close`](Registry::poll_close): drained after every call, the
//!   transmits first (a close comes after its connection's last bytes);
//! - [`poll_timeout`](Registry::poll_timeout) and
//!   [`handle_timeout`](Registry::handle_timeout): one heap of deadlines
//!   (CONNECT timeout, keep alive, will delay, session expiry). A deadline
//!   may be early (the registry then files the real one), never late;
//! - `fuzz` (feature `fuzzing`): the `mqtt_session` fuzz target body.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use bytes::Bytes;
//! use sessionwire::mqtt::session::{ConnId, Event, MqttConfig, Registry};
//! use sessionwire::session::ids::SeededRandom;
//! use sessionwire::CloseReason;
//!
//! let t0 = Instant::now(); // the server's clock, not the library's
//! let mut registry = Registry::new(MqttConfig::default(), SeededRandom::new(1));
//! let conn = ConnId(1);
//! registry.open(t0, conn);
//! // A 3.1.1 CONNECT: client "c", clean session, keep alive 60 s.
//! registry.handle_bytes(t0, conn, &[
//!     0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x01, b'c',
//! ]);
//! let Some(Event::Connect(incoming)) = registry.poll_event() else { unreachable!() };
//! assert_eq!(incoming.connect().client_id().as_str(), "c");
//! registry.accept(t0, incoming); // the credentials are fine
//! assert_eq!(registry.poll_transmit(), Some((conn, Bytes::from_static(&[0x20, 0x02, 0x00, 0x00]))));
//! assert!(matches!(registry.poll_event(), Some(Event::Connected { session_present: false, .. })));
//!
//! // PUBLISH QoS 1 "hi" to a/b, packet id 7: acknowledged, handed to the broker.
//! registry.handle_bytes(t0, conn, &[0x32, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x07, b'h', b'i']);
//! assert_eq!(registry.poll_transmit(), Some((conn, Bytes::from_static(&[0x40, 0x02, 0x00, 0x07]))));
//! let Some(Event::Publish { from, message }) = registry.poll_event() else { unreachable!() };
//! assert_eq!((from.as_str(), message.topic.as_str(), &message.payload[..]), ("c", "a/b", &b"hi"[..]));
//!
//! // Then silence: 1.5 x 60 s later the client is closed.
//! while let Some(t) = registry.poll_timeout() {
//!     registry.handle_timeout(t);
//! }
//! let (closed, close) = registry.poll_close().unwrap();
//! assert_eq!((closed, close.reason, close.code), (conn, CloseReason::ClientUnresponsive, Some(0x8D)));
//! assert!(matches!(registry.poll_event(), Some(Event::SessionEnded { .. })));
//! ```
//!
//! # Close decisions
//!
//! Each is a [`Close`] with its close reason and MQTT 5.0 reason code; the
//! codes map to close reasons in one place,
//! [`ViolationKind::mqtt_close_reason`](crate::ViolationKind::mqtt_close_reason)
//! (faults in the client's bytes through
//! [`ViolationKind::close_reason`](crate::ViolationKind::close_reason)). A
//! 5.0 client is sent a DISCONNECT with the code before a server-side close
//! of a connected client; a 3.1.1 connection is just closed. A refused
//! CONNECT gets a CONNACK with the code of its version.
//!
//! | what | 5.0 code | 3.1.1 CONNACK | close reason |
//! |---|---|---|---|
//! | malformed packet, protocol error (a first packet that is not CONNECT, a second CONNECT: the decoder's `UnexpectedPacket`) | 0x81, 0x82 | | INVALID_INBOUND_MESSAGE |
//! | packet over `limits.max_message_size` | 0x95 | | MESSAGE_TOO_LARGE |
//! | unsupported protocol level | 0x84 (sent as the 3.1.1 CONNACK 0x01) | 0x01 | ABORTED |
//! | empty client id without clean session (3.1.1) | 0x85 | 0x02 | ABORTED |
//! | bad user name or password, not authorized (`refuse`) | 0x86, 0x87 | 0x04, 0x05 | ABORTED |
//! | an authentication method (5.0; none is offered) | 0x8C | | ABORTED |
//! | client limit (`limits.max_clients`, or `Refuse::Busy`) | 0x89 | 0x03 | CONNECTION_LOST |
//! | nothing within 1.5 x keep alive | 0x8D | | CLIENT_UNRESPONSIVE |
//! | no whole CONNECT within `connect_timeout` | none | | CLIENT_UNRESPONSIVE |
//! | a CONNECT with the same client id accepted (MQTT-3.1.4-3) | 0x8E | | SESSION_TAKEN_OVER |
//! | a QoS 2 id reused while waiting for PUBREL; PUBACK, PUBREC, PUBCOMP for an id not in flight | 0x82 | | LOST_MESSAGES |
//! | more QoS 2 PUBLISH waiting for PUBREL than `receive_maximum` | 0x93 | | LOST_MESSAGES |
//! | topic alias above `topic_alias_maximum` (0x94); unknown alias (0x82) | 0x94, 0x82 | | INVALID_INBOUND_MESSAGE |
//! | PUBLISH above `maximum_qos` | 0x9B | | INVALID_INBOUND_MESSAGE |
//! | the client stopped reading (`outbound_full`: the server's write buffer passed its bound or stalled) | 0x97 | | MESSAGE_QUEUE_LIMIT_REACHED |
//! | the client's Maximum Packet Size is below even a CONNACK without properties (MQTT-3.1.2-24) | none sent | | MESSAGE_TOO_LARGE |
//! | `close(.., ServerClose::Controller)` | 0x98 | | CLOSED_BY_CONTROLLER |
//! | `close(.., ServerClose::Shutdown)` | 0x8B | | ABORTED |
//! | DISCONNECT from the client | its code | | CLOSED_BY_CLIENT |
//! | `connection_lost` | none | | CONNECTION_LOST |
//!
//! # Readings of the specifications
//!
//! Where MQTT 3.1.1, MQTT 5.0 or PROTOCOL.md section 8 leave a choice:
//!
//! - QoS 1 PUBLISH is acknowledged at once, so only QoS 2 messages waiting
//!   for PUBREL count against our receive maximum. 3.1.1 clients are held
//!   to the same bound although it is not announced to them.
//! - PROTOCOL.md section 8 closes the "bad sequence numbers" LOST_MESSAGES.
//!   The DISCONNECT carries 0x93 for the receive maximum and 0x82 (protocol
//!   error) for a reused id or an acknowledgement of an id not in flight,
//!   since 5.0 has no DISCONNECT code for those. A PUBREL for an unknown id
//!   is not one of them: a PUBCOMP lost with a connection makes a client
//!   send it again, and it is answered PUBCOMP (5.0: 0x92).
//! - A refused CONNECT closes ABORTED, except the client limit, which
//!   closes CONNECTION_LOST as the session protocol's does. Shutdown closes
//!   ABORTED, as the session protocol's shutdown does.
//! - The CONNECT timeout runs until the server accepts or refuses, so a
//!   stuck credentials check cannot hold a connection open; packets sent
//!   behind the CONNECT are held (at most `limits.max_message_size` bytes,
//!   past that 0x97) and read once it is accepted.
//! - A will is published on every end but DISCONNECT 0x00 (any 3.1.1
//!   DISCONNECT): a lost connection, a fault, keep alive, takeover, a
//!   server close. With a 5.0 will delay it waits for the delay or the end
//!   of the session, whichever comes first, and a new connection to the
//!   session cancels it (MQTT-3.1.3-9).
//! - A 3.1.1 session without clean session lives `max_session_expiry`
//!   seconds offline; a 5.0 session its expiry interval, capped by the same
//!   setting (the CONNACK says so when capped), or by the server's cap for
//!   that client ([`Incoming::limit_session_expiry`]). When more than
//!   `max_sessions` are offline, the one offline longest among those
//!   holding no message ends, else the one offline longest.
//! - Offline, QoS 0 messages are dropped and QoS 1 and 2 are queued. A
//!   full queue drops the new message, connected or not, and keeps what it
//!   holds; [`Registry::deliver`] says so ([`Delivered::Dropped`]), and
//!   [`Registry::backlog`] tells the server how full a queue is and whether
//!   its client keeps acknowledging, so that it can push back on
//!   publishers first. Nothing queued or in flight is ever discarded while
//!   the session lives: a client closed for not reading (0x97) finds it on
//!   its next connection.
//! - A session that was to end with its connection (3.1.1 clean session,
//!   5.0 expiry 0) is not resumed by a CONNECT taking its client id over,
//!   even without clean session: it ends, and the CONNACK says no session
//!   was present (MQTT-3.1.2-6, MQTT-3.2.2-3).
//! - One server-wide [`Budget`] ([`MqttConfig::max_held_bytes`]) bounds the
//!   message data all sessions hold together, each message counted once
//!   however many sessions hold it, plus what the server charges to it (a
//!   broker's retained messages). While it is spent a PUBLISH is refused
//!   before it is acknowledged: 5.0 gets PUBACK or PUBREC 0x97, a 3.1.1
//!   client is closed without an acknowledgement (it keeps the message),
//!   QoS 0 is dropped; and deliveries are dropped
//!   ([`Dropped::Budget`]). Once three quarters of it are held, a message
//!   that would wait in a queue (its session offline or behind) is
//!   dropped for that session, so that sessions which never read cannot
//!   spend the budget of clients that keep up. The server's [`PublishGate`] may refuse a
//!   PUBLISH the same way (a retained message its store cannot keep).
//! - Nothing sent exceeds a 5.0 client's Maximum Packet Size
//!   (MQTT-3.1.2-24): a CONNACK drops its properties to fit, a PUBLISH
//!   that does not fit is dropped for that client, any other packet is not
//!   sent; a client too small for any CONNACK is closed without one.
//! - SUBSCRIBE and UNSUBSCRIBE are the broker's to answer: the registry
//!   hands them out as events with their packet id and writes the SUBACK
//!   or UNSUBACK the broker gives back ([`Registry::suback`],
//!   [`Registry::unsuback`]), after checking its codes against the
//!   version and the maximum QoS. Until then the packet id is in use.
//! - Topic aliases on what the server sends (5.0): a client whose CONNECT
//!   gives a Topic Alias Maximum gets one for each of the first distinct
//!   topics sent on its connection, up to that maximum and
//!   `outbound_topic_aliases`, while those topics come to at most 4 KiB;
//!   the first PUBLISH of a topic carries topic and alias, the later ones
//!   the alias and an empty topic. Other topics go whole; an alias is never
//!   given to another topic. A new connection starts afresh, and what a
//!   resumed session sends again carries its topic whole.
//! - Client identifiers the server assigns are `auto-` and 24 hex digits
//!   from the injected random source (3.1.1 clients with an empty id and
//!   clean session get one too, unannounced).
//! - Bounds: one packet in the decoder (`limits.max_message_size`), the
//!   queue (`max_queued_messages`, `max_queued_bytes`), in flight (the
//!   lower of `max_inflight` and the client's receive maximum; inbound
//!   `receive_maximum`), aliases (`topic_alias_maximum`; ours
//!   `outbound_topic_aliases` and 4 KiB of topic), connected clients
//!   (`limits.max_clients`), offline sessions (`max_sessions`). Bytes
//!   handed to `poll_transmit` are the server's to bound (its socket
//!   buffer); when a client reads too slowly the server calls
//!   [`Registry::outbound_full`], which closes it as a full queue does.

mod budget;
mod clock;
mod config;
mod event;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
mod inflight;
mod queue;
mod registry;
mod state;
mod table;

pub use budget::{Budget, Charge};
pub use config::MqttConfig;
pub use event::{
    AnswerError, Backlog, Close, ConnId, Delivered, Delivery, Dropped, Event, Incoming, Message,
    Refuse, ServerClose, SessionInfo, SubscriptionRequest,
};
pub use registry::{AdmitAll, PublishGate, Registry};

#[cfg(test)]
mod tests;
