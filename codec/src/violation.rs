//! Violations: every way inbound bytes can be wrong, as data.
//!
//! A [`Violation`] is a [`ViolationKind`] plus the byte offset where it was
//! found. [`ViolationKind::close_reason`] is the one place that maps a fault to
//! the close reason the server acts on; read it top to bottom.

use std::fmt;

use crate::close::CloseReason;

/// The field of a message a violation was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// The type byte that starts every message.
    TypeByte,
    /// A service request's service id.
    ServiceId,
    /// A conversation id.
    ConversationId,
    /// A topic message's big-endian topic id.
    TopicId,
    /// The varint length in front of a string.
    StringLength,
    /// The bytes of a string.
    StringBody,
    /// A service error's error code.
    ErrorCode,
    /// The header fields of a fetch reply.
    FetchHeader,
    /// The big-endian length prefix of a message in an HTTP polling batch.
    LengthPrefix,
    /// The body of a message in an HTTP polling batch.
    Body,
    /// A named field of the connection request or another text field.
    Named(&'static str),
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Field::TypeByte => "type byte",
            Field::ServiceId => "service id",
            Field::ConversationId => "conversation id",
            Field::TopicId => "topic id",
            Field::StringLength => "string length",
            Field::StringBody => "string",
            Field::ErrorCode => "error code",
            Field::FetchHeader => "fetch reply header",
            Field::LengthPrefix => "length prefix",
            Field::Body => "body",
            Field::Named(name) => name,
        };
        f.write_str(s)
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
    /// An HTTP polling batch that goes on past the configured maximum of
    /// decoded bytes; the offset is the first byte over the limit.
    BatchTooLarge {
        /// The configured maximum.
        limit: usize,
    },
    /// A byte that is not part of the standard padded base64 alphabet, or
    /// padding where none may stand.
    InvalidBase64,
}

impl ViolationKind {
    /// The close reason for this fault: the one mapping from violations to
    /// PROTOCOL.md section 1.
    pub const fn close_reason(self) -> CloseReason {
        match self {
            // Over the configured size: the message is discarded and the
            // client closed.
            ViolationKind::MessageTooLarge { .. } | ViolationKind::BatchTooLarge { .. } => {
                CloseReason::MessageTooLarge
            }
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
            | ViolationKind::InvalidBase64 => CloseReason::InvalidInboundMessage,
        }
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
            ViolationKind::BatchTooLarge { .. } => "batch-too-large",
            ViolationKind::InvalidBase64 => "invalid-base64",
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
            ViolationKind::BatchTooLarge { limit } => {
                write!(f, "batch goes on past the maximum of {limit} bytes")
            }
            ViolationKind::InvalidBase64 => f.write_str("invalid base64"),
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
            ViolationKind::InvalidBase64,
        ];
        for k in malformed {
            assert_eq!(k.close_reason(), CloseReason::InvalidInboundMessage, "{k}");
        }
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
