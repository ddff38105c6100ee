//! MQTT inputs for `check`: reading a client's byte stream from a file (raw
//! bytes or hex text), walking it, and saying what the server sends back at
//! the first fault.
//!
//! A file is read as **hex text** when, once each `#` comment (to the end of
//! its line) is removed, it holds only ASCII hex digits and ASCII whitespace,
//! with an even, non-zero number of digits; anything else is the **raw
//! bytes**. A raw client stream starts with its CONNECT, byte 0x10, which is
//! neither a hex digit nor whitespace, so a real capture is never mistaken
//! for hex.
//!
//! ```
//! use sessionwire::Limits;
//! use sessionwire_check::mqtt::{read_input, report};
//!
//! // CONNECT (3.1.1, client id "c"), then a PUBLISH with QoS 3.
//! let text = b"# CONNECT\n10 0d 0004 4d515454 04 02 003c 0001 63\n# PUBLISH, QoS 3\n36 00\n";
//! let stream = read_input(text);
//! assert_eq!(stream.len(), 17);
//! let r = report(&stream, None, &Limits::default());
//! assert_eq!(r.outcome.verdict.to_string(),
//!     "close INVALID_INBOUND_MESSAGE (7) at offset 15, 1 message");
//! assert_eq!(r.code, Some(0x81));
//! assert_eq!(r.response.to_string(), "close the connection (3.1.1 has no server DISCONNECT)");
//! ```

use std::fmt;

use bytes::Bytes;

use sessionwire::mqtt::{self, Packet, PacketType, Sender, Version};
use sessionwire::{Limits, Outcome, Violation};

/// The bytes of an MQTT input file: its hex text decoded, or the file itself
/// (see the module documentation for how the two are told apart).
pub fn read_input(file: &[u8]) -> Bytes {
    match hex(file) {
        Some(bytes) => Bytes::from(bytes),
        None => Bytes::copy_from_slice(file),
    }
}

/// The bytes hex text stands for, if `file` is hex text.
fn hex(file: &[u8]) -> Option<Vec<u8>> {
    let mut digits = Vec::new();
    for line in file.split(|&b| b == b'\n') {
        let code = line.split(|&b| b == b'#').next().unwrap_or_default();
        for &b in code {
            if b.is_ascii_hexdigit() {
                digits.push(b);
            } else if !b.is_ascii_whitespace() {
                return None;
            }
        }
    }
    if digits.is_empty() || digits.len() % 2 != 0 {
        return None;
    }
    let value = |d: u8| match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        _ => d - b'A' + 10,
    };
    Some(
        digits
            .chunks_exact(2)
            .map(|p| (value(p[0]) << 4) | value(p[1]))
            .collect(),
    )
}

/// What the server sends at the first fault of a client's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response {
    /// Nothing: the stream was accepted.
    None,
    /// A CONNACK refusing the CONNECT with this code (a 5.0 reason code, or
    /// a 3.1.1 return code), then the connection is closed.
    RefuseConnAck(u8),
    /// A 5.0 DISCONNECT with this reason code, then the connection is closed.
    Disconnect(u8),
    /// The connection is closed without a word (3.1.1, which has no server
    /// DISCONNECT and no CONNACK code for a malformed CONNECT).
    Close,
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::None => f.write_str("nothing"),
            Response::RefuseConnAck(c) => write!(f, "refuse CONNACK 0x{c:02x}"),
            Response::Disconnect(c) => write!(f, "DISCONNECT 0x{c:02x}"),
            Response::Close => f.write_str("close the connection (3.1.1 has no server DISCONNECT)"),
        }
    }
}

/// What `check` says about a client's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The verdict, with the violation behind a close.
    pub outcome: Outcome,
    /// The packets decoded before the verdict: offset and type.
    pub packets: Vec<(usize, PacketType)>,
    /// The version in force at the verdict, if known.
    pub version: Option<Version>,
    /// The MQTT 5.0 reason code of the fault.
    pub code: Option<u8>,
    /// What the server sends back.
    pub response: Response,
}

/// The verdict on `stream` as a server sees it: walked by [`mqtt::packets`]
/// with no version (it must start with its CONNECT), or as the rest of a
/// connection of `version` (packets taken as they come).
pub fn outcome(stream: &Bytes, version: Option<Version>, limits: &Limits) -> Outcome {
    Outcome::of_mqtt_stream(stream, version, limits)
}

/// Walks `stream` as [`outcome`] does and says what was decoded, the reason
/// code of the fault and the server's response.
pub fn report(stream: &Bytes, version: Option<Version>, limits: &Limits) -> Report {
    let mut walk = mqtt::packets(stream, version, Sender::Client, limits);
    let mut packets = Vec::new();
    let mut fault = None;
    loop {
        let at = walk.offset();
        match walk.next() {
            Some(Ok(p)) => packets.push((at, p.packet_type())),
            Some(Err(v)) => {
                fault = Some((at, v));
                break;
            }
            None => break,
        }
    }
    let known = walk.version();
    let outcome = outcome(stream, version, limits);
    debug_assert_eq!(outcome.violation, fault.map(|(_, v)| v));
    let response = match fault {
        None => Response::None,
        Some((at, v)) => {
            let rest = &stream[at..];
            let in_connect = rest
                .first()
                .is_some_and(|b| b >> 4 == PacketType::Connect as u8);
            let level = if in_connect {
                connect_level(rest)
            } else {
                known.map(Version::level)
            };
            respond(&v, in_connect, level, version)
        }
    };
    Report {
        code: fault.and_then(|(_, v)| v.kind().reason_code()),
        outcome,
        packets,
        version: known,
        response,
    }
}

/// The server's answer to `v`, found in a CONNECT (`in_connect`) that
/// names protocol `level`, or in a later packet of a connection of that
/// level. A CONNECT naming a level we do not speak gets the answer of
/// `forced` when given, else of 5.0 for a later level and of 3.1.1 for an
/// earlier one.
fn respond(
    v: &Violation,
    in_connect: bool,
    level: Option<u8>,
    forced: Option<Version>,
) -> Response {
    let code = v.kind().reason_code().unwrap_or(0x81);
    let v5 = match level {
        Some(5) => true,
        Some(4) => false,
        Some(n) => forced.map_or(n > 5, |f| f == Version::V5),
        None => forced == Some(Version::V5),
    };
    match (in_connect, v5) {
        (true, true) => Response::RefuseConnAck(code),
        (true, false) => match mqtt::v311_connack_code(v) {
            Some(c) => Response::RefuseConnAck(c),
            None => Response::Close,
        },
        (false, true) => Response::Disconnect(code),
        (false, false) => Response::Close,
    }
}

/// The protocol level a stream's leading CONNECT names, when it names MQTT.
fn connect_level(stream: &[u8]) -> Option<u8> {
    if stream.first()? >> 4 != PacketType::Connect as u8 {
        return None;
    }
    let mut at = 1;
    while stream.get(at)? & 0x80 != 0 && at < 4 {
        at += 1;
    }
    let name = stream.get(at + 1..at + 7)?;
    (name == b"\x00\x04MQTT").then(|| stream.get(at + 7).copied())?
}

/// Decodes each packet of an accepted capture and encodes it again: the
/// bytes re-encoded, packet by packet, or the first packet that does not
/// come back identical (its offset).
pub fn reencode(stream: &Bytes, limits: &Limits) -> Result<Vec<u8>, usize> {
    let mut out = Vec::with_capacity(stream.len());
    let mut walk = mqtt::packets(stream, None, Sender::Client, limits);
    loop {
        let at = walk.offset();
        let version = walk.version();
        let Some(step) = walk.next() else {
            return Ok(out);
        };
        let packet: Packet = step.map_err(|_| at)?;
        let v = version.unwrap_or(Version::V311);
        let before = out.len();
        packet.encode_to_vec(v, &mut out).map_err(|_| at)?;
        if out[before..] != stream[at..walk.offset()] {
            return Err(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_text_and_binary_are_told_apart() {
        assert_eq!(&read_input(b"c0 00\n")[..], &[0xc0, 0x00]);
        assert_eq!(
            &read_input(b"# ping\nC000 # again\r\nc000")[..],
            &[0xc0, 0, 0xc0, 0]
        );
        // Odd digit counts, other characters and empty files are raw bytes.
        for raw in [
            &b"c00"[..],
            b"c0 0g",
            b"",
            b"# only a comment\n",
            b"\x10\x00",
        ] {
            assert_eq!(&read_input(raw)[..], raw);
        }
    }

    #[test]
    fn mqtt_3_1_2_2_unsupported_level_is_a_refusal_not_malformed() {
        let l = Limits::default();
        let level = |n: u8| {
            Bytes::from(vec![
                0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', n, 0x02, 0x00, 0x3c, 0x00, 0x01,
                b'c',
            ])
        };
        let r = report(&level(3), None, &l);
        assert_eq!(
            (r.code, r.response),
            (Some(0x84), Response::RefuseConnAck(0x01))
        );
        assert_eq!(
            r.outcome.verdict.reason,
            Some(sessionwire::CloseReason::Aborted)
        );
        let r = report(&level(6), None, &l);
        assert_eq!(
            (r.code, r.response),
            (Some(0x84), Response::RefuseConnAck(0x84))
        );
        let r = report(&level(3), Some(Version::V5), &l);
        assert_eq!(r.response, Response::RefuseConnAck(0x84));
        // A malformed 5.0 CONNECT: reserved flag set.
        let mut bad = level(5).to_vec();
        bad[9] = 0x03;
        let r = report(&Bytes::from(bad), None, &l);
        assert_eq!(r.response, Response::RefuseConnAck(0x81));
        assert_eq!(r.response.to_string(), "refuse CONNACK 0x81");
        let r = report(&level(4), None, &l);
        assert_eq!(
            (r.packets, r.response),
            (vec![(0, PacketType::Connect)], Response::None)
        );
    }
}
