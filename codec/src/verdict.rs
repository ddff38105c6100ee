//! What a server decides about an input: the [`Verdict`] (accept, or close
//! with a reason at an offset) and the [`Outcome`] that keeps the violation
//! behind it.
//!
//! The regression corpus, the `check` command and the fuzz targets all speak
//! in these terms; they live in the codec so that the fuzz target bodies
//! (feature `fuzzing`) need nothing outside it.
//!
//! ```
//! use bytes::Bytes;
//! use sessionwire::{Limits, Message, Outcome};
//!
//! let decoded = Message::decode(&Bytes::from_static(&[0x3f, 1, 2, 3, 4]), &Limits::default());
//! let outcome = Outcome::of_message(&decoded);
//! assert_eq!(outcome.verdict.to_string(), "close INVALID_INBOUND_MESSAGE (7) at offset 0, 0 messages");
//! ```

use std::fmt;

use bytes::Bytes;

use crate::close::CloseReason;
use crate::limits::Limits;
use crate::message::Message;
use crate::mqtt::{self, Packet, Sender, Version};
use crate::polling;
use crate::violation::Violation;

/// What the server decides about an input: accept it, or close the client
/// with a reason at a byte offset, after some messages were accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Verdict {
    /// The close reason; `None` when the input is accepted.
    pub reason: Option<CloseReason>,
    /// The byte offset of the violation; `None` when accepted.
    pub offset: Option<usize>,
    /// Messages accepted before the verdict (all of them when accepted).
    pub messages: usize,
}

impl Verdict {
    /// The input is accepted whole, `messages` messages.
    pub const fn accept(messages: usize) -> Verdict {
        Verdict {
            reason: None,
            offset: None,
            messages,
        }
    }

    /// The client is closed for `violation`, after `messages` accepted messages.
    pub const fn close(violation: &Violation, messages: usize) -> Verdict {
        Verdict {
            reason: Some(violation.close_reason()),
            offset: Some(violation.offset()),
            messages,
        }
    }

    /// Whether the input is accepted.
    pub const fn is_accept(&self) -> bool {
        self.reason.is_none()
    }

    /// `accept` or `close`.
    pub const fn word(&self) -> &'static str {
        if self.is_accept() {
            "accept"
        } else {
            "close"
        }
    }
}

impl fmt::Display for Verdict {
    /// `accept, 2 messages` or
    /// `close INVALID_INBOUND_MESSAGE (7) at offset 0, 0 messages`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())?;
        if let Some(reason) = self.reason {
            write!(f, " {reason}")?;
        }
        if let Some(offset) = self.offset {
            write!(f, " at offset {offset}")?;
        }
        let plural = if self.messages == 1 { "" } else { "s" };
        write!(f, ", {} message{plural}", self.messages)
    }
}

/// A verdict together with the violation behind it, for callers that report
/// what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The verdict.
    pub verdict: Verdict,
    /// The violation that closed the client, if any.
    pub violation: Option<Violation>,
}

impl Outcome {
    /// The outcome of decoding one WebSocket message.
    pub fn of_message(decoded: &Result<Message, Violation>) -> Outcome {
        Outcome::of_one(decoded)
    }

    /// The outcome of decoding one item: accepted as one, or closed.
    fn of_one<T>(decoded: &Result<T, Violation>) -> Outcome {
        match decoded {
            Ok(_) => Outcome {
                verdict: Verdict::accept(1),
                violation: None,
            },
            Err(v) => Outcome {
                verdict: Verdict::close(v, 0),
                violation: Some(*v),
            },
        }
    }

    /// The outcome of decoding an HTTP polling body: the messages accepted
    /// before the first violation, if any.
    pub fn of_batch(batch: &polling::Batch) -> Outcome {
        let messages = batch.messages.len();
        Outcome {
            verdict: match &batch.violation {
                Some(v) => Verdict::close(v, messages),
                None => Verdict::accept(messages),
            },
            violation: batch.violation,
        }
    }
}

impl Outcome {
    /// The outcome of decoding one MQTT packet ([`Packet::decode`]).
    pub fn of_mqtt_packet(decoded: &Result<Packet, Violation>) -> Outcome {
        Outcome::of_one(decoded)
    }

    /// The outcome of a client's MQTT byte stream walked by [`mqtt::packets`]:
    /// the packets decoded before the first violation. With `version` `None`
    /// the stream must start with its CONNECT, which sets the version; a
    /// stream that ends inside a packet is truncated.
    pub fn of_mqtt_stream(stream: &Bytes, version: Option<Version>, limits: &Limits) -> Outcome {
        let mut packets = 0;
        for step in mqtt::packets(stream, version, Sender::Client, limits) {
            match step {
                Ok(_) => packets += 1,
                Err(v) => {
                    return Outcome {
                        verdict: Verdict::close(&v, packets),
                        violation: Some(v),
                    }
                }
            }
        }
        Outcome {
            verdict: Verdict::accept(packets),
            violation: None,
        }
    }
}

/// Splits an input of the `mqtt_stream` fuzz target: byte 0 is a header whose
/// low four bits count the chunk-size bytes that follow and whose bits 4-5
/// give the version (1: 3.1.1, 2: 5.0, else none: the stream starts with its
/// CONNECT); the rest is the client's byte stream. A chunk-size byte `s`
/// stands for `s` bytes (0 counts as 1; when every size is 0, the stream is
/// fed whole). Returns `(version, sizes, stream)`.
///
/// ```
/// use sessionwire::mqtt::Version;
/// use sessionwire::verdict::split_mqtt_stream;
/// assert_eq!(split_mqtt_stream(b"\x21\x05\xc0\x00"), (Some(Version::V5), &b"\x05"[..], &b"\xc0\x00"[..]));
/// assert_eq!(split_mqtt_stream(b""), (None, &b""[..], &b""[..]));
/// ```
pub fn split_mqtt_stream(data: &[u8]) -> (Option<Version>, &[u8], &[u8]) {
    let (header, sizes, stream) = split_incremental(data);
    let version = match (header >> 4) & 3 {
        1 => Some(Version::V311),
        2 => Some(Version::V5),
        _ => None,
    };
    (version, sizes, stream)
}

/// Splits an input of the `incremental` fuzz target: byte 0 is a header whose low four
/// bits count the chunk-size bytes that follow (its high four bits, when not
/// zero, pick tighter limits for a second decode by the fuzz target); the rest
/// is the body text.
///
/// A chunk-size byte `s` stands for `s` characters when below 0x80 and for
/// `(s & 0x7f) * 64` characters otherwise. Returns `(header, sizes, text)`.
///
/// ```
/// use sessionwire::verdict::split_incremental;
/// assert_eq!(split_incremental(b"\x02\x05\x81AAAA"), (2, &b"\x05\x81"[..], &b"AAAA"[..]));
/// assert_eq!(split_incremental(b""), (0, &b""[..], &b""[..]));
/// ```
pub fn split_incremental(data: &[u8]) -> (u8, &[u8], &[u8]) {
    let Some((&header, rest)) = data.split_first() else {
        return (0, &[], &[]);
    };
    let n = usize::from(header & 0x0f).min(rest.len());
    let (sizes, text) = rest.split_at(n);
    (header, sizes, text)
}
