//! CONNECT (client to server) and CONNACK (server to client).

use bytes::{BufMut, Bytes};

use super::fault::MqttFault;
use super::property::{check_payload_utf8, Properties, Scope};
use super::wire::{binary_len, fault, put_binary, Reader, Str};
use super::{EncodeError, PacketType, QoS, Sender, Version};
use crate::violation::Violation;

/// A client's request to connect. Its protocol level decides the version of
/// every later packet on the connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Connect {
    /// The protocol version (level 4 or 5).
    pub version: Version,
    /// Clean session (3.1.1) or clean start (5.0).
    pub clean_start: bool,
    /// Keep alive, in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// CONNECT properties (5.0; empty in 3.1.1).
    pub properties: Properties,
    /// The client identifier; may be empty.
    pub client_id: Str,
    /// The will message, if any.
    pub will: Option<Will>,
    /// The user name, if any.
    pub user_name: Option<Str>,
    /// The password, if any.
    pub password: Option<Bytes>,
}

/// The message a server publishes for a client that goes away unannounced.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Will {
    /// The QoS to publish it with.
    pub qos: QoS,
    /// Whether to publish it retained.
    pub retain: bool,
    /// Will properties (5.0; empty in 3.1.1).
    pub properties: Properties,
    /// The topic name.
    pub topic: Str,
    /// The payload.
    pub payload: Bytes,
}

/// The protocol name of MQTT 3.1.1 and 5.0.
const MQTT: &[u8] = b"MQTT";
/// The protocol name of MQTT 3.1 (level 3), which this codec refuses.
const MQISDP: &[u8] = b"MQIsdp";

impl Connect {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Connect, Violation> {
        let name_at = r.pos();
        let name = r.binary("protocol name")?;
        let level_at = r.pos();
        let level = r.u8("protocol level")?;
        let version = match (&name[..], level) {
            (MQTT, 4) => Version::V311,
            (MQTT, 5) => Version::V5,
            (MQTT, _) | (MQISDP, _) => {
                return Err(fault(MqttFault::UnsupportedProtocolLevel(level), level_at))
            }
            _ => return Err(fault(MqttFault::ProtocolName, name_at)),
        };
        let v5 = version == Version::V5;
        let flags_at = r.pos();
        let flags = r.u8("connect flags")?;
        if flags & 0x01 != 0 {
            return Err(fault(MqttFault::ConnectReservedFlag, flags_at));
        }
        let clean_start = flags & 0x02 != 0;
        let will_flag = flags & 0x04 != 0;
        let will_qos = (flags >> 3) & 0x03;
        let will_retain = flags & 0x20 != 0;
        let has_password = flags & 0x40 != 0;
        let has_user = flags & 0x80 != 0;
        if !will_flag && will_qos != 0 {
            return Err(fault(MqttFault::WillQosWithoutWill, flags_at));
        }
        if !will_flag && will_retain {
            return Err(fault(MqttFault::WillRetainWithoutWill, flags_at));
        }
        let Some(will_qos) = QoS::from_u8(will_qos) else {
            return Err(fault(MqttFault::WillQos3, flags_at));
        };
        if !v5 && has_password && !has_user {
            return Err(fault(MqttFault::PasswordWithoutUserName, flags_at));
        }
        let keep_alive = r.u16("keep alive")?;
        let properties = if v5 {
            Properties::read(r, Scope::CONNECT, PacketType::Connect, Sender::Client)?.0
        } else {
            Properties::new()
        };
        let id_at = r.pos();
        let client_id = r.string("client identifier")?;
        if !v5 && client_id.is_empty() && !clean_start {
            return Err(fault(MqttFault::ClientIdRejected, id_at));
        }
        let will = if will_flag {
            let (properties, summary) = if v5 {
                Properties::read(r, Scope::WILL, PacketType::Connect, Sender::Client)?
            } else {
                Default::default()
            };
            let topic = r.topic_name("will topic", false)?;
            let payload_at = r.pos() + 2;
            let payload = r.binary("will payload")?;
            if summary.payload_is_utf8 {
                check_payload_utf8(&payload, payload_at)?;
            }
            Some(Will {
                qos: will_qos,
                retain: will_retain,
                properties,
                topic,
                payload,
            })
        } else {
            None
        };
        let user_name = if has_user {
            Some(r.string("user name")?)
        } else {
            None
        };
        let password = if has_password {
            Some(r.binary("password")?)
        } else {
            None
        };
        r.finish()?;
        Ok(Connect {
            version,
            clean_start,
            keep_alive,
            properties,
            client_id,
            will,
            user_name,
            password,
        })
    }

    pub(crate) fn body_len(&self) -> Result<usize, EncodeError> {
        let v5 = self.version == Version::V5;
        let mut n = 2 + 4 + 1 + 1 + 2 + self.client_id.wire_len();
        if v5 {
            n += self.properties.wire_len();
        }
        if let Some(w) = &self.will {
            if v5 {
                n += w.properties.wire_len();
            }
            n += w.topic.wire_len() + binary_len(&w.payload)?;
        }
        if let Some(u) = &self.user_name {
            n += u.wire_len();
        }
        if let Some(p) = &self.password {
            n += binary_len(p)?;
        }
        Ok(n)
    }

    pub(crate) fn put_body<B: BufMut>(&self, buf: &mut B) {
        let v5 = self.version == Version::V5;
        buf.put_u16(4);
        buf.put_slice(MQTT);
        buf.put_u8(if v5 { 5 } else { 4 });
        let mut flags = u8::from(self.clean_start) << 1;
        if let Some(w) = &self.will {
            flags |= 0x04 | ((w.qos as u8) << 3) | (u8::from(w.retain) << 5);
        }
        flags |= u8::from(self.password.is_some()) << 6;
        flags |= u8::from(self.user_name.is_some()) << 7;
        buf.put_u8(flags);
        buf.put_u16(self.keep_alive);
        if v5 {
            self.properties.put(buf);
        }
        self.client_id.put(buf);
        if let Some(w) = &self.will {
            if v5 {
                w.properties.put(buf);
            }
            w.topic.put(buf);
            put_binary(buf, &w.payload);
        }
        if let Some(u) = &self.user_name {
            u.put(buf);
        }
        if let Some(p) = &self.password {
            put_binary(buf, p);
        }
    }
}

/// The server's answer to a CONNECT.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnAck {
    /// Whether the server resumed a session.
    pub session_present: bool,
    /// The return code (3.1.1: 0 to 5) or reason code (5.0).
    pub code: u8,
    /// CONNACK properties (5.0; empty in 3.1.1).
    pub properties: Properties,
}

/// MQTT 5.0 CONNACK reason codes.
const CONNACK_V5: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];

impl ConnAck {
    pub(crate) fn read(r: &mut Reader<'_>, version: Version) -> Result<ConnAck, Violation> {
        let flags_at = r.pos();
        let flags = r.u8("acknowledge flags")?;
        if flags & 0xfe != 0 {
            return Err(fault(MqttFault::ConnAckFlags(flags), flags_at));
        }
        let code_at = r.pos();
        let code = r.u8("reason code")?;
        let allowed = match version {
            Version::V311 => code <= 5,
            Version::V5 => CONNACK_V5.contains(&code),
        };
        if !allowed {
            return Err(fault(
                MqttFault::ReasonCode {
                    packet: PacketType::ConnAck,
                    code,
                },
                code_at,
            ));
        }
        let session_present = flags & 1 != 0;
        if session_present && code != 0 {
            return Err(fault(MqttFault::SessionPresentWithError, flags_at));
        }
        let properties = if version == Version::V5 {
            Properties::read(r, Scope::CONNACK, PacketType::ConnAck, Sender::Server)?.0
        } else {
            Properties::new()
        };
        r.finish()?;
        Ok(ConnAck {
            session_present,
            code,
            properties,
        })
    }

    pub(crate) fn body_len(&self, version: Version) -> usize {
        2 + match version {
            Version::V311 => 0,
            Version::V5 => self.properties.wire_len(),
        }
    }

    pub(crate) fn put_body<B: BufMut>(&self, version: Version, buf: &mut B) {
        buf.put_u8(u8::from(self.session_present));
        buf.put_u8(self.code);
        if version == Version::V5 {
            self.properties.put(buf);
        }
    }
}
