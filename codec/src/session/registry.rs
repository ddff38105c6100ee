//! The session registry (sans-IO, owned by the server): connect, reconnect,
//! lookup by token, the client limit and identity takeover.
//!
//! Its decisions on a connection request, with the response code of section 2
//! and the close reason of section 1 for the refused attempt:
//!
//! | request | response | attempt closes |
//! |---|---|---|
//! | missing or malformed field, bad credentials encoding, bad `sp` | 115 | ABORTED |
//! | unsupported version | 102 | ABORTED |
//! | reconnect with an unknown or already-closed token | 117 | ABORTED |
//! | reconnect (`cs`/`ss`) without a token | 115 | CONNECTION_LOST |
//! | (re)connect for a session that is still connected | 115 | CONNECTION_LOST |
//! | wrong credentials (the [`Authenticator`] says no) | 116 | CONNECTION_LOST |
//! | client limit reached | 113 | CONNECTION_LOST |
//! | the secure random source failed | 119 | INTERNAL_ERROR |
//! | reconnect whose gap cannot be covered | 118 | LOST_MESSAGES (the session too) |
//!
//! A new session that claims the principal of a session still held (connected
//! or waiting for a reconnection) makes the old one close SESSION_TAKEN_OVER.

use std::collections::HashMap;
use std::time::Instant;

use crate::session::handshake::{ConnectionRequest, ConnectionResponse, Credentials, ResponseCode};
use crate::session::ids::{SessionId, SessionToken};
use crate::session::state::{Close, Session, SessionConfig, SessionEvent, SessionState};
use crate::{CloseReason, Limits, Violation};

/// The server's hook that checks a principal's credentials.
pub trait Authenticator {
    /// Whether `principal` (`None`: anonymous) may connect with `credentials`.
    fn authenticate(&mut self, principal: Option<&str>, credentials: &Credentials) -> bool;
}

impl<F> Authenticator for F
where
    F: FnMut(Option<&str>, &Credentials) -> bool,
{
    fn authenticate(&mut self, principal: Option<&str>, credentials: &Credentials) -> bool {
        self(principal, credentials)
    }
}

/// An authenticator that lets everyone in.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn authenticate(&mut self, _: Option<&str>, _: &Credentials) -> bool {
        true
    }
}

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
pub struct ConnectOutcome {
    /// The response to send: the first WebSocket message, or the body of the
    /// answer to the HTTP connect.
    pub response: ConnectionResponse,
    /// The session now attached to this connection.
    pub session: Option<SessionToken>,
    /// The attempt was refused: close the connection after the response.
    pub refused: Option<Refusal>,
}

impl ConnectOutcome {
    fn refuse(code: ResponseCode, reason: CloseReason, violation: Option<Violation>) -> Self {
        ConnectOutcome {
            response: ConnectionResponse::rejection(code),
            session: None,
            refused: Some(Refusal { reason, violation }),
        }
    }
}

/// All sessions of one server. See the [module documentation](self).
pub struct Registry<A> {
    limits: Limits,
    config: SessionConfig,
    authenticator: A,
    sessions: HashMap<SessionToken, Session>,
    identities: HashMap<String, SessionToken>,
}

impl<A> std::fmt::Debug for Registry<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("sessions", &self.sessions.len())
            .field("identities", &self.identities.len())
            .finish_non_exhaustive()
    }
}

impl<A: Authenticator> Registry<A> {
    /// An empty registry.
    pub fn new(limits: Limits, config: SessionConfig, authenticator: A) -> Self {
        Registry {
            limits,
            config,
            authenticator,
            sessions: HashMap::new(),
            identities: HashMap::new(),
        }
    }

    /// The limits sessions are created with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Decides a connection request, as parsed by
    /// [`ConnectionRequest::from_query`] or
    /// [`ConnectionRequest::from_headers`] (a parse fault is answered too).
    pub fn connect(
        &mut self,
        now: Instant,
        request: Result<ConnectionRequest, Violation>,
    ) -> ConnectOutcome {
        self.reap();
        let request = match request {
            Ok(r) => r,
            Err(v) => {
                return ConnectOutcome::refuse(
                    ResponseCode::for_violation(&v),
                    v.close_reason(),
                    Some(v),
                )
            }
        };
        match request.reconnect {
            Some(rc) => match rc.token {
                None => ConnectOutcome::refuse(
                    ResponseCode::ProtocolError,
                    CloseReason::ConnectionLost,
                    None,
                ),
                Some(token) => self.reconnect(now, token, &request),
            },
            None => self.connect_new(now, &request),
        }
    }

    fn reconnect(
        &mut self,
        now: Instant,
        token: SessionToken,
        request: &ConnectionRequest,
    ) -> ConnectOutcome {
        let Some(session) = self.sessions.get_mut(&token) else {
            return ConnectOutcome::refuse(
                ResponseCode::UnknownSession,
                CloseReason::Aborted,
                None,
            );
        };
        // Bring the session up to date first: its reconnection wait may be over.
        session.handle_timeout(now);
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
                    }
                }
                Some(response) => ConnectOutcome {
                    response,
                    session: Some(token),
                    refused: None,
                },
                None => ConnectOutcome::refuse(
                    ResponseCode::ProtocolError,
                    CloseReason::InternalError,
                    None,
                ),
            },
        }
    }

    fn connect_new(&mut self, now: Instant, request: &ConnectionRequest) -> ConnectOutcome {
        if !self
            .authenticator
            .authenticate(request.principal.as_deref(), &request.credentials)
        {
            return ConnectOutcome::refuse(
                ResponseCode::AuthenticationFailed,
                CloseReason::ConnectionLost,
                None,
            );
        }
        let taken_over = request
            .principal
            .as_ref()
            .and_then(|p| self.identities.get(p))
            .copied()
            .filter(|t| self.sessions.get(t).is_some_and(|s| !s.is_closed()));
        let live = self.sessions.values().filter(|s| !s.is_closed()).count();
        let after_takeover = live - usize::from(taken_over.is_some());
        if after_takeover >= self.limits.max_clients() {
            return ConnectOutcome::refuse(
                ResponseCode::ClientLimit,
                CloseReason::ConnectionLost,
                None,
            );
        }
        let minted = SessionId::generate(self.config.server_id)
            .and_then(|id| SessionToken::generate().map(|t| (id, t)));
        let Ok((id, token)) = minted else {
            return ConnectOutcome::refuse(
                ResponseCode::ServerNotReady,
                CloseReason::InternalError,
                None,
            );
        };
        if self.sessions.contains_key(&token) {
            // 144 random bits collided: treat as a failed random source.
            return ConnectOutcome::refuse(
                ResponseCode::ServerNotReady,
                CloseReason::InternalError,
                None,
            );
        }
        if let Some(old) = taken_over.and_then(|t| self.sessions.get_mut(&t)) {
            old.handle_event(now, SessionEvent::TakenOver);
        }
        let session = Session::new(now, id, token, request, &self.limits, &self.config);
        let response = session.connected_response();
        if let Some(p) = &request.principal {
            self.identities.insert(p.clone(), token);
        }
        self.sessions.insert(token, session);
        ConnectOutcome {
            response,
            session: Some(token),
            refused: None,
        }
    }

    /// The session with this token (closed ones stay until drained).
    pub fn session(&self, token: &SessionToken) -> Option<&Session> {
        self.sessions.get(token)
    }

    /// The session with this token, to drive it.
    pub fn session_mut(&mut self, token: &SessionToken) -> Option<&mut Session> {
        self.sessions.get_mut(token)
    }

    /// Sessions not closed for good.
    pub fn live_sessions(&self) -> usize {
        self.sessions.values().filter(|s| !s.is_closed()).count()
    }

    /// Every session held, with its token.
    pub fn sessions_mut(&mut self) -> impl Iterator<Item = (&SessionToken, &mut Session)> {
        self.sessions.iter_mut()
    }

    /// The earliest time any session needs waking.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sessions
            .values()
            .filter_map(Session::poll_timeout)
            .min()
    }

    /// Runs every session's timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.reap();
        for s in self.sessions.values_mut() {
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
            }
        }
    }

    /// The next session that closed for good, with its decision (each once).
    /// Drain its transmits (the ABORT) before dropping the transport.
    pub fn poll_close(&mut self) -> Option<(SessionToken, Close)> {
        self.sessions
            .iter_mut()
            .find_map(|(t, s)| s.poll_close().map(|c| (*t, c)))
    }

    /// The authenticator, for a server that decides credentials before it
    /// hands the request to [`connect`](Self::connect) (e.g. off its event
    /// loop, because checking a password hash is slow).
    pub fn authenticator_mut(&mut self) -> &mut A {
        &mut self.authenticator
    }

    /// Forgets sessions whose close was taken and whose transmits are
    /// drained. [`connect`](Self::connect) and
    /// [`handle_timeout`](Self::handle_timeout) do it too; a server that
    /// drives sessions one by one calls it now and then.
    pub fn reap(&mut self) {
        let identities = &mut self.identities;
        self.sessions.retain(|token, s| {
            if !s.is_finished() {
                return true;
            }
            if let Some(p) = s.principal() {
                if identities.get(p) == Some(token) {
                    identities.remove(p);
                }
            }
            false
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::state::Transmit;
    use crate::ViolationKind;
    use std::time::Duration;

    fn parse(q: &str) -> Result<ConnectionRequest, Violation> {
        ConnectionRequest::from_query(q)
    }

    fn registry(max_clients: usize) -> Registry<impl Authenticator> {
        let limits = Limits::builder().max_clients(max_clients).build().unwrap();
        let auth = |p: Option<&str>, c: &Credentials| match p {
            Some("alice") => *c == Credentials::Text("s3cret".into()),
            _ => true,
        };
        Registry::new(limits, SessionConfig::default(), auth)
    }

    fn refused(o: &ConnectOutcome) -> (u8, CloseReason) {
        (o.response.code.code(), o.refused.expect("refused").reason)
    }

    #[test]
    fn section_2_connect_answers_100_with_a_fresh_token() {
        let mut r = registry(10);
        let t0 = Instant::now();
        let a = r.connect(t0, parse("ty=WB&v=29&ca=8&r=0"));
        let b = r.connect(t0, parse("ty=WB&v=29&ca=8&r=0"));
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
        let o = r.connect(
            Instant::now(),
            parse("ty=WB&v=29&ca=8&r=0&c=AAAAAAAAAAAAAAAAAAAAAAAA&cs=1&ss=0"),
        );
        assert_eq!(refused(&o), (117, CloseReason::Aborted));
    }

    #[test]
    fn section_1_reconnect_with_closed_token_answers_117_aborted() {
        let mut r = registry(10);
        let t0 = Instant::now();
        let token = r.connect(t0, parse("ty=WB&v=29&ca=8&r=0")).session.unwrap();
        r.session_mut(&token)
            .unwrap()
            .handle_event(t0, SessionEvent::ClosedByController);
        let q = format!("ty=WB&v=29&ca=8&r=0&c={}&cs=1&ss=0", token.as_str());
        // Before and after the closed session is drained and forgotten.
        assert_eq!(
            refused(&r.connect(t0, parse(&q))),
            (117, CloseReason::Aborted)
        );
        let (t, c) = r.poll_close().unwrap();
        assert_eq!((t, c.reason), (token, CloseReason::ClosedByController));
        while r.session_mut(&token).unwrap().poll_transmit().is_some() {}
        assert_eq!(
            refused(&r.connect(t0, parse(&q))),
            (117, CloseReason::Aborted)
        );
        assert!(r.session(&token).is_none());
    }

    #[test]
    fn section_1_reconnect_without_token_is_connection_lost() {
        let mut r = registry(10);
        let o = r.connect(Instant::now(), parse("ty=WB&v=29&ca=8&r=0&cs=1&ss=0"));
        assert_eq!(refused(&o), (115, CloseReason::ConnectionLost));
    }

    #[test]
    fn section_1_connect_from_a_client_already_connected_is_connection_lost() {
        let mut r = registry(10);
        let t0 = Instant::now();
        let token = r
            .connect(t0, parse("ty=WB&v=29&ca=8&r=5000"))
            .session
            .unwrap();
        let q = format!("ty=WB&v=29&ca=8&r=5000&c={}&cs=1&ss=0", token.as_str());
        assert_eq!(
            refused(&r.connect(t0, parse(&q))),
            (115, CloseReason::ConnectionLost)
        );
        assert!(
            !r.session(&token).unwrap().is_closed(),
            "the session is untouched"
        );
        // Once the transport is lost, the same request reconnects.
        r.session_mut(&token)
            .unwrap()
            .handle_event(t0, SessionEvent::TransportLost);
        let o = r.connect(t0 + Duration::from_millis(10), parse(&q));
        assert_eq!(o.response.code, ResponseCode::Reconnected);
        assert_eq!(o.session, Some(token));
    }

    #[test]
    fn section_1_wrong_credentials_answer_116_connection_lost() {
        let mut r = registry(10);
        let t0 = Instant::now();
        let wrong = Credentials::Text("guess".into()).encode().unwrap();
        let q = format!("ty=WB&v=29&ca=8&r=0&username=alice&password={wrong}");
        assert_eq!(
            refused(&r.connect(t0, parse(&q))),
            (116, CloseReason::ConnectionLost)
        );
        let ok = "ty=WB&v=29&ca=8&r=0&username=alice&password=AQZzM2NyZXQ%3D";
        assert_eq!(
            r.connect(t0, parse(ok)).response.code,
            ResponseCode::Connected
        );
    }

    #[test]
    fn section_1_client_limit_answers_113_connection_lost() {
        let mut r = registry(1);
        let t0 = Instant::now();
        r.connect(t0, parse("ty=WB&v=29&ca=8&r=0&username=bob"))
            .session
            .unwrap();
        let o = r.connect(t0, parse("ty=WB&v=29&ca=8&r=0&username=carol"));
        assert_eq!(refused(&o), (113, CloseReason::ConnectionLost));
        // Taking over an identity frees its slot.
        let o = r.connect(t0, parse("ty=WB&v=29&ca=8&r=0&username=bob"));
        assert_eq!(o.response.code, ResponseCode::Connected);
    }

    #[test]
    fn section_1_same_identity_takes_over_the_old_session() {
        let mut r = registry(10);
        let t0 = Instant::now();
        let q = "ty=WB&v=29&ca=8&r=0&username=bob";
        let old = r.connect(t0, parse(q)).session.unwrap();
        let new = r.connect(t0, parse(q)).session.unwrap();
        assert_ne!(old, new);
        let s = r.session_mut(&old).unwrap();
        assert_eq!(
            s.poll_transmit(),
            Some(Transmit::WebSocket(bytes::Bytes::from_static(&[0x1c])))
        );
        let c = s.poll_close().unwrap();
        assert_eq!(c.reason, CloseReason::SessionTakenOver);
        assert!(c.abort_sent);
        assert!(!r.session(&new).unwrap().is_closed());
        // Anonymous sessions never take each other over.
        let a = r.connect(t0, parse("ty=WB&v=29&ca=8&r=0")).session.unwrap();
        r.connect(t0, parse("ty=WB&v=29&ca=8&r=0")).session.unwrap();
        assert!(!r.session(&a).unwrap().is_closed());
    }

    #[test]
    fn section_2_request_faults_answer_115_or_102_and_abort() {
        let mut r = registry(10);
        let t0 = Instant::now();
        let o = r.connect(t0, parse("ty=WB&v=28&ca=8&r=0"));
        assert_eq!(refused(&o), (102, CloseReason::Aborted));
        let o = r.connect(t0, parse("ty=WB&ca=8&r=0"));
        assert_eq!(refused(&o), (115, CloseReason::Aborted));
        assert!(matches!(
            o.refused.unwrap().violation.unwrap().kind(),
            ViolationKind::HandshakeFieldMissing(_)
        ));
    }

    #[test]
    fn section_6_reconnect_with_uncoverable_gap_answers_118_lost_messages() {
        let limits = Limits::builder().recovery_buffer(1).build().unwrap();
        let mut r = Registry::new(limits, SessionConfig::default(), AllowAll);
        let t0 = Instant::now();
        let token = r
            .connect(t0, parse("ty=WB&v=29&ca=8&r=5000"))
            .session
            .unwrap();
        let s = r.session_mut(&token).unwrap();
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
        let q = format!("ty=WB&v=29&ca=8&r=5000&c={}&cs=1&ss=1", token.as_str());
        let o = r.connect(t0, parse(&q));
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
        let a = r.connect(t0, parse("ty=WB&v=29&ca=8&r=0")).session.unwrap();
        let b = r.connect(t0, parse("ty=WB&v=29&ca=8&r=0")).session.unwrap();
        let s = r.session_mut(&a).unwrap();
        s.handle_event(t0, SessionEvent::ClosedByController);
        r.reap();
        assert!(r.session(&a).is_some(), "close not taken yet");
        let s = r.session_mut(&a).unwrap();
        assert!(s.poll_close().is_some());
        r.reap();
        assert!(r.session(&a).is_some(), "the ABORT is not drained yet");
        while r.session_mut(&a).unwrap().poll_transmit().is_some() {}
        r.reap();
        assert!(r.session(&a).is_none());
        assert!(r.session(&b).is_some());
    }

    #[test]
    fn authenticator_mut_reaches_the_servers_hook() {
        struct Verdict(bool);
        impl Authenticator for Verdict {
            fn authenticate(&mut self, _: Option<&str>, _: &Credentials) -> bool {
                self.0
            }
        }
        let mut r = Registry::new(Limits::default(), SessionConfig::default(), Verdict(false));
        let q = "ty=WB&v=29&ca=8&r=0";
        assert_eq!(
            r.connect(Instant::now(), parse(q)).response.code,
            ResponseCode::AuthenticationFailed
        );
        r.authenticator_mut().0 = true;
        assert_eq!(
            r.connect(Instant::now(), parse(q)).response.code,
            ResponseCode::Connected
        );
    }

    #[test]
    fn registry_wakes_at_the_earliest_session_timer() {
        let mut r = registry(10);
        let t0 = Instant::now();
        r.connect(t0, parse("ty=WB&v=29&ca=8&r=0"));
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(90)));
        r.handle_timeout(t0 + Duration::from_secs(90));
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(180)));
    }
}
