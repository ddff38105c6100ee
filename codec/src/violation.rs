//! Violations: every way inbound bytes can be wrong, as data.
//!
//! A [`Violation`] is a [`ViolationKind`] plus the byte offset where it was
//! found. [`ViolationKind::close_reason`] is the one place that maps a fault to
//! the close reason the server acts on; read it top to bottom.

use std::fmt;

use crate::close::CloseReason;
pub use crate::field::Field;
use crate::mqtt::fault::MqttFault;

/// Why a compressed topic body is not one whole zlib stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ZlibFault {
    /// A bad zlib header or deflate data that does not decode.
    Malformed,
    /// The body ends before the stream does (its checksum included).
    Truncated,
    /// The stream's Adler-32 checksum does not match what it inflates to.
    Checksum,
    /// Bytes after the end of the stream.
    TrailingBytes,
}

impl fmt::Display for ZlibFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ZlibFault::Malformed => "malformed",
            ZlibFault::Truncated => "truncated",
            ZlibFault::Checksum => "checksum mismatch",
            ZlibFault::TrailingBytes => "trailing bytes after the stream",
        })
    }
}

/// What is wrong with the input. Each kind knows its close reason
/// ([`ViolationKind::close_reason`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ViolationKind {
    /// A message with no bytes at all.
    EmptyMessage,
    /// A type byte whose low six bits name no message type.
    UnknownType(u8),
    /// A type byte with the reserved bit 0x40 set.
    ReservedTypeBit(u8),
    /// The compressed bit 0x80 on a message that is not a topic message.
    CompressedNonTopic(u8),
    /// The input ended inside this field.
    Truncated(Field),
    /// A varint with more than 10 bytes.
    OverlongVarint(Field),
    /// A varint with a redundant trailing zero group (not the shortest encoding).
    NonMinimalVarint(Field),
    /// A varint whose value does not fit its field.
    VarintOverflow(Field),
    /// A string that is not UTF-8.
    InvalidUtf8(Field),
    /// A field whose bytes do not form a valid value (see the field's rules).
    MalformedField(Field),
    /// Bytes after the end of a message that allows none.
    TrailingBytes,
    /// A message (type byte included) larger than the configured maximum.
    MessageTooLarge {
        /// Declared or actual size, type byte included.
        size: u64,
        /// The configured maximum.
        limit: usize,
    },
    /// A compressed topic body that inflates past the configured maximum
    /// message size (type byte and topic id included); found as it inflates,
    /// at the offset of the compressed body.
    InflatedTooLarge {
        /// The configured maximum message size.
        limit: usize,
    },
    /// A compressed topic body that is not one whole zlib stream; the offset
    /// is that of the compressed body.
    InvalidZlib(ZlibFault),
    /// An HTTP polling batch that goes on past the configured maximum of
    /// decoded bytes; the offset is the first byte over the limit.
    BatchTooLarge {
        /// The configured maximum.
        limit: usize,
    },
    /// A byte that is not part of the standard padded base64 alphabet, or
    /// padding where none may stand.
    InvalidBase64,
    /// A connection request without a field it must carry.
    HandshakeFieldMissing(Field),
    /// A connection request that carries a field twice.
    HandshakeFieldDuplicated(Field),
    /// A connection request field whose value is not valid for that field.
    HandshakeFieldMalformed(Field),
    /// A connection request for a protocol version this codec does not speak
    /// (the requested version, saturated to `u32`).
    UnsupportedVersion(u32),
    /// A password that is not base64 of `[1 text | 2 bytes][varint length][value]`.
    MalformedCredentials,
    /// Session properties that are not a JSON object of string values.
    MalformedSessionProperties,
    /// A message type the client must never send (for example ABORT).
    UnexpectedMessage(u8),
    /// A sequence number that was already received.
    SequenceDuplicate(u64),
    /// A sequence number that is not a decimal number in range.
    SequenceMalformed,
    /// A sequence number further ahead of the next expected one than the
    /// reorder window allows.
    SequenceBeyondWindow {
        /// The sequence number received.
        sequence: u64,
        /// The next sequence number expected.
        expected: u64,
    },
    /// A sequence number (or a number the protocol counts, such as a client
    /// conversation id) that skips one that never arrived.
    SequenceGap {
        /// The number received.
        sequence: u64,
        /// The number expected.
        expected: u64,
    },
    /// Data held for sessions (out-of-order HTTP sends waiting for their
    /// turn, sent messages kept for a reconnection) would pass the
    /// server-wide budget; the session whose data grew past it is closed.
    HeldDataOverBudget {
        /// The server-wide budget in bytes.
        limit: usize,
    },
    /// A rule of MQTT 3.1.1 or 5.0 broken by one packet (faults MQTT shares
    /// with the session protocol use the kinds above).
    Mqtt(MqttFault),
}

impl ViolationKind {
    /// The close reason for this fault: the one mapping from violations to
    /// docs/protocol.md section 1.
    pub const fn close_reason(self) -> CloseReason {
        match self {
            // Over the configured size: the message is discarded and the
            // client closed.
            ViolationKind::MessageTooLarge { .. }
            | ViolationKind::InflatedTooLarge { .. }
            | ViolationKind::BatchTooLarge { .. } => CloseReason::MessageTooLarge,
            // Bytes that are not a valid message.
            ViolationKind::EmptyMessage
            | ViolationKind::UnknownType(_)
            | ViolationKind::ReservedTypeBit(_)
            | ViolationKind::CompressedNonTopic(_)
            | ViolationKind::Truncated(_)
            | ViolationKind::OverlongVarint(_)
            | ViolationKind::NonMinimalVarint(_)
            | ViolationKind::VarintOverflow(_)
            | ViolationKind::InvalidUtf8(_)
            | ViolationKind::MalformedField(_)
            | ViolationKind::TrailingBytes
            | ViolationKind::InvalidZlib(_)
            | ViolationKind::InvalidBase64
            | ViolationKind::UnexpectedMessage(_) => CloseReason::InvalidInboundMessage,
            // A connection request the server refuses: answered with 115
            // (or 102 for the version) and the connection aborted.
            ViolationKind::HandshakeFieldMissing(_)
            | ViolationKind::HandshakeFieldDuplicated(_)
            | ViolationKind::HandshakeFieldMalformed(_)
            | ViolationKind::UnsupportedVersion(_)
            | ViolationKind::MalformedCredentials
            | ViolationKind::MalformedSessionProperties => CloseReason::Aborted,
            // Client and server no longer agree on what was sent.
            ViolationKind::SequenceDuplicate(_)
            | ViolationKind::SequenceMalformed
            | ViolationKind::SequenceBeyondWindow { .. }
            | ViolationKind::SequenceGap { .. } => CloseReason::LostMessages,
            // The server's memory for held data ran out: what the session
            // held is dropped, as when an outbound queue fills
            // (docs/protocol.md section 6).
            ViolationKind::HeldDataOverBudget { .. } => CloseReason::MessageQueueLimitReached,
            // MQTT's bad sequence numbers: a packet identifier reused while
            // in flight, or acknowledged that was never sent. Their reason
            // code is a protocol error; they lose messages all the same.
            ViolationKind::Mqtt(MqttFault::PacketIdInUse(_) | MqttFault::AckNotInFlight { .. }) => {
                CloseReason::LostMessages
            }
            // MQTT: the reason code decides, as PROTOCOL.md section 8 maps it.
            ViolationKind::Mqtt(_) => match self.reason_code() {
                Some(code) => ViolationKind::mqtt_close_reason(code),
                None => CloseReason::InvalidInboundMessage,
            },
        }
    }

    /// The close reason of an MQTT 5.0 reason code a server sends (in its
    /// DISCONNECT, or in the CONNACK refusing a CONNECT), as PROTOCOL.md
    /// section 8 maps it. The session layer closes with it for decisions
    /// that are no fault in the client's bytes (keep alive, takeover, the
    /// outbound queue, a controller, shutdown); [`close_reason`](Self::close_reason)
    /// uses it for every MQTT fault.
    pub const fn mqtt_close_reason(code: u8) -> CloseReason {
        match code {
            // Packet too large.
            0x95 => CloseReason::MessageTooLarge,
            // Unspecified error: no fault of the client's sends it, only a
            // failure of the server's own (its random source).
            0x80 => CloseReason::InternalError,
            // A refused CONNECT (unsupported protocol version, client
            // identifier not valid, bad user name or password, not
            // authorized, bad authentication method), and the server
            // shutting down (as the session protocol's shutdown aborts).
            0x84 | 0x85 | 0x86 | 0x87 | 0x8B | 0x8C => CloseReason::Aborted,
            // Server busy: the client limit, which the session protocol
            // closes CONNECTION_LOST too.
            0x89 => CloseReason::ConnectionLost,
            // Keep alive timeout.
            0x8D => CloseReason::ClientUnresponsive,
            // Session taken over (MQTT-3.1.4-3).
            0x8E => CloseReason::SessionTakenOver,
            // Receive maximum exceeded.
            0x93 => CloseReason::LostMessages,
            // Quota exceeded: the outbound queue is full.
            0x97 => CloseReason::MessageQueueLimitReached,
            // Administrative action.
            0x98 => CloseReason::ClosedByController,
            // Use another server, server moved.
            0x9C | 0x9D => CloseReason::FailedOver,
            // Malformed packet, protocol error, topic alias invalid, QoS not
            // supported, payload format invalid, and the rest.
            _ => CloseReason::InvalidInboundMessage,
        }
    }

    /// The MQTT 5.0 reason code a server sends (in its DISCONNECT, or in the
    /// CONNACK refusing a CONNECT) before closing for this fault; `None` for
    /// faults only the session protocol has. MQTT 3.1.1 has no reason codes:
    /// see [`mqtt::v311_connack_code`](crate::mqtt::v311_connack_code).
    pub const fn reason_code(self) -> Option<u8> {
        /// Malformed Packet.
        const MALFORMED: u8 = 0x81;
        /// Protocol Error.
        const PROTOCOL_ERROR: u8 = 0x82;
        Some(match self {
            ViolationKind::MessageTooLarge { .. } | ViolationKind::BatchTooLarge { .. } => 0x95,
            ViolationKind::EmptyMessage
            | ViolationKind::Truncated(_)
            | ViolationKind::OverlongVarint(_)
            | ViolationKind::NonMinimalVarint(_)
            | ViolationKind::VarintOverflow(_)
            | ViolationKind::InvalidUtf8(_)
            | ViolationKind::MalformedField(_)
            | ViolationKind::TrailingBytes => MALFORMED,
            ViolationKind::UnknownType(_)
            | ViolationKind::ReservedTypeBit(_)
            | ViolationKind::CompressedNonTopic(_)
            | ViolationKind::InvalidBase64
            | ViolationKind::HandshakeFieldMissing(_)
            | ViolationKind::HandshakeFieldDuplicated(_)
            | ViolationKind::HandshakeFieldMalformed(_)
            | ViolationKind::UnsupportedVersion(_)
            | ViolationKind::MalformedCredentials
            | ViolationKind::MalformedSessionProperties
            | ViolationKind::UnexpectedMessage(_)
            | ViolationKind::SequenceDuplicate(_)
            | ViolationKind::SequenceMalformed
            | ViolationKind::SequenceBeyondWindow { .. }
            | ViolationKind::SequenceGap { .. }
            | ViolationKind::HeldDataOverBudget { .. }
            | ViolationKind::InflatedTooLarge { .. }
            | ViolationKind::InvalidZlib(_) => return None,
            ViolationKind::Mqtt(fault) => match fault {
                MqttFault::ReservedPacketType(_)
                | MqttFault::ReservedFlags(_)
                | MqttFault::VarIntTooLong(_)
                | MqttFault::VarIntNotMinimal(_)
                | MqttFault::NullCharacter(_)
                | MqttFault::ProtocolName
                | MqttFault::ConnectReservedFlag
                | MqttFault::WillQosWithoutWill
                | MqttFault::WillRetainWithoutWill
                | MqttFault::WillQos3
                | MqttFault::PasswordWithoutUserName
                | MqttFault::Qos3
                | MqttFault::DupWithQos0
                | MqttFault::WildcardInTopicName(_)
                | MqttFault::EmptyTopic(_)
                | MqttFault::WildcardPlacement
                | MqttFault::SharedSubscription
                | MqttFault::SubscriptionOptions(_)
                | MqttFault::ConnAckFlags(_)
                | MqttFault::UnknownProperty(_)
                | MqttFault::PropertyNotAllowed { .. } => MALFORMED,
                MqttFault::PacketIdZero
                | MqttFault::NoSubscriptions
                | MqttFault::NoUnsubscriptions
                | MqttFault::DuplicateProperty(_)
                | MqttFault::PropertyValue(_)
                | MqttFault::AuthDataWithoutMethod
                | MqttFault::MissingAuthMethod
                | MqttFault::ReasonCode { .. }
                | MqttFault::UnexpectedPacket(_)
                | MqttFault::EmptyTopicWithoutAlias
                | MqttFault::NoLocalOnShared
                | MqttFault::RetainHandling3
                | MqttFault::SubscriptionIdFromClient
                | MqttFault::SessionPresentWithError
                | MqttFault::PacketIdInUse(_)
                | MqttFault::AckNotInFlight { .. }
                | MqttFault::TopicAliasUnknown(_)
                | MqttFault::SessionExpiryAfterZero => PROTOCOL_ERROR,
                // Receive Maximum exceeded.
                MqttFault::ReceiveMaximumExceeded => 0x93,
                // Topic Alias invalid.
                MqttFault::TopicAliasInvalid(_) => 0x94,
                // QoS not supported.
                MqttFault::QosNotSupported(_) => 0x9B,
                // Bad authentication method.
                MqttFault::BadAuthenticationMethod => 0x8C,
                // Bad User Name or Password.
                MqttFault::BadUserNameOrPassword => 0x86,
                // Not authorized.
                MqttFault::NotAuthorized => 0x87,
                // Server busy.
                MqttFault::ServerBusy => 0x89,
                // Topic Alias invalid.
                MqttFault::TopicAliasZero => 0x94,
                // Payload format invalid.
                MqttFault::PayloadNotUtf8 => 0x99,
                // Unsupported Protocol Version.
                MqttFault::UnsupportedProtocolLevel(_) => 0x84,
                // Client Identifier not valid.
                MqttFault::ClientIdRejected => 0x85,
            },
        })
    }

    /// A short stable name for the kind, used by the corpus and the CLI
    /// (`unknown-type`, `truncated`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            ViolationKind::EmptyMessage => "empty-message",
            ViolationKind::UnknownType(_) => "unknown-type",
            ViolationKind::ReservedTypeBit(_) => "reserved-type-bit",
            ViolationKind::CompressedNonTopic(_) => "compressed-non-topic",
            ViolationKind::Truncated(_) => "truncated",
            ViolationKind::OverlongVarint(_) => "overlong-varint",
            ViolationKind::NonMinimalVarint(_) => "non-minimal-varint",
            ViolationKind::VarintOverflow(_) => "varint-overflow",
            ViolationKind::InvalidUtf8(_) => "invalid-utf8",
            ViolationKind::MalformedField(_) => "malformed-field",
            ViolationKind::TrailingBytes => "trailing-bytes",
            ViolationKind::MessageTooLarge { .. } => "message-too-large",
            ViolationKind::InflatedTooLarge { .. } => "inflated-too-large",
            ViolationKind::InvalidZlib(_) => "invalid-zlib",
            ViolationKind::BatchTooLarge { .. } => "batch-too-large",
            ViolationKind::InvalidBase64 => "invalid-base64",
            ViolationKind::HandshakeFieldMissing(_) => "handshake-field-missing",
            ViolationKind::HandshakeFieldDuplicated(_) => "handshake-field-duplicated",
            ViolationKind::HandshakeFieldMalformed(_) => "handshake-field-malformed",
            ViolationKind::UnsupportedVersion(_) => "unsupported-version",
            ViolationKind::MalformedCredentials => "malformed-credentials",
            ViolationKind::MalformedSessionProperties => "malformed-session-properties",
            ViolationKind::UnexpectedMessage(_) => "unexpected-message",
            ViolationKind::SequenceDuplicate(_) => "sequence-duplicate",
            ViolationKind::SequenceMalformed => "sequence-malformed",
            ViolationKind::SequenceBeyondWindow { .. } => "sequence-beyond-window",
            ViolationKind::SequenceGap { .. } => "sequence-gap",
            ViolationKind::HeldDataOverBudget { .. } => "held-data-over-budget",
            ViolationKind::Mqtt(fault) => fault.name(),
        }
    }
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ViolationKind::EmptyMessage => f.write_str("empty message"),
            ViolationKind::UnknownType(b) => write!(f, "unknown message type 0x{b:02x}"),
            ViolationKind::ReservedTypeBit(b) => {
                write!(f, "reserved bit 0x40 set in type byte 0x{b:02x}")
            }
            ViolationKind::CompressedNonTopic(b) => {
                write!(f, "compressed bit on non-topic type byte 0x{b:02x}")
            }
            ViolationKind::Truncated(field) => write!(f, "input ends inside the {field}"),
            ViolationKind::OverlongVarint(field) => {
                write!(f, "varint {field} longer than 10 bytes")
            }
            ViolationKind::NonMinimalVarint(field) => {
                write!(f, "varint {field} not in its shortest encoding")
            }
            ViolationKind::VarintOverflow(field) => write!(f, "varint {field} overflows its field"),
            ViolationKind::InvalidUtf8(field) => write!(f, "{field} is not UTF-8"),
            ViolationKind::MalformedField(field) => write!(f, "malformed {field}"),
            ViolationKind::TrailingBytes => f.write_str("trailing bytes after the message"),
            ViolationKind::MessageTooLarge { size, limit } => {
                write!(f, "message of {size} bytes over the maximum of {limit}")
            }
            ViolationKind::InflatedTooLarge { limit } => {
                write!(f, "compressed message inflates past the maximum of {limit}")
            }
            ViolationKind::InvalidZlib(fault) => {
                write!(f, "compressed body is not a whole zlib stream: {fault}")
            }
            ViolationKind::BatchTooLarge { limit } => {
                write!(f, "batch goes on past the maximum of {limit} bytes")
            }
            ViolationKind::HeldDataOverBudget { limit } => {
                write!(
                    f,
                    "data held for sessions would pass the server's {limit} bytes"
                )
            }
            ViolationKind::InvalidBase64 => f.write_str("invalid base64"),
            ViolationKind::HandshakeFieldMissing(field) => {
                write!(f, "connection request without the {field} field")
            }
            ViolationKind::HandshakeFieldDuplicated(field) => {
                write!(f, "connection request with the {field} field twice")
            }
            ViolationKind::HandshakeFieldMalformed(field) => {
                write!(f, "malformed {field} field in the connection request")
            }
            ViolationKind::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v}"),
            ViolationKind::MalformedCredentials => f.write_str("malformed credentials"),
            ViolationKind::MalformedSessionProperties => {
                f.write_str("session properties are not a JSON object of strings")
            }
            ViolationKind::UnexpectedMessage(t) => {
                write!(f, "message type {t} is never sent by a client")
            }
            ViolationKind::SequenceDuplicate(s) => write!(f, "duplicate sequence number {s}"),
            ViolationKind::SequenceMalformed => f.write_str("malformed sequence number"),
            ViolationKind::SequenceBeyondWindow { sequence, expected } => write!(
                f,
                "sequence number {sequence} beyond the reorder window (expected {expected})"
            ),
            ViolationKind::SequenceGap { sequence, expected } => {
                write!(f, "sequence number {sequence} skips {expected}")
            }
            ViolationKind::Mqtt(fault) => fault.fmt(f),
        }
    }
}

/// A fault in inbound bytes: what is wrong and where.
///
/// The offset counts from the start of the unit being decoded: the WebSocket
/// message, the decoded (binary) HTTP polling batch, or, for
/// [`ViolationKind::InvalidBase64`], the base64 text of the POST body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Violation {
    kind: ViolationKind,
    offset: usize,
}

impl Violation {
    /// A violation of `kind` at byte `offset`.
    pub const fn new(kind: ViolationKind, offset: usize) -> Self {
        Violation { kind, offset }
    }

    /// What is wrong.
    pub const fn kind(&self) -> ViolationKind {
        self.kind
    }

    /// The byte offset where it was found.
    pub const fn offset(&self) -> usize {
        self.offset
    }

    /// The close reason the server acts on.
    pub const fn close_reason(&self) -> CloseReason {
        self.kind.close_reason()
    }

    /// The same violation with its offset moved by `base` bytes (saturating).
    pub const fn shifted(self, base: usize) -> Self {
        Violation {
            kind: self.kind,
            offset: self.offset.saturating_add(base),
        }
    }
}

impl fmt::Display for Violation {
    /// `INVALID_INBOUND_MESSAGE (7) at offset 0: unknown message type 0x3f`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at offset {}: {}",
            self.close_reason(),
            self.offset,
            self.kind
        )
    }
}

impl std::error::Error for Violation {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_faults_close_message_too_large_and_the_rest_invalid_inbound_message() {
        let too_large = [
            ViolationKind::MessageTooLarge { size: 9, limit: 8 },
            ViolationKind::InflatedTooLarge { limit: 8 },
            ViolationKind::BatchTooLarge { limit: 8 },
        ];
        for k in too_large {
            assert_eq!(k.close_reason(), CloseReason::MessageTooLarge);
        }
        let malformed = [
            ViolationKind::EmptyMessage,
            ViolationKind::UnknownType(0x3f),
            ViolationKind::ReservedTypeBit(0x40),
            ViolationKind::CompressedNonTopic(0x80),
            ViolationKind::Truncated(Field::Body),
            ViolationKind::OverlongVarint(Field::ServiceId),
            ViolationKind::NonMinimalVarint(Field::ServiceId),
            ViolationKind::VarintOverflow(Field::ServiceId),
            ViolationKind::InvalidUtf8(Field::StringBody),
            ViolationKind::MalformedField(Field::FetchHeader),
            ViolationKind::TrailingBytes,
            ViolationKind::InvalidZlib(ZlibFault::Checksum),
            ViolationKind::InvalidBase64,
        ];
        for k in malformed {
            assert_eq!(k.close_reason(), CloseReason::InvalidInboundMessage, "{k}");
        }
    }

    #[test]
    fn session_faults_close_aborted_or_lost_messages() {
        let aborted = [
            ViolationKind::HandshakeFieldMissing(Field::Named("v")),
            ViolationKind::HandshakeFieldDuplicated(Field::Named("v")),
            ViolationKind::HandshakeFieldMalformed(Field::Named("ca")),
            ViolationKind::UnsupportedVersion(28),
            ViolationKind::MalformedCredentials,
            ViolationKind::MalformedSessionProperties,
        ];
        for k in aborted {
            assert_eq!(k.close_reason(), CloseReason::Aborted, "{k}");
        }
        let lost = [
            ViolationKind::SequenceDuplicate(3),
            ViolationKind::SequenceMalformed,
            ViolationKind::SequenceBeyondWindow {
                sequence: 40,
                expected: 1,
            },
            ViolationKind::SequenceGap {
                sequence: 3,
                expected: 2,
            },
        ];
        for k in lost {
            assert_eq!(k.close_reason(), CloseReason::LostMessages, "{k}");
        }
        assert_eq!(
            ViolationKind::UnexpectedMessage(28).close_reason(),
            CloseReason::InvalidInboundMessage
        );
    }

    #[test]
    fn mqtt_faults_close_by_their_reason_code() {
        use crate::mqtt::{MqttFault, PacketType};
        let refusals = [
            (MqttFault::UnsupportedProtocolLevel(3), 0x84),
            (MqttFault::ClientIdRejected, 0x85),
        ];
        for (f, code) in refusals {
            let k = ViolationKind::Mqtt(f);
            assert_eq!(
                (k.reason_code(), k.close_reason()),
                (Some(code), CloseReason::Aborted)
            );
        }
        let invalid = [
            (MqttFault::Qos3, 0x81),
            (MqttFault::UnknownProperty(0x05), 0x81),
            (MqttFault::PacketIdZero, 0x82),
            (MqttFault::UnexpectedPacket(PacketType::Connect), 0x82),
            (MqttFault::TopicAliasZero, 0x94),
            (MqttFault::PayloadNotUtf8, 0x99),
        ];
        for (f, code) in invalid {
            let k = ViolationKind::Mqtt(f);
            assert_eq!(k.reason_code(), Some(code), "{k}");
            assert_eq!(k.close_reason(), CloseReason::InvalidInboundMessage, "{k}");
            assert!(k.name().starts_with("mqtt-"));
        }
        // Shared kinds carry their MQTT meaning too; session-only kinds none.
        let too_large = ViolationKind::MessageTooLarge { size: 9, limit: 8 };
        assert_eq!(too_large.reason_code(), Some(0x95));
        assert_eq!(ViolationKind::TrailingBytes.reason_code(), Some(0x81));
        assert_eq!(
            ViolationKind::SequenceGap {
                sequence: 3,
                expected: 2
            }
            .reason_code(),
            None
        );
    }

    #[test]
    fn section_8_mqtt_session_faults_and_decisions_close_by_their_code() {
        use crate::mqtt::{MqttFault, PacketType};
        let faults = [
            (MqttFault::PacketIdInUse(3), 0x82, CloseReason::LostMessages),
            (
                MqttFault::AckNotInFlight {
                    packet: PacketType::PubAck,
                    id: 3,
                },
                0x82,
                CloseReason::LostMessages,
            ),
            (
                MqttFault::ReceiveMaximumExceeded,
                0x93,
                CloseReason::LostMessages,
            ),
            (
                MqttFault::TopicAliasInvalid(17),
                0x94,
                CloseReason::InvalidInboundMessage,
            ),
            (
                MqttFault::TopicAliasUnknown(2),
                0x82,
                CloseReason::InvalidInboundMessage,
            ),
            (
                MqttFault::QosNotSupported(2),
                0x9B,
                CloseReason::InvalidInboundMessage,
            ),
            (
                MqttFault::SessionExpiryAfterZero,
                0x82,
                CloseReason::InvalidInboundMessage,
            ),
            (
                MqttFault::BadAuthenticationMethod,
                0x8C,
                CloseReason::Aborted,
            ),
            (MqttFault::BadUserNameOrPassword, 0x86, CloseReason::Aborted),
            (MqttFault::NotAuthorized, 0x87, CloseReason::Aborted),
            (MqttFault::ServerBusy, 0x89, CloseReason::ConnectionLost),
        ];
        for (f, code, reason) in faults {
            let k = ViolationKind::Mqtt(f);
            assert_eq!(
                (k.reason_code(), k.close_reason()),
                (Some(code), reason),
                "{k}"
            );
            assert!(k.name().starts_with("mqtt-"));
        }
        let decisions = [
            (0x8D, CloseReason::ClientUnresponsive),
            (0x8E, CloseReason::SessionTakenOver),
            (0x97, CloseReason::MessageQueueLimitReached),
            (0x98, CloseReason::ClosedByController),
            (0x8B, CloseReason::Aborted),
            (0x80, CloseReason::InternalError),
            (0x9C, CloseReason::FailedOver),
            (0x9D, CloseReason::FailedOver),
        ];
        for (code, reason) in decisions {
            assert_eq!(ViolationKind::mqtt_close_reason(code), reason, "{code:#x}");
        }
    }

    #[test]
    fn field_names_as_check_prints_them() {
        let names = [
            (Field::TypeByte, "type byte"),
            (Field::ServiceId, "service id"),
            (Field::ConversationId, "conversation id"),
            (Field::TopicId, "topic id"),
            (Field::StringLength, "string length"),
            (Field::StringBody, "string"),
            (Field::ErrorCode, "error code"),
            (Field::FetchHeader, "fetch reply header"),
            (Field::LengthPrefix, "length prefix"),
            (Field::Body, "body"),
            (Field::Named("sp"), "sp"),
        ];
        for (field, name) in names {
            assert_eq!(field.to_string(), name);
        }
        assert_eq!(
            ViolationKind::Truncated(Field::LengthPrefix).to_string(),
            "input ends inside the length prefix"
        );
    }

    #[test]
    fn section_3_compressed_body_faults_as_check_prints_them() {
        let texts = [
            (ZlibFault::Malformed, "malformed"),
            (ZlibFault::Truncated, "truncated"),
            (ZlibFault::Checksum, "checksum mismatch"),
            (ZlibFault::TrailingBytes, "trailing bytes after the stream"),
        ];
        for (fault, text) in texts {
            let kind = ViolationKind::InvalidZlib(fault);
            assert_eq!(kind.name(), "invalid-zlib");
            assert_eq!(
                kind.to_string(),
                format!("compressed body is not a whole zlib stream: {text}")
            );
        }
        let big = ViolationKind::InflatedTooLarge { limit: 32768 };
        assert_eq!(big.name(), "inflated-too-large");
        assert_eq!(
            big.to_string(),
            "compressed message inflates past the maximum of 32768"
        );
    }

    #[test]
    fn display_names_reason_offset_and_fault() {
        let v = Violation::new(ViolationKind::UnknownType(0x3f), 0);
        assert_eq!(
            v.to_string(),
            "INVALID_INBOUND_MESSAGE (7) at offset 0: unknown message type 0x3f"
        );
        assert_eq!(v.shifted(4).offset(), 4);
        assert_eq!(
            Violation::new(ViolationKind::TrailingBytes, usize::MAX)
                .shifted(1)
                .offset(),
            usize::MAX
        );
    }
}
