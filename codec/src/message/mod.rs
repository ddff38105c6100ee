//! The session protocol's messages (docs/protocol.md section 3), both directions.
//!
//! One WebSocket binary message carries one protocol message: a type byte, then
//! the body, with no length prefix. The low six bits of the type byte are the
//! type; bit 0x80 marks a zlib-compressed body (topic messages only); bit 0x40
//! is reserved and rejected.
//!
//! Decoding is zero-copy: every payload, string and header of a decoded
//! [`Message`] is a [`Bytes`] view of the input buffer. Decoding is strict:
//! a decoded message re-encodes to exactly the bytes it came from.
//!
//! ```
//! use bytes::Bytes;
//! use sessionwire::message::{Message, ServiceRequest, service};
//! use sessionwire::Limits;
//!
//! // A USER_PING request, conversation 1, as the client sends it.
//! let wire = Bytes::from_static(&[0x00, 0x38, 0x01]);
//! let msg = Message::decode(&wire, &Limits::default()).unwrap();
//! assert_eq!(
//!     msg,
//!     Message::ServiceRequest(ServiceRequest {
//!         service: service::USER_PING,
//!         conversation: 1,
//!         payload: Bytes::new(),
//!     })
//! );
//! assert_eq!(msg.to_bytes(), wire);
//!
//! let bad = Bytes::from_static(&[0x3f, 1, 2, 3, 4]);
//! let v = Message::decode(&bad, &Limits::default()).unwrap_err();
//! assert_eq!(v.close_reason().name(), "INVALID_INBOUND_MESSAGE");
//! assert_eq!(v.offset(), 0);
//! ```

pub mod fetch;
pub mod service;
mod text;
pub mod topic;
mod zlib;

use bytes::{BufMut, Bytes, BytesMut};

use crate::limits::Limits;
use crate::parse::{offset_in, IntoFault};
use crate::violation::{Violation, ViolationKind};

pub use fetch::{FetchFields, FetchReply};
pub use service::{ServiceError, ServiceRequest, ServiceResponse};
pub use text::Text;
pub use topic::TopicMessage;

/// Type-byte bit marking a zlib-compressed body (topic messages only).
pub const COMPRESSED_BIT: u8 = 0x80;
/// Type-byte bit that no message may set.
pub const RESERVED_BIT: u8 = 0x40;
/// Mask of the type in the type byte.
pub const TYPE_MASK: u8 = 0x3f;

/// The message types of docs/protocol.md section 3, with their wire values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// 0: a request to a service.
    ServiceRequest = 0,
    /// 4: a topic's value.
    TopicValue = 4,
    /// 5: a delta to a topic's value.
    TopicDelta = 5,
    /// 6: the answer to a service request.
    ServiceResponse = 6,
    /// 7: a service request that failed.
    ServiceError = 7,
    /// 28: the server aborts the session (server to client only).
    Abort = 28,
    /// 29: the client asks to close (client to server).
    Close = 29,
    /// 34: the reply to a fetch.
    FetchReply = 34,
}

impl MessageType {
    /// Every message type.
    pub const ALL: [MessageType; 8] = [
        MessageType::ServiceRequest,
        MessageType::TopicValue,
        MessageType::TopicDelta,
        MessageType::ServiceResponse,
        MessageType::ServiceError,
        MessageType::Abort,
        MessageType::Close,
        MessageType::FetchReply,
    ];

    /// The type's wire value (the low six bits of the type byte).
    pub const fn value(self) -> u8 {
        self as u8
    }

    /// The type with this wire value, if any.
    pub const fn from_value(value: u8) -> Option<MessageType> {
        Some(match value {
            0 => MessageType::ServiceRequest,
            4 => MessageType::TopicValue,
            5 => MessageType::TopicDelta,
            6 => MessageType::ServiceResponse,
            7 => MessageType::ServiceError,
            28 => MessageType::Abort,
            29 => MessageType::Close,
            34 => MessageType::FetchReply,
            _ => return None,
        })
    }

    /// Whether the compressed bit is allowed on this type.
    pub const fn may_be_compressed(self) -> bool {
        matches!(self, MessageType::TopicValue | MessageType::TopicDelta)
    }

    /// Splits a type byte into its type and compressed flag, or says what is
    /// wrong with it.
    pub const fn from_type_byte(byte: u8) -> Result<(MessageType, bool), ViolationKind> {
        let Some(ty) = MessageType::from_value(byte & TYPE_MASK) else {
            return Err(ViolationKind::UnknownType(byte));
        };
        if byte & RESERVED_BIT != 0 {
            return Err(ViolationKind::ReservedTypeBit(byte));
        }
        let compressed = byte & COMPRESSED_BIT != 0;
        if compressed && !ty.may_be_compressed() {
            return Err(ViolationKind::CompressedNonTopic(byte));
        }
        Ok((ty, compressed))
    }
}

/// One protocol message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Message {
    /// Type 0.
    ServiceRequest(ServiceRequest),
    /// Type 6.
    ServiceResponse(ServiceResponse),
    /// Type 7.
    ServiceError(ServiceError),
    /// Type 4.
    TopicValue(TopicMessage),
    /// Type 5.
    TopicDelta(TopicMessage),
    /// Type 28, empty body.
    Abort,
    /// Type 29, empty body.
    Close,
    /// Type 34.
    FetchReply(FetchReply),
}

impl Message {
    /// Decodes one WebSocket message.
    ///
    /// A message longer than [`Limits::max_message_size`] is rejected before it
    /// is parsed. Every view in the result shares `input`'s buffer.
    #[inline]
    pub fn decode(input: &Bytes, limits: &Limits) -> Result<Message, Violation> {
        if input.len() > limits.max_message_size() {
            return Err(Violation::new(
                ViolationKind::MessageTooLarge {
                    size: input.len() as u64,
                    limit: limits.max_message_size(),
                },
                0,
            ));
        }
        Message::decode_within(input, input, limits)
    }

    /// Decodes the message `msg`, a sub-slice of `whole`; views are slices of
    /// `whole` and offsets count from its start.
    #[inline]
    pub(crate) fn decode_within(
        whole: &Bytes,
        msg: &[u8],
        limits: &Limits,
    ) -> Result<Message, Violation> {
        let Some((&type_byte, body)) = msg.split_first() else {
            return Err(Violation::new(
                ViolationKind::EmptyMessage,
                offset_in(whole, msg),
            ));
        };
        let (ty, compressed) = MessageType::from_type_byte(type_byte)
            .map_err(|kind| Violation::new(kind, offset_in(whole, msg)))?;
        let parsed = match ty {
            MessageType::ServiceRequest => {
                ServiceRequest::load(whole, body).map(Message::ServiceRequest)
            }
            MessageType::ServiceResponse => {
                ServiceResponse::load(whole, body).map(Message::ServiceResponse)
            }
            MessageType::ServiceError => ServiceError::load(whole, body).map(Message::ServiceError),
            MessageType::TopicValue => {
                TopicMessage::load(whole, body, compressed, limits).map(Message::TopicValue)
            }
            MessageType::TopicDelta => {
                TopicMessage::load(whole, body, compressed, limits).map(Message::TopicDelta)
            }
            MessageType::Abort => crate::parse::expect_end(body).map(|()| Message::Abort),
            MessageType::Close => crate::parse::expect_end(body).map(|()| Message::Close),
            MessageType::FetchReply => FetchReply::load(whole, body).map(Message::FetchReply),
        };
        parsed.map_err(|e| e.into_fault().violation(whole))
    }

    /// The message's type.
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::ServiceRequest(_) => MessageType::ServiceRequest,
            Message::ServiceResponse(_) => MessageType::ServiceResponse,
            Message::ServiceError(_) => MessageType::ServiceError,
            Message::TopicValue(_) => MessageType::TopicValue,
            Message::TopicDelta(_) => MessageType::TopicDelta,
            Message::Abort => MessageType::Abort,
            Message::Close => MessageType::Close,
            Message::FetchReply(_) => MessageType::FetchReply,
        }
    }

    /// The type byte, compressed bit included.
    pub fn type_byte(&self) -> u8 {
        let compressed = match self {
            Message::TopicValue(t) | Message::TopicDelta(t) => t.compressed,
            _ => false,
        };
        self.message_type().value() | if compressed { COMPRESSED_BIT } else { 0 }
    }

    /// The length of the body, without the type byte.
    pub fn body_len(&self) -> usize {
        match self {
            Message::ServiceRequest(m) => m.body_len(),
            Message::ServiceResponse(m) => m.body_len(),
            Message::ServiceError(m) => m.body_len(),
            Message::TopicValue(m) | Message::TopicDelta(m) => m.body_len(),
            Message::Abort | Message::Close => 0,
            Message::FetchReply(m) => m.body_len(),
        }
    }

    /// The encoded length, type byte included.
    pub fn encoded_len(&self) -> usize {
        1 + self.body_len()
    }

    /// Writes the body, without the type byte.
    pub fn encode_body<B: BufMut>(&self, buf: &mut B) {
        match self {
            Message::ServiceRequest(m) => m.encode(buf),
            Message::ServiceResponse(m) => m.encode(buf),
            Message::ServiceError(m) => m.encode(buf),
            Message::TopicValue(m) | Message::TopicDelta(m) => m.encode(buf),
            Message::Abort | Message::Close => {}
            Message::FetchReply(m) => m.encode(buf),
        }
    }

    /// Writes the message as one WebSocket message: type byte, then body.
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u8(self.type_byte());
        self.encode_body(buf);
    }

    /// The message encoded into a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf.freeze()
    }
}

#[cfg(any(test, feature = "fuzzing"))]
impl<'a> arbitrary::Arbitrary<'a> for Message {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        fn bytes(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<Bytes> {
            Ok(Bytes::copy_from_slice(<&[u8]>::arbitrary(u)?))
        }
        // A compressed value is a valid zlib stream of arbitrary bytes.
        fn topic(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<TopicMessage> {
            let topic = u.arbitrary()?;
            let compressed = u.arbitrary()?;
            let raw = <&[u8]>::arbitrary(u)?;
            let data = if compressed {
                Bytes::from(zlib::stored(raw))
            } else {
                Bytes::copy_from_slice(raw)
            };
            Ok(TopicMessage {
                topic,
                compressed,
                data,
            })
        }
        Ok(match u.int_in_range(0..=7u8)? {
            0 => Message::ServiceRequest(ServiceRequest {
                service: u.arbitrary()?,
                conversation: u.arbitrary()?,
                payload: bytes(u)?,
            }),
            1 => Message::ServiceResponse(ServiceResponse {
                conversation: u.arbitrary()?,
                payload: bytes(u)?,
            }),
            2 => Message::ServiceError(ServiceError {
                conversation: u.arbitrary()?,
                message: Text::from(String::arbitrary(u)?),
                code: u.arbitrary()?,
            }),
            3 => Message::TopicValue(topic(u)?),
            4 => Message::TopicDelta(topic(u)?),
            5 => Message::Abort,
            6 => Message::Close,
            _ => {
                let fields: Vec<String> = u.arbitrary()?;
                let fields = fields
                    .iter()
                    .map(|f| f.replace(['\u{1}', '\u{2}'], ""))
                    .collect::<Vec<_>>();
                Message::FetchReply(FetchReply {
                    conversation: u.arbitrary()?,
                    fields: FetchFields::new(fields.iter().map(String::as_str))
                        .expect("separators removed"),
                    body: bytes(u)?,
                })
            }
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::violation::Field;
    use proptest::prelude::*;

    /// Decodes `wire` whole, and then every prefix of it byte by byte: a prefix
    /// must never panic, and the whole must give the same result however it was
    /// reached.
    pub(crate) fn decode_all_ways(wire: &[u8]) -> Result<Message, Violation> {
        let limits = Limits::default();
        for cut in 0..wire.len() {
            let prefix = Bytes::copy_from_slice(&wire[..cut]);
            let _ = Message::decode(&prefix, &limits);
        }
        let whole = Bytes::copy_from_slice(wire);
        let first = Message::decode(&whole, &limits);
        // Zero-copy: views point into the input buffer.
        if let Ok(m) = &first {
            assert_eq!(m.to_bytes(), whole, "canonical re-encoding");
        }
        first
    }

    pub(crate) fn violation(wire: &[u8]) -> (ViolationKind, usize) {
        let v = decode_all_ways(wire).expect_err("must be rejected");
        (v.kind(), v.offset())
    }

    #[test]
    fn section_3_empty_message_is_invalid() {
        assert_eq!(violation(&[]), (ViolationKind::EmptyMessage, 0));
    }

    #[test]
    fn section_3_unknown_type_is_invalid_at_offset_0() {
        assert_eq!(
            violation(&[0x3f, 1, 2, 3, 4]),
            (ViolationKind::UnknownType(0x3f), 0)
        );
        for b in 0..=255u8 {
            let known = MessageType::from_value(b & TYPE_MASK).is_some();
            let r = decode_all_ways(&[b]);
            if !known {
                assert_eq!(r, Err(Violation::new(ViolationKind::UnknownType(b), 0)));
            }
        }
    }

    #[test]
    fn section_3_reserved_bit_is_invalid() {
        assert_eq!(
            violation(&[0x44, 0, 0, 0, 1]),
            (ViolationKind::ReservedTypeBit(0x44), 0)
        );
    }

    #[test]
    fn section_3_compressed_flag_only_on_topic_messages() {
        for ty in MessageType::ALL {
            let byte = ty.value() | COMPRESSED_BIT;
            // Topic 1, an empty zlib stream.
            let r = decode_all_ways(&[byte, 0, 0, 0, 1, 0x78, 0x9c, 0x03, 0, 0, 0, 0, 1]);
            if ty.may_be_compressed() {
                assert!(r.is_ok(), "{ty:?}");
            } else {
                assert_eq!(
                    r,
                    Err(Violation::new(ViolationKind::CompressedNonTopic(byte), 0))
                );
            }
        }
    }

    #[test]
    fn arbitrary_messages_carry_payloads_and_valid_compressed_values() {
        // The generator the roundtrip target and the batch properties use
        // must reach non-empty payloads and compressed values, which must
        // decode.
        let (mut payload, mut compressed) = (false, false);
        for seed in 0..256u32 {
            let data: Vec<u8> = (0..96u32)
                .map(|i| (i.wrapping_mul(seed).wrapping_add(seed * 7 + i) % 251) as u8)
                .collect();
            let mut u = arbitrary::Unstructured::new(&data);
            let Ok(m) = <Message as arbitrary::Arbitrary>::arbitrary(&mut u) else {
                continue;
            };
            payload |= match &m {
                Message::ServiceRequest(r) => !r.payload.is_empty(),
                Message::ServiceResponse(r) => !r.payload.is_empty(),
                _ => false,
            };
            if let Message::TopicValue(t) | Message::TopicDelta(t) = &m {
                compressed |= t.compressed && !t.data.is_empty();
            }
            let wire = m.to_bytes();
            let limits = Limits::builder()
                .max_message_size(wire.len())
                .build()
                .unwrap();
            assert_eq!(Message::decode(&wire, &limits), Ok(m));
        }
        assert!(payload && compressed, "{payload} {compressed}");
    }

    #[test]
    fn section_3_abort_and_close_have_empty_bodies() {
        assert_eq!(decode_all_ways(&[28]), Ok(Message::Abort));
        assert_eq!(decode_all_ways(&[29]), Ok(Message::Close));
        assert_eq!(violation(&[29, 0]), (ViolationKind::TrailingBytes, 1));
        assert_eq!(violation(&[28, 1, 2]), (ViolationKind::TrailingBytes, 1));
    }

    #[test]
    fn message_over_the_maximum_is_too_large_before_parsing() {
        let limits = Limits::builder().max_message_size(4).build().unwrap();
        let ok = Bytes::from_static(&[0x04, 0, 0, 0]);
        assert_eq!(
            Message::decode(&ok, &limits),
            Err(Violation::new(ViolationKind::Truncated(Field::TopicId), 1))
        );
        let big = Bytes::from_static(&[0x3f, 0, 0, 0, 0]);
        let v = Message::decode(&big, &limits).unwrap_err();
        assert_eq!(
            v,
            Violation::new(ViolationKind::MessageTooLarge { size: 5, limit: 4 }, 0)
        );
        assert_eq!(v.close_reason(), crate::CloseReason::MessageTooLarge);
    }

    #[test]
    fn decoded_payloads_are_views_of_the_input() {
        let wire = Bytes::from(vec![0x04, 0, 0, 0, 7, b'h', b'i']);
        let Ok(Message::TopicValue(t)) = Message::decode(&wire, &Limits::default()) else {
            panic!("topic value expected");
        };
        assert_eq!(t.data.as_ptr(), wire[5..].as_ptr());
    }

    fn any_message() -> impl Strategy<Value = Message> {
        proptest::collection::vec(any::<u8>(), 0..256).prop_filter_map("enough bytes", |raw| {
            arbitrary::Arbitrary::arbitrary(&mut arbitrary::Unstructured::new(&raw)).ok()
        })
    }

    proptest! {
        #[test]
        fn section_3_every_valid_message_round_trips(m in any_message()) {
            let wire = m.to_bytes();
            prop_assert_eq!(wire.len(), m.encoded_len());
            let back = Message::decode(&wire, &Limits::default());
            prop_assert_eq!(back, Ok(m));
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_accepted_bytes_are_canonical(
            raw in proptest::collection::vec(any::<u8>(), 0..64)
        ) {
            let wire = Bytes::from(raw);
            match Message::decode(&wire, &Limits::default()) {
                Ok(m) => prop_assert_eq!(m.to_bytes(), wire),
                Err(v) => prop_assert!(v.offset() <= wire.len()),
            }
        }
    }
}
