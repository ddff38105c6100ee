//! The MQTT faults: every way one received MQTT packet can break a rule of
//! MQTT 3.1.1 or 5.0 that the codec checks on its bytes alone.
//!
//! A fault is carried by [`ViolationKind::Mqtt`](crate::ViolationKind::Mqtt);
//! its MQTT 5.0 reason code and its close reason are decided in one place,
//! [`ViolationKind::reason_code`](crate::ViolationKind::reason_code) and
//! [`ViolationKind::close_reason`](crate::ViolationKind::close_reason).
//! Faults that MQTT shares with the session protocol (input cut short, bad
//! UTF-8, bytes left over, a packet over the size limit) use the shared kinds.

use std::fmt;

use super::types::PacketType;
use crate::field::Field;

/// A rule of MQTT 3.1.1 or 5.0 broken by the bytes of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MqttFault {
    /// Packet type 0, or 15 (AUTH) in MQTT 3.1.1: reserved.
    ReservedPacketType(u8),
    /// The low four bits of the first byte differ from the fixed value the
    /// packet type requires (the whole first byte).
    ReservedFlags(u8),
    /// A variable byte integer with a continuation bit on its fourth byte.
    VarIntTooLong(Field),
    /// A variable byte integer longer than its value needs.
    VarIntNotMinimal(Field),
    /// A string holding U+0000.
    NullCharacter(Field),
    /// A CONNECT whose protocol name is neither `MQTT` nor `MQIsdp`.
    ProtocolName,
    /// A CONNECT whose reserved flag (bit 0) is set.
    ConnectReservedFlag,
    /// A CONNECT with will QoS above 0 but no will flag.
    WillQosWithoutWill,
    /// A CONNECT with will retain but no will flag.
    WillRetainWithoutWill,
    /// A CONNECT whose will QoS is 3.
    WillQos3,
    /// An MQTT 3.1.1 CONNECT with the password flag but not the user name flag.
    PasswordWithoutUserName,
    /// A PUBLISH with both QoS bits set.
    Qos3,
    /// A PUBLISH at QoS 0 with the DUP flag.
    DupWithQos0,
    /// A topic name (PUBLISH, will, response topic) holding `+` or `#`.
    WildcardInTopicName(Field),
    /// A topic name or topic filter with no characters.
    EmptyTopic(Field),
    /// A topic filter whose `+` or `#` does not stand alone in its level, or
    /// whose `#` is not in the last level.
    WildcardPlacement,
    /// A `$share/` topic filter without a share name, with a wildcard in the
    /// share name, or without a filter after it (MQTT 5.0).
    SharedSubscription,
    /// A subscription options byte with reserved bits set or QoS 3.
    SubscriptionOptions(u8),
    /// A CONNACK whose acknowledge flags have a reserved bit set.
    ConnAckFlags(u8),
    /// A property identifier MQTT 5.0 does not define.
    UnknownProperty(u8),
    /// A property this packet may not carry (or this sender may not send).
    PropertyNotAllowed {
        /// The property identifier.
        id: u8,
        /// The packet it was found in.
        packet: PacketType,
    },
    /// A packet identifier of 0 where one is required.
    PacketIdZero,
    /// A SUBSCRIBE without a topic filter.
    NoSubscriptions,
    /// An UNSUBSCRIBE without a topic filter.
    NoUnsubscriptions,
    /// A property that may appear once, found a second time.
    DuplicateProperty(u8),
    /// A property whose value is outside its range (receive maximum 0, a flag
    /// above 1, ...).
    PropertyValue(u8),
    /// Authentication data without an authentication method.
    AuthDataWithoutMethod,
    /// An AUTH with properties but no authentication method.
    MissingAuthMethod,
    /// A reason code this packet (from this sender) may not carry.
    ReasonCode {
        /// The packet it was found in.
        packet: PacketType,
        /// The reason code.
        code: u8,
    },
    /// A packet this sender never sends, a packet before CONNECT, or a
    /// second CONNECT.
    UnexpectedPacket(PacketType),
    /// An MQTT 5.0 PUBLISH with an empty topic name and no topic alias.
    EmptyTopicWithoutAlias,
    /// A subscription with No Local on a shared subscription.
    NoLocalOnShared,
    /// A subscription whose retain handling is 3.
    RetainHandling3,
    /// A PUBLISH from a client carrying a subscription identifier.
    SubscriptionIdFromClient,
    /// A CONNACK with session present and a refusing reason code.
    SessionPresentWithError,
    /// A topic alias of 0.
    TopicAliasZero,
    /// A payload announced as UTF-8 (payload format indicator 1) that is not.
    PayloadNotUtf8,
    /// A CONNECT for a protocol level this codec does not speak (MQTT 3.1's
    /// level 3 included). A refusal, not a malformed packet.
    UnsupportedProtocolLevel(u8),
    /// An MQTT 3.1.1 CONNECT with an empty client identifier and clean
    /// session 0. A refusal, not a malformed packet.
    ClientIdRejected,
    /// A QoS 2 PUBLISH, not marked DUP, whose packet identifier is still
    /// waiting for its PUBREL (the session layer's check).
    PacketIdInUse(u16),
    /// A PUBACK, PUBREC or PUBCOMP for a packet identifier the server has
    /// not sent, or not at that step (the session layer's check).
    AckNotInFlight {
        /// The acknowledgement.
        packet: PacketType,
        /// Its packet identifier.
        id: u16,
    },
    /// One more QoS 2 PUBLISH waiting for its PUBREL than the receive
    /// maximum the server announced (the session layer's check).
    ReceiveMaximumExceeded,
    /// A topic alias above the topic alias maximum the server announced (the
    /// session layer's check).
    TopicAliasInvalid(u16),
    /// A PUBLISH with an empty topic name and a topic alias that names no
    /// topic yet on this connection (the session layer's check).
    TopicAliasUnknown(u16),
    /// A PUBLISH at a QoS above the maximum QoS the server announced (the
    /// session layer's check).
    QosNotSupported(u8),
    /// A DISCONNECT that sets a session expiry interval when the CONNECT
    /// had none (the session layer's check).
    SessionExpiryAfterZero,
    /// A CONNECT naming an authentication method the server does not
    /// offer (the session layer's refusal).
    BadAuthenticationMethod,
    /// A CONNECT whose user name or password the server refuses (the
    /// server's decision, through the session layer).
    BadUserNameOrPassword,
    /// A CONNECT the server does not authorize (the server's decision,
    /// through the session layer).
    NotAuthorized,
    /// A CONNECT refused because the server is at its client limit.
    ServerBusy,
}

impl MqttFault {
    /// A short stable name (`qos-3`, `packet-id-zero`, ...), for the corpus
    /// and the CLI.
    pub const fn name(self) -> &'static str {
        match self {
            MqttFault::ReservedPacketType(_) => "mqtt-reserved-packet-type",
            MqttFault::ReservedFlags(_) => "mqtt-reserved-flags",
            MqttFault::VarIntTooLong(_) => "mqtt-varint-too-long",
            MqttFault::VarIntNotMinimal(_) => "mqtt-varint-not-minimal",
            MqttFault::NullCharacter(_) => "mqtt-null-character",
            MqttFault::ProtocolName => "mqtt-protocol-name",
            MqttFault::ConnectReservedFlag => "mqtt-connect-reserved-flag",
            MqttFault::WillQosWithoutWill => "mqtt-will-qos-without-will",
            MqttFault::WillRetainWithoutWill => "mqtt-will-retain-without-will",
            MqttFault::WillQos3 => "mqtt-will-qos-3",
            MqttFault::PasswordWithoutUserName => "mqtt-password-without-user-name",
            MqttFault::Qos3 => "mqtt-qos-3",
            MqttFault::DupWithQos0 => "mqtt-dup-with-qos-0",
            MqttFault::WildcardInTopicName(_) => "mqtt-wildcard-in-topic-name",
            MqttFault::EmptyTopic(_) => "mqtt-empty-topic",
            MqttFault::WildcardPlacement => "mqtt-wildcard-placement",
            MqttFault::SharedSubscription => "mqtt-shared-subscription",
            MqttFault::SubscriptionOptions(_) => "mqtt-subscription-options",
            MqttFault::ConnAckFlags(_) => "mqtt-connack-flags",
            MqttFault::UnknownProperty(_) => "mqtt-unknown-property",
            MqttFault::PropertyNotAllowed { .. } => "mqtt-property-not-allowed",
            MqttFault::PacketIdZero => "mqtt-packet-id-zero",
            MqttFault::NoSubscriptions => "mqtt-no-subscriptions",
            MqttFault::NoUnsubscriptions => "mqtt-no-unsubscriptions",
            MqttFault::DuplicateProperty(_) => "mqtt-duplicate-property",
            MqttFault::PropertyValue(_) => "mqtt-property-value",
            MqttFault::AuthDataWithoutMethod => "mqtt-auth-data-without-method",
            MqttFault::MissingAuthMethod => "mqtt-missing-auth-method",
            MqttFault::ReasonCode { .. } => "mqtt-reason-code",
            MqttFault::UnexpectedPacket(_) => "mqtt-unexpected-packet",
            MqttFault::EmptyTopicWithoutAlias => "mqtt-empty-topic-without-alias",
            MqttFault::NoLocalOnShared => "mqtt-no-local-on-shared",
            MqttFault::RetainHandling3 => "mqtt-retain-handling-3",
            MqttFault::SubscriptionIdFromClient => "mqtt-subscription-id-from-client",
            MqttFault::SessionPresentWithError => "mqtt-session-present-with-error",
            MqttFault::TopicAliasZero => "mqtt-topic-alias-zero",
            MqttFault::PayloadNotUtf8 => "mqtt-payload-not-utf8",
            MqttFault::UnsupportedProtocolLevel(_) => "mqtt-unsupported-protocol-level",
            MqttFault::ClientIdRejected => "mqtt-client-id-rejected",
            MqttFault::PacketIdInUse(_) => "mqtt-packet-id-in-use",
            MqttFault::AckNotInFlight { .. } => "mqtt-ack-not-in-flight",
            MqttFault::ReceiveMaximumExceeded => "mqtt-receive-maximum-exceeded",
            MqttFault::TopicAliasInvalid(_) => "mqtt-topic-alias-invalid",
            MqttFault::TopicAliasUnknown(_) => "mqtt-topic-alias-unknown",
            MqttFault::QosNotSupported(_) => "mqtt-qos-not-supported",
            MqttFault::SessionExpiryAfterZero => "mqtt-session-expiry-after-zero",
            MqttFault::BadAuthenticationMethod => "mqtt-bad-authentication-method",
            MqttFault::BadUserNameOrPassword => "mqtt-bad-user-name-or-password",
            MqttFault::NotAuthorized => "mqtt-not-authorized",
            MqttFault::ServerBusy => "mqtt-server-busy",
        }
    }
}

impl fmt::Display for MqttFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MqttFault::ReservedPacketType(t) => write!(f, "reserved MQTT packet type {t}"),
            MqttFault::ReservedFlags(b) => {
                write!(f, "reserved flags in MQTT first byte 0x{b:02x}")
            }
            MqttFault::VarIntTooLong(field) => {
                write!(f, "variable byte integer {field} longer than 4 bytes")
            }
            MqttFault::VarIntNotMinimal(field) => {
                write!(f, "variable byte integer {field} not in its shortest form")
            }
            MqttFault::NullCharacter(field) => write!(f, "{field} holds U+0000"),
            MqttFault::ProtocolName => f.write_str("CONNECT protocol name is not MQTT"),
            MqttFault::ConnectReservedFlag => f.write_str("CONNECT reserved flag set"),
            MqttFault::WillQosWithoutWill => f.write_str("will QoS without the will flag"),
            MqttFault::WillRetainWithoutWill => f.write_str("will retain without the will flag"),
            MqttFault::WillQos3 => f.write_str("will QoS 3"),
            MqttFault::PasswordWithoutUserName => {
                f.write_str("password flag without the user name flag")
            }
            MqttFault::Qos3 => f.write_str("PUBLISH with QoS 3"),
            MqttFault::DupWithQos0 => f.write_str("PUBLISH with DUP at QoS 0"),
            MqttFault::WildcardInTopicName(field) => write!(f, "wildcard in the {field}"),
            MqttFault::EmptyTopic(field) => write!(f, "empty {field}"),
            MqttFault::WildcardPlacement => {
                f.write_str("topic filter wildcard does not fill its level")
            }
            MqttFault::SharedSubscription => f.write_str("malformed shared subscription filter"),
            MqttFault::SubscriptionOptions(b) => {
                write!(f, "invalid subscription options 0x{b:02x}")
            }
            MqttFault::ConnAckFlags(b) => write!(f, "reserved CONNACK flags 0x{b:02x}"),
            MqttFault::UnknownProperty(id) => write!(f, "unknown property 0x{id:02x}"),
            MqttFault::PropertyNotAllowed { id, packet } => {
                write!(f, "property 0x{id:02x} not allowed in {packet}")
            }
            MqttFault::PacketIdZero => f.write_str("packet identifier 0"),
            MqttFault::NoSubscriptions => f.write_str("SUBSCRIBE without a topic filter"),
            MqttFault::NoUnsubscriptions => f.write_str("UNSUBSCRIBE without a topic filter"),
            MqttFault::DuplicateProperty(id) => write!(f, "property 0x{id:02x} given twice"),
            MqttFault::PropertyValue(id) => write!(f, "property 0x{id:02x} out of range"),
            MqttFault::AuthDataWithoutMethod => {
                f.write_str("authentication data without an authentication method")
            }
            MqttFault::MissingAuthMethod => f.write_str("AUTH without an authentication method"),
            MqttFault::ReasonCode { packet, code } => {
                write!(f, "reason code 0x{code:02x} not allowed in {packet}")
            }
            MqttFault::UnexpectedPacket(packet) => write!(f, "unexpected {packet}"),
            MqttFault::EmptyTopicWithoutAlias => {
                f.write_str("PUBLISH with an empty topic name and no topic alias")
            }
            MqttFault::NoLocalOnShared => f.write_str("No Local on a shared subscription"),
            MqttFault::RetainHandling3 => f.write_str("retain handling 3"),
            MqttFault::SubscriptionIdFromClient => {
                f.write_str("subscription identifier in a PUBLISH from a client")
            }
            MqttFault::SessionPresentWithError => {
                f.write_str("session present with a refusing reason code")
            }
            MqttFault::TopicAliasZero => f.write_str("topic alias 0"),
            MqttFault::PayloadNotUtf8 => f.write_str("payload announced as UTF-8 is not"),
            MqttFault::UnsupportedProtocolLevel(l) => {
                write!(f, "unsupported MQTT protocol level {l}")
            }
            MqttFault::ClientIdRejected => {
                f.write_str("empty client identifier without clean session")
            }
            MqttFault::PacketIdInUse(id) => {
                write!(f, "packet identifier {id} reused while waiting for PUBREL")
            }
            MqttFault::AckNotInFlight { packet, id } => {
                write!(f, "{packet} for packet identifier {id}, not in flight")
            }
            MqttFault::ReceiveMaximumExceeded => {
                f.write_str("more QoS 2 messages in flight than the receive maximum")
            }
            MqttFault::TopicAliasInvalid(a) => {
                write!(f, "topic alias {a} above the topic alias maximum")
            }
            MqttFault::TopicAliasUnknown(a) => write!(f, "topic alias {a} names no topic"),
            MqttFault::QosNotSupported(q) => write!(f, "PUBLISH at QoS {q}, above the maximum"),
            MqttFault::SessionExpiryAfterZero => {
                f.write_str("DISCONNECT sets a session expiry after CONNECT set none")
            }
            MqttFault::BadAuthenticationMethod => f.write_str("authentication method not offered"),
            MqttFault::BadUserNameOrPassword => f.write_str("bad user name or password"),
            MqttFault::NotAuthorized => f.write_str("not authorized"),
            MqttFault::ServerBusy => f.write_str("server at its client limit"),
        }
    }
}
