//! The hub: the one task that owns the [`Registry`] and drives every session.
//!
//! Connection tasks send it [`Command`]s over one bounded channel; it answers
//! HTTP requests over oneshot channels and feeds WebSocket connections over a
//! small bounded channel each ([`Out`], what one command answered in one
//! batch). It never waits on a connection: a WebSocket with [`CONN_QUEUE`]
//! less one messages waiting stops being drained (the session's own
//! outbound queue fills up instead, up to its limit), and the connection
//! says [`Command::Writable`] when it has room again.
//!
//! The registry holds every session's state, its index and its timers; the
//! hub holds only the transport side of each session (its WebSocket channel,
//! its waiting HTTP requests) and does what the registry hands out. It sleeps
//! until the registry's earliest deadline or the next command.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sessionwire::message::service::UNKNOWN_SERVICE_ERROR;
use sessionwire::message::ServiceError;
use sessionwire::session::handshake::Credentials;
use sessionwire::session::handshake::{ConnectionRequest, ConnectionType};
use sessionwire::session::{
    Connect, ConnectOutcome, Event, Incoming, Refuse, Registry, SessionConfig, SessionEvent,
    SessionId, SessionState, SessionToken, Transmit,
};
use sessionwire::{Limits, Message, Violation};
use tokio::sync::{mpsc, oneshot};

use super::channel::{
    Attach, Clients, Command, Connected, HttpAnswer, OsRandom, Out, SessionInfo, WsConn, CONN_QUEUE,
};
use super::events::{transport_name, EventLog, Record};
use super::mqtt::channel::{LoopCommand, LoopSender};
use super::passwords::{PasswordChecks, Verdict};

/// Most commands handled on one wake of the hub before its timers are
/// looked at again.
const HUB_BATCH: usize = 64;

/// How often finished sessions are forgotten.
const REAP_EVERY: Duration = Duration::from_secs(1);

/// The transport side of one session: the registry holds the rest.
struct Entry {
    opened: Instant,
    conn: Option<WsConn>,
    /// WebSocket messages drained from the session and not yet sent to the
    /// connection: sent as one batch once the command is handled.
    outbox: Vec<Bytes>,
    polls: Vec<(Option<u64>, oneshot::Sender<HttpAnswer>)>,
    sends: Vec<(Option<u64>, oneshot::Sender<HttpAnswer>)>,
}

/// A session id as the control API lists it (`server-value` in hex).
fn parse_id(text: &str) -> Option<SessionId> {
    let (server, value) = text.split_once('-')?;
    let part = |t: &str| {
        (t.len() == 16)
            .then(|| u64::from_str_radix(t, 16).ok())
            .flatten()
            .map(|v| v as i64)
    };
    Some(SessionId {
        server: part(server)?,
        value: part(value)?,
    })
}

/// The hub. See the [module documentation](self).
pub struct Hub {
    registry: Registry<OsRandom>,
    entries: HashMap<SessionToken, Entry>,
    /// When the timers last ran: a deadline not past it waits a millisecond,
    /// so the hub never spins on one that did not move.
    last_timers: Option<Instant>,
    events: EventLog,
    last_reap: Instant,
    closed_since_reap: usize,
    stopping: bool,
    /// The password checks (with a users file) and the way back into the
    /// hub for their verdicts.
    passwords: Option<(Arc<PasswordChecks>, mpsc::WeakSender<Command>)>,
    /// The way to the MQTT event loop, which owns the broker (`None`: no
    /// MQTT, in tests).
    mqtt: Option<LoopSender>,
    /// The clients of both protocols (the hub writes its own count).
    clients: Arc<Clients>,
}

impl Hub {
    /// A hub with no session and no MQTT.
    pub fn new(limits: Limits, config: SessionConfig, events: EventLog) -> Hub {
        Hub {
            mqtt: None,
            clients: Arc::default(),
            registry: Registry::new(limits, config, OsRandom),
            entries: HashMap::new(),
            last_timers: None,
            events,
            last_reap: Instant::now(),
            closed_since_reap: 0,
            stopping: false,
            passwords: None,
        }
    }

    /// Checks the password of every new session with `checks` (a server
    /// with a users file: anonymous sessions are refused); `hub` is the
    /// sender of the channel this hub will [`run`](Self::run) on.
    pub fn with_passwords(
        mut self,
        checks: Arc<PasswordChecks>,
        hub: &mpsc::Sender<Command>,
    ) -> Hub {
        self.passwords = Some((checks, hub.downgrade()));
        self
    }

    /// Serves the control API's MQTT part through the event loop `mqtt`,
    /// and counts the clients of both protocols in `clients`.
    pub fn with_mqtt(mut self, mqtt: LoopSender, clients: Arc<Clients>) -> Hub {
        self.mqtt = Some(mqtt);
        self.clients = clients;
        self
    }

    /// Runs until [`Command::Shutdown`] (or every sender is gone); returns
    /// the event log for the caller to flush.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Command>) -> EventLog {
        loop {
            self.clients
                .sessions
                .store(self.registry.live_sessions(), Ordering::Release);
            let deadline = self
                .registry
                .poll_timeout()
                .map(|t| match self.last_timers {
                    Some(last) if t <= last => last + Duration::from_millis(1),
                    _ => t,
                });
            let command = tokio::select! {
                c = rx.recv() => c,
                () = sleep_until(deadline) => {
                    self.fire_timers(Instant::now());
                    continue;
                }
            };
            let Some(mut command) = command else { break };
            // The commands already waiting are handled on this wake, up to
            // HUB_BATCH, before the timers are looked at again.
            let mut handled = 0;
            loop {
                if let Command::Shutdown { done } = command {
                    self.shutdown();
                    let _ = done.send(());
                    return self.events;
                }
                self.handle(command);
                handled += 1;
                if handled >= HUB_BATCH {
                    break;
                }
                match rx.try_recv() {
                    Ok(c) => command = c,
                    Err(_) => break,
                }
            }
            if self.closed_since_reap > 0 && self.last_reap.elapsed() >= REAP_EVERY {
                self.registry.reap();
                self.closed_since_reap = 0;
                self.last_reap = Instant::now();
            }
        }
        // Requests still waiting get no answer: dropping their reply
        // channels drops their connections.
        self.events
    }

    fn handle(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Connect {
                request,
                peer,
                attach,
                reply,
            } => self.connect(now, request, peer, attach, reply),
            Command::Checked {
                incoming,
                verdict,
                attach,
                reply,
            } => self.checked(now, incoming, verdict, attach, reply),
            Command::Inbound { token, conn, data } => {
                // Each message as if it came alone: the session's outputs
                // are drained after each, and once the connection is no
                // longer the session's the rest is dropped. What they
                // answered goes to the connection together.
                for data in data {
                    if !self.owns(&token, conn) {
                        break;
                    }
                    if let Some(mut s) = self.registry.session_mut(&token) {
                        s.handle_websocket(now, data);
                    }
                    self.drive(token);
                }
                self.send_out(&token);
            }
            Command::Fault {
                token,
                conn,
                violation,
            } => {
                if self.owns(&token, conn) {
                    if let Some(mut s) = self.registry.session_mut(&token) {
                        s.handle_transport_violation(now, violation);
                    }
                    self.process(token);
                }
            }
            Command::Lost {
                token,
                conn,
                io_error,
            } => {
                if self.owns(&token, conn) {
                    if let Some(e) = self.entries.get_mut(&token) {
                        // The socket is gone: nothing more to write on it.
                        e.conn = None;
                    }
                    let event = if io_error {
                        SessionEvent::IoFailure
                    } else {
                        SessionEvent::TransportLost
                    };
                    if let Some(mut s) = self.registry.session_mut(&token) {
                        s.handle_event(now, event);
                    }
                    self.process(token);
                }
            }
            Command::Writable { token, conn } => {
                if self.owns(&token, conn) {
                    self.process(token);
                }
            }
            Command::Poll {
                token,
                sequence,
                reply,
            } => {
                if let Some(reply) = self.http_gate(&token, reply) {
                    let parsed = self
                        .registry
                        .session_mut(&token)
                        .and_then(|mut s| s.handle_http_poll(now, &sequence));
                    if let Some(e) = self.entries.get_mut(&token) {
                        e.polls.push((parsed, reply));
                    }
                    self.process(token);
                }
            }
            Command::Send {
                token,
                sequence,
                body,
                reply,
                reading,
            } => {
                if let Some(reply) = self.http_gate(&token, reply) {
                    let parsed = self
                        .registry
                        .session_mut(&token)
                        .and_then(|mut s| s.handle_http_send(now, &sequence, body));
                    drop(reading);
                    if let Some(e) = self.entries.get_mut(&token) {
                        e.sends.push((parsed, reply));
                    }
                    self.process(token);
                }
            }
            Command::SendTooLarge { token, reply } => {
                if let Some(reply) = self.http_gate(&token, reply) {
                    if let Some(e) = self.entries.get_mut(&token) {
                        e.sends.push((None, reply));
                    }
                    if let Some(mut s) = self.registry.session_mut(&token) {
                        s.handle_http_send_too_large(now);
                    }
                    self.process(token);
                }
            }
            Command::List { reply } => {
                let sessions = self.list(now);
                // The loop adds the MQTT sessions and answers.
                match &self.mqtt {
                    Some(mqtt) => mqtt.send_soon(LoopCommand::List { sessions, reply }),
                    None => {
                        let _ = reply.send(sessions);
                    }
                }
            }
            Command::Act { id, event, reply } => {
                let found = parse_id(&id)
                    .and_then(|id| self.registry.token_of(id))
                    .filter(|t| self.entries.contains_key(t));
                if let Some(token) = found {
                    if let Some(mut s) = self.registry.session_mut(&token) {
                        s.handle_event(now, event);
                    }
                    self.process(token);
                }
                // Not a session of the protocol: an MQTT client id, which
                // the loop closes and answers for.
                match &self.mqtt {
                    Some(mqtt) if found.is_none() && event == SessionEvent::ClosedByController => {
                        mqtt.send_soon(LoopCommand::Close {
                            client_id: id,
                            reply,
                        });
                    }
                    _ => {
                        let _ = reply.send(found.is_some());
                    }
                }
            }
            Command::Shutdown { done } => {
                self.shutdown();
                let _ = done.send(());
            }
        }
    }

    /// Whether `conn` is the connection attached to the session.
    fn owns(&self, token: &SessionToken, conn: u64) -> bool {
        self.entries
            .get(token)
            .and_then(|e| e.conn.as_ref())
            .is_some_and(|c| c.conn == conn)
    }

    /// Answers an HTTP request for a session that cannot take it; returns
    /// the reply when the session is connected over HTTP polling.
    fn http_gate(
        &mut self,
        token: &SessionToken,
        reply: oneshot::Sender<HttpAnswer>,
    ) -> Option<oneshot::Sender<HttpAnswer>> {
        let answer = match self.registry.http_gate(token) {
            Some(close) => HttpAnswer::from(close),
            None if self.entries.contains_key(token) => return Some(reply),
            None => HttpAnswer::Drop,
        };
        let _ = reply.send(answer);
        None
    }

    fn connect(
        &mut self,
        now: Instant,
        request: Result<ConnectionRequest, Violation>,
        peer: IpAddr,
        attach: Attach,
        reply: oneshot::Sender<Connected>,
    ) {
        let principal = request.as_ref().ok().and_then(|r| r.principal.clone());
        let reconnecting = request
            .as_ref()
            .ok()
            .and_then(|r| r.reconnect)
            .and_then(|rc| rc.token);
        match self.registry.handle_connect(now, request) {
            Connect::Answered(outcome) => self.answer(now, outcome, principal, attach, reply),
            Connect::Incoming(incoming) => self.decide(now, incoming, peer, attach, reply),
        }
        // A refused reconnection (118) closes the session it named.
        if let Some(t) = reconnecting {
            self.process(t);
        }
    }

    /// The first phase of a new session: accepted at once without a users
    /// file, refused when anonymous, else its password goes to the bounded
    /// checks and the hub carries on; [`checked`](Self::checked) ends it.
    fn decide(
        &mut self,
        now: Instant,
        incoming: Incoming,
        peer: IpAddr,
        attach: Attach,
        reply: oneshot::Sender<Connected>,
    ) {
        let principal = incoming.request().principal.clone();
        if self.stopping {
            let outcome = self.registry.refuse(incoming, Refuse::NotReady);
            return self.answer(now, outcome, principal, attach, reply);
        }
        // The client limit counts MQTT clients too.
        let mqtt = self.clients.mqtt.load(Ordering::Acquire);
        let clients = self.registry.live_sessions().saturating_add(mqtt);
        if mqtt > 0 && clients >= self.registry.limits().max_clients() {
            let outcome = self.registry.refuse(incoming, Refuse::Busy);
            return self.answer(now, outcome, principal, attach, reply);
        }
        let Some((checks, hub)) = &self.passwords else {
            return self.admit(now, incoming, principal, attach, reply);
        };
        let Some(claimed) = principal.clone() else {
            let outcome = self.registry.refuse(incoming, Refuse::BadCredentials);
            return self.answer(now, outcome, principal, attach, reply);
        };
        let password = match &incoming.request().credentials {
            Credentials::Text(t) => t.as_bytes().to_vec(),
            Credentials::Binary(b) => b.clone(),
            _ => Vec::new(),
        };
        let (checks, hub) = (Arc::clone(checks), hub.clone());
        let mut reply = reply;
        tokio::spawn(async move {
            let verdict = tokio::select! {
                v = checks.check(peer, claimed, password) => v,
                // The client went away: the check is dropped, which gives
                // its address's place back.
                () = reply.closed() => return,
            };
            if let Some(hub) = hub.upgrade() {
                let checked = Command::Checked {
                    incoming,
                    verdict,
                    attach,
                    reply,
                };
                let _ = hub.send(checked).await;
            }
        });
    }

    /// The second phase: the password check's verdict ends in accept or
    /// refuse (a check that could not run is the layer's `Refuse::Busy`).
    fn checked(
        &mut self,
        now: Instant,
        incoming: Incoming,
        verdict: Verdict,
        attach: Attach,
        reply: oneshot::Sender<Connected>,
    ) {
        let principal = incoming.request().principal.clone();
        let why = match verdict {
            _ if self.stopping => Refuse::NotReady,
            Verdict::Accepted => return self.admit(now, incoming, principal, attach, reply),
            Verdict::Refused => Refuse::BadCredentials,
            Verdict::Busy => Refuse::Busy,
        };
        let outcome = self.registry.refuse(incoming, why);
        self.answer(now, outcome, principal, attach, reply);
    }

    /// Opens the session for `principal`.
    fn admit(
        &mut self,
        now: Instant,
        incoming: Incoming,
        principal: Option<String>,
        attach: Attach,
        reply: oneshot::Sender<Connected>,
    ) {
        // With principal takeover on, the principal's sessions may close.
        let prior: Vec<SessionToken> = principal
            .as_deref()
            .map(|p| self.registry.sessions_of(p).collect())
            .unwrap_or_default();
        let outcome = self.registry.accept(now, incoming, principal.clone());
        // A session whose reconnection wait ended to make room closes now.
        let ended = outcome.ended_wait;
        self.answer(now, outcome, principal, attach, reply);
        for p in prior.into_iter().chain(ended) {
            self.process(p);
        }
    }

    /// Sends the registry's answer to a connection attempt, attaches the
    /// session it opened or resumed, and logs it.
    fn answer(
        &mut self,
        now: Instant,
        outcome: ConnectOutcome,
        principal: Option<String>,
        attach: Attach,
        reply: oneshot::Sender<Connected>,
    ) {
        // Counted before the answer goes: a client the MQTT loop admits
        // after this one saw its answer counts it.
        self.clients
            .sessions
            .store(self.registry.live_sessions(), Ordering::Release);
        let transport = match attach {
            Attach::WebSocket(_) => ConnectionType::WebSocket,
            Attach::Http => ConnectionType::HttpPolling,
        };
        let response = outcome.response.to_bytes();
        match (outcome.session, outcome.refused) {
            (Some(token), None) => {
                if outcome.displaced {
                    // The old transport goes first, before this one attaches.
                    if let (Some(mut s), Some(e)) = (
                        self.registry.session_mut(&token),
                        self.entries.get_mut(&token),
                    ) {
                        handle_events(now, &mut s, e, &mut self.events);
                    }
                }
                let reconnected = self.entries.contains_key(&token);
                let Some(session) = self.registry.session(&token) else {
                    let _ = reply.send(Connected {
                        response,
                        token: None,
                    });
                    return;
                };
                let id = session.id();
                let entry = self.entries.entry(token).or_insert_with(|| Entry {
                    opened: now,
                    conn: None,
                    outbox: Vec::new(),
                    polls: Vec::new(),
                    sends: Vec::new(),
                });
                entry.conn = match attach {
                    Attach::WebSocket(c) => Some(c),
                    Attach::Http => None,
                };
                let record = Record {
                    event: if reconnected { "reconnected" } else { "opened" },
                    session: Some(id),
                    principal: session.principal(),
                    transport: Some(transport),
                    code: Some(outcome.response.code.code()),
                    ..Record::default()
                };
                self.events.record(&record);
                tracing::debug!(session = %id, transport = transport_name(transport), reconnected, "session attached");
                if reply
                    .send(Connected {
                        response,
                        token: Some(token),
                    })
                    .is_err()
                {
                    // The connection went away while we decided.
                    if let Some(mut s) = self.registry.session_mut(&token) {
                        s.handle_event(now, SessionEvent::TransportLost);
                    }
                }
                self.process(token);
            }
            (_, refused) => {
                let reason = refused.map(|r| r.reason);
                let record = Record {
                    event: "refused",
                    principal: principal.as_deref(),
                    transport: Some(transport),
                    code: Some(outcome.response.code.code()),
                    reason,
                    violation: refused.and_then(|r| r.violation),
                    ..Record::default()
                };
                self.events.record(&record);
                tracing::debug!(code = %outcome.response.code, "connection refused");
                let _ = reply.send(Connected {
                    response,
                    token: None,
                });
            }
        }
    }

    /// Drives one session's outputs ([`drive`](Self::drive)) and sends
    /// what it has for its WebSocket.
    fn process(&mut self, token: SessionToken) {
        self.drive(token);
        self.send_out(&token);
    }

    /// Sends the session's outbox to its WebSocket connection as one batch.
    fn send_out(&mut self, token: &SessionToken) {
        let Some(entry) = self.entries.get_mut(token) else {
            return;
        };
        if entry.outbox.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut entry.outbox);
        if let Some(c) = entry.conn.as_ref() {
            c.signal.queued.fetch_add(batch.len(), Ordering::AcqRel);
            if let Err(e) = c.tx.try_send(Out::Messages(batch)) {
                // Not queued (the connection is gone): not counted.
                if let Out::Messages(b) = e.into_inner() {
                    c.signal.queued.fetch_sub(b.len(), Ordering::AcqRel);
                }
            }
        }
    }

    /// Drives one session's outputs: application events, transmits (its
    /// WebSocket messages into the outbox), the close decision, and its
    /// next timer.
    fn drive(&mut self, token: SessionToken) {
        let now = Instant::now();
        let Some(mut session) = self.registry.session_mut(&token) else {
            if let Some(e) = self.entries.remove(&token) {
                answer_all(e.polls, e.sends, HttpAnswer::Abort, HttpAnswer::Drop);
            }
            return;
        };
        let Some(entry) = self.entries.get_mut(&token) else {
            return;
        };
        let id = session.id();
        handle_events(now, &mut session, entry, &mut self.events);
        // A close comes first: its transmits (the ABORT) must be the last
        // thing written, not drained as an ordinary message.
        if let Some(close) = session.poll_close() {
            // The event is logged before the client can see the close.
            let transport = session.transport();
            self.events.record(&Record {
                event: "closed",
                session: Some(id),
                principal: session.principal(),
                transport: Some(transport),
                reason: Some(close.reason),
                violation: close.violation,
                abort_sent: Some(close.abort_sent),
                ..Record::default()
            });
            tracing::debug!(session = %id, reason = %close, "session closed");
            let mut before = std::mem::take(&mut entry.outbox);
            let mut last = None;
            while let Some(t) = session.poll_transmit() {
                match t {
                    Transmit::WebSocket(b) => {
                        if let Some(prev) = last.replace(b) {
                            before.push(prev);
                        }
                    }
                    other => answer_http(entry, other),
                }
            }
            if let Some(c) = entry.conn.take() {
                if !before.is_empty() {
                    let _ = c.tx.try_send(Out::Messages(before));
                }
                c.close(last, close.sends_close_frame());
            }
            if let Some(e) = self.entries.remove(&token) {
                let poll_answer = HttpAnswer::from(close.http_answer());
                answer_all(e.polls, e.sends, poll_answer, HttpAnswer::Drop);
            }
            self.closed_since_reap += 1;
            return;
        }
        let closed_before = session.is_closed();
        drain_transmits(&mut session, entry);
        drop(session);
        // Messages kept for a reconnection as they were written may have
        // taken the session past the held-data budget: its close is
        // decided when it is given back to the registry, so take it now.
        if !closed_before && self.registry.session(&token).is_some_and(|s| s.is_closed()) {
            self.process(token);
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        self.last_timers = Some(now);
        for token in self.registry.handle_timeout(now) {
            self.process(token);
        }
    }

    fn list(&self, now: Instant) -> Vec<SessionInfo> {
        let mut out: Vec<SessionInfo> = self
            .entries
            .iter()
            .filter_map(|(token, e)| {
                let s = self.registry.session(token)?;
                let state = match s.state() {
                    SessionState::Connected => "connected",
                    SessionState::Disconnected { .. } => "disconnected",
                    SessionState::Closed(_) => return None,
                };
                Some(SessionInfo {
                    protocol: None,
                    id: s.id().to_string(),
                    version: None,
                    principal: s.principal().map(str::to_owned),
                    transport: transport_name(s.transport()),
                    state,
                    age_ms: Some(
                        u64::try_from(now.saturating_duration_since(e.opened).as_millis())
                            .unwrap_or(u64::MAX),
                    ),
                    queue_depth: Some(s.memory().queued_messages),
                })
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    fn shutdown(&mut self) {
        self.stopping = true;
        let now = Instant::now();
        let tokens: Vec<SessionToken> = self.entries.keys().copied().collect();
        tracing::info!(sessions = tokens.len(), "aborting open sessions");
        for token in tokens {
            if let Some(mut s) = self.registry.session_mut(&token) {
                s.handle_event(now, SessionEvent::Shutdown);
            }
            self.process(token);
        }
    }
}

/// Hands a session's events to the application: messages (the pings are
/// the session's own; other service requests are unknown here), and a lost
/// transport, which is dropped while the session waits for a reconnection.
fn handle_events(
    now: Instant,
    session: &mut sessionwire::session::Session,
    entry: &mut Entry,
    events: &mut EventLog,
) {
    let id = session.id();
    while let Some(event) = session.poll_event() {
        match event {
            Event::Message(Message::ServiceRequest(req)) => {
                // Section 3: every service but the pings (which the
                // session answers) is unknown here.
                if req.conversation != 0 {
                    session.send(
                        now,
                        Message::ServiceError(ServiceError {
                            conversation: req.conversation,
                            message: "unknown service".into(),
                            code: UNKNOWN_SERVICE_ERROR,
                        }),
                    );
                }
            }
            Event::Message(m) => {
                tracing::debug!(session = %id, kind = ?m.message_type(), "message ignored");
            }
            Event::Disconnected {
                reason, violation, ..
            } => {
                events.record(&Record {
                    event: "disconnected",
                    session: Some(id),
                    principal: session.principal(),
                    transport: Some(session.transport()),
                    reason: Some(reason),
                    violation,
                    ..Record::default()
                });
                // Drop the transport; the session waits for a reconnection.
                entry.outbox.clear();
                if let Some(c) = entry.conn.take() {
                    c.close(None, false);
                }
                let polls = std::mem::take(&mut entry.polls);
                let sends = std::mem::take(&mut entry.sends);
                answer_all(polls, sends, HttpAnswer::Reconnect, HttpAnswer::Reconnect);
            }
        }
    }
}

/// Hands transmits to the transport: WebSocket messages to the outbox
/// while the connection has room (fewer than [`CONN_QUEUE`] less one
/// waiting, one slot kept for the close), HTTP answers to their waiting
/// requests.
fn drain_transmits(session: &mut sessionwire::session::Session, entry: &mut Entry) {
    loop {
        if let Some(c) = entry.conn.as_ref() {
            let waiting = c
                .signal
                .queued
                .load(Ordering::Acquire)
                .saturating_add(entry.outbox.len());
            if waiting >= CONN_QUEUE - 1 {
                c.signal.blocked.store(true, Ordering::Release);
                return;
            }
        }
        let Some(t) = session.poll_transmit() else {
            return;
        };
        match t {
            Transmit::WebSocket(b) => {
                if entry.conn.is_some() {
                    entry.outbox.push(b);
                }
            }
            other => answer_http(entry, other),
        }
    }
}

fn answer_http(entry: &mut Entry, t: Transmit) {
    let (list, key, answer) = match t {
        Transmit::PollResponse { sequence, body } => {
            (&mut entry.polls, sequence, HttpAnswer::Body(body))
        }
        Transmit::SendAck { sequence } => (&mut entry.sends, sequence, HttpAnswer::Ack),
        Transmit::WebSocket(_) => return,
    };
    if let Some(i) = list.iter().position(|(s, _)| *s == Some(key)) {
        let (_, reply) = list.swap_remove(i);
        let _ = reply.send(answer);
    }
}

type Waiters = Vec<(Option<u64>, oneshot::Sender<HttpAnswer>)>;

fn answer_all(polls: Waiters, sends: Waiters, poll_answer: HttpAnswer, send_answer: HttpAnswer) {
    for (_, reply) in polls {
        let _ = reply.send(poll_answer.clone());
    }
    for (_, reply) in sends {
        let _ = reply.send(send_answer.clone());
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::ConnSignal;
    use sessionwire::message::ServiceRequest;

    fn start(config: SessionConfig) -> mpsc::Sender<Command> {
        let (tx, rx) = mpsc::channel(16);
        let hub = Hub::new(Limits::default(), config, EventLog::open(None).unwrap());
        tokio::spawn(hub.run(rx));
        tx
    }

    fn quiet() -> SessionConfig {
        SessionConfig {
            ping_period: None,
            ..SessionConfig::default()
        }
    }

    async fn ws_connect(hub: &mpsc::Sender<Command>) -> (SessionToken, mpsc::Receiver<Out>) {
        let (tx, rx) = mpsc::channel(CONN_QUEUE);
        let (reply, answer) = oneshot::channel();
        let attach = Attach::WebSocket(WsConn {
            conn: 7,
            tx,
            signal: Arc::new(ConnSignal::default()),
        });
        hub.send(Command::Connect {
            request: ConnectionRequest::from_query("/diffusion?ty=WB&v=29&ca=8&r=0"),
            peer: IpAddr::from([127, 0, 0, 1]),
            attach,
            reply,
        })
        .await
        .unwrap();
        let connected = answer.await.unwrap();
        assert_eq!(&connected.response[..3], &[0x23, 29, 100]);
        (connected.token.unwrap(), rx)
    }

    async fn inbound(hub: &mpsc::Sender<Command>, token: SessionToken, bytes: &'static [u8]) {
        inbound_batch(hub, token, &[bytes]).await;
    }

    /// The next thing the hub tells the connection (within 5 s).
    async fn next_out(rx: &mut mpsc::Receiver<Out>) -> Option<Out> {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("the hub answers")
    }

    async fn next_message(rx: &mut mpsc::Receiver<Out>) -> Message {
        match next_out(rx).await {
            Some(Out::Messages(b)) if b.len() == 1 => {
                Message::decode(&b[0], &Limits::default()).unwrap()
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn section_3_user_ping_answered_unknown_service_gets_error_100() {
        let hub = start(quiet());
        let (token, mut rx) = ws_connect(&hub).await;
        inbound(&hub, token, &[0x00, 0x38, 0x01]).await;
        assert_eq!(
            next_message(&mut rx).await,
            Message::ServiceResponse(sessionwire::message::ServiceResponse {
                conversation: 1,
                payload: Bytes::new()
            })
        );
        // Service 3, conversation 2: no such service here.
        inbound(&hub, token, &[0x00, 0x03, 0x02]).await;
        match next_message(&mut rx).await {
            Message::ServiceError(e) => {
                assert_eq!((e.conversation, e.code), (2, UNKNOWN_SERVICE_ERROR));
                assert_eq!(UNKNOWN_SERVICE_ERROR, 100);
            }
            other => panic!("{other:?}"),
        }
    }

    async fn inbound_batch(
        hub: &mpsc::Sender<Command>,
        token: SessionToken,
        batch: &[&'static [u8]],
    ) {
        let data = batch.iter().map(|b| Bytes::from_static(b)).collect();
        hub.send(Command::Inbound {
            token,
            conn: 7,
            data,
        })
        .await
        .unwrap();
    }

    fn conversation(m: &Message) -> (&'static str, u64) {
        match m {
            Message::ServiceResponse(r) => ("response", r.conversation),
            Message::ServiceError(e) => ("error", e.conversation),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn section_3_pipelined_requests_are_answered_in_order_in_one_batch() {
        let hub = start(quiet());
        let (token, mut rx) = ws_connect(&hub).await;
        // USER_PING 1, service 3 (unknown) 2, USER_PING 3, read together.
        inbound_batch(
            &hub,
            token,
            &[
                &[0x00, 0x38, 0x01],
                &[0x00, 0x03, 0x02],
                &[0x00, 0x38, 0x03],
            ],
        )
        .await;
        let batch = match next_out(&mut rx).await {
            Some(Out::Messages(b)) => b,
            other => panic!("{other:?}"),
        };
        let answers: Vec<(&str, u64)> = batch
            .iter()
            .map(|b| conversation(&Message::decode(b, &Limits::default()).unwrap()))
            .collect();
        assert_eq!(answers, [("response", 1), ("error", 2), ("response", 3)]);
        assert!(rx.try_recv().is_err(), "one batch for the three");
    }

    #[tokio::test]
    async fn section_1_a_fault_in_a_batch_closes_after_what_came_before_it() {
        let hub = start(quiet());
        let (token, mut rx) = ws_connect(&hub).await;
        // USER_PING 1, then a message of no known type, then USER_PING 3.
        inbound_batch(
            &hub,
            token,
            &[&[0x00, 0x38, 0x01], &[0xff], &[0x00, 0x38, 0x03]],
        )
        .await;
        let mut seen = Vec::new();
        loop {
            match next_out(&mut rx).await {
                Some(Out::Messages(b)) => seen.extend(b),
                Some(Out::Close { .. }) => break,
                other => panic!("{other:?}"),
            }
        }
        // The first is answered; nothing after the fault is.
        assert_eq!(seen.len(), 1, "{seen:?}");
        let m = Message::decode(&seen[0], &Limits::default()).unwrap();
        assert_eq!(conversation(&m), ("response", 1));
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn section_4_system_ping_every_period() {
        let hub = start(SessionConfig {
            ping_period: Some(Duration::from_millis(50)),
            ..SessionConfig::default()
        });
        let (token, mut rx) = ws_connect(&hub).await;
        for conversation in 1..=3 {
            match next_message(&mut rx).await {
                Message::ServiceRequest(ServiceRequest {
                    service,
                    conversation: c,
                    ..
                }) => {
                    assert_eq!((service, c), (55, conversation));
                    let answer: &'static [u8] = match conversation {
                        1 => &[0x06, 0x01],
                        2 => &[0x06, 0x02],
                        _ => &[0x06, 0x03],
                    };
                    inbound(&hub, token, answer).await;
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn section_5_controller_close_writes_abort_last_then_a_close_frame() {
        let hub = start(quiet());
        let (_token, mut rx) = ws_connect(&hub).await;
        let (reply, list) = oneshot::channel();
        hub.send(Command::List { reply }).await.unwrap();
        let list = list.await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!((list[0].transport, list[0].state), ("ws", "connected"));
        let (reply, found) = oneshot::channel();
        let id = list[0].id.clone();
        let event = SessionEvent::ClosedByController;
        hub.send(Command::Act { id, event, reply }).await.unwrap();
        assert!(found.await.unwrap());
        match rx.recv().await {
            Some(Out::Close {
                last: Some(b),
                frame: true,
            }) => assert_eq!(&b[..], &[0x1c]),
            other => panic!("{other:?}"),
        }
        let (reply, list) = oneshot::channel();
        hub.send(Command::List { reply }).await.unwrap();
        assert!(list.await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn section_1_transport_lost_without_reconnection_just_drops() {
        let hub = start(quiet());
        let (token, mut rx) = ws_connect(&hub).await;
        hub.send(Command::Lost {
            token,
            conn: 7,
            io_error: false,
        })
        .await
        .unwrap();
        // The connection was already gone: nothing more is sent to it, and
        // the session is forgotten.
        let (reply, list) = oneshot::channel();
        hub.send(Command::List { reply }).await.unwrap();
        assert!(list.await.unwrap().is_empty());
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn section_6_reconnection_while_connected_replaces_the_old_transport() {
        let hub = start(quiet());
        let attach = |conn| {
            let (tx, rx) = mpsc::channel(CONN_QUEUE);
            let signal = Arc::new(ConnSignal::default());
            (Attach::WebSocket(WsConn { conn, tx, signal }), rx)
        };
        let (first, mut old_rx) = attach(1);
        let (reply, answer) = oneshot::channel();
        hub.send(Command::Connect {
            request: ConnectionRequest::from_query("ty=WB&v=29&ca=8&r=5000"),
            peer: IpAddr::from([127, 0, 0, 1]),
            attach: first,
            reply,
        })
        .await
        .unwrap();
        let token = answer.await.unwrap().token.unwrap();
        // The old socket is half open: the server never saw it drop.
        let (second, _new_rx) = attach(2);
        let (reply, answer) = oneshot::channel();
        let q = format!("ty=WB&v=29&ca=8&r=5000&c={}&cs=1&ss=0", token.as_str());
        hub.send(Command::Connect {
            request: ConnectionRequest::from_query(&q),
            peer: IpAddr::from([127, 0, 0, 1]),
            attach: second,
            reply,
        })
        .await
        .unwrap();
        let connected = answer.await.unwrap();
        assert_eq!(connected.response[2], 105, "reconnected");
        assert_eq!(connected.token, Some(token));
        match old_rx.recv().await {
            Some(Out::Close { last: None, frame }) => assert!(!frame, "just dropped"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn section_2_with_a_users_file_anonymous_and_unknown_principals_get_116() {
        let (tx, rx) = mpsc::channel(16);
        let users = Arc::new(crate::users::Users::default());
        let checks = Arc::new(PasswordChecks::start(users).unwrap());
        let hub = Hub::new(Limits::default(), quiet(), EventLog::open(None).unwrap());
        tokio::spawn(hub.with_passwords(checks, &tx).run(rx));
        // Anonymous: refused without a check; alice: refused by the check.
        for q in [
            "ty=WB&v=29&ca=8&r=0",
            "ty=WB&v=29&ca=8&r=0&username=alice&password=AQZzM2NyZXQ%3D",
        ] {
            let (reply, answer) = oneshot::channel();
            tx.send(Command::Connect {
                request: ConnectionRequest::from_query(q),
                peer: IpAddr::from([127, 0, 0, 1]),
                attach: Attach::Http,
                reply,
            })
            .await
            .unwrap();
            let connected = answer.await.unwrap();
            assert_eq!(connected.response[2], 116, "{q}");
            assert!(connected.token.is_none());
        }
    }

    #[tokio::test]
    async fn section_6_http_poll_is_answered_by_a_send() {
        let hub = start(quiet());
        let (reply, answer) = oneshot::channel();
        let request =
            ConnectionRequest::from_headers([("ty", "B"), ("v", "29"), ("ca", "8"), ("r", "0")]);
        hub.send(Command::Connect {
            request,
            peer: IpAddr::from([127, 0, 0, 1]),
            attach: Attach::Http,
            reply,
        })
        .await
        .unwrap();
        let token = answer.await.unwrap().token.unwrap();
        let (reply, poll) = oneshot::channel();
        let sequence = "0".to_owned();
        hub.send(Command::Poll {
            token,
            sequence,
            reply,
        })
        .await
        .unwrap();
        let (reply, ack) = oneshot::channel();
        hub.send(Command::Send {
            token,
            sequence: "0".into(),
            body: Bytes::from_static(b"AAAAAgA4AQ=="),
            reading: None,
            reply,
        })
        .await
        .unwrap();
        assert_eq!(ack.await.unwrap(), HttpAnswer::Ack);
        assert_eq!(poll.await.unwrap(), HttpAnswer::Body("AAAAAQYB".into()));
        // An unknown token is told ABORT.
        let (reply, poll) = oneshot::channel();
        let unknown = SessionToken::from_bytes(b"AAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        hub.send(Command::Poll {
            token: unknown,
            sequence: "0".into(),
            reply,
        })
        .await
        .unwrap();
        assert_eq!(poll.await.unwrap(), HttpAnswer::Abort);
    }
}
