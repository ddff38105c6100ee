//! The event log (`--events PATH`, `-` for stdout): one JSON object per line
//! per session event. A file is written and flushed as each event happens;
//! stdout goes through a writer thread so that a reader that does not keep
//! up never stalls the server.
//!
//! Every line has `ts` (RFC 3339, UTC, milliseconds) and `event`:
//!
//! | event | when | other fields |
//! |---|---|---|
//! | `opened` | a new session connected (100) | `session`, `principal`, `transport`, `code` |
//! | `reconnected` | a session resumed (105, 106) | same |
//! | `disconnected` | the transport was lost; the session waits for a reconnection | `session`, `principal`, `transport`, `reason`, `reason_id`, `violation`, `offset` |
//! | `closed` | the session closed for good | same, and `abort_sent` |
//! | `refused` | a connection attempt was refused | `principal`, `transport`, `code`, `reason`, `reason_id`, `violation`, `offset` |
//!
//! MQTT connections log `opened` (CONNACK 0 sent), `closed` and `refused`
//! with `"protocol":"mqtt"`, `client_id`, `version` (`3.1.1` or `5.0`),
//! `transport` (`mqtt` over TCP, `mqtt-ws`), `principal` (the user name),
//! `reason`, `reason_id` and `reason_code` (the MQTT 5.0 reason code of the
//! close; a 3.1.1 client is logged with the code a 5.0 one would have got).
//! A connection closed before its CONNECT was taken, and one whose CONNECT
//! never came within the CONNECT timeout (CLIENT_UNRESPONSIVE), is logged
//! `refused` with no client id.
//!
//! `principal` is `null` for an anonymous session; `violation` (the fault's
//! stable name) and `offset` appear only when a fault caused the close.
//!
//! ```text
//! {"ts":"2026-11-27T09:00:00.123Z","event":"closed","session":"0000000000000000-1f2e3d4c5b6a7988","principal":"alice","transport":"ws","reason":"CLOSED_BY_CLIENT","reason_id":4,"abort_sent":false}
//! ```

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::SystemTime;

use sessionwire::session::handshake::ConnectionType;
use sessionwire::session::SessionId;
use sessionwire::{CloseReason, Violation};

/// Lines waiting for the writer before new ones are dropped (and counted).
const BACKLOG: usize = 16 * 1024;

/// The `transport` name in logs and the control API.
pub fn transport_name(t: ConnectionType) -> &'static str {
    match t {
        ConnectionType::WebSocket => "ws",
        ConnectionType::HttpPolling => "http",
    }
}

/// One event, before it is formatted.
#[derive(Clone, Copy, Debug, Default)]
pub struct Record<'a> {
    /// `opened`, `reconnected`, `disconnected`, `closed` or `refused`.
    pub event: &'static str,
    /// The session, when there is one.
    pub session: Option<SessionId>,
    /// The principal (`None`: anonymous).
    pub principal: Option<&'a str>,
    /// The transport.
    pub transport: Option<ConnectionType>,
    /// The connection response code.
    pub code: Option<u8>,
    /// The close reason.
    pub reason: Option<CloseReason>,
    /// The fault that caused the close.
    pub violation: Option<Violation>,
    /// Whether an ABORT was sent.
    pub abort_sent: Option<bool>,
    /// `mqtt` for an MQTT connection (absent: the session protocol).
    pub protocol: Option<&'static str>,
    /// MQTT: the transport's name (`mqtt`, `mqtt-ws`), in place of
    /// [`transport`](Self::transport).
    pub transport_name: Option<&'static str>,
    /// MQTT: the client identifier.
    pub client_id: Option<&'a str>,
    /// MQTT: the protocol version (`3.1.1`, `5.0`).
    pub version: Option<&'static str>,
    /// MQTT: the 5.0 reason code of the close (sent to a 5.0 client, or the
    /// one a 3.1.1 client would have got).
    pub reason_code: Option<u8>,
}

/// The JSON shape of a line: fields in this order, absent ones left out
/// (`principal` is always there, `null` when anonymous).
#[derive(serde::Serialize)]
struct Line<'a> {
    ts: String,
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<String>,
    principal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transport: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason_id: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason_code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    violation: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    abort_sent: Option<bool>,
}

/// Formats one event as its JSON line (without the newline).
pub fn line(ts: SystemTime, r: &Record<'_>) -> String {
    let l = Line {
        ts: humantime::format_rfc3339_millis(ts).to_string(),
        event: r.event,
        protocol: r.protocol,
        session: r.session.map(|s| s.to_string()),
        principal: r.principal,
        client_id: r.client_id,
        version: r.version,
        transport: r.transport.map(transport_name).or(r.transport_name),
        code: r.code,
        reason: r.reason.map(CloseReason::name),
        reason_id: r.reason.map(CloseReason::id),
        reason_code: r.reason_code,
        violation: r.violation.map(|v| v.kind().name()),
        offset: r.violation.map(|v| v.offset()),
        abort_sent: r.abort_sent,
    };
    serde_json::to_string(&l).unwrap_or_default()
}

/// Logs the decisions an operator looks for (refused, disconnected, closed)
/// at info level, the rest at debug level.
fn trace(r: &Record<'_>) {
    let session = r.session.map(|s| s.to_string());
    let transport = r.transport.map(transport_name).or(r.transport_name);
    let reason = r.reason.map(CloseReason::name);
    let violation = r.violation.map(|v| v.to_string());
    match r.event {
        "refused" | "disconnected" | "closed" => tracing::info!(
            event = r.event,
            session,
            principal = r.principal,
            transport,
            client_id = r.client_id,
            code = r.code,
            reason,
            reason_code = r.reason_code,
            violation,
            abort_sent = r.abort_sent,
            "session {}",
            r.event
        ),
        _ => tracing::debug!(
            event = r.event,
            session,
            principal = r.principal,
            transport,
            code = r.code,
            "session {}",
            r.event
        ),
    }
}

/// Where lines go.
enum Sink {
    /// Nowhere (no `--events`).
    Off,
    /// A file, written and flushed by the hub itself: a line is in the file
    /// before the client hears the outcome it records.
    File(BufWriter<std::fs::File>),
    /// Stdout, through a writer thread, so that a reader that does not keep
    /// up never stalls the hub (lines beyond the backlog are dropped).
    Thread {
        tx: SyncSender<String>,
        /// `None` in a [`share`](EventLog::share)d log: the first one
        /// joins the writer.
        writer: Option<JoinHandle<()>>,
    },
}

/// The event log. [`EventLog::close`] flushes it.
pub struct EventLog {
    sink: Sink,
    dropped: u64,
    failed: bool,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl EventLog {
    /// Opens the log: `None` logs nothing, `-` is stdout, anything else a
    /// file opened for appending (created if missing).
    pub fn open(spec: Option<&str>) -> io::Result<EventLog> {
        let sink = match spec {
            None => Sink::Off,
            Some("-") => {
                let (tx, rx) = sync_channel::<String>(BACKLOG);
                let writer =
                    std::thread::Builder::new()
                        .name("event-log".into())
                        .spawn(move || {
                            let mut out = BufWriter::new(io::stdout());
                            while let Ok(first) = rx.recv() {
                                let _ = writeln!(out, "{first}");
                                // Write what else is waiting, then flush once.
                                while let Ok(more) = rx.try_recv() {
                                    let _ = writeln!(out, "{more}");
                                }
                                let _ = out.flush();
                            }
                            let _ = out.flush();
                        })?;
                Sink::Thread {
                    tx,
                    writer: Some(writer),
                }
            }
            Some(path) => Sink::File(BufWriter::new(
                OpenOptions::new().create(true).append(true).open(path)?,
            )),
        };
        Ok(EventLog {
            sink,
            dropped: 0,
            failed: false,
        })
    }

    /// Logs one event, stamped now. Refusals, lost transports and closes
    /// also go to the process log at info level, so that they show at the
    /// default log level with no event log.
    pub fn record(&mut self, r: &Record<'_>) {
        trace(r);
        match &mut self.sink {
            Sink::Off => {}
            Sink::File(out) => {
                let ok =
                    writeln!(out, "{}", line(SystemTime::now(), r)).is_ok() && out.flush().is_ok();
                if !ok && !self.failed {
                    tracing::warn!("event log write failed");
                }
                self.failed = !ok;
            }
            Sink::Thread { tx, .. } => match tx.try_send(line(SystemTime::now(), r)) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(_)) => {
                    self.dropped = self.dropped.saturating_add(1);
                    if self.dropped.is_power_of_two() {
                        tracing::warn!(dropped = self.dropped, "event log backlog full");
                    }
                }
            },
        }
    }

    /// Flushes everything logged (blocks until then).
    pub fn close(self) {
        match self.sink {
            Sink::Off => {}
            Sink::File(mut out) => {
                let _ = out.flush();
            }
            Sink::Thread { tx, writer } => {
                drop(tx);
                if let Some(writer) = writer {
                    let _ = writer.join();
                }
            }
        }
    }

    /// A second writer to the same log, for another thread (the MQTT event
    /// loop): the same file (appended to, each line flushed whole) or the
    /// same writer thread. Close it before the first, whose
    /// [`close`](Self::close) waits for the writer thread.
    pub fn share(&self) -> io::Result<EventLog> {
        let sink = match &self.sink {
            Sink::Off => Sink::Off,
            Sink::File(out) => Sink::File(BufWriter::new(out.get_ref().try_clone()?)),
            Sink::Thread { tx, .. } => Sink::Thread {
                tx: tx.clone(),
                writer: None,
            },
        };
        Ok(EventLog {
            sink,
            dropped: 0,
            failed: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};
    use sessionwire::{Field, ViolationKind};
    use std::time::{Duration, UNIX_EPOCH};

    fn parse(line: &str) -> Map<String, Value> {
        match serde_json::from_str(line).unwrap() {
            Value::Object(m) => m,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn event_line_closed_names_the_reason_and_its_id() {
        let ts = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let r = Record {
            event: "closed",
            session: Some(SessionId {
                server: 1,
                value: 0x1f,
            }),
            principal: Some("alice"),
            transport: Some(ConnectionType::WebSocket),
            reason: Some(CloseReason::ClosedByController),
            abort_sent: Some(true),
            ..Record::default()
        };
        let text = line(ts, &r);
        assert!(!text.contains('\n'), "one line");
        assert!(text.starts_with(r#"{"ts":"#), "{text}");
        let m = parse(&text);
        assert_eq!(m["ts"], "2023-11-14T22:13:20.123Z");
        assert_eq!(m["event"], "closed");
        assert_eq!(m["session"], "0000000000000001-000000000000001f");
        assert_eq!(m["principal"], "alice");
        assert_eq!(m["transport"], "ws");
        assert_eq!(m["reason"], "CLOSED_BY_CONTROLLER");
        assert_eq!(m["reason_id"], 11);
        assert_eq!(m["abort_sent"], true);
        assert!(!m.contains_key("violation"));
    }

    #[test]
    fn event_line_carries_the_fault_and_a_null_principal() {
        let r = Record {
            event: "closed",
            transport: Some(ConnectionType::HttpPolling),
            reason: Some(CloseReason::InvalidInboundMessage),
            violation: Some(Violation::new(ViolationKind::Truncated(Field::TopicId), 3)),
            ..Record::default()
        };
        let m = parse(&line(SystemTime::now(), &r));
        assert_eq!(m["principal"], Value::Null);
        assert_eq!(m["transport"], "http");
        assert_eq!(m["reason_id"], 7);
        assert_eq!(m["violation"], "truncated");
        assert_eq!(m["offset"], 3);
    }

    #[test]
    fn event_log_file_gets_every_line_after_close() {
        let dir = std::env::temp_dir().join(format!("sw-events-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("events.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut log = EventLog::open(Some(path.to_str().unwrap())).unwrap();
        for _ in 0..100 {
            log.record(&Record {
                event: "opened",
                code: Some(100),
                ..Record::default()
            });
        }
        log.close();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 100);
        assert!(text.lines().all(|l| parse(l)["code"] == 100));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
