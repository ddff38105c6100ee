//! Service messages: SERVICE_REQUEST (0), SERVICE_RESPONSE (6) and
//! SERVICE_ERROR (7), and the service ids the codec knows.
//!
//! | type | body |
//! |---|---|
//! | 0 | varint service id, varint conversation id, payload |
//! | 6 | varint conversation id, payload |
//! | 7 | varint conversation id, string message, varint error code |

use bytes::{BufMut, Bytes};

use super::Text;
use crate::parse::{expect_end, Fault};
use crate::varint;
use crate::violation::Field;

/// SYSTEM_PING: server to client, empty payload, answered by a
/// SERVICE_RESPONSE with the same conversation id.
pub const SYSTEM_PING: u32 = 55;
/// USER_PING: client to server, answered by a SERVICE_RESPONSE with the same
/// conversation id.
pub const USER_PING: u32 = 56;
/// The SERVICE_ERROR code answering a request for an unknown service.
pub const UNKNOWN_SERVICE_ERROR: u32 = 100;
/// Conversation id 0: one-way, no reply expected.
pub const ONE_WAY: u64 = 0;

/// A request to a service (type 0).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceRequest {
    /// The service id ([`SYSTEM_PING`], [`USER_PING`], ...).
    pub service: u32,
    /// The conversation id: 0 for one-way, else the requester's number.
    pub conversation: u64,
    /// The request payload, a view of the input.
    pub payload: Bytes,
}

/// The answer to a service request (type 6).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceResponse {
    /// The requester's conversation id.
    pub conversation: u64,
    /// The response payload, a view of the input.
    pub payload: Bytes,
}

/// A failed service request (type 7).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceError {
    /// The requester's conversation id.
    pub conversation: u64,
    /// What went wrong, as text.
    pub message: Text,
    /// The error code ([`UNKNOWN_SERVICE_ERROR`], ...).
    pub code: u32,
}

type Load<'a, T> = Result<T, nom::Err<Fault<'a>>>;

impl ServiceRequest {
    #[inline]
    pub(crate) fn load<'a>(whole: &Bytes, body: &'a [u8]) -> Load<'a, Self> {
        let (rest, service) = varint::u32_field(Field::ServiceId)(body)?;
        let (rest, conversation) = varint::u64_field(Field::ConversationId)(rest)?;
        Ok(ServiceRequest {
            service,
            conversation,
            payload: whole.slice_ref(rest),
        })
    }

    pub(crate) fn body_len(&self) -> usize {
        varint::encoded_len(u64::from(self.service))
            + varint::encoded_len(self.conversation)
            + self.payload.len()
    }

    pub(crate) fn encode<B: BufMut>(&self, buf: &mut B) {
        varint::encode(u64::from(self.service), buf);
        varint::encode(self.conversation, buf);
        buf.put_slice(&self.payload);
    }
}

impl ServiceResponse {
    #[inline]
    pub(crate) fn load<'a>(whole: &Bytes, body: &'a [u8]) -> Load<'a, Self> {
        let (rest, conversation) = varint::u64_field(Field::ConversationId)(body)?;
        Ok(ServiceResponse {
            conversation,
            payload: whole.slice_ref(rest),
        })
    }

    pub(crate) fn body_len(&self) -> usize {
        varint::encoded_len(self.conversation) + self.payload.len()
    }

    pub(crate) fn encode<B: BufMut>(&self, buf: &mut B) {
        varint::encode(self.conversation, buf);
        buf.put_slice(&self.payload);
    }
}

impl ServiceError {
    #[inline]
    pub(crate) fn load<'a>(whole: &Bytes, body: &'a [u8]) -> Load<'a, Self> {
        let (rest, conversation) = varint::u64_field(Field::ConversationId)(body)?;
        let (rest, message) = Text::parse(whole, rest)?;
        let (rest, code) = varint::u32_field(Field::ErrorCode)(rest)?;
        expect_end(rest)?;
        Ok(ServiceError {
            conversation,
            message,
            code,
        })
    }

    pub(crate) fn body_len(&self) -> usize {
        varint::encoded_len(self.conversation)
            + self.message.encoded_len()
            + varint::encoded_len(u64::from(self.code))
    }

    pub(crate) fn encode<B: BufMut>(&self, buf: &mut B) {
        varint::encode(self.conversation, buf);
        self.message.encode(buf);
        varint::encode(u64::from(self.code), buf);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{decode_all_ways, violation};
    use super::super::Message;
    use super::*;
    use crate::violation::ViolationKind;

    #[test]
    fn section_3_service_request_user_ping_as_observed() {
        assert_eq!(
            decode_all_ways(&[0x00, 0x38, 0x01]),
            Ok(Message::ServiceRequest(ServiceRequest {
                service: USER_PING,
                conversation: 1,
                payload: Bytes::new()
            }))
        );
    }

    #[test]
    fn section_3_service_request_with_payload() {
        assert_eq!(
            decode_all_ways(&[0x00, 0x37, 0x80, 0x01, b'x', b'y']),
            Ok(Message::ServiceRequest(ServiceRequest {
                service: SYSTEM_PING,
                conversation: 128,
                payload: Bytes::from_static(b"xy")
            }))
        );
    }

    #[test]
    fn section_3_service_request_truncated_and_malformed_fields() {
        assert_eq!(
            violation(&[0x00]),
            (ViolationKind::Truncated(Field::ServiceId), 1)
        );
        assert_eq!(
            violation(&[0x00, 0x38]),
            (ViolationKind::Truncated(Field::ConversationId), 2)
        );
        assert_eq!(
            violation(&[0x00, 0x80, 0x80, 0x80, 0x80, 0x10, 0x01]),
            (ViolationKind::VarintOverflow(Field::ServiceId), 1)
        );
        assert_eq!(
            violation(&[0x00, 0x38, 0x81, 0x00]),
            (ViolationKind::NonMinimalVarint(Field::ConversationId), 2)
        );
        let mut overlong = vec![0x00, 0x38];
        overlong.extend([0xff; 9]);
        overlong.extend([0x81, 0x00]);
        assert_eq!(
            violation(&overlong),
            (ViolationKind::OverlongVarint(Field::ConversationId), 2)
        );
    }

    #[test]
    fn section_3_service_response() {
        assert_eq!(
            decode_all_ways(&[0x06, 0x05, 0xaa]),
            Ok(Message::ServiceResponse(ServiceResponse {
                conversation: 5,
                payload: Bytes::from_static(&[0xaa])
            }))
        );
        assert_eq!(
            violation(&[0x06]),
            (ViolationKind::Truncated(Field::ConversationId), 1)
        );
    }

    #[test]
    fn section_3_service_error_unknown_service() {
        assert_eq!(
            decode_all_ways(&[0x07, 0x02, 0x02, b'n', b'o', 0x64]),
            Ok(Message::ServiceError(ServiceError {
                conversation: 2,
                message: Text::from_static("no"),
                code: UNKNOWN_SERVICE_ERROR
            }))
        );
    }

    #[test]
    fn section_3_service_error_faults() {
        assert_eq!(
            violation(&[0x07, 0x02, 0x05, b'n', b'o']),
            (ViolationKind::Truncated(Field::StringBody), 3)
        );
        assert_eq!(
            violation(&[0x07, 0x02, 0x02, 0xff, 0xfe, 0x64]),
            (ViolationKind::InvalidUtf8(Field::StringBody), 3)
        );
        assert_eq!(
            violation(&[0x07, 0x02, 0x03, b'o', b'k', 0xff, 0x64]),
            (ViolationKind::InvalidUtf8(Field::StringBody), 5)
        );
        assert_eq!(
            violation(&[0x07, 0x02, 0x00]),
            (ViolationKind::Truncated(Field::ErrorCode), 3)
        );
        assert_eq!(
            violation(&[0x07, 0x02, 0x00, 0x64, 0x00]),
            (ViolationKind::TrailingBytes, 4)
        );
        assert_eq!(
            violation(&[0x07, 0x02, 0x00, 0x80, 0x80, 0x80, 0x80, 0x10]),
            (ViolationKind::VarintOverflow(Field::ErrorCode), 3)
        );
        let mut huge_len = vec![0x07, 0x02];
        huge_len.extend([0xff; 9]);
        huge_len.push(0x01);
        assert_eq!(
            violation(&huge_len),
            (ViolationKind::Truncated(Field::StringBody), 12)
        );
    }
}
