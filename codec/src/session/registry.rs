//! The session registry (sans-IO, owned by the server): connection attempts,
//! reconnection, the id, token and principal index, the client limit, the
//! timers of every session and the queue of close decisions.
//!
//! It has the shape of quinn-proto's `Endpoint`. A connection request goes to
//! [`Registry::handle_connect`], which either answers it at once
//! ([`Connect::Answered`]) or hands back an [`Incoming`]: a new session the
//! server may [`accept`](Registry::accept), once it has checked the
//! credentials (possibly asynchronously, off its event loop), or
//! [`refuse`](Registry::refuse). The registry never checks a password.
//!
//! Its decisions, with the response code of section 2 and the close reason of
//! section 1 for the refused attempt:
//!
//! | request | decided by | response | attempt closes |
//! |---|---|---|---|
//! | missing or malformed field, bad credentials encoding, bad `sp` | `handle_connect` | 115 | ABORTED |
//! | unsupported version | `handle_connect` | 102 | ABORTED |
//! | reconnect with an unknown or already-closed token | `handle_connect` | 117 | ABORTED |
//! | reconnect (`cs`/`ss`) without a token | `handle_connect` | 115 | CONNECTION_LOST |
//! | (re)connect for a session that is still connected | `handle_connect` | 115 | CONNECTION_LOST |
//! | reconnect whose gap cannot be covered | `handle_connect` | 118 | LOST_MESSAGES (the session too) |
//! | client limit reached, no session waiting for a reconnection | `handle_connect`, again at `accept` | 113 | CONNECTION_LOST |
//! | the injected random source failed | `accept` | 119 | INTERNAL_ERROR |
//! | the server refuses ([`Refuse`]) | `refuse` | 116 or 119 | CONNECTION_LOST or INTERNAL_ERROR |
//!
//! A session waiting for a reconnection counts against the client limit, but
//! it cannot lock new clients out: when the registry is full, `accept` ends
//! the wait of the session that has waited longest (it closes with the
//! reason it was lost for, CONNECTION_LOST as a rule, as if its wait had run
//! out) before anyone is answered 113. No session waits longer than
//! [`SessionConfig::max_reconnect_wait`], whatever its client asked for.
//!
//! The registry also keeps the server-wide account of the bytes sessions
//! hold in their reorder and recovery buffers, against
//! [`SessionConfig::max_buffered_bytes`]: a session whose held data grows
//! past what is left closes MESSAGE_QUEUE_LIMIT_REACHED, dropping it (see
//! [`ViolationKind::HeldDataOverBudget`](crate::ViolationKind::HeldDataOverBudget)).
//!
//! Sessions of one principal coexist. With
//! [`SessionConfig::principal_takeover`] on, an accepted session closes the
//! other live sessions of its principal SESSION_TAKEN_OVER.
//!
//! Every change to a session goes through a [`SessionMut`] (from
//! [`Registry::session_mut`]); when it is dropped the registry files the
//! session's next deadline in its timer heap and, once, its close decision,
//! so [`poll_timeout`](Registry::poll_timeout) and
//! [`poll_close`](Registry::poll_close) never scan the sessions.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::ops::{Deref, DerefMut};
use std::time::Instant;

use crate::session::handshake::ConnectionType;
use crate::session::handshake::{ConnectionRequest, ConnectionResponse, ResponseCode};
use crate::session::ids::{RandomSource, SessionId, SessionToken};
use crate::session::state::{
    sends_abort, Close, HttpClose, Session, SessionConfig, SessionEvent, SessionState,
};
use crate::{CloseReason, Limits, Violation};

/// A connection attempt that was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The close reason for the attempt.
    pub reason: CloseReason,
    /// The fault in the request, when that was the cause.
    pub violation: Option<Violation>,
}

/// What the registry decided on a connection request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "the response must be sent, and a refused attempt closed"]
pub struct ConnectOutcome {
    /// The response to send: the first WebSocket message, or the body of the
    /// answer to the HTTP connect.
    pub response: ConnectionResponse,
    /// The session now attached to this connection.
    pub session: Option<SessionToken>,
    /// The attempt was refused: close the connection after the response.
    pub refused: Option<Refusal>,
    /// A reconnection found its session still attached to an earlier
    /// transport (a polling client's drop is invisible, a WebSocket may be
    /// half open: docs/protocol.md section 9 (c)). The session treated that
    /// transport as lost first (its `Event::Disconnected` is queued): the
    /// server drains the session's events, dropping the old transport,
    /// before it attaches this one.
    pub displaced: bool,
    /// A session that waited for a reconnection and was closed to make room
    /// for this one (the registry was full): the server hands its close
    /// decision out as for any other close.
    pub ended_wait: Option<SessionToken>,
}

impl ConnectOutcome {
    fn refuse(code: ResponseCode, reason: CloseReason, violation: Option<Violation>) -> Self {
        ConnectOutcome {
            response: ConnectionResponse::rejection(code),
            session: None,
            refused: Some(Refusal { reason, violation }),
            displaced: false,
            ended_wait: None,
        }
    }
}

/// Why the server refuses an [`Incoming`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refuse {
    /// The credentials are wrong: 116, the attempt closes CONNECTION_LOST.
    BadCredentials,
    /// The server cannot take sessions now (it is stopping, or its own
    /// resources ran out): 119, the attempt closes INTERNAL_ERROR.
    NotReady,
    /// The server could not check the credentials in time (its checks are
    /// saturated, or the client's address made too many attempts): 113,
    /// the attempt closes CONNECTION_LOST, as at the client limit.
    Busy,
}

/// A request for a new session that passed every check the registry can make
/// on its own. Hand it back to [`Registry::accept`] or [`Registry::refuse`].
#[derive(Debug)]
#[must_use = "an Incoming must be accepted or refused"]
pub struct Incoming {
    request: ConnectionRequest,
}

impl Incoming {
    /// The parsed request: the claimed principal, the credentials to check,
    /// the session properties.
    pub fn request(&self) -> &ConnectionRequest {
        &self.request
    }
}

/// The registry's first answer to a connection request.
#[derive(Debug)]
#[must_use = "an Incoming must be accepted or refused, an answer sent"]
pub enum Connect {
    /// A new session the server decides on.
    Incoming(Incoming),
    /// Decided by the registry: a fault, a reconnection, the client limit.
    Answered(ConnectOutcome),
}

struct Slot {
    session: Session,
    /// The deadline filed in the timer heap for this session.
    deadline: Option<Instant>,
    /// Not closed yet: counted in `live`, close not yet queued.
    live: bool,
    /// Since when the session waits for a reconnection, as filed in
    /// `Books::waiting`.
    waiting: Option<Instant>,
    /// The bytes the session held at its last refresh, as counted in
    /// `Books::held_bytes`.
    held: usize,
}

/// The registry's books a [`SessionMut`] updates when dropped.
#[derive(Default)]
struct Books {
    timers: BinaryHeap<Reverse<(Instant, SessionToken)>>,
    closing: VecDeque<SessionToken>,
    live: usize,
    /// Sessions waiting for a reconnection, longest-waiting first.
    waiting: BTreeSet<(Instant, SessionToken)>,
    /// The bytes all sessions hold in reorder and recovery buffers.
    held_bytes: usize,
    /// The most `held_bytes` may reach.
    budget: usize,
}

impl Books {
    /// Files the session's held bytes (closing it when they would pass the
    /// budget), its deadline, its wait for a reconnection and, once, its
    /// close.
    fn refresh(&mut self, token: SessionToken, slot: &mut Slot) {
        let others = self.held_bytes.saturating_sub(slot.held);
        let mut held = slot.session.held_bytes();
        if held > slot.held && others.checked_add(held).is_none_or(|t| t > self.budget) {
            // Only a session whose held data grew is closed: the one that
            // asked for more than is left.
            slot.session.close_over_budget(self.budget);
            held = slot.session.held_bytes();
        }
        slot.held = held;
        // `others` plus what this session held before fitted the budget,
        // and a growth past it was undone just above.
        self.held_bytes = others.saturating_add(held);
        let waiting = slot.session.waiting_since();
        if waiting != slot.waiting {
            if let Some(since) = slot.waiting {
                self.waiting.remove(&(since, token));
            }
            if let Some(since) = waiting {
                self.waiting.insert((since, token));
            }
            slot.waiting = waiting;
        }
        let deadline = slot.session.poll_timeout();
        if deadline != slot.deadline {
            slot.deadline = deadline;
            if let Some(t) = deadline {
                // The old entry stays in the heap and is skipped when popped.
                self.timers.push(Reverse((t, token)));
            }
        }
        if slot.live && slot.session.is_closed() {
            slot.live = false;
            self.live = self.live.saturating_sub(1);
            self.closing.push_back(token);
        }
    }
}

/// A session borrowed from the registry to drive it. Dereferences to
/// [`Session`]; when dropped, the registry takes note of the session's next
/// deadline and of its close decision.
pub struct SessionMut<'a> {
    token: SessionToken,
    slot: &'a mut Slot,
    books: &'a mut Books,
}

impl Deref for SessionMut<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.slot.session
    }
}

impl DerefMut for SessionMut<'_> {
    fn deref_mut(&mut self) -> &mut Session {
        &mut self.slot.session
    }
}

impl Drop for SessionMut<'_> {
    fn drop(&mut self) {
        self.books.refresh(self.token, self.slot);
    }
}

impl std::fmt::Debug for SessionMut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SessionMut").field(&self.token).finish()
    }
}

/// All sessions of one server. See the [module documentation](self).
pub struct Registry<R> {
    limits: Limits,
    config: SessionConfig,
    random: R,
    sessions: HashMap<SessionToken, Slot>,
    by_id: HashMap<SessionId, SessionToken>,
    by_principal: HashMap<String, BTreeSet<SessionToken>>,
    books: Books,
}

impl<R> std::fmt::Debug for Registry<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("sessions", &self.sessions.len())
            .field("live", &self.books.live)
            .field("principals", &self.by_principal.len())
            .finish_non_exhaustive()
    }
}

impl<R: RandomSource> Registry<R> {
    /// An empty registry that mints ids and tokens from `random` (a server
    /// passes the operating system's secure source).
    pub fn new(limits: Limits, config: SessionConfig, random: R) -> Self {
        let budget = config.max_buffered_bytes;
        Registry {
            limits,
            config,
            random,
            sessions: HashMap::new(),
            by_id: HashMap::new(),
            by_principal: HashMap::new(),
            books: Books {
                budget,
                ..Books::default()
            },
        }
    }

    /// The limits sessions are created with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The settings sessions are created with.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Takes a connection request, as parsed by
    /// [`ConnectionRequest::from_query`] or
    /// [`ConnectionRequest::from_headers`] (a parse fault is answered too).
    /// A reconnection is decided here; a new session comes back as an
    /// [`Incoming`] for the server to accept or refuse.
    pub fn handle_connect(
        &mut self,
        now: Instant,
        request: Result<ConnectionRequest, Violation>,
    ) -> Connect {
        self.reap();
        let request = match request {
            Ok(r) => r,
            Err(v) => {
                return Connect::Answered(ConnectOutcome::refuse(
                    ResponseCode::for_violation(&v),
                    v.close_reason(),
                    Some(v),
                ))
            }
        };
        match request.reconnect {
            Some(rc) => Connect::Answered(match rc.token {
                None => ConnectOutcome::refuse(
                    ResponseCode::ProtocolError,
                    CloseReason::ConnectionLost,
                    None,
                ),
                Some(token) => self.reconnect(now, token, &request),
            }),
            None if self.at_limit(request.principal.as_deref())
                && self.books.waiting.is_empty() =>
            {
                Connect::Answered(ConnectOutcome::refuse(
                    ResponseCode::ClientLimit,
                    CloseReason::ConnectionLost,
                    None,
                ))
            }
            None => Connect::Incoming(Incoming { request }),
        }
    }

    /// Whether a new session of `principal` would exceed the client limit
    /// (a takeover frees the slots it closes).
    fn at_limit(&self, principal: Option<&str>) -> bool {
        let freed = if self.config.principal_takeover {
            principal.map_or(0, |p| self.live_of(p).count())
        } else {
            0
        };
        self.books.live.saturating_sub(freed) >= self.limits.max_clients()
    }

    /// Ends the wait of the session that has waited longest for a
    /// reconnection (see the [module documentation](self)) and returns it;
    /// `None` when no session waits.
    fn end_longest_wait(&mut self, now: Instant) -> Option<SessionToken> {
        let &(_, token) = self.books.waiting.first()?;
        let held = self
            .session_mut(&token)
            .map(|mut s| s.end_reconnection_wait(now))
            .is_some();
        if !held {
            // Not reachable: a waiting session is held. Forget the entry.
            self.books.waiting.pop_first();
        }
        Some(token)
    }

    /// The bytes all sessions hold in reorder and recovery buffers (see
    /// [`SessionConfig::max_buffered_bytes`]).
    pub fn held_bytes(&self) -> usize {
        self.books.held_bytes
    }

    fn live_of<'a>(&'a self, principal: &str) -> impl Iterator<Item = SessionToken> + 'a {
        self.by_principal
            .get(principal)
            .into_iter()
            .flatten()
            .copied()
            .filter(|t| self.sessions.get(t).is_some_and(|s| s.live))
    }

    fn reconnect(
        &mut self,
        now: Instant,
        token: SessionToken,
        request: &ConnectionRequest,
    ) -> ConnectOutcome {
        let Some(mut session) = self.session_mut(&token) else {
            return ConnectOutcome::refuse(
                ResponseCode::UnknownSession,
                CloseReason::Aborted,
                None,
            );
        };
        // Bring the session up to date first: its reconnection wait may be over.
        session.handle_timeout(now);
        // A reconnection naming a session that is still connected is the
        // client saying its old connection is gone (docs/protocol.md
        // section 9 (c)): that transport is lost, then the session resumes.
        let displaced = session.state() == SessionState::Connected;
        if displaced {
            session.handle_event(now, SessionEvent::TransportLost);
        }
        match session.state() {
            SessionState::Closed(_) => {
                ConnectOutcome::refuse(ResponseCode::UnknownSession, CloseReason::Aborted, None)
            }
            SessionState::Connected => ConnectOutcome::refuse(
                ResponseCode::ProtocolError,
                CloseReason::ConnectionLost,
                None,
            ),
            SessionState::Disconnected { .. } => match session.reconnect(now, request) {
                Some(response) if response.code == ResponseCode::ReconnectionFailed => {
                    ConnectOutcome {
                        response,
                        session: None,
                        refused: Some(Refusal {
                            reason: CloseReason::LostMessages,
                            violation: session.close_decision().and_then(|c| c.violation),
                        }),
                        displaced,
                        ended_wait: None,
                    }
                }
                Some(response) => ConnectOutcome {
                    response,
                    session: Some(token),
                    refused: None,
                    displaced,
                    ended_wait: None,
                },
                None => ConnectOutcome::refuse(
                    ResponseCode::ProtocolError,
                    CloseReason::InternalError,
                    None,
                ),
            },
        }
    }

    /// Opens the session `incoming` asked for, for `principal` (the one the
    /// server authenticated; `None`: anonymous). The client limit is checked
    /// again: other sessions may have opened while the server decided.
    pub fn accept(
        &mut self,
        now: Instant,
        incoming: Incoming,
        principal: Option<String>,
    ) -> ConnectOutcome {
        self.reap();
        let mut request = incoming.request;
        request.principal = principal;
        // The client limit keeps live sessions at or under it, so ending one
        // wait is enough to make room.
        let mut ended_wait = None;
        if self.at_limit(request.principal.as_deref()) {
            ended_wait = self.end_longest_wait(now);
        }
        if self.at_limit(request.principal.as_deref()) {
            let mut refused = ConnectOutcome::refuse(
                ResponseCode::ClientLimit,
                CloseReason::ConnectionLost,
                None,
            );
            refused.ended_wait = ended_wait;
            return refused;
        }
        let minted = SessionId::generate(self.config.server_id, &mut self.random)
            .and_then(|id| SessionToken::generate(&mut self.random).map(|t| (id, t)));
        let Ok((id, token)) = minted else {
            return ConnectOutcome::refuse(
                ResponseCode::ServerNotReady,
                CloseReason::InternalError,
                None,
            );
        };
        if self.sessions.contains_key(&token) || self.by_id.contains_key(&id) {
            // 144 random bits collided: treat as a failed random source.
            return ConnectOutcome::refuse(
                ResponseCode::ServerNotReady,
                CloseReason::InternalError,
                None,
            );
        }
        if self.config.principal_takeover {
            if let Some(p) = &request.principal {
                let old: Vec<SessionToken> = self.live_of(p).collect();
                for t in old {
                    if let Some(mut s) = self.session_mut(&t) {
                        s.handle_event(now, SessionEvent::TakenOver);
                    }
                }
            }
        }
        let session = Session::new(now, id, token, &request, &self.limits, &self.config);
        let response = session.connected_response();
        if let Some(p) = request.principal {
            self.by_principal.entry(p).or_default().insert(token);
        }
        self.by_id.insert(id, token);
        let mut slot = Slot {
            session,
            deadline: None,
            live: true,
            waiting: None,
            held: 0,
        };
        self.books.live += 1;
        self.books.refresh(token, &mut slot);
        self.sessions.insert(token, slot);
        ConnectOutcome {
            response,
            session: Some(token),
            refused: None,
            displaced: false,
            ended_wait,
        }
    }

    /// Refuses the session `incoming` asked for.
    pub fn refuse(&mut self, incoming: Incoming, why: Refuse) -> ConnectOutcome {
        drop(incoming);
        match why {
            Refuse::BadCredentials => ConnectOutcome::refuse(
                ResponseCode::AuthenticationFailed,
                CloseReason::ConnectionLost,
                None,
            ),
            Refuse::NotReady => ConnectOutcome::refuse(
                ResponseCode::ServerNotReady,
                CloseReason::InternalError,
                None,
            ),
            Refuse::Busy => {
                ConnectOutcome::refuse(ResponseCode::ClientLimit, CloseReason::ConnectionLost, None)
            }
        }
    }

    /// The session with this token (closed ones stay until drained).
    pub fn session(&self, token: &SessionToken) -> Option<&Session> {
        self.sessions.get(token).map(|s| &s.session)
    }

    /// The session with this token, to drive it.
    pub fn session_mut(&mut self, token: &SessionToken) -> Option<SessionMut<'_>> {
        let slot = self.sessions.get_mut(token)?;
        Some(SessionMut {
            token: *token,
            slot,
            books: &mut self.books,
        })
    }

    /// How to answer an HTTP polling request (a poll or a send) for the
    /// session `token`: `None` when the session takes it, else the answer
    /// for a session that is unknown or forgotten (ABORT: the client used an
    /// unknown id), closed, waiting for a reconnection, or not on HTTP.
    pub fn http_gate(&self, token: &SessionToken) -> Option<HttpClose> {
        let Some(s) = self.session(token) else {
            return Some(HttpClose::Abort);
        };
        match s.state() {
            SessionState::Closed(reason) if sends_abort(reason) => Some(HttpClose::Abort),
            SessionState::Closed(_) => Some(HttpClose::Drop),
            SessionState::Disconnected { .. } => Some(HttpClose::Reconnect),
            SessionState::Connected if s.transport() != ConnectionType::HttpPolling => {
                Some(HttpClose::Drop)
            }
            SessionState::Connected => None,
        }
    }

    /// The token of the session with this id.
    pub fn token_of(&self, id: SessionId) -> Option<SessionToken> {
        self.by_id.get(&id).copied()
    }

    /// The sessions held for `principal` (closed ones until they are drained).
    pub fn sessions_of(&self, principal: &str) -> impl Iterator<Item = SessionToken> + '_ {
        self.by_principal
            .get(principal)
            .into_iter()
            .flatten()
            .copied()
    }

    /// The tokens of every session held (closed ones until they are drained).
    pub fn tokens(&self) -> impl Iterator<Item = SessionToken> + '_ {
        self.sessions.keys().copied()
    }

    /// Sessions not closed for good.
    pub fn live_sessions(&self) -> usize {
        self.books.live
    }

    /// The earliest time any session needs waking: call
    /// [`handle_timeout`](Self::handle_timeout) then. O(log n): stale heap
    /// entries are dropped here.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(&Reverse((t, token))) = self.books.timers.peek() {
            if self
                .sessions
                .get(&token)
                .is_some_and(|s| s.deadline == Some(t))
            {
                return Some(t);
            }
            self.books.timers.pop();
        }
        None
    }

    /// Runs the timers due at `now` and returns the sessions they woke:
    /// drain their transmits (a ping, a poll answer, the ABORT) and events,
    /// then take the closes from [`poll_close`](Self::poll_close).
    #[must_use = "the woken sessions have transmits to drain"]
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<SessionToken> {
        let mut woken = Vec::new();
        let mut due = Vec::new();
        while let Some(&Reverse((t, token))) = self.books.timers.peek() {
            if t > now {
                break;
            }
            self.books.timers.pop();
            due.push((t, token));
        }
        // A deadline a session files again at or before `now` waits for the
        // next call: it never runs twice in this one.
        for (t, token) in due {
            let Some(slot) = self.sessions.get_mut(&token) else {
                continue;
            };
            if slot.deadline != Some(t) {
                continue; // superseded
            }
            slot.deadline = None;
            slot.session.handle_timeout(now);
            self.books.refresh(token, slot);
            woken.push(token);
        }
        // Keep the heap within a bound of the number of sessions.
        if self.books.timers.len() > 2 * self.sessions.len() + 64 {
            let sessions = &self.sessions;
            self.books.timers.retain(|Reverse((t, token))| {
                sessions.get(token).is_some_and(|s| s.deadline == Some(*t))
            });
        }
        woken
    }

    /// The next session that closed for good, with its decision (each once).
    /// Drain its transmits (the ABORT) before dropping the transport.
    #[must_use = "the close decision is handed out once"]
    pub fn poll_close(&mut self) -> Option<(SessionToken, Close)> {
        while let Some(token) = self.books.closing.pop_front() {
            if let Some(c) = self
                .sessions
                .get_mut(&token)
                .and_then(|s| s.session.poll_close())
            {
                return Some((token, c));
            }
        }
        None
    }

    /// Forgets sessions whose close was taken and whose transmits are
    /// drained. [`handle_connect`](Self::handle_connect) and
    /// [`accept`](Self::accept) do it too; a server calls it now and then.
    pub fn reap(&mut self) {
        let (by_id, by_principal, books) =
            (&mut self.by_id, &mut self.by_principal, &mut self.books);
        self.sessions.retain(|token, s| {
            if !s.session.is_finished() {
                return true;
            }
            // A closed session holds nothing and waits for nothing; keep
            // the books exact all the same.
            books.held_bytes = books.held_bytes.saturating_sub(s.held);
            if let Some(since) = s.waiting {
                books.waiting.remove(&(since, *token));
            }
            by_id.remove(&s.session.id());
            if let Some(p) = s.session.principal() {
                if let Some(set) = by_principal.get_mut(p) {
                    set.remove(token);
                    if set.is_empty() {
                        by_principal.remove(p);
                    }
                }
            }
            false
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::handshake::Credentials;
    use crate::session::ids::SeededRandom;
    use crate::session::state::Transmit;
    use crate::ViolationKind;
    use std::time::Duration;

    fn parse(q: &str) -> Result<ConnectionRequest, Violation> {
        ConnectionRequest::from_query(q)
    }

    type R = Registry<SeededRandom>;

    fn registry(max_clients: usize) -> R {
        let limits = Limits::builder().max_clients(max_clients).build().unwrap();
        Registry::new(limits, SessionConfig::default(), SeededRandom::new(7))
    }

    /// What a server with one account does: alice's password is `s3cret`,
    /// everyone else gets in as who they claim to be.
    fn connect(r: &mut R, now: Instant, q: &str) -> ConnectOutcome {
        match r.handle_connect(now, parse(q)) {
            Connect::Answered(o) => o,
            Connect::Incoming(incoming) => {
                let req = incoming.request();
                let ok = match req.principal.as_deref() {
                    Some("alice") => req.credentials == Credentials::Text("s3cret".into()),
                    _ => true,
                };
                let principal = req.principal.clone();
                if ok {
                    r.accept(now, incoming, principal)
                } else {
                    r.refuse(incoming, Refuse::BadCredentials)
                }
            }
        }
    }

    fn refused(o: &ConnectOutcome) -> (u8, CloseReason) {
        (o.response.code.code(), o.refused.expect("refused").reason)
    }

    #[test]
    fn section_2_connect_answers_100_with_a_fresh_token() {
        let mut r = registry(10);
        let t0 = Instant::now();
        let a = connect(&mut r, t0, "ty=WB&v=29&ca=8&r=0");
        let b = connect(&mut r, t0, "ty=WB&v=29&ca=8&r=0");
        assert_eq!(a.response.code, ResponseCode::Connected);
        let d = a.response.session.unwrap();
        assert_eq!(d.value, 32 * 1024, "100 carries the maximum message size");
        assert_eq!(d.ping_period_ms, 90_000);
        assert_eq!(Some(d.token), a.session);
        assert_ne!(a.session, b.session);
        assert!(r.session(&d.token).is_some());
        assert_eq!(r.live_sessions(), 2);
    }

    #[test]
    fn section_1_reconnect_with_unknown_token_answers_117_aborted() {
        let mut r = registry(10);
        let o = connect(
            &mut r,
            Instant::now(),
            "ty=WB&v=29&ca=8&r=0&c=AAAAAAAAAAAAAAAAAAAAAAAA&cs=1&ss=0",
        );
        assert_eq!(refused(&o), (117, CloseReason::Aborted));
    }

    #[test]
    fn section_1_reconnect_with_closed_token_answers_117_aborted() {
        let mut r = registry(10);
        let t0 = Instant::now();
        let token = connect(&mut r, t0, "ty=WB&v=29&ca=8&r=0").session.unwrap();
        r.session_mut(&token)
            .unwrap()
            .handle_event(t0, SessionEvent::ClosedByController);
        let q = format!("ty=WB&v=29&ca=8&r=0&c={}&cs=1&ss=0", token.as_str());
        // Before and after the closed session is drained and forgotten.
        assert_eq!(
            refused(&connect(&mut r, t0, &q)),
            (117, CloseReason::Aborted)
        );
        let (t, c) = r.poll_close().unwrap();
        assert_eq!((t, c.reason), (token, CloseReason::ClosedByController));
        while r.session_mut(&token).unwrap().poll_transmit().is_some() {}
        assert_eq!(
            refused(&connect(&mut r, t0, &q)),
            (117, CloseReason::Aborted)
        );
        assert!(r.session(&token).is_none());
    }

    #[test]
    fn section_1_reconnect_without_token_is_connection_lost() {
        let mut r = registry(10);
        let o = connect(&mut r, Instant::now(), "ty=WB&v=29&ca=8&r=0&cs=1&ss=0");
        assert_eq!(refused(&o), (115, CloseReason::ConnectionLost));
    }

    #[test]
    fn section_1_wrong_credentials_answer_116_connection_lost() {
        let mut r = registry(10);
        let t0 = Instant::now();
        let wrong = Credentials::Text("guess".into()).encode().unwrap();
        let q = format!("ty=WB&v=29&ca=8&r=0&username=alice&password={wrong}");
        assert_eq!(
            refused(&connect(&mut r, t0, &q)),
            (116, CloseReason::ConnectionLost)
        );
        let ok = "ty=WB&v=29&ca=8&r=0&username=alice&password=AQZzM2NyZXQ%3D";
        assert_eq!(
            connect(&mut r, t0, ok).response.code,
            ResponseCode::Connected
        );
    }

    #[test]
    fn section_1_client_limit_answers_113_connection_lost() {
        let mut r = registry(1);
        let t0 = Instant::now();
        connect(&mut r, t0, "ty=WB&v=29&ca=8&r=0&username=bob")
            .session
            .unwrap();
        let o = connect(&mut r, t0, "ty=WB&v=29&ca=8&r=0&username=carol");
        assert_eq!(refused(&o), (113, CloseReason::ConnectionLost));
        // Sessions of one principal coexist, so bob's second one is over too.
        let o = connect(&mut r, t0, "ty=WB&v=29&ca=8&r=0&username=bob");
        assert_eq!(refused(&o), (113, CloseReason::ConnectionLost));
        // With takeover on, taking over an identity frees its slot.
        r.config.principal_takeover = true;
        let o = connect(&mut r, t0, "ty=WB&v=29&ca=8&r=0&username=bob");
        assert_eq!(o.response.code, ResponseCode::Connected);
    }

    #[test]
    fn section_1_client_limit_is_answered_before_the_credentials_are_checked() {
        let mut r = registry(1);
        let t0 = Instant::now();
        connect(&mut r, t0, "ty=WB&v=29&ca=8&r=0").session.unwrap();
        // Full and nobody waits: the registry answers 113 itself, the
        // server never sees the credentials.
        let Connect::Answered(o) = r.handle_connect(t0, parse("ty=WB&v=29&ca=8&r=0")) else {
            panic!("a full registry answers at once");
        };
        assert_eq!(refused(&o), (113, CloseReason::ConnectionLost));
    }

    #[test]
    fn registry_keeps_the_limits_and_settings_it_was_given() {
        let limits = Limits::builder().max_clients(3).build().unwrap();
        let config = SessionConfig {
            server_id: 42,
            max_buffered_bytes: 1234,
            ..SessionConfig::default()
        };
        let r = Registry::new(limits.clone(), config, SeededRandom::new(1));
        assert_eq!(r.limits().max_clients(), 3);
        assert_eq!(r.config().server_id, 42);
        assert_eq!(r.config().max_buffered_bytes, 1234);
    }

    #[test]
    fn registry_and_session_mut_debug_show_counts_and_a_token_prefix_only() {
        let mut r = registry(10);
        let t0 = Instant::now();
        let token = connect(&mut r, t0, "ty=WB&v=29&ca=8&r=0&username=bob")
            .session
            .unwrap();
        assert_eq!(
            format!("{r:?}"),
            "Registry { sessions: 1, live: 1, principals: 1, .. }"
        );
        let s = r.session_mut(&token).unwrap();
        let shown = format!("{s:?}");
        assert_eq!(shown, format!("SessionMut({token:?})"));
        assert!(!shown.contains(token.as_str()), "a token is a credential");
    }

    #[test]
    fn section_1_client_limit_is_checked_again_at_accept() {
        let mut r = registry(1);
        let t0 = Instant::now();
        let q = "ty=WB&v=29&ca=8&r=0";
        let Connect::Incoming(first) = r.handle_connect(t0, parse(q)) else {
            panic!("a new session is the server's to decide");
        };
        let Connect::Incoming(second) = r.handle_connect(t0, parse(q)) else {
            panic!("nothing is open yet");
        };
        assert!(r.accept(t0, first, None).session.is_some());
        let o = r.accept(t0, second, None);
        assert_eq!(refused(&o), (113, CloseReason::ConnectionLost));
        assert_eq!(r.live_sessions(), 1);
    }

    #[test]
    fn section_1_row_15_sessions_of_one_principal_coexist_by_default() {
        let mut r = registry(10);
        let t0 = Instant::now();
        let q = "ty=WB&v=29&ca=8&r=0&username=bob";
        let old = connect(&mut r, t0, q).session.unwrap();
        let new = connect(&mut r, t0, q).session.unwrap();
        assert_ne!(old, new);
        assert!(!r.session(&old).unwrap().is_closed());
        assert!(!r.session(&new).unwrap().is_closed());
        let mut held: Vec<_> = r.sessions_of("bob").collect();
        let mut both = vec![old, new];
        held.sort();
        both.sort();
        assert_eq!(held, both);
        assert_eq!(r.poll_close(), None);
    }

    #[test]
    fn principal_takeover_when_opted_in_closes_the_old_session() {
        let limits = Limits::default();
        let config = SessionConfig {
            principal_takeover: true,
            ..SessionConfig::default()
        };
        let mut r = Registry::new(limits, config, SeededRandom::new(3));
        let t0 = Instant::now();
        let q = "ty=WB&v=29&ca=8&r=0&username=bob";
        let old = connect(&mut r, t0, q).session.unwrap();
        let new = connect(&mut r, t0, q).session.unwrap();
        assert_ne!(old, new);
        let (t, c) = r.poll_close().unwrap();
        assert_eq!((t, c.reason), (old, CloseReason::SessionTakenOver));
        assert!(c.abort_sent);
        let mut s = r.session_mut(&old).unwrap();
        assert_eq!(
            s.poll_transmit(),
            Some(Transmit::WebSocket(bytes::Bytes::from_static(&[0x1c])))
        );
        drop(s);
        assert!(!r.session(&new).unwrap().is_closed());
        // Anonymous sessions never take each other over.
        let a = connect(&mut r, t0, "ty=WB&v=29&ca=8&r=0").session.unwrap();
        connect(&mut r, t0, "ty=WB&v=29&ca=8&r=0").session.unwrap();
        assert!(!r.session(&a).unwrap().is_closed());
        assert_eq!(r.poll_close(), None);
    }

    #[test]
    fn accept_uses_the_principal_the_server_authenticated() {
        let mut r = registry(10);
        let t0 = Instant::now();
        let Connect::Incoming(i) = r.handle_connect(t0, parse("ty=WB&v=29&ca=8&r=0&username=eve"))
        else {
            panic!("a new session is the server's to decide");
        };
        assert_eq!(i.request().principal.as_deref(), Some("eve"));
        let token = r.accept(t0, i, Some("mallory".into())).session.unwrap();
        assert_eq!(r.session(&token).unwrap().principal(), Some("mallory"));
        assert_eq!(r.sessions_of("eve").count(), 0);
        let id = r.session(&token).unwrap().id();
        assert_eq!(r.token_of(id), Some(token));
    }

    #[test]
    fn a_failed_random_source_answers_119_internal_error() {
        let broken = |_: &mut [u8]| -> Result<(), crate::session::ids::RandomSourceFailed> {
            Err(crate::session::ids::RandomSourceFailed)
        };
        let mut r = Registry::new(Limits::default(), SessionConfig::default(), broken);
        let t0 = Instant::now();
        let Connect::Incoming(i) = r.handle_connect(t0, parse("ty=WB&v=29&ca=8&r=0")) else {
            panic!("a new session is the server's to decide");
        };
        let o = r.accept(t0, i, None);
        assert_eq!(
            (o.response.code.code(), o.refused.unwrap().reason),
            (119, CloseReason::InternalError)
        );
    }

    #[test]
    fn section_2_request_faults_answer_115_or_102_and_abort() {
        let mut r = registry(10);
        let t0 = Instant::now();
        let o = connect(&mut r, t0, "ty=WB&v=28&ca=8&r=0");
        assert_eq!(refused(&o), (102, CloseReason::Aborted));
        let o = connect(&mut r, t0, "ty=WB&ca=8&r=0");
        assert_eq!(refused(&o), (115, CloseReason::Aborted));
        assert!(matches!(
            o.refused.unwrap().violation.unwrap().kind(),
            ViolationKind::HandshakeFieldMissing(_)
        ));
    }

    #[test]
    fn section_6_reconnect_with_uncoverable_gap_answers_118_lost_messages() {
        let limits = Limits::builder().recovery_buffer(1).build().unwrap();
        let mut r = Registry::new(limits, SessionConfig::default(), SeededRandom::new(1));
        let t0 = Instant::now();
        let token = connect(&mut r, t0, "ty=WB&v=29&ca=8&r=5000")
            .session
            .unwrap();
        let mut s = r.session_mut(&token).unwrap();
        for _ in 0..3 {
            assert!(s.send(
                t0,
                crate::Message::ServiceResponse(crate::message::ServiceResponse {
                    conversation: 1,
                    payload: bytes::Bytes::new(),
                }),
            ));
        }
        while s.poll_transmit().is_some() {}
        s.handle_event(t0, SessionEvent::TransportLost);
        drop(s);
        let q = format!("ty=WB&v=29&ca=8&r=5000&c={}&cs=1&ss=1", token.as_str());
        let o = connect(&mut r, t0, &q);
        assert_eq!(refused(&o), (118, CloseReason::LostMessages));
        assert_eq!(
            o.refused.unwrap().violation.unwrap().kind(),
            ViolationKind::SequenceGap {
                sequence: 3,
                expected: 2
            }
        );
        assert_eq!(r.poll_close().unwrap().1.reason, CloseReason::LostMessages);
    }

    #[test]
    fn reap_forgets_finished_sessions_only() {
        let mut r = registry(10);
        let t0 = Instant::now();
        let a = connect(&mut r, t0, "ty=WB&v=29&ca=8&r=0").session.unwrap();
        let b = connect(&mut r, t0, "ty=WB&v=29&ca=8&r=0").session.unwrap();
        r.session_mut(&a)
            .unwrap()
            .handle_event(t0, SessionEvent::ClosedByController);
        r.reap();
        assert!(r.session(&a).is_some(), "close not taken yet");
        assert!(r.poll_close().is_some());
        r.reap();
        assert!(r.session(&a).is_some(), "the ABORT is not drained yet");
        while r.session_mut(&a).unwrap().poll_transmit().is_some() {}
        r.reap();
        assert!(r.session(&a).is_none());
        assert!(r.session(&b).is_some());
    }

    #[test]
    fn section_2_refuse_answers_116_119_or_113_when_busy() {
        let mut r = registry(10);
        let t0 = Instant::now();
        let q = "ty=WB&v=29&ca=8&r=0";
        for (why, code, reason) in [
            (Refuse::BadCredentials, 116, CloseReason::ConnectionLost),
            (Refuse::NotReady, 119, CloseReason::InternalError),
            (Refuse::Busy, 113, CloseReason::ConnectionLost),
        ] {
            let Connect::Incoming(i) = r.handle_connect(t0, parse(q)) else {
                panic!("a new session is the server's to decide");
            };
            let o = r.refuse(i, why);
            assert_eq!(
                (o.response.code.code(), o.refused.unwrap().reason),
                (code, reason)
            );
        }
        assert_eq!(r.live_sessions(), 0);
    }

    #[test]
    fn section_6_reconnect_while_still_connected_loses_the_old_transport_then_resumes() {
        let mut r = registry(10);
        let t0 = Instant::now();
        let first = connect(&mut r, t0, "ty=WB&v=29&ca=8&r=5000");
        assert!(!first.displaced);
        let token = first.session.unwrap();
        let q = format!("ty=WB&v=29&ca=8&r=5000&c={}&cs=1&ss=0", token.as_str());
        let again = connect(&mut r, t0, &q);
        assert_eq!(again.response.code, ResponseCode::Reconnected);
        assert_eq!(
            (again.session, again.refused, again.displaced),
            (Some(token), None, true)
        );
        let mut s = r.session_mut(&token).unwrap();
        assert_eq!(s.state(), SessionState::Connected);
        assert!(matches!(
            s.poll_event(),
            Some(crate::session::state::Event::Disconnected {
                reason: CloseReason::ConnectionLost,
                ..
            })
        ));
        drop(s);
        // A session that is not connected is simply resumed.
        let mut s = r.session_mut(&token).unwrap();
        s.handle_event(t0, SessionEvent::TransportLost);
        drop(s);
        let later = connect(&mut r, t0, &q);
        assert_eq!(
            (later.response.code, later.displaced),
            (ResponseCode::Reconnected, false)
        );
    }

    /// Opens a session asking for a reconnection wait of `r` and loses its
    /// transport at `now`.
    fn waiting(r: &mut R, now: Instant, wait: &str) -> SessionToken {
        let q = format!("ty=WB&v=29&ca=8&r={wait}");
        let token = connect(r, now, &q).session.unwrap();
        r.session_mut(&token)
            .unwrap()
            .handle_event(now, SessionEvent::TransportLost);
        token
    }

    #[test]
    fn section_1_a_full_server_ends_the_longest_reconnection_wait_before_answering_113() {
        let mut r = registry(3);
        let t0 = Instant::now();
        let huge = i64::MAX.to_string();
        let first = waiting(&mut r, t0, &huge);
        let second = waiting(&mut r, t0 + Duration::from_millis(1), &huge);
        let live = connect(&mut r, t0, "ty=WB&v=29&ca=8&r=0").session.unwrap();
        assert_eq!(r.live_sessions(), 3);
        // Full, but two sessions only wait: the one waiting longest goes.
        let later = t0 + Duration::from_millis(2);
        let Connect::Incoming(i) = r.handle_connect(later, parse("ty=WB&v=29&ca=8&r=0")) else {
            panic!("a waiting session can make room");
        };
        let o = r.accept(later, i, None);
        assert_eq!(o.response.code, ResponseCode::Connected);
        assert_eq!(o.ended_wait, Some(first));
        let (t, c) = r.poll_close().unwrap();
        assert_eq!(
            (t, c.reason, c.at),
            (first, CloseReason::ConnectionLost, later)
        );
        assert_eq!(r.poll_close(), None);
        let o = connect(&mut r, later, "ty=WB&v=29&ca=8&r=0");
        assert_eq!(o.ended_wait, Some(second));
        assert_eq!(
            r.poll_close().unwrap().1.reason,
            CloseReason::ConnectionLost
        );
        // Nobody waits any more: 113, and the connected session is untouched.
        let o = connect(&mut r, later, "ty=WB&v=29&ca=8&r=0");
        assert_eq!(refused(&o), (113, CloseReason::ConnectionLost));
        assert_eq!(o.ended_wait, None);
        assert!(!r.session(&live).unwrap().is_closed());
        assert_eq!(r.live_sessions(), 3);
    }

    #[test]
    fn section_1_a_resumed_or_expired_session_no_longer_counts_as_waiting() {
        let mut r = registry(1);
        let t0 = Instant::now();
        let token = waiting(&mut r, t0, "5000");
        let q = format!("ty=WB&v=29&ca=8&r=5000&c={}&cs=1&ss=0", token.as_str());
        assert_eq!(
            connect(&mut r, t0, &q).response.code,
            ResponseCode::Reconnected
        );
        // Resumed: it is connected again, so a new client is refused.
        let o = connect(&mut r, t0, "ty=WB&v=29&ca=8&r=0");
        assert_eq!(refused(&o), (113, CloseReason::ConnectionLost));
        assert!(!r.session(&token).unwrap().is_closed());
        // Lost again, its capped wait runs out on its own.
        r.session_mut(&token)
            .unwrap()
            .handle_event(t0, SessionEvent::TransportLost);
        assert!(r.books.waiting.len() == 1);
        let _ = r.handle_timeout(t0 + Duration::from_millis(5000));
        assert!(r.books.waiting.is_empty());
        assert_eq!(r.live_sessions(), 0);
    }

    #[test]
    fn section_1_no_session_waits_longer_than_the_server_allows() {
        let config = SessionConfig {
            max_reconnect_wait: Duration::from_secs(2),
            ..SessionConfig::default()
        };
        let mut r = Registry::new(Limits::default(), config, SeededRandom::new(5));
        let t0 = Instant::now();
        let token = waiting(&mut r, t0, &i64::MAX.to_string());
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(r.handle_timeout(t0 + Duration::from_secs(2)), vec![token]);
        assert_eq!(
            r.poll_close().unwrap().1.reason,
            CloseReason::ConnectionLost
        );
    }

    fn http_session(r: &mut R, now: Instant) -> SessionToken {
        let request =
            ConnectionRequest::from_headers([("ty", "B"), ("v", "29"), ("ca", "8"), ("r", "0")]);
        let Connect::Incoming(i) = r.handle_connect(now, request) else {
            panic!("a new session is the server's to decide");
        };
        r.accept(now, i, None).session.unwrap()
    }

    /// A batch of one service request with `n` bytes of payload.
    fn send_body(conversation: u8, n: usize) -> bytes::Bytes {
        let m = crate::Message::ServiceRequest(crate::message::ServiceRequest {
            service: 3,
            conversation: u64::from(conversation),
            payload: bytes::Bytes::from(vec![b'x'; n]),
        });
        bytes::Bytes::from(crate::polling::encode_body(&[m]).unwrap())
    }

    #[test]
    fn held_data_past_the_server_budget_closes_message_queue_limit_reached() {
        let body = send_body(2, 300);
        let config = SessionConfig {
            max_buffered_bytes: body.len() * 3 / 2,
            ..SessionConfig::default()
        };
        let mut r = Registry::new(Limits::default(), config, SeededRandom::new(9));
        let t0 = Instant::now();
        let (a, b) = (http_session(&mut r, t0), http_session(&mut r, t0));
        // a skips s=0: its send is held, counted, and not answered.
        let mut s = r.session_mut(&a).unwrap();
        s.handle_http_send(t0, "1", body.clone());
        assert_eq!(s.poll_transmit(), None);
        drop(s);
        assert_eq!(r.held_bytes(), body.len());
        // b does the same: past the budget, so b is closed, not a.
        r.session_mut(&b)
            .unwrap()
            .handle_http_send(t0, "1", body.clone());
        let (t, c) = r.poll_close().unwrap();
        assert_eq!((t, c.reason), (b, CloseReason::MessageQueueLimitReached));
        assert_eq!(
            c.violation.unwrap().kind(),
            ViolationKind::HeldDataOverBudget {
                limit: body.len() * 3 / 2
            }
        );
        assert_eq!(r.held_bytes(), body.len());
        assert!(!r.session(&a).unwrap().is_closed());
        // a fills its gap: both sends are answered, nothing is held.
        let mut s = r.session_mut(&a).unwrap();
        s.handle_http_send(t0, "0", send_body(1, 0));
        assert_eq!(
            std::iter::from_fn(|| s.poll_transmit()).collect::<Vec<_>>(),
            [0, 1].map(|sequence| Transmit::SendAck { sequence })
        );
        drop(s);
        assert_eq!(r.held_bytes(), 0);
        assert_eq!(r.poll_close(), None);
    }

    #[test]
    fn held_data_of_exactly_the_server_budget_is_kept() {
        let body = send_body(2, 300);
        let config = SessionConfig {
            max_buffered_bytes: body.len(),
            ..SessionConfig::default()
        };
        let mut r = Registry::new(Limits::default(), config, SeededRandom::new(9));
        let t0 = Instant::now();
        let a = http_session(&mut r, t0);
        r.session_mut(&a)
            .unwrap()
            .handle_http_send(t0, "1", body.clone());
        assert_eq!(r.held_bytes(), body.len());
        assert_eq!(r.poll_close(), None);
        assert!(!r.session(&a).unwrap().is_closed());
        // One byte more held by anyone is past it.
        let b = http_session(&mut r, t0);
        r.session_mut(&b)
            .unwrap()
            .handle_http_send(t0, "1", send_body(2, 0));
        let (t, c) = r.poll_close().unwrap();
        assert_eq!((t, c.reason), (b, CloseReason::MessageQueueLimitReached));
        assert_eq!(r.held_bytes(), body.len());
    }

    #[test]
    fn kept_messages_count_against_the_budget_and_are_released_at_the_close() {
        let config = SessionConfig {
            max_buffered_bytes: 1 << 20,
            ..SessionConfig::default()
        };
        let mut r = Registry::new(Limits::default(), config, SeededRandom::new(2));
        let t0 = Instant::now();
        let token = connect(&mut r, t0, "ty=WB&v=29&ca=8&r=5000")
            .session
            .unwrap();
        let m = crate::Message::ServiceResponse(crate::message::ServiceResponse {
            conversation: 1,
            payload: bytes::Bytes::from(vec![0; 100]),
        });
        let mut s = r.session_mut(&token).unwrap();
        for _ in 0..3 {
            assert!(s.send(t0, m.clone()));
        }
        while s.poll_transmit().is_some() {}
        drop(s);
        assert_eq!(r.held_bytes(), 3 * m.encoded_len());
        r.session_mut(&token)
            .unwrap()
            .handle_event(t0, SessionEvent::ClosedByController);
        assert_eq!(r.held_bytes(), 0);
    }

    #[test]
    fn registry_wakes_at_the_earliest_session_timer() {
        let mut r = registry(10);
        let t0 = Instant::now();
        connect(&mut r, t0, "ty=WB&v=29&ca=8&r=0").session.unwrap();
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(90)));
        assert_eq!(r.handle_timeout(t0 + Duration::from_secs(90)).len(), 1);
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(180)));
    }

    #[test]
    fn section_4_unanswered_ping_closes_through_the_registry_timers() {
        let mut r = registry(10);
        let t0 = Instant::now();
        let a = connect(&mut r, t0, "ty=WB&v=29&ca=8&r=0").session.unwrap();
        let b = connect(&mut r, t0 + Duration::from_secs(1), "ty=WB&v=29&ca=8&r=0")
            .session
            .unwrap();
        // A session driven out of band refiles its own deadline.
        r.session_mut(&b).unwrap().handle_websocket(
            t0 + Duration::from_secs(2),
            bytes::Bytes::from_static(&[0x1d]),
        );
        assert_eq!(
            r.poll_close().map(|(t, c)| (t, c.reason)),
            Some((b, CloseReason::ClosedByClient))
        );
        let mut now = t0;
        for _ in 0..8 {
            let Some(t) = r.poll_timeout() else { break };
            now = t;
            assert_eq!(r.handle_timeout(now), vec![a]);
            while r.session_mut(&a).unwrap().poll_transmit().is_some() {}
            if let Some((t, c)) = r.poll_close() {
                assert_eq!((t, c.reason), (a, CloseReason::ClientUnresponsive));
                assert_eq!(now, t0 + Duration::from_secs(180));
                assert_eq!(r.poll_timeout(), None);
                return;
            }
        }
        panic!("no close by {now:?}");
    }

    #[test]
    fn the_timer_heap_stays_within_a_bound_of_the_sessions_held() {
        let mut r = registry(1000);
        let t0 = Instant::now();
        for round in 0..5u64 {
            let now = t0 + Duration::from_millis(round);
            let tokens: Vec<_> = (0..200)
                .map(|_| connect(&mut r, now, "ty=WB&v=29&ca=8&r=0").session.unwrap())
                .collect();
            for t in &tokens {
                let mut s = r.session_mut(t).unwrap();
                s.handle_websocket(now, bytes::Bytes::from_static(&[0x1d]));
            }
            while let Some((t, _)) = r.poll_close() {
                while r.session_mut(&t).unwrap().poll_transmit().is_some() {}
            }
            r.reap();
            assert!(r.handle_timeout(now).is_empty());
            assert!(
                r.books.timers.len() <= 2 * r.sessions.len() + 64,
                "{} entries for {} sessions",
                r.books.timers.len(),
                r.sessions.len()
            );
        }
        assert_eq!(r.live_sessions(), 0);
        assert_eq!(r.poll_timeout(), None);
        assert!(
            r.books.timers.is_empty(),
            "poll_timeout drops stale entries"
        );
    }

    /// Opens a WebSocket session without reconnection.
    fn ws_session(r: &mut R, now: Instant) -> SessionToken {
        connect(r, now, "ty=WB&v=29&ca=8&r=0").session.unwrap()
    }

    /// Opens a WebSocket session and closes it at once (CLOSE_REQUEST),
    /// taking its close: its timer entry stays in the heap, stale.
    fn open_and_close(r: &mut R, now: Instant) {
        let t = ws_session(r, now);
        r.session_mut(&t)
            .unwrap()
            .handle_websocket(now, bytes::Bytes::from_static(&[0x1d]));
        let (closed, _) = r.poll_close().unwrap();
        assert_eq!(closed, t);
        r.reap();
        assert!(r.session(&t).is_none());
    }

    #[test]
    fn the_timer_heap_is_compacted_past_twice_the_sessions_plus_64_and_keeps_live_entries() {
        let mut r = registry(10);
        let t0 = Instant::now();
        let live = ws_session(&mut r, t0);
        for _ in 0..65 {
            open_and_close(&mut r, t0);
        }
        // 66 entries for 1 session: 2 * 1 + 64, not over the bound.
        assert!(r.handle_timeout(t0).is_empty());
        assert_eq!(r.books.timers.len(), 66);
        open_and_close(&mut r, t0);
        // 67: over, so only the live session's entry is kept.
        assert!(r.handle_timeout(t0).is_empty());
        assert_eq!(r.books.timers.len(), 1);
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(90)));
        assert_eq!(r.handle_timeout(t0 + Duration::from_secs(90)), vec![live]);
    }

    #[test]
    fn handle_timeout_wakes_only_the_sessions_due() {
        let mut r = registry(10);
        let t0 = Instant::now();
        let a = ws_session(&mut r, t0);
        let b = ws_session(&mut r, t0 + Duration::from_secs(1));
        assert!(r.handle_timeout(t0 + Duration::from_secs(89)).is_empty());
        // Past a's deadline (not at it), before b's.
        assert_eq!(
            r.handle_timeout(t0 + Duration::from_millis(90_500)),
            vec![a]
        );
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(91)));
        assert_eq!(r.handle_timeout(t0 + Duration::from_secs(100)), vec![b]);
    }

    #[test]
    fn tokens_lists_every_session_held() {
        let mut r = registry(10);
        let t0 = Instant::now();
        assert_eq!(r.tokens().count(), 0);
        let mut opened: Vec<_> = (0..3).map(|_| ws_session(&mut r, t0)).collect();
        let mut held: Vec<_> = r.tokens().collect();
        opened.sort();
        held.sort();
        assert_eq!(held, opened);
    }

    #[test]
    fn a_colliding_session_id_or_token_answers_119_internal_error() {
        // Ids (8 bytes) always the same, tokens (24 bytes) always fresh; then
        // the other way round.
        for fixed in [8, SessionToken::LEN] {
            let mut n = 0u8;
            let source =
                move |buf: &mut [u8]| -> Result<(), crate::session::ids::RandomSourceFailed> {
                    if buf.len() == fixed {
                        buf.fill(1);
                    } else {
                        n = n.wrapping_add(1);
                        buf.fill(n);
                    }
                    Ok(())
                };
            let mut r = Registry::new(Limits::default(), SessionConfig::default(), source);
            let t0 = Instant::now();
            let open = |r: &mut Registry<_>| {
                let Connect::Incoming(i) = r.handle_connect(t0, parse("ty=WB&v=29&ca=8&r=0"))
                else {
                    panic!("a new session is the server's to decide");
                };
                r.accept(t0, i, None)
            };
            assert!(open(&mut r).session.is_some());
            let o = open(&mut r);
            assert_eq!(
                (o.response.code.code(), o.refused.unwrap().reason),
                (119, CloseReason::InternalError),
                "{fixed} bytes repeated"
            );
            assert_eq!(r.live_sessions(), 1);
        }
    }

    #[test]
    fn section_6_http_gate_answers_for_sessions_that_cannot_take_a_request() {
        let mut r = registry(10);
        let t0 = Instant::now();
        let unknown = SessionToken::from_bytes(b"AAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        assert_eq!(r.http_gate(&unknown), Some(HttpClose::Abort));
        // Connected over HTTP: the session takes it.
        let h = http_session(&mut r, t0);
        assert_eq!(r.http_gate(&h), None);
        // Connected over WebSocket: not an HTTP session, drop.
        let w = ws_session(&mut r, t0);
        assert_eq!(r.http_gate(&w), Some(HttpClose::Drop));
        // Waiting for a reconnection.
        let q =
            ConnectionRequest::from_headers([("ty", "B"), ("v", "29"), ("ca", "8"), ("r", "5000")]);
        let Connect::Incoming(i) = r.handle_connect(t0, q) else {
            panic!("a new session is the server's to decide");
        };
        let waiting = r.accept(t0, i, None).session.unwrap();
        r.session_mut(&waiting)
            .unwrap()
            .handle_event(t0, SessionEvent::TransportLost);
        assert_eq!(r.http_gate(&waiting), Some(HttpClose::Reconnect));
        // Closed for a reason that sends ABORT, and one that does not.
        r.session_mut(&h)
            .unwrap()
            .handle_event(t0, SessionEvent::ClosedByController);
        assert_eq!(r.http_gate(&h), Some(HttpClose::Abort));
        r.session_mut(&w)
            .unwrap()
            .handle_event(t0, SessionEvent::FailedOver);
        assert_eq!(r.http_gate(&w), Some(HttpClose::Drop));
    }
}
