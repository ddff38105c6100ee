//! MQTT 3.1.1 and 5.0: every control packet, both directions, zero-copy and
//! strict.
//!
//! - [`Packet::decode`] decodes one whole packet held in a [`Bytes`]; every
//!   topic, payload, client identifier and property of the result is a view
//!   of that buffer, and decoding allocates nothing.
//! - [`packets`] walks a buffer holding a byte stream, packet by packet.
//! - [`Decoder`] takes a stream in chunks of any size and buffers at most one
//!   packet, whose declared size is checked against
//!   [`Limits::max_message_size`](crate::Limits::max_message_size) (the whole
//!   packet, fixed header included) before a byte of its body is kept.
//! - [`Packet::encode`] writes a packet with its exact length reserved up front.
//!
//! Every fault is a [`Violation`] whose kind gives both the MQTT 5.0 reason
//! code ([`ViolationKind::reason_code`](crate::ViolationKind::reason_code))
//! and the close reason; see `docs/mqtt.md` for the rules checked.
//!
//! ```
//! use bytes::Bytes;
//! use sessionwire::mqtt::{Decoder, Packet, QoS, Version};
//! use sessionwire::{CloseReason, Limits};
//!
//! // A server's decoder: the CONNECT tells it the version.
//! let mut decoder = Decoder::server(&Limits::default());
//! let mut stream: &[u8] = &[
//!     0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x01, b'c',
//!     0x32, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x07, b'h', b'i',
//! ];
//! let Some(Packet::Connect(connect)) = decoder.feed(&mut stream).unwrap() else { panic!() };
//! assert_eq!((connect.version, connect.client_id().as_str()), (Version::V311, "c"));
//! let Some(Packet::Publish(publish)) = decoder.feed(&mut stream).unwrap() else { panic!() };
//! assert_eq!((publish.topic(), publish.qos, publish.packet_id), ("a/b", QoS::AtLeastOnce, 7));
//! assert_eq!(publish.payload(), b"hi");
//! assert!(stream.is_empty());
//!
//! // QoS 3 breaks MQTT-3.3.1-4: a malformed packet, reason code 0x81.
//! let mut bad: &[u8] = &[0x36, 0x00];
//! let v = decoder.feed(&mut bad).unwrap_err();
//! assert_eq!(v.kind().reason_code(), Some(0x81));
//! assert_eq!(v.close_reason(), CloseReason::InvalidInboundMessage);
//! assert_eq!(v.offset(), 26);
//!
//! // Encoding gives the bytes back.
//! let mut out = bytes::BytesMut::new();
//! Packet::Publish(publish).encode(Version::V311, &mut out).unwrap();
//! assert_eq!(&out[..], &[0x32, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x07, b'h', b'i']);
//! ```

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

mod connect;
mod control;
pub mod fault;
mod property;
mod publish;
mod stream;
mod subscribe;
#[cfg(feature = "tokio-codec")]
pub mod tokio;
mod wire;

pub use connect::{ConnAck, Connect, Will};
pub use control::{Auth, Disconnect};
pub use fault::MqttFault;
pub use property::{Properties, PropertiesBuilder, Property, PropertyId, PropertyIter};
pub use publish::{Ack, Publish};
pub use stream::{packets, Decoder, Packets};
pub use subscribe::{
    SubAck, Subscribe, SubscriptionOptions, Subscriptions, TopicFilters, UnsubAck, Unsubscribe,
};
pub use wire::{Str, StrError, MAX_REMAINING_LENGTH};

/// The example of `docs/mqtt.md`, run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/mqtt.md")]
pub struct MqttGuide;

use crate::violation::Violation;
use wire::{fault, put_var_int, var_int_len, Reader};

/// The protocol version of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

impl Version {
    /// The protocol level byte of the CONNECT.
    pub const fn level(self) -> u8 {
        match self {
            Version::V311 => 4,
            Version::V5 => 5,
        }
    }
}

/// Who sent the bytes being decoded: a server decodes what a client sends,
/// a test client what a server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sender {
    /// The bytes come from a client.
    Client,
    /// The bytes come from a server.
    Server,
}

/// Quality of service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum QoS {
    /// At most once (0).
    AtMostOnce = 0,
    /// At least once (1).
    AtLeastOnce = 1,
    /// Exactly once (2).
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS with this number; `None` for 3 and above.
    pub const fn from_u8(n: u8) -> Option<QoS> {
        match n {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// The control packet types (the high four bits of the first byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum PacketType {
    /// 1, client to server.
    Connect = 1,
    /// 2, server to client.
    ConnAck = 2,
    /// 3, both directions.
    Publish = 3,
    /// 4, both directions.
    PubAck = 4,
    /// 5, both directions.
    PubRec = 5,
    /// 6, both directions.
    PubRel = 6,
    /// 7, both directions.
    PubComp = 7,
    /// 8, client to server.
    Subscribe = 8,
    /// 9, server to client.
    SubAck = 9,
    /// 10, client to server.
    Unsubscribe = 10,
    /// 11, server to client.
    UnsubAck = 11,
    /// 12, client to server.
    PingReq = 12,
    /// 13, server to client.
    PingResp = 13,
    /// 14, both directions (from the server only in 5.0).
    Disconnect = 14,
    /// 15, both directions, 5.0 only.
    Auth = 15,
}

impl PacketType {
    /// The type with this number (1 to 15).
    pub const fn from_u8(n: u8) -> Option<PacketType> {
        Some(match n {
            1 => PacketType::Connect,
            2 => PacketType::ConnAck,
            3 => PacketType::Publish,
            4 => PacketType::PubAck,
            5 => PacketType::PubRec,
            6 => PacketType::PubRel,
            7 => PacketType::PubComp,
            8 => PacketType::Subscribe,
            9 => PacketType::SubAck,
            10 => PacketType::Unsubscribe,
            11 => PacketType::UnsubAck,
            12 => PacketType::PingReq,
            13 => PacketType::PingResp,
            14 => PacketType::Disconnect,
            15 => PacketType::Auth,
            _ => return None,
        })
    }

    /// The upper-case name (`PUBLISH`).
    pub const fn name(self) -> &'static str {
        match self {
            PacketType::Connect => "CONNECT",
            PacketType::ConnAck => "CONNACK",
            PacketType::Publish => "PUBLISH",
            PacketType::PubAck => "PUBACK",
            PacketType::PubRec => "PUBREC",
            PacketType::PubRel => "PUBREL",
            PacketType::PubComp => "PUBCOMP",
            PacketType::Subscribe => "SUBSCRIBE",
            PacketType::SubAck => "SUBACK",
            PacketType::Unsubscribe => "UNSUBSCRIBE",
            PacketType::UnsubAck => "UNSUBACK",
            PacketType::PingReq => "PINGREQ",
            PacketType::PingResp => "PINGRESP",
            PacketType::Disconnect => "DISCONNECT",
            PacketType::Auth => "AUTH",
        }
    }

    /// Whether `from` ever sends this type.
    pub const fn sent_by(self, from: Sender) -> bool {
        match self {
            PacketType::Connect
            | PacketType::Subscribe
            | PacketType::Unsubscribe
            | PacketType::PingReq => matches!(from, Sender::Client),
            PacketType::ConnAck
            | PacketType::SubAck
            | PacketType::UnsubAck
            | PacketType::PingResp => matches!(from, Sender::Server),
            _ => true,
        }
    }

    /// The low four bits of the first byte this type requires (PUBLISH has
    /// its own flags and is never asked).
    const fn fixed_flags(self) -> u8 {
        match self {
            PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => 0b0010,
            _ => 0,
        }
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One MQTT control packet.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Packet {
    /// CONNECT.
    Connect(Connect),
    /// CONNACK.
    ConnAck(ConnAck),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK.
    PubAck(Ack),
    /// PUBREC.
    PubRec(Ack),
    /// PUBREL.
    PubRel(Ack),
    /// PUBCOMP.
    PubComp(Ack),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(Disconnect),
    /// AUTH (5.0).
    Auth(Auth),
}

/// Why a packet cannot be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// Binary data over 65,535 bytes.
    FieldTooLong,
    /// A remaining length over [`MAX_REMAINING_LENGTH`].
    PacketTooLarge,
    /// A SUBSCRIBE or UNSUBSCRIBE without a topic filter.
    Empty,
    /// A value outside what its field can carry.
    ValueOutOfRange,
    /// AUTH in MQTT 3.1.1.
    NotInVersion,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncodeError::FieldTooLong => "binary field longer than 65,535 bytes",
            EncodeError::PacketTooLarge => "packet longer than MQTT allows",
            EncodeError::Empty => "SUBSCRIBE or UNSUBSCRIBE without a topic filter",
            EncodeError::ValueOutOfRange => "value outside its field's range",
            EncodeError::NotInVersion => "packet type does not exist in this version",
        })
    }
}

impl std::error::Error for EncodeError {}

/// Checks the first byte of a packet: a type that exists in `version`, that
/// `from` sends, with the flags it requires. `version` is `None` before the
/// CONNECT. Offsets are 0: the first byte.
#[inline]
pub(crate) fn check_first_byte(
    byte: u8,
    version: Option<Version>,
    from: Sender,
) -> Result<PacketType, Violation> {
    let n = byte >> 4;
    // PUBLISH first: it is most of what flows.
    if n == 3 {
        if byte & 0x06 == 0x06 {
            return Err(fault(MqttFault::Qos3, 0));
        }
        if byte & 0x0e == 0x08 {
            return Err(fault(MqttFault::DupWithQos0, 0));
        }
        return Ok(PacketType::Publish);
    }
    let ty = match PacketType::from_u8(n) {
        Some(PacketType::Auth) if version == Some(Version::V311) => None,
        t => t,
    };
    let Some(ty) = ty else {
        return Err(fault(MqttFault::ReservedPacketType(n), 0));
    };
    if !ty.sent_by(from) {
        return Err(fault(MqttFault::UnexpectedPacket(ty), 0));
    }
    if byte & 0x0f != ty.fixed_flags() {
        return Err(fault(MqttFault::ReservedFlags(byte), 0));
    }
    Ok(ty)
}

impl Packet {
    /// This packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }

    /// Decodes exactly one whole packet, sent by `from` on a connection of
    /// `version` (a CONNECT carries its own version). Offsets count from the
    /// packet's first byte; the packet is views of `input`.
    ///
    /// Input that ends early is truncated; input that goes on past the
    /// remaining length has trailing bytes. No size limit applies here: the
    /// stream decoders check it before buffering.
    pub fn decode(input: &Bytes, version: Version, from: Sender) -> Result<Packet, Violation> {
        let (header, total) = match stream::frame(input, Some(version), from, usize::MAX)? {
            Some(frame) => frame,
            None => return Err(wire::truncated("packet", input.len())),
        };
        if total < input.len() {
            return Err(Violation::new(crate::ViolationKind::TrailingBytes, total));
        }
        Packet::decode_body(input, 0, header, total, version, from)
    }

    /// Decodes the body of the framed packet `whole[start..start + total]`
    /// whose fixed header takes `header` bytes and whose first byte was
    /// checked. Offsets count from `start`.
    #[inline]
    pub(crate) fn decode_body(
        whole: &Bytes,
        start: usize,
        header: usize,
        total: usize,
        version: Version,
        from: Sender,
    ) -> Result<Packet, Violation> {
        let first = whole[start];
        let mut r = Reader::with_base(whole, start, start + header, start + total);
        let r = &mut r;
        if first >> 4 == PacketType::Publish as u8 {
            return Ok(Packet::Publish(Publish::read(
                r,
                first & 0x0f,
                version,
                from,
            )?));
        }
        // The first byte was checked, so the type exists.
        let ty = PacketType::from_u8(first >> 4).unwrap_or(PacketType::PingReq);
        Ok(match ty {
            PacketType::Publish => Packet::Publish(Publish::read(r, first & 0x0f, version, from)?),
            PacketType::Connect => Packet::Connect(Connect::read(r)?),
            PacketType::ConnAck => Packet::ConnAck(ConnAck::read(r, version)?),
            PacketType::PubAck => Packet::PubAck(Ack::read(r, ty, version, from)?),
            PacketType::PubRec => Packet::PubRec(Ack::read(r, ty, version, from)?),
            PacketType::PubRel => Packet::PubRel(Ack::read(r, ty, version, from)?),
            PacketType::PubComp => Packet::PubComp(Ack::read(r, ty, version, from)?),
            PacketType::Subscribe => Packet::Subscribe(Subscribe::read(r, version)?),
            PacketType::SubAck => Packet::SubAck(SubAck::read(r, version)?),
            PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe::read(r, version)?),
            PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::read(r, version)?),
            PacketType::PingReq => {
                r.finish()?;
                Packet::PingReq
            }
            PacketType::PingResp => {
                r.finish()?;
                Packet::PingResp
            }
            PacketType::Disconnect => Packet::Disconnect(Disconnect::read(r, version, from)?),
            PacketType::Auth => Packet::Auth(Auth::read(r, from)?),
        })
    }

    /// The first byte.
    fn first_byte(&self) -> u8 {
        let ty = self.packet_type();
        let flags = match self {
            Packet::Publish(p) => p.flags(),
            _ => ty.fixed_flags(),
        };
        ((ty as u8) << 4) | flags
    }

    /// The remaining length (everything after the fixed header).
    fn body_len(&self, version: Version) -> Result<usize, EncodeError> {
        let n = match self {
            Packet::Connect(c) => c.body_len(),
            Packet::ConnAck(c) => c.body_len(version),
            Packet::Publish(p) => p.body_len(version),
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                a.body_len(version)
            }
            Packet::Subscribe(s) => s.body_len(version),
            Packet::SubAck(s) => s.body_len(version),
            Packet::Unsubscribe(u) => u.body_len(version),
            Packet::UnsubAck(u) => u.body_len(version),
            Packet::PingReq | Packet::PingResp => 0,
            Packet::Disconnect(d) => d.body_len(version),
            Packet::Auth(_) if version == Version::V311 => return Err(EncodeError::NotInVersion),
            Packet::Auth(a) => a.body_len(),
        };
        if n > MAX_REMAINING_LENGTH {
            return Err(EncodeError::PacketTooLarge);
        }
        Ok(n)
    }

    /// The version the packet is written in: a CONNECT's own, else `version`.
    fn effective_version(&self, version: Version) -> Version {
        match self {
            Packet::Connect(c) => c.version,
            _ => version,
        }
    }

    /// The exact number of bytes [`encode`](Self::encode) writes.
    pub fn encoded_len(&self, version: Version) -> Result<usize, EncodeError> {
        let body = self.body_len(self.effective_version(version))?;
        Ok(1 + var_int_len(body) + body)
    }

    /// Appends the packet for a connection of `version` (a CONNECT uses its
    /// own), reserving its exact length first. Canonical input decodes and
    /// re-encodes to the same bytes.
    pub fn encode(&self, version: Version, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let n = self.encoded_len(version)?;
        buf.reserve(n);
        self.put(version, buf);
        Ok(())
    }

    /// [`encode`](Self::encode) into a `Vec`.
    pub fn encode_to_vec(&self, version: Version, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        let n = self.encoded_len(version)?;
        buf.reserve(n);
        self.put(version, buf);
        Ok(())
    }

    /// The packet as a new buffer.
    pub fn to_bytes(&self, version: Version) -> Result<Bytes, EncodeError> {
        let mut buf = BytesMut::new();
        self.encode(version, &mut buf)?;
        Ok(buf.freeze())
    }

    /// Writes the packet; the length was checked by `encoded_len`.
    fn put<B: BufMut>(&self, version: Version, buf: &mut B) {
        let version = self.effective_version(version);
        let Ok(body) = self.body_len(version) else {
            return;
        };
        buf.put_u8(self.first_byte());
        put_var_int(buf, body);
        match self {
            Packet::Connect(c) => c.put_body(buf),
            Packet::ConnAck(c) => c.put_body(version, buf),
            Packet::Publish(p) => p.put_body(version, buf),
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                a.put_body(version, buf)
            }
            Packet::Subscribe(s) => s.put_body(version, buf),
            Packet::SubAck(s) => s.put_body(version, buf),
            Packet::Unsubscribe(u) => u.put_body(version, buf),
            Packet::UnsubAck(u) => u.put_body(version, buf),
            Packet::PingReq | Packet::PingResp => {}
            Packet::Disconnect(d) => d.put_body(version, buf),
            Packet::Auth(a) => a.put_body(buf),
        }
    }
}

/// The MQTT 3.1.1 CONNACK return code that refuses a CONNECT for this
/// violation, if the violation is a refusal rather than a malformed packet
/// (3.1.1 has no reason codes for the rest: the connection is just closed).
pub fn v311_connack_code(v: &Violation) -> Option<u8> {
    match v.kind() {
        crate::ViolationKind::Mqtt(MqttFault::UnsupportedProtocolLevel(_)) => Some(0x01),
        crate::ViolationKind::Mqtt(MqttFault::ClientIdRejected) => Some(0x02),
        _ => None,
    }
}
