//! CONNECT (client to server) and CONNACK (server to client).

use std::fmt;

use bytes::{BufMut, Bytes};

use super::fault::MqttFault;
use super::property::{check_payload_utf8, Properties, Scope};
use super::types::{EncodeError, PacketType, QoS, Sender, Version};
use super::wire::{binary_len, fault, put_binary, Reader, Str};
use crate::violation::Violation;

/// A client's request to connect. Its protocol level decides the version of
/// every later packet on the connection.
///
/// The payload (client identifier, will, user name, password) is kept as one
/// checked view of the packet and read back by the accessors, which keeps a
/// [`Packet`](super::Packet) small; build one to send with [`Connect::new`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Connect {
    /// The protocol version (level 4 or 5).
    pub version: Version,
    /// Clean session (3.1.1) or clean start (5.0).
    pub clean_start: bool,
    /// Keep alive, in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// CONNECT properties (5.0; empty in 3.1.1).
    pub properties: Properties,
    /// The connect flags for the payload: will, will QoS, will retain,
    /// password, user name (bits 2 to 7 as on the wire).
    flags: u8,
    /// The checked payload, in wire order.
    payload: Bytes,
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

const WILL: u8 = 0x04;
const WILL_RETAIN: u8 = 0x20;
const PASSWORD: u8 = 0x40;
const USER_NAME: u8 = 0x80;

/// The payload fields of a CONNECT.
struct Parts {
    client_id: Str,
    will: Option<Will>,
    user_name: Option<Str>,
    password: Option<Bytes>,
}

impl Connect {
    /// A CONNECT to send: clean start, keep alive off, no properties (set
    /// those fields as needed). Fails for a will payload or password over
    /// 65,535 bytes.
    pub fn new(
        version: Version,
        client_id: Str,
        will: Option<Will>,
        user_name: Option<Str>,
        password: Option<Bytes>,
    ) -> Result<Connect, EncodeError> {
        let mut buf = Vec::new();
        let mut flags = 0;
        client_id.put(&mut buf);
        if let Some(w) = &will {
            binary_len(&w.payload)?;
            flags |= WILL | ((w.qos as u8) << 3) | (u8::from(w.retain) * WILL_RETAIN);
            if version == Version::V5 {
                w.properties.put(&mut buf);
            }
            w.topic.put(&mut buf);
            put_binary(&mut buf, &w.payload);
        }
        if let Some(u) = &user_name {
            flags |= USER_NAME;
            u.put(&mut buf);
        }
        if let Some(p) = &password {
            binary_len(p)?;
            flags |= PASSWORD;
            put_binary(&mut buf, p);
        }
        Ok(Connect {
            version,
            clean_start: true,
            keep_alive: 0,
            properties: Properties::new(),
            flags,
            payload: Bytes::from(buf),
        })
    }

    /// Reads the payload back; it was checked when decoded or built.
    fn parts(&self) -> Parts {
        let mut r = Reader::new(&self.payload, 0, self.payload.len());
        let mut parts = Parts {
            client_id: r.string("client identifier").unwrap_or_default(),
            will: None,
            user_name: None,
            password: None,
        };
        if self.flags & WILL != 0 {
            let properties = if self.version == Version::V5 {
                Properties::read(&mut r, Scope::WILL, PacketType::Connect, Sender::Client)
                    .map(|(p, _)| p)
                    .unwrap_or_default()
            } else {
                Properties::new()
            };
            parts.will = Some(Will {
                qos: QoS::from_u8((self.flags >> 3) & 3).unwrap_or(QoS::AtMostOnce),
                retain: self.flags & WILL_RETAIN != 0,
                properties,
                topic: r.string("will topic").unwrap_or_default(),
                payload: r.binary("will payload").unwrap_or_default(),
            });
        }
        if self.flags & USER_NAME != 0 {
            parts.user_name = r.string("user name").ok();
        }
        if self.flags & PASSWORD != 0 {
            parts.password = r.binary("password").ok();
        }
        parts
    }

    /// The client identifier; may be empty.
    pub fn client_id(&self) -> Str {
        self.parts().client_id
    }

    /// The will message, if any.
    pub fn will(&self) -> Option<Will> {
        self.parts().will
    }

    /// The user name, if any.
    pub fn user_name(&self) -> Option<Str> {
        self.parts().user_name
    }

    /// The password, if any.
    pub fn password(&self) -> Option<Bytes> {
        self.parts().password
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Connect, Violation> {
        let name_at = r.pos();
        let name = r.binary_slice("protocol name")?;
        let level_at = r.pos();
        let level = r.u8("protocol level")?;
        let version = match (name, level) {
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
        let will = flags & WILL != 0;
        let will_qos = (flags >> 3) & 0x03;
        if !will && will_qos != 0 {
            return Err(fault(MqttFault::WillQosWithoutWill, flags_at));
        }
        if !will && flags & WILL_RETAIN != 0 {
            return Err(fault(MqttFault::WillRetainWithoutWill, flags_at));
        }
        if will_qos == 3 {
            return Err(fault(MqttFault::WillQos3, flags_at));
        }
        if !v5 && flags & PASSWORD != 0 && flags & USER_NAME == 0 {
            return Err(fault(MqttFault::PasswordWithoutUserName, flags_at));
        }
        let keep_alive = r.u16("keep alive")?;
        let properties = if v5 {
            Properties::read(r, Scope::CONNECT, PacketType::Connect, Sender::Client)?.0
        } else {
            Properties::new()
        };
        let payload_start = r.pos();
        let id_at = r.pos();
        let (_, client_id_len, _) = r.string_span("client identifier")?;
        if !v5 && client_id_len == 0 && !clean_start {
            return Err(fault(MqttFault::ClientIdRejected, id_at));
        }
        if will {
            let summary = if v5 {
                Properties::read(r, Scope::WILL, PacketType::Connect, Sender::Client)?.1
            } else {
                Default::default()
            };
            r.topic_name_span("will topic", false)?;
            let payload_at = r.pos() + 2;
            let payload = r.binary_slice("will payload")?;
            if summary.payload_is_utf8 {
                check_payload_utf8(payload, payload_at)?;
            }
        }
        if flags & USER_NAME != 0 {
            r.skip_string("user name")?;
        }
        if flags & PASSWORD != 0 {
            r.skip_binary("password")?;
        }
        r.finish()?;
        Ok(Connect {
            version,
            clean_start,
            keep_alive,
            properties,
            flags: flags & 0xfc,
            payload: r.span(payload_start),
        })
    }

    pub(crate) fn body_len(&self) -> usize {
        let mut n = 2 + 4 + 1 + 1 + 2 + self.payload.len();
        if self.version == Version::V5 {
            n += self.properties.wire_len();
        }
        n
    }

    pub(crate) fn put_body<B: BufMut>(&self, buf: &mut B) {
        buf.put_u16(4);
        buf.put_slice(MQTT);
        buf.put_u8(self.version.level());
        buf.put_u8(self.flags | (u8::from(self.clean_start) << 1));
        buf.put_u16(self.keep_alive);
        if self.version == Version::V5 {
            self.properties.put(buf);
        }
        buf.put_slice(&self.payload);
    }
}

impl fmt::Debug for Connect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = self.parts();
        f.debug_struct("Connect")
            .field("version", &self.version)
            .field("clean_start", &self.clean_start)
            .field("keep_alive", &self.keep_alive)
            .field("properties", &self.properties)
            .field("client_id", &parts.client_id)
            .field("will", &parts.will)
            .field("user_name", &parts.user_name)
            .field("password", &parts.password)
            .finish()
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
