//! The field of a message a violation was found in (kept apart from
//! `violation.rs` so that fault types elsewhere can name a field without
//! importing the violation module that imports them).

use std::fmt;

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
