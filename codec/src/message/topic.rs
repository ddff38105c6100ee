//! Topic messages: TOPIC_VALUE (4) and TOPIC_DELTA (5).
//!
//! Body: big-endian u32 topic id, then the value (or delta) bytes. These are
//! the only types that may carry the compressed bit. A compressed value must
//! be one whole zlib stream that inflates within the maximum message size:
//! the decoder checks that and hands out the compressed bytes as a view
//! (zero-copy); [`TopicMessage::inflate`] gives the inflated bytes.

use bytes::{BufMut, Bytes};
use nom::number::complete::be_u32;

use crate::limits::Limits;
use crate::parse::{in_field, Fault};
use crate::violation::{Field, Violation};

use super::zlib;

/// A topic value or delta (types 4 and 5).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TopicMessage {
    /// The topic id.
    pub topic: u32,
    /// Whether `data` is zlib-compressed (bit 0x80 of the type byte).
    pub compressed: bool,
    /// The value or delta bytes, a view of the input: for a compressed
    /// message, the zlib stream as received (checked when decoded).
    pub data: Bytes,
}

impl TopicMessage {
    /// The value or delta bytes, inflated when the message is compressed.
    ///
    /// The result is at most what fits a message of
    /// [`Limits::max_message_size`] (type byte and topic id included), and
    /// inflating stops as soon as it would pass that; a fault's offset counts
    /// from the start of `data`. A message that was decoded under the same
    /// limits always inflates.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use sessionwire::{Limits, Message};
    ///
    /// // TOPIC_VALUE 0x84, topic 7, `hello` compressed by zlib.
    /// let wire = Bytes::from_static(&[
    ///     0x84, 0, 0, 0, 7, 0x78, 0x9c, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x06, 0x2c,
    ///     0x02, 0x15,
    /// ]);
    /// let Ok(Message::TopicValue(t)) = Message::decode(&wire, &Limits::default()) else {
    ///     panic!("a valid compressed value");
    /// };
    /// assert_eq!(t.data.len(), 13);
    /// assert_eq!(t.inflate(&Limits::default()).unwrap(), b"hello");
    /// ```
    pub fn inflate(&self, limits: &Limits) -> Result<Vec<u8>, Violation> {
        if !self.compressed {
            return Ok(self.data.to_vec());
        }
        let max = limits.max_message_size();
        let mut out = Vec::new();
        zlib::inflate(&self.data, zlib::value_limit(max), max, |b| {
            out.extend_from_slice(b)
        })
        .map_err(|kind| Violation::new(kind, 0))?;
        Ok(out)
    }

    #[inline]
    pub(crate) fn load<'a>(
        whole: &Bytes,
        body: &'a [u8],
        compressed: bool,
        limits: &Limits,
    ) -> Result<Self, nom::Err<Fault<'a>>> {
        let (rest, topic) = in_field(Field::TopicId, be_u32)(body)?;
        if compressed {
            zlib::validate(rest, limits.max_message_size())
                .map_err(|kind| Fault::at(kind, rest))?;
        }
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
    use crate::close::CloseReason;
    use crate::violation::{ViolationKind, ZlibFault};

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

    /// `hello`, as zlib compresses it at the default level.
    const HELLO: [u8; 13] = [
        0x78, 0x9c, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x06, 0x2c, 0x02, 0x15,
    ];

    fn compressed(type_byte: u8, stream: &[u8]) -> Vec<u8> {
        let mut wire = vec![type_byte, 0, 0, 0, 9];
        wire.extend_from_slice(stream);
        wire
    }

    #[test]
    fn section_3_topic_delta_compressed() {
        let m = decode_all_ways(&compressed(0x85, &HELLO)).unwrap();
        let Message::TopicDelta(t) = &m else {
            panic!("a delta: {m:?}");
        };
        assert_eq!((t.topic, t.compressed, &t.data[..]), (9, true, &HELLO[..]));
        assert_eq!(t.inflate(&Limits::default()).unwrap(), b"hello");
    }

    #[test]
    fn section_3_compressed_body_not_zlib_is_invalid_at_the_body() {
        let mut checksum = HELLO;
        checksum[12] ^= 0x80;
        let mut trailing = HELLO.to_vec();
        trailing.extend(b"xx");
        let cases: [(&[u8], ZlibFault); 5] = [
            (b"", ZlibFault::Truncated),
            (b"hello", ZlibFault::Malformed),
            (&HELLO[..10], ZlibFault::Truncated),
            (&checksum, ZlibFault::Checksum),
            (&trailing, ZlibFault::TrailingBytes),
        ];
        for (stream, fault) in cases {
            for ty in [0x84, 0x85] {
                let (kind, offset) = violation(&compressed(ty, stream));
                assert_eq!((kind, offset), (ViolationKind::InvalidZlib(fault), 5));
            }
            // Uncompressed, the same bytes are a plain value.
            assert!(decode_all_ways(&compressed(0x04, stream)).is_ok());
        }
    }

    #[test]
    fn section_3_compressed_body_inflating_past_the_maximum_is_too_large() {
        // 300 zeros in a stream of a few bytes: a 305-byte message once
        // inflated (type byte, topic id, value).
        let wire = Bytes::from(compressed(0x84, &super::super::zlib::tests::bomb(300)));
        assert!(wire.len() < 32, "{}", wire.len());
        let at = |max| Limits::builder().max_message_size(max).build().unwrap();
        assert!(Message::decode(&wire, &at(305)).is_ok());
        let v = Message::decode(&wire, &at(304)).unwrap_err();
        assert_eq!(
            v,
            Violation::new(ViolationKind::InflatedTooLarge { limit: 304 }, 5)
        );
        assert_eq!(v.close_reason(), CloseReason::MessageTooLarge);
        // The batch decoders see the same, at the body's batch offset.
        let mut batch = u32::try_from(wire.len() - 1)
            .unwrap()
            .to_be_bytes()
            .to_vec();
        batch.extend_from_slice(&wire);
        let text = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &batch);
        let b = crate::polling::decode_body(text.as_bytes(), &at(304));
        assert_eq!(
            b.violation,
            Some(Violation::new(
                ViolationKind::InflatedTooLarge { limit: 304 },
                9
            ))
        );
        let mut dec = crate::polling::BodyDecoder::new(at(304));
        let mut out = Vec::new();
        let fed = text
            .as_bytes()
            .chunks(1)
            .try_for_each(|c| dec.feed(c, &mut out));
        assert_eq!(fed.and_then(|()| dec.finish()).err(), b.violation);
        // What inflate hands out is bounded the same way.
        let Ok(Message::TopicValue(t)) = Message::decode(&wire, &Limits::default()) else {
            panic!("valid");
        };
        assert_eq!(t.inflate(&at(305)).map(|v| v.len()), Ok(300));
        assert_eq!(
            t.inflate(&at(304)),
            Err(Violation::new(
                ViolationKind::InflatedTooLarge { limit: 304 },
                0
            ))
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
