//! What every scenario runner shares: the outcome and transcript a run
//! produces, the errors a scenario file can have, and the line parsing both
//! the session protocol's runner ([`scenario`](crate::scenario)) and the MQTT
//! runner ([`mqtt_scenario`](crate::mqtt_scenario)) use. It imports neither.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;

use sessionwire::mqtt::session::Close as MqttClose;
use sessionwire::session::handshake::{ConnectionResponse, ResponseCode};
use sessionwire::session::registry::Refusal;
use sessionwire::session::state::{Close, Transmit};
use sessionwire::{CloseReason, MessageType};

/// Most timer firings one `advance` line may cause: a bound on the work a
/// scenario (or a fuzz input) can ask for.
pub const MAX_TIMER_STEPS: usize = 100_000;

/// What is wrong with a scenario file (not with the session it drives).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError {
    /// The 1-based line.
    pub line: usize,
    /// What is wrong.
    pub kind: ScenarioErrorKind,
}

/// The ways a scenario line can be wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScenarioErrorKind {
    /// The first word is no command.
    UnknownCommand,
    /// A word the command needs is missing.
    MissingArgument,
    /// More words than the command takes.
    TooManyArguments,
    /// A number that is not a decimal number in range.
    BadNumber,
    /// Hex that is not pairs of hex digits.
    BadHex,
    /// A `KEY=VALUE` with an unknown key or malformed value.
    BadSetting,
    /// A transport other than `ws` or `http`.
    BadTransport,
    /// An event name that is not in the list.
    UnknownEvent,
    /// A line that needs a current session before any was connected.
    NoSession,
    /// `limits` or `config` after the first `connect`.
    TooLate,
    /// The limits given do not build (see [`sessionwire::limits::InvalidLimits`]).
    InvalidLimits,
    /// A `server` message that does not decode.
    BadMessage,
    /// `advance` would fire more than [`MAX_TIMER_STEPS`] timers.
    TooManyTimers,
    /// An MQTT scenario's `expect` line does not hold (see
    /// [`mqtt_scenario`](crate::mqtt_scenario)).
    Expectation,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ScenarioErrorKind::UnknownCommand => "unknown command",
            ScenarioErrorKind::MissingArgument => "missing argument",
            ScenarioErrorKind::TooManyArguments => "too many arguments",
            ScenarioErrorKind::BadNumber => "bad number",
            ScenarioErrorKind::BadHex => "bad hex",
            ScenarioErrorKind::BadSetting => "unknown or malformed setting",
            ScenarioErrorKind::BadTransport => "transport must be ws or http",
            ScenarioErrorKind::UnknownEvent => "unknown event",
            ScenarioErrorKind::NoSession => "no session connected yet",
            ScenarioErrorKind::TooLate => "limits and config must come before the first connect",
            ScenarioErrorKind::InvalidLimits => "invalid limits",
            ScenarioErrorKind::BadMessage => "server message does not decode",
            ScenarioErrorKind::TooManyTimers => "advance fires too many timers",
            ScenarioErrorKind::Expectation => "expectation not met",
        };
        write!(f, "line {}: {what}", self.line)
    }
}

impl std::error::Error for ScenarioError {}

/// One thing that happened while a scenario ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A connection response was sent.
    Response(ConnectionResponse),
    /// A connection attempt was refused.
    Refused(Refusal),
    /// Something the session sent on its transport.
    Transmit(Transmit),
    /// A message delivered to the application (its type).
    Delivered(MessageType),
    /// The transport was dropped; the session is kept for a reconnection.
    Disconnected(CloseReason),
    /// The session closed for good.
    Closed(Close),
    /// What an MQTT scenario's registry did (the entry's session is the
    /// scenario's connection number).
    Mqtt(MqttEntry),
}

/// One transcript line: at what virtual time, caused by which scenario line,
/// for which session (1-based; 0: a refused attempt with no session).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranscriptEntry {
    /// Virtual time since the start.
    pub at: Duration,
    /// The 1-based scenario line.
    pub line: usize,
    /// The 1-based session number, 0 for none.
    pub session: usize,
    /// What happened.
    pub kind: EntryKind,
}

impl fmt::Display for TranscriptEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>8}ms  line {:<3} #{} ",
            self.at.as_millis(),
            self.line,
            self.session
        )?;
        match &self.kind {
            EntryKind::Response(r) => {
                write!(f, "response {}", r.code)?;
                match (r.code, &r.session) {
                    (ResponseCode::Reconnected, Some(s)) => {
                        write!(f, ", next client message {}", s.value)
                    }
                    (_, Some(s)) => write!(f, ", ping {} ms", s.ping_period_ms),
                    (_, None) => Ok(()),
                }
            }
            EntryKind::Refused(r) => {
                write!(f, "refused {}", r.reason)?;
                if let Some(v) = &r.violation {
                    write!(f, ": {}", v.kind())?;
                }
                Ok(())
            }
            EntryKind::Transmit(Transmit::WebSocket(b)) => write_bytes(f, "ws", b),
            EntryKind::Transmit(Transmit::PollResponse { sequence, body }) => {
                write!(f, "poll {sequence} -> 200 {body:?}")
            }
            EntryKind::Transmit(Transmit::SendAck { sequence }) => {
                write!(f, "send {sequence} -> 200")
            }
            EntryKind::Delivered(t) => write!(f, "delivered {t:?}"),
            EntryKind::Disconnected(r) => write!(f, "disconnected {r}, kept for reconnection"),
            EntryKind::Closed(c) => write!(f, "closed {c}"),
            EntryKind::Mqtt(e) => e.fmt(f),
        }
    }
}

/// `LABEL -> 01 02 ...`: the first 32 bytes of `b` in hex, then its length.
pub(crate) fn write_bytes(f: &mut fmt::Formatter<'_>, label: &str, b: &[u8]) -> fmt::Result {
    write!(f, "{label} ->")?;
    for byte in b.iter().take(32) {
        write!(f, " {byte:02x}")?;
    }
    if b.len() > 32 {
        write!(f, " ... ({} bytes)", b.len())?;
    }
    Ok(())
}

/// The result of running a scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioOutcome {
    /// The first close decision; `None`: accepted (nothing closed).
    pub verdict: Option<CloseReason>,
    /// The 1-based line whose event caused that close.
    pub close_line: Option<usize>,
    /// Inbound messages delivered to the application, all sessions together.
    pub delivered: u64,
    /// The MQTT 5.0 reason code of the first close decision (MQTT
    /// scenarios only; see [`Close`](sessionwire::mqtt::session::Close)).
    pub code: Option<u8>,
    /// Everything the sessions did, in order.
    pub transcript: Vec<TranscriptEntry>,
}

impl ScenarioOutcome {
    /// Nothing happened yet.
    pub(crate) fn empty() -> ScenarioOutcome {
        ScenarioOutcome {
            verdict: None,
            close_line: None,
            delivered: 0,
            code: None,
            transcript: Vec::new(),
        }
    }

    /// The outcome as a corpus verdict, the form `expected.tsv` records:
    /// for a scenario the offset is the closing line.
    ///
    /// ```
    /// use sessionwire_check::scenario;
    /// use sessionwire::Limits;
    /// let t0 = std::time::Instant::now();
    /// let o = scenario::run("connect ws ty=WB&v=29&ca=8&r=0\nws 1d\n", &Limits::default(), t0).unwrap();
    /// assert_eq!(o.corpus_verdict().to_string(), "close CLOSED_BY_CLIENT (4) at offset 2, 0 messages");
    /// ```
    pub fn corpus_verdict(&self) -> sessionwire::Verdict {
        sessionwire::Verdict {
            reason: self.verdict,
            offset: self.verdict.and(self.close_line),
            messages: usize::try_from(self.delivered).unwrap_or(usize::MAX),
        }
    }
}

impl fmt::Display for ScenarioOutcome {
    /// The transcript, one entry a line, then the verdict.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.transcript {
            writeln!(f, "{e}")?;
        }
        match (self.verdict, self.close_line) {
            (Some(r), Some(line)) => write!(
                f,
                "verdict: close {} at line {line}, {} delivered",
                r.name(),
                self.delivered
            ),
            _ => write!(f, "verdict: accept, {} delivered", self.delivered),
        }
    }
}

/// The commands of a scenario: each line's 1-based number and words, comments
/// and blank lines left out.
pub(crate) fn commands(text: &str) -> impl Iterator<Item = (usize, Vec<&str>)> {
    text.lines().enumerate().filter_map(|(i, raw)| {
        let content = raw.split('#').next().unwrap_or("").trim();
        (!content.is_empty()).then(|| (i + 1, content.split_whitespace().collect()))
    })
}

/// Feeds each command of `text` to a runner's `line`, then lets it `drain`
/// what the command caused; the first command in error stops the replay,
/// reported with its line. Both scenario formats replay this way.
pub(crate) fn replay<R>(
    text: &str,
    runner: &mut R,
    line: fn(&mut R, usize, &[&str]) -> Result<(), ScenarioErrorKind>,
    drain: fn(&mut R, usize),
) -> Result<(), ScenarioError> {
    for (n, words) in commands(text) {
        line(runner, n, &words).map_err(|kind| ScenarioError { line: n, kind })?;
        drain(runner, n);
    }
    Ok(())
}

pub(crate) fn parse_u64(text: &str) -> Result<u64, ScenarioErrorKind> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ScenarioErrorKind::BadNumber);
    }
    text.parse().map_err(|_| ScenarioErrorKind::BadNumber)
}

pub(crate) fn parse_hex(text: &str) -> Result<Bytes, ScenarioErrorKind> {
    if text == "-" {
        return Ok(Bytes::new());
    }
    let digits = text.as_bytes();
    if digits.len() % 2 != 0 {
        return Err(ScenarioErrorKind::BadHex);
    }
    let nibble = |b: u8| -> Result<u8, ScenarioErrorKind> {
        (b as char)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or(ScenarioErrorKind::BadHex)
    };
    digits
        .chunks(2)
        .map(|p| Ok(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect::<Result<Vec<u8>, _>>()
        .map(Bytes::from)
}

pub(crate) fn settings<'a>(
    words: &[&'a str],
) -> Vec<Result<(&'a str, &'a str), ScenarioErrorKind>> {
    words
        .iter()
        .map(|w| w.split_once('=').ok_or(ScenarioErrorKind::BadSetting))
        .collect()
}

/// One thing an MQTT scenario's registry did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MqttEntry {
    /// Bytes written to the connection.
    Transmit(Bytes),
    /// An event for the server, as text (`publish c a/b qos 1`, ...).
    Event(String),
    /// The connection closed; its session, if any, is kept.
    Disconnected(MqttClose),
    /// The connection closed.
    Closed(MqttClose),
}

impl fmt::Display for MqttEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let close = |f: &mut fmt::Formatter<'_>, c: &MqttClose| {
            write!(f, "{}", c.reason)?;
            if let Some(code) = c.code {
                write!(f, " code 0x{code:02x}")?;
            }
            if let Some(id) = &c.client_id {
                write!(f, " client {id}")?;
            }
            Ok(())
        };
        match self {
            MqttEntry::Transmit(b) => write_bytes(f, "mqtt", b),
            MqttEntry::Event(e) => write!(f, "event {e}"),
            MqttEntry::Disconnected(c) => {
                f.write_str("disconnected ")?;
                close(f, c)?;
                f.write_str(", session kept")
            }
            MqttEntry::Closed(c) => {
                f.write_str("closed ")?;
                close(f, c)
            }
        }
    }
}
