//! [`PacketRef`]: a packet decoded without taking views, borrowing the
//! bytes it was decoded from.
//!
//! It runs exactly the checks [`Packet::decode`](super::Packet::decode) runs
//! (the same functions, over a slice) but keeps slices instead of
//! [`Bytes`](bytes::Bytes) views, so decoding touches no reference count:
//! the way to read packets that are handled at once and not kept. PUBLISH and
//! its acknowledgements, the packets that flow, come with their fields; the
//! others come checked, as their bytes, to decode into a
//! [`Packet`] where they are kept.

use super::framing::frame_whole;
use super::packet::Packet;
use super::property::PropertiesRef;
use super::publish::{Ack, AckRef, PublishRef};
use super::types::{PacketType, Sender, Version};
use super::wire::Reader;
use crate::violation::Violation;

/// One MQTT control packet, checked in full and borrowed from the bytes it
/// was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketRef<'a> {
    /// PUBLISH.
    Publish(PublishRef<'a>),
    /// PUBACK.
    PubAck(AckRef<'a>),
    /// PUBREC.
    PubRec(AckRef<'a>),
    /// PUBREL.
    PubRel(AckRef<'a>),
    /// PUBCOMP.
    PubComp(AckRef<'a>),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// CONNECT, checked: the version it asks for, and the whole packet.
    Connect {
        /// The protocol version of the connection.
        version: Version,
        /// The packet, fixed header included.
        bytes: &'a [u8],
    },
    /// Any other packet (CONNACK, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK,
    /// DISCONNECT, AUTH), checked: its type and the whole packet.
    Other {
        /// The packet type.
        packet_type: PacketType,
        /// The packet, fixed header included.
        bytes: &'a [u8],
    },
}

impl<'a> PacketRef<'a> {
    /// This packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            PacketRef::Publish(_) => PacketType::Publish,
            PacketRef::PubAck(_) => PacketType::PubAck,
            PacketRef::PubRec(_) => PacketType::PubRec,
            PacketRef::PubRel(_) => PacketType::PubRel,
            PacketRef::PubComp(_) => PacketType::PubComp,
            PacketRef::PingReq => PacketType::PingReq,
            PacketRef::PingResp => PacketType::PingResp,
            PacketRef::Connect { .. } => PacketType::Connect,
            PacketRef::Other { packet_type, .. } => *packet_type,
        }
    }

    /// Decodes exactly one whole packet, sent by `from` on a connection of
    /// `version`, with the checks and the violations (same kinds, same
    /// offsets) of [`Packet::decode`](super::Packet::decode).
    ///
    /// ```
    /// use sessionwire::mqtt::{PacketRef, QoS, Sender, Version};
    ///
    /// let wire = [0x32, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x07, b'h', b'i'];
    /// let Ok(PacketRef::Publish(p)) = PacketRef::decode(&wire, Version::V311, Sender::Client)
    /// else {
    ///     panic!()
    /// };
    /// assert_eq!((p.topic, p.qos, p.packet_id, p.payload), ("a/b", QoS::AtLeastOnce, 7, &b"hi"[..]));
    ///
    /// // A wildcard in a topic name (MQTT-3.3.2-2), malformed (0x81), at the
    /// // offset the owned decode reports.
    /// let bad = [0x30, 0x05, 0x00, 0x03, b'a', b'/', b'#'];
    /// let v = PacketRef::decode(&bad, Version::V311, Sender::Client).unwrap_err();
    /// assert_eq!((v.kind().reason_code(), v.offset()), (Some(0x81), 6));
    /// ```
    pub fn decode(input: &'a [u8], version: Version, from: Sender) -> Result<Self, Violation> {
        let header = frame_whole(input, version, from)?;
        PacketRef::decode_body(input, 0, header, input.len(), version, from)
    }

    /// Decodes the body of the framed packet `buf[start..start + total]`
    /// whose fixed header takes `header` bytes and whose first byte was
    /// checked. Offsets count from `start`.
    #[inline]
    pub(crate) fn decode_body(
        buf: &'a [u8],
        start: usize,
        header: usize,
        total: usize,
        version: Version,
        from: Sender,
    ) -> Result<Self, Violation> {
        let first = buf[start];
        let mut r = Reader::checking(buf, start, start + header, start + total);
        let r = &mut r;
        // PUBLISH first: it is most of what flows.
        if first >> 4 == PacketType::Publish as u8 {
            return PublishRef::check(r, first & 0x0f, version, from).map(PacketRef::Publish);
        }
        let ack = |ty, r: &mut Reader<'a>| -> Result<AckRef<'a>, Violation> {
            let (packet_id, code, block) = Ack::check(r, ty, version, from)?;
            Ok(AckRef {
                packet_id,
                code,
                properties: PropertiesRef(block),
            })
        };
        Ok(match first >> 4 {
            4 => PacketRef::PubAck(ack(PacketType::PubAck, r)?),
            5 => PacketRef::PubRec(ack(PacketType::PubRec, r)?),
            6 => PacketRef::PubRel(ack(PacketType::PubRel, r)?),
            7 => PacketRef::PubComp(ack(PacketType::PubComp, r)?),
            12 => {
                r.finish()?;
                PacketRef::PingReq
            }
            13 => {
                r.finish()?;
                PacketRef::PingResp
            }
            // The rest are read by the owned decode's own functions; this
            // reader has no buffer to take views of, so the packet it gives
            // holds empty views and is only looked at for its type and
            // version.
            _ => {
                let bytes = &buf[start..start + total];
                match Packet::read(r, first, version, from)? {
                    Packet::Connect(c) => PacketRef::Connect {
                        version: c.version,
                        bytes,
                    },
                    p => PacketRef::Other {
                        packet_type: p.packet_type(),
                        bytes,
                    },
                }
            }
        })
    }
}

/// A borrowed packet equals an owned one when every field it shows is the
/// same: all of them for PUBLISH, its acknowledgements and the pings (the
/// property blocks byte for byte), the version for a CONNECT, the type for
/// the others.
impl PartialEq<Packet> for PacketRef<'_> {
    fn eq(&self, owned: &Packet) -> bool {
        let ack = |b: &AckRef<'_>, o: &Ack| {
            (b.packet_id, b.code, b.properties.0)
                == (o.packet_id, o.code, &o.properties.as_bytes()[..])
        };
        match (self, owned) {
            (PacketRef::Publish(b), Packet::Publish(o)) => {
                (b.dup, b.qos, b.retain, b.packet_id, b.topic, b.payload)
                    == (o.dup, o.qos, o.retain, o.packet_id, o.topic(), o.payload())
                    && b.properties.0 == &o.properties.as_bytes()[..]
            }
            (PacketRef::PubAck(b), Packet::PubAck(o))
            | (PacketRef::PubRec(b), Packet::PubRec(o))
            | (PacketRef::PubRel(b), Packet::PubRel(o))
            | (PacketRef::PubComp(b), Packet::PubComp(o)) => ack(b, o),
            (PacketRef::PingReq, Packet::PingReq) | (PacketRef::PingResp, Packet::PingResp) => true,
            (PacketRef::Connect { version, .. }, Packet::Connect(c)) => *version == c.version,
            (PacketRef::Other { packet_type, .. }, o) => *packet_type == o.packet_type(),
            _ => false,
        }
    }
}
