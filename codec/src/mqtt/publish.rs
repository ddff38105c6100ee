//! PUBLISH and its acknowledgements (PUBACK, PUBREC, PUBREL, PUBCOMP), both
//! directions.

use std::fmt;
use std::hash::{Hash, Hasher};

use bytes::{BufMut, Bytes};

use super::fault::MqttFault;
use super::property::{check_payload_utf8, Properties, PropertiesRef, Scope};
use super::types::{PacketType, QoS, Sender, Version};
use super::wire::{fault, Reader, Str};
use crate::violation::Violation;

/// An application message.
///
/// The topic and the payload of a decoded PUBLISH share one view of the
/// packet, so that decoding one takes a single reference to the input
/// buffer: read them with [`topic`](Self::topic) and
/// [`payload`](Self::payload), or take views of their own with
/// [`topic_view`](Self::topic_view) and [`payload_view`](Self::payload_view).
#[derive(Clone)]
pub struct Publish {
    /// Whether this is a re-delivery (never at QoS 0).
    pub dup: bool,
    /// The quality of service.
    pub qos: QoS,
    /// Whether the server keeps the message for later subscribers.
    pub retain: bool,
    /// The packet identifier: non-zero at QoS 1 and 2, 0 (absent) at QoS 0.
    pub packet_id: u16,
    /// PUBLISH properties (5.0; empty in 3.1.1).
    pub properties: Properties,
    /// The topic (checked: UTF-8, no U+0000, no wildcard), then, from
    /// `payload_at`, the payload; for a decoded packet a view of it, with the
    /// packet identifier and properties in between.
    data: Bytes,
    /// The length of the topic at the start of `data`.
    topic_len: u16,
    /// Where the payload starts in `data`.
    payload_at: usize,
}

impl Publish {
    /// A QoS 0 message of `payload` to `topic` (both copied into one
    /// buffer); set the other fields as needed.
    pub fn new(topic: &Str, payload: &[u8]) -> Publish {
        let mut data = Vec::with_capacity(topic.len() + payload.len());
        data.extend_from_slice(topic.as_bytes());
        data.extend_from_slice(payload);
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            packet_id: 0,
            properties: Properties::new(),
            data: Bytes::from(data),
            // `Str` bounds its length to 65,535.
            topic_len: topic.len() as u16,
            payload_at: topic.len(),
        }
    }

    /// The same message at `qos` with `packet_id` (non-zero above QoS 0).
    pub fn with_qos(mut self, qos: QoS, packet_id: u16) -> Publish {
        self.qos = qos;
        self.packet_id = packet_id;
        self
    }

    /// The same message with the retain flag set to `retain`.
    pub fn with_retain(mut self, retain: bool) -> Publish {
        self.retain = retain;
        self
    }

    /// The same message with the DUP flag set to `dup`.
    pub fn with_dup(mut self, dup: bool) -> Publish {
        self.dup = dup;
        self
    }

    /// The same message with these properties (5.0).
    pub fn with_properties(mut self, properties: Properties) -> Publish {
        self.properties = properties;
        self
    }

    /// The topic name; empty only in 5.0 with a topic alias.
    #[inline]
    pub fn topic(&self) -> &str {
        let bytes = &self.data[..usize::from(self.topic_len)];
        // SAFETY: `data` starts with `topic_len` bytes that are a `Str`'s
        // (`new`) or that `Reader::topic_name` checked as UTF-8 (`read`).
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    /// The topic name as a view of its own.
    pub fn topic_view(&self) -> Str {
        Str::from_checked(self.data.slice(..usize::from(self.topic_len)))
    }

    /// The application message.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.data[self.payload_at..]
    }

    /// The application message as a view of its own.
    pub fn payload_view(&self) -> Bytes {
        self.data.slice(self.payload_at..)
    }

    /// Reads the body; `flags` are the low four bits of the first byte,
    /// already checked for QoS 3 and DUP at QoS 0.
    #[inline]
    pub(crate) fn read(
        r: &mut Reader<'_>,
        flags: u8,
        version: Version,
        from: Sender,
    ) -> Result<Publish, Violation> {
        let p = PublishRef::check(r, flags, version, from)?;
        Ok(Publish {
            dup: p.dup,
            qos: p.qos,
            retain: p.retain,
            packet_id: p.packet_id,
            properties: Properties::view_of(r, p.properties.as_bytes()),
            // One view from the topic to the end of the packet.
            data: r.view_from(p.topic.as_bytes()),
            // `topic_name_span` read a two-byte length.
            topic_len: p.topic.len() as u16,
            // Addresses in one buffer, the payload after the topic.
            payload_at: (p.payload.as_ptr() as usize).wrapping_sub(p.topic.as_ptr() as usize),
        })
    }

    /// The low four bits of the first byte.
    pub(crate) fn flags(&self) -> u8 {
        (u8::from(self.dup) << 3) | ((self.qos as u8) << 1) | u8::from(self.retain)
    }

    pub(crate) fn body_len(&self, version: Version) -> usize {
        let mut n = 2 + usize::from(self.topic_len) + self.payload().len();
        if self.qos != QoS::AtMostOnce {
            n += 2;
        }
        if version == Version::V5 {
            n += self.properties.wire_len();
        }
        n
    }

    pub(crate) fn put_body<B: BufMut>(&self, version: Version, buf: &mut B) {
        buf.put_u16(self.topic_len);
        buf.put_slice(self.topic().as_bytes());
        if self.qos != QoS::AtMostOnce {
            buf.put_u16(self.packet_id);
        }
        if version == Version::V5 {
            self.properties.put(buf);
        }
        buf.put_slice(self.payload());
    }

    /// The fields that make the message, for comparing and hashing.
    fn key(&self) -> (bool, QoS, bool, u16, &Properties, &str, &[u8]) {
        (
            self.dup,
            self.qos,
            self.retain,
            self.packet_id,
            &self.properties,
            self.topic(),
            self.payload(),
        )
    }
}

impl<'a> PublishRef<'a> {
    /// Checks the body; `flags` are the low four bits of the first byte,
    /// already checked for QoS 3 and DUP at QoS 0. Reads to the end.
    #[inline]
    pub(crate) fn check(
        r: &mut Reader<'a>,
        flags: u8,
        version: Version,
        from: Sender,
    ) -> Result<PublishRef<'a>, Violation> {
        let qos = match (flags >> 1) & 3 {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        };
        let topic_pos = r.pos();
        let (_, topic) = r.topic_name_span("topic name", version == Version::V5)?;
        let packet_id = if qos == QoS::AtMostOnce {
            0
        } else {
            let at = r.pos();
            let id = r.u16("packet identifier")?;
            if id == 0 {
                return Err(fault(MqttFault::PacketIdZero, at));
            }
            id
        };
        let (properties, payload_is_utf8) = if version == Version::V5 {
            let (block, summary) = Properties::check(r, Scope::PUBLISH, PacketType::Publish, from)?;
            if topic.is_empty() && summary.topic_alias.is_none() {
                return Err(fault(MqttFault::EmptyTopicWithoutAlias, topic_pos));
            }
            (block, summary.payload_is_utf8)
        } else {
            (&[][..], false)
        };
        let payload_pos = r.pos();
        let payload = r.rest_slice();
        if payload_is_utf8 {
            check_payload_utf8(payload, payload_pos)?;
        }
        Ok(PublishRef {
            dup: flags & 0x08 != 0,
            qos,
            retain: flags & 1 != 0,
            packet_id,
            // SAFETY: `Reader::topic_name_span` passed these bytes through
            // `check_utf8`, which runs `str::from_utf8` on every string
            // holding a byte above 0x7f; the others are ASCII, hence UTF-8.
            topic: unsafe { std::str::from_utf8_unchecked(topic) },
            properties: PropertiesRef(properties),
            payload,
        })
    }
}

impl PartialEq for Publish {
    fn eq(&self, other: &Publish) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Publish {}

impl Hash for Publish {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl fmt::Debug for Publish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publish")
            .field("dup", &self.dup)
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .field("packet_id", &self.packet_id)
            .field("properties", &self.properties)
            .field("topic", &self.topic())
            .field("payload", &Bytes::copy_from_slice(self.payload()))
            .finish()
    }
}

/// A PUBACK, PUBREC, PUBREL or PUBCOMP: which one is the [`Packet`](super::Packet)
/// variant that holds it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ack {
    /// The packet identifier of the PUBLISH (or PUBREL) acknowledged.
    pub packet_id: u16,
    /// The reason code (5.0; 0 in 3.1.1).
    pub code: u8,
    /// The properties (5.0; empty in 3.1.1).
    pub properties: Properties,
}

/// Reason codes of PUBACK and PUBREC.
const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
/// Reason codes of PUBREL and PUBCOMP.
const PUBREL_CODES: &[u8] = &[0x00, 0x92];

impl Ack {
    /// An acknowledgement with reason code 0 and no properties.
    pub const fn new(packet_id: u16) -> Ack {
        Ack {
            packet_id,
            code: 0,
            properties: Properties::new(),
        }
    }

    pub(crate) fn read(
        r: &mut Reader<'_>,
        packet: PacketType,
        version: Version,
        from: Sender,
    ) -> Result<Ack, Violation> {
        let (packet_id, code, block) = Ack::check(r, packet, version, from)?;
        Ok(Ack {
            packet_id,
            code,
            properties: Properties::view_of(r, block),
        })
    }

    /// Checks the body: the packet identifier, the reason code and the
    /// property block, borrowed.
    #[inline]
    pub(crate) fn check<'a>(
        r: &mut Reader<'a>,
        packet: PacketType,
        version: Version,
        from: Sender,
    ) -> Result<(u16, u8, &'a [u8]), Violation> {
        let id_at = r.pos();
        let packet_id = r.u16("packet identifier")?;
        if packet_id == 0 {
            return Err(fault(MqttFault::PacketIdZero, id_at));
        }
        let (mut code, mut properties) = (0, &[][..]);
        if version == Version::V5 && !r.is_empty() {
            let code_at = r.pos();
            code = r.u8("reason code")?;
            let allowed = match packet {
                PacketType::PubAck | PacketType::PubRec => PUBACK_CODES,
                _ => PUBREL_CODES,
            };
            if !allowed.contains(&code) {
                return Err(fault(MqttFault::ReasonCode { packet, code }, code_at));
            }
            if !r.is_empty() {
                properties = Properties::check(r, Scope::ACK, packet, from)?.0;
            }
        }
        r.finish()?;
        Ok((packet_id, code, properties))
    }

    /// Canonical form: in 5.0 the reason code is left out when it is 0 and
    /// there are no properties, and the property length when there are none.
    pub(crate) fn body_len(&self, version: Version) -> usize {
        match version {
            Version::V311 => 2,
            Version::V5 if self.properties.is_empty() => 2 + usize::from(self.code != 0),
            Version::V5 => 3 + self.properties.wire_len(),
        }
    }

    pub(crate) fn put_body<B: BufMut>(&self, version: Version, buf: &mut B) {
        buf.put_u16(self.packet_id);
        if version == Version::V5 && (self.code != 0 || !self.properties.is_empty()) {
            buf.put_u8(self.code);
            if !self.properties.is_empty() {
                self.properties.put(buf);
            }
        }
    }
}

/// A PUBLISH, borrowed: see [`Publish`](super::Publish) for the owned one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PublishRef<'a> {
    /// Whether this is a re-delivery (never at QoS 0).
    pub dup: bool,
    /// The quality of service.
    pub qos: QoS,
    /// Whether the server keeps the message for later subscribers.
    pub retain: bool,
    /// The packet identifier: non-zero at QoS 1 and 2, 0 (absent) at QoS 0.
    pub packet_id: u16,
    /// The topic name (checked: UTF-8, no U+0000, no wildcard); empty only
    /// in 5.0 with a topic alias.
    pub topic: &'a str,
    /// PUBLISH properties (5.0).
    pub properties: PropertiesRef<'a>,
    /// The application message.
    pub payload: &'a [u8],
}

/// A PUBACK, PUBREC, PUBREL or PUBCOMP, borrowed: which one is the
/// [`PacketRef`](super::PacketRef) variant that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AckRef<'a> {
    /// The packet identifier acknowledged.
    pub packet_id: u16,
    /// The reason code (5.0; 0 in 3.1.1).
    pub code: u8,
    /// The properties (5.0).
    pub properties: PropertiesRef<'a>,
}
