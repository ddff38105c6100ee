//! The regression corpus: decode targets, verdicts and the `expected.tsv`
//! records that pin them.
//!
//! One implementation shared by the `sessionwire check` command, the
//! integration tests and the fuzz replay. A corpus directory `corpus/<target>/`
//! holds input files and one `expected.tsv`:
//!
//! ```text
//! # file<TAB>verdict<TAB>reason<TAB>offset<TAB>messages
//! valid-user-ping.bin<TAB>accept<TAB>-<TAB>-<TAB>1
//! unknown-type-3f.bin<TAB>close<TAB>INVALID_INBOUND_MESSAGE<TAB>0<TAB>0
//! ```
//!
//! `verdict` is `accept` or `close`; `reason` a close reason name or `-`;
//! `offset` the byte offset of the violation or `-`; `messages` the number of
//! messages accepted before the verdict. Two more columns are optional: the
//! sixth gives the file limits of its own ([`CaseLimits`], e.g.
//! `max-batch-size=7`, or `-`), for cases at an exact limit that the defaults
//! cannot reach with a small file; the seventh, for MQTT directories, the
//! MQTT 5.0 reason code of the fault (`0x81`, or `-`).
//!
//! ```
//! use sessionwire_check::corpus::{verdict, Target};
//! use sessionwire::{CloseReason, Limits};
//!
//! let v = verdict(Target::Message, &[0x3f, 1, 2, 3, 4], &Limits::default()).unwrap();
//! assert_eq!(v.reason, Some(CloseReason::InvalidInboundMessage));
//! assert_eq!(v.offset, Some(0));
//! assert_eq!(v.to_string(), "close INVALID_INBOUND_MESSAGE (7) at offset 0, 0 messages");
//!
//! let v = verdict(Target::HttpBody, b"AAAAAgA4AQ==", &Limits::default()).unwrap();
//! assert_eq!(v.to_string(), "accept, 1 message");
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use bytes::Bytes;

use sessionwire::mqtt::{Packet, Sender, Version};
pub use sessionwire::verdict::{split_incremental, split_mqtt_stream, Outcome, Verdict};
use sessionwire::{CloseReason, Direction, Limits};

use crate::closes;
use crate::scenario::{self, ScenarioError, ScenarioOutcome};

/// The name of the expected-verdict file in a corpus directory.
pub const EXPECTED_FILE: &str = "expected.tsv";

/// What a corpus file holds, and so which decoder runs on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Target {
    /// One raw binary WebSocket message ([`Message::decode`](sessionwire::message::Message::decode)).
    Message,
    /// An HTTP polling POST body, base64 text as received
    /// ([`polling::decode_body`](sessionwire::polling::decode_body)).
    HttpBody,
    /// Fuzz-only: chunk sizes, then an HTTP polling POST body fed to
    /// [`polling::BodyDecoder`](sessionwire::polling::BodyDecoder) in those chunks (layout: [`split_incremental`]).
    /// The verdict is the one-shot [`Target::HttpBody`] verdict of the body.
    Incremental,
    /// Fuzz-only: bytes from which `arbitrary` builds one valid message that
    /// must round-trip. Building never fails, so every input is accepted as
    /// one message.
    Roundtrip,
    /// A scenario file driving a session ([`crate::scenario`]); the
    /// verdict's offset is the 1-based line whose event closed the session and
    /// its message count is the number of messages delivered.
    Scenario,
    /// The byte stream an MQTT client sends, usually starting with its
    /// CONNECT, as raw bytes or hex text ([`crate::mqtt::read_input`]);
    /// messages count the packets decoded. Its directories are `mqtt/` and
    /// `mqtt-capture/`.
    Mqtt,
    /// Fuzz corpus: one packet a client sends after its MQTT 3.1.1 CONNECT
    /// ([`Packet::decode`]).
    MqttV311,
    /// Fuzz corpus: one packet a client sends after its MQTT 5.0 CONNECT.
    MqttV5,
    /// Fuzz corpus: a version and chunk sizes, then a client's MQTT stream
    /// (layout: [`split_mqtt_stream`]); the verdict is the one-shot verdict
    /// of the stream.
    MqttStream,
    /// Fuzz corpus: bytes from which `arbitrary` builds one valid MQTT packet
    /// that must round-trip: always accepted as one packet.
    MqttRoundtrip,
}

impl Target {
    /// Every target this version knows, in directory-name order.
    pub const ALL: [Target; 10] = [
        Target::HttpBody,
        Target::Incremental,
        Target::Message,
        Target::Mqtt,
        Target::MqttRoundtrip,
        Target::MqttStream,
        Target::MqttV311,
        Target::MqttV5,
        Target::Roundtrip,
        Target::Scenario,
    ];

    /// The target's name, which is also its corpus directory name.
    pub const fn name(self) -> &'static str {
        match self {
            Target::Message => "message",
            Target::HttpBody => "http-body",
            Target::Incremental => "incremental",
            Target::Roundtrip => "roundtrip",
            Target::Scenario => "scenario",
            Target::Mqtt => "mqtt",
            Target::MqttV311 => "mqtt-v311",
            Target::MqttV5 => "mqtt-v5",
            Target::MqttStream => "mqtt-stream",
            Target::MqttRoundtrip => "mqtt-roundtrip",
        }
    }

    /// The target whose inputs a corpus directory named `dir` holds: the
    /// target of that name, and [`Target::Mqtt`] for `mqtt-capture` (streams
    /// recorded from real clients).
    ///
    /// ```
    /// use sessionwire_check::corpus::Target;
    /// assert_eq!(Target::of_dir("mqtt-capture"), Some(Target::Mqtt));
    /// assert_eq!(Target::of_dir("http-body"), Some(Target::HttpBody));
    /// assert_eq!(Target::of_dir("other"), None);
    /// ```
    pub fn of_dir(dir: &str) -> Option<Target> {
        match dir {
            "mqtt-capture" => Some(Target::Mqtt),
            _ => dir.parse().ok(),
        }
    }

    /// The target of a path under `corpus/<target>/`: the directory after the
    /// last `corpus` component, if it names a known target.
    ///
    /// ```
    /// use std::path::Path;
    /// use sessionwire_check::corpus::Target;
    /// assert_eq!(Target::of_path(Path::new("corpus/http-body/x.txt")), Some(Target::HttpBody));
    /// assert_eq!(Target::of_path(Path::new("corpus/scenario/x")), Some(Target::Scenario));
    /// assert_eq!(Target::of_path(Path::new("corpus/other/x")), None);
    /// assert_eq!(Target::of_path(Path::new("x.bin")), None);
    /// ```
    pub fn of_path(path: &Path) -> Option<Target> {
        let parts: Vec<_> = path.components().map(|c| c.as_os_str()).collect();
        let at = parts.iter().rposition(|c| *c == "corpus")?;
        Target::of_dir(parts.get(at + 1)?.to_str()?)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a known [`Target`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownTarget(pub String);

impl fmt::Display for UnknownTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown target `{}`", self.0)?;
        let names: Vec<_> = Target::ALL.iter().map(|t| t.name()).collect();
        write!(f, " (known: {})", names.join(", "))
    }
}

impl std::error::Error for UnknownTarget {}

impl FromStr for Target {
    type Err = UnknownTarget;

    /// A target's [name](Target::name): `message`, `http-body`, `mqtt`, ...
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownTarget(s.to_owned()))
    }
}

/// An input that is not something the target can run at all (as opposed to
/// an input the server closes the client for).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputError {
    /// A scenario file that is not UTF-8; the offset of the first bad byte.
    NotUtf8 {
        /// Byte offset of the first byte that is not UTF-8.
        offset: usize,
    },
    /// A scenario file with a line that does not parse.
    Scenario(ScenarioError),
    /// A scenario file whose `# closes` comment says otherwise than it does.
    Closes(closes::Mismatch),
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::NotUtf8 { offset } => {
                write!(f, "scenario is not UTF-8 at byte {offset}")
            }
            InputError::Scenario(e) => write!(f, "bad scenario: {e}"),
            InputError::Closes(e) => write!(f, "wrong closes comment: {e}"),
        }
    }
}

impl std::error::Error for InputError {}

/// Runs a scenario file (see [`crate::scenario`]) and returns its
/// whole outcome, transcript included; its `# closes` comments must match it
/// ([`closes::check`]).
pub fn scenario_outcome(bytes: &[u8], limits: &Limits) -> Result<ScenarioOutcome, InputError> {
    let text = std::str::from_utf8(bytes).map_err(|e| InputError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    // The harness supplies the origin of virtual time; the session layer
    // never reads the clock.
    let outcome =
        scenario::run(text, limits, std::time::Instant::now()).map_err(InputError::Scenario)?;
    closes::check(text, &outcome).map_err(InputError::Closes)?;
    Ok(outcome)
}

/// Runs `bytes` through the decoder of `target` and says what the server
/// decides, with the violation behind a close. Only a [`Target::Scenario`]
/// input can fail to run.
pub fn outcome(target: Target, bytes: &[u8], limits: &Limits) -> Result<Outcome, InputError> {
    Ok(match target {
        Target::Message => Outcome::of_message(
            &Direction::ClientToServer.decode_message(&Bytes::copy_from_slice(bytes), limits),
        ),
        Target::HttpBody => {
            Outcome::of_batch(&Direction::ClientToServer.decode_body(bytes, limits))
        }
        Target::Incremental => outcome(Target::HttpBody, split_incremental(bytes).2, limits)?,
        Target::Roundtrip => Outcome {
            verdict: Verdict::accept(1),
            violation: None,
        },
        Target::Scenario => Outcome {
            verdict: scenario_outcome(bytes, limits)?.corpus_verdict(),
            violation: None,
        },
        Target::Mqtt => crate::mqtt::outcome(&crate::mqtt::read_input(bytes), None, limits),
        Target::MqttV311 | Target::MqttV5 => {
            let version = if target == Target::MqttV5 {
                Version::V5
            } else {
                Version::V311
            };
            let packet = Packet::decode(&Bytes::copy_from_slice(bytes), version, Sender::Client);
            Outcome::of_mqtt_packet(&packet)
        }
        Target::MqttStream => {
            let (version, _, stream) = split_mqtt_stream(bytes);
            Outcome::of_mqtt_stream(&Bytes::copy_from_slice(stream), version, limits)
        }
        Target::MqttRoundtrip => Outcome {
            verdict: Verdict::accept(1),
            violation: None,
        },
    })
}

/// Runs `bytes` through the decoder of `target` and says what the server
/// decides.
pub fn verdict(target: Target, bytes: &[u8], limits: &Limits) -> Result<Verdict, InputError> {
    outcome(target, bytes, limits).map(|o| o.verdict)
}

/// The limits a row of `expected.tsv` sets for its file (its sixth column),
/// over the defaults: comma-separated `max-message-size=N` and
/// `max-batch-size=N`.
///
/// ```
/// use sessionwire_check::corpus::CaseLimits;
/// let l: CaseLimits = "max-batch-size=7".parse().unwrap();
/// assert_eq!(l.limits().max_batch_size(), 7);
/// assert_eq!(l.to_string(), "max-batch-size=7");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseLimits {
    max_message_size: Option<usize>,
    max_batch_size: Option<usize>,
    limits: Limits,
}

impl CaseLimits {
    /// The limits to decode the file with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

impl FromStr for CaseLimits {
    type Err = ExpectedErrorKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ExpectedErrorKind::BadLimits(s.to_owned());
        let (mut max_message_size, mut max_batch_size) = (None, None);
        for item in s.split(',') {
            let (key, value) = item.split_once('=').ok_or_else(bad)?;
            let value = parse_decimal(value).ok_or_else(bad)?;
            let slot = match key {
                "max-message-size" => &mut max_message_size,
                "max-batch-size" => &mut max_batch_size,
                _ => return Err(bad()),
            };
            if slot.replace(value).is_some() {
                return Err(bad());
            }
        }
        let mut b = Limits::builder();
        if let Some(n) = max_message_size {
            b = b.max_message_size(n);
        }
        if let Some(n) = max_batch_size {
            b = b.max_batch_size(n);
        }
        Ok(CaseLimits {
            max_message_size,
            max_batch_size,
            limits: b.build().map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for CaseLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items = [
            ("max-message-size", self.max_message_size),
            ("max-batch-size", self.max_batch_size),
        ];
        let mut sep = "";
        for (key, value) in items {
            if let Some(n) = value {
                write!(f, "{sep}{key}={n}")?;
                sep = ",";
            }
        }
        Ok(())
    }
}

/// One row of `expected.tsv`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedRow {
    /// The corpus file's name, relative to its directory.
    pub file: String,
    /// The verdict the file must get.
    pub verdict: Verdict,
    /// Limits of the file's own, if the row sets any (else the defaults).
    pub limits: Option<CaseLimits>,
    /// The MQTT 5.0 reason code of the fault, when the row gives one.
    pub code: Option<u8>,
}

/// The expected verdicts of one corpus directory: the contents of its
/// `expected.tsv`, in file order.
///
/// ```
/// use sessionwire_check::corpus::{Expected, Verdict};
/// let e: Expected = "# comment\nok.bin\taccept\t-\t-\t1\n".parse().unwrap();
/// assert_eq!(e.get("ok.bin"), Some(&Verdict::accept(1)));
/// assert_eq!(e.to_string().parse::<Expected>().unwrap(), e);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    rows: Vec<ExpectedRow>,
    index: BTreeMap<String, usize>,
}

/// What is wrong with a line of `expected.tsv`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpectedErrorKind {
    /// Not five, six or seven tab-separated fields.
    FieldCount(usize),
    /// A sixth column that is neither `-` nor a list of limits (see
    /// [`CaseLimits`]).
    BadLimits(String),
    /// An empty file name, or one naming another directory.
    BadFileName(String),
    /// The same file listed twice.
    DuplicateFile(String),
    /// A verdict other than `accept` or `close`.
    BadVerdict(String),
    /// A reason that is neither `-` nor a close reason name.
    BadReason(String),
    /// An offset that is neither `-` nor a decimal number.
    BadOffset(String),
    /// A message count that is not a decimal number.
    BadMessages(String),
    /// `accept` with a reason or an offset.
    AcceptWithReason,
    /// `close` without a reason or without an offset.
    CloseWithoutReason,
    /// A code that is neither `-` nor `0x` and two hex digits.
    BadCode(String),
    /// `accept` with a reason code.
    AcceptWithCode,
}

impl fmt::Display for ExpectedErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedErrorKind::FieldCount(n) => {
                write!(f, "{n} tab-separated fields, expected 5 (file, verdict, reason, offset, messages), 6 (then limits) or 7 (then limits and code)")
            }
            ExpectedErrorKind::BadLimits(s) => write!(
                f,
                "limits `{s}` are not `max-message-size=N` and `max-batch-size=N` (comma-separated, valid)"
            ),
            ExpectedErrorKind::BadFileName(s) => write!(f, "bad file name `{s}`"),
            ExpectedErrorKind::DuplicateFile(s) => write!(f, "file `{s}` listed twice"),
            ExpectedErrorKind::BadVerdict(s) => {
                write!(f, "verdict `{s}` is neither `accept` nor `close`")
            }
            ExpectedErrorKind::BadReason(s) => write!(f, "`{s}` is not a close reason name"),
            ExpectedErrorKind::BadOffset(s) => {
                write!(f, "offset `{s}` is neither `-` nor a number")
            }
            ExpectedErrorKind::BadMessages(s) => write!(f, "message count `{s}` is not a number"),
            ExpectedErrorKind::AcceptWithReason => {
                f.write_str("`accept` must have `-` as reason and offset")
            }
            ExpectedErrorKind::CloseWithoutReason => {
                f.write_str("`close` needs a reason and an offset")
            }
            ExpectedErrorKind::BadCode(s) => {
                write!(f, "code `{s}` is neither `-` nor `0x` and two hex digits")
            }
            ExpectedErrorKind::AcceptWithCode => f.write_str("`accept` must have `-` as code"),
        }
    }
}

/// A fault in `expected.tsv`: the 1-based line and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedError {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub kind: ExpectedErrorKind,
}

impl fmt::Display for ExpectedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.kind)
    }
}

impl std::error::Error for ExpectedError {}

fn parse_row(line: &str) -> Result<ExpectedRow, ExpectedErrorKind> {
    let fields: Vec<&str> = line.split('\t').collect();
    let (file, word, reason, offset, messages, limits, code) = match fields[..] {
        [file, word, reason, offset, messages] => (file, word, reason, offset, messages, "-", "-"),
        [file, word, reason, offset, messages, limits] => {
            (file, word, reason, offset, messages, limits, "-")
        }
        [file, word, reason, offset, messages, limits, code] => {
            (file, word, reason, offset, messages, limits, code)
        }
        _ => return Err(ExpectedErrorKind::FieldCount(fields.len())),
    };
    if file.is_empty() || file.contains(['/', '\\']) || file == "." || file == ".." {
        return Err(ExpectedErrorKind::BadFileName(file.to_owned()));
    }
    let accept = match word {
        "accept" => true,
        "close" => false,
        _ => return Err(ExpectedErrorKind::BadVerdict(word.to_owned())),
    };
    let reason = match reason {
        "-" => None,
        name => Some(
            CloseReason::from_name(name)
                .ok_or_else(|| ExpectedErrorKind::BadReason(name.to_owned()))?,
        ),
    };
    let offset = match offset {
        "-" => None,
        n => Some(parse_decimal(n).ok_or_else(|| ExpectedErrorKind::BadOffset(n.to_owned()))?),
    };
    let messages = parse_decimal(messages)
        .ok_or_else(|| ExpectedErrorKind::BadMessages(messages.to_owned()))?;
    let limits = match limits {
        "-" => None,
        l => Some(l.parse()?),
    };
    let code = match code {
        "-" => None,
        c => Some(parse_code(c).ok_or_else(|| ExpectedErrorKind::BadCode(c.to_owned()))?),
    };
    match (accept, reason.is_some(), offset.is_some()) {
        (true, false, false) | (false, true, true) => {}
        (true, _, _) => return Err(ExpectedErrorKind::AcceptWithReason),
        (false, _, _) => return Err(ExpectedErrorKind::CloseWithoutReason),
    }
    if accept && code.is_some() {
        return Err(ExpectedErrorKind::AcceptWithCode);
    }
    Ok(ExpectedRow {
        file: file.to_owned(),
        verdict: Verdict {
            reason,
            offset,
            messages,
        },
        limits,
        code,
    })
}

/// `0x` and exactly two hex digits.
fn parse_code(s: &str) -> Option<u8> {
    let hex = s.strip_prefix("0x")?;
    if hex.len() != 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// ASCII digits only (no sign, no spaces), within `usize`.
fn parse_decimal(s: &str) -> Option<usize> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl Expected {
    /// No rows.
    pub fn new() -> Expected {
        Expected::default()
    }

    /// Adds a row under the default limits; a file already listed is an error.
    pub fn insert(&mut self, file: &str, verdict: Verdict) -> Result<(), ExpectedErrorKind> {
        self.insert_with_code(file, verdict, None)
    }

    /// Adds a row with an MQTT reason code, under the default limits; a file
    /// already listed is an error.
    pub fn insert_with_code(
        &mut self,
        file: &str,
        verdict: Verdict,
        code: Option<u8>,
    ) -> Result<(), ExpectedErrorKind> {
        self.insert_row(ExpectedRow {
            file: file.to_owned(),
            verdict,
            limits: None,
            code,
        })
    }

    /// Adds a row; a file already listed is an error.
    pub fn insert_row(&mut self, row: ExpectedRow) -> Result<(), ExpectedErrorKind> {
        if self.index.contains_key(&row.file) {
            return Err(ExpectedErrorKind::DuplicateFile(row.file));
        }
        self.index.insert(row.file.clone(), self.rows.len());
        self.rows.push(row);
        Ok(())
    }

    /// The limits `file` is decoded with, if its row sets its own.
    pub fn limits(&self, file: &str) -> Option<&CaseLimits> {
        self.index
            .get(file)
            .and_then(|&i| self.rows[i].limits.as_ref())
    }

    /// The expected verdict of `file`.
    pub fn get(&self, file: &str) -> Option<&Verdict> {
        self.index.get(file).map(|&i| &self.rows[i].verdict)
    }

    /// The expected MQTT reason code of `file`, when its row gives one.
    pub fn code(&self, file: &str) -> Option<u8> {
        self.index.get(file).and_then(|&i| self.rows[i].code)
    }

    /// The rows, in file order.
    pub fn rows(&self) -> &[ExpectedRow] {
        &self.rows
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl FromStr for Expected {
    type Err = ExpectedError;

    /// Parses `expected.tsv`: blank lines and lines starting with `#` are
    /// skipped; a trailing `\r` is tolerated.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut expected = Expected::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |kind| ExpectedError { line: i + 1, kind };
            let row = parse_row(line).map_err(err)?;
            expected.insert_row(row).map_err(err)?;
        }
        Ok(expected)
    }
}

impl fmt::Display for Expected {
    /// Writes `expected.tsv`: a header comment, then one row per file; with
    /// the `limits` and `code` columns on every row when a row has a code,
    /// else a `limits` column on the rows that set limits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let coded = self.rows.iter().any(|r| r.code.is_some());
        let column = if coded { "\tlimits\tcode" } else { "" };
        writeln!(f, "# file\tverdict\treason\toffset\tmessages{column}")?;
        for row in &self.rows {
            let v = &row.verdict;
            let reason = v.reason.map_or("-", CloseReason::name);
            write!(f, "{}\t{}\t{reason}\t", row.file, v.word())?;
            match v.offset {
                Some(o) => write!(f, "{o}")?,
                None => f.write_str("-")?,
            }
            write!(f, "\t{}", v.messages)?;
            match (coded, &row.limits, row.code) {
                (true, limits, code) => {
                    match limits {
                        Some(limits) => write!(f, "\t{limits}")?,
                        None => f.write_str("\t-")?,
                    }
                    match code {
                        Some(c) => writeln!(f, "\t0x{c:02x}")?,
                        None => writeln!(f, "\t-")?,
                    }
                }
                (false, Some(limits), _) => writeln!(f, "\t{limits}")?,
                (false, None, _) => writeln!(f)?,
            }
        }
        Ok(())
    }
}

/// Whether a file name is a corpus input: not `expected.tsv`, not a README,
/// not hidden.
pub fn is_corpus_file(name: &str) -> bool {
    name != EXPECTED_FILE && !name.starts_with("README") && !name.starts_with('.')
}

/// A corpus file and the verdict it must get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// The file's path (the directory's path joined with its name).
    pub path: PathBuf,
    /// The file's name, as listed in `expected.tsv`.
    pub name: String,
    /// The verdict it must get.
    pub expected: Verdict,
    /// The limits to decode it with: its row's, else the defaults.
    pub limits: Limits,
    /// The MQTT reason code it must get, when `expected.tsv` gives one.
    pub code: Option<u8>,
}

/// A loaded corpus directory: every input file with its expected verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorpusDir {
    /// The directory.
    pub dir: PathBuf,
    /// The cases, sorted by file name.
    pub cases: Vec<Case>,
}

/// Why a corpus directory could not be loaded.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError {
    /// Reading a file or listing the directory failed.
    Io {
        /// The path that could not be read.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// `expected.tsv` does not parse.
    Expected {
        /// The `expected.tsv` path.
        path: PathBuf,
        /// The fault.
        source: ExpectedError,
    },
    /// A corpus file that `expected.tsv` does not list.
    Unlisted {
        /// The file's path.
        path: PathBuf,
    },
    /// A row of `expected.tsv` naming a file that is not there.
    MissingFile {
        /// The `expected.tsv` path.
        expected: PathBuf,
        /// The file name in the row.
        file: String,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            LoadError::Expected { path, source } => write!(f, "{}: {source}", path.display()),
            LoadError::Unlisted { path } => {
                write!(f, "{}: not listed in {EXPECTED_FILE}", path.display())
            }
            LoadError::MissingFile { expected, file } => {
                write!(
                    f,
                    "{}: lists `{file}`, which does not exist",
                    expected.display()
                )
            }
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Io { source, .. } => Some(source),
            LoadError::Expected { source, .. } => Some(source),
            LoadError::Unlisted { .. } | LoadError::MissingFile { .. } => None,
        }
    }
}

/// Reads and parses `dir/expected.tsv`.
pub fn read_expected(dir: &Path) -> Result<Expected, LoadError> {
    let path = dir.join(EXPECTED_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Io {
        path: path.clone(),
        source,
    })?;
    text.parse()
        .map_err(|source| LoadError::Expected { path, source })
}

/// Loads a corpus directory: its `expected.tsv` and the input files directly
/// in it (see [`is_corpus_file`]; subdirectories are not part of it). Every
/// input file must be listed and every row must name an input file.
pub fn load_dir(dir: &Path) -> Result<CorpusDir, LoadError> {
    let expected = read_expected(dir)?;
    let io = |source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if !entry.file_type().map_err(io)?.is_file() {
            continue;
        }
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(LoadError::Unlisted { path });
        };
        if is_corpus_file(&name) {
            names.push(name);
        }
    }
    names.sort();
    let mut cases = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(&name);
        let Some(&verdict) = expected.get(&name) else {
            return Err(LoadError::Unlisted { path });
        };
        let limits = expected
            .limits(&name)
            .map_or_else(Limits::default, |l| l.limits().clone());
        let code = expected.code(&name);
        cases.push(Case {
            path,
            name,
            expected: verdict,
            limits,
            code,
        });
    }
    if let Some(row) = expected.rows().iter().find(|r| {
        cases
            .binary_search_by(|c| c.name.as_str().cmp(&r.file))
            .is_err()
    }) {
        return Err(LoadError::MissingFile {
            expected: dir.join(EXPECTED_FILE),
            file: row.file.clone(),
        });
    }
    Ok(CorpusDir {
        dir: dir.to_path_buf(),
        cases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ExpectedError {
        text.parse::<Expected>().expect_err("must be rejected")
    }

    #[test]
    fn expected_rows_parse_accept_and_close() {
        let e: Expected =
            "# header\n\na.bin\taccept\t-\t-\t1\r\nb.txt\tclose\tMESSAGE_TOO_LARGE\t7\t1\n"
                .parse()
                .unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e.get("a.bin"), Some(&Verdict::accept(1)));
        assert_eq!(
            e.get("b.txt"),
            Some(&Verdict {
                reason: Some(CloseReason::MessageTooLarge),
                offset: Some(7),
                messages: 1
            })
        );
        assert_eq!(e.get("c"), None);
        assert_eq!(e.rows()[1].file, "b.txt");
    }

    #[test]
    fn expected_code_column_is_optional_and_round_trips() {
        let text =
            "a\taccept\t-\t-\t1\nb\tclose\tABORTED\t8\t0\t-\t0x84\nc\tclose\tABORTED\t8\t0\t-\t-\n";
        let e: Expected = text.parse().unwrap();
        assert_eq!(
            (e.code("a"), e.code("b"), e.code("c")),
            (None, Some(0x84), None)
        );
        assert_eq!(
            e.to_string(),
            format!(
                "# file\tverdict\treason\toffset\tmessages\tlimits\tcode\na\taccept\t-\t-\t1\t-\t-\n{}",
                &text[15..]
            )
        );
        assert_eq!(e.to_string().parse::<Expected>(), Ok(e));
    }

    #[test]
    fn expected_rows_may_carry_limits_and_a_code_together() {
        let text = "a\tclose\tMESSAGE_TOO_LARGE\t0\t0\tmax-message-size=16\t0x95\n\
                    b\taccept\t-\t-\t1\tmax-batch-size=7\t-\n\
                    c\tclose\tABORTED\t8\t0\n";
        let e: Expected = text.parse().unwrap();
        assert_eq!(e.code("a"), Some(0x95));
        assert_eq!(
            e.limits("a").map(|l| l.limits().max_message_size()),
            Some(16)
        );
        assert_eq!(e.limits("b").map(|l| l.limits().max_batch_size()), Some(7));
        assert_eq!(
            (e.code("b"), e.limits("c"), e.code("c")),
            (None, None, None)
        );
        // Once a row has a code, every row is written with both columns.
        let written = e.to_string();
        assert!(
            written.ends_with("c\tclose\tABORTED\t8\t0\t-\t-\n"),
            "{written}"
        );
        assert_eq!(written.parse::<Expected>(), Ok(e));
    }

    #[test]
    fn expected_round_trips_through_its_text() {
        let mut e = Expected::new();
        e.insert("x", Verdict::accept(0)).unwrap();
        e.insert(
            "y",
            Verdict {
                reason: Some(CloseReason::InvalidInboundMessage),
                offset: Some(12),
                messages: 3,
            },
        )
        .unwrap();
        let text = e.to_string();
        assert_eq!(
            text,
            "# file\tverdict\treason\toffset\tmessages\nx\taccept\t-\t-\t0\ny\tclose\tINVALID_INBOUND_MESSAGE\t12\t3\n"
        );
        assert_eq!(text.parse::<Expected>(), Ok(e));
    }

    #[test]
    fn expected_rows_may_set_limits_of_their_own() {
        let text = "a\taccept\t-\t-\t1\tmax-message-size=16,max-batch-size=7\nb\taccept\t-\t-\t0\n";
        let e: Expected = text.parse().unwrap();
        let l = e.limits("a").unwrap();
        assert_eq!(
            (l.limits().max_message_size(), l.limits().max_batch_size()),
            (16, 7)
        );
        assert_eq!(e.limits("b"), None);
        assert_eq!(
            e.to_string(),
            format!("# file\tverdict\treason\toffset\tmessages\n{text}")
        );
        let only: CaseLimits = "max-batch-size=7".parse().unwrap();
        assert_eq!(
            only.limits().max_message_size(),
            Limits::DEFAULT_MAX_MESSAGE_SIZE
        );
    }

    #[test]
    fn expected_errors_name_the_line_and_the_fault() {
        let cases: [(&str, usize, ExpectedErrorKind); 16] = [
            (
                "a\taccept\t-\t-\t1\tmax-batch-size=7\t-\tx",
                1,
                ExpectedErrorKind::FieldCount(8),
            ),
            (
                "a\taccept\t-\t-\t1\tmax-batch-size=4",
                1,
                ExpectedErrorKind::BadLimits("max-batch-size=4".into()),
            ),
            (
                "a\taccept\t-\t-\t1\tmax-batch-size=7,max-batch-size=8",
                1,
                ExpectedErrorKind::BadLimits("max-batch-size=7,max-batch-size=8".into()),
            ),
            (
                "a\taccept\t-\t-\t1\tmax-queue=7",
                1,
                ExpectedErrorKind::BadLimits("max-queue=7".into()),
            ),
            ("a\taccept\t-\t-", 1, ExpectedErrorKind::FieldCount(4)),
            (
                "#c\na\taccept\t-\t-\t1\t-\t",
                2,
                ExpectedErrorKind::BadCode(String::new()),
            ),
            ("a accept - - 1", 1, ExpectedErrorKind::FieldCount(1)),
            (
                "\taccept\t-\t-\t1",
                1,
                ExpectedErrorKind::BadFileName(String::new()),
            ),
            (
                "d/a\taccept\t-\t-\t1",
                1,
                ExpectedErrorKind::BadFileName("d/a".into()),
            ),
            (
                "a\tok\t-\t-\t1",
                1,
                ExpectedErrorKind::BadVerdict("ok".into()),
            ),
            (
                "a\tclose\tinvalid\t0\t0",
                1,
                ExpectedErrorKind::BadReason("invalid".into()),
            ),
            (
                "a\tclose\tABORTED\t-1\t0",
                1,
                ExpectedErrorKind::BadOffset("-1".into()),
            ),
            (
                "a\tclose\tABORTED\t0\t+1",
                1,
                ExpectedErrorKind::BadMessages("+1".into()),
            ),
            (
                "a\taccept\tABORTED\t-\t1",
                1,
                ExpectedErrorKind::AcceptWithReason,
            ),
            (
                "a\tclose\tABORTED\t-\t0",
                1,
                ExpectedErrorKind::CloseWithoutReason,
            ),
            (
                "a\taccept\t-\t-\t1\n\na\taccept\t-\t-\t1",
                3,
                ExpectedErrorKind::DuplicateFile("a".into()),
            ),
        ];
        for (text, line, kind) in cases {
            assert_eq!(err(text), ExpectedError { line, kind }, "{text:?}");
        }
        assert_eq!(
            err("a\taccept\t-\t0\t1").kind,
            ExpectedErrorKind::AcceptWithReason
        );
        assert_eq!(
            err("a\tclose\t-\t0\t1").kind,
            ExpectedErrorKind::CloseWithoutReason
        );
        assert_eq!(
            err("a\tclose\tABORTED\t0\t0\t-\t84").kind,
            ExpectedErrorKind::BadCode("84".into())
        );
        assert_eq!(
            err("a\taccept\t-\t-\t1\t-\t0x81").kind,
            ExpectedErrorKind::AcceptWithCode
        );
        assert_eq!(
            err("a\taccept\t-\t-\t1x").to_string(),
            "line 1: message count `1x` is not a number"
        );
    }

    #[test]
    fn targets_parse_format_and_are_inferred_from_corpus_paths() {
        for t in Target::ALL {
            assert_eq!(t.name().parse::<Target>(), Ok(t));
            assert_eq!(t.to_string(), t.name());
        }
        assert_eq!(
            "http_body".parse::<Target>(),
            Err(UnknownTarget("http_body".into()))
        );
        assert_eq!(
            Target::of_path(Path::new("/x/corpus/message/sub/a.bin")),
            Some(Target::Message)
        );
        assert_eq!(
            Target::of_path(Path::new("corpus/corpus/http-body/a")),
            Some(Target::HttpBody)
        );
        assert_eq!(Target::of_path(Path::new("corpus")), None);
        assert_eq!(Target::of_path(Path::new("message/a.bin")), None);
    }

    #[test]
    fn section_3_verdicts_of_a_message() {
        let l = Limits::default();
        assert_eq!(
            verdict(Target::Message, &[0x00, 0x38, 0x01], &l),
            Ok(Verdict::accept(1))
        );
        let o = outcome(Target::Message, &[], &l).unwrap();
        assert_eq!(
            o.verdict.to_string(),
            "close INVALID_INBOUND_MESSAGE (7) at offset 0, 0 messages"
        );
        assert_eq!(o.violation.map(|v| v.kind().name()), Some("empty-message"));
        let small = Limits::builder().max_message_size(4).build().unwrap();
        assert_eq!(
            verdict(Target::Message, &[0x3f, 0, 0, 0, 0], &small)
                .unwrap()
                .reason,
            Some(CloseReason::MessageTooLarge)
        );
    }

    #[test]
    fn section_6_verdicts_of_an_http_body_count_messages_before_the_fault() {
        let l = Limits::default();
        // USER_PING, then a type 0x3f message at decoded offset 11.
        let v = verdict(Target::HttpBody, b"AAAAAgA4AQAAAAA/", &l).unwrap();
        assert_eq!(
            v,
            Verdict {
                reason: Some(CloseReason::InvalidInboundMessage),
                offset: Some(11),
                messages: 1
            }
        );
        assert_eq!(verdict(Target::HttpBody, b"", &l), Ok(Verdict::accept(0)));
    }

    #[test]
    fn section_1_scenario_verdict_names_the_closing_line() {
        let l = Limits::default();
        let text = b"connect ws /diffusion?ty=WB&v=29&ca=8&r=0\nws 1d\n";
        assert_eq!(
            verdict(Target::Scenario, text, &l).map(|v| v.to_string()),
            Ok("close CLOSED_BY_CLIENT (4) at offset 2, 0 messages".to_owned())
        );
        assert_eq!(
            verdict(Target::Scenario, b"connect ws \xff", &l),
            Err(InputError::NotUtf8 { offset: 11 })
        );
        assert!(matches!(
            verdict(Target::Scenario, b"no-such-command", &l),
            Err(InputError::Scenario(e)) if e.line == 1
        ));
    }

    #[test]
    fn load_dir_requires_expected_rows_and_files_to_match() {
        let dir = std::env::temp_dir().join(format!("sessionwire-corpus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        assert!(matches!(load_dir(&dir), Err(LoadError::Io { .. })));
        std::fs::write(dir.join("a.bin"), [0x1d]).unwrap();
        std::fs::write(dir.join("README.md"), "about").unwrap();
        std::fs::write(dir.join(EXPECTED_FILE), "a.bin\taccept\t-\t-\t1\n").unwrap();
        let c = load_dir(&dir).unwrap();
        assert_eq!(c.cases.len(), 1);
        assert_eq!(c.cases[0].name, "a.bin");
        assert_eq!(c.cases[0].path, dir.join("a.bin"));

        std::fs::write(dir.join("b.bin"), [0x1c]).unwrap();
        assert!(
            matches!(load_dir(&dir), Err(LoadError::Unlisted { path }) if path == dir.join("b.bin"))
        );
        std::fs::write(
            dir.join(EXPECTED_FILE),
            "a.bin\taccept\t-\t-\t1\nb.bin\taccept\t-\t-\t1\nc.bin\taccept\t-\t-\t1\n",
        )
        .unwrap();
        assert!(
            matches!(load_dir(&dir), Err(LoadError::MissingFile { file, .. }) if file == "c.bin")
        );
        std::fs::write(dir.join(EXPECTED_FILE), "a.bin\tmaybe\t-\t-\t1\n").unwrap();
        let e = load_dir(&dir).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("line 1: verdict `maybe` is neither `accept` nor `close`"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
