//! FETCH_REPLY (34): header fields split by 0x02 and ended by 0x01, then the
//! body.
//!
//! The first header field is the conversation id, written as decimal text
//! (the delimiters rule out a binary varint, whose bytes may be 0x01 or 0x02).
//! The codec accepts only its canonical form: ASCII digits, no sign, no leading
//! zero, within `u64`. The other fields are UTF-8 text.

use std::fmt;
use std::io::Write as _;

use bytes::{BufMut, Bytes, BytesMut};
use nom::bytes::complete::take_till;

use crate::parse::Fault;
use crate::violation::{Field, ViolationKind};

/// Ends the header fields.
pub const RECORD_DELIMITER: u8 = 0x01;
/// Separates two header fields.
pub const FIELD_DELIMITER: u8 = 0x02;

/// The reply to a fetch (type 34).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FetchReply {
    /// The requester's conversation id (the first header field).
    pub conversation: u64,
    /// The header fields after the conversation id.
    pub fields: FetchFields,
    /// The body after the header, a view of the input.
    pub body: Bytes,
}

/// The header fields of a fetch reply after the conversation id, held as their
/// wire bytes (each field preceded by 0x02), a view of the input.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct FetchFields(Bytes);

/// A fetch header field contained a delimiter byte (0x01 or 0x02).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DelimiterInField;

impl fmt::Display for DelimiterInField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fetch header field contains a delimiter byte")
    }
}

impl std::error::Error for DelimiterInField {}

impl FetchFields {
    /// Header fields from text; a field may not contain 0x01 or 0x02.
    pub fn new<'s>(fields: impl IntoIterator<Item = &'s str>) -> Result<Self, DelimiterInField> {
        let mut raw = BytesMut::new();
        for field in fields {
            if field
                .bytes()
                .any(|b| b == RECORD_DELIMITER || b == FIELD_DELIMITER)
            {
                return Err(DelimiterInField);
            }
            raw.put_u8(FIELD_DELIMITER);
            raw.put_slice(field.as_bytes());
        }
        Ok(FetchFields(raw.freeze()))
    }

    /// The fields, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let raw = self.0.get(1..).unwrap_or_default();
        // A leading 0x02 is present exactly when there is at least one field.
        let fields = (!self.0.is_empty()).then(|| raw.split(|&b| b == FIELD_DELIMITER));
        fields
            .into_iter()
            .flatten()
            // Validated as UTF-8 when made; 0x02 is ASCII so every piece is too.
            .map(|f| std::str::from_utf8(f).unwrap_or_default())
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.0.iter().filter(|&&b| b == FIELD_DELIMITER).count()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The wire bytes of the fields (each preceded by 0x02).
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

impl fmt::Debug for FetchFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Parses the canonical decimal text of a `u64`.
fn canonical_decimal(text: &[u8]) -> Option<u64> {
    match text {
        [] => None,
        [b'0'] => Some(0),
        [b'0', ..] => None,
        digits if digits.iter().all(u8::is_ascii_digit) => {
            digits.iter().try_fold(0u64, |acc, &d| {
                acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            })
        }
        _ => None,
    }
}

/// The number of decimal digits of `n`.
fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |l| l as usize + 1)
}

impl FetchReply {
    #[inline]
    pub(crate) fn load<'a>(whole: &Bytes, body: &'a [u8]) -> Result<Self, nom::Err<Fault<'a>>> {
        let (after_header, header) = take_till::<_, _, Fault<'a>>(|b| b == RECORD_DELIMITER)(body)?;
        let Some((_, payload)) = after_header.split_first() else {
            return Err(Fault::at(
                ViolationKind::Truncated(Field::FetchHeader),
                after_header,
            ));
        };
        let (fields, conv_text) = take_till::<_, _, Fault<'a>>(|b| b == FIELD_DELIMITER)(header)?;
        let Some(conversation) = canonical_decimal(conv_text) else {
            return Err(Fault::at(
                ViolationKind::MalformedField(Field::ConversationId),
                conv_text,
            ));
        };
        if let Err(e) = std::str::from_utf8(fields) {
            return Err(Fault::at(
                ViolationKind::InvalidUtf8(Field::FetchHeader),
                &fields[e.valid_up_to()..],
            ));
        }
        Ok(FetchReply {
            conversation,
            fields: FetchFields(whole.slice_ref(fields)),
            body: whole.slice_ref(payload),
        })
    }

    pub(crate) fn body_len(&self) -> usize {
        decimal_len(self.conversation) + self.fields.0.len() + 1 + self.body.len()
    }

    pub(crate) fn encode<B: BufMut>(&self, buf: &mut B) {
        let mut digits = [0u8; 20];
        let mut cursor = &mut digits[..];
        // 20 bytes hold any u64 in decimal, so the write cannot fail.
        let _ = write!(cursor, "{}", self.conversation);
        buf.put_slice(&digits[..decimal_len(self.conversation)]);
        buf.put_slice(&self.fields.0);
        buf.put_u8(RECORD_DELIMITER);
        buf.put_slice(&self.body);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{decode_all_ways, violation};
    use super::super::Message;
    use super::*;

    #[test]
    fn section_3_fetch_reply_fields_and_body() {
        let m = decode_all_ways(b"\x2212\x02a\x02\x02bc\x01body").unwrap();
        let Message::FetchReply(r) = m else {
            panic!("fetch reply expected")
        };
        assert_eq!(r.conversation, 12);
        assert_eq!(r.fields.iter().collect::<Vec<_>>(), ["a", "", "bc"]);
        assert_eq!(r.fields.len(), 3);
        assert_eq!(r.body, Bytes::from_static(b"body"));
        assert_eq!(r.fields, FetchFields::new(["a", "", "bc"]).unwrap());
    }

    #[test]
    fn section_3_fetch_reply_conversation_only() {
        let m = decode_all_ways(b"\x220\x01").unwrap();
        let Message::FetchReply(r) = m else {
            panic!("fetch reply expected")
        };
        assert_eq!((r.conversation, r.fields.is_empty()), (0, true));
        assert_eq!(r.fields.iter().count(), 0);
        assert_eq!(
            decode_all_ways(b"\x2218446744073709551615\x01"),
            Ok(Message::FetchReply(FetchReply {
                conversation: u64::MAX,
                fields: FetchFields::default(),
                body: Bytes::new()
            }))
        );
    }

    #[test]
    fn section_3_fetch_reply_without_record_delimiter_is_truncated() {
        assert_eq!(
            violation(b"\x227\x02a"),
            (ViolationKind::Truncated(Field::FetchHeader), 4)
        );
        assert_eq!(
            violation(b"\x22"),
            (ViolationKind::Truncated(Field::FetchHeader), 1)
        );
    }

    #[test]
    fn section_3_fetch_reply_conversation_id_must_be_canonical_decimal() {
        for bad in [
            &b"\x22\x01"[..],
            b"\x2207\x01",
            b"\x22-1\x01",
            b"\x22+1\x01",
            b"\x221a\x01",
            b"\x2218446744073709551616\x01",
        ] {
            assert_eq!(
                violation(bad),
                (ViolationKind::MalformedField(Field::ConversationId), 1),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn section_3_fetch_reply_fields_must_be_utf8() {
        assert_eq!(
            violation(b"\x221\x02ok\xff\x01"),
            (ViolationKind::InvalidUtf8(Field::FetchHeader), 5)
        );
    }

    #[test]
    fn fetch_fields_reject_delimiters() {
        assert_eq!(FetchFields::new(["a\u{1}"]), Err(DelimiterInField));
        assert_eq!(FetchFields::new(["\u{2}"]), Err(DelimiterInField));
        assert_eq!(FetchFields::new([""]).unwrap().len(), 1);
    }

    #[test]
    fn decimal_len_matches_formatting() {
        for n in [0, 1, 9, 10, 99, 100, u64::MAX / 10, u64::MAX] {
            assert_eq!(decimal_len(n), n.to_string().len());
        }
    }
}
