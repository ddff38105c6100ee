//! The broker: the codec's MQTT [`Registry`] (every client's protocol state)
//! with the server's [`Tree`] of subscriptions and [`Retained`] messages,
//! driven by the hub task (`hub.rs`), which owns it beside the session
//! protocol's registry so that the client limit, the event log, the control
//! API and shutdown cover both.
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

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use sessionwire::mqtt::session::{
    ConnId, Delivery, Event, Incoming, Message, MqttConfig, Refuse, Registry, ServerClose,
    SubscriptionRequest,
};
use sessionwire::mqtt::{QoS, Version};
use tokio::sync::mpsc;

use super::channel::{ConnOut, MqttCommand, MqttOut};
use super::retained::{sends_retained, Retained, RetainedLimits};
use super::tree::{charge, SubscribeError, Subscription, Tree, TreeLimits};
use crate::channel::{Command, OsRandom};
use crate::events::{EventLog, Record};
use crate::passwords::{PasswordChecks, Verdict};

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

/// The transport side of one MQTT connection.
struct Conn {
    out: ConnOut,
    /// Bytes drained from the registry and not yet sent: one batch per
    /// command handled.
    outbox: Vec<Bytes>,
    peer: IpAddr,
    transport: &'static str,
    /// Set once connected: who and which version.
    client: Option<(String, Version)>,
    /// The user name of its CONNECT, for the log.
    user: Option<String>,
}

impl Conn {
    /// Tells the connection to close after what it was sent; one whose
    /// channel is full is told to give up instead.
    fn finish(self) {
        if !self.out.send(MqttOut::Close) {
            self.out.give_up();
        }
    }
}

/// The broker. See the [module documentation](self).
pub struct Broker {
    registry: Registry<OsRandom>,
    tree: Tree,
    retained: Retained<Message>,
    /// Boxed: the table's spare slots then cost a pointer each.
    conns: HashMap<ConnId, Box<Conn>>,
    /// The client ids with a connection now, and how many (two for a
    /// moment during a takeover): a shared subscription's turn prefers
    /// them.
    online: HashMap<String, u32>,
    /// Connections whose outbox is not empty, to send on the next flush.
    dirty: Vec<ConnId>,
    maximum_qos: QoS,
    /// The client limit, over both protocols.
    max_clients: usize,
    /// With a users file: the password checks and the way back into the
    /// hub for their verdicts. Without one, anyone connects.
    passwords: Option<(Arc<PasswordChecks>, mpsc::WeakSender<Command>)>,
    stopping: bool,
}

impl Broker {
    /// A broker with no client.
    pub fn new(config: MqttConfig, tree: TreeLimits, retained: RetainedLimits) -> Broker {
        Broker {
            maximum_qos: config.maximum_qos,
            max_clients: config.limits.max_clients(),
            registry: Registry::new(config, OsRandom),
            tree: Tree::new(tree),
            retained: Retained::new(retained),
            conns: HashMap::new(),
            online: HashMap::new(),
            dirty: Vec::new(),
            passwords: None,
            stopping: false,
        }
    }

    /// Checks CONNECT user names and passwords with `checks`; `hub` is the
    /// way back into the hub for their verdicts.
    pub fn with_passwords(&mut self, checks: Arc<PasswordChecks>, hub: mpsc::WeakSender<Command>) {
        self.passwords = Some((checks, hub));
    }

    /// MQTT clients connected now (for the client limit).
    pub fn connected(&self) -> usize {
        self.registry.connected()
    }

    /// When the registry next needs [`handle_timeout`](Self::handle_timeout).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.registry.poll_timeout()
    }

    /// Runs the registry's timers (keep alive, CONNECT timeout, will delay,
    /// session expiry).
    pub fn handle_timeout(&mut self, now: Instant, events: &mut EventLog, others: usize) {
        self.registry.handle_timeout(now);
        self.drive(now, events, others);
    }

    /// Handles what a connection said; `others` is the number of clients
    /// of the session protocol (the client limit counts both).
    pub fn handle(
        &mut self,
        now: Instant,
        command: MqttCommand,
        events: &mut EventLog,
        others: usize,
    ) {
        match command {
            MqttCommand::Open {
                conn,
                peer,
                transport,
                out,
            } => {
                let id = ConnId(conn);
                self.conns.insert(
                    id,
                    Box::new(Conn {
                        out,
                        outbox: Vec::new(),
                        peer,
                        transport,
                        client: None,
                        user: None,
                    }),
                );
                self.registry.open(now, id);
            }
            MqttCommand::Bytes { conn, data } => {
                let id = ConnId(conn);
                if self.conns.contains_key(&id) {
                    self.registry.handle_bytes(now, id, &data);
                }
            }
            MqttCommand::Lost { conn } => {
                let id = ConnId(conn);
                if let Some(c) = self.conns.get_mut(&id) {
                    // Nothing more can be written to it.
                    c.outbox.clear();
                    self.registry.connection_lost(now, id);
                }
            }
        }
        self.drive(now, events, others);
    }

    /// A password check is over: accept or refuse.
    pub fn checked(
        &mut self,
        now: Instant,
        incoming: Incoming,
        verdict: Verdict,
        events: &mut EventLog,
        others: usize,
    ) {
        match verdict {
            _ if self.stopping => self.registry.refuse(now, incoming, Refuse::Busy),
            Verdict::Accepted => self.registry.accept(now, incoming),
            Verdict::Refused => self.registry.refuse(now, incoming, Refuse::BadCredentials),
            Verdict::Busy => self.registry.refuse(now, incoming, Refuse::Busy),
        }
        self.drive(now, events, others);
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
    pub fn close(
        &mut self,
        now: Instant,
        client_id: &str,
        events: &mut EventLog,
        others: usize,
    ) -> bool {
        let found = self.registry.sessions().any(|s| s.client_id == client_id);
        if found {
            self.registry.close(now, client_id, ServerClose::Controller);
            self.drive(now, events, others);
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
        self.drive(now, events, 0);
        // Connections that never sent a CONNECT just go.
        for (_, c) in self.conns.drain() {
            c.finish();
        }
    }

    /// Carries out what the registry hands out until it has nothing more:
    /// events (which may deliver, and so transmit), transmits, closes.
    fn drive(&mut self, now: Instant, events: &mut EventLog, others: usize) {
        loop {
            let mut busy = false;
            while let Some(event) = self.registry.poll_event() {
                busy = true;
                self.event(now, event, events, others);
            }
            while let Some((id, bytes)) = self.registry.poll_transmit() {
                busy = true;
                if let Some(c) = self.conns.get_mut(&id) {
                    if c.outbox.is_empty() {
                        self.dirty.push(id);
                    }
                    c.outbox.push(bytes);
                }
            }
            self.flush();
            while let Some((id, close)) = self.registry.poll_close() {
                busy = true;
                let conn = self.conns.remove(&id);
                if let Some((client_id, _)) = conn.as_ref().and_then(|c| c.client.as_ref()) {
                    // A takeover may have given the client id a new
                    // connection already: it stays online.
                    if let Some(n) = self.online.get_mut(client_id.as_str()) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            self.online.remove(client_id.as_str());
                        }
                    }
                }
                let (client, user, transport) = match &conn {
                    Some(c) => (c.client.clone(), c.user.as_deref(), Some(c.transport)),
                    None => (None, None, None),
                };
                let client_id = close
                    .client_id
                    .as_deref()
                    .or(client.as_ref().map(|c| c.0.as_str()));
                let event = if client.is_some() {
                    "closed"
                } else {
                    "refused"
                };
                if client.is_none() && close.code.is_none() && close.client_id.is_none() {
                    // Gone before its CONNECT was whole: nothing to log.
                    tracing::debug!(conn = id.0, reason = %close.reason, "MQTT connection ended before CONNECT");
                    if let Some(c) = conn {
                        c.finish();
                    }
                    continue;
                }
                events.record(&Record {
                    event,
                    protocol: Some("mqtt"),
                    principal: user,
                    client_id,
                    version: client.as_ref().map(|c| version_name(c.1)),
                    transport_name: transport,
                    reason: Some(close.reason),
                    reason_code: close.code,
                    ..Record::default()
                });
                if let Some(c) = conn {
                    c.finish();
                }
            }
            if !busy {
                return;
            }
        }
    }

    /// Sends each connection its outbox as one batch; a connection that
    /// has [`MQTT_CONN_QUEUE`](super::conn::MQTT_CONN_QUEUE) batches or
    /// [`conn_bytes`](super::conn::conn_bytes) bytes waiting does not keep
    /// up: the codec closes it as a full queue (`Registry::outbound_full`,
    /// MESSAGE_QUEUE_LIMIT_REACHED, 0x97 when it can still be written).
    fn flush(&mut self) {
        let mut slow = Vec::new();
        for id in self.dirty.drain(..) {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            if c.outbox.is_empty() {
                continue;
            }
            let batch = std::mem::take(&mut c.outbox);
            if !c.out.send(MqttOut::Write(batch)) {
                slow.push(id);
            }
        }
        for id in slow {
            if let Some(c) = self.conns.get(&id) {
                tracing::debug!(conn = id.0, "MQTT connection does not keep up: dropped");
                // Its task may be stuck writing to a client that does not
                // read: it stops, and the socket goes.
                c.out.give_up();
            }
            // The codec closes it as a full queue (0x97).
            self.registry.outbound_full(Instant::now(), id);
        }
    }

    fn event(&mut self, now: Instant, event: Event, events: &mut EventLog, others: usize) {
        match event {
            Event::Connect(incoming) => self.connect(now, incoming, others),
            Event::Connected {
                conn,
                client_id,
                version,
                session_present,
            } => {
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                events.record(&Record {
                    event: "opened",
                    protocol: Some("mqtt"),
                    principal: c.user.as_deref(),
                    client_id: Some(&client_id),
                    version: Some(version_name(version)),
                    transport_name: Some(c.transport),
                    code: Some(0),
                    ..Record::default()
                });
                tracing::debug!(client_id, session_present, "MQTT client connected");
                *self.online.entry(client_id.clone()).or_insert(0) += 1;
                c.client = Some((client_id, version));
            }
            Event::Publish { from, message } | Event::Will { from, message } => {
                self.route(now, &from, &message);
            }
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
            }
        }
    }

    /// A CONNECT passed the registry's checks: the client limit (both
    /// protocols), then the users file.
    fn connect(&mut self, now: Instant, incoming: Incoming, others: usize) {
        let conn = incoming.conn();
        let user = incoming
            .connect()
            .user_name()
            .map(|u| u.as_str().to_owned());
        let peer = match self.conns.get_mut(&conn) {
            Some(c) => {
                c.user.clone_from(&user);
                c.peer
            }
            None => return self.registry.refuse(now, incoming, Refuse::Busy),
        };
        // A client taking its own connection over adds no client.
        let takeover = self
            .online
            .contains_key(incoming.connect().client_id().as_str());
        let full = self.registry.connected().saturating_add(others) >= self.max_clients;
        if self.stopping || (full && !takeover) {
            return self.registry.refuse(now, incoming, Refuse::Busy);
        }
        let Some((checks, hub)) = &self.passwords else {
            return self.registry.accept(now, incoming);
        };
        let Some(user) = user else {
            return self.registry.refuse(now, incoming, Refuse::BadCredentials);
        };
        let password = incoming
            .connect()
            .password()
            .map(|p| p.to_vec())
            .unwrap_or_default();
        let (checks, hub) = (Arc::clone(checks), hub.clone());
        tokio::spawn(async move {
            let verdict = checks.check(peer, user, password).await;
            if let Some(hub) = hub.upgrade() {
                let _ = hub.send(Command::MqttChecked { incoming, verdict }).await;
            }
        });
    }

    /// Stores or deletes a retained message, then hands the message to
    /// every matching subscription.
    fn route(&mut self, now: Instant, from: &str, message: &Message) {
        if message.retain {
            let topic = message.topic.as_str();
            let stored = if message.payload.is_empty() {
                self.retained.set(now, topic, None, 0, None)
            } else {
                // The topic's levels are trie nodes: charged as a filter is.
                let size = charge(topic).saturating_add(message.payload.len());
                self.retained
                    .set(now, topic, Some(message.clone()), size, message.expires_at)
            };
            if let Err(e) = stored {
                tracing::warn!(topic, error = ?e, "retained message not kept: store full");
            }
        }
        let online = &self.online;
        let matches = self
            .tree
            .matches_preferring(message.topic.as_str(), from, |c| online.contains_key(c));
        for m in matches {
            let delivery = Delivery {
                qos: m.qos.min(message.qos),
                retain: message.retain && m.retain_as_published,
                subscription_ids: m.subscription_ids,
            };
            self.registry.deliver(now, &m.client_id, message, delivery);
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
        let existed = match self.tree.subscribe(client_id, &request.filter, sub) {
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

/// UNSUBACK 0x11, No subscription existed (a 3.1.1 client is sent no code).
const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;

/// The SUBACK code of a subscription the tree does not keep (a 3.1.1
/// client is sent 0x80 for any of them). A bound of this broker is an
/// implementation-imposed limit, which 5.0 names Quota exceeded (0x97);
/// a malformed `$share/` is Topic Filter invalid (0x8F).
fn refusal(e: SubscribeError) -> u8 {
    match e {
        SubscribeError::ClientFull | SubscribeError::TreeFull | SubscribeError::TooDeep => 0x97,
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
        let (out, rx) = ConnOut::pair(capacity, 1 << 20);
        let open = MqttCommand::Open {
            conn: 1,
            peer: IpAddr::from([127, 0, 0, 1]),
            transport: "mqtt",
            out,
        };
        broker.handle(Instant::now(), open, events, 0);
        rx
    }

    fn bytes(broker: &mut Broker, events: &mut EventLog, data: &'static [u8]) {
        let data = Bytes::from_static(data);
        broker.handle(
            Instant::now(),
            MqttCommand::Bytes { conn: 1, data },
            events,
            0,
        );
    }

    fn broker() -> (Broker, EventLog) {
        let b = Broker::new(
            MqttConfig::default(),
            TreeLimits::default(),
            RetainedLimits::default(),
        );
        (b, EventLog::open(None).unwrap())
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

    #[tokio::test]
    async fn control_close_of_a_3_1_1_client_closes_its_connection_without_a_packet() {
        let (mut broker, mut events) = broker();
        let rx = open(&mut broker, &mut events, 8);
        bytes(&mut broker, &mut events, CONNECT);
        assert!(matches!(rx.try_next(), Some(MqttOut::Write(_))));
        assert_eq!(broker.list()[0].client_id, "c");
        assert!(broker.close(Instant::now(), "c", &mut events, 0));
        assert!(matches!(rx.try_next(), Some(MqttOut::Close)));
        assert!(!broker.close(Instant::now(), "nobody", &mut events, 0));
    }

    #[tokio::test]
    async fn mqtt_client_limit_counts_the_other_protocols_clients() {
        let config = MqttConfig {
            limits: sessionwire::Limits::builder()
                .max_clients(2)
                .build()
                .unwrap(),
            ..MqttConfig::default()
        };
        let mut broker = Broker::new(config, TreeLimits::default(), RetainedLimits::default());
        let mut events = EventLog::open(None).unwrap();
        let rx = open(&mut broker, &mut events, 8);
        // Two clients of the session protocol hold both places.
        let data = Bytes::from_static(CONNECT);
        broker.handle(
            Instant::now(),
            MqttCommand::Bytes { conn: 1, data },
            &mut events,
            2,
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
