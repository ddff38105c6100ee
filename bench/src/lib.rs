//! Peer MQTT codecs behind one interface, for side-by-side benchmarks and
//! strictness checks.
//!
//! The codec crate never depends on this package: the peers (mqttrs 0.4,
//! mqttbytes 0.6, rumqttc 0.25) are linked here only to be measured, with
//! our own codec (`sessionwire::mqtt`), against a split-only floor.
//!
//! [`floor`] is the echo server the reference server's throughput is
//! measured against (`echo-floor`, `bench/server-vs-floor.sh`).

pub mod encode;
pub mod floor;
pub mod inputs;

use std::hint::black_box;
use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::BytesMut;

/// Largest packet any peer is allowed to decode here (1 MiB).
pub const MAX_PACKET: usize = 1 << 20;

/// MQTT protocol version of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

impl Version {
    /// The version as the strictness table writes it: `3.1.1` or `5`.
    pub fn label(self) -> &'static str {
        match self {
            Version::V311 => "3.1.1",
            Version::V5 => "5",
        }
    }

    /// Parses [`Version::label`].
    pub fn parse(text: &str) -> Option<Version> {
        match text {
            "3.1.1" => Some(Version::V311),
            "5" => Some(Version::V5),
            _ => None,
        }
    }
}

/// One way of decoding a stream of MQTT packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// Reads each fixed header and remaining length and skips the body: the
    /// cheapest possible loop, which validates nothing.
    Floor,
    /// Splits each packet off the stream as a `Bytes` by its remaining
    /// length (`BytesMut::split_to`, then `freeze`) and drops it, validating
    /// nothing: the floor issue 10 measured ("a loop that only splits
    /// packets by their remaining length"), the least a codec that hands out
    /// owned packets pays.
    FloorSplit,
    /// mqttrs 0.4 (3.1.1 only).
    Mqttrs,
    /// mqttbytes 0.6 (`v4` and `v5` modules).
    Mqttbytes,
    /// rumqttc 0.25's codecs (`mqttbytes::v4` and `v5::mqttbytes::v5`).
    Rumqttc,
    /// Our codec, `sessionwire::mqtt`, with every check on, decoding
    /// borrowed ([`PacketRef`](sessionwire::mqtt::PacketRef)) over the
    /// stream, as mqttrs is measured.
    Sessionwire,
    /// Our codec with every check on, splitting each packet off as a `Bytes`
    /// and decoding it owned ([`Packet::decode`](sessionwire::mqtt::Packet::decode),
    /// its fields views), as mqttbytes and rumqttc are measured.
    SessionwireBytes,
}

/// Why a peer did not decode a whole stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Packets decoded before the fault.
    pub packets: usize,
    /// The peer's error, as its `Debug` output.
    pub error: String,
}

impl Peer {
    /// The codecs compared, ours first, without the floor.
    pub const CODECS: [Peer; 4] = [
        Peer::Sessionwire,
        Peer::Mqttrs,
        Peer::Mqttbytes,
        Peer::Rumqttc,
    ];

    /// Every way of decoding measured: the two floors, ours borrowed and
    /// owned, then the peers.
    pub const ALL: [Peer; 7] = [
        Peer::Floor,
        Peer::FloorSplit,
        Peer::Sessionwire,
        Peer::SessionwireBytes,
        Peer::Mqttrs,
        Peer::Mqttbytes,
        Peer::Rumqttc,
    ];

    /// Short name used in benchmark ids and tables.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Floor => "floor",
            Peer::FloorSplit => "floor-split",
            Peer::Mqttrs => "mqttrs",
            Peer::Mqttbytes => "mqttbytes",
            Peer::Rumqttc => "rumqttc",
            Peer::Sessionwire => "sessionwire",
            Peer::SessionwireBytes => "sessionwire-bytes",
        }
    }

    /// Whether this peer speaks `version` at all.
    pub fn supports(self, version: Version) -> bool {
        !(self == Peer::Mqttrs && version == Version::V5)
    }

    /// Decodes every packet of `stream` (consuming it for the peers whose API
    /// splits a `BytesMut`) and returns how many there were. A stream that
    /// ends inside a packet is rejected.
    pub fn decode_all(self, stream: &mut BytesMut, version: Version) -> Result<usize, Rejected> {
        match (self, version) {
            (Peer::Floor, _) => floor(stream),
            (Peer::FloorSplit, _) => split_loop(stream, |s| match frame_len(s) {
                Ok(Some(len)) => Ok(s.split_to(len).freeze()),
                Ok(None) => Err("stream ends inside a packet"),
                Err(e) => Err(e),
            }),
            (Peer::Mqttrs, Version::V311) => mqttrs(stream),
            (Peer::Mqttrs, Version::V5) => Err(Rejected {
                packets: 0,
                error: "MQTT 5.0 unsupported".into(),
            }),
            (Peer::Mqttbytes, Version::V311) => {
                split_loop(stream, |s| mqttbytes::v4::read(s, MAX_PACKET))
            }
            (Peer::Mqttbytes, Version::V5) => {
                split_loop(stream, |s| mqttbytes::v5::read(s, MAX_PACKET))
            }
            (Peer::Rumqttc, Version::V311) => split_loop(stream, |s| {
                rumqttc::mqttbytes::v4::Packet::read(s, MAX_PACKET)
            }),
            (Peer::Rumqttc, Version::V5) => split_loop(stream, |s| {
                rumqttc::v5::mqttbytes::v5::Packet::read(s, Some(MAX_PACKET as u32))
            }),
            (Peer::Sessionwire, _) => ours::borrowed(stream, version),
            (Peer::SessionwireBytes, _) => split_loop(stream, |s| ours::read(s, version)),
        }
    }

    /// [`Peer::decode_all`] on a copy of `bytes`, with a panic caught and
    /// reported as [`Verdict::Panic`].
    pub fn verdict(self, bytes: &[u8], version: Version) -> Verdict {
        if !self.supports(version) {
            return Verdict::Unsupported;
        }
        let mut stream = BytesMut::from(bytes);
        let decode = || match self {
            // A server's decoder: the CONNECT first, then what a client sends.
            Peer::Sessionwire | Peer::SessionwireBytes => {
                ours::client_stream(&stream.clone().freeze())
            }
            _ => self.decode_all(&mut stream, version),
        };
        match catch_unwind(AssertUnwindSafe(decode)) {
            Ok(Ok(_)) => Verdict::Accept,
            Ok(Err(rejected)) => Verdict::Reject(rejected),
            Err(_) => Verdict::Panic,
        }
    }
}

/// What a peer made of a stream that must be decoded whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every packet decoded, every byte consumed.
    Accept,
    /// An error or an unfinished packet, after some packets decoded.
    Reject(Rejected),
    /// The peer panicked.
    Panic,
    /// The peer does not speak this version.
    Unsupported,
}

impl Verdict {
    /// One word for a table cell.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Reject(_) => "reject",
            Verdict::Panic => "PANIC",
            Verdict::Unsupported => "n/a",
        }
    }
}

/// Our codec behind the peers' interface.
pub mod ours {
    use std::hint::black_box;

    use bytes::{Bytes, BytesMut};
    use sessionwire::mqtt::{self, Packet, PacketRef, PacketType, Sender};
    use sessionwire::{Limits, Violation};

    use crate::{frame_len, incomplete, Rejected, Version, MAX_PACKET};

    /// The limits the peers get: packets up to [`MAX_PACKET`].
    pub fn limits() -> Limits {
        Limits::builder()
            .max_message_size(MAX_PACKET)
            .build()
            .expect("a positive size")
    }

    /// Our version type.
    pub fn version(v: Version) -> mqtt::Version {
        match v {
            Version::V311 => mqtt::Version::V311,
            Version::V5 => mqtt::Version::V5,
        }
    }

    /// Who sends a packet of the bench streams, which hold both directions
    /// of a session: the types only a server sends come from the server.
    pub fn sender(first: u8) -> Sender {
        match PacketType::from_u8(first >> 4) {
            Some(t) if !t.sent_by(Sender::Client) => Sender::Server,
            _ => Sender::Client,
        }
    }

    /// Splits the packet at the front of `buf` off and decodes it, fully
    /// checked, as sent by [`sender`]: what mqttbytes' `read` does. A packet
    /// not yet whole leaves `buf` alone.
    pub fn read(buf: &mut BytesMut, v: Version) -> Result<Packet, String> {
        let len = match frame_len(buf) {
            Ok(Some(len)) if len <= MAX_PACKET => len,
            Ok(Some(len)) => return Err(format!("packet of {len} bytes")),
            Ok(None) => return Err("stream ends inside a packet".into()),
            Err(e) => return Err(e.into()),
        };
        let from = sender(buf[0]);
        let frame = buf.split_to(len).freeze();
        Packet::decode(&frame, version(v), from).map_err(|e| describe(&e))
    }

    /// Decodes every packet of `stream` borrowed, fully checked, each as
    /// sent by [`sender`]: the loop mqttrs is measured with (find the
    /// packet's length, decode the slice, step over it).
    pub fn borrowed(stream: &[u8], v: Version) -> Result<usize, Rejected> {
        let (mut pos, mut packets) = (0, 0);
        while pos < stream.len() {
            let rest = &stream[pos..];
            let reject = |error: String| Rejected { packets, error };
            let len = match frame_len(rest) {
                Ok(Some(len)) if len <= MAX_PACKET => len,
                Ok(Some(len)) => return Err(reject(format!("packet of {len} bytes"))),
                Ok(None) => return Err(incomplete(packets)),
                Err(e) => return Err(reject(e.into())),
            };
            match PacketRef::decode(&rest[..len], version(v), sender(rest[0])) {
                Ok(packet) => {
                    black_box(&packet);
                }
                Err(e) => return Err(reject(describe(&e))),
            }
            pos += len;
            packets += 1;
        }
        Ok(packets)
    }

    /// A violation as a table cell shows it: its name and reason code.
    pub fn describe(v: &Violation) -> String {
        match v.kind().reason_code() {
            Some(code) => format!("{} 0x{code:02x}", v.kind().name()),
            None => v.kind().name().to_owned(),
        }
    }

    /// A client's stream as a server decodes it ([`mqtt::packets`]: the
    /// CONNECT first, whose level sets the version): the packets decoded.
    pub fn client_stream(stream: &Bytes) -> Result<usize, Rejected> {
        let mut packets = 0;
        for step in mqtt::packets(stream, None, Sender::Client, &limits()) {
            match step {
                Ok(_) => packets += 1,
                Err(v) => {
                    return Err(Rejected {
                        packets,
                        error: describe(&v),
                    })
                }
            }
        }
        Ok(packets)
    }
}

/// Length of the packet at the start of `buf` (fixed header included), read
/// from its remaining length; `Ok(None)` when `buf` holds less than that.
/// Checks nothing but the at-most-4-bytes limit of the length itself.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, &'static str> {
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            let total = remaining + 2 + i;
            return Ok((total <= buf.len()).then_some(total));
        }
    }
    Err("remaining length longer than 4 bytes")
}

fn incomplete(packets: usize) -> Rejected {
    Rejected {
        packets,
        error: "stream ends inside a packet".into(),
    }
}

fn floor(stream: &BytesMut) -> Result<usize, Rejected> {
    let (mut pos, mut packets) = (0, 0);
    while pos < stream.len() {
        match frame_len(&stream[pos..]) {
            Ok(Some(len)) => pos += len,
            Ok(None) => return Err(incomplete(packets)),
            Err(error) => {
                return Err(Rejected {
                    packets,
                    error: error.into(),
                })
            }
        }
        packets += 1;
    }
    Ok(packets)
}

/// mqttrs decodes a slice without saying how much of it the packet used, so
/// the loop reads the length again to step over it, as any caller must.
fn mqttrs(stream: &BytesMut) -> Result<usize, Rejected> {
    let (mut pos, mut packets) = (0, 0);
    while pos < stream.len() {
        let rest = &stream[pos..];
        match mqttrs::decode_slice(rest) {
            Ok(Some(packet)) => {
                black_box(&packet);
            }
            Ok(None) => return Err(incomplete(packets)),
            Err(e) => {
                return Err(Rejected {
                    packets,
                    error: format!("{e:?}"),
                })
            }
        }
        match frame_len(rest) {
            Ok(Some(len)) => pos += len,
            _ => return Err(incomplete(packets)),
        }
        packets += 1;
    }
    Ok(packets)
}

/// The loop of the codecs that split each packet off the front of a
/// `BytesMut` (mqttbytes, rumqttc).
fn split_loop<P, E: std::fmt::Debug>(
    stream: &mut BytesMut,
    mut read: impl FnMut(&mut BytesMut) -> Result<P, E>,
) -> Result<usize, Rejected> {
    let mut packets = 0;
    while !stream.is_empty() {
        let before = stream.len();
        match read(stream) {
            Ok(packet) => {
                black_box(&packet);
            }
            Err(e) => {
                return Err(Rejected {
                    packets,
                    error: format!("{e:?}"),
                })
            }
        }
        if stream.len() == before {
            return Err(incomplete(packets));
        }
        packets += 1;
    }
    Ok(packets)
}
