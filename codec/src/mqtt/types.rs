//! The small types every packet family shares: version, sender, QoS,
//! packet type, and why a packet cannot be encoded.

use std::fmt;

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
    pub(crate) const fn fixed_flags(self) -> u8 {
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

/// Why a packet cannot be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// Binary data over 65,535 bytes.
    FieldTooLong,
    /// A remaining length over [`MAX_REMAINING_LENGTH`](super::MAX_REMAINING_LENGTH).
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
