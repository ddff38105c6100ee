//! Topic messages: TOPIC_VALUE (4) and TOPIC_DELTA (5).
//!
//! Body: big-endian u32 topic id, then the value (or delta) bytes. These are
//! the only types that may carry the compressed bit; the codec hands the
//! compressed bytes out as they are.

use bytes::{BufMut, Bytes};
use nom::number::complete::be_u32;

use crate::parse::{in_field, Fault};
use crate::violation::Field;

/// A topic value or delta (types 4 and 5).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TopicMessage {
    /// The topic id.
    pub topic: u32,
    /// Whether `data` is zlib-compressed (bit 0x80 of the type byte).
    pub compressed: bool,
    /// The value or delta bytes, a view of the input.
    pub data: Bytes,
}

impl TopicMessage {
    #[inline]
    pub(crate) fn load<'a>(
        whole: &Bytes,
        body: &'a [u8],
        compressed: bool,
    ) -> Result<Self, nom::Err<Fault<'a>>> {
        let (rest, topic) = in_field(Field::TopicId, be_u32)(body)?;
        Ok(TopicMessage {
            topic,
            compressed,
            data: whole.slice_ref(rest),
        })
    }

    pub(crate) fn body_len(&self) -> usize {
        4 + self.data.len()
    }

    pub(crate) fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u32(self.topic);
        buf.put_slice(&self.data);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{decode_all_ways, violation};
    use super::super::Message;
    use super::*;
    use crate::violation::ViolationKind;

    #[test]
    fn section_3_topic_value() {
        assert_eq!(
            decode_all_ways(&[0x04, 0, 0, 1, 2, b'v']),
            Ok(Message::TopicValue(TopicMessage {
                topic: 258,
                compressed: false,
                data: Bytes::from_static(b"v")
            }))
        );
        assert_eq!(
            decode_all_ways(&[0x04, 0xff, 0xff, 0xff, 0xff]),
            Ok(Message::TopicValue(TopicMessage {
                topic: u32::MAX,
                compressed: false,
                data: Bytes::new()
            }))
        );
    }

    #[test]
    fn section_3_topic_delta_compressed() {
        assert_eq!(
            decode_all_ways(&[0x85, 0, 0, 0, 9, 0x78, 0x9c]),
            Ok(Message::TopicDelta(TopicMessage {
                topic: 9,
                compressed: true,
                data: Bytes::from_static(&[0x78, 0x9c])
            }))
        );
    }

    #[test]
    fn section_3_topic_id_truncated() {
        assert_eq!(
            violation(&[0x05, 0, 0, 0]),
            (ViolationKind::Truncated(Field::TopicId), 1)
        );
        assert_eq!(
            violation(&[0x84]),
            (ViolationKind::Truncated(Field::TopicId), 1)
        );
    }
}
