//! The session state machine (sections 1, 4, 5 and 6): one client session,
//! driven by the server.
//!
//! The server feeds what arrived ([`Session::handle_websocket`],
//! [`Session::handle_http_send`], [`Session::handle_http_poll`],
//! [`Session::handle_event`]) and wakes the session at
//! [`Session::poll_timeout`] with [`Session::handle_timeout`], always passing
//! the current [`Instant`]. It drains what to send ([`Session::poll_transmit`]),
//! what to hand the application ([`Session::poll_event`]) and, once, the
//! decision to close ([`Session::poll_close`]).
//!
//! A recoverable loss (CONNECTION_LOST, IO_EXCEPTION, CLIENT_UNRESPONSIVE, and
//! CLOSED_BY_CLIENT in test-reconnect mode) only disconnects: the session is
//! kept for the client's `r` milliseconds ([`Event::Disconnected`]) and closes
//! for good with that reason if the client does not reconnect in time.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::message::service::{SYSTEM_PING, USER_PING};
use crate::message::{Message, ServiceRequest, ServiceResponse};
use crate::session::handshake::{
    ConnectionRequest, ConnectionResponse, ConnectionType, ResponseCode, SessionDetails,
};
use crate::session::ids::{SessionId, SessionToken};
use crate::session::queue::OutboundQueue;
use crate::session::recovery::{RecoveryBuffer, RecoveryDecision, MAX_MESSAGE_NUMBER};
use crate::session::reorder::{parse_sequence, ReorderBuffer};
use crate::{polling, CloseReason, Direction, Limits, Violation, ViolationKind};

/// Server-side settings of the session layer (the bounds live in [`Limits`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// The server part of every session id this server mints.
    pub server_id: i64,
    /// How often the server sends SYSTEM_PING; `None`: never (the handshake
    /// then says 0, no idle checking). Over WebSocket a ping not answered
    /// before the next one is due closes CLIENT_UNRESPONSIVE.
    pub ping_period: Option<Duration>,
    /// HTTP polling: how long a poll is held open when there is nothing to
    /// send before it is answered empty.
    pub poll_timeout: Duration,
    /// HTTP polling: how long the client may go without an open poll before
    /// the session closes CLIENT_UNRESPONSIVE.
    pub poll_gap: Duration,
    /// Makes CLOSED_BY_CLIENT recoverable, for testing reconnection. Off by
    /// default.
    pub test_reconnect: bool,
    /// On a reconnection whose gap cannot be covered, answer 106 (resume with
    /// message loss) instead of 118 and LOST_MESSAGES. Off by default.
    pub allow_message_loss: bool,
    /// A new session of a principal closes that principal's older sessions
    /// SESSION_TAKEN_OVER. Off by default: the protocol gives session
    /// clients no identity to take over (docs/protocol.md section 9 (d)),
    /// so one principal may hold many sessions at once.
    pub principal_takeover: bool,
    /// The longest reconnection wait the server grants: a client asking for
    /// more (`r`) is kept for this long.
    pub max_reconnect_wait: Duration,
    /// The most bytes all sessions of a registry may hold at once in their
    /// reorder buffers (HTTP sends waiting for their turn) and recovery
    /// buffers (sent messages kept for a reconnection). A session whose
    /// held data would pass it closes MESSAGE_QUEUE_LIMIT_REACHED
    /// ([`ViolationKind::HeldDataOverBudget`]). A lone [`Session`] does not
    /// see it: the [`Registry`](crate::session::Registry) keeps the account.
    pub max_buffered_bytes: usize,
}

impl Default for SessionConfig {
    /// Server id 0, a ping every 90 s, polls held 25 s, 15 s allowed between
    /// polls, test-reconnect, message loss and principal takeover off, a
    /// reconnection wait of at most 60 s, 64 MiB of held data.
    fn default() -> Self {
        SessionConfig {
            server_id: 0,
            ping_period: Some(Duration::from_secs(90)),
            poll_timeout: Duration::from_secs(25),
            poll_gap: Duration::from_secs(15),
            test_reconnect: false,
            allow_message_loss: false,
            principal_takeover: false,
            max_reconnect_wait: Duration::from_secs(60),
            max_buffered_bytes: 64 << 20,
        }
    }
}

impl SessionConfig {
    /// The reconnection wait granted for what the client asked (`r`).
    pub fn reconnect_wait(&self, asked: Duration) -> Duration {
        asked.min(self.max_reconnect_wait)
    }
}

/// Something that happened to a session outside its own bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionEvent {
    /// The transport connection dropped (CONNECTION_LOST, recoverable).
    TransportLost,
    /// An I/O operation on the transport failed (IO_EXCEPTION, recoverable).
    IoFailure,
    /// A control session closed the client (CLOSED_BY_CONTROLLER).
    ClosedByController,
    /// The session moved to another server (FAILED_OVER).
    FailedOver,
    /// The session's authentication expired (EXPIRED).
    Expired,
    /// The session's authentication was revoked (REVOKED).
    Revoked,
    /// A new session claimed this session's identity (SESSION_TAKEN_OVER).
    TakenOver,
    /// A resource failure on the server side (INTERNAL_ERROR).
    ResourceFailure,
    /// The server is shutting down and aborts the session (ABORTED).
    Shutdown,
}

impl SessionEvent {
    /// The close reason this event leads to.
    pub const fn close_reason(self) -> CloseReason {
        match self {
            SessionEvent::TransportLost => CloseReason::ConnectionLost,
            SessionEvent::IoFailure => CloseReason::IoException,
            SessionEvent::ClosedByController => CloseReason::ClosedByController,
            SessionEvent::FailedOver => CloseReason::FailedOver,
            SessionEvent::Expired => CloseReason::Expired,
            SessionEvent::Revoked => CloseReason::Revoked,
            SessionEvent::TakenOver => CloseReason::SessionTakenOver,
            SessionEvent::ResourceFailure => CloseReason::InternalError,
            SessionEvent::Shutdown => CloseReason::Aborted,
        }
    }
}

/// Whether the server sends ABORT before closing for `reason` (section 5):
/// on every final close the client must not recover from, except when the
/// client itself asked to close, or when the session failed over (the
/// client should reconnect, to another server).
pub const fn sends_abort(reason: CloseReason) -> bool {
    !reason.is_recoverable()
        && !matches!(
            reason,
            CloseReason::ClosedByClient | CloseReason::FailedOver
        )
}

/// Something for the server to send on the session's transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// One binary WebSocket message (one encoded protocol message).
    WebSocket(Bytes),
    /// The 200 answer to the open HTTP poll numbered `sequence`: base64 batch
    /// text (empty: no messages).
    PollResponse {
        /// The poll's `s`.
        sequence: u64,
        /// The base64 body.
        body: String,
    },
    /// The empty 200 answer to the HTTP send numbered `sequence`.
    SendAck {
        /// The send's `s`.
        sequence: u64,
    },
}

/// Something for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An inbound message, in order.
    Message(Message),
    /// The transport is gone (drop it if it is not already); the session is
    /// kept for a reconnection until `keep_until`.
    Disconnected {
        /// Why.
        reason: CloseReason,
        /// The fault, when the cause was one.
        violation: Option<Violation>,
        /// When the session closes for good unless the client reconnects.
        keep_until: Instant,
    },
}

/// The decision to close a session for good, returned once by
/// [`Session::poll_close`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Close {
    /// Why.
    pub reason: CloseReason,
    /// The inbound fault, when the cause was one.
    pub violation: Option<Violation>,
    /// Whether an ABORT was queued as the last transmit.
    pub abort_sent: bool,
    /// When the decision was taken.
    pub at: Instant,
}

/// The answer to an HTTP polling request a session cannot take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpClose {
    /// 200 with a batch holding only ABORT: the client must not come back.
    Abort,
    /// The `diffusion-connection: reconnect` answer: the session waits for a
    /// reconnection.
    Reconnect,
    /// No answer: drop the connection.
    Drop,
}

impl Close {
    /// WebSocket: after the last transmit (the ABORT, when one was queued),
    /// end with a close frame (`true`) or just drop the socket (`false`: a
    /// recoverable reason, or a failover, after which the client should
    /// reconnect).
    pub const fn sends_close_frame(&self) -> bool {
        !self.reason.is_recoverable() && !matches!(self.reason, CloseReason::FailedOver)
    }

    /// HTTP polling: the answer to the polls (and any later request) still
    /// waiting once the session closed. Pending sends are dropped.
    pub const fn http_answer(&self) -> HttpClose {
        if sends_abort(self.reason) {
            HttpClose::Abort
        } else {
            HttpClose::Drop
        }
    }
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reason)?;
        if let Some(v) = &self.violation {
            write!(f, ": {}", v.kind())?;
        }
        if self.abort_sent {
            f.write_str(" (ABORT sent)")?;
        }
        Ok(())
    }
}

/// Where a session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// A transport is attached.
    Connected,
    /// No transport; kept for a reconnection until `until`.
    Disconnected {
        /// The reason of the loss (the final reason if nobody reconnects).
        reason: CloseReason,
        /// The end of the reconnection wait.
        until: Instant,
    },
    /// Closed for good.
    Closed(CloseReason),
}

/// What a session holds in memory, to check it against the limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUse {
    /// Messages in the outbound queue.
    pub queued_messages: usize,
    /// Encoded bytes in the outbound queue.
    pub queued_bytes: usize,
    /// HTTP sends held for reordering.
    pub held_sends: usize,
    /// Sent messages kept for recovery.
    pub recovery_messages: usize,
    /// Messages waiting to be resent after a reconnection.
    pub resend_messages: usize,
    /// Bytes held in the reorder buffer (HTTP send bodies) and the recovery
    /// buffer (encoded messages): what a registry counts against
    /// [`SessionConfig::max_buffered_bytes`].
    pub held_bytes: usize,
}

#[derive(Clone, Copy, Debug)]
struct OpenPoll {
    sequence: u64,
    since: Instant,
}

/// One client session. See the [module documentation](self).
#[derive(Debug)]
pub struct Session {
    id: SessionId,
    token: SessionToken,
    principal: Option<String>,
    limits: Limits,
    config: SessionConfig,
    transport: ConnectionType,
    reconnect_timeout: Duration,
    state: SessionState,
    now: Instant,
    queue: OutboundQueue<Message>,
    recovery: RecoveryBuffer<Message>,
    resend: VecDeque<Message>,
    received: u32,
    sends: ReorderBuffer<Bytes>,
    next_poll: u64,
    poll: Option<OpenPoll>,
    poll_closed_at: Instant,
    next_ping: Option<Instant>,
    ping_outstanding: Option<u64>,
    next_conversation: u64,
    last_client_conversation: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    close: Option<Close>,
    close_taken: bool,
    delivered: u64,
}

impl Session {
    /// A connected session for `request`, created at `now`. The registry
    /// creates sessions; a server without one may too.
    pub fn new(
        now: Instant,
        id: SessionId,
        token: SessionToken,
        request: &ConnectionRequest,
        limits: &Limits,
        config: &SessionConfig,
    ) -> Session {
        Session {
            id,
            token,
            principal: request.principal.clone(),
            limits: limits.clone(),
            config: config.clone(),
            transport: request.connection_type,
            reconnect_timeout: config.reconnect_wait(request.reconnect_timeout),
            state: SessionState::Connected,
            now,
            queue: OutboundQueue::new(limits),
            // Without reconnection (`r=0`) nothing is ever resent: keep
            // only the count, not the messages.
            recovery: RecoveryBuffer::new(
                if config.reconnect_wait(request.reconnect_timeout).is_zero() {
                    0
                } else {
                    limits.recovery_buffer()
                },
            ),
            resend: VecDeque::new(),
            received: 0,
            sends: ReorderBuffer::new(limits),
            next_poll: 0,
            poll: None,
            poll_closed_at: now,
            next_ping: config.ping_period.and_then(|p| now.checked_add(p)),
            ping_outstanding: None,
            next_conversation: 1,
            last_client_conversation: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            close: None,
            close_taken: false,
            delivered: 0,
        }
    }

    /// The response that tells the client it is connected (100).
    pub fn connected_response(&self) -> ConnectionResponse {
        self.response(ResponseCode::Connected, self.max_message_size_field())
    }

    fn max_message_size_field(&self) -> i32 {
        i32::try_from(self.limits.max_message_size()).unwrap_or(i32::MAX)
    }

    fn response(&self, code: ResponseCode, value: i32) -> ConnectionResponse {
        let ping_period_ms = self
            .config
            .ping_period
            .map_or(0, |p| i64::try_from(p.as_millis()).unwrap_or(i64::MAX));
        ConnectionResponse {
            code,
            session: Some(SessionDetails {
                id: self.id,
                token: self.token,
                ping_period_ms,
                value,
            }),
        }
    }

    /// The session id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The session token.
    pub fn token(&self) -> SessionToken {
        self.token
    }

    /// The principal the session connected as; `None`: anonymous.
    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    /// Where the session stands.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// The transport of the current (or last) connection.
    pub fn transport(&self) -> ConnectionType {
        self.transport
    }

    /// The latest time the session has seen (time never goes backwards
    /// inside: an earlier `now` is taken as this one).
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Number of client messages received (the client's numbering).
    pub fn received(&self) -> u32 {
        self.received
    }

    /// Number of server messages sent (the server's numbering).
    pub fn sent(&self) -> u32 {
        self.recovery.last_sent()
    }

    /// Inbound messages handed to the application so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// What the session holds, to check against the limits.
    pub fn memory(&self) -> MemoryUse {
        MemoryUse {
            queued_messages: self.queue.len(),
            queued_bytes: self.queue.bytes(),
            held_sends: self.sends.held(),
            recovery_messages: self.recovery.len(),
            resend_messages: self.resend.len(),
            held_bytes: self.held_bytes(),
        }
    }

    /// Bytes held in the reorder and recovery buffers (see
    /// [`MemoryUse::held_bytes`]).
    pub fn held_bytes(&self) -> usize {
        self.sends.bytes().saturating_add(self.recovery.bytes())
    }

    /// When the session lost its transport, while it waits for a
    /// reconnection; `None` in any other state.
    pub fn waiting_since(&self) -> Option<Instant> {
        match self.state {
            SessionState::Disconnected { until, .. } => until.checked_sub(self.reconnect_timeout),
            _ => None,
        }
    }

    /// Ends the wait for a reconnection at `now`, as if it had run out: the
    /// session closes with the reason it was lost for. Nothing happens in
    /// any other state. The registry does this to make room for a new
    /// client when it is full.
    pub fn end_reconnection_wait(&mut self, now: Instant) {
        let now = self.tick(now);
        if let SessionState::Disconnected { reason, .. } = self.state {
            self.close(now, reason, None);
        }
    }

    /// Closes the session for held data past the registry's budget of
    /// `limit` bytes (MESSAGE_QUEUE_LIMIT_REACHED); what it held is dropped.
    pub(crate) fn close_over_budget(&mut self, limit: usize) {
        let now = self.now;
        self.close_violation(
            now,
            Violation::new(ViolationKind::HeldDataOverBudget { limit }, 0),
        );
    }

    /// Whether the session has closed for good.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, SessionState::Closed(_))
    }

    /// A fresh conversation id for a request the server sends (SYSTEM_PING
    /// uses the same numbering).
    pub fn next_conversation(&mut self) -> u64 {
        let c = self.next_conversation;
        self.next_conversation = c.saturating_add(1);
        c
    }

    // ---------------------------------------------------------------- drains

    /// The next thing to send. Over WebSocket, call it whenever the socket
    /// can take a message: the outbound queue drains through it.
    #[must_use = "a transmit taken must be sent"]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(t) = self.transmits.pop_front() {
            return Some(t);
        }
        if self.transport != ConnectionType::WebSocket || self.state != SessionState::Connected {
            return None;
        }
        if let Some(m) = self.resend.pop_front() {
            return Some(Transmit::WebSocket(m.to_bytes()));
        }
        let m = self.queue.pop()?;
        let bytes = m.to_bytes();
        if self.recovery.record_weighed(m, bytes.len()).is_none() {
            let now = self.now;
            self.close(now, CloseReason::InternalError, None);
            return self.transmits.pop_front();
        }
        Some(Transmit::WebSocket(bytes))
    }

    /// The next event for the application.
    #[must_use = "an event taken must be handled"]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The decision to close for good: `Some` exactly once.
    #[must_use = "the close decision is handed out once"]
    pub fn poll_close(&mut self) -> Option<Close> {
        if self.close_taken {
            return None;
        }
        let c = self.close?;
        self.close_taken = true;
        Some(c)
    }

    /// The close decision, if one was made, without taking it (see
    /// [`poll_close`](Self::poll_close)).
    pub fn close_decision(&self) -> Option<Close> {
        self.close
    }

    /// Whether the close decision was taken by [`poll_close`](Self::poll_close)
    /// and nothing is left to transmit: the server may forget the session.
    pub fn is_finished(&self) -> bool {
        self.close_taken && self.transmits.is_empty()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            SessionState::Closed(_) => None,
            SessionState::Disconnected { until, .. } => Some(until),
            SessionState::Connected => {
                let mut t = self.next_ping;
                let mut consider = |x: Option<Instant>| {
                    if let Some(x) = x {
                        t = Some(t.map_or(x, |t| t.min(x)));
                    }
                };
                consider(self.sends.poll_timeout());
                if self.transport == ConnectionType::HttpPolling {
                    match self.poll {
                        Some(p) => consider(p.since.checked_add(self.config.poll_timeout)),
                        None => consider(self.poll_closed_at.checked_add(self.config.poll_gap)),
                    }
                }
                t
            }
        }
    }

    // ---------------------------------------------------------------- inputs

    fn tick(&mut self, now: Instant) -> Instant {
        if now > self.now {
            self.now = now;
        }
        self.now
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.tick(now);
        match self.state {
            SessionState::Closed(_) => {}
            SessionState::Disconnected { reason, until } => {
                if now >= until {
                    self.close(now, reason, None);
                }
            }
            SessionState::Connected => self.connected_timers(now),
        }
    }

    fn connected_timers(&mut self, now: Instant) {
        if let Err(v) = self.sends.check_timeout(now) {
            self.close_violation(now, v);
            return;
        }
        if self.transport == ConnectionType::HttpPolling {
            match self.poll {
                Some(p) if p.since.checked_add(self.config.poll_timeout) <= Some(now) => {
                    self.answer_poll(now, Vec::new());
                }
                None if self.poll_closed_at.checked_add(self.config.poll_gap) <= Some(now) => {
                    self.close(now, CloseReason::ClientUnresponsive, None);
                    return;
                }
                _ => {}
            }
        }
        if let (Some(due), Some(period)) = (self.next_ping, self.config.ping_period) {
            if now >= due {
                if self.transport == ConnectionType::WebSocket && self.ping_outstanding.is_some() {
                    self.close(now, CloseReason::ClientUnresponsive, None);
                    return;
                }
                let conversation = self.next_conversation();
                self.next_ping = now.checked_add(period);
                self.ping_outstanding = Some(conversation);
                self.enqueue(
                    now,
                    Message::ServiceRequest(ServiceRequest {
                        service: SYSTEM_PING,
                        conversation,
                        payload: Bytes::new(),
                    }),
                );
            }
        }
        self.flush_poll(now);
    }

    /// Queues a message for the client. Returns `false` when it was not
    /// queued: the session is closed, the message is one a server never
    /// sends (ABORT is the session's own, CLOSE_REQUEST the client's), or the
    /// queue limit was reached (the session then closes
    /// MESSAGE_QUEUE_LIMIT_REACHED).
    pub fn send(&mut self, now: Instant, message: Message) -> bool {
        let now = self.tick(now);
        self.handle_timeout(now);
        if self.is_closed() || matches!(message, Message::Abort | Message::Close) {
            return false;
        }
        let queued = self.enqueue(now, message);
        self.flush_poll(now);
        queued
    }

    fn enqueue(&mut self, now: Instant, message: Message) -> bool {
        let size = message.encoded_len();
        if self.queue.push(message, size).is_err() {
            self.close(now, CloseReason::MessageQueueLimitReached, None);
            return false;
        }
        true
    }

    /// Feeds one binary WebSocket message from the client.
    pub fn handle_websocket(&mut self, now: Instant, data: Bytes) {
        let now = self.tick(now);
        self.handle_timeout(now);
        if self.state != SessionState::Connected || self.transport != ConnectionType::WebSocket {
            return;
        }
        match Direction::ClientToServer.decode_message(&data, &self.limits) {
            Ok(m) => self.handle_message(now, m),
            Err(v) => self.close_violation(now, v),
        }
    }

    /// Feeds an HTTP polling send (`m=2`): its `s` header as received and its
    /// base64 body. Answered with [`Transmit::SendAck`] when its turn comes:
    /// at once when it is the next send expected, else once the sends before
    /// it have arrived (back-pressure: a client that skips a number gets no
    /// answer for what it sent after it, and the reorder wait closes it
    /// LOST_MESSAGES).
    ///
    /// Returns the `s` value as the session read it, to match the answer
    /// with the waiting request (`None`: a malformed `s`).
    pub fn handle_http_send(&mut self, now: Instant, sequence: &str, body: Bytes) -> Option<u64> {
        let s = parse_sequence(sequence).ok();
        self.http_send(now, sequence, body);
        s
    }

    fn http_send(&mut self, now: Instant, sequence: &str, body: Bytes) {
        let now = self.tick(now);
        self.handle_timeout(now);
        if self.state != SessionState::Connected || self.transport != ConnectionType::HttpPolling {
            return;
        }
        let s = match parse_sequence(sequence) {
            Ok(s) => s,
            Err(v) => return self.close_violation(now, v),
        };
        if body.len() > self.limits.max_batch_text() {
            // Refused before it is held: memory stays within the limits.
            return self.close_violation(now, self.batch_too_large());
        }
        let weight = body.len();
        if let Err(v) = self.sends.insert_weighed(now, s, body, weight) {
            return self.close_violation(now, v);
        }
        loop {
            let sequence = self.sends.next();
            let Some(body) = self.sends.pop_ready() else {
                break;
            };
            self.transmits.push_back(Transmit::SendAck { sequence });
            let batch = Direction::ClientToServer.decode_body(&body, &self.limits);
            for m in batch.messages {
                if self.state != SessionState::Connected {
                    return;
                }
                self.handle_message(now, m);
            }
            if let Some(v) = batch.violation {
                return self.close_violation(now, v);
            }
            if self.state != SessionState::Connected {
                return;
            }
        }
        self.flush_poll(now);
    }

    /// Feeds an HTTP polling send whose body the server stopped reading
    /// because it ran over [`Limits::max_batch_text`]: the session closes
    /// MESSAGE_TOO_LARGE, as it would for the whole body.
    pub fn handle_http_send_too_large(&mut self, now: Instant) {
        let now = self.tick(now);
        self.handle_timeout(now);
        if self.state != SessionState::Connected || self.transport != ConnectionType::HttpPolling {
            return;
        }
        self.close_violation(now, self.batch_too_large());
    }

    fn batch_too_large(&self) -> Violation {
        Violation::new(
            ViolationKind::BatchTooLarge {
                limit: self.limits.max_batch_size(),
            },
            self.limits.max_batch_text(),
        )
    }

    /// Feeds an HTTP poll (`m=1`) with its `s` header as received. The poll
    /// is answered at once when messages are waiting, else when one is
    /// queued or the poll timeout passes.
    ///
    /// Returns the `s` value as the session read it, to match the answer
    /// with the waiting request (`None`: a malformed `s`).
    pub fn handle_http_poll(&mut self, now: Instant, sequence: &str) -> Option<u64> {
        let s = parse_sequence(sequence).ok();
        self.http_poll(now, sequence);
        s
    }

    fn http_poll(&mut self, now: Instant, sequence: &str) {
        let now = self.tick(now);
        self.handle_timeout(now);
        if self.state != SessionState::Connected || self.transport != ConnectionType::HttpPolling {
            return;
        }
        let s = match parse_sequence(sequence) {
            Ok(s) => s,
            Err(v) => return self.close_violation(now, v),
        };
        // One poll is open at a time, so polls cannot overtake each other.
        if s != self.next_poll {
            let kind = if s < self.next_poll {
                ViolationKind::SequenceDuplicate(s)
            } else {
                ViolationKind::SequenceGap {
                    sequence: s,
                    expected: self.next_poll,
                }
            };
            return self.close_violation(now, Violation::new(kind, 0));
        }
        self.next_poll = s.saturating_add(1);
        if self.poll.is_some() {
            self.answer_poll(now, Vec::new());
        }
        self.poll = Some(OpenPoll {
            sequence: s,
            since: now,
        });
        self.flush_poll(now);
    }

    /// Feeds an event from outside the session's bytes.
    pub fn handle_event(&mut self, now: Instant, event: SessionEvent) {
        let now = self.tick(now);
        self.handle_timeout(now);
        let disconnected = matches!(self.state, SessionState::Disconnected { .. });
        match event {
            // Nothing more to lose once the transport is gone.
            SessionEvent::TransportLost | SessionEvent::IoFailure if disconnected => {}
            _ => self.close(now, event.close_reason(), None),
        }
    }

    /// Feeds a fault the transport found in the client's input before the
    /// session could see its bytes: a WebSocket message or an HTTP send body
    /// refused because it is over the limit before it was buffered, a text
    /// frame. The session closes with the violation's reason.
    pub fn handle_transport_violation(&mut self, now: Instant, violation: Violation) {
        let now = self.tick(now);
        self.handle_timeout(now);
        if self.state != SessionState::Connected {
            return;
        }
        self.close_violation(now, violation);
    }

    /// Resumes a disconnected session for a reconnection request (the
    /// registry has matched its token). Returns the response: 105 (and the
    /// resend is queued), 106, or 118 (the session then closes
    /// LOST_MESSAGES). A session that is not disconnected is not touched and
    /// `None` is returned.
    pub fn reconnect(
        &mut self,
        now: Instant,
        request: &ConnectionRequest,
    ) -> Option<ConnectionResponse> {
        let now = self.tick(now);
        self.handle_timeout(now);
        if !matches!(self.state, SessionState::Disconnected { .. }) {
            return None;
        }
        let rc = request.reconnect?;
        let decision = self.recovery.decide(
            rc.server_last,
            rc.client_oldest,
            self.received,
            self.config.allow_message_loss,
        );
        let response = match decision {
            RecoveryDecision::Fail(v) => {
                self.close_violation(now, v);
                return Some(ConnectionResponse::rejection(
                    ResponseCode::ReconnectionFailed,
                ));
            }
            RecoveryDecision::Resume {
                next_client,
                resend_from,
            } => {
                self.resend = self.recovery.resend_from(resend_from).cloned().collect();
                let value = i32::try_from(next_client).unwrap_or(i32::MAX);
                self.response(ResponseCode::Reconnected, value)
            }
            RecoveryDecision::ResumeWithLoss => {
                self.recovery.clear();
                self.resend.clear();
                // The client starts afresh: what it resends from `cs` is new.
                self.received = self
                    .received
                    .max(rc.client_oldest.saturating_sub(1))
                    .min(MAX_MESSAGE_NUMBER);
                self.response(
                    ResponseCode::ReconnectedWithLoss,
                    self.max_message_size_field(),
                )
            }
        };
        self.state = SessionState::Connected;
        self.transport = request.connection_type;
        self.reconnect_timeout = self.config.reconnect_wait(request.reconnect_timeout);
        self.sends = ReorderBuffer::new(&self.limits);
        self.next_poll = 0;
        self.poll = None;
        self.poll_closed_at = now;
        self.ping_outstanding = None;
        self.next_ping = self.config.ping_period.and_then(|p| now.checked_add(p));
        self.flush_poll(now);
        Some(response)
    }

    // ------------------------------------------------------------- internals

    fn handle_message(&mut self, now: Instant, message: Message) {
        match self.received.checked_add(1) {
            Some(n) if n <= MAX_MESSAGE_NUMBER => self.received = n,
            _ => return self.close(now, CloseReason::InternalError, None),
        }
        match message {
            Message::Close => self.close(now, CloseReason::ClosedByClient, None),
            Message::ServiceRequest(req) => {
                if let Err(v) = self.check_client_conversation(req.conversation) {
                    return self.close_violation(now, v);
                }
                if req.service == USER_PING {
                    self.enqueue(
                        now,
                        Message::ServiceResponse(ServiceResponse {
                            conversation: req.conversation,
                            payload: Bytes::new(),
                        }),
                    );
                } else {
                    self.deliver(Message::ServiceRequest(req));
                }
            }
            Message::ServiceResponse(resp) if self.ping_outstanding == Some(resp.conversation) => {
                self.ping_outstanding = None;
            }
            other => self.deliver(other),
        }
    }

    /// The client numbers its requests from 1 upward, so over an ordered
    /// transport each request's conversation id is above every earlier one:
    /// a repeat is a duplicated message (this is how the known client quirk
    /// of resending the wrong messages after a 105 shows). Ids may skip: the
    /// real client spends one on a request that fails locally while it is
    /// disconnected, so a gap after a recovery is not a lost message.
    fn check_client_conversation(&mut self, conversation: u64) -> Result<(), Violation> {
        if conversation == 0 {
            return Ok(());
        }
        if conversation <= self.last_client_conversation {
            return Err(Violation::new(
                ViolationKind::SequenceDuplicate(conversation),
                0,
            ));
        }
        self.last_client_conversation = conversation;
        Ok(())
    }

    fn deliver(&mut self, message: Message) {
        self.delivered = self.delivered.saturating_add(1);
        self.events.push_back(Event::Message(message));
    }

    /// Answers the open poll with `messages` (numbering queued ones).
    fn answer_poll(&mut self, now: Instant, messages: Vec<Message>) {
        let Some(poll) = self.poll.take() else {
            return;
        };
        self.poll_closed_at = now;
        match polling::encode_body(&messages) {
            Ok(body) => self.transmits.push_back(Transmit::PollResponse {
                sequence: poll.sequence,
                body,
            }),
            Err(_) => self.close(now, CloseReason::InternalError, None),
        }
    }

    /// HTTP: answers the open poll when something is waiting.
    fn flush_poll(&mut self, now: Instant) {
        if self.transport != ConnectionType::HttpPolling
            || self.state != SessionState::Connected
            || self.poll.is_none()
            || (self.resend.is_empty() && self.queue.is_empty())
        {
            return;
        }
        let mut batch: Vec<Message> = self.resend.drain(..).collect();
        while let Some(m) = self.queue.pop() {
            let weight = m.encoded_len();
            if self.recovery.record_weighed(m.clone(), weight).is_none() {
                return self.close(now, CloseReason::InternalError, None);
            }
            batch.push(m);
        }
        self.answer_poll(now, batch);
    }

    fn close_violation(&mut self, now: Instant, violation: Violation) {
        self.close_with(now, violation.close_reason(), Some(violation));
    }

    fn close(&mut self, now: Instant, reason: CloseReason, violation: Option<Violation>) {
        self.close_with(now, reason, violation);
    }

    fn close_with(&mut self, now: Instant, reason: CloseReason, violation: Option<Violation>) {
        let connected = match self.state {
            SessionState::Closed(_) => return,
            SessionState::Connected => true,
            SessionState::Disconnected { .. } => false,
        };
        let recoverable = reason.is_recoverable()
            || (reason == CloseReason::ClosedByClient && self.config.test_reconnect);
        if connected && recoverable && !self.reconnect_timeout.is_zero() {
            if let Some(until) = now.checked_add(self.reconnect_timeout) {
                self.state = SessionState::Disconnected { reason, until };
                self.poll = None;
                self.sends.clear();
                self.resend.clear();
                self.events.push_back(Event::Disconnected {
                    reason,
                    violation,
                    keep_until: until,
                });
                return;
            }
        }
        let mut abort_sent = false;
        if connected && sends_abort(reason) {
            let abort = Message::Abort;
            match self.transport {
                ConnectionType::WebSocket => {
                    self.transmits
                        .push_back(Transmit::WebSocket(abort.to_bytes()));
                    abort_sent = true;
                }
                ConnectionType::HttpPolling => {
                    if let Some(poll) = self.poll.take() {
                        if let Ok(body) = polling::encode_body(&[abort]) {
                            self.transmits.push_back(Transmit::PollResponse {
                                sequence: poll.sequence,
                                body,
                            });
                            abort_sent = true;
                        }
                    }
                }
            }
        }
        self.queue.clear();
        self.resend.clear();
        self.recovery.clear();
        self.sends.clear();
        self.poll = None;
        self.next_ping = None;
        self.state = SessionState::Closed(reason);
        self.close = Some(Close {
            reason,
            violation,
            abort_sent,
            at: now,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{service, TopicMessage};
    use proptest::prelude::*;

    fn request(query: &str) -> ConnectionRequest {
        ConnectionRequest::from_query(query).unwrap()
    }

    fn session_with(query: &str, limits: Limits, config: SessionConfig) -> (Session, Instant) {
        let t0 = Instant::now();
        let s = Session::new(
            t0,
            SessionId {
                server: 1,
                value: 2,
            },
            SessionToken::from_bytes(b"ABCDEFGHIJKLMNOPQRSTUVWX").unwrap(),
            &request(query),
            &limits,
            &config,
        );
        (s, t0)
    }

    fn ws(r_ms: u64, ping_ms: Option<u64>) -> (Session, Instant) {
        let config = SessionConfig {
            ping_period: ping_ms.map(Duration::from_millis),
            ..SessionConfig::default()
        };
        session_with(
            &format!("ty=WB&v=29&ca=8&r={r_ms}"),
            Limits::default(),
            config,
        )
    }

    fn http(config: SessionConfig) -> (Session, Instant) {
        http_with(Limits::default(), config)
    }

    fn http_with(limits: Limits, config: SessionConfig) -> (Session, Instant) {
        let t0 = Instant::now();
        let req =
            ConnectionRequest::from_headers([("ty", "B"), ("v", "29"), ("ca", "8"), ("r", "0")])
                .unwrap();
        let s = Session::new(
            t0,
            SessionId {
                server: 1,
                value: 2,
            },
            SessionToken::from_bytes(b"ABCDEFGHIJKLMNOPQRSTUVWX").unwrap(),
            &req,
            &limits,
            &config,
        );
        (s, t0)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn transmits(s: &mut Session) -> Vec<Transmit> {
        std::iter::from_fn(|| s.poll_transmit()).collect()
    }

    fn ws_out(s: &mut Session) -> Vec<Bytes> {
        transmits(s)
            .into_iter()
            .map(|t| match t {
                Transmit::WebSocket(b) => b,
                other => panic!("not a WebSocket transmit: {other:?}"),
            })
            .collect()
    }

    fn topic() -> Message {
        Message::TopicValue(TopicMessage {
            topic: 1,
            compressed: false,
            data: Bytes::from_static(b"v"),
        })
    }

    #[test]
    fn section_4_system_ping_every_period_and_the_answer_keeps_the_session() {
        let (mut s, t0) = ws(0, Some(1000));
        assert_eq!(s.poll_timeout(), Some(t0 + ms(1000)));
        s.handle_timeout(t0 + ms(999));
        assert!(ws_out(&mut s).is_empty());
        s.handle_timeout(t0 + ms(1000));
        assert_eq!(ws_out(&mut s), [Bytes::from_static(&[0x00, 0x37, 0x01])]);
        s.handle_websocket(t0 + ms(1500), Bytes::from_static(&[0x06, 0x01]));
        s.handle_timeout(t0 + ms(2000));
        assert_eq!(ws_out(&mut s), [Bytes::from_static(&[0x00, 0x37, 0x02])]);
        assert_eq!(s.state(), SessionState::Connected);
        assert_eq!(s.poll_event(), None, "a ping answer is not delivered");
    }

    #[test]
    fn section_1_client_unresponsive_no_ping_answer() {
        let (mut s, t0) = ws(0, Some(1000));
        s.handle_timeout(t0 + ms(1000));
        s.handle_timeout(t0 + ms(2000));
        let c = s.poll_close().unwrap();
        assert_eq!(c.reason, CloseReason::ClientUnresponsive);
        assert!(!c.abort_sent, "a recoverable reason sends no ABORT");
    }

    #[test]
    fn section_1_client_unresponsive_no_poll_open_in_time() {
        let (mut s, t0) = http(SessionConfig {
            ping_period: None,
            poll_timeout: ms(500),
            poll_gap: ms(1000),
            ..SessionConfig::default()
        });
        s.handle_http_poll(t0, "0");
        s.handle_timeout(t0 + ms(500));
        assert_eq!(
            transmits(&mut s),
            [Transmit::PollResponse {
                sequence: 0,
                body: String::new()
            }]
        );
        s.handle_timeout(t0 + ms(1499));
        assert_eq!(s.state(), SessionState::Connected);
        s.handle_timeout(t0 + ms(1500));
        assert_eq!(
            s.poll_close().unwrap().reason,
            CloseReason::ClientUnresponsive
        );
    }

    #[test]
    fn section_3_user_ping_is_answered_and_not_delivered() {
        let (mut s, t0) = ws(0, None);
        s.handle_websocket(t0, Bytes::from_static(&[0x00, 0x38, 0x05]));
        assert_eq!(ws_out(&mut s), [Bytes::from_static(&[0x06, 0x05])]);
        assert_eq!(s.poll_event(), None);
        assert_eq!((s.received(), s.sent()), (1, 1));
    }

    #[test]
    fn section_6_both_sides_count_close_request_counts_abort_does_not() {
        let (mut s, t0) = ws(0, None);
        assert!(s.send(t0, topic()));
        assert!(s.send(t0, topic()));
        assert_eq!(ws_out(&mut s).len(), 2);
        assert_eq!(s.sent(), 2);
        s.handle_websocket(t0, Bytes::from_static(&[0x04, 0, 0, 0, 1, b'x']));
        s.handle_websocket(t0, Bytes::from_static(&[0x1d]));
        assert_eq!(s.received(), 2, "CLOSE_REQUEST is counted");
        assert!(!s.send(t0, topic()), "nothing is queued after close");
        assert_eq!(s.sent(), 2);
        assert!(!s.send(t0, Message::Abort) && !s.send(t0, Message::Close));
    }

    #[test]
    fn section_5_close_request_closes_closed_by_client_without_abort() {
        let (mut s, t0) = ws(5000, None);
        s.handle_websocket(t0, Bytes::from_static(&[0x1d]));
        let c = s.poll_close().unwrap();
        assert_eq!(c.reason, CloseReason::ClosedByClient);
        assert!(!c.abort_sent);
        assert!(ws_out(&mut s).is_empty());
        assert!(s.poll_close().is_none(), "closes once");
    }

    #[test]
    fn section_5_server_closes_send_abort_where_the_protocol_sends_one() {
        for (event, abort) in [
            (SessionEvent::ClosedByController, true),
            (SessionEvent::Expired, true),
            (SessionEvent::Revoked, true),
            (SessionEvent::TakenOver, true),
            (SessionEvent::ResourceFailure, true),
            (SessionEvent::FailedOver, false),
            (SessionEvent::TransportLost, false),
            (SessionEvent::IoFailure, false),
        ] {
            let (mut s, t0) = ws(0, None);
            s.handle_event(t0, event);
            let c = s.poll_close().unwrap();
            assert_eq!(c.reason, event.close_reason());
            assert_eq!(c.abort_sent, abort, "{event:?}");
            let out = ws_out(&mut s);
            assert_eq!(out.len(), usize::from(abort));
            if abort {
                assert_eq!(out[0], Bytes::from_static(&[0x1c]));
            }
            // Nothing is sent after the close.
            s.handle_websocket(t0, Bytes::from_static(&[0x00, 0x38, 0x01]));
            s.send(t0, topic());
            s.handle_timeout(t0 + ms(100_000));
            assert!(ws_out(&mut s).is_empty());
        }
    }

    #[test]
    fn section_1_transport_loss_is_kept_for_r_ms_then_discarded() {
        for event in [SessionEvent::TransportLost, SessionEvent::IoFailure] {
            let (mut s, t0) = ws(1000, None);
            s.handle_event(t0 + ms(10), event);
            match s.poll_event() {
                Some(Event::Disconnected {
                    reason, keep_until, ..
                }) => {
                    assert_eq!(reason, event.close_reason());
                    assert_eq!(keep_until, t0 + ms(1010));
                }
                other => panic!("{other:?}"),
            }
            assert!(s.poll_close().is_none());
            assert_eq!(s.poll_timeout(), Some(t0 + ms(1010)));
            s.handle_timeout(t0 + ms(1009));
            assert!(s.poll_close().is_none());
            s.handle_timeout(t0 + ms(1010));
            assert_eq!(s.poll_close().unwrap().reason, event.close_reason());
        }
    }

    #[test]
    fn section_1_test_reconnect_makes_closed_by_client_recoverable() {
        let config = SessionConfig {
            test_reconnect: true,
            ..SessionConfig::default()
        };
        let (mut s, t0) = session_with("ty=WB&v=29&ca=8&r=1000", Limits::default(), config);
        s.handle_websocket(t0, Bytes::from_static(&[0x1d]));
        assert!(matches!(
            s.state(),
            SessionState::Disconnected {
                reason: CloseReason::ClosedByClient,
                ..
            }
        ));
        let r = s
            .reconnect(
                t0,
                &request("ty=WB&v=29&ca=8&r=1000&c=ABCDEFGHIJKLMNOPQRSTUVWX&cs=2&ss=0"),
            )
            .unwrap();
        assert_eq!(r.code, ResponseCode::Reconnected);
        assert_eq!(r.session.unwrap().value, 2);
    }

    #[test]
    fn section_6_reconnect_105_resends_only_what_the_client_has_not_seen() {
        let (mut s, t0) = ws(5000, None);
        for i in 0..3u32 {
            s.send(
                t0,
                Message::TopicValue(TopicMessage {
                    topic: i,
                    compressed: false,
                    data: Bytes::new(),
                }),
            );
        }
        assert_eq!(ws_out(&mut s).len(), 3);
        s.handle_event(t0, SessionEvent::TransportLost);
        let r = s
            .reconnect(
                t0,
                &request("ty=WB&v=29&ca=8&r=5000&c=ABCDEFGHIJKLMNOPQRSTUVWX&cs=1&ss=1"),
            )
            .unwrap();
        assert_eq!(r.code, ResponseCode::Reconnected);
        assert_eq!(r.session.unwrap().value, 1, "next client message number");
        let out = ws_out(&mut s);
        assert_eq!(out.len(), 2);
        assert_eq!(&out[0][..5], &[0x04, 0, 0, 0, 1]);
        assert_eq!(&out[1][..5], &[0x04, 0, 0, 0, 2]);
        assert_eq!(s.sent(), 3, "resent messages keep their numbers");
    }

    #[test]
    fn section_1_queue_limit_discards_the_queue_and_aborts() {
        let limits = Limits::builder().max_queue_messages(2).build().unwrap();
        let (mut s, t0) = session_with("ty=WB&v=29&ca=8&r=0", limits, SessionConfig::default());
        assert!(s.send(t0, topic()));
        assert!(s.send(t0, topic()));
        assert!(!s.send(t0, topic()));
        assert_eq!(s.memory().queued_messages, 0);
        let c = s.poll_close().unwrap();
        assert_eq!(c.reason, CloseReason::MessageQueueLimitReached);
        assert_eq!(ws_out(&mut s), [Bytes::from_static(&[0x1c])]);
    }

    #[test]
    fn section_1_message_too_large_is_discarded_and_closes() {
        let limits = Limits::builder().max_message_size(4).build().unwrap();
        let (mut s, t0) = session_with("ty=WB&v=29&ca=8&r=0", limits, SessionConfig::default());
        s.handle_websocket(t0, Bytes::from_static(&[0x04, 0, 0, 0, 1]));
        let c = s.poll_close().unwrap();
        assert_eq!(c.reason, CloseReason::MessageTooLarge);
        assert_eq!(s.delivered(), 0);
        assert!(s.poll_event().is_none());
    }

    #[test]
    fn section_1_transport_violation_closes_with_its_reason() {
        let (mut s, t0) = ws(5000, None);
        let v = Violation::new(
            ViolationKind::MessageTooLarge {
                size: 40_000,
                limit: 32 * 1024,
            },
            32 * 1024,
        );
        s.handle_transport_violation(t0, v);
        let c = s.poll_close().unwrap();
        assert_eq!(c.reason, CloseReason::MessageTooLarge);
        assert_eq!(c.violation, Some(v));
        assert!(c.abort_sent, "not recoverable: ABORT even with r > 0");
        assert_eq!(ws_out(&mut s), [Bytes::from_static(&[0x1c])]);
        // A closed session ignores later faults.
        s.handle_transport_violation(t0, v);
        assert!(s.poll_close().is_none());
    }

    #[test]
    fn section_1_shutdown_aborts_the_session() {
        let (mut s, t0) = ws(5000, None);
        s.handle_event(t0, SessionEvent::Shutdown);
        let c = s.poll_close().unwrap();
        assert_eq!(c.reason, CloseReason::Aborted);
        assert!(c.abort_sent);
    }

    #[test]
    fn section_1_client_abort_is_an_invalid_inbound_message() {
        let (mut s, t0) = ws(0, None);
        s.handle_websocket(t0, Bytes::from_static(&[0x1c]));
        let c = s.poll_close().unwrap();
        assert_eq!(c.reason, CloseReason::InvalidInboundMessage);
        assert_eq!(
            c.violation.unwrap().kind(),
            ViolationKind::UnexpectedMessage(28)
        );
    }

    #[test]
    fn section_1_unexpected_internal_state_closes_internal_error() {
        let (mut s, t0) = ws(0, None);
        s.received = MAX_MESSAGE_NUMBER;
        s.handle_websocket(t0, Bytes::from_static(&[0x04, 0, 0, 0, 1]));
        assert_eq!(s.poll_close().unwrap().reason, CloseReason::InternalError);
    }

    #[test]
    fn section_6_http_poll_is_held_until_a_message_or_its_timeout() {
        let (mut s, t0) = http(SessionConfig {
            ping_period: None,
            poll_timeout: ms(1000),
            poll_gap: ms(5000),
            ..SessionConfig::default()
        });
        s.handle_http_poll(t0, "0");
        assert!(transmits(&mut s).is_empty());
        s.send(t0 + ms(10), topic());
        match transmits(&mut s).as_slice() {
            [Transmit::PollResponse { sequence: 0, body }] => {
                let batch = polling::decode_body(body.as_bytes(), &Limits::default());
                assert_eq!(batch.messages, [topic()]);
            }
            other => panic!("{other:?}"),
        }
        s.handle_http_poll(t0 + ms(20), "1");
        s.handle_timeout(t0 + ms(1020));
        assert_eq!(
            transmits(&mut s),
            [Transmit::PollResponse {
                sequence: 1,
                body: String::new()
            }]
        );
    }

    #[test]
    fn section_6_http_send_real_client_user_ping_is_answered() {
        let (mut s, t0) = http(SessionConfig {
            ping_period: None,
            ..SessionConfig::default()
        });
        s.handle_http_send(t0, "0", Bytes::from_static(b"AAAAAgA4AQ=="));
        assert_eq!(transmits(&mut s), [Transmit::SendAck { sequence: 0 }]);
        s.handle_http_poll(t0, "0");
        match transmits(&mut s).as_slice() {
            [Transmit::PollResponse { sequence: 0, body }] => assert_eq!(body, "AAAAAQYB"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn section_6_out_of_order_send_is_acknowledged_only_when_its_turn_comes() {
        let (mut s, t0) = http(SessionConfig {
            ping_period: None,
            ..SessionConfig::default()
        });
        s.handle_http_send(t0, "2", request_body(3));
        s.handle_http_send(t0, "1", request_body(2));
        assert_eq!(transmits(&mut s), [], "held sends are not answered");
        assert_eq!(s.memory().held_sends, 2);
        assert_eq!(s.held_bytes(), 2 * request_body(2).len());
        s.handle_http_send(t0 + ms(5), "0", request_body(1));
        assert_eq!(
            transmits(&mut s),
            [0, 1, 2].map(|sequence| Transmit::SendAck { sequence })
        );
        assert_eq!((s.delivered(), s.held_bytes()), (3, 0));
    }

    #[test]
    fn section_6_a_held_send_whose_gap_never_fills_is_never_acknowledged() {
        let (mut s, t0) = http(SessionConfig {
            ping_period: None,
            ..SessionConfig::default()
        });
        s.handle_http_poll(t0, "0");
        s.handle_http_send(t0, "1", request_body(2));
        let wait = Limits::default().reorder_wait();
        s.handle_timeout(t0 + wait);
        let c = s.poll_close().expect("closed when the wait ran out");
        assert_eq!(c.reason, CloseReason::LostMessages);
        assert!(!transmits(&mut s)
            .iter()
            .any(|t| matches!(t, Transmit::SendAck { .. })));
        assert_eq!(s.held_bytes(), 0);
    }

    #[test]
    fn section_1_the_server_caps_the_reconnection_wait_a_client_asks_for() {
        let config = SessionConfig {
            max_reconnect_wait: Duration::from_secs(60),
            ..SessionConfig::default()
        };
        let t0 = Instant::now();
        let req =
            ConnectionRequest::from_query(&format!("ty=WB&v=29&ca=8&r={}", i64::MAX)).unwrap();
        let token = SessionToken::from_bytes(b"ABCDEFGHIJKLMNOPQRSTUVWX").unwrap();
        let id = SessionId {
            server: 1,
            value: 2,
        };
        let mut s = Session::new(t0, id, token, &req, &Limits::default(), &config);
        s.handle_event(t0 + ms(10), SessionEvent::TransportLost);
        assert_eq!(
            s.state(),
            SessionState::Disconnected {
                reason: CloseReason::ConnectionLost,
                until: t0 + ms(10) + Duration::from_secs(60)
            }
        );
        assert_eq!(s.waiting_since(), Some(t0 + ms(10)));
        // A wait under the cap is granted as asked.
        let short = ConnectionRequest::from_query("ty=WB&v=29&ca=8&r=5000").unwrap();
        let mut s = Session::new(t0, id, token, &short, &Limits::default(), &config);
        s.handle_event(t0, SessionEvent::TransportLost);
        assert_eq!(s.poll_timeout(), Some(t0 + ms(5000)));
    }

    #[test]
    fn section_1_an_ended_reconnection_wait_closes_as_if_it_ran_out() {
        let (mut s, t0) = ws(5000, None);
        s.end_reconnection_wait(t0);
        assert!(!s.is_closed(), "a connected session does not wait");
        s.handle_event(t0, SessionEvent::TransportLost);
        s.end_reconnection_wait(t0 + ms(1));
        let c = s.poll_close().unwrap();
        assert_eq!((c.reason, c.at), (CloseReason::ConnectionLost, t0 + ms(1)));
        assert_eq!(s.waiting_since(), None);
    }

    #[test]
    fn section_6_without_reconnection_sent_messages_are_counted_not_kept() {
        let (mut s, t0) = ws(0, None);
        for _ in 0..3 {
            assert!(s.send(t0, topic()));
        }
        assert_eq!(ws_out(&mut s).len(), 3);
        assert_eq!(s.sent(), 3);
        assert_eq!(s.memory().recovery_messages, 0);
        let (mut s, t0) = ws(1000, None);
        for _ in 0..3 {
            assert!(s.send(t0, topic()));
        }
        assert_eq!(ws_out(&mut s).len(), 3);
        assert_eq!(s.memory().recovery_messages, 3, "kept for a reconnection");
    }

    #[test]
    fn section_6_duplicate_send_closes_lost_messages() {
        let (mut s, t0) = http(SessionConfig::default());
        s.handle_http_send(t0, "0", Bytes::from_static(b"AAAAAgA4AQ=="));
        s.handle_http_send(t0, "0", Bytes::from_static(b"AAAAAgA4AQ=="));
        let c = s.poll_close().unwrap();
        assert_eq!(c.reason, CloseReason::LostMessages);
        assert_eq!(
            c.violation.unwrap().kind(),
            ViolationKind::SequenceDuplicate(0)
        );
    }

    #[test]
    fn section_6_duplicated_client_request_closes_lost_messages() {
        let (mut s, t0) = ws(0, None);
        s.handle_websocket(t0, Bytes::from_static(&[0x00, 0x03, 0x01]));
        s.handle_websocket(t0, Bytes::from_static(&[0x00, 0x03, 0x01]));
        assert_eq!(s.poll_close().unwrap().reason, CloseReason::LostMessages);
        assert_eq!(s.delivered(), 1);
    }

    #[test]
    fn time_never_goes_backwards_inside() {
        let (mut s, t0) = ws(0, Some(1000));
        s.handle_timeout(t0 + ms(1000));
        assert_eq!(s.now(), t0 + ms(1000));
        s.handle_websocket(t0, Bytes::from_static(&[0x06, 0x01]));
        assert_eq!(s.now(), t0 + ms(1000));
        assert_eq!(s.poll_timeout(), Some(t0 + ms(2000)));
    }

    fn request_body(conversation: u64) -> Bytes {
        let m = Message::ServiceRequest(ServiceRequest {
            service: 3,
            conversation,
            payload: Bytes::new(),
        });
        Bytes::from(polling::encode_body(&[m]).unwrap())
    }

    fn http_window(n: usize, wait_ms: u64) -> (Session, Instant) {
        let limits = Limits::builder()
            .reorder_window(u32::try_from(n).unwrap())
            .reorder_wait(ms(wait_ms))
            .build()
            .unwrap();
        let req =
            ConnectionRequest::from_headers([("ty", "B"), ("v", "29"), ("ca", "8"), ("r", "0")])
                .unwrap();
        let config = SessionConfig {
            ping_period: None,
            poll_gap: ms(1_000_000),
            ..SessionConfig::default()
        };
        let t0 = Instant::now();
        let s = Session::new(
            t0,
            SessionId {
                server: 1,
                value: 2,
            },
            SessionToken::from_bytes(b"ABCDEFGHIJKLMNOPQRSTUVWX").unwrap(),
            &req,
            &limits,
            &config,
        );
        (s, t0)
    }

    fn delivered_conversations(s: &mut Session) -> Vec<u64> {
        std::iter::from_fn(|| s.poll_event())
            .filter_map(|e| match e {
                Event::Message(Message::ServiceRequest(r)) => Some(r.conversation),
                _ => None,
            })
            .collect()
    }

    proptest! {
        /// Section 6: any permutation of N in-window sends, all arriving within
        /// the reorder wait, is accepted and delivered in order.
        #[test]
        fn section_6_any_permutation_of_in_window_sends_within_the_wait_is_delivered_in_order(
            (n, order) in (1usize..=16).prop_flat_map(|n| {
                (Just(n), Just((0..n as u64).collect::<Vec<_>>()).prop_shuffle())
            }),
            gaps in proptest::collection::vec(0u64..60, 16),
        ) {
            // Window n - 1 covers every number of the permutation; the sends
            // all arrive within 16 * 59 ms < the wait.
            let (mut s, t0) = http_window(n.saturating_sub(1), 1000);
            let mut at = 0;
            for (i, seq) in order.iter().enumerate() {
                at += gaps[i];
                s.handle_http_send(t0 + ms(at), &seq.to_string(), request_body(seq + 1));
                prop_assert_eq!(s.state(), SessionState::Connected);
            }
            prop_assert_eq!(delivered_conversations(&mut s), (1..=n as u64).collect::<Vec<_>>());
            prop_assert!(s.poll_close().is_none());
            prop_assert_eq!(s.memory().held_sends, 0);
        }

        /// Section 6: a duplicate send closes LOST_MESSAGES at once; a gap that
        /// is never filled closes LOST_MESSAGES when the wait runs out.
        #[test]
        fn section_6_any_duplicate_or_gap_that_outlives_the_wait_closes_lost_messages(
            (n, order) in (2usize..=12).prop_flat_map(|n| {
                (Just(n), Just((0..n as u64).collect::<Vec<_>>()).prop_shuffle())
            }),
            pick in any::<proptest::sample::Index>(),
            duplicate in any::<bool>(),
        ) {
            let (mut s, t0) = http_window(n, 500);
            let victim = order[pick.index(n)];
            for seq in &order {
                if !duplicate && *seq == victim {
                    continue;
                }
                s.handle_http_send(t0, &seq.to_string(), request_body(seq + 1));
            }
            if duplicate {
                prop_assert!(s.poll_close().is_none());
                s.handle_http_send(t0 + ms(1), &victim.to_string(), request_body(victim + 1));
                let c = s.poll_close().unwrap();
                prop_assert_eq!(c.reason, CloseReason::LostMessages);
            } else if victim + 1 == n as u64 {
                // The last one missing leaves no gap behind it.
                prop_assert!(s.poll_close().is_none());
            } else {
                s.handle_timeout(t0 + ms(499));
                prop_assert!(s.poll_close().is_none());
                s.handle_timeout(t0 + ms(500));
                let c = s.poll_close().unwrap();
                prop_assert_eq!(c.reason, CloseReason::LostMessages);
                prop_assert_eq!(delivered_conversations(&mut s), (1..=victim).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn service_ping_constants_match_section_3() {
        assert_eq!((service::SYSTEM_PING, service::USER_PING), (55, 56));
    }

    fn close_for(reason: CloseReason) -> Close {
        Close {
            reason,
            violation: None,
            abort_sent: false,
            at: Instant::now(),
        }
    }

    #[test]
    fn section_5_close_frame_after_a_final_close_not_after_a_recoverable_one_or_a_failover() {
        for (reason, frame) in [
            (CloseReason::ClosedByController, true),
            (CloseReason::ClosedByClient, true),
            (CloseReason::LostMessages, true),
            (CloseReason::ConnectionLost, false),
            (CloseReason::ClientUnresponsive, false),
            (CloseReason::FailedOver, false),
        ] {
            assert_eq!(close_for(reason).sends_close_frame(), frame, "{reason}");
        }
    }

    #[test]
    fn close_decision_prints_its_reason_fault_and_abort() {
        assert_eq!(
            close_for(CloseReason::ClosedByClient).to_string(),
            "CLOSED_BY_CLIENT (4)"
        );
        let c = Close {
            violation: Some(Violation::new(ViolationKind::SequenceDuplicate(3), 0)),
            abort_sent: true,
            ..close_for(CloseReason::LostMessages)
        };
        assert_eq!(
            c.to_string(),
            "LOST_MESSAGES (9): duplicate sequence number 3 (ABORT sent)"
        );
    }

    #[test]
    fn websocket_input_is_ignored_unless_connected_over_websocket() {
        let ping = Bytes::from_static(&[0x00, 0x38, 0x01]); // USER_PING, conversation 1
                                                            // An HTTP polling session takes no WebSocket message.
        let (mut s, t0) = http(SessionConfig {
            ping_period: None,
            ..SessionConfig::default()
        });
        s.handle_websocket(t0, ping.clone());
        s.handle_websocket(t0, Bytes::from_static(&[0x1d]));
        assert_eq!((s.received(), s.state()), (0, SessionState::Connected));
        // A WebSocket session waiting for a reconnection neither.
        let (mut s, t0) = ws(5000, None);
        s.handle_event(t0, SessionEvent::TransportLost);
        s.handle_websocket(t0, ping);
        s.handle_websocket(t0, Bytes::from_static(&[0x1d]));
        assert_eq!(s.received(), 0);
        assert!(matches!(s.state(), SessionState::Disconnected { .. }));
        assert_eq!(s.memory().queued_messages, 0);
    }

    /// A send body (base64 of a batch of one service request) whose batch
    /// length is a multiple of 3, so that its text has no padding.
    fn unpadded_request_body(conversation: u64) -> Bytes {
        (0..3)
            .map(|n| {
                let m = Message::ServiceRequest(ServiceRequest {
                    service: 3,
                    conversation,
                    payload: Bytes::from(vec![b'x'; n]),
                });
                Bytes::from(polling::encode_body(&[m]).unwrap())
            })
            .find(|body| !body.ends_with(b"="))
            .unwrap()
    }

    #[test]
    fn section_6_a_send_of_exactly_the_batch_text_limit_is_taken_and_one_over_is_not_held() {
        let body = unpadded_request_body(1);
        let limits = Limits::builder()
            .max_batch_size(body.len() / 4 * 3)
            .build()
            .unwrap();
        assert_eq!(limits.max_batch_text(), body.len());
        let config = SessionConfig {
            ping_period: None,
            ..SessionConfig::default()
        };
        let (mut s, t0) = http_with(limits.clone(), config.clone());
        s.handle_http_send(t0, "0", body);
        assert_eq!(transmits(&mut s), [Transmit::SendAck { sequence: 0 }]);
        assert_eq!((s.delivered(), s.poll_close()), (1, None));
        // Four bytes of text more, out of order: refused before it is held.
        let over = unpadded_request_body(2).len() + 4;
        let (mut s, t0) = http_with(limits, config);
        s.handle_http_send(t0, "1", Bytes::from(vec![b'A'; over]));
        let c = s.poll_close().unwrap();
        assert_eq!(c.reason, CloseReason::MessageTooLarge);
        assert_eq!(s.memory().held_sends, 0);
    }

    #[test]
    fn section_1_a_send_cut_off_over_the_batch_limit_closes_message_too_large() {
        let limits = Limits::builder().max_batch_size(30).build().unwrap();
        let config = SessionConfig {
            ping_period: None,
            ..SessionConfig::default()
        };
        let (mut s, t0) = http_with(limits.clone(), config.clone());
        s.handle_http_poll(t0, "0");
        s.handle_http_send_too_large(t0);
        let c = s.poll_close().unwrap();
        assert_eq!(c.reason, CloseReason::MessageTooLarge);
        let v = c.violation.unwrap();
        assert_eq!(
            (v.kind(), v.offset()),
            (ViolationKind::BatchTooLarge { limit: 30 }, 40)
        );
        assert!(c.abort_sent, "the open poll carries the ABORT");
        // Not for a WebSocket session, nor one waiting for a reconnection.
        let (mut s, t0) = ws(5000, None);
        s.handle_http_send_too_large(t0);
        assert_eq!((s.state(), s.poll_close()), (SessionState::Connected, None));
        s.handle_event(t0, SessionEvent::TransportLost);
        s.handle_http_send_too_large(t0);
        assert!(matches!(s.state(), SessionState::Disconnected { .. }));
        let req =
            ConnectionRequest::from_headers([("ty", "B"), ("v", "29"), ("ca", "8"), ("r", "5000")])
                .unwrap();
        let mut h = Session::new(t0, s.id(), s.token(), &req, &limits, &config);
        h.handle_event(t0, SessionEvent::TransportLost);
        h.handle_http_send_too_large(t0);
        h.handle_http_poll(t0, "0");
        assert!(matches!(h.state(), SessionState::Disconnected { .. }));
        assert_eq!(h.poll_close(), None);
    }

    #[test]
    fn section_6_a_repeated_poll_is_a_duplicate_and_a_skipped_one_a_gap() {
        let config = SessionConfig {
            ping_period: None,
            ..SessionConfig::default()
        };
        let (mut s, t0) = http(config.clone());
        s.handle_http_poll(t0, "0");
        s.handle_http_poll(t0, "0");
        let c = s.poll_close().unwrap();
        assert_eq!(
            (c.reason, c.violation.unwrap().kind()),
            (
                CloseReason::LostMessages,
                ViolationKind::SequenceDuplicate(0)
            )
        );
        let (mut s, t0) = http(config);
        s.handle_http_poll(t0, "0");
        s.handle_http_poll(t0, "2");
        let c = s.poll_close().unwrap();
        assert_eq!(
            c.violation.unwrap().kind(),
            ViolationKind::SequenceGap {
                sequence: 2,
                expected: 1
            }
        );
    }

    #[test]
    fn section_6_a_poll_on_a_websocket_session_is_ignored() {
        let (mut s, t0) = ws(0, None);
        s.handle_http_poll(t0, "5");
        s.handle_http_send(t0, "5", request_body(1));
        assert_eq!((s.state(), s.poll_close()), (SessionState::Connected, None));
        assert!(transmits(&mut s).is_empty());
    }

    #[test]
    fn section_1_losing_the_transport_again_while_waiting_changes_nothing() {
        let (mut s, t0) = ws(5000, None);
        s.handle_event(t0, SessionEvent::TransportLost);
        let waiting = s.state();
        assert!(s.poll_event().is_some());
        s.handle_event(t0 + ms(10), SessionEvent::TransportLost);
        s.handle_event(t0 + ms(20), SessionEvent::IoFailure);
        assert_eq!((s.state(), s.poll_close()), (waiting, None));
        assert_eq!(s.poll_event(), None);
        // Any other event ends the wait.
        s.handle_event(t0 + ms(30), SessionEvent::Revoked);
        assert_eq!(s.poll_close().unwrap().reason, CloseReason::Revoked);
    }

    #[test]
    fn section_4_a_service_response_to_another_conversation_is_no_ping_answer() {
        let (mut s, t0) = ws(0, Some(1000));
        s.handle_timeout(t0 + ms(1000));
        assert_eq!(ws_out(&mut s), [Bytes::from_static(&[0x00, 0x37, 0x01])]);
        // A response to conversation 9 while the ping (1) is outstanding.
        s.handle_websocket(t0 + ms(1500), Bytes::from_static(&[0x06, 0x09]));
        assert!(matches!(
            s.poll_event(),
            Some(Event::Message(Message::ServiceResponse(ServiceResponse {
                conversation: 9,
                ..
            })))
        ));
        s.handle_timeout(t0 + ms(2000));
        assert_eq!(
            s.poll_close().map(|c| c.reason),
            Some(CloseReason::ClientUnresponsive)
        );
    }
}
