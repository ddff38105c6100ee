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
                            violation: None,
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

    /// Forgets sessions whose close was taken and whose transmits are drained.
    fn reap(&mut self) {
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
