//! The broker: the codec's MQTT [`Registry`] (every client's protocol state)
//! with the server's [`Tree`] of subscriptions and [`Retained`] messages and
//! the table of connections (TCP sockets, WebSocket outboxes), owned by the
//! MQTT event loop (`event_loop.rs`). The client limit, the event log, the
//! control API and shutdown cover both protocols through what the loop and
//! the hub share.
//!
//! What the registry hands out is carried out here with no rule of its own
//! about the protocol: [`Event::Publish`] and [`Event::Will`] go through
//! the tree to [`Registry::deliver`] (one delivery per client at the lower of
//! the message's QoS and the highest matching subscription's, with every
//! matching subscription identifier; the retain flag kept only with
//! retain-as-published, MQTT-3.3.1-12 and 3.1.1's MQTT-3.3.1-9), a retained
//! message is stored or deleted first (MQTT-3.3.1-5 to 7); a subscription
//! gets the retained messages its filter matches as its retain handling says
//! (MQTT-3.3.1-9 to 11), with the retain flag set (MQTT-3.3.1-8);
//! [`Event::SessionEnded`] drops the client's subscriptions.
//!
//! Quotas per principal (issue 18): the broker remembers each session's
//! source address and user name (client id to [`Owner`], set when it
//! connects, dropped when it ends, at most one per session the registry
//! may hold), so that its subscriptions are charged to them in the tree;
//! a source address holding more than [`Quotas::sessions_per_source`]
//! persistent sessions loses its own oldest offline one, not someone
//! else's; without a users file every client is anonymous and its session
//! outlives its connection by at most
//! [`Quotas::anonymous_session_expiry`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use sessionwire::mqtt::session::{
    Charge, ConnId, Delivered, Delivery, Event, Incoming, Message, MqttConfig, PublishGate, Refuse,
    Registry, ServerClose, SubscriptionRequest,
};
use sessionwire::mqtt::{Property, PropertyId, QoS, Version};
use sessionwire::CloseReason;

use super::channel::{conn_bytes, ConnOut, LoopCommand, MqttCommand, MqttOut, WeakLoopSender};
use super::conns::ConnTable;
use super::flow::{Fill, Flow, Loss, LOW_WATER};
use super::heap::block;
use super::ratelog::RateLog;
use super::retained::{sends_retained, Retained, RetainedLimits};
use super::tcp::{Sent, TcpConn, SHED_BYTES, WRITE_STALL};
use super::tree::{Principal, SubscribeError, Subscription, Tree, TreeLimits};
use crate::channel::{Clients, OsRandom};
use crate::events::{EventLog, Record};
use crate::passwords::{source_key, PasswordChecks, Verdict};

/// The version's name in the event log and the control API.
pub fn version_name(v: Version) -> &'static str {
    match v {
        Version::V311 => "3.1.1",
        Version::V5 => "5.0",
    }
}

/// One MQTT session as the control API lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MqttSessionInfo {
    /// The client identifier.
    pub client_id: String,
    /// `3.1.1` or `5.0`.
    pub version: &'static str,
    /// `connected` or `offline` (a persistent session without connection).
    pub state: &'static str,
}

/// How a connection is written to.
enum Link {
    /// MQTT over TCP: the socket itself.
    Tcp(TcpConn),
    /// MQTT over WebSocket: its task's outbox.
    Ws(ConnOut),
}

/// The transport side of one MQTT connection: what the registry does not
/// hold (its client id comes with the registry's close).
struct Conn {
    link: Link,
    peer: IpAddr,
    /// Set once connected: which version.
    version: Option<Version>,
    /// The user name of its CONNECT, for the log.
    user: Option<Box<str>>,
    /// Its CONNECT asked for a session that outlives the connection.
    persistent: bool,
}

/// The broker's quotas per principal beside the tree's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas {
    /// Persistent sessions one source address (IPv6: one /64) may hold;
    /// past it, the address's oldest offline session ends. 0: no share.
    pub sessions_per_source: usize,
    /// Without a users file, the most seconds an (anonymous) client's
    /// session outlives its connection; `None`: the registry's
    /// `max_session_expiry` alone.
    pub anonymous_session_expiry: Option<u32>,
}

impl Default for Quotas {
    /// A quarter of the registry's default session count per address;
    /// anonymous sessions kept 5 minutes.
    fn default() -> Quotas {
        Quotas {
            sessions_per_source: MqttConfig::default().max_sessions / 4,
            anonymous_session_expiry: Some(DEFAULT_ANONYMOUS_SESSION_EXPIRY),
        }
    }
}

/// How long an anonymous client's session may outlive its connection by
/// default, in seconds: long enough to ride out a reconnect, too short
/// for a throwaway client to leave a session behind for a day.
pub const DEFAULT_ANONYMOUS_SESSION_EXPIRY: u32 = 300;

/// Who a session is charged to.
#[derive(Debug)]
struct Owner {
    /// Its source address, as the quotas count it ([`source_key`]).
    source: IpAddr,
    user: Option<Box<str>>,
    /// Listed in [`Broker::persistent`] under its source.
    persistent: bool,
}

impl Conn {
    /// The transport's name in the event log.
    fn transport(&self) -> &'static str {
        match self.link {
            Link::Tcp(_) => "mqtt",
            Link::Ws(_) => "mqtt-ws",
        }
    }

    /// Tells the connection to close after what it was sent; one whose
    /// channel is full is told to give up instead. A socket goes to
    /// `closing`, where the loop writes what waits and ends it.
    fn finish(self, id: ConnId, closing: &mut Vec<(u64, TcpConn)>) {
        match self.link {
            Link::Tcp(t) => closing.push((id.0, t)),
            Link::Ws(out) => {
                if !out.send(MqttOut::Close) {
                    out.give_up();
                }
            }
        }
    }
}

/// Room a turn's list keeps however quiet the turns are.
const KEPT: usize = 64;

/// Gives back the room a burst took in a list that is emptied every turn
/// (`used`: what this turn put in it): after a ramp of a thousand CONNACKs
/// or one message to a thousand subscribers, the quiet turns that follow
/// do not keep the burst's room for good. A list that needs its room turn
/// after turn keeps it.
fn trim<T>(list: &mut Vec<T>, used: usize) {
    let keep = used.max(KEPT);
    if list.capacity() > keep.saturating_mul(4) {
        list.shrink_to(keep.saturating_mul(2));
    }
}

/// Retained messages waiting for their turn to go to the client that
/// subscribed (see [`Broker::pace_retained`]).
#[derive(Debug)]
struct RetainedDue {
    /// The connection that subscribed: if the client's connection changes,
    /// the rest is not sent.
    conn: ConnId,
    /// The messages (sharing the store's topic, payload and properties)
    /// and how each goes, in the order the store gave them.
    queue: VecDeque<(Message, Delivery)>,
}

/// Retained messages handed to the registry per client and loop pass at
/// most, when its queue has room.
const RETAINED_PER_PASS: usize = 64;

/// Retained messages waiting for their turn over every client; those of a
/// SUBSCRIBE past it go to the registry at once (its queue takes what it
/// can and drops the rest, counted). About 150 bytes each (the payloads
/// are the store's).
const RETAINED_DUE_TOTAL: usize = 256 * 1024;

/// The broker. See the [module documentation](self).
pub struct Broker {
    registry: Registry<OsRandom>,
    tree: Tree,
    retained: Retained<Message>,
    /// What the retained store holds, charged to the registry's
    /// server-wide budget (resized to the store's bytes after each change).
    retained_charge: Charge,
    /// Refused retained messages, logged one line in a while.
    retained_refused: RateLog,
    /// Unboxed, in a slab that grows by an eighth at a time.
    conns: ConnTable<Conn>,
    /// Bytes drained from the registry and not yet written, in order for
    /// each connection: each connection's are written as one batch at the
    /// next flush.
    outbox: Vec<(ConnId, Bytes)>,
    /// One connection's batch, while it is written.
    batch: Vec<Bytes>,
    /// Sockets whose connection ended, for the loop to finish.
    closing: Vec<(u64, TcpConn)>,
    /// Bytes that may wait for one connection's socket.
    conn_bytes: usize,
    /// The loop's poll, with which sockets are registered.
    io: Option<mio::Registry>,
    maximum_qos: QoS,
    /// The client limit, over both protocols.
    max_clients: usize,
    /// The clients of both protocols: the broker writes its own count
    /// before any CONNACK goes out, and reads the other's.
    clients: Arc<Clients>,
    /// With a users file: the password checks, the runtime they run on
    /// and the way back into the loop for their verdicts. Without one,
    /// anyone connects.
    passwords: Option<(Arc<PasswordChecks>, tokio::runtime::Handle, WeakLoopSender)>,
    stopping: bool,
    quotas: Quotas,
    /// Each session's principal, by client id; at most [`max_owners`]
    /// (every session the registry may hold, and every connection).
    ///
    /// [`max_owners`]: Self::max_owners
    owners: HashMap<String, Owner>,
    max_owners: usize,
    /// The persistent sessions of each source address, by when they last
    /// connected, oldest first.
    persistent: HashMap<IpAddr, VecDeque<String>>,
    /// Paused publishers, the subscribers holding them, and the count of
    /// messages lost.
    flow: Flow,
    /// Wills due, routed in order while [`WILLS`] is not paused (at most
    /// one per session the registry holds).
    wills_due: VecDeque<(String, Message)>,
    /// Retained messages still to send after a SUBSCRIBE, by client id.
    retained_due: HashMap<String, RetainedDue>,
    /// Their number over every client.
    retained_due_total: usize,
    /// The most a client may have waiting (the store's bound in messages).
    retained_due_max: usize,
    /// When sockets with bytes waiting are next looked at for a stall.
    stalls: BinaryHeap<Reverse<(Instant, ConnId)>>,
    /// The connections in `stalls`.
    watched: HashSet<ConnId>,
}

impl Broker {
    /// A broker with no client.
    pub fn new(config: MqttConfig, tree: TreeLimits, retained: RetainedLimits) -> Broker {
        let max_owners = config
            .max_sessions
            .saturating_add(config.limits.max_clients());
        let (maximum_qos, max_clients, conn_bytes) = (
            config.maximum_qos,
            config.limits.max_clients(),
            conn_bytes(&config.limits),
        );
        let registry = Registry::new(config, OsRandom);
        let retained_due_max = retained.max_messages;
        Broker {
            maximum_qos,
            max_clients,
            conn_bytes,
            retained_charge: registry.budget().empty_charge(),
            registry,
            tree: Tree::new(tree),
            retained: Retained::new(retained),
            retained_refused: RateLog::new(REFUSAL_LOG_INTERVAL),
            conns: ConnTable::default(),
            outbox: Vec::new(),
            batch: Vec::new(),
            closing: Vec::new(),
            clients: Arc::default(),
            io: None,
            passwords: None,
            stopping: false,
            quotas: Quotas::default(),
            owners: HashMap::new(),
            max_owners,
            persistent: HashMap::new(),
            flow: Flow::default(),
            wills_due: VecDeque::new(),
            retained_due: HashMap::new(),
            retained_due_total: 0,
            retained_due_max,
            stalls: BinaryHeap::new(),
            watched: HashSet::new(),
        }
    }

    /// Applies these quotas per principal.
    pub fn with_quotas(&mut self, quotas: Quotas) {
        self.quotas = quotas;
    }

    /// Checks CONNECT user names and passwords with `checks` on `runtime`;
    /// `back` is the way back into the loop for their verdicts.
    pub fn with_passwords(
        &mut self,
        checks: Arc<PasswordChecks>,
        runtime: tokio::runtime::Handle,
        back: WeakLoopSender,
    ) {
        self.passwords = Some((checks, runtime, back));
    }

    /// Counts the clients of both protocols in `clients`.
    pub fn with_clients(&mut self, clients: Arc<Clients>) {
        self.clients = clients;
    }

    /// Registers the TCP sockets [`open_tcp`](Self::open_tcp) is given
    /// with `io`, the loop's poll.
    pub fn with_io(&mut self, io: mio::Registry) {
        self.io = Some(io);
    }

    /// A TCP connection opened: registered with the loop's poll under its
    /// number for reading and writing (edge-triggered: no system call more
    /// when the socket fills or drains); false if it could not be.
    pub fn open_tcp(&mut self, now: Instant, conn: u64, peer: IpAddr, mut tcp: TcpConn) -> bool {
        let Some(io) = &self.io else {
            return false;
        };
        let Ok(token) = usize::try_from(conn) else {
            return false;
        };
        let interest = mio::Interest::READABLE | mio::Interest::WRITABLE;
        if io
            .register(tcp.stream(), mio::Token(token), interest)
            .is_err()
        {
            return false;
        }
        self.insert(now, conn, peer, Link::Tcp(tcp))
    }

    /// Files a new connection and opens it in the registry; false (and
    /// the connection told to close) if the table has no slot for it.
    fn insert(&mut self, now: Instant, conn: u64, peer: IpAddr, link: Link) -> bool {
        let id = ConnId(conn);
        let c = Conn {
            link,
            peer,
            version: None,
            user: None,
            persistent: false,
        };
        match self.conns.insert(id, c) {
            Ok(_) => {
                self.registry.open(now, id);
                true
            }
            Err(c) => {
                c.finish(id, &mut self.closing);
                false
            }
        }
    }

    /// The socket of `conn` is readable: one read into `buf`, handed to
    /// the registry; true when the read filled `buf` (there may be more).
    /// A paused publisher is not read: [`take_resumed`](Self::take_resumed)
    /// names it once it may be read again.
    pub fn readable(&mut self, now: Instant, conn: u64, buf: &mut [u8]) -> bool {
        let id = ConnId(conn);
        if self.flow.is_paused(id) {
            return false;
        }
        let Some(Link::Tcp(t)) = self.conns.get_mut(id).map(|c| &mut c.link) else {
            return false;
        };
        match t.read(buf) {
            Ok(0) => self.lost(now, id),
            Ok(n) => {
                let mut gate = self.gate();
                gate.registry
                    .handle_bytes_with(now, id, &buf[..n], &mut gate.retain);
                return n == buf.len();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => self.lost(now, id),
        }
        false
    }

    /// The socket of `conn` can take more: what waits for it is written.
    pub fn writable(&mut self, now: Instant, conn: u64) {
        let id = ConnId(conn);
        let Some(Link::Tcp(t)) = self.conns.get_mut(id).map(|c| &mut c.link) else {
            return;
        };
        if t.has_unsent() && t.write_unsent(now) == Sent::Failed {
            self.lost(now, id);
        }
    }

    /// Whether the broker knows the connection `conn`.
    pub fn has(&self, conn: u64) -> bool {
        self.conns.contains(ConnId(conn))
    }

    /// Open connections, TCP and WebSocket.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The sockets whose connection ended since the last call.
    pub fn take_closing(&mut self) -> Vec<(u64, TcpConn)> {
        std::mem::take(&mut self.closing)
    }

    /// Adds to `into` the publishers no longer paused since the last call:
    /// the loop reads them again (their readiness was taken while they
    /// were paused, and edge-triggered readiness does not come twice).
    pub fn take_resumed(&mut self, into: &mut Vec<u64>) {
        self.flow.take_resumed(into);
    }

    /// When flow control next needs a [`drive`](Self::drive) with nothing
    /// else happening: a pause's bound, a stalled socket's, a loss count
    /// to log.
    pub fn flow_deadline(&self) -> Option<Instant> {
        let stall = self.stalls.peek().map(|Reverse((t, _))| *t);
        self.flow.deadline().into_iter().chain(stall).min()
    }

    /// The connection is gone: nothing more can be written to it.
    fn lost(&mut self, now: Instant, id: ConnId) {
        if self.conns.contains(id) {
            self.outbox.retain(|(c, _)| *c != id);
            self.registry.connection_lost(now, id);
        }
    }

    /// Lets go of the room the registry's queues and the broker's own
    /// lists kept from a burst (a ramp of CONNECTs, a message to thousands
    /// of subscribers) beyond what they hold; the loop calls it on a quiet
    /// turn, not after every drain.
    pub fn shrink(&mut self) {
        self.registry.shrink_queues();
        self.outbox.shrink_to(KEPT);
        self.batch.shrink_to(KEPT);
    }

    /// MQTT clients connected now.
    #[cfg(test)]
    pub fn connected(&self) -> usize {
        self.registry.connected()
    }

    /// When the registry next needs [`handle_timeout`](Self::handle_timeout).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.registry.poll_timeout(), self.retained.next_expiry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the registry's timers (keep alive, CONNECT timeout, will delay,
    /// session expiry); [`drive`](Self::drive) carries out what they did.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.registry.handle_timeout(now);
        if self.retained.next_expiry().is_some_and(|t| t <= now) {
            self.retained.purge(now);
            self.retained_charge.resize(self.retained.bytes());
        }
    }

    /// The registry with the gate its PUBLISHes pass: retained messages
    /// are stored there, before the registry acknowledges them.
    fn gate(&mut self) -> Gated<'_> {
        Gated {
            registry: &mut self.registry,
            retain: RetainGate {
                retained: &mut self.retained,
                charge: &mut self.retained_charge,
                refused: &mut self.retained_refused,
            },
        }
    }

    /// Handles what a WebSocket connection said; [`drive`](Self::drive)
    /// carries out what it did.
    pub fn handle(&mut self, now: Instant, command: MqttCommand) {
        match command {
            MqttCommand::Open { conn, peer, out } => {
                if !self.insert(now, conn, peer, Link::Ws(out)) {
                    tracing::warn!(conn, "MQTT connection could not be filed: closed");
                }
            }
            MqttCommand::Bytes { conn, data } => {
                let id = ConnId(conn);
                if self.conns.contains(id) {
                    let mut gate = self.gate();
                    gate.registry
                        .handle_bytes_with(now, id, &data, &mut gate.retain);
                }
            }
            MqttCommand::Lost { conn } => self.lost(now, ConnId(conn)),
        }
    }

    /// A password check is over: accept or refuse.
    pub fn checked(&mut self, now: Instant, incoming: Incoming, verdict: Verdict) {
        match verdict {
            _ if self.stopping => self.registry.refuse(now, incoming, Refuse::Busy),
            Verdict::Accepted => {
                let mut gate = self.gate();
                gate.registry.accept_with(now, incoming, &mut gate.retain);
            }
            Verdict::Refused => self.registry.refuse(now, incoming, Refuse::BadCredentials),
            Verdict::Busy => self.registry.refuse(now, incoming, Refuse::Busy),
        }
    }

    /// The sessions, connected and offline, sorted by client id.
    pub fn list(&self) -> Vec<MqttSessionInfo> {
        let mut out: Vec<MqttSessionInfo> = self
            .registry
            .sessions()
            .map(|s| MqttSessionInfo {
                client_id: s.client_id,
                version: version_name(s.version),
                state: if s.conn.is_some() {
                    "connected"
                } else {
                    "offline"
                },
            })
            .collect();
        out.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        out
    }

    /// Control API: closes the client's connection (5.0: DISCONNECT 0x98)
    /// and ends its session; whether there was such a session.
    pub fn close(&mut self, now: Instant, client_id: &str) -> bool {
        let found = self.registry.sessions().any(|s| s.client_id == client_id);
        if found {
            self.registry.close(now, client_id, ServerClose::Controller);
        }
        found
    }

    /// Shutdown: every connected client is closed (5.0: DISCONNECT 0x8B),
    /// and new CONNECTs are refused.
    pub fn shutdown(&mut self, now: Instant, events: &mut EventLog) {
        self.stopping = true;
        let connected: Vec<String> = self
            .registry
            .sessions()
            .filter(|s| s.conn.is_some())
            .map(|s| s.client_id)
            .collect();
        for client_id in connected {
            self.registry.close(now, &client_id, ServerClose::Shutdown);
        }
        self.drive(now, events);
        let [queue_full, qos0_shed, retained_not_sent, budget] = self.flow.total_lost();
        let (pauses, spent) = self.flow.pauses();
        tracing::info!(
            queue_full,
            qos0_shed,
            retained_not_sent,
            budget,
            pauses,
            pauses_cut_short = spent,
            "MQTT flow control since the start: messages dropped, publishers paused"
        );
        // Connections that never sent a CONNECT just go.
        for (id, c) in self.conns.drain() {
            c.finish(id, &mut self.closing);
        }
    }

    /// Carries out what the registry hands out until it has nothing more:
    /// events (which may deliver, and so transmit), transmits (each
    /// connection's written as one batch), closes.
    pub fn drive(&mut self, now: Instant, events: &mut EventLog) {
        self.pace(now);
        loop {
            let mut busy = false;
            while let Some(event) = self.registry.poll_event() {
                busy = true;
                self.event(now, event, events);
            }
            while !self.flow.is_paused(WILLS) {
                let Some((from, message)) = self.wills_due.pop_front() else {
                    break;
                };
                busy = true;
                self.route(now, &from, &message, false);
            }
            while let Some(transmit) = self.registry.poll_transmit() {
                busy = true;
                self.outbox.push(transmit);
            }
            self.flush(now);
            while let Some((id, close)) = self.registry.poll_close() {
                busy = true;
                self.flow.forget(id);
                let conn = self.conns.remove(id);
                let version = conn.as_ref().and_then(|c| c.version);
                let client_id = close.client_id.as_deref();
                let (user, transport) = match &conn {
                    Some(c) => (c.user.as_deref(), Some(c.transport())),
                    None => (None, None),
                };
                let event = if version.is_some() {
                    "closed"
                } else {
                    "refused"
                };
                let no_connect =
                    version.is_none() && close.code.is_none() && close.client_id.is_none();
                if no_connect && close.reason != CloseReason::ClientUnresponsive {
                    // Gone before its CONNECT was whole: nothing to log.
                    tracing::debug!(conn = id.0, reason = %close.reason, "MQTT connection ended before CONNECT");
                    if let Some(c) = conn {
                        c.finish(id, &mut self.closing);
                    }
                    continue;
                }
                // Logged `refused` without a client id: a close decided
                // before a CONNECT was taken, or no CONNECT in time
                // (CLIENT_UNRESPONSIVE).
                events.record(&Record {
                    event,
                    protocol: Some("mqtt"),
                    principal: user,
                    client_id,
                    version: version.map(version_name),
                    transport_name: transport,
                    reason: Some(close.reason),
                    reason_code: close.code,
                    ..Record::default()
                });
                if let Some(c) = conn {
                    c.finish(id, &mut self.closing);
                }
            }
            if !busy {
                return;
            }
        }
    }

    /// Writes each connection its outbox as one batch: a socket with one
    /// `writev`, a WebSocket task through its outbox. A connection that has
    /// [`conn_bytes`] bytes waiting (or, over
    /// WebSocket, [`MQTT_CONN_QUEUE`](super::conn::MQTT_CONN_QUEUE)
    /// batches) does not keep up: the codec closes it as a full queue
    /// (`Registry::outbound_full`, MESSAGE_QUEUE_LIMIT_REACHED, 0x97 when
    /// it can still be written).
    fn flush(&mut self, now: Instant) {
        // Counted before the CONNACKs go: a client the other protocol
        // admits after seeing ours counts it.
        self.clients
            .mqtt
            .store(self.registry.connected(), Ordering::Release);
        if self.outbox.is_empty() {
            return;
        }
        let mut slow = Vec::new();
        let mut lost = Vec::new();
        // Stable: each connection's bytes stay in order.
        self.outbox.sort_by_key(|(id, _)| *id);
        let used = self.outbox.len();
        let mut transmits = self.outbox.drain(..).peekable();
        while let Some((id, first)) = transmits.next() {
            let batch = &mut self.batch;
            batch.clear();
            batch.push(first);
            while let Some((_, more)) = transmits.next_if(|(next, _)| *next == id) {
                batch.push(more);
            }
            let Some(c) = self.conns.get_mut(id) else {
                continue;
            };
            match &mut c.link {
                Link::Ws(out) => {
                    if !out.send(MqttOut::Write(std::mem::take(batch))) {
                        // Its task may be stuck writing to a client that
                        // does not read: it stops, and the socket goes.
                        out.give_up();
                        slow.push(id);
                    }
                }
                Link::Tcp(t) => match t.write(batch, self.conn_bytes, now) {
                    Sent::Ok => {
                        // Bytes left waiting: looked at again once the
                        // socket has had WRITE_STALL to take some.
                        if t.has_unsent() && self.watched.insert(id) {
                            self.stalls.push(Reverse((now + WRITE_STALL, id)));
                        }
                    }
                    Sent::Full => slow.push(id),
                    Sent::Failed => lost.push(id),
                },
            }
        }
        drop(transmits);
        trim(&mut self.outbox, used);
        for id in slow {
            tracing::debug!(conn = id.0, "MQTT connection does not keep up: dropped");
            // The codec closes it as a full queue (0x97).
            self.registry.outbound_full(now, id);
        }
        for id in lost {
            self.lost(now, id);
        }
    }

    fn event(&mut self, now: Instant, event: Event, events: &mut EventLog) {
        match event {
            Event::Connect(incoming) => self.connect(now, incoming),
            Event::Connected {
                conn,
                client_id,
                version,
                session_present,
            } => {
                let Some(c) = self.conns.get_mut(conn) else {
                    return;
                };
                events.record(&Record {
                    event: "opened",
                    protocol: Some("mqtt"),
                    principal: c.user.as_deref(),
                    client_id: Some(&client_id),
                    version: Some(version_name(version)),
                    transport_name: Some(c.transport()),
                    code: Some(0),
                    ..Record::default()
                });
                tracing::debug!(client_id, session_present, "MQTT client connected");
                c.version = Some(version);
                let owner = Owner {
                    source: source_key(c.peer),
                    user: c.user.clone(),
                    persistent: c.persistent,
                };
                self.own(now, client_id, owner);
            }
            Event::Publish { from, message } => self.route(now, &from, &message, true),
            // Routed in turn, as subscribers' queues have room.
            Event::Will { from, message } => self.wills_due.push_back((from, message)),
            Event::Subscribe {
                client_id,
                packet_id,
                subscriptions,
            } => {
                let mut codes = Vec::with_capacity(subscriptions.len());
                let mut retained = Vec::new();
                for request in subscriptions {
                    let (code, sends) = self.subscribe(&client_id, request);
                    codes.push(code);
                    retained.extend(sends);
                }
                if let Err(e) = self.registry.suback(&client_id, packet_id, &codes) {
                    tracing::debug!(client_id, packet_id, error = %e, "SUBACK not sent");
                }
                for (filter, sub) in retained {
                    self.send_retained(now, &client_id, &filter, sub);
                }
            }
            Event::Unsubscribe {
                client_id,
                packet_id,
                filters,
            } => {
                let codes: Vec<u8> = filters
                    .iter()
                    .map(|filter| {
                        if self.tree.unsubscribe(&client_id, filter) {
                            0x00
                        } else {
                            NO_SUBSCRIPTION_EXISTED
                        }
                    })
                    .collect();
                if let Err(e) = self.registry.unsuback(&client_id, packet_id, &codes) {
                    tracing::debug!(client_id, packet_id, error = %e, "UNSUBACK not sent");
                }
            }
            Event::SessionEnded { client_id } => {
                self.tree.remove_client(&client_id);
                self.disown(&client_id);
                // Retained messages still to send to it go with it.
                if let Some(due) = self.retained_due.remove(&client_id) {
                    self.retained_due_total =
                        self.retained_due_total.saturating_sub(due.queue.len());
                }
            }
        }
    }

    /// Files the principal of a client that connected; a persistent
    /// session is listed under its address, whose oldest offline session
    /// ends if the address now holds more than its share.
    fn own(&mut self, now: Instant, client_id: String, owner: Owner) {
        self.disown(&client_id);
        if self.owners.len() >= self.max_owners {
            // Not reached while the registry keeps its own bounds: the
            // session is charged to its client id alone.
            tracing::warn!(client_id, "MQTT session principals full: not charged");
            return;
        }
        let (source, persistent) = (owner.source, owner.persistent);
        self.owners.insert(client_id.clone(), owner);
        if !persistent {
            return;
        }
        let listed = self.persistent.entry(source).or_default();
        listed.push_back(client_id);
        let share = self.quotas.sessions_per_source;
        if share == 0 || listed.len() <= share {
            return;
        }
        // The oldest session of this address that has no connection.
        let registry = &self.registry;
        let oldest = listed.iter().position(|id| !registry.is_connected(id));
        let Some(id) = oldest.and_then(|at| listed.remove(at)) else {
            return;
        };
        if let Some(o) = self.owners.get_mut(&id) {
            o.persistent = false;
        }
        tracing::info!(
            client_id = id,
            %source,
            share,
            "MQTT source address over its share of persistent sessions: its oldest offline session ended"
        );
        self.registry.close(now, &id, ServerClose::Controller);
    }

    /// Forgets a session's principal (its session ended, or it connects
    /// again).
    fn disown(&mut self, client_id: &str) {
        let Some(owner) = self.owners.remove(client_id) else {
            return;
        };
        if !owner.persistent {
            return;
        }
        if let Some(listed) = self.persistent.get_mut(&owner.source) {
            if let Some(at) = listed.iter().position(|id| id == client_id) {
                listed.remove(at);
            }
            if listed.is_empty() {
                self.persistent.remove(&owner.source);
            }
        }
    }

    /// A CONNECT passed the registry's checks: the client limit (both
    /// protocols), then the users file.
    fn connect(&mut self, now: Instant, incoming: Incoming) {
        let conn = incoming.conn();
        let user = incoming
            .connect()
            .user_name()
            .map(|u| u.as_str().to_owned());
        let connect = incoming.connect();
        let persistent = match connect.version {
            Version::V311 => !connect.clean_start,
            Version::V5 => connect
                .properties
                .get(PropertyId::SessionExpiryInterval)
                .is_some_and(|p| !matches!(p, Property::SessionExpiryInterval(0))),
        };
        let peer = match self.conns.get_mut(conn) {
            Some(c) => {
                c.user = user.as_deref().map(Box::from);
                c.persistent = persistent;
                c.peer
            }
            None => return self.registry.refuse(now, incoming, Refuse::Busy),
        };
        // A client taking its own connection over adds no client.
        let takeover = self
            .registry
            .is_connected(incoming.connect().client_id().as_str());
        let others = self.clients.sessions.load(Ordering::Acquire);
        let full = self.registry.connected().saturating_add(others) >= self.max_clients;
        if self.stopping || (full && !takeover) {
            return self.registry.refuse(now, incoming, Refuse::Busy);
        }
        let Some((checks, runtime, back)) = &self.passwords else {
            // No users file: anonymous, and kept offline only so long.
            let mut incoming = incoming;
            if let Some(secs) = self.quotas.anonymous_session_expiry {
                incoming.limit_session_expiry(secs);
            }
            let mut gate = self.gate();
            return gate.registry.accept_with(now, incoming, &mut gate.retain);
        };
        let Some(user) = user else {
            return self.registry.refuse(now, incoming, Refuse::BadCredentials);
        };
        let password = incoming
            .connect()
            .password()
            .map(|p| p.to_vec())
            .unwrap_or_default();
        let (checks, back) = (Arc::clone(checks), back.clone());
        runtime.spawn(async move {
            let verdict = checks.check(peer, user, password).await;
            if let Some(back) = back.upgrade() {
                back.send(LoopCommand::Checked { incoming, verdict }).await;
            }
        });
    }

    /// Hands a message to every matching subscription. A `live` message
    /// comes from the connection of `from`: its retained message was
    /// stored (or deleted) at its admission, by [`RetainGate`], and that
    /// publisher is paused when a connected subscriber's queue passes its
    /// high-water mark (see `flow.rs`). A will is not live: a retained one
    /// is stored here, and the queue of wills due ([`WILLS`]) is what is
    /// paused. QoS 0 for a connection with [`SHED_BYTES`] not yet written
    /// is dropped, counted.
    fn route(&mut self, now: Instant, from: &str, message: &Message, live: bool) {
        if !live && message.retain {
            let mut gate = self.gate();
            // Nobody to refuse it to: not kept, and said once in a while.
            let _ = gate.retain.admit(now, from, message);
        }
        // A shared subscription's turn prefers members with a connection.
        let registry = &self.registry;
        let matches = self
            .tree
            .matches_preferring(message.topic.as_str(), from, |c| registry.is_connected(c));
        // The publisher's connection, looked up once it is needed.
        let mut publisher: Option<Option<ConnId>> = None;
        for m in matches {
            let delivery = Delivery {
                qos: m.qos.min(message.qos),
                retain: message.retain && m.retain_as_published,
                subscription_ids: m.subscription_ids,
            };
            if delivery.qos == QoS::AtMostOnce
                && shedding(&self.registry, &mut self.conns, m.client_id)
            {
                self.flow.lost(now, m.client_id, Loss::Shed);
                continue;
            }
            match self.registry.deliver(now, m.client_id, message, delivery) {
                Delivered::Queued => {
                    let Some(fill) = self.registry.backlog(m.client_id).map(Fill::from) else {
                        continue;
                    };
                    if !(fill.connected && fill.high) {
                        continue;
                    }
                    let registry = &self.registry;
                    let conns = &mut self.conns;
                    let Some(p) = *publisher.get_or_insert_with(|| {
                        if live {
                            pausable(registry, conns, from)
                        } else {
                            Some(WILLS)
                        }
                    }) else {
                        continue;
                    };
                    // A client feeding itself is not paused for itself.
                    if self.registry.connection(m.client_id) != Some(p) {
                        self.flow.delivered(now, m.client_id, fill, p);
                    }
                }
                answer @ Delivered::Dropped(_) => {
                    if let Some(loss) = Loss::of(answer) {
                        self.flow.lost(now, m.client_id, loss);
                    }
                }
                _ => {}
            }
        }
    }

    /// What flow control does once per loop pass: ends the pauses whose
    /// subscriber caught up, left, stalled or held them long enough; hands
    /// out the retained messages waiting for room; closes the connections
    /// whose socket took nothing for [`WRITE_STALL`].
    fn pace(&mut self, now: Instant) {
        let registry = &self.registry;
        self.flow
            .check(now, |c| registry.backlog(c).map(Fill::from));
        if !self.retained_due.is_empty() {
            let clients: Vec<String> = self.retained_due.keys().cloned().collect();
            for client_id in clients {
                self.pace_retained(now, &client_id);
            }
        }
        while let Some(&Reverse((at, id))) = self.stalls.peek() {
            if at > now {
                break;
            }
            self.stalls.pop();
            let progress = match self.conns.get_mut(id).map(|c| &c.link) {
                Some(Link::Tcp(t)) => t.progress(),
                _ => None,
            };
            match progress {
                Some(p) if now.saturating_duration_since(p) < WRITE_STALL => {
                    self.stalls.push(Reverse((p + WRITE_STALL, id)));
                }
                Some(_) => {
                    self.watched.remove(&id);
                    tracing::info!(
                        conn = id.0,
                        "MQTT client took nothing of what waits for it: closed (0x97), its session kept"
                    );
                    self.registry.outbound_full(now, id);
                }
                None => {
                    self.watched.remove(&id);
                }
            }
        }
    }

    /// Hands `client_id` the retained messages waiting for it while its
    /// queue has room: at most [`RETAINED_PER_PASS`], none once a window's
    /// worth waits in its queue or the queue is at its low-water mark, and
    /// no QoS 0 one while its connection has [`SHED_BYTES`] unwritten. The
    /// rest is dropped (counted) if the client's connection changed.
    fn pace_retained(&mut self, now: Instant, client_id: &str) {
        let Some(due) = self.retained_due.get_mut(client_id) else {
            return;
        };
        if self.registry.connection(client_id) != Some(due.conn) {
            let left = due.queue.len();
            self.retained_due_total = self.retained_due_total.saturating_sub(left);
            self.retained_due.remove(client_id);
            for _ in 0..left {
                self.flow.lost(now, client_id, Loss::RetainedLeft);
            }
            return;
        }
        for _ in 0..RETAINED_PER_PASS {
            let Some(b) = self.registry.backlog(client_id) else {
                break;
            };
            if b.queued >= b.window.max(1) || b.fill_at_least(LOW_WATER) {
                break;
            }
            let Some((_, delivery)) = due.queue.front() else {
                break;
            };
            if delivery.qos == QoS::AtMostOnce && over_shed(&mut self.conns, due.conn) {
                break;
            }
            let Some((message, delivery)) = due.queue.pop_front() else {
                break;
            };
            self.retained_due_total = self.retained_due_total.saturating_sub(1);
            let answer = self.registry.deliver(now, client_id, &message, delivery);
            if let Some(loss) = Loss::of(answer) {
                self.flow.lost(now, client_id, loss);
            }
        }
        if due.queue.is_empty() {
            self.retained_due.remove(client_id);
        }
    }

    /// Stores one subscription; returns its SUBACK code (the QoS granted,
    /// or the refusal) and, when it gets retained messages, the filter and
    /// subscription to send them for once the SUBACK is written.
    fn subscribe(
        &mut self,
        client_id: &str,
        request: SubscriptionRequest,
    ) -> (u8, Option<(String, Subscription)>) {
        let options = request.options;
        let sub = Subscription {
            qos: options.qos.min(self.maximum_qos),
            no_local: options.no_local,
            retain_as_published: options.retain_as_published,
            id: request.id,
        };
        let principal = self
            .owners
            .get(client_id)
            .map_or_else(Principal::default, |o| Principal {
                source: Some(o.source),
                user: o.user.as_deref(),
            });
        let existed = match self
            .tree
            .subscribe_as(client_id, principal, &request.filter, sub)
        {
            Ok(existed) => existed,
            Err(e) => {
                tracing::debug!(client_id, filter = request.filter, error = ?e, "subscription refused");
                return (refusal(e), None);
            }
        };
        let granted = sub.qos as u8;
        let shared = request.filter.starts_with("$share/");
        if !sends_retained(options.retain_handling, existed, shared) {
            return (granted, None);
        }
        (granted, Some((request.filter, sub)))
    }

    /// Sends the retained messages matching `filter` to a new subscription
    /// (after its SUBACK), paced through its queue: they wait here, in the
    /// order the store gives them, and go to the registry as its queue has
    /// room ([`pace_retained`](Self::pace_retained), now and on the loop's
    /// passes). What waits is bounded per client by the store's bound in
    /// messages and over all clients by [`RETAINED_DUE_TOTAL`]; past those
    /// bounds, messages go to the registry at once (its queue takes what it
    /// can, the rest is dropped and counted).
    fn send_retained(&mut self, now: Instant, client_id: &str, filter: &str, sub: Subscription) {
        let Some(conn) = self.registry.connection(client_id) else {
            return;
        };
        let matching = self.retained.matching(filter, now);
        let due = self
            .retained_due
            .entry(client_id.to_owned())
            .or_insert_with(|| RetainedDue {
                conn,
                queue: VecDeque::new(),
            });
        let mut at_once = Vec::new();
        for (_, message) in matching {
            let delivery = Delivery {
                qos: sub.qos.min(message.qos),
                retain: true,
                subscription_ids: sub.id.into_iter().collect(),
            };
            if due.queue.len() < self.retained_due_max
                && self.retained_due_total < RETAINED_DUE_TOTAL
            {
                due.queue.push_back((message.clone(), delivery));
                self.retained_due_total = self.retained_due_total.saturating_add(1);
            } else {
                at_once.push((message.clone(), delivery));
            }
        }
        if due.queue.is_empty() {
            self.retained_due.remove(client_id);
        }
        self.pace_retained(now, client_id);
        for (message, delivery) in at_once {
            let answer = self.registry.deliver(now, client_id, &message, delivery);
            if let Some(loss) = Loss::of(answer) {
                self.flow.lost(now, client_id, loss);
            }
        }
    }
}

/// The connection of `client_id`, if it is over TCP with more than
/// [`SHED_BYTES`] waiting to be written (or over WebSocket with as many
/// waiting for its task): QoS 0 for it is dropped.
fn shedding(registry: &Registry<OsRandom>, conns: &mut ConnTable<Conn>, client_id: &str) -> bool {
    registry
        .connection(client_id)
        .is_some_and(|id| over_shed(conns, id))
}

/// Whether `id` has more than [`SHED_BYTES`] waiting to be written.
fn over_shed(conns: &mut ConnTable<Conn>, id: ConnId) -> bool {
    match conns.get_mut(id).map(|c| &c.link) {
        Some(Link::Tcp(t)) => t.unsent_len() > SHED_BYTES,
        Some(Link::Ws(out)) => out.waiting_bytes() > SHED_BYTES,
        None => false,
    }
}

/// The connection of `from` if it can be paused: a TCP socket (a
/// WebSocket connection's bytes come through the loop's channel, and its
/// task is not paused).
fn pausable(
    registry: &Registry<OsRandom>,
    conns: &mut ConnTable<Conn>,
    from: &str,
) -> Option<ConnId> {
    let id = registry.connection(from)?;
    match conns.get_mut(id).map(|c| &c.link) {
        Some(Link::Tcp(_)) => Some(id),
        _ => None,
    }
}

/// The publisher a will is routed for, in [`Flow`]: the broker's queue of
/// wills due, paused as a socket is while a subscriber's queue fills (a
/// burst of connections lost at once must not overflow a `will/#`
/// watcher's queue). No connection has this number.
const WILLS: ConnId = ConnId(u64::MAX);

/// How often a refused retained message is logged at most.
const REFUSAL_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// What a new retained message may add to the store's structure per
/// topic level, at most (a node, its name, its place in its parent):
/// reserved from the budget before the store says what it really took.
const RETAINED_LEVEL_RESERVE: usize = 256;

/// The registry and the gate its PUBLISHes pass, borrowed together from
/// the broker.
struct Gated<'a> {
    registry: &'a mut Registry<OsRandom>,
    retain: RetainGate<'a>,
}

/// The broker's [`PublishGate`]: a retained PUBLISH is stored (or its
/// topic's message deleted) before the registry acknowledges it, and one
/// the store or the server-wide budget cannot take is refused 0x97 (5.0;
/// a 3.1.1 client is closed unacknowledged) rather than acknowledged and
/// dropped.
struct RetainGate<'a> {
    retained: &'a mut Retained<Message>,
    charge: &'a mut Charge,
    refused: &'a mut RateLog,
}

impl PublishGate for RetainGate<'_> {
    fn admit(&mut self, now: Instant, from: &str, message: &Message) -> Result<(), u8> {
        if !message.retain {
            return Ok(());
        }
        let topic = message.topic.as_str();
        let stored = if message.payload.is_empty() {
            self.retained.set(now, topic, None, 0, None).map_err(Some)
        } else {
            // A copy of its own: a view would keep the publisher's whole
            // receive buffer alive.
            let mut kept = message.clone();
            kept.topic = sessionwire::mqtt::Str::try_from(topic).unwrap_or_default();
            kept.payload = Bytes::copy_from_slice(&message.payload);
            let size = block(kept.topic.len())
                .saturating_add(block(kept.payload.len()))
                .saturating_add(block(kept.properties.as_bytes().len()));
            let levels = topic.split('/').count();
            let reserve = size.saturating_add(levels.saturating_mul(RETAINED_LEVEL_RESERVE));
            if self
                .charge
                .try_resize(self.charge.bytes().saturating_add(reserve))
            {
                let expires_at = kept.expires_at;
                self.retained
                    .set(now, topic, Some(kept), size, expires_at)
                    .map_err(Some)
            } else {
                Err(None)
            }
        };
        // What the store holds now, whatever the reserve was.
        self.charge.resize(self.retained.bytes());
        let Err(why) = stored else {
            return Ok(());
        };
        if let Some(not_logged) = self.refused.allow(now) {
            let why = why.map_or("the server's message budget is spent".to_owned(), |e| {
                format!("{e:?}")
            });
            let levels = topic.split('/').count();
            tracing::warn!(
                from,
                levels,
                topic_bytes = topic.len(),
                why,
                not_logged,
                "retained message refused (0x97)"
            );
        }
        Err(0x97)
    }
}

/// UNSUBACK 0x11, No subscription existed (a 3.1.1 client is sent no code).
const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;

/// The SUBACK code of a subscription the tree does not keep (a 3.1.1
/// client is sent 0x80 for any of them). A bound of this broker is an
/// implementation-imposed limit, which 5.0 names Quota exceeded (0x97);
/// a malformed `$share/` is Topic Filter invalid (0x8F).
fn refusal(e: SubscribeError) -> u8 {
    match e {
        SubscribeError::ClientFull
        | SubscribeError::TreeFull
        | SubscribeError::SourceFull
        | SubscribeError::UserFull
        | SubscribeError::TooDeep => 0x97,
        SubscribeError::BadShare => 0x8F,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::channel::ConnIn;
    use std::time::Duration;

    /// A 3.1.1 CONNECT: client "c", clean session, keep alive 60 s.
    const CONNECT: &[u8] = &[
        0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x01, b'c',
    ];

    fn open(broker: &mut Broker, events: &mut EventLog, capacity: usize) -> ConnIn {
        open_as(broker, events, 1, capacity)
    }

    /// A WebSocket connection numbered `conn` opens.
    fn open_as(broker: &mut Broker, events: &mut EventLog, conn: u64, capacity: usize) -> ConnIn {
        let (out, rx) = ConnOut::pair(capacity, 1 << 20);
        let open = MqttCommand::Open {
            conn,
            peer: IpAddr::from([127, 0, 0, 1]),
            out,
        };
        handle(broker, events, open);
        rx
    }

    /// The CONNACK code `rx` was written, and whether it was then closed.
    fn connack(rx: &ConnIn) -> (u8, bool) {
        let code = match rx.try_next() {
            Some(MqttOut::Write(batch)) => batch.concat()[3],
            other => panic!("{other:?}"),
        };
        (code, matches!(rx.try_next(), Some(MqttOut::Close)))
    }

    /// One loop turn: the command, then what it did.
    fn handle(broker: &mut Broker, events: &mut EventLog, command: MqttCommand) {
        let now = Instant::now();
        broker.handle(now, command);
        broker.drive(now, events);
    }

    fn bytes(broker: &mut Broker, events: &mut EventLog, data: &'static [u8]) {
        bytes_to(broker, events, 1, Bytes::from_static(data));
    }

    /// Connection `conn` sends `data`.
    fn bytes_to(broker: &mut Broker, events: &mut EventLog, conn: u64, data: Bytes) {
        handle(broker, events, MqttCommand::Bytes { conn, data });
    }

    fn broker() -> (Broker, EventLog) {
        let b = Broker::new(
            MqttConfig::default(),
            TreeLimits::default(),
            RetainedLimits::default(),
        );
        (b, EventLog::open(None).unwrap())
    }

    /// A broker for two clients of both protocols, and their count.
    fn two_places() -> (Broker, EventLog, Arc<Clients>) {
        let config = MqttConfig {
            limits: sessionwire::Limits::builder()
                .max_clients(2)
                .build()
                .unwrap(),
            ..MqttConfig::default()
        };
        let mut broker = Broker::new(config, TreeLimits::default(), RetainedLimits::default());
        let clients = Arc::new(Clients::default());
        broker.with_clients(Arc::clone(&clients));
        (broker, EventLog::open(None).unwrap(), clients)
    }

    #[test]
    fn a_connection_is_its_link_and_forty_bytes() {
        // The user name boxed (16 bytes, not a String's 24), the peer's
        // address (17) and the version (1), in one slot of the table.
        use std::mem::size_of;
        assert_eq!(size_of::<Link>(), size_of::<TcpConn>());
        assert!(size_of::<Conn>() <= size_of::<Link>() + 40);
    }

    #[tokio::test]
    async fn mqtt_3_1_4_3_a_takeover_at_the_client_limit_adds_no_client() {
        let (mut broker, mut events, clients) = two_places();
        // A client of the session protocol holds one place, "c" the other.
        clients.sessions.store(1, Ordering::Release);
        let first = open_as(&mut broker, &mut events, 1, 8);
        bytes_to(&mut broker, &mut events, 1, Bytes::from_static(CONNECT));
        assert_eq!(connack(&first), (0x00, false));
        // "c" again, on another connection: taken over, not refused.
        let second = open_as(&mut broker, &mut events, 2, 8);
        bytes_to(&mut broker, &mut events, 2, Bytes::from_static(CONNECT));
        assert_eq!(connack(&second), (0x00, false));
        assert!(matches!(first.try_next(), Some(MqttOut::Close)));
        assert_eq!(broker.connected(), 1);
        // Another client id finds no place: 0x03, server unavailable.
        let third = open_as(&mut broker, &mut events, 3, 8);
        let mut other = CONNECT.to_vec();
        *other.last_mut().unwrap() = b'd';
        bytes_to(&mut broker, &mut events, 3, Bytes::from(other));
        assert_eq!(connack(&third), (0x03, true));
    }

    #[tokio::test]
    async fn a_connection_that_does_not_take_its_batches_is_dropped() {
        let (mut broker, mut events) = broker();
        let rx = open(&mut broker, &mut events, 1);
        bytes(&mut broker, &mut events, CONNECT);
        assert_eq!(broker.connected(), 1);
        // PINGREQ: its PINGRESP finds the channel still full of the CONNACK.
        bytes(&mut broker, &mut events, &[0xc0, 0x00]);
        tokio::time::timeout(Duration::from_secs(1), rx.closing())
            .await
            .expect("the connection is told to give up");
        assert_eq!(broker.connected(), 0);
        match rx.try_next() {
            Some(MqttOut::Write(batch)) => {
                assert_eq!(&batch.concat()[..], &[0x20, 0x02, 0x00, 0x00])
            }
            other => panic!("{other:?}"),
        }
        // Closed as a full queue, then told to close.
        assert!(matches!(rx.try_next(), Some(MqttOut::Close)));
    }

    /// A 3.1.1 CONNECT of client `id` without clean session.
    fn persistent_connect(id: u8) -> Bytes {
        let mut c = CONNECT.to_vec();
        c[9] = 0x00;
        *c.last_mut().unwrap() = id;
        Bytes::from(c)
    }

    /// A WebSocket connection numbered `conn` from `peer` opens.
    fn open_from(broker: &mut Broker, events: &mut EventLog, conn: u64, peer: [u8; 4]) -> ConnIn {
        let (out, rx) = ConnOut::pair(8, 1 << 20);
        let peer = IpAddr::from(peer);
        handle(broker, events, MqttCommand::Open { conn, peer, out });
        rx
    }

    fn ids(broker: &Broker) -> Vec<String> {
        broker.list().into_iter().map(|s| s.client_id).collect()
    }

    #[tokio::test]
    async fn quota_sessions_per_source_an_address_loses_its_own_oldest_offline_session() {
        // Throwaway persistent sessions from one address used to push out
        // the oldest offline session of anyone (issue 18: 10,200 of them
        // evicted a real session holding 10 acknowledged messages).
        let (mut broker, mut events) = broker();
        broker.with_quotas(Quotas {
            sessions_per_source: 2,
            ..Quotas::default()
        });
        // A real client elsewhere, offline, first of all.
        let _real = open_from(&mut broker, &mut events, 1, [10, 0, 0, 1]);
        bytes_to(&mut broker, &mut events, 1, persistent_connect(b'r'));
        bytes_to(
            &mut broker,
            &mut events,
            1,
            Bytes::from_static(&[0xe0, 0x00]),
        );
        // The attacker's address: three sessions, the first two offline.
        for (conn, id) in [(2, b'a'), (3, b'b'), (4, b'c')] {
            let _rx = open_from(&mut broker, &mut events, conn, [10, 0, 0, 2]);
            bytes_to(&mut broker, &mut events, conn, persistent_connect(id));
            if id != b'c' {
                bytes_to(
                    &mut broker,
                    &mut events,
                    conn,
                    Bytes::from_static(&[0xe0, 0x00]),
                );
            }
        }
        assert_eq!(ids(&broker), ["b", "c", "r"], "the address's oldest went");
        // Its connected sessions are not ended for it: "b" connects again,
        // then "d" comes while both "b" and "c" are connected.
        let _b = open_from(&mut broker, &mut events, 5, [10, 0, 0, 2]);
        bytes_to(&mut broker, &mut events, 5, persistent_connect(b'b'));
        let _d = open_from(&mut broker, &mut events, 6, [10, 0, 0, 2]);
        bytes_to(&mut broker, &mut events, 6, persistent_connect(b'd'));
        assert_eq!(ids(&broker), ["b", "c", "d", "r"]);
        // Sessions that end are forgotten: the table holds what is left.
        assert!(broker.close(Instant::now(), "d"));
        broker.drive(Instant::now(), &mut events);
        assert_eq!(broker.owners.len(), 3);
        assert_eq!(broker.persistent[&IpAddr::from([10, 0, 0, 2])].len(), 2);
    }

    #[tokio::test]
    async fn quota_anonymous_session_expiry_is_capped_and_announced() {
        let (mut broker, mut events) = broker();
        let rx = open(&mut broker, &mut events, 8);
        // 5.0, no clean start, session expiry 3,600 s, client "c".
        let connect: &'static [u8] = &[
            0x10, 0x13, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x00, 0x00, 0x3c, 0x05, 0x11,
            0x00, 0x00, 0x0e, 0x10, 0x00, 0x01, b'c',
        ];
        bytes(&mut broker, &mut events, connect);
        let connack = match rx.try_next() {
            Some(MqttOut::Write(batch)) => batch.concat(),
            other => panic!("{other:?}"),
        };
        assert_eq!(connack[3], 0x00, "accepted: {connack:02x?}");
        // Session Expiry Interval 300 in its properties.
        let told = connack
            .windows(5)
            .any(|w| w == [0x11, 0x00, 0x00, 0x01, 0x2c]);
        assert!(told, "{connack:02x?}");
    }

    #[tokio::test]
    async fn control_close_of_a_3_1_1_client_closes_its_connection_without_a_packet() {
        let (mut broker, mut events) = broker();
        let rx = open(&mut broker, &mut events, 8);
        bytes(&mut broker, &mut events, CONNECT);
        assert!(matches!(rx.try_next(), Some(MqttOut::Write(_))));
        assert_eq!(broker.list()[0].client_id, "c");
        assert!(broker.close(Instant::now(), "c"));
        broker.drive(Instant::now(), &mut events);
        assert!(matches!(rx.try_next(), Some(MqttOut::Close)));
        assert!(!broker.close(Instant::now(), "nobody"));
    }

    #[tokio::test]
    async fn mqtt_client_limit_counts_the_other_protocols_clients() {
        let (mut broker, mut events, clients) = two_places();
        let rx = open(&mut broker, &mut events, 8);
        // Two clients of the session protocol hold both places.
        clients.sessions.store(2, Ordering::Release);
        let data = Bytes::from_static(CONNECT);
        handle(
            &mut broker,
            &mut events,
            MqttCommand::Bytes { conn: 1, data },
        );
        match rx.try_next() {
            // 3.1.1 CONNACK 0x03: server unavailable.
            Some(MqttOut::Write(batch)) => {
                assert_eq!(&batch.concat()[..], &[0x20, 0x02, 0x00, 0x03])
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(rx.try_next(), Some(MqttOut::Close)));
        assert_eq!(broker.connected(), 0);
    }

    /// A broker whose sessions keep 2 messages in flight and queue 20.
    fn small_queue() -> (Broker, EventLog) {
        let config = MqttConfig {
            max_inflight: 2,
            max_queued_messages: 20,
            ..MqttConfig::default()
        };
        let b = Broker::new(config, TreeLimits::default(), RetainedLimits::default());
        (b, EventLog::open(None).unwrap())
    }

    /// A 3.1.1 CONNECT of `client` (keep alive 60 s), persistent unless
    /// `clean`.
    fn connect_packet(client: &str, clean: bool) -> Bytes {
        let mut p = vec![
            0x10,
            (12 + client.len()) as u8,
            0,
            4,
            b'M',
            b'Q',
            b'T',
            b'T',
            4,
        ];
        p.push(if clean { 0x02 } else { 0x00 });
        p.extend_from_slice(&[0, 60, 0, client.len() as u8]);
        p.extend_from_slice(client.as_bytes());
        Bytes::from(p)
    }

    /// PUBLISH to `topic` with packet id `id` (QoS 1, or QoS 0 when `id`
    /// is 0), retained or not.
    fn publish_packet(topic: &str, id: u16, payload: &[u8], retain: bool) -> Vec<u8> {
        let qos0 = id == 0;
        let mut body = vec![0, topic.len() as u8];
        body.extend_from_slice(topic.as_bytes());
        if !qos0 {
            body.extend_from_slice(&id.to_be_bytes());
        }
        body.extend_from_slice(payload);
        let mut p = vec![if qos0 { 0x30 } else { 0x32 } | u8::from(retain)];
        let mut n = body.len();
        loop {
            let b = (n % 128) as u8;
            n /= 128;
            p.push(if n > 0 { b | 0x80 } else { b });
            if n == 0 {
                break;
            }
        }
        p.extend_from_slice(&body);
        p
    }

    /// SUBSCRIBE (packet id 1) to `filter` at QoS 1.
    fn subscribe_packet(filter: &str) -> Bytes {
        let mut p = vec![0x82, (5 + filter.len()) as u8, 0, 1, 0, filter.len() as u8];
        p.extend_from_slice(filter.as_bytes());
        p.push(1);
        Bytes::from(p)
    }

    /// Every packet written to `rx` so far, whole.
    fn packets(rx: &ConnIn) -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        while let Some(out) = rx.try_next() {
            if let MqttOut::Write(batch) = out {
                all.extend(batch.concat());
            }
        }
        let mut out = Vec::new();
        let mut at = 0;
        while at < all.len() {
            let (mut n, mut shift, mut i) = (0usize, 0, at + 1);
            loop {
                let b = all[i];
                n |= usize::from(b & 0x7f) << shift;
                shift += 7;
                i += 1;
                if b & 0x80 == 0 {
                    break;
                }
            }
            out.push(all[at..i + n].to_vec());
            at = i + n;
        }
        out
    }

    /// PUBACKs for the QoS 1 PUBLISHes among `packets`; how many PUBLISHes.
    fn acks_for(packets: &[Vec<u8>]) -> (Vec<u8>, usize) {
        let mut acks = Vec::new();
        let mut n = 0;
        for p in packets.iter().filter(|p| p[0] >> 4 == 3) {
            n += 1;
            if p[0] & 0x06 != 0 {
                let topic = usize::from(u16::from_be_bytes([p[2], p[3]]));
                acks.extend_from_slice(&[0x40, 0x02, p[4 + topic], p[5 + topic]]);
            }
        }
        (acks, n)
    }

    /// A WebSocket client `client` (persistent) on connection `conn`,
    /// subscribed to `filter` at QoS 1, and the packets it was sent after
    /// its SUBACK.
    fn ws_subscriber(
        broker: &mut Broker,
        events: &mut EventLog,
        conn: u64,
        filter: &str,
    ) -> (ConnIn, Vec<Vec<u8>>) {
        let rx = open_as(broker, events, conn, 100_000);
        bytes_to(broker, events, conn, connect_packet("s", false));
        bytes_to(broker, events, conn, subscribe_packet(filter));
        let mut p = packets(&rx);
        assert_eq!((p[0][0], p[1][0]), (0x20, 0x90));
        (rx, p.split_off(2))
    }

    /// A TCP client on connection `conn`, connected as `client`: the
    /// client's end of its socket, and the poll the broker registered it
    /// with.
    fn tcp_client(
        broker: &mut Broker,
        events: &mut EventLog,
        conn: u64,
    ) -> (std::net::TcpStream, mio::Poll) {
        use crate::slots::Pending;
        use tokio::sync::Semaphore;
        let poll = mio::Poll::new().unwrap();
        broker.with_io(poll.registry().try_clone().unwrap());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let places = Arc::new(Semaphore::new(4));
        let pending = Pending::new(4, Arc::clone(&places), 4);
        let tcp = TcpConn::new(
            mio::net::TcpStream::from_std(server),
            places.try_acquire_owned().unwrap(),
            pending.take(peer.ip()).unwrap(),
            pending.take(peer.ip()).unwrap(),
        );
        assert!(broker.open_tcp(Instant::now(), conn, peer.ip(), tcp));
        send_tcp(
            broker,
            events,
            &mut client,
            conn,
            &connect_packet("p", true),
        );
        (client, poll)
    }

    /// The TCP client writes `data`; the broker reads (as the loop would,
    /// until a read does not fill its buffer) and drives; whether it read
    /// anything.
    fn send_tcp(
        broker: &mut Broker,
        events: &mut EventLog,
        client: &mut std::net::TcpStream,
        conn: u64,
        data: &[u8],
    ) {
        use std::io::Write as _;
        client.write_all(data).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        read_tcp(broker, events, conn);
    }

    /// The loop's reads of connection `conn` (at most 100 a call) and a
    /// drive.
    fn read_tcp(broker: &mut Broker, events: &mut EventLog, conn: u64) {
        let mut buf = vec![0; 512];
        for _ in 0..100 {
            if !broker.readable(Instant::now(), conn, &mut buf) {
                break;
            }
        }
        broker.drive(Instant::now(), events);
    }

    fn qos1_burst(from: u16, n: u16) -> Vec<u8> {
        (from..from + n)
            .flat_map(|i| publish_packet("t", i, b"x", false))
            .collect()
    }

    #[tokio::test]
    async fn a_publisher_pauses_while_its_subscriber_catches_up_and_is_read_again_after() {
        let (mut broker, mut events) = small_queue();
        let (sub, _) = ws_subscriber(&mut broker, &mut events, 1, "t");
        let (mut publisher, _poll) = tcp_client(&mut broker, &mut events, 2);
        send_tcp(
            &mut broker,
            &mut events,
            &mut publisher,
            2,
            &qos1_burst(1, 10),
        );
        // Two in flight, eight queued: past a quarter of 20, paused.
        assert!(broker.flow.is_paused(ConnId(2)));
        let b = broker.registry.backlog("s").unwrap();
        assert_eq!((b.in_flight, b.queued), (2, 8));
        // A paused socket is not read: what it sends waits in the kernel.
        send_tcp(
            &mut broker,
            &mut events,
            &mut publisher,
            2,
            &qos1_burst(11, 5),
        );
        assert_eq!(broker.registry.backlog("s").unwrap().queued, 8);
        // The subscriber acknowledges: once its queue is under a tenth,
        // the publisher is named to be read again.
        let mut received = 0;
        let mut resumed = Vec::new();
        for _ in 0..50 {
            let (acks, n) = acks_for(&packets(&sub));
            received += n;
            if acks.is_empty() {
                break;
            }
            bytes_to(&mut broker, &mut events, 1, Bytes::from(acks));
            broker.take_resumed(&mut resumed);
            if !resumed.is_empty() {
                read_tcp(&mut broker, &mut events, 2);
            }
        }
        // Read again (and, with five more queued, perhaps paused again).
        assert!(!resumed.is_empty() && resumed.iter().all(|&c| c == 2));
        assert!(!broker.flow.is_paused(ConnId(2)));
        assert_eq!(received, 15, "every message, none lost");
        assert_eq!(broker.flow.total_lost(), [0, 0, 0, 0]);
    }

    #[tokio::test]
    async fn a_subscriber_that_stops_acknowledging_holds_its_publisher_no_longer_and_alone_loses_new_messages(
    ) {
        let (mut broker, mut events) = small_queue();
        let (sub, _) = ws_subscriber(&mut broker, &mut events, 1, "t");
        let (mut publisher, _poll) = tcp_client(&mut broker, &mut events, 2);
        send_tcp(
            &mut broker,
            &mut events,
            &mut publisher,
            2,
            &qos1_burst(1, 10),
        );
        assert!(broker.flow.is_paused(ConnId(2)));
        // No acknowledgement for NO_PROGRESS: the pause ends.
        let later = Instant::now() + super::super::flow::NO_PROGRESS;
        assert!(broker.flow_deadline().is_some_and(|d| d <= later));
        broker.drive(later, &mut events);
        let mut resumed = Vec::new();
        broker.take_resumed(&mut resumed);
        assert_eq!(resumed, [2]);
        // What the full queue cannot take is dropped, counted; the
        // publisher is not paused again for it, and nobody is closed.
        send_tcp(
            &mut broker,
            &mut events,
            &mut publisher,
            2,
            &qos1_burst(11, 30),
        );
        assert!(!broker.flow.is_paused(ConnId(2)));
        assert_eq!(broker.flow.total_lost(), [40 - 2 - 20, 0, 0, 0]);
        assert_eq!(broker.connected(), 2);
        let (_, n) = acks_for(&packets(&sub));
        assert_eq!(n, 2);
    }

    #[tokio::test]
    async fn qos0_is_shed_for_a_connection_with_too_much_unwritten() {
        let config = MqttConfig {
            limits: sessionwire::Limits::builder()
                .max_message_size(64 * 1024)
                .build()
                .unwrap(),
            ..MqttConfig::default()
        };
        let mut broker = Broker::new(config, TreeLimits::default(), RetainedLimits::default());
        let mut events = EventLog::open(None).unwrap();
        // The subscriber's task takes nothing: its outbox grows.
        let (sub, _) = ws_subscriber(&mut broker, &mut events, 1, "t");
        let _publisher = open_as(&mut broker, &mut events, 2, 100);
        bytes_to(&mut broker, &mut events, 2, connect_packet("p", true));
        let payload = vec![b'x'; 60 * 1024];
        let over = SHED_BYTES / payload.len() + 1;
        for _ in 0..over + 3 {
            let p = publish_packet("t", 0, &payload, false);
            bytes_to(&mut broker, &mut events, 2, Bytes::from(p));
        }
        assert_eq!(broker.flow.total_lost(), [0, 3, 0, 0]);
        let (_, n) = acks_for(&packets(&sub));
        assert_eq!(n, over);
    }

    #[tokio::test]
    async fn retained_messages_after_a_subscribe_go_through_the_window_not_at_once() {
        let (mut broker, mut events) = small_queue();
        let _publisher = open_as(&mut broker, &mut events, 2, 100);
        bytes_to(&mut broker, &mut events, 2, connect_packet("p", true));
        for i in 0..50u16 {
            let p = publish_packet(&format!("r/{i}"), i + 1, b"x", true);
            bytes_to(&mut broker, &mut events, 2, Bytes::from(p));
        }
        // 50 matching retained messages, a queue of 20: a window in
        // flight and one queued, the rest waiting its turn; none is lost.
        let (sub, first) = ws_subscriber(&mut broker, &mut events, 1, "r/#");
        let b = broker.registry.backlog("s").unwrap();
        assert_eq!((b.in_flight, b.queued), (2, 2));
        assert_eq!(broker.retained_due["s"].queue.len(), 46);
        let mut received = 0;
        let mut sent = first;
        for _ in 0..100 {
            let (acks, n) = acks_for(&sent);
            received += n;
            let b = broker.registry.backlog("s").unwrap();
            assert!(b.queued <= b.window, "paced: {b:?}");
            if acks.is_empty() {
                break;
            }
            bytes_to(&mut broker, &mut events, 1, Bytes::from(acks));
            sent = packets(&sub);
        }
        assert_eq!(received, 50);
        assert!(broker.retained_due.is_empty());
        assert_eq!(broker.flow.total_lost(), [0, 0, 0, 0]);
    }
}
