//! MQTT scenario files: a scenario whose first command is `protocol mqtt`
//! drives the MQTT registry ([`sessionwire::mqtt::session::Registry`])
//! instead of the session protocol's; [`scenario::run`](crate::scenario::run)
//! dispatches on that line.
//!
//! # Format
//!
//! One command per line; `#` starts a comment; blank lines are ignored.
//! Connections are numbered by the scenario (`N`, any number). Time is
//! virtual: it starts at 0 and moves only with `advance`.
//!
//! | line | meaning |
//! |---|---|
//! | `protocol mqtt` | the first command: this is an MQTT scenario |
//! | `config KEY=VALUE ...` | before the first `open`: `max_message_size`, `max_clients`, `receive_maximum`, `max_inflight`, `max_queued_messages`, `max_queued_bytes`, `topic_alias_maximum`, `outbound_topic_aliases`, `server_keep_alive` (seconds, `off`), `max_session_expiry` (seconds), `connect_timeout_ms`, `maximum_qos`, `max_sessions` |
//! | `auth USER PASS` | accept this user name with this password; once any `auth` line is given nothing else is accepted |
//! | `deny CLIENTID` | refuse a CONNECT of this client as not authorized |
//! | `open N` | connection N opens |
//! | `recv N HEX` | connection N sends these bytes (hex digits, spaces allowed) |
//! | `lost N` | connection N drops (socket closed) |
//! | `outbound-full N` | the client on connection N stopped reading: the server's write buffer for it passed its bound (`Registry::outbound_full`) |
//! | `advance MS` | `MS` milliseconds pass; timers fire at their deadlines, in order |
//! | `deliver CLIENTID QOS TOPIC PAYLOAD` | the broker routes a message (payload as text, `-`: empty) to that client; one its full queue cannot take is dropped, the queue kept |
//! | `controller-close CLIENTID` | the control API closes the client |
//! | `shutdown` | the server shuts down: every connected client is closed |
//! | `expect N HEX` | the next transmit on connection N not yet expected is exactly these bytes |
//! | `expect-nothing N` | every transmit on connection N was expected |
//! | `expect-publish CLIENTID TOPIC`, `expect-will CLIENTID TOPIC` | the next message the registry handed to the broker not yet expected is a PUBLISH (a will) of that client to that topic |
//! | `expect-no-message` | every message handed to the broker was expected |
//!
//! The runner answers SUBSCRIBE and UNSUBSCRIBE as a broker would: every
//! subscription granted at the requested QoS (already capped at the
//! maximum QoS by the registry); an UNSUBACK code 0x00 for a filter the
//! client subscribed to earlier in the scenario (and its session has not
//! ended since), 0x11 for any other.
//!
//! After every line the registry is drained: transmits, events (a CONNECT
//! is accepted or refused at once by the `auth` lines) and closes. The
//! verdict is the first close decision, with its MQTT 5.0 reason code and
//! the line that caused it; a connection lost (`lost`) whose session is
//! kept for a later connection is no verdict, as in the session protocol.
//! A failed `expect` fails the scenario ([`ScenarioErrorKind::Expectation`]).
//!
//! ```
//! use sessionwire::{CloseReason, Limits};
//! use sessionwire_check::scenario;
//! let text = "\
//! protocol mqtt
//! open 1
//! recv 1 10 0d 00 04 4d 51 54 54 04 02 00 3c 00 01 63   # CONNECT 3.1.1, client c
//! expect 1 20 02 00 00                                  # CONNACK 0
//! advance 90000                                         # closes CLIENT_UNRESPONSIVE
//! ";
//! let outcome = scenario::run(text, &Limits::default(), std::time::Instant::now()).unwrap();
//! assert_eq!(outcome.verdict, Some(CloseReason::ClientUnresponsive));
//! assert_eq!((outcome.close_line, outcome.code), (Some(5), Some(0x8d)));
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use sessionwire::mqtt::session::{
    AnswerError, ConnId, Delivery, Event, Message, MqttConfig, Refuse, Registry, ServerClose,
};
use sessionwire::mqtt::{Properties, QoS, Str};
use sessionwire::session::ids::SeededRandom;
use sessionwire::{CloseReason, Limits};

pub use crate::scenario::outcome::MqttEntry;
use crate::scenario::outcome::{
    commands, parse_hex, parse_u64, replay, settings, EntryKind, ScenarioError, ScenarioErrorKind,
    ScenarioOutcome, TranscriptEntry, MAX_TIMER_STEPS,
};

/// The seed of the runner's random source: assigned client ids are the
/// same on every run.
const SEED: u64 = 0x5e55_1017;

/// A message handed to the broker: (will?, client, topic).
type Routed = (bool, String, String);

struct Runner {
    base: Instant,
    now: Instant,
    config: MqttConfig,
    accounts: Vec<(String, String)>,
    denied: Vec<String>,
    registry: Option<Registry<SeededRandom>>,
    /// Transmits not yet expected, by scenario connection number.
    unexpected: HashMap<u64, VecDeque<Bytes>>,
    /// Messages handed to the broker not yet expected.
    routed: VecDeque<Routed>,
    /// Filters subscribed to, by client, as the broker would hold them.
    subscribed: HashSet<(String, String)>,
    outcome: ScenarioOutcome,
}

/// Runs an MQTT scenario (see the module documentation).
pub(crate) fn run(
    text: &str,
    limits: &Limits,
    origin: Instant,
) -> Result<ScenarioOutcome, ScenarioError> {
    let mut r = Runner {
        base: origin,
        now: origin,
        config: MqttConfig {
            limits: limits.clone(),
            ..MqttConfig::default()
        },
        accounts: Vec::new(),
        denied: Vec::new(),
        registry: None,
        unexpected: HashMap::new(),
        routed: VecDeque::new(),
        subscribed: HashSet::new(),
        outcome: ScenarioOutcome::empty(),
    };
    replay(text, &mut r, Runner::line, Runner::drain)?;
    Ok(r.outcome)
}

/// Whether `text` is an MQTT scenario: its first command is `protocol mqtt`.
pub(crate) fn is_mqtt(text: &str) -> bool {
    commands(text)
        .next()
        .is_some_and(|(_, words)| words == ["protocol", "mqtt"])
}

fn qos(text: &str) -> Result<QoS, ScenarioErrorKind> {
    let n = parse_u64(text)?;
    u8::try_from(n)
        .ok()
        .and_then(QoS::from_u8)
        .ok_or(ScenarioErrorKind::BadNumber)
}

fn small<T: TryFrom<u64>>(text: &str) -> Result<T, ScenarioErrorKind> {
    T::try_from(parse_u64(text)?).map_err(|_| ScenarioErrorKind::BadNumber)
}

impl Runner {
    fn registry(&mut self) -> &mut Registry<SeededRandom> {
        let config = &self.config;
        self.registry
            .get_or_insert_with(|| Registry::new(config.clone(), SeededRandom::new(SEED)))
    }

    fn record(&mut self, line: usize, conn: u64, e: MqttEntry) {
        let e = entry(self.base, self.now, line, conn, e);
        self.outcome.transcript.push(e);
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
        let exactly = |n: usize| match args.len() {
            l if l < n => Err(ScenarioErrorKind::MissingArgument),
            l if l > n => Err(ScenarioErrorKind::TooManyArguments),
            _ => Ok(()),
        };
        let conn = |i: usize| parse_u64(arg(i)?).map(ConnId);
        let now = self.now;
        match command {
            "protocol" => {
                exactly(1)?;
                (arg(0)? == "mqtt" && self.outcome.transcript.is_empty() && line_is_first(self))
                    .then_some(())
                    .ok_or(ScenarioErrorKind::BadSetting)
            }
            "config" => self.set_config(args),
            "auth" => {
                exactly(2)?;
                if self.registry.is_some() {
                    return Err(ScenarioErrorKind::TooLate);
                }
                self.accounts.push((arg(0)?.to_owned(), arg(1)?.to_owned()));
                Ok(())
            }
            "deny" => {
                exactly(1)?;
                self.denied.push(arg(0)?.to_owned());
                Ok(())
            }
            "open" => {
                exactly(1)?;
                let c = conn(0)?;
                self.registry().open(now, c);
                Ok(())
            }
            "recv" => {
                let c = conn(0)?;
                let hex: String = args.get(1..).unwrap_or_default().concat();
                if hex.is_empty() {
                    return Err(ScenarioErrorKind::MissingArgument);
                }
                let bytes = parse_hex(&hex)?;
                self.registry().handle_bytes(now, c, &bytes);
                Ok(())
            }
            "lost" => {
                exactly(1)?;
                let c = conn(0)?;
                self.registry().connection_lost(now, c);
                Ok(())
            }
            "outbound-full" => {
                exactly(1)?;
                let c = conn(0)?;
                self.registry().outbound_full(now, c);
                Ok(())
            }
            "advance" => {
                exactly(1)?;
                let ms = parse_u64(arg(0)?)?;
                let end = now
                    .checked_add(Duration::from_millis(ms))
                    .ok_or(ScenarioErrorKind::BadNumber)?;
                let mut steps = 0;
                while let Some(t) = self.registry().poll_timeout() {
                    if t > end {
                        break;
                    }
                    steps += 1;
                    if steps > MAX_TIMER_STEPS {
                        return Err(ScenarioErrorKind::TooManyTimers);
                    }
                    self.now = self.now.max(t);
                    let at = self.now;
                    self.registry().handle_timeout(at);
                    self.drain(line);
                }
                self.now = end;
                Ok(())
            }
            "deliver" => {
                exactly(4)?;
                let q = qos(arg(1)?)?;
                let topic = Str::try_from(arg(2)?).map_err(|_| ScenarioErrorKind::BadSetting)?;
                let payload = match arg(3)? {
                    "-" => Bytes::new(),
                    p => Bytes::copy_from_slice(p.as_bytes()),
                };
                let message = Message {
                    topic,
                    payload,
                    qos: q,
                    retain: false,
                    properties: Properties::new(),
                    expires_at: None,
                };
                let delivery = Delivery {
                    qos: q,
                    retain: false,
                    subscription_ids: Vec::new(),
                };
                let client = arg(0)?;
                self.registry().deliver(now, client, &message, delivery);
                Ok(())
            }
            "controller-close" => {
                exactly(1)?;
                let client = arg(0)?;
                self.registry().close(now, client, ServerClose::Controller);
                Ok(())
            }
            "shutdown" => {
                exactly(0)?;
                let registry = self.registry();
                let mut connected: Vec<String> = registry
                    .sessions()
                    .filter(|s| s.conn.is_some())
                    .map(|s| s.client_id)
                    .collect();
                // In a stable order, whatever the registry's.
                connected.sort();
                for client in connected {
                    registry.close(now, &client, ServerClose::Shutdown);
                }
                Ok(())
            }
            "expect" => {
                let c = parse_u64(arg(0)?)?;
                let hex: String = args.get(1..).unwrap_or_default().concat();
                let want = parse_hex(&hex)?;
                self.drain(line);
                match self.unexpected.get_mut(&c).and_then(VecDeque::pop_front) {
                    Some(got) if got == want => Ok(()),
                    _ => Err(ScenarioErrorKind::Expectation),
                }
            }
            "expect-nothing" => {
                exactly(1)?;
                let c = parse_u64(arg(0)?)?;
                self.drain(line);
                match self.unexpected.get(&c) {
                    Some(q) if !q.is_empty() => Err(ScenarioErrorKind::Expectation),
                    _ => Ok(()),
                }
            }
            "expect-no-message" => {
                exactly(0)?;
                self.drain(line);
                self.routed
                    .is_empty()
                    .then_some(())
                    .ok_or(ScenarioErrorKind::Expectation)
            }
            "expect-publish" | "expect-will" => {
                exactly(2)?;
                let will = command == "expect-will";
                self.drain(line);
                match self.routed.pop_front() {
                    Some((w, client, topic))
                        if w == will && client == arg(0)? && topic == arg(1)? =>
                    {
                        Ok(())
                    }
                    _ => Err(ScenarioErrorKind::Expectation),
                }
            }
            _ => Err(ScenarioErrorKind::UnknownCommand),
        }
    }

    fn set_config(&mut self, args: &[&str]) -> Result<(), ScenarioErrorKind> {
        if self.registry.is_some() {
            return Err(ScenarioErrorKind::TooLate);
        }
        let mut limits = Limits::builder()
            .max_message_size(self.config.limits.max_message_size())
            .max_clients(self.config.limits.max_clients());
        for setting in settings(args) {
            let (key, value) = setting?;
            let c = &mut self.config;
            match key {
                "max_message_size" => limits = limits.max_message_size(small(value)?),
                "max_clients" => limits = limits.max_clients(small(value)?),
                "receive_maximum" => c.receive_maximum = small(value)?,
                "max_inflight" => c.max_inflight = small(value)?,
                "max_queued_messages" => c.max_queued_messages = small(value)?,
                "max_queued_bytes" => c.max_queued_bytes = small(value)?,
                "topic_alias_maximum" => c.topic_alias_maximum = small(value)?,
                "outbound_topic_aliases" => c.outbound_topic_aliases = small(value)?,
                "server_keep_alive" if value == "off" => c.server_keep_alive = None,
                "server_keep_alive" => c.server_keep_alive = Some(small(value)?),
                "max_session_expiry" => c.max_session_expiry = small(value)?,
                "connect_timeout_ms" => {
                    c.connect_timeout = Duration::from_millis(parse_u64(value)?)
                }
                "maximum_qos" => c.maximum_qos = qos(value)?,
                "max_sessions" => c.max_sessions = small(value)?,
                _ => return Err(ScenarioErrorKind::BadSetting),
            }
        }
        self.config.limits = limits
            .build()
            .map_err(|_| ScenarioErrorKind::InvalidLimits)?;
        Ok(())
    }

    /// Drains the registry into the transcript, answering CONNECTs.
    fn drain(&mut self, line: usize) {
        let now = self.now;
        loop {
            let Some(registry) = self.registry.as_mut() else {
                return;
            };
            let mut progress = false;
            while let Some((conn, bytes)) = registry.poll_transmit() {
                progress = true;
                self.unexpected
                    .entry(conn.0)
                    .or_default()
                    .push_back(bytes.clone());
                self.outcome.transcript.push(entry(
                    self.base,
                    now,
                    line,
                    conn.0,
                    MqttEntry::Transmit(bytes),
                ));
            }
            let mut events = Vec::new();
            while let Some(event) = registry.poll_event() {
                progress = true;
                events.push(event);
            }
            for event in events {
                self.event(line, event);
            }
            let Some(registry) = self.registry.as_mut() else {
                return;
            };
            let mut closes = Vec::new();
            while let Some(c) = registry.poll_close() {
                progress = true;
                closes.push(c);
            }
            for (conn, close) in closes {
                let kept = close.reason == CloseReason::ConnectionLost
                    && close.client_id.as_ref().is_some_and(|id| {
                        self.registry
                            .as_ref()
                            .is_some_and(|r| r.sessions().any(|s| &s.client_id == id))
                    });
                if kept {
                    self.record(line, conn.0, MqttEntry::Disconnected(close));
                    continue;
                }
                if self.outcome.verdict.is_none() {
                    self.outcome.verdict = Some(close.reason);
                    self.outcome.close_line = Some(line);
                    self.outcome.code = close.code;
                }
                self.record(line, conn.0, MqttEntry::Closed(close));
            }
            if !progress {
                return;
            }
        }
    }

    fn event(&mut self, line: usize, event: Event) {
        let now = self.now;
        let (conn, text) = match event {
            Event::Connect(incoming) => {
                let c = incoming.connect();
                let user = c.user_name();
                let password = c.password();
                let ok = self.accounts.is_empty()
                    || self.accounts.iter().any(|(u, p)| {
                        user.as_deref() == Some(u.as_str())
                            && password.as_deref() == Some(p.as_bytes())
                    });
                let denied = self.denied.iter().any(|d| d == c.client_id().as_str());
                let conn = incoming.conn().0;
                let text = format!("connect {}", c.client_id());
                let registry = self.registry();
                match (ok, denied) {
                    (true, false) => registry.accept(now, incoming),
                    (false, _) => registry.refuse(now, incoming, Refuse::BadCredentials),
                    (true, true) => registry.refuse(now, incoming, Refuse::NotAuthorized),
                }
                (conn, text)
            }
            Event::Connected {
                conn,
                client_id,
                version,
                session_present,
            } => (
                conn.0,
                format!("connected {client_id} {version:?} session_present={session_present}"),
            ),
            Event::Publish { from, message } => {
                self.outcome.delivered = self.outcome.delivered.saturating_add(1);
                let text = format!("publish {from} {} qos {}", message.topic, message.qos as u8);
                self.routed
                    .push_back((false, from, message.topic.as_str().to_owned()));
                (0, text)
            }
            Event::Will { from, message } => {
                let text = format!("will {from} {} qos {}", message.topic, message.qos as u8);
                self.routed
                    .push_back((true, from, message.topic.as_str().to_owned()));
                (0, text)
            }
            Event::Subscribe {
                client_id,
                packet_id,
                subscriptions,
            } => {
                let filters: Vec<&str> = subscriptions.iter().map(|s| s.filter.as_str()).collect();
                let text = format!("subscribe {client_id} {}", filters.join(" "));
                let codes: Vec<u8> = subscriptions.iter().map(|s| s.options.qos as u8).collect();
                for s in &subscriptions {
                    self.subscribed
                        .insert((client_id.clone(), s.filter.clone()));
                }
                let answered = self.registry().suback(&client_id, packet_id, &codes);
                self.answer(line, answered);
                (0, text)
            }
            Event::Unsubscribe {
                client_id,
                packet_id,
                filters,
            } => {
                let codes: Vec<u8> = filters
                    .iter()
                    .map(|f| {
                        if self.subscribed.remove(&(client_id.clone(), f.clone())) {
                            0x00
                        } else {
                            0x11
                        }
                    })
                    .collect();
                let answered = self.registry().unsuback(&client_id, packet_id, &codes);
                self.answer(line, answered);
                (0, format!("unsubscribe {client_id} {}", filters.join(" ")))
            }
            Event::SessionEnded { client_id } => {
                self.subscribed.retain(|(c, _)| *c != client_id);
                (0, format!("session-ended {client_id}"))
            }
        };
        self.record(line, conn, MqttEntry::Event(text));
    }
}

impl Runner {
    /// Records an answer the registry did not write: the request's
    /// connection was closed first (the runner's codes are always legal).
    fn answer(&mut self, line: usize, result: Result<(), AnswerError>) {
        if let Err(e) = result {
            self.record(line, 0, MqttEntry::Event(format!("answer refused: {e}")));
        }
    }
}

/// Only `protocol mqtt` as the first command is allowed; the runner is
/// only reached when [`is_mqtt`] said so, and nothing ran before it.
fn line_is_first(r: &Runner) -> bool {
    r.registry.is_none() && r.outcome.verdict.is_none()
}

fn entry(base: Instant, now: Instant, line: usize, conn: u64, e: MqttEntry) -> TranscriptEntry {
    TranscriptEntry {
        at: now.saturating_duration_since(base),
        line,
        session: usize::try_from(conn).unwrap_or(usize::MAX),
        kind: EntryKind::Mqtt(e),
    }
}
