//! Varints: 7 bits per byte, least significant group first, the high bit set on
//! every byte but the last; at most 10 bytes for a 64-bit value.
//!
//! Decoding is strict so that every accepted message has one encoding: more than
//! 10 bytes, a value over the field's range, or a redundant trailing zero group
//! (`80 00` for 0) is a violation.

use bytes::BufMut;

use crate::parse::{Fault, PResult};
use crate::violation::{Field, ViolationKind};

/// The most bytes a varint may take.
pub const MAX_LEN: usize = 10;

/// Parses a varint into a `u64`, for the named field.
///
/// `#[inline]` (on the closure too) lets the parsers of other modules, which
/// may sit in other codegen units, inline it: it runs on every message.
#[inline]
pub(crate) fn u64_field(field: Field) -> impl Fn(&[u8]) -> PResult<'_, u64> {
    #[inline]
    move |input: &[u8]| {
        // Most ids fit one byte: a byte without the high bit is a whole,
        // minimal varint (0 included), so it needs none of the checks below.
        if let Some((&byte, rest)) = input.split_first() {
            if byte & 0x80 == 0 {
                return Ok((rest, u64::from(byte)));
            }
        }
        multi_byte(field, input)
    }
}

/// The rest of [`u64_field`]: a varint of more than one byte, or none. Kept
/// out of line so that the one-byte case inlines into every parser.
#[inline(never)]
fn multi_byte(field: Field, input: &[u8]) -> PResult<'_, u64> {
    let mut value: u64 = 0;
    for (i, &byte) in input.iter().enumerate() {
        if i == MAX_LEN {
            return Err(Fault::at(ViolationKind::OverlongVarint(field), input));
        }
        let group = u64::from(byte & 0x7f);
        // The 10th byte holds bit 63 only.
        if i == MAX_LEN - 1 && group > 1 {
            return Err(Fault::at(ViolationKind::VarintOverflow(field), input));
        }
        value |= group << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(Fault::at(ViolationKind::NonMinimalVarint(field), input));
            }
            return Ok((&input[i + 1..], value));
        }
    }
    Err(Fault::at(ViolationKind::Truncated(field), input))
}

/// Parses a varint into a `u32`, for the named field.
#[inline]
pub(crate) fn u32_field(field: Field) -> impl Fn(&[u8]) -> PResult<'_, u32> {
    #[inline]
    move |input: &[u8]| {
        let (rest, v) = u64_field(field)(input)?;
        match u32::try_from(v) {
            Ok(v) => Ok((rest, v)),
            Err(_) => Err(Fault::at(ViolationKind::VarintOverflow(field), input)),
        }
    }
}

/// The number of bytes `value` takes as a varint.
pub const fn encoded_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Writes `value` as a varint.
pub fn encode<B: BufMut>(mut value: u64, buf: &mut B) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{offset_in, IntoFault};

    fn dec(input: &[u8]) -> Result<(usize, u64), (ViolationKind, usize)> {
        match u64_field(Field::ConversationId)(input) {
            Ok((rest, v)) => Ok((input.len() - rest.len(), v)),
            Err(e) => {
                let f = e.into_fault();
                Err((f.kind, offset_in(input, f.at)))
            }
        }
    }

    #[test]
    fn section_3_varint_round_trips_at_every_length() {
        for shift in 0..64 {
            for v in [1u64 << shift, (1u64 << shift) - 1, u64::MAX >> shift] {
                let mut buf = Vec::new();
                encode(v, &mut buf);
                assert_eq!(buf.len(), encoded_len(v));
                assert!(buf.len() <= MAX_LEN);
                assert_eq!(dec(&buf), Ok((buf.len(), v)));
            }
        }
        assert_eq!(dec(&[0x00]), Ok((1, 0)));
        assert_eq!(dec(&[0x38, 0x01]), Ok((1, 56)));
    }

    #[test]
    fn section_3_varint_over_10_bytes_is_malformed() {
        let eleven = [0x80u8; 10]
            .iter()
            .copied()
            .chain([0x00])
            .collect::<Vec<_>>();
        assert_eq!(
            dec(&eleven),
            Err((ViolationKind::OverlongVarint(Field::ConversationId), 0))
        );
        let mut eleven_ones = vec![0xffu8; 9];
        eleven_ones.extend([0x81, 0x01]);
        assert_eq!(
            dec(&eleven_ones),
            Err((ViolationKind::OverlongVarint(Field::ConversationId), 0))
        );
    }

    #[test]
    fn section_3_varint_overflowing_its_field_is_malformed() {
        let mut max = vec![0xffu8; 9];
        max.push(0x01);
        assert_eq!(dec(&max), Ok((10, u64::MAX)));
        let mut over = vec![0xffu8; 9];
        over.push(0x02);
        assert_eq!(
            dec(&over),
            Err((ViolationKind::VarintOverflow(Field::ConversationId), 0))
        );
        let mut buf = Vec::new();
        encode(u64::from(u32::MAX) + 1, &mut buf);
        let r = u32_field(Field::ServiceId)(&buf).map_err(|e| e.into_fault().kind);
        assert_eq!(r, Err(ViolationKind::VarintOverflow(Field::ServiceId)));
        encode(u64::from(u32::MAX), &mut buf);
        assert!(u32_field(Field::ServiceId)(&buf[5..]).is_ok());
    }

    #[test]
    fn section_3_varint_not_shortest_is_malformed() {
        assert_eq!(
            dec(&[0x80, 0x00]),
            Err((ViolationKind::NonMinimalVarint(Field::ConversationId), 0))
        );
        assert_eq!(
            dec(&[0x81, 0x80, 0x00]),
            Err((ViolationKind::NonMinimalVarint(Field::ConversationId), 0))
        );
    }

    #[test]
    fn section_3_varint_truncated_byte_by_byte() {
        let mut buf = Vec::new();
        encode(u64::MAX, &mut buf);
        for cut in 0..buf.len() {
            assert_eq!(
                dec(&buf[..cut]),
                Err((ViolationKind::Truncated(Field::ConversationId), 0)),
                "cut at {cut}"
            );
        }
    }
}
