//! The MQTT registry: every transport connection, every session by client
//! identifier, the timers of both, and the queues of bytes to write, events
//! and close decisions the server drains.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::budget::Budget;
use super::clock::{Clock, Tick};
use super::config::MqttConfig;
use super::event::{
    AnswerError, Backlog, Close, ConnId, Delivered, Delivery, Dropped, Event, Incoming, Message,
    Refuse, ServerClose, SessionInfo, SubscriptionRequest,
};
use super::inflight::{Acked, Resend, Stage};
use super::queue::{Queued, Shared};
use super::state::{message_of, min_qos, Alias, PendingWill, Session};
use super::table::{Keyed, Table};
use crate::mqtt::subscribe::{SUBACK_V5, UNSUBACK_V5};
use crate::mqtt::{
    v311_connack_code, Ack, ConnAck, Decoder, Disconnect, MqttFault, Packet, PacketType,
    Properties, Property, PropertyId, Publish, QoS, Str, SubAck, UnsubAck, Version,
};
use crate::session::ids::RandomSource;
use crate::{CloseReason, Violation, ViolationKind};

/// A timer: of the connection or of the session in a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Conn(u32),
    Session(u32),
}

/// Where a connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Open; its CONNECT is not whole yet.
    AwaitConnect,
    /// Its CONNECT was handed out as an [`Incoming`].
    Authenticating,
    /// Accepted, attached to the session in this slot.
    Connected(u32),
}

/// One transport connection. What most connections hold only for a while
/// or never (bytes behind the CONNECT, topic aliases, unanswered
/// SUBSCRIBEs) is in [`ConnRare`], allocated only while it holds
/// something.
#[derive(Debug)]
struct Conn {
    id: ConnId,
    decoder: Decoder,
    phase: Phase,
    /// When it opened, until it is connected; then when the last whole
    /// packet arrived.
    since: Tick,
    /// The deadline filed in the timer heap.
    filed: Option<Tick>,
    /// The keep alive in force, in seconds (0: none); the client is closed
    /// after 1.5 times as long without a packet.
    keep_alive: u16,
    version: Option<Version>,
    rare: Option<Box<ConnRare>>,
}

/// The most bytes of topic one connection's outbound topic aliases keep:
/// the first topics sent get an alias only while they fit.
const SENT_ALIAS_BYTES: usize = 4096;

/// The state of a connection that most connections hold only for a while.
#[derive(Debug, Default)]
struct ConnRare {
    /// Bytes received while the CONNECT is being checked.
    pending: Vec<u8>,
    /// The client identifier of its CONNECT, until it is connected (then
    /// its session's).
    client_id: Option<String>,
    /// 5.0 topic aliases the client set, by alias.
    aliases: HashMap<u16, Str>,
    /// SUBSCRIBEs and UNSUBSCRIBEs handed to the broker and not answered
    /// yet. Each id is in it once (a reuse is a fault), so it holds at most
    /// 65,535 entries; the server answers before it reads more bytes, so
    /// it holds no more than one read's requests.
    awaiting: Vec<Awaiting>,
    /// Topic aliases the server set (5.0), by topic: given to the first
    /// distinct topics sent, 1 upwards, kept for the connection's life.
    sent_aliases: HashMap<Box<str>, u16>,
    /// Bytes of the topics in `sent_aliases`, at most [`SENT_ALIAS_BYTES`].
    sent_alias_bytes: usize,
}

impl ConnRare {
    fn is_empty(&self) -> bool {
        self.pending.is_empty()
            && self.client_id.is_none()
            && self.aliases.is_empty()
            && self.awaiting.is_empty()
            && self.sent_aliases.is_empty()
    }
}

impl Keyed for Conn {
    type Key = ConnId;
    fn key(&self) -> &ConnId {
        &self.id
    }
}

/// A request the broker is to answer.
#[derive(Clone, Copy, Debug)]
struct Awaiting {
    packet_id: u16,
    packet: PacketType,
    /// Its filters: the number of codes the answer carries.
    filters: usize,
}

impl Conn {
    /// Whether a SUBSCRIBE or UNSUBSCRIBE with this id awaits its answer.
    fn awaits(&self, packet_id: u16) -> bool {
        self.rare
            .as_ref()
            .is_some_and(|r| r.awaiting.iter().any(|a| a.packet_id == packet_id))
    }

    /// Its rare state, made if need be.
    fn rare(&mut self) -> &mut ConnRare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Lets go of the rare state once it holds nothing.
    fn trim(&mut self) {
        if self.rare.as_ref().is_some_and(|r| r.is_empty()) {
            self.rare = None;
        }
    }

    /// The topic alias of a PUBLISH of `topic` sent now, with at most
    /// `alias_max` aliases: the alias the topic was given, or a new one
    /// while there are aliases and bytes left; `None`: the topic goes whole
    /// without one.
    fn alias_for(&self, topic: &str, alias_max: u16) -> Option<Alias> {
        if alias_max == 0 || topic.is_empty() {
            return None;
        }
        let (given, bytes) = self
            .rare
            .as_ref()
            .map_or((0, 0), |r| (r.sent_aliases.len(), r.sent_alias_bytes));
        if let Some(&a) = self.rare.as_ref().and_then(|r| r.sent_aliases.get(topic)) {
            return Some(Alias::Use(a));
        }
        let next = u16::try_from(given).ok()?.checked_add(1)?;
        let fits = bytes
            .checked_add(topic.len())
            .is_some_and(|n| n <= SENT_ALIAS_BYTES);
        (next <= alias_max && fits).then_some(Alias::Set(next))
    }

    fn deadline(&self, connect_timeout: Duration) -> Option<Tick> {
        match self.phase {
            Phase::AwaitConnect | Phase::Authenticating => Some(self.since.after(connect_timeout)),
            Phase::Connected(_) => (self.keep_alive > 0).then(|| {
                self.since
                    .after(Duration::from_millis(u64::from(self.keep_alive) * 1500))
            }),
        }
    }
}

/// What happens to a connection's will when it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WillFate {
    /// DISCONNECT 0x00 (or any 3.1.1 DISCONNECT): discarded.
    Discard,
    /// Any other end: published, after its delay.
    Publish,
}

/// What becomes of a session whose connection ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SessionFate {
    /// Kept for its expiry.
    Keep,
    /// Ended now.
    End,
    /// Handed to a new connection (takeover without clean start): neither
    /// offline nor ended.
    Resume,
}

/// The registry of MQTT connections and sessions (sans-IO, owned by the
/// server). See the [module documentation](super) for the flow.
pub struct Registry<R: RandomSource> {
    config: MqttConfig,
    random: R,
    clock: Clock,
    /// Connections by [`ConnId`], sessions by client identifier; each
    /// names the other by slot number.
    conns: Table<Conn>,
    sessions: Table<Session>,
    /// Offline sessions, offline the longest first.
    offline: BTreeSet<(Tick, u32)>,
    /// Those of them that held no message (queued or in flight) when they
    /// went offline and have been given none since: the first to end at
    /// the offline-session cap.
    offline_idle: BTreeSet<(Tick, u32)>,
    /// At most one entry per connection and per session (see
    /// [`refile_conn`](Self::refile_conn)).
    timers: BinaryHeap<Reverse<(Tick, Timer)>>,
    transmits: VecDeque<(ConnId, Bytes)>,
    events: VecDeque<Event>,
    closes: VecDeque<(ConnId, Close)>,
    connected: usize,
    /// The shared copy of the message delivered last (see
    /// [`deliver`](Self::deliver)).
    last_shared: Option<Arc<Shared>>,
    /// The server-wide budget over held message data.
    budget: Budget,
    /// PUBLISHes refused (budget or gate) so far.
    refused_publishes: u64,
}

impl<R: RandomSource> std::fmt::Debug for Registry<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("connections", &self.conns.len())
            .field("sessions", &self.sessions.len())
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

/// The prefix of a client identifier the server assigns.
const ASSIGNED_PREFIX: &str = "auto-";

/// How full the server-wide budget may be before messages that would
/// wait in a queue are dropped, in percent: the rest is kept for what
/// goes out at once.
const TIGHT_PERCENT: usize = 75;

/// 5.0 reason code 0x97, quota exceeded.
const QUOTA_EXCEEDED: u8 = 0x97;

/// The refusals a 5.0 PUBACK or PUBREC can carry.
const PUBACK_REFUSALS: [u8; 6] = [0x80, 0x83, 0x87, 0x90, 0x97, 0x99];

/// The server's say on each PUBLISH, asked before the registry
/// acknowledges it (given to [`Registry::handle_bytes_with`] and
/// [`Registry::accept_with`]). A broker stores a retained message here, so
/// that a store that cannot take it refuses it rather than acknowledging a
/// message it does not keep.
///
/// A refusal is a 5.0 reason code (0x80, 0x83, 0x87, 0x90, 0x97, 0x99;
/// any other is sent as 0x80): a 5.0 client gets it in its PUBACK or
/// PUBREC; a 3.1.1 client, whose acknowledgements carry no code, is closed
/// without one for QoS 1 and 2, so that it keeps the message; QoS 0 is
/// dropped. A refused message is not routed.
///
/// ```
/// use std::time::Instant;
/// use sessionwire::mqtt::session::{Message, PublishGate};
///
/// /// Refuses retained messages on `sys/`.
/// struct NoRetainedSys;
/// impl PublishGate for NoRetainedSys {
///     fn admit(&mut self, _now: Instant, _from: &str, m: &Message) -> Result<(), u8> {
///         if m.retain && m.topic.as_str().starts_with("sys/") {
///             return Err(0x87); // not authorized
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait PublishGate {
    /// Whether the PUBLISH of `message` from `from` is taken: `Ok`, or the
    /// reason code it is refused with.
    fn admit(&mut self, now: Instant, from: &str, message: &Message) -> Result<(), u8>;
}

/// The gate that takes every PUBLISH.
#[derive(Clone, Copy, Debug, Default)]
pub struct AdmitAll;

impl PublishGate for AdmitAll {
    fn admit(&mut self, _now: Instant, _from: &str, _message: &Message) -> Result<(), u8> {
        Ok(())
    }
}

impl<R: RandomSource> Registry<R> {
    /// An empty registry; `random` mints the client identifiers it assigns.
    pub fn new(config: MqttConfig, random: R) -> Self {
        Registry {
            budget: Budget::new(config.max_held_bytes),
            config,
            random,
            clock: Clock::default(),
            conns: Table::new(),
            sessions: Table::new(),
            offline: BTreeSet::new(),
            offline_idle: BTreeSet::new(),
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            closes: VecDeque::new(),
            connected: 0,
            last_shared: None,
            refused_publishes: 0,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &MqttConfig {
        &self.config
    }

    /// A transport connection opened: its CONNECT must be whole within
    /// [`MqttConfig::connect_timeout`]. An id already open is ignored.
    pub fn open(&mut self, now: Instant, conn: ConnId) {
        if self.conns.find(&conn).is_some() {
            return;
        }
        let since = self.clock.tick(now);
        self.conns.insert(Conn {
            id: conn,
            decoder: Decoder::server(&self.config.limits),
            phase: Phase::AwaitConnect,
            since,
            filed: None,
            keep_alive: 0,
            version: None,
            rare: None,
        });
        self.refile_conn(conn);
    }

    /// Bytes the client sent on `conn` (any chunking). Unknown or closed
    /// connections are ignored. Every PUBLISH is admitted unless the
    /// server-wide budget is spent; [`handle_bytes_with`](Self::handle_bytes_with)
    /// lets the server refuse one.
    pub fn handle_bytes(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        self.handle_bytes_with(now, conn, bytes, &mut AdmitAll);
    }

    /// [`handle_bytes`](Self::handle_bytes), with `gate` asked about each
    /// PUBLISH before it is acknowledged (see [`PublishGate`]).
    pub fn handle_bytes_with(
        &mut self,
        now: Instant,
        conn: ConnId,
        bytes: &[u8],
        gate: &mut dyn PublishGate,
    ) {
        self.consume(now, conn, bytes, gate);
        self.refile_conn(conn);
    }

    /// Holds bytes that came while the CONNECT is checked, at most
    /// [`Limits::max_message_size`](crate::Limits::max_message_size) of
    /// them: past that the connection closes with 0x97 (quota exceeded,
    /// MESSAGE_QUEUE_LIMIT_REACHED).
    fn hold(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        let limit = self.config.limits.max_message_size();
        let Some(c) = self.conns.by_key_mut(&conn) else {
            return;
        };
        let held = c.rare.as_ref().map_or(0, |r| r.pending.len());
        if held.checked_add(bytes.len()).is_none_or(|n| n > limit) {
            self.end_conn_for(now, conn, 0x97, WillFate::Discard, SessionFate::Keep);
        } else {
            c.rare().pending.extend_from_slice(bytes);
        }
    }

    /// Decodes `input` packet by packet and acts on each.
    fn consume(
        &mut self,
        now: Instant,
        conn: ConnId,
        mut input: &[u8],
        gate: &mut dyn PublishGate,
    ) {
        while !input.is_empty() {
            let Some(c) = self.conns.by_key_mut(&conn) else {
                return;
            };
            if c.phase == Phase::Authenticating {
                // The rest waits for the decision on the CONNECT.
                self.hold(now, conn, input);
                return;
            }
            let at = c.decoder.offset();
            match c.decoder.feed(&mut input) {
                Ok(None) => return,
                Ok(Some(packet)) => {
                    if let Phase::Connected(_) = c.phase {
                        c.since = self.clock.tick(now);
                    }
                    if let Err(v) = self.on_packet(now, conn, packet, at, gate) {
                        self.fault(now, conn, v);
                        return;
                    }
                }
                Err(v) => {
                    self.fault(now, conn, v);
                    return;
                }
            }
        }
    }

    /// The transport connection closed without a decision of ours (socket
    /// closed, I/O error): CONNECTION_LOST, the will is published.
    pub fn connection_lost(&mut self, now: Instant, conn: ConnId) {
        if self.conns.find(&conn).is_some() {
            self.end_conn(
                now,
                conn,
                CloseReason::ConnectionLost,
                None,
                WillFate::Publish,
            );
        }
    }

    /// The server accepts a CONNECT (credentials fine): CONNACK 0, and an
    /// earlier connection with the same client identifier is taken over
    /// (DISCONNECT 0x8E, SESSION_TAKEN_OVER). At the client limit the
    /// CONNECT is refused busy instead. A stale `Incoming` (its connection
    /// closed meanwhile) is ignored.
    pub fn accept(&mut self, now: Instant, incoming: Incoming) {
        self.accept_with(now, incoming, &mut AdmitAll);
    }

    /// [`accept`](Self::accept), with `gate` asked about the PUBLISHes that
    /// came behind the CONNECT (see [`PublishGate`]).
    pub fn accept_with(&mut self, now: Instant, incoming: Incoming, gate: &mut dyn PublishGate) {
        let Incoming {
            conn,
            connect,
            expiry_cap,
        } = incoming;
        if self.conns.by_key(&conn).map(|c| c.phase) != Some(Phase::Authenticating) {
            return;
        }
        let version = connect.version;
        let mut client_id = connect.client_id().as_str().to_owned();
        let assigned = client_id.is_empty();
        if assigned {
            let mut raw = [0u8; 12];
            if self.random.fill(&mut raw).is_err() {
                // 0x80 Unspecified error (3.1.1: server unavailable).
                self.refuse_connect(now, conn, version, 0x80, Some(0x03));
                return;
            }
            client_id = ASSIGNED_PREFIX.to_owned();
            for b in raw {
                client_id.push_str(&format!("{b:02x}"));
            }
        }
        let takes_over = self
            .sessions
            .find(client_id.as_str())
            .and_then(|key| self.conn_of(key));
        if takes_over.is_none() && self.connected >= self.config.limits.max_clients() {
            let v = Violation::new(ViolationKind::Mqtt(MqttFault::ServerBusy), 0);
            self.refuse_violation(now, conn, version, v);
            return;
        }
        // A session whose connection is taken over resumes only if it was
        // to outlive that connection: one that began with clean session
        // (5.0: expiry 0) ends with it (MQTT-3.1.2-6, MQTT-3.2.2-3).
        let outlives = self
            .sessions
            .by_key(client_id.as_str())
            .is_some_and(|s| s.conn.is_none() || s.expiry > 0);
        let resume = !connect.clean_start && outlives;
        if let Some(old) = takes_over {
            let fate = if resume {
                SessionFate::Resume
            } else {
                SessionFate::End
            };
            self.server_close_conn(now, old, 0x8E, fate);
        }
        let mut session_present = false;
        let key = match self.sessions.find(client_id.as_str()) {
            Some(k) if resume => {
                session_present = true;
                Some(k)
            }
            Some(k) => {
                self.end_session(now, k);
                self.new_session(&client_id, version)
            }
            None => self.new_session(&client_id, version),
        };
        let Some(key) = key else {
            // No slot left for a session.
            self.refuse_connect(now, conn, version, 0x80, Some(0x03));
            return;
        };
        // The session as this connection sets it up.
        let config = self.config.clone();
        let cap = config
            .max_session_expiry
            .min(expiry_cap.unwrap_or(u32::MAX));
        let (requested, expiry) = match version {
            Version::V5 => {
                let asked = match connect.properties.get(PropertyId::SessionExpiryInterval) {
                    Some(Property::SessionExpiryInterval(s)) => s,
                    _ => 0,
                };
                (asked, asked.min(cap))
            }
            Version::V311 if connect.clean_start => (0, 0),
            Version::V311 => (cap, cap),
        };
        let client_receive_max = match connect.properties.get(PropertyId::ReceiveMaximum) {
            Some(Property::ReceiveMaximum(n)) => n,
            _ => u16::MAX,
        };
        let max_packet = match connect.properties.get(PropertyId::MaximumPacketSize) {
            Some(Property::MaximumPacketSize(n)) => NonZeroU32::new(n),
            _ => None,
        };
        // 0 for 3.1.1, whose CONNECT has no properties.
        let client_alias_max = match connect.properties.get(PropertyId::TopicAliasMaximum) {
            Some(Property::TopicAliasMaximum(n)) => n,
            _ => 0,
        };
        let keep_alive = match (version, config.server_keep_alive) {
            (Version::V5, Some(k)) => k,
            _ => connect.keep_alive,
        };
        let will = connect.will().map(|w| PendingWill::of(w, now));
        let window = config.max_inflight.min(client_receive_max).max(1);
        let slot = self.conns.find(&conn);
        if let Some(s) = self.sessions.get_mut(key) {
            s.version = version;
            s.conn = slot;
            s.expiry = expiry;
            s.expiry_was_zero = requested == 0;
            if let Some(since) = s.offline_since.take() {
                self.offline.remove(&(since, key));
                self.offline_idle.remove(&(since, key));
                self.offline_idle.remove(&(since, key));
            }
            if will.is_some() || s.rare_ref().is_some() {
                let rare = s.rare();
                // A new connection to the session cancels a delayed will
                // (MQTT-3.1.3-9).
                rare.will_due = None;
                rare.will = will;
            }
            s.trim();
            s.window = window;
            s.max_packet = max_packet;
            s.alias_max = client_alias_max.min(config.outbound_topic_aliases);
        }
        self.refile_session(key);
        self.connected += 1;
        let since = self.clock.tick(now);
        if let Some(c) = self.conns.by_key_mut(&conn) {
            c.phase = Phase::Connected(key);
            if let Some(r) = c.rare.as_mut() {
                r.client_id = None;
            }
            c.since = since;
            c.keep_alive = keep_alive;
        }
        // CONNACK.
        let mut properties = Properties::builder();
        let mut props: Vec<Property> = Vec::new();
        if version == Version::V5 {
            if assigned {
                if let Ok(id) = Str::try_from(client_id.as_str()) {
                    props.push(Property::AssignedClientIdentifier(id));
                }
            }
            if requested != expiry {
                props.push(Property::SessionExpiryInterval(expiry));
            }
            if config.receive_maximum != u16::MAX {
                props.push(Property::ReceiveMaximum(config.receive_maximum.max(1)));
            }
            if config.maximum_qos < QoS::ExactlyOnce {
                props.push(Property::MaximumQos(config.maximum_qos as u8));
            }
            let max = u32::try_from(config.limits.max_message_size()).unwrap_or(u32::MAX);
            props.push(Property::MaximumPacketSize(max));
            if config.topic_alias_maximum > 0 {
                props.push(Property::TopicAliasMaximum(config.topic_alias_maximum));
            }
            if let Some(k) = config.server_keep_alive {
                props.push(Property::ServerKeepAlive(k));
            }
        }
        for p in props {
            match properties.push(p) {
                Ok(b) => properties = b,
                Err(_) => {
                    properties = Properties::builder();
                    break;
                }
            }
        }
        let mut connack = ConnAck {
            session_present,
            code: 0,
            properties: properties.build(),
        };
        // Nothing sent may pass the client's Maximum Packet Size
        // (MQTT-3.1.2-24): the CONNACK's properties are optional, so it
        // goes without them if need be; if even that does not fit, the
        // connection closes without a packet (0x95, packet too large).
        if !self.send(conn, version, &Packet::ConnAck(connack.clone())) {
            connack.properties = Properties::new();
            if !self.send(conn, version, &Packet::ConnAck(connack)) {
                self.end_conn_for(now, conn, 0x95, WillFate::Discard, SessionFate::Keep);
                return;
            }
        }
        self.events.push_back(Event::Connected {
            conn,
            client_id,
            version,
            session_present,
        });
        // A resumed session sends again what was in flight, then its queue.
        if session_present {
            let again = self
                .sessions
                .get(key)
                .and_then(|s| s.rare_ref())
                .map(|r| r.inflight.resend())
                .unwrap_or_default();
            for what in again {
                match what {
                    Resend::Publish(id, item) => {
                        let bytes = self
                            .sessions
                            .get(key)
                            .and_then(|s| s.encode_publish(&item, id, true, now, None));
                        if let Some(bytes) = bytes {
                            self.transmits.push_back((conn, bytes));
                        }
                    }
                    Resend::PubRel(id) => {
                        self.send(conn, version, &Packet::PubRel(Ack::new(id)));
                    }
                }
            }
        }
        self.pump(now, key);
        self.refile_conn(conn);
        // Packets that came behind the CONNECT.
        let pending = self
            .conns
            .by_key_mut(&conn)
            .map(|c| {
                let pending = c.rare.as_mut().map(|r| std::mem::take(&mut r.pending));
                c.trim();
                pending.unwrap_or_default()
            })
            .unwrap_or_default();
        if !pending.is_empty() {
            self.consume(now, conn, &pending, gate);
            self.refile_conn(conn);
        }
    }

    /// The server refuses a CONNECT: CONNACK with the code of `why` (3.1.1
    /// 0x04, 0x05, 0x03; 5.0 0x86, 0x87, 0x89), then the close.
    pub fn refuse(&mut self, now: Instant, incoming: Incoming, why: Refuse) {
        let Incoming { conn, connect, .. } = incoming;
        if self.conns.by_key(&conn).map(|c| c.phase) != Some(Phase::Authenticating) {
            return;
        }
        let fault = match why {
            Refuse::BadCredentials => MqttFault::BadUserNameOrPassword,
            Refuse::NotAuthorized => MqttFault::NotAuthorized,
            Refuse::Busy => MqttFault::ServerBusy,
        };
        let v = Violation::new(ViolationKind::Mqtt(fault), 0);
        self.refuse_violation(now, conn, connect.version, v);
    }

    /// The broker routes `message` to `client_id` as `options` says. QoS 0
    /// goes out at once if the client is connected (and is dropped
    /// otherwise); QoS 1 and 2 wait in the session's queue while its
    /// in-flight window is full or it is offline. A message the client's
    /// maximum packet size cannot take, already expired, or with an empty
    /// topic is dropped. A full queue drops the new message and keeps what
    /// it holds, connected or not: the server sees it in the answer and
    /// decides (push back on the publisher, count the loss, close a client
    /// that stopped reading with [`outbound_full`](Self::outbound_full)).
    ///
    /// Every session a message is routed to shares one copy of its topic
    /// and payload (made on the first delivery of a message, not a view
    /// that would keep the publisher's whole receive buffer alive).
    pub fn deliver(
        &mut self,
        now: Instant,
        client_id: &str,
        message: &Message,
        options: Delivery,
    ) -> Delivered {
        let Some(key) = self.sessions.find(client_id) else {
            return Delivered::NoSession;
        };
        // Expired, or no topic to send it to (MQTT-4.7.3-1).
        if message.expires_at.is_some_and(|t| t <= now) || message.topic.is_empty() {
            return Delivered::Dropped(Dropped::Expired);
        }
        let (max_q, max_b) = (
            self.config.max_queued_messages,
            self.config.max_queued_bytes,
        );
        // With most of the budget held, a message that would wait (a
        // session offline or behind) is dropped for that session alone:
        // the rest of the budget stays for clients that keep up, so that
        // sessions which never read cannot spend it for everyone.
        let waits = options.qos != QoS::AtMostOnce
            && self.sessions.get(key).is_some_and(|s| !s.sends_at_once());
        if waits && self.budget_tight() {
            return Delivered::Dropped(Dropped::Budget);
        }
        let Some(shared) = self.shared(message) else {
            return Delivered::Dropped(Dropped::Budget);
        };
        let charge = match options.qos {
            // Sent at once or not at all: nothing is held.
            QoS::AtMostOnce => None,
            _ => match self.budget.try_charge(Queued::cost(&options)) {
                Some(c) => Some(c),
                None => return Delivered::Dropped(Dropped::Budget),
            },
        };
        let Some(s) = self.sessions.get_mut(key) else {
            return Delivered::NoSession;
        };
        let item = Queued {
            message: shared,
            delivery: options,
            _charge: charge,
        };
        if item.delivery.qos == QoS::AtMostOnce {
            if s.conn.is_none() {
                return Delivered::Dropped(Dropped::Offline);
            }
            return self.send_message(now, key, item);
        }
        if s.sends_at_once() {
            return self.send_message(now, key, item);
        }
        if s.rare().queue.push(item, max_q, max_b).is_err() {
            s.trim();
            return Delivered::Dropped(Dropped::QueueFull);
        }
        if let Some(since) = s.offline_since {
            self.offline_idle.remove(&(since, key));
        }
        self.pump(now, key);
        Delivered::Queued
    }

    /// The one shared copy of `message`: the last one made if it holds the
    /// same message (every delivery of one routing in a row), else a new
    /// copy of its topic and payload, charged to the budget; `None` when
    /// the budget cannot take it.
    fn shared(&mut self, message: &Message) -> Option<Arc<Shared>> {
        if let Some(last) = &self.last_shared {
            if ***last == *message {
                return Some(Arc::clone(last));
            }
        }
        // The last copy is let go first: it may be all that holds the
        // budget.
        self.last_shared = None;
        let charge = self.budget.try_charge(Shared::cost(message))?;
        let mut kept = message.clone();
        kept.topic = Str::try_from(message.topic.as_str()).unwrap_or_default();
        kept.payload = Bytes::copy_from_slice(&message.payload);
        let kept = Arc::new(Shared::new(kept, Some(charge)));
        self.last_shared = Some(Arc::clone(&kept));
        Some(kept)
    }

    /// Whether the budget is [`TIGHT_PERCENT`] used or more.
    fn budget_tight(&self) -> bool {
        self.budget.used().saturating_mul(100) >= self.budget.limit().saturating_mul(TIGHT_PERCENT)
    }

    /// The server-wide budget over held message data
    /// ([`MqttConfig::max_held_bytes`]): the server charges what it holds
    /// beside the sessions (a broker's retained messages) to the same one.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// PUBLISHes refused so far, by the budget or the server's
    /// [`PublishGate`].
    pub fn refused_publishes(&self) -> u64 {
        self.refused_publishes
    }

    /// How far behind the session of `client_id` is; `None` when there is
    /// no such session.
    pub fn backlog(&self, client_id: &str) -> Option<Backlog> {
        let s = self.sessions.by_key(client_id)?;
        let r = s.rare_ref();
        Some(Backlog {
            connected: s.conn.is_some(),
            queued: r.map_or(0, |r| r.queue.len()),
            queued_bytes: r.map_or(0, |r| r.queue.bytes()),
            max_messages: self.config.max_queued_messages,
            max_bytes: self.config.max_queued_bytes,
            in_flight: s.outbound_len(),
            window: usize::from(s.window),
            acked: r.map_or(0, |r| r.acked),
        })
    }

    /// The connection of `client_id`'s session, while it has one.
    pub fn connection(&self, client_id: &str) -> Option<ConnId> {
        self.sessions
            .find(client_id)
            .and_then(|key| self.conn_of(key))
    }

    /// The server closes `client_id` of its own accord: a 5.0 client gets
    /// DISCONNECT 0x98 or 0x8B first; its will is published. A controller
    /// close also ends the session (offline ones included).
    pub fn close(&mut self, now: Instant, client_id: &str, why: ServerClose) {
        let Some(key) = self.sessions.find(client_id) else {
            return;
        };
        let conn = self.conn_of(key);
        let (code, fate) = match why {
            ServerClose::Controller => (0x98, SessionFate::End),
            ServerClose::Shutdown => (0x8B, SessionFate::Keep),
        };
        match conn {
            Some(conn) => self.server_close_conn(now, conn, code, fate),
            None if fate == SessionFate::End => self.end_session(now, key),
            None => {}
        }
    }

    /// The client stopped reading: the server's write buffer for `conn`
    /// passed its bound, or nothing could be written to it for the
    /// server's stall bound. Closed DISCONNECT 0x97 (if it can still be
    /// written), MESSAGE_QUEUE_LIMIT_REACHED, its will published; its
    /// session keeps what it holds (queued and in-flight messages are sent
    /// again on the next connection, while the session lives). Bytes handed
    /// out by [`poll_transmit`](Self::poll_transmit) are the server's to
    /// bound; this keeps the close decision here.
    pub fn outbound_full(&mut self, now: Instant, conn: ConnId) {
        match self.conns.by_key(&conn).map(|c| c.phase) {
            Some(Phase::Connected(_)) => {
                self.server_close_conn(now, conn, 0x97, SessionFate::Keep);
            }
            Some(_) => self.end_conn_for(now, conn, 0x97, WillFate::Discard, SessionFate::Keep),
            None => {}
        }
    }

    /// The next bytes to write, in order for each connection. Drain them
    /// all before [`poll_close`](Self::poll_close).
    pub fn poll_transmit(&mut self) -> Option<(ConnId, Bytes)> {
        self.transmits.pop_front()
    }

    /// The next event for the server.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next close decision; its connection's last bytes were queued
    /// before it: close the socket once they are written. Each connection
    /// is handed out once; the registry has forgotten it.
    pub fn poll_close(&mut self) -> Option<(ConnId, Close)> {
        self.closes.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers
            .peek()
            .and_then(|Reverse((t, _))| self.clock.instant(*t))
    }

    /// Fires every timer due at `now`: CONNECT timeouts, keep alive
    /// (DISCONNECT 0x8D, CLIENT_UNRESPONSIVE), delayed wills, offline
    /// session expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        let tick = self.clock.tick(now);
        while let Some(&Reverse((at, timer))) = self.timers.peek() {
            if at > tick {
                return;
            }
            self.timers.pop();
            match timer {
                Timer::Conn(slot) => self.conn_timer(now, tick, slot, at),
                Timer::Session(key) => self.session_timer(now, tick, key, at),
            }
        }
    }

    /// Every session, connected or offline.
    pub fn sessions(&self) -> impl Iterator<Item = SessionInfo> + '_ {
        self.sessions.iter().map(|s| SessionInfo {
            client_id: s.client_id.to_string(),
            version: s.version,
            conn: s.conn.and_then(|slot| self.conns.get(slot)).map(|c| c.id),
        })
    }

    /// Lets go of the room of its queues of transmits, events and closes
    /// while they are empty (what a burst of clients or deliveries made
    /// them take). A server calls it when it has been quiet, not after
    /// every drain, so that a busy server keeps the room it keeps using.
    pub fn shrink_queues(&mut self) {
        if self.transmits.is_empty() {
            self.transmits.shrink_to_fit();
        }
        if self.events.is_empty() {
            self.events.shrink_to_fit();
        }
        if self.closes.is_empty() {
            self.closes.shrink_to_fit();
        }
    }

    /// Room the queues of transmits, events and closes hold, in entries.
    #[cfg(test)]
    pub(super) fn queue_room(&self) -> usize {
        self.transmits.capacity() + self.events.capacity() + self.closes.capacity()
    }

    /// Whether the session of `client_id` has a connection now (an
    /// offline session, or none, has not): a CONNECT with this id would
    /// take that connection over rather than add a client.
    pub fn is_connected(&self, client_id: &str) -> bool {
        self.connection(client_id).is_some()
    }

    /// Connected clients (for the client limit).
    pub fn connected(&self) -> usize {
        self.connected
    }

    /// Open transport connections, connected or not.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    fn conn_timer(&mut self, now: Instant, tick: Tick, slot: u32, at: Tick) {
        let timeout = self.config.connect_timeout;
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        let conn = c.id;
        if c.filed == Some(at) {
            c.filed = None;
        }
        match c.deadline(timeout) {
            Some(d) if d <= tick => match c.phase {
                Phase::Connected(_) => self.server_close_conn(now, conn, 0x8D, SessionFate::Keep),
                // No CONNECT in time: nothing to answer.
                _ => self.end_conn(
                    now,
                    conn,
                    CloseReason::ClientUnresponsive,
                    None,
                    WillFate::Publish,
                ),
            },
            _ => self.refile_conn(conn),
        }
    }

    fn session_timer(&mut self, now: Instant, tick: Tick, key: u32, at: Tick) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if s.filed == Some(at) {
            s.filed = None;
        }
        let due = s
            .rare_mut()
            .filter(|r| r.will_due.as_ref().is_some_and(|due| due.0 <= tick))
            .and_then(|r| r.will_due.take());
        if let Some((_, message)) = due {
            s.trim();
            let from = s.client_id.to_string();
            self.events.push_back(Event::Will { from, message });
        }
        let ends = s.ends_at().is_some_and(|t| t <= tick);
        if ends {
            self.end_session(now, key);
        } else {
            self.refile_session(key);
        }
    }

    /// A new session for `client_id`, which has none; `None` when there
    /// is no slot number left.
    fn new_session(&mut self, client_id: &str, version: Version) -> Option<u32> {
        self.sessions.insert(Session::new(client_id, version))
    }

    /// Ends a session: a will still waiting is published now, the
    /// server is told to drop its subscriptions.
    fn end_session(&mut self, _now: Instant, key: u32) {
        let Some(mut s) = self.sessions.remove(key) else {
            return;
        };
        if let Some(since) = s.offline_since.take() {
            self.offline.remove(&(since, key));
            self.offline_idle.remove(&(since, key));
        }
        if let Some((_, message)) = s.rare_mut().and_then(|r| r.will_due.take()) {
            self.events.push_back(Event::Will {
                from: s.client_id.to_string(),
                message,
            });
        }
        self.events.push_back(Event::SessionEnded {
            client_id: s.client_id.into(),
        });
    }

    /// Acts on one packet of a connection (decoded from stream offset `at`).
    fn on_packet(
        &mut self,
        now: Instant,
        conn: ConnId,
        packet: Packet,
        at: usize,
        gate: &mut dyn PublishGate,
    ) -> Result<(), Violation> {
        let fault = |f: MqttFault| Violation::new(ViolationKind::Mqtt(f), at);
        let Some(c) = self.conns.by_key_mut(&conn) else {
            return Ok(());
        };
        let (key, packet) = match (c.phase, packet) {
            (Phase::AwaitConnect, Packet::Connect(connect)) => {
                c.version = Some(connect.version);
                let id = connect.client_id();
                // An empty one is assigned at `accept`.
                if !id.is_empty() {
                    c.rare().client_id = Some(id.as_str().to_owned());
                }
                if connect.version == Version::V5 {
                    if connect
                        .properties
                        .get(PropertyId::AuthenticationMethod)
                        .is_some()
                    {
                        // No extended authentication is offered.
                        return Err(fault(MqttFault::BadAuthenticationMethod));
                    }
                    // MQTT-3.2.2-12: a will above the maximum QoS.
                    if let Some(w) = connect.will().filter(|w| w.qos > self.config.maximum_qos) {
                        return Err(fault(MqttFault::QosNotSupported(w.qos as u8)));
                    }
                }
                c.phase = Phase::Authenticating;
                self.events.push_back(Event::Connect(Incoming {
                    conn,
                    connect,
                    expiry_cap: None,
                }));
                return Ok(());
            }
            (Phase::Connected(key), packet) => (key, packet),
            // The decoder lets nothing else through before the CONNECT,
            // and holds nothing while the CONNECT is checked.
            (_, packet) => {
                return Err(fault(MqttFault::UnexpectedPacket(packet.packet_type())));
            }
        };
        let version = c.version.unwrap_or(Version::V311);
        match packet {
            Packet::Publish(p) => self.on_publish(now, conn, key, p, at, gate)?,
            Packet::PubAck(a) => self.on_ack(now, conn, key, PacketType::PubAck, a, at)?,
            Packet::PubRec(a) => self.on_ack(now, conn, key, PacketType::PubRec, a, at)?,
            Packet::PubComp(a) => self.on_ack(now, conn, key, PacketType::PubComp, a, at)?,
            Packet::PubRel(a) => {
                let known = self.sessions.get_mut(key).is_some_and(|s| {
                    let known = s
                        .rare_mut()
                        .is_some_and(|r| r.inflight.inbound_release(a.packet_id));
                    s.trim();
                    known
                });
                let mut comp = Ack::new(a.packet_id);
                if !known && version == Version::V5 {
                    // Packet Identifier not found: answered, not a fault
                    // (a PUBCOMP lost with a connection makes the client
                    // send PUBREL again).
                    comp.code = 0x92;
                }
                self.send(conn, version, &Packet::PubComp(comp));
            }
            Packet::Subscribe(sub) => {
                self.await_answer(conn, key, PacketType::Subscribe, sub.packet_id, at)?;
                let max = self.config.maximum_qos;
                let id = match sub.properties.get(PropertyId::SubscriptionIdentifier) {
                    Some(Property::SubscriptionIdentifier(n)) => Some(n),
                    _ => None,
                };
                let mut subscriptions = Vec::new();
                for (filter, mut options) in sub.subscriptions.iter() {
                    options.qos = min_qos(options.qos, max);
                    subscriptions.push(SubscriptionRequest {
                        filter: filter.as_str().to_owned(),
                        options,
                        id,
                    });
                }
                self.set_awaited_count(conn, subscriptions.len());
                if let Some(client_id) = self.client_of(key) {
                    self.events.push_back(Event::Subscribe {
                        client_id,
                        packet_id: sub.packet_id,
                        subscriptions,
                    });
                }
            }
            Packet::Unsubscribe(unsub) => {
                self.await_answer(conn, key, PacketType::Unsubscribe, unsub.packet_id, at)?;
                let filters: Vec<String> = unsub
                    .filters
                    .iter()
                    .map(|f| f.as_str().to_owned())
                    .collect();
                self.set_awaited_count(conn, filters.len());
                if let Some(client_id) = self.client_of(key) {
                    self.events.push_back(Event::Unsubscribe {
                        client_id,
                        packet_id: unsub.packet_id,
                        filters,
                    });
                }
            }
            Packet::PingReq => {
                self.send(conn, version, &Packet::PingResp);
            }
            Packet::Disconnect(d) => {
                if let Some(Property::SessionExpiryInterval(secs)) =
                    d.properties.get(PropertyId::SessionExpiryInterval)
                {
                    let cap = self.config.max_session_expiry;
                    let Some(s) = self.sessions.get_mut(key) else {
                        return Ok(());
                    };
                    if s.expiry_was_zero && secs != 0 {
                        return Err(fault(MqttFault::SessionExpiryAfterZero));
                    }
                    s.expiry = secs.min(cap);
                }
                // 0x00 (and every 3.1.1 DISCONNECT) discards the will; 0x04
                // asks for it, and so does any error the client reports.
                let will = if d.code == 0 {
                    WillFate::Discard
                } else {
                    WillFate::Publish
                };
                self.end_conn(now, conn, CloseReason::ClosedByClient, Some(d.code), will);
            }
            other => {
                return Err(fault(MqttFault::UnexpectedPacket(other.packet_type())));
            }
        }
        Ok(())
    }

    /// Files a SUBSCRIBE or UNSUBSCRIBE as awaiting the broker's answer; its
    /// id must not be awaiting one already nor be a QoS 2 PUBLISH's.
    fn await_answer(
        &mut self,
        conn: ConnId,
        key: u32,
        packet: PacketType,
        packet_id: u16,
        at: usize,
    ) -> Result<(), Violation> {
        let inbound = self
            .sessions
            .get(key)
            .is_some_and(|s| s.inbound_contains(packet_id));
        let Some(c) = self.conns.by_key_mut(&conn) else {
            return Ok(());
        };
        if inbound || c.awaits(packet_id) {
            return Err(Violation::new(
                ViolationKind::Mqtt(MqttFault::PacketIdInUse(packet_id)),
                at,
            ));
        }
        c.rare().awaiting.push(Awaiting {
            packet_id,
            packet,
            filters: 0,
        });
        Ok(())
    }

    /// Sets the number of filters of the request filed last on `conn`.
    fn set_awaited_count(&mut self, conn: ConnId, filters: usize) {
        if let Some(a) = self
            .conns
            .by_key_mut(&conn)
            .and_then(|c| c.rare.as_mut())
            .and_then(|r| r.awaiting.last_mut())
        {
            a.filters = filters;
        }
    }

    /// The broker's answer to a SUBSCRIBE of `client_id`: one code per
    /// subscription, in packet order: the QoS granted (at most the
    /// configured maximum QoS), or a 5.0 refusal (0x80, 0x83, 0x87, 0x8F,
    /// 0x91, 0x97, 0x9E, 0xA1, 0xA2), which a 3.1.1 client is sent as
    /// 0x80. Nothing is written when the answer is refused.
    pub fn suback(
        &mut self,
        client_id: &str,
        packet_id: u16,
        codes: &[u8],
    ) -> Result<(), AnswerError> {
        let max = self.config.maximum_qos as u8;
        for &c in codes {
            match c {
                0x00..=0x02 if c > max => return Err(AnswerError::AboveMaximumQos(c)),
                _ if SUBACK_V5.contains(&c) => {}
                _ => return Err(AnswerError::BadCode(c)),
            }
        }
        let (conn, version) =
            self.take_awaited(client_id, PacketType::Subscribe, packet_id, codes.len())?;
        let codes = match version {
            Version::V5 => Bytes::copy_from_slice(codes),
            _ => codes
                .iter()
                .map(|&c| if c >= 0x80 { 0x80 } else { c })
                .collect(),
        };
        let suback = SubAck {
            packet_id,
            properties: Properties::new(),
            codes,
        };
        self.send(conn, version, &Packet::SubAck(suback));
        Ok(())
    }

    /// The broker's answer to an UNSUBSCRIBE of `client_id`: one code per
    /// filter, in packet order: 0x00 (removed), 0x11 (there was no such
    /// subscription), or a refusal (0x80, 0x83, 0x87, 0x8F, 0x91). A 3.1.1
    /// UNSUBACK carries no codes. Nothing is written when the answer is
    /// refused.
    pub fn unsuback(
        &mut self,
        client_id: &str,
        packet_id: u16,
        codes: &[u8],
    ) -> Result<(), AnswerError> {
        if let Some(&c) = codes.iter().find(|c| !UNSUBACK_V5.contains(c)) {
            return Err(AnswerError::BadCode(c));
        }
        let (conn, version) =
            self.take_awaited(client_id, PacketType::Unsubscribe, packet_id, codes.len())?;
        let unsuback = UnsubAck {
            packet_id,
            properties: Properties::new(),
            codes: Bytes::copy_from_slice(codes),
        };
        self.send(conn, version, &Packet::UnsubAck(unsuback));
        Ok(())
    }

    /// Takes the request `packet_id` of `client_id`'s connection off its
    /// awaiting list, if it is of this type and has `count` filters.
    fn take_awaited(
        &mut self,
        client_id: &str,
        packet: PacketType,
        packet_id: u16,
        count: usize,
    ) -> Result<(ConnId, Version), AnswerError> {
        let c = self
            .sessions
            .by_key(client_id)
            .and_then(|s| s.conn)
            .and_then(|slot| self.conns.get_mut(slot))
            .ok_or(AnswerError::NotAwaited)?;
        let conn = c.id;
        let awaiting = &mut c.rare.as_mut().ok_or(AnswerError::NotAwaited)?.awaiting;
        let i = awaiting
            .iter()
            .position(|a| a.packet_id == packet_id && a.packet == packet)
            .ok_or(AnswerError::NotAwaited)?;
        let expected = awaiting[i].filters;
        if expected != count {
            return Err(AnswerError::WrongCount {
                expected,
                got: count,
            });
        }
        awaiting.swap_remove(i);
        if awaiting.is_empty() {
            // Drops the vector's allocation with it.
            c.rare().awaiting = Vec::new();
            c.trim();
        }
        Ok((conn, c.version.unwrap_or(Version::V311)))
    }

    /// The connection of the session in slot `key`, if connected.
    fn conn_of(&self, key: u32) -> Option<ConnId> {
        let slot = self.sessions.get(key)?.conn?;
        self.conns.get(slot).map(|c| c.id)
    }

    fn client_of(&self, key: u32) -> Option<String> {
        self.sessions.get(key).map(|s| s.client_id.to_string())
    }

    /// A PUBLISH from the client.
    fn on_publish(
        &mut self,
        now: Instant,
        conn: ConnId,
        key: u32,
        p: Publish,
        at: usize,
        gate: &mut dyn PublishGate,
    ) -> Result<(), Violation> {
        let fault = |f: MqttFault| Violation::new(ViolationKind::Mqtt(f), at);
        if p.qos > self.config.maximum_qos {
            return Err(fault(MqttFault::QosNotSupported(p.qos as u8)));
        }
        let alias_max = self.config.topic_alias_maximum;
        let Some(c) = self.conns.by_key_mut(&conn) else {
            return Ok(());
        };
        let version = c.version.unwrap_or(Version::V311);
        let alias = match p.properties.get(PropertyId::TopicAlias) {
            Some(Property::TopicAlias(a)) if version == Version::V5 => Some(a),
            _ => None,
        };
        let topic = match alias {
            Some(a) if a > alias_max => return Err(fault(MqttFault::TopicAliasInvalid(a))),
            Some(a) if p.topic().is_empty() => {
                match c.rare.as_ref().and_then(|r| r.aliases.get(&a)) {
                    Some(t) => t.clone(),
                    None => return Err(fault(MqttFault::TopicAliasUnknown(a))),
                }
            }
            Some(a) => {
                // A copy: the alias outlives the packet's buffer.
                let t = Str::try_from(p.topic()).unwrap_or_default();
                c.rare().aliases.insert(a, t.clone());
                t
            }
            None => p.topic_view(),
        };
        if p.qos != QoS::AtMostOnce && c.awaits(p.packet_id) {
            return Err(fault(MqttFault::PacketIdInUse(p.packet_id)));
        }
        let Some(s) = self.sessions.get_mut(key) else {
            return Ok(());
        };
        if p.qos == QoS::ExactlyOnce {
            if s.inbound_contains(p.packet_id) {
                if !p.dup {
                    return Err(fault(MqttFault::PacketIdInUse(p.packet_id)));
                }
                // A resend: acknowledged again, not delivered again.
                self.send(conn, version, &Packet::PubRec(Ack::new(p.packet_id)));
                return Ok(());
            }
            let inbound = s.rare_ref().map_or(0, |r| r.inflight.inbound_len());
            if inbound >= usize::from(self.config.receive_maximum.max(1)) {
                return Err(fault(MqttFault::ReceiveMaximumExceeded));
            }
        }
        let message = message_of(&p, topic, now);
        // Admission, before anything is acknowledged: the server-wide
        // budget, then the server's gate.
        let admitted = if self.budget.is_spent() {
            Err(QUOTA_EXCEEDED)
        } else {
            gate.admit(now, &s.client_id, &message).map_err(|code| {
                if PUBACK_REFUSALS.contains(&code) {
                    code
                } else {
                    0x80
                }
            })
        };
        if let Err(code) = admitted {
            self.refused_publishes = self.refused_publishes.wrapping_add(1);
            match (p.qos, version) {
                // Nothing to answer: the message is not taken.
                (QoS::AtMostOnce, _) => {}
                (QoS::AtLeastOnce, Version::V5) => {
                    let mut ack = Ack::new(p.packet_id);
                    ack.code = code;
                    self.send(conn, version, &Packet::PubAck(ack));
                }
                (QoS::ExactlyOnce, Version::V5) => {
                    // A PUBREC of 0x80 or above ends the exchange.
                    let mut ack = Ack::new(p.packet_id);
                    ack.code = code;
                    self.send(conn, version, &Packet::PubRec(ack));
                }
                // 3.1.1 cannot refuse a message: it is closed without an
                // acknowledgement, so that the client keeps the message
                // and sends it again on its next connection.
                _ => self.server_close_conn(now, conn, code, SessionFate::Keep),
            }
            return Ok(());
        }
        let from = s.client_id.to_string();
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.send(conn, version, &Packet::PubAck(Ack::new(p.packet_id)));
            }
            QoS::ExactlyOnce => {
                s.rare().inflight.inbound_insert(p.packet_id);
                self.send(conn, version, &Packet::PubRec(Ack::new(p.packet_id)));
            }
        }
        self.events.push_back(Event::Publish { from, message });
        Ok(())
    }

    /// A PUBACK, PUBREC or PUBCOMP from the client.
    fn on_ack(
        &mut self,
        now: Instant,
        conn: ConnId,
        key: u32,
        packet: PacketType,
        a: Ack,
        at: usize,
    ) -> Result<(), Violation> {
        let Some(s) = self.sessions.get_mut(key) else {
            return Ok(());
        };
        let refused = packet == PacketType::PubRec && a.code >= 0x80;
        let acked = s
            .rare_mut()
            .and_then(|r| r.inflight.ack(packet, a.packet_id, refused));
        match acked {
            None => Err(Violation::new(
                ViolationKind::Mqtt(MqttFault::AckNotInFlight {
                    packet,
                    id: a.packet_id,
                }),
                at,
            )),
            Some(Acked::SendPubRel) => {
                let version = s.version;
                self.send(conn, version, &Packet::PubRel(Ack::new(a.packet_id)));
                Ok(())
            }
            Some(Acked::Done) => {
                if let Some(r) = s.rare_mut() {
                    r.acked = r.acked.wrapping_add(1);
                }
                self.pump(now, key);
                if let Some(s) = self.sessions.get_mut(key) {
                    s.trim();
                }
                Ok(())
            }
        }
    }

    /// Sends queued messages while the in-flight window has room.
    fn pump(&mut self, now: Instant, key: u32) {
        loop {
            let Some(s) = self.sessions.get_mut(key) else {
                return;
            };
            if s.conn.is_none() || s.outbound_len() >= usize::from(s.window) {
                return;
            }
            let Some(item) = s.rare_mut().and_then(|r| r.queue.pop(now)) else {
                return;
            };
            // A message too large for the client is dropped here as it
            // would have been when routed.
            let _ = self.send_message(now, key, item);
        }
    }

    /// Sends one message to a connected session (QoS 1 and 2 with a new
    /// packet identifier, filed in flight), unless the client's maximum
    /// packet size is too small for it (dropped).
    fn send_message(&mut self, now: Instant, key: u32, item: Queued) -> Delivered {
        let Some(s) = self.sessions.get_mut(key) else {
            return Delivered::NoSession;
        };
        let Some(c) = s.conn.and_then(|slot| self.conns.get(slot)) else {
            return Delivered::Dropped(Dropped::Offline);
        };
        let conn = c.id;
        let stage = match item.delivery.qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => Some(Stage::Qos1Sent),
            QoS::ExactlyOnce => Some(Stage::Qos2Sent),
        };
        let id = match stage {
            None => 0,
            Some(_) => {
                let mut last = s.last_id;
                let id = match s.rare_ref() {
                    Some(r) => r.inflight.allocate(&mut last),
                    None => Some(last.checked_add(1).unwrap_or(1)),
                };
                let Some(id) = id else {
                    // All 65,535 identifiers in flight: the window is
                    // far smaller, so this does not happen.
                    return Delivered::Dropped(Dropped::QueueFull);
                };
                s.last_id = id;
                id
            }
        };
        let topic = item.message.topic.as_str();
        let alias = match s.alias_max {
            0 => None,
            max => c.alias_for(topic, max),
        };
        // Too big for the client (MQTT-3.1.2-25): dropped.
        let Some(bytes) = s.encode_publish(&item, id, false, now, alias) else {
            return Delivered::Dropped(Dropped::TooLarge);
        };
        if let (Some(Alias::Set(a)), Some(c)) = (alias, self.conns.by_key_mut(&conn)) {
            let rare = c.rare();
            rare.sent_alias_bytes += topic.len();
            rare.sent_aliases.insert(topic.into(), a);
        }
        if let Some(stage) = stage {
            s.rare().inflight.insert(id, item, stage);
        }
        self.transmits.push_back((conn, bytes));
        Delivered::Sent
    }

    /// Queues `packet` for `conn`, unless it is larger than the 5.0
    /// client's Maximum Packet Size (MQTT-3.1.2-24: then it is not sent at
    /// all); whether it was queued.
    fn send(&mut self, conn: ConnId, version: Version, packet: &Packet) -> bool {
        let Ok(bytes) = packet.to_bytes(version) else {
            return false;
        };
        if version == Version::V5 && !self.fits(conn, bytes.len()) {
            return false;
        }
        self.transmits.push_back((conn, bytes));
        true
    }

    /// Whether a packet of `len` bytes is within the Maximum Packet Size
    /// the client of `conn` announced (5.0), if it is connected.
    fn fits(&self, conn: ConnId, len: usize) -> bool {
        let max = match self.conns.by_key(&conn).map(|c| c.phase) {
            Some(Phase::Connected(key)) => self.sessions.get(key).and_then(|s| s.max_packet),
            _ => None,
        };
        max.is_none_or(|max| u32::try_from(len).is_ok_and(|n| n <= max.get()))
    }

    /// A fault in what the client sent: before the CONNECT is accepted a
    /// refusal CONNACK where the fault is one, after it a 5.0 DISCONNECT
    /// with the reason code; then the close.
    fn fault(&mut self, now: Instant, conn: ConnId, v: Violation) {
        let Some(c) = self.conns.by_key(&conn) else {
            return;
        };
        match c.phase {
            Phase::Connected(_) => {
                let code = v.kind().reason_code();
                if c.version == Some(Version::V5) {
                    if let Some(code) = code {
                        self.disconnect(conn, code);
                    }
                }
                self.end_conn(now, conn, v.close_reason(), code, WillFate::Publish);
            }
            _ => {
                let version = c.version;
                match version {
                    Some(version) => self.refuse_violation(now, conn, version, v),
                    None => {
                        // The CONNECT did not decode: a 3.1.1 CONNACK for a
                        // level we do not speak or a rejected identifier
                        // (a client of any level reads it), else nothing.
                        if let Some(code) = v311_connack_code(&v) {
                            let connack = ConnAck {
                                session_present: false,
                                code,
                                properties: Properties::new(),
                            };
                            self.send(conn, Version::V311, &Packet::ConnAck(connack));
                        }
                        let code = v.kind().reason_code();
                        self.end_conn(now, conn, v.close_reason(), code, WillFate::Discard);
                    }
                }
            }
        }
    }

    /// Refuses a CONNECT for `v`: CONNACK with its code, then the close.
    fn refuse_violation(&mut self, now: Instant, conn: ConnId, version: Version, v: Violation) {
        let code = v.kind().reason_code().unwrap_or(0x80);
        let v311 = v311_connack_code(&v);
        self.refuse_connect(now, conn, version, code, v311);
    }

    /// Sends the refusing CONNACK (5.0 `code`, 3.1.1 `v311` or 0x03) and
    /// closes with the close reason of `code`.
    fn refuse_connect(
        &mut self,
        now: Instant,
        conn: ConnId,
        version: Version,
        code: u8,
        v311: Option<u8>,
    ) {
        let connack = ConnAck {
            session_present: false,
            code: match version {
                Version::V5 => code,
                Version::V311 => v311.unwrap_or(0x03),
            },
            properties: Properties::new(),
        };
        self.send(conn, version, &Packet::ConnAck(connack));
        self.end_conn_for(now, conn, code, WillFate::Discard, SessionFate::Keep);
    }

    /// Queues a 5.0 DISCONNECT with `code`.
    fn disconnect(&mut self, conn: ConnId, code: u8) {
        let d = Disconnect {
            code,
            properties: Properties::new(),
        };
        self.send(conn, Version::V5, &Packet::Disconnect(d));
    }

    /// The server closes a connected client with the 5.0 reason `code`
    /// (DISCONNECT for 5.0), the will published, the session's fate given.
    fn server_close_conn(&mut self, now: Instant, conn: ConnId, code: u8, fate: SessionFate) {
        let Some(c) = self.conns.by_key(&conn) else {
            return;
        };
        if c.version == Some(Version::V5) && matches!(c.phase, Phase::Connected(_)) {
            self.disconnect(conn, code);
        }
        self.end_conn_for(now, conn, code, WillFate::Publish, fate);
    }

    /// Ends a connection for a decision with the 5.0 reason `code`, and its
    /// close reason.
    fn end_conn_for(
        &mut self,
        now: Instant,
        conn: ConnId,
        code: u8,
        will: WillFate,
        fate: SessionFate,
    ) {
        let reason = ViolationKind::mqtt_close_reason(code);
        self.end_conn_with(now, conn, reason, Some(code), will, fate);
    }

    /// Ends a connection with `reason`; its session is kept for its expiry.
    fn end_conn(
        &mut self,
        now: Instant,
        conn: ConnId,
        reason: CloseReason,
        code: Option<u8>,
        will: WillFate,
    ) {
        self.end_conn_with(now, conn, reason, code, will, SessionFate::Keep);
    }

    /// Forgets a connection, queues its close decision and detaches its
    /// session: the will published (now, or after its delay while the
    /// session lives) or discarded, the session kept offline, ended, or
    /// left for the connection that takes it over.
    fn end_conn_with(
        &mut self,
        now: Instant,
        conn: ConnId,
        reason: CloseReason,
        code: Option<u8>,
        will: WillFate,
        fate: SessionFate,
    ) {
        let Some(c) = self.conns.find(&conn).and_then(|at| self.conns.remove(at)) else {
            return;
        };
        let client_id = match c.phase {
            Phase::Connected(key) => self.sessions.get(key).map(|s| s.client_id.to_string()),
            _ => c.rare.and_then(|r| r.client_id),
        };
        self.closes.push_back((
            conn,
            Close {
                reason,
                code,
                client_id,
            },
        ));
        let Phase::Connected(key) = c.phase else {
            return;
        };
        self.connected = self.connected.saturating_sub(1);
        let cap = self.config.max_sessions;
        let tick = self.clock.tick(now);
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        s.conn = None;
        let pending = s.rare_mut().and_then(|r| r.will.take());
        let ends = fate == SessionFate::End || (fate == SessionFate::Keep && s.expiry == 0);
        if let (Some(w), WillFate::Publish) = (pending, will) {
            if w.delay.is_zero() || ends {
                // Due now: no delay, or the session ends now.
                self.events.push_back(Event::Will {
                    from: s.client_id.to_string(),
                    message: w.message,
                });
            } else if fate == SessionFate::Keep {
                // Due after its delay, or when the session ends if that
                // comes first (`end_session` publishes it then).
                s.rare().will_due = Some((tick.after(w.delay), w.message));
            }
            // Resumed at once by a new connection: a delayed will is
            // cancelled (MQTT-3.1.3-9).
        }
        s.trim();
        match fate {
            SessionFate::Resume => {}
            _ if ends => self.end_session(now, key),
            _ => {
                s.offline_since = Some(tick);
                self.offline.insert((tick, key));
                if s.rare_ref()
                    .is_none_or(|r| r.queue.is_empty() && r.inflight.is_empty())
                {
                    self.offline_idle.insert((tick, key));
                }
                self.refile_session(key);
                // The offline-session cap: the one offline the longest
                // among those holding nothing goes, so that throwaway
                // sessions cannot push out one holding acknowledged
                // messages; only when every one holds some does the
                // oldest of all go.
                while self.offline.len() > cap {
                    let pick = self.offline_idle.first().or(self.offline.first());
                    match pick.copied() {
                        Some((_, oldest)) => self.end_session(now, oldest),
                        None => break,
                    }
                }
            }
        }
    }

    /// Files a connection's deadline in the timer heap if it is earlier
    /// than the one filed (a later one is refiled when the earlier fires).
    fn refile_conn(&mut self, conn: ConnId) {
        let timeout = self.config.connect_timeout;
        let Some(slot) = self.conns.find(&conn) else {
            return;
        };
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        if let Some(d) = c.deadline(timeout) {
            if c.filed.is_none_or(|f| d < f) {
                c.filed = Some(d);
                self.timers.push(Reverse((d, Timer::Conn(slot))));
            }
        }
    }

    /// [`refile_conn`](Self::refile_conn) for a session.
    fn refile_session(&mut self, key: u32) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if let Some(d) = s.deadline() {
            if s.filed.is_none_or(|f| d < f) {
                s.filed = Some(d);
                self.timers.push(Reverse((d, Timer::Session(key))));
            }
        }
    }
}
