//! [`Packet`]: one MQTT control packet of any type, decoded from or encoded
//! into bytes.

use bytes::{BufMut, Bytes, BytesMut};

use super::connect::{ConnAck, Connect};
use super::control::{Auth, Disconnect};
use super::framing::frame_whole;
use super::publish::{Ack, Publish};
use super::subscribe::{SubAck, Subscribe, UnsubAck, Unsubscribe};
use super::types::{EncodeError, PacketType, Sender, Version};
use super::wire::{put_var_int, var_int_len, Reader, MAX_REMAINING_LENGTH};
use crate::violation::Violation;

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
    ///
    /// To decode without taking views (no reference counting at all), see
    /// [`PacketRef::decode`](super::PacketRef::decode): both run the same checks.
    pub fn decode(input: &Bytes, version: Version, from: Sender) -> Result<Packet, Violation> {
        let header = frame_whole(input, version, from)?;
        Packet::decode_body(input, 0, header, input.len(), version, from)
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
        Packet::read(&mut r, first, version, from)
    }

    /// Reads the body of a packet whose first byte, `first`, was checked.
    #[inline]
    pub(crate) fn read(
        r: &mut Reader<'_>,
        first: u8,
        version: Version,
        from: Sender,
    ) -> Result<Packet, Violation> {
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
