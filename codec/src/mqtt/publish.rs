//! PUBLISH and its acknowledgements (PUBACK, PUBREC, PUBREL, PUBCOMP), both
//! directions.

use bytes::{BufMut, Bytes};

use super::fault::MqttFault;
use super::property::{check_payload_utf8, Properties, Scope};
use super::wire::{fault, Reader, Str};
use super::{PacketType, QoS, Sender, Version};
use crate::violation::Violation;

/// An application message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Publish {
    /// Whether this is a re-delivery (never at QoS 0).
    pub dup: bool,
    /// The quality of service.
    pub qos: QoS,
    /// Whether the server keeps the message for later subscribers.
    pub retain: bool,
    /// The topic name; empty only in 5.0 with a topic alias.
    pub topic: Str,
    /// The packet identifier: non-zero at QoS 1 and 2, 0 (absent) at QoS 0.
    pub packet_id: u16,
    /// PUBLISH properties (5.0; empty in 3.1.1).
    pub properties: Properties,
    /// The application message.
    pub payload: Bytes,
}

impl Publish {
    /// Reads the body; `flags` are the low four bits of the first byte,
    /// already checked for QoS 3 and DUP at QoS 0.
    #[inline]
    pub(crate) fn read(
        r: &mut Reader<'_>,
        flags: u8,
        version: Version,
        from: Sender,
    ) -> Result<Publish, Violation> {
        let qos = match (flags >> 1) & 3 {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        };
        let topic_at = r.pos();
        let topic = r.topic_name("topic name", version == Version::V5)?;
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
            let (properties, summary) =
                Properties::read(r, Scope::PUBLISH, PacketType::Publish, from)?;
            if topic.is_empty() && summary.topic_alias.is_none() {
                return Err(fault(MqttFault::EmptyTopicWithoutAlias, topic_at));
            }
            (properties, summary.payload_is_utf8)
        } else {
            (Properties::new(), false)
        };
        let payload_at = r.pos();
        let payload = r.rest();
        if payload_is_utf8 {
            check_payload_utf8(&payload, payload_at)?;
        }
        Ok(Publish {
            dup: flags & 0x08 != 0,
            qos,
            retain: flags & 1 != 0,
            topic,
            packet_id,
            properties,
            payload,
        })
    }

    /// The low four bits of the first byte.
    pub(crate) fn flags(&self) -> u8 {
        (u8::from(self.dup) << 3) | ((self.qos as u8) << 1) | u8::from(self.retain)
    }

    pub(crate) fn body_len(&self, version: Version) -> usize {
        let mut n = self.topic.wire_len() + self.payload.len();
        if self.qos != QoS::AtMostOnce {
            n += 2;
        }
        if version == Version::V5 {
            n += self.properties.wire_len();
        }
        n
    }

    pub(crate) fn put_body<B: BufMut>(&self, version: Version, buf: &mut B) {
        self.topic.put(buf);
        if self.qos != QoS::AtMostOnce {
            buf.put_u16(self.packet_id);
        }
        if version == Version::V5 {
            self.properties.put(buf);
        }
        buf.put_slice(&self.payload);
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
        let id_at = r.pos();
        let packet_id = r.u16("packet identifier")?;
        if packet_id == 0 {
            return Err(fault(MqttFault::PacketIdZero, id_at));
        }
        let mut ack = Ack::new(packet_id);
        if version == Version::V5 && !r.is_empty() {
            let code_at = r.pos();
            ack.code = r.u8("reason code")?;
            let allowed = match packet {
                PacketType::PubAck | PacketType::PubRec => PUBACK_CODES,
                _ => PUBREL_CODES,
            };
            if !allowed.contains(&ack.code) {
                return Err(fault(
                    MqttFault::ReasonCode {
                        packet,
                        code: ack.code,
                    },
                    code_at,
                ));
            }
            if !r.is_empty() {
                ack.properties = Properties::read(r, Scope::ACK, packet, from)?.0;
            }
        }
        r.finish()?;
        Ok(ack)
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
