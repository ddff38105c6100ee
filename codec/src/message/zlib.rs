//! Compressed topic bodies (type byte bit 0x80): one whole zlib stream,
//! checked by inflating it.
//!
//! The decoder keeps the zero-copy view of the compressed bytes
//! ([`TopicMessage::data`](super::TopicMessage::data)) and only validates it:
//! the stream is inflated into a fixed 32 KiB wrapping window on the stack
//! and its output counted, so checking costs the same memory whatever the
//! stream claims and allocates nothing. The count is checked as the stream
//! inflates: output is stopped one byte past the limit, never later.
//! [`TopicMessage::inflate`](super::TopicMessage::inflate) gives the
//! inflated bytes to a caller that wants them, under the same bound.

use miniz_oxide::inflate::core::inflate_flags::TINFL_FLAG_PARSE_ZLIB_HEADER;
use miniz_oxide::inflate::core::{decompress_with_limit, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

use crate::violation::{ViolationKind, ZlibFault};

/// The deflate window: the farthest back a match may reach. A power of two,
/// as a wrapping output buffer must be.
const WINDOW: usize = 32 * 1024;

/// Bytes in front of a topic message's value: type byte and topic id. The
/// inflated message is these plus the inflated value.
const HEAD: usize = 1 + 4;

/// The most inflated value bytes a message may carry under a maximum
/// message size of `max_message_size` (type byte included).
pub(crate) fn value_limit(max_message_size: usize) -> usize {
    max_message_size.saturating_sub(HEAD)
}

/// Inflates the zlib stream `data`, handing each run of output to `sink`.
///
/// Fails with [`ViolationKind::InflatedTooLarge`] as soon as the output
/// passes `limit` bytes (the sink never sees more than `limit + 1` bytes), and
/// with [`ViolationKind::InvalidZlib`] when `data` is not exactly one whole
/// zlib stream with a matching checksum. Never loops: a turn goes on only
/// when it produced output, and output is bounded by `limit`.
///
/// The inflater writes up to the end of the window and then asks for more
/// room (`HasMoreOutput`); the next turn goes on at the window's start,
/// where `at` has wrapped to.
pub(crate) fn inflate(
    data: &[u8],
    limit: usize,
    max_message_size: usize,
    mut sink: impl FnMut(&[u8]),
) -> Result<(), ViolationKind> {
    let mut state = DecompressorOxide::new();
    let mut window = [0u8; WINDOW];
    let mut read = 0;
    let mut at = 0;
    let mut total: usize = 0;
    loop {
        // One byte past the limit is enough to know it is passed.
        let room = limit.saturating_add(1).saturating_sub(total);
        let (status, n_in, n_out) = decompress_with_limit(
            &mut state,
            data.get(read..).unwrap_or_default(),
            &mut window,
            at,
            room,
            TINFL_FLAG_PARSE_ZLIB_HEADER,
        );
        read = read.saturating_add(n_in);
        sink(window.get(at..at.saturating_add(n_out)).unwrap_or_default());
        total = total.saturating_add(n_out);
        at = (at + n_out) & (WINDOW - 1);
        if total > limit {
            return Err(ViolationKind::InflatedTooLarge {
                limit: max_message_size,
            });
        }
        let fault = match status {
            TINFLStatus::Done if read == data.len() => return Ok(()),
            TINFLStatus::Done => ZlibFault::TrailingBytes,
            TINFLStatus::HasMoreOutput if n_out > 0 => continue,
            TINFLStatus::FailedCannotMakeProgress | TINFLStatus::NeedsMoreInput => {
                ZlibFault::Truncated
            }
            TINFLStatus::Adler32Mismatch => ZlibFault::Checksum,
            _ => ZlibFault::Malformed,
        };
        return Err(ViolationKind::InvalidZlib(fault));
    }
}

/// Checks that `data` is one whole zlib stream that inflates to a message of
/// at most `max_message_size` bytes (type byte and topic id included).
///
/// Kept out of line: its 32 KiB window and the inflater's state would
/// otherwise be part of the caller's stack frame, probed on every decode of
/// an uncompressed message too.
#[cold]
#[inline(never)]
pub(crate) fn validate(data: &[u8], max_message_size: usize) -> Result<(), ViolationKind> {
    inflate(
        data,
        value_limit(max_message_size),
        max_message_size,
        |_| {},
    )
}

/// A zlib stream of `data` in stored (uncompressed) deflate blocks: valid,
/// if not small. For building compressed messages in tests and fuzzing.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn stored(data: &[u8]) -> Vec<u8> {
    const BLOCK: usize = u16::MAX as usize;
    let mut out = vec![0x78, 0x01];
    let mut blocks = data.chunks(BLOCK).peekable();
    if blocks.peek().is_none() {
        out.extend([1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        out.push(u8::from(blocks.peek().is_none()));
        let len = u16::try_from(block.len()).expect("a block is at most u16::MAX");
        out.extend(len.to_le_bytes());
        out.extend((!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    out.extend(((b << 16) | a).to_be_bytes());
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `hello`, as zlib compresses it at the default level.
    const HELLO: [u8; 13] = [
        0x78, 0x9c, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x06, 0x2c, 0x02, 0x15,
    ];

    fn inflated(data: &[u8], limit: usize) -> Result<Vec<u8>, ViolationKind> {
        let mut out = Vec::new();
        inflate(data, limit, limit + HEAD, |b| out.extend_from_slice(b)).map(|()| out)
    }

    #[test]
    fn section_3_compressed_body_is_one_zlib_stream() {
        assert_eq!(inflated(&HELLO, 5), Ok(b"hello".to_vec()));
        assert_eq!(inflated(&stored(b""), 0), Ok(Vec::new()));
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(inflated(&stored(&big), big.len()), Ok(big));
    }

    #[test]
    fn section_3_compressed_body_faults() {
        let bad = |data: &[u8]| inflated(data, 1 << 20).unwrap_err();
        let mut checksum = HELLO;
        checksum[12] ^= 1;
        let mut trailing = HELLO.to_vec();
        trailing.push(0);
        let cases: [(&[u8], ZlibFault); 7] = [
            (&[], ZlibFault::Truncated),
            (&HELLO[..1], ZlibFault::Truncated),
            (&HELLO[..12], ZlibFault::Truncated),
            (b"hello", ZlibFault::Malformed),
            // Header check bits wrong (0x789d is not a multiple of 31).
            (&[0x78, 0x9d, 0x03, 0x00, 0, 0, 0, 1], ZlibFault::Malformed),
            (&checksum, ZlibFault::Checksum),
            (&trailing, ZlibFault::TrailingBytes),
        ];
        for (data, fault) in cases {
            assert_eq!(bad(data), ViolationKind::InvalidZlib(fault), "{data:02x?}");
        }
    }

    #[test]
    fn section_3_inflated_size_is_bounded_as_it_inflates() {
        // Exactly at the limit inflates; one byte less is too large.
        assert_eq!(inflated(&HELLO, 5), Ok(b"hello".to_vec()));
        assert_eq!(
            inflated(&HELLO, 4),
            Err(ViolationKind::InflatedTooLarge { limit: 4 + HEAD })
        );
        // A bomb: 1 MiB of zeros in under 8 KiB. The sink sees no more than
        // one byte past the limit.
        let bomb = bomb(1 << 20);
        assert!(bomb.len() < 8192, "{}", bomb.len());
        let mut seen = 0;
        let r = inflate(&bomb, 1000, 1000 + HEAD, |b| seen += b.len());
        assert_eq!(
            r,
            Err(ViolationKind::InflatedTooLarge { limit: 1000 + HEAD })
        );
        assert_eq!(seen, 1001);
        assert_eq!(
            validate(&bomb, (1 << 20) + HEAD),
            Ok(()),
            "within a large enough limit it is valid"
        );
    }

    /// A zlib stream of `n` zero bytes, from one fixed-Huffman block of
    /// literal 0 then matches of length 258 at distance 1.
    pub(crate) fn bomb(n: usize) -> Vec<u8> {
        let mut bits = BitWriter::default();
        bits.put(1, 1); // BFINAL
        bits.put(1, 2); // fixed Huffman
        bits.code(0b0011_0000, 8); // literal 0
        let mut left = n - 1;
        while left > 0 {
            // Lengths 3..=258; a last run under 3 is literals.
            if left < 3 {
                bits.code(0b0011_0000, 8);
                left -= 1;
                continue;
            }
            let len = left.min(258);
            let len = if left - len > 0 && left - len < 3 {
                len - 3
            } else {
                len
            };
            bits.length(len);
            bits.code(0, 5); // distance code 0: distance 1
            left -= len;
        }
        bits.code(0, 7); // end of block (code 256)
        let mut out = vec![0x78, 0x9c];
        out.extend(bits.finish());
        let (mut a, mut b) = (1u32, 0u32);
        for _ in 0..n {
            b = (b + a) % 65521;
        }
        a %= 65521;
        out.extend(((b << 16) | a).to_be_bytes());
        out
    }

    #[derive(Default)]
    struct BitWriter {
        out: Vec<u8>,
        acc: u32,
        n: u32,
    }

    impl BitWriter {
        /// `count` bits of `value`, least significant first (header fields,
        /// extra bits).
        fn put(&mut self, value: u32, count: u32) {
            for i in 0..count {
                self.acc |= ((value >> i) & 1) << self.n;
                self.n += 1;
                if self.n == 8 {
                    self.out.push(self.acc as u8);
                    self.acc = 0;
                    self.n = 0;
                }
            }
        }

        /// A Huffman code of `count` bits, most significant first.
        fn code(&mut self, code: u32, count: u32) {
            for i in (0..count).rev() {
                self.put((code >> i) & 1, 1);
            }
        }

        /// A match length in the fixed code.
        fn length(&mut self, len: usize) {
            const BASE: [usize; 29] = [
                3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83,
                99, 115, 131, 163, 195, 227, 258,
            ];
            const EXTRA: [u32; 29] = [
                0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5,
                0,
            ];
            let i = BASE.iter().rposition(|&b| b <= len).expect("len >= 3");
            let symbol = 257 + i as u32;
            // Symbols 256..=279 are 7-bit codes from 0; 280..=287 8-bit from 0xc0.
            if symbol <= 279 {
                self.code(symbol - 256, 7);
            } else {
                self.code(symbol - 280 + 0xc0, 8);
            }
            self.put((len - BASE[i]) as u32, EXTRA[i]);
        }

        fn finish(mut self) -> Vec<u8> {
            if self.n > 0 {
                self.out.push(self.acc as u8);
            }
            self.out
        }
    }
}
