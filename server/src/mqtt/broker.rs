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

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use sessionwire::mqtt::session::{
    Charge, ConnId, Delivery, Event, Incoming, Message, MqttConfig, PublishGate, Refuse, Registry,
    ServerClose, SubscriptionRequest,
};
use sessionwire::mqtt::{Property, PropertyId, QoS, Version};
use sessionwire::CloseReason;

use super::channel::{conn_bytes, ConnOut, LoopCommand, MqttCommand, MqttOut, WeakLoopSender};
use super::conns::ConnTable;
use super::ratelog::RateLog;
use super::retained::{heap_cost, sends_retained, Retained, RetainedLimits};
use super::tcp::{Sent, TcpConn};
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
    pub fn readable(&mut self, now: Instant, conn: u64, buf: &mut [u8]) -> bool {
        let id = ConnId(conn);
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
        if t.has_unsent() && t.write_unsent() == Sent::Failed {
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
        // Connections that never sent a CONNECT just go.
        for (id, c) in self.conns.drain() {
            c.finish(id, &mut self.closing);
        }
    }

    /// Carries out what the registry hands out until it has nothing more:
    /// events (which may deliver, and so transmit), transmits (each
    /// connection's written as one batch), closes.
    pub fn drive(&mut self, now: Instant, events: &mut EventLog) {
        loop {
            let mut busy = false;
            while let Some(event) = self.registry.poll_event() {
                busy = true;
                self.event(now, event, events);
            }
            while let Some(transmit) = self.registry.poll_transmit() {
                busy = true;
                self.outbox.push(transmit);
            }
            self.flush(now);
            while let Some((id, close)) = self.registry.poll_close() {
                busy = true;
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
                Link::Tcp(t) => match t.write(batch, self.conn_bytes) {
                    Sent::Ok => {}
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
            Event::Publish { from, message } => self.route(now, &from, &message, false),
            Event::Will { from, message } => self.route(now, &from, &message, true),
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

    /// Hands a message to every matching subscription; a retained will is
    /// stored (or deleted) first (`will`: a PUBLISH's was, at its
    /// admission, by [`RetainGate`]).
    fn route(&mut self, now: Instant, from: &str, message: &Message, will: bool) {
        if will && message.retain {
            let mut gate = self.gate();
            // Nobody to refuse it to: not kept, and said once in a while.
            let _ = gate.retain.admit(now, from, message);
        }
        // A shared subscription's turn prefers members with a connection.
        let registry = &self.registry;
        let matches = self
            .tree
            .matches_preferring(message.topic.as_str(), from, |c| registry.is_connected(c));
        for m in matches {
            let delivery = Delivery {
                qos: m.qos.min(message.qos),
                retain: message.retain && m.retain_as_published,
                subscription_ids: m.subscription_ids,
            };
            self.registry.deliver(now, m.client_id, message, delivery);
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
    /// (after its SUBACK).
    fn send_retained(&mut self, now: Instant, client_id: &str, filter: &str, sub: Subscription) {
        let retained: Vec<Message> = self
            .retained
            .matching(filter, now)
            .into_iter()
            .map(|(_, m)| m.clone())
            .collect();
        for message in retained {
            let delivery = Delivery {
                qos: sub.qos.min(message.qos),
                retain: true,
                subscription_ids: sub.id.into_iter().collect(),
            };
            self.registry.deliver(now, client_id, &message, delivery);
        }
    }
}

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
            let size = heap_cost(kept.topic.len())
                .saturating_add(heap_cost(kept.payload.len()))
                .saturating_add(heap_cost(kept.properties.as_bytes().len()));
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
}
