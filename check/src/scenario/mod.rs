//! Scenario files: a small line-based text format in which a regression case
//! drives sessions through a [`Registry`], and [`run`] to replay one.
//!
//! # Format
//!
//! One command per line; words are separated by spaces; blank lines and lines
//! starting with `#` are ignored. Time is virtual: it starts at 0 and moves
//! only with `advance`.
//!
//! | line | meaning |
//! |---|---|
//! | `limits KEY=VALUE ...` | override limits (before the first `connect`): `max_message_size`, `max_batch_size`, `queue_messages`, `queue_bytes`, `reorder_window`, `reorder_wait_ms`, `recovery_buffer`, `max_clients` |
//! | `config KEY=VALUE ...` | session settings (before the first `connect`): `ping_ms` (0: no pings), `poll_timeout_ms`, `poll_gap_ms`, `test_reconnect`, `allow_loss` and `principal_takeover` (`on`/`off`), `server_id`, `max_reconnect_wait_ms` (60000), `max_buffered_bytes` (64 MiB) |
//! | `auth PRINCIPAL PASSWORD` | accept this principal with this text password; once any `auth` line is given, nothing else is accepted (anonymous included) |
//! | `connect ws TARGET` | a WebSocket connect: `TARGET` is the request target (`/diffusion?ty=WB&...`) or its query string |
//! | `connect http NAME=VALUE ...` | an HTTP polling connect (`m=0`) with these headers |
//! | `reconnect ws TARGET`, `reconnect http NAME=VALUE ...` | the same, for a reconnection: `$token` is replaced by the current session's token |
//! | `session N` | make the N-th session connected (1-based) the current one |
//! | `ws HEX` | the client sends one binary WebSocket message (hex digits; `-` for an empty message) |
//! | `send S BODY` | an HTTP send (`m=2`) with `s` header `S` (verbatim) and base64 body `BODY` (`-`: empty) |
//! | `poll S` | an HTTP poll (`m=1`) with `s` header `S` (verbatim) |
//! | `advance MS` | `MS` milliseconds pass; timers fire at their deadlines, in order |
//! | `event NAME` | `transport-lost`, `io-error`, `controller-close`, `failover`, `expire`, `revoke`, `resource-failure` |
//! | `server HEX` | the application sends this message (hex of its encoding) to the current session's client |
//! | `writable on` / `writable off` | whether the WebSocket takes messages (default on); while off, the outbound queue is not drained |
//!
//! A file whose first command is `protocol mqtt` is an MQTT scenario, in
//! the format of [`mqtt_scenario`](crate::mqtt_scenario).
//!
//! Every line is followed by draining every session: transmits (for a
//! writable WebSocket or any HTTP session), application events and close
//! decisions. The verdict is the first close decision: a session closing for
//! good, or a connection attempt refused; the line of the event that caused
//! it is reported with it.
//!
//! ```
//! use sessionwire_check::scenario;
//! use sessionwire::{CloseReason, Limits};
//! let text = "\
//! connect ws ty=WB&v=29&ca=8&r=0
//! ws 003801            # USER_PING, conversation 1: answered, not delivered
//! ws 1d                # CLOSE_REQUEST
//! ";
//! let origin = std::time::Instant::now(); // the caller's clock
//! let outcome = scenario::run(text, &Limits::default(), origin).unwrap();
//! assert_eq!(outcome.verdict, Some(CloseReason::ClosedByClient));
//! assert_eq!(outcome.close_line, Some(3));
//! assert_eq!(outcome.delivered, 0);
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;

use sessionwire::message::Message;
use sessionwire::session::handshake::{ConnectionRequest, Credentials};
use sessionwire::session::ids::{SeededRandom, SessionToken};
use sessionwire::session::registry::{Connect, Refuse, Registry};
use sessionwire::session::state::{Event, SessionConfig, SessionEvent};
use sessionwire::{CloseReason, Limits};

pub(crate) mod outcome;

use outcome::{parse_hex, parse_u64, replay, settings};
pub use outcome::{
    EntryKind, ScenarioError, ScenarioErrorKind, ScenarioOutcome, TranscriptEntry, MAX_TIMER_STEPS,
};

/// Checks text credentials against the `auth` lines (none: everyone in).
fn authenticate(
    accounts: &[(String, String)],
    principal: Option<&str>,
    credentials: &Credentials,
) -> bool {
    if accounts.is_empty() {
        return true;
    }
    match (principal, credentials) {
        (Some(p), Credentials::Text(pw)) => accounts.iter().any(|(a, b)| a == p && b == pw),
        _ => false,
    }
}

/// The seed of the scenario runner's random source: every run mints the
/// same ids and tokens.
const SEED: u64 = 0x5e55_1017;

struct Runner {
    base: Instant,
    now: Instant,
    limits: Limits,
    config: SessionConfig,
    accounts: Vec<(String, String)>,
    registry: Option<Registry<SeededRandom>>,
    sessions: Vec<SessionToken>,
    current: Option<usize>,
    writable: bool,
    outcome: ScenarioOutcome,
}

/// Runs a scenario with `limits` as the starting limits and virtual time
/// starting at `origin` (any instant: only durations from it matter; the
/// session layer never reads the clock).
pub fn run(text: &str, limits: &Limits, origin: Instant) -> Result<ScenarioOutcome, ScenarioError> {
    if crate::mqtt_scenario::is_mqtt(text) {
        return crate::mqtt_scenario::run(text, limits, origin);
    }
    let mut r = Runner {
        base: origin,
        now: origin,
        limits: limits.clone(),
        config: SessionConfig::default(),
        accounts: Vec::new(),
        registry: None,
        sessions: Vec::new(),
        current: None,
        writable: true,
        outcome: ScenarioOutcome::empty(),
    };
    replay(text, &mut r, Runner::line, Runner::drain)?;
    Ok(r.outcome)
}

fn on_off(text: &str) -> Result<bool, ScenarioErrorKind> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(ScenarioErrorKind::BadSetting),
    }
}

impl Runner {
    fn elapsed(&self) -> Duration {
        self.now.saturating_duration_since(self.base)
    }

    fn registry(&mut self) -> &mut Registry<SeededRandom> {
        let (limits, config) = (&self.limits, &self.config);
        self.registry.get_or_insert_with(|| {
            Registry::new(limits.clone(), config.clone(), SeededRandom::new(SEED))
        })
    }

    fn current(&self) -> Result<SessionToken, ScenarioErrorKind> {
        self.current
            .and_then(|i| self.sessions.get(i))
            .copied()
            .ok_or(ScenarioErrorKind::NoSession)
    }

    fn record(&mut self, line: usize, session: usize, kind: EntryKind) {
        let at = self.elapsed();
        self.outcome.transcript.push(TranscriptEntry {
            at,
            line,
            session,
            kind,
        });
    }

    fn decide(&mut self, line: usize, reason: CloseReason) {
        if self.outcome.verdict.is_none() {
            self.outcome.verdict = Some(reason);
            self.outcome.close_line = Some(line);
        }
    }

    fn line(&mut self, line: usize, words: &[&str]) -> Result<(), ScenarioErrorKind> {
        let (&command, args) = words
            .split_first()
            .ok_or(ScenarioErrorKind::UnknownCommand)?;
        let arg = |i: usize| {
            args.get(i)
                .copied()
                .ok_or(ScenarioErrorKind::MissingArgument)
        };
        let at_most = |n: usize| {
            if args.len() > n {
                Err(ScenarioErrorKind::TooManyArguments)
            } else {
                Ok(())
            }
        };
        match command {
            "limits" => self.set_limits(args),
            "config" => self.set_config(args),
            "auth" => {
                at_most(2)?;
                if self.registry.is_some() {
                    return Err(ScenarioErrorKind::TooLate);
                }
                self.accounts.push((arg(0)?.to_owned(), arg(1)?.to_owned()));
                Ok(())
            }
            "connect" | "reconnect" => {
                let transport = arg(0)?;
                let token = self.current().ok();
                let substitute = |w: &str| match token {
                    Some(t) => w.replace("$token", t.as_str()),
                    None => w.to_owned(),
                };
                let request = match transport {
                    "ws" => {
                        at_most(2)?;
                        ConnectionRequest::from_query(&substitute(arg(1)?))
                    }
                    "http" => {
                        let headers: Vec<(String, String)> = args[1..]
                            .iter()
                            .map(|w| {
                                let (k, v) =
                                    w.split_once('=').ok_or(ScenarioErrorKind::BadSetting)?;
                                Ok((k.to_owned(), substitute(v)))
                            })
                            .collect::<Result<_, ScenarioErrorKind>>()?;
                        ConnectionRequest::from_headers(
                            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                        )
                    }
                    _ => return Err(ScenarioErrorKind::BadTransport),
                };
                let now = self.now;
                let outcome = match self.registry().handle_connect(now, request) {
                    Connect::Answered(o) => o,
                    Connect::Incoming(incoming) => {
                        let req = incoming.request();
                        let principal = req.principal.clone();
                        if authenticate(&self.accounts, req.principal.as_deref(), &req.credentials)
                        {
                            self.registry().accept(now, incoming, principal)
                        } else {
                            self.registry().refuse(incoming, Refuse::BadCredentials)
                        }
                    }
                };
                let number = match outcome.session {
                    Some(t) => match self.sessions.iter().position(|s| *s == t) {
                        Some(i) => i + 1,
                        None => {
                            self.sessions.push(t);
                            self.sessions.len()
                        }
                    },
                    None => 0,
                };
                if number > 0 {
                    self.current = Some(number - 1);
                }
                self.record(line, number, EntryKind::Response(outcome.response));
                if let Some(refusal) = outcome.refused {
                    self.record(line, number, EntryKind::Refused(refusal));
                    self.decide(line, refusal.reason);
                }
                Ok(())
            }
            "session" => {
                at_most(1)?;
                let n = parse_u64(arg(0)?)? as usize;
                if n == 0 || n > self.sessions.len() {
                    return Err(ScenarioErrorKind::NoSession);
                }
                self.current = Some(n - 1);
                Ok(())
            }
            "ws" => {
                at_most(1)?;
                let data = parse_hex(arg(0)?)?;
                let (t, now) = (self.current()?, self.now);
                if let Some(mut s) = self.registry().session_mut(&t) {
                    s.handle_websocket(now, data);
                }
                Ok(())
            }
            "send" => {
                at_most(2)?;
                let s = arg(0)?;
                let body = match arg(1)? {
                    "-" => Bytes::new(),
                    b => Bytes::copy_from_slice(b.as_bytes()),
                };
                let (t, now) = (self.current()?, self.now);
                if let Some(mut session) = self.registry().session_mut(&t) {
                    session.handle_http_send(now, s, body);
                }
                Ok(())
            }
            "poll" => {
                at_most(1)?;
                let s = arg(0)?;
                let (t, now) = (self.current()?, self.now);
                if let Some(mut session) = self.registry().session_mut(&t) {
                    session.handle_http_poll(now, s);
                }
                Ok(())
            }
            "advance" => {
                at_most(1)?;
                let ms = parse_u64(arg(0)?)?;
                let target = self
                    .now
                    .checked_add(Duration::from_millis(ms))
                    .ok_or(ScenarioErrorKind::BadNumber)?;
                let mut steps = 0usize;
                while let Some(t) = self.registry().poll_timeout().filter(|t| *t <= target) {
                    steps += 1;
                    if steps > MAX_TIMER_STEPS {
                        return Err(ScenarioErrorKind::TooManyTimers);
                    }
                    self.now = t.max(self.now);
                    let now = self.now;
                    let _woken = self.registry().handle_timeout(now); // every session is drained after each line
                    self.drain(line);
                }
                self.now = target;
                let _woken = self.registry().handle_timeout(target);
                Ok(())
            }
            "event" => {
                at_most(1)?;
                let event = match arg(0)? {
                    "transport-lost" => SessionEvent::TransportLost,
                    "io-error" => SessionEvent::IoFailure,
                    "controller-close" => SessionEvent::ClosedByController,
                    "failover" => SessionEvent::FailedOver,
                    "expire" => SessionEvent::Expired,
                    "revoke" => SessionEvent::Revoked,
                    "resource-failure" => SessionEvent::ResourceFailure,
                    _ => return Err(ScenarioErrorKind::UnknownEvent),
                };
                let (t, now) = (self.current()?, self.now);
                if let Some(mut s) = self.registry().session_mut(&t) {
                    s.handle_event(now, event);
                }
                Ok(())
            }
            "server" => {
                at_most(1)?;
                let bytes = parse_hex(arg(0)?)?;
                let message = Message::decode(&bytes, &Limits::default())
                    .map_err(|_| ScenarioErrorKind::BadMessage)?;
                let (t, now) = (self.current()?, self.now);
                if let Some(mut s) = self.registry().session_mut(&t) {
                    s.send(now, message);
                }
                Ok(())
            }
            "writable" => {
                at_most(1)?;
                self.writable = on_off(arg(0)?)?;
                Ok(())
            }
            _ => Err(ScenarioErrorKind::UnknownCommand),
        }
    }

    fn set_limits(&mut self, args: &[&str]) -> Result<(), ScenarioErrorKind> {
        if self.registry.is_some() {
            return Err(ScenarioErrorKind::TooLate);
        }
        let l = &self.limits;
        let mut b = Limits::builder()
            .max_message_size(l.max_message_size())
            .max_batch_size(l.max_batch_size())
            .max_queue_messages(l.max_queue_messages())
            .max_queue_bytes(l.max_queue_bytes())
            .reorder_window(l.reorder_window())
            .reorder_wait(l.reorder_wait())
            .recovery_buffer(l.recovery_buffer())
            .max_clients(l.max_clients());
        for kv in settings(args) {
            let (k, v) = kv?;
            let n = parse_u64(v)?;
            let size = usize::try_from(n).map_err(|_| ScenarioErrorKind::BadNumber)?;
            b = match k {
                "max_message_size" => b.max_message_size(size),
                "max_batch_size" => b.max_batch_size(size),
                "queue_messages" => b.max_queue_messages(size),
                "queue_bytes" => b.max_queue_bytes(size),
                "reorder_window" => {
                    b.reorder_window(u32::try_from(n).map_err(|_| ScenarioErrorKind::BadNumber)?)
                }
                "reorder_wait_ms" => b.reorder_wait(Duration::from_millis(n)),
                "recovery_buffer" => b.recovery_buffer(size),
                "max_clients" => b.max_clients(size),
                _ => return Err(ScenarioErrorKind::BadSetting),
            };
        }
        self.limits = b.build().map_err(|_| ScenarioErrorKind::InvalidLimits)?;
        Ok(())
    }

    fn set_config(&mut self, args: &[&str]) -> Result<(), ScenarioErrorKind> {
        if self.registry.is_some() {
            return Err(ScenarioErrorKind::TooLate);
        }
        for kv in settings(args) {
            let (k, v) = kv?;
            match k {
                "ping_ms" => {
                    let ms = parse_u64(v)?;
                    self.config.ping_period = (ms > 0).then(|| Duration::from_millis(ms));
                }
                "poll_timeout_ms" => {
                    self.config.poll_timeout = Duration::from_millis(parse_u64(v)?)
                }
                "poll_gap_ms" => self.config.poll_gap = Duration::from_millis(parse_u64(v)?),
                "test_reconnect" => self.config.test_reconnect = on_off(v)?,
                "allow_loss" => self.config.allow_message_loss = on_off(v)?,
                "principal_takeover" => self.config.principal_takeover = on_off(v)?,
                "max_reconnect_wait_ms" => {
                    self.config.max_reconnect_wait = Duration::from_millis(parse_u64(v)?)
                }
                "max_buffered_bytes" => {
                    self.config.max_buffered_bytes =
                        usize::try_from(parse_u64(v)?).map_err(|_| ScenarioErrorKind::BadNumber)?
                }
                "server_id" => {
                    self.config.server_id =
                        i64::try_from(parse_u64(v)?).map_err(|_| ScenarioErrorKind::BadNumber)?
                }
                _ => return Err(ScenarioErrorKind::BadSetting),
            }
        }
        Ok(())
    }

    /// Drains every session's outputs into the transcript.
    fn drain(&mut self, line: usize) {
        let writable = self.writable;
        let Some(registry) = self.registry.as_mut() else {
            return;
        };
        let mut entries = Vec::new();
        let mut closes = Vec::new();
        let tokens: Vec<SessionToken> = registry.tokens().collect();
        for token in tokens {
            let Some(mut session) = registry.session_mut(&token) else {
                continue;
            };
            let number = self
                .sessions
                .iter()
                .position(|t| *t == token)
                .map_or(0, |i| i + 1);
            let http =
                session.transport() == sessionwire::session::handshake::ConnectionType::HttpPolling;
            if writable || http || session.is_closed() {
                while let Some(t) = session.poll_transmit() {
                    entries.push((number, EntryKind::Transmit(t)));
                }
            }
            while let Some(e) = session.poll_event() {
                entries.push((
                    number,
                    match e {
                        Event::Message(m) => EntryKind::Delivered(m.message_type()),
                        Event::Disconnected { reason, .. } => EntryKind::Disconnected(reason),
                    },
                ));
            }
            if let Some(c) = session.poll_close() {
                closes.push(c.reason);
                entries.push((number, EntryKind::Closed(c)));
            }
        }
        // Sessions are visited in map order: sort by session number so that
        // transcripts are stable.
        entries.sort_by_key(|(n, _)| *n);
        for (number, kind) in entries {
            if matches!(kind, EntryKind::Delivered(_)) {
                self.outcome.delivered = self.outcome.delivered.saturating_add(1);
            }
            self.record(line, number, kind);
        }
        for reason in closes {
            self.decide(line, reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> ScenarioError {
        run(text, &Limits::default(), Instant::now()).unwrap_err()
    }

    #[test]
    fn scenario_errors_name_the_line_and_the_fault() {
        let c = "connect ws ty=WB&v=29&ca=8&r=0\n";
        for (text, line, kind) in [
            ("frobnicate\n", 1, ScenarioErrorKind::UnknownCommand),
            ("# x\n\nws 00\n", 3, ScenarioErrorKind::NoSession),
            (&format!("{c}ws 0\n"), 2, ScenarioErrorKind::BadHex),
            (&format!("{c}ws zz\n"), 2, ScenarioErrorKind::BadHex),
            (
                &format!("{c}limits max_clients=2\n"),
                2,
                ScenarioErrorKind::TooLate,
            ),
            (
                "limits max_clients=0\n",
                1,
                ScenarioErrorKind::InvalidLimits,
            ),
            ("limits nope=1\n", 1, ScenarioErrorKind::BadSetting),
            ("config ping_ms=x\n", 1, ScenarioErrorKind::BadNumber),
            (
                "config test_reconnect=yes\n",
                1,
                ScenarioErrorKind::BadSetting,
            ),
            ("connect tcp x\n", 1, ScenarioErrorKind::BadTransport),
            (
                &format!("{c}event meteor\n"),
                2,
                ScenarioErrorKind::UnknownEvent,
            ),
            (
                &format!("{c}advance\n"),
                2,
                ScenarioErrorKind::MissingArgument,
            ),
            (
                &format!("{c}advance 1 2\n"),
                2,
                ScenarioErrorKind::TooManyArguments,
            ),
            (&format!("{c}server 3f\n"), 2, ScenarioErrorKind::BadMessage),
            (&format!("{c}session 2\n"), 2, ScenarioErrorKind::NoSession),
        ] {
            let e = error(text);
            assert_eq!((e.line, e.kind), (line, kind), "{text:?}");
            assert!(e.to_string().starts_with(&format!("line {line}: ")));
        }
    }

    #[test]
    fn scenario_advance_is_bounded() {
        let text = "config ping_ms=1\nconnect ws ty=WB&v=29&ca=8&r=0\nadvance 1000000000\n";
        // Pings every ms are answered by nobody: the session closes at the
        // second ping, so the bound is not even reached.
        let o = run(text, &Limits::default(), Instant::now()).unwrap();
        assert_eq!(o.verdict, Some(CloseReason::ClientUnresponsive));
        let busy = "config ping_ms=1\nconnect http ty=B v=29 ca=8 r=0\npoll 0\nadvance 1000000\n";
        // Pings queued for a client that never polls again, under a queue
        // limit they cannot reach within the bound.
        let limits = "limits queue_messages=1000000 queue_bytes=100000000\n";
        let e = error(&format!("{limits}config poll_gap_ms=100000000\n{busy}"));
        assert_eq!((e.line, e.kind), (6, ScenarioErrorKind::TooManyTimers));
    }

    #[test]
    fn scenario_transcript_shows_time_line_session_and_verdict() {
        let text = "config ping_ms=1000\nconnect ws ty=WB&v=29&ca=8&r=0\nadvance 1000\nws 1d\n";
        let o = run(text, &Limits::default(), Instant::now()).unwrap();
        let shown = o.to_string();
        assert!(
            shown.contains("response 100 CONNECTED, ping 1000 ms"),
            "{shown}"
        );
        assert!(
            shown.contains("    1000ms  line 3   #1 ws -> 00 37 01"),
            "{shown}"
        );
        assert!(
            shown.ends_with("verdict: close CLOSED_BY_CLIENT at line 4, 0 delivered"),
            "{shown}"
        );
    }

    #[test]
    fn scenario_current_session_can_be_selected() {
        let text = "\
connect ws ty=WB&v=29&ca=8&r=0&username=a
connect ws ty=WB&v=29&ca=8&r=0&username=b
session 1
event revoke
";
        let o = run(text, &Limits::default(), Instant::now()).unwrap();
        assert_eq!(
            (o.verdict, o.close_line),
            (Some(CloseReason::Revoked), Some(4))
        );
        assert!(o
            .transcript
            .iter()
            .any(|e| e.session == 1 && matches!(e.kind, EntryKind::Closed(_))));
    }
}
