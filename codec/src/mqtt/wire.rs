//! The MQTT data representations (two- and four-byte integers, variable byte
//! integers, UTF-8 strings, binary data) read from a packet and written to a
//! buffer, plus the topic name and topic filter rules.
//!
//! A [`Reader`] walks one whole packet held in a byte slice; every string or
//! binary field it returns is a view of the [`Bytes`] that slice is, if it
//! has one.

use std::fmt;
use std::ops::Deref;

use bytes::{BufMut, Bytes};

use super::fault::MqttFault;
use super::types::EncodeError;
use crate::violation::{Field, Violation, ViolationKind};

/// The largest remaining length a variable byte integer can carry.
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// A violation of an MQTT rule at `offset`.
#[inline]
pub(crate) fn fault(f: MqttFault, offset: usize) -> Violation {
    Violation::new(ViolationKind::Mqtt(f), offset)
}

/// The input ended (or the remaining length did) inside `field`.
#[inline]
pub(crate) fn truncated(field: &'static str, offset: usize) -> Violation {
    Violation::new(ViolationKind::Truncated(Field::Named(field)), offset)
}

/// A UTF-8 string of at most 65,535 bytes without U+0000: the only strings
/// MQTT carries. A decoded one is a view of the packet it came from.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Str(Bytes);

/// Why a string cannot be an MQTT string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrError {
    /// It holds U+0000.
    NullCharacter,
    /// It is longer than 65,535 bytes.
    TooLong,
    /// It is not UTF-8.
    NotUtf8,
}

impl fmt::Display for StrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StrError::NullCharacter => "string holds U+0000",
            StrError::TooLong => "string longer than 65,535 bytes",
            StrError::NotUtf8 => "string is not UTF-8",
        })
    }
}

impl std::error::Error for StrError {}

impl Str {
    /// A string from a static `&str`; panics (at compile time in a `const`)
    /// if it holds U+0000 or is longer than 65,535 bytes.
    pub const fn from_static(s: &'static str) -> Str {
        let b = s.as_bytes();
        assert!(
            b.len() <= u16::MAX as usize,
            "MQTT strings hold at most 65,535 bytes"
        );
        let mut i = 0;
        while i < b.len() {
            assert!(b[i] != 0, "MQTT strings never hold U+0000");
            i += 1;
        }
        Str(Bytes::from_static(b))
    }

    /// Checks `bytes` and wraps them without copying.
    pub fn from_utf8(bytes: Bytes) -> Result<Str, StrError> {
        if bytes.len() > usize::from(u16::MAX) {
            return Err(StrError::TooLong);
        }
        let s = std::str::from_utf8(&bytes).map_err(|_| StrError::NotUtf8)?;
        if s.as_bytes().contains(&0) {
            return Err(StrError::NullCharacter);
        }
        Ok(Str(bytes))
    }

    /// Wraps bytes the decoder already checked.
    pub(crate) fn from_checked(bytes: Bytes) -> Str {
        Str(bytes)
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor checks UTF-8: `from_static` takes a
        // `&str`, `from_utf8` runs `str::from_utf8`, and the decoder builds a
        // `Str` only from bytes `check_utf8` accepted (see `Reader::string`).
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The bytes of the string (a view of the packet it was decoded from).
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Bytes on the wire: the two-byte length, then the string.
    pub(crate) fn wire_len(&self) -> usize {
        2 + self.0.len()
    }

    /// Writes the two-byte length and the string.
    pub(crate) fn put<B: BufMut>(&self, buf: &mut B) {
        // Every constructor bounds the length to 65,535.
        buf.put_u16(self.0.len() as u16);
        buf.put_slice(&self.0);
    }
}

impl TryFrom<&str> for Str {
    type Error = StrError;
    fn try_from(s: &str) -> Result<Str, StrError> {
        Str::from_utf8(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl TryFrom<String> for Str {
    type Error = StrError;
    fn try_from(s: String) -> Result<Str, StrError> {
        Str::from_utf8(Bytes::from(s))
    }
}

impl Deref for Str {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one pass over a string found, as bits.
const NON_ASCII: u8 = 1;
const NUL: u8 = 2;
const WILDCARD: u8 = 4;

/// One pass over `s`: whether it has bytes above 0x7f, a NUL byte, a `+` or
/// a `#`. Multi-byte UTF-8 sequences never hold bytes below 0x80, so the
/// ASCII findings hold for the decoded characters too.
///
/// Eight bytes at a time, with one test for all three special bytes: a word
/// has a zero byte exactly when `(w - 0x01..) & !w & 0x80..` is non-zero;
/// `+` (0x2b) and `#` (0x23) differ only in bit 3, so both, and only they,
/// become zero bytes of `(w | 0x08..) ^ 0x2b..`. Only a string holding one of
/// them (rare outside topic filters) is looked at again to tell which.
#[cfg_attr(all(target_arch = "x86_64", not(test)), allow(dead_code))]
#[inline]
fn scan_words(s: &[u8]) -> u8 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    /// High bit set in each zero byte (and possibly above one): non-zero
    /// exactly when `w` has a zero byte, once masked with `HIGHS`.
    #[inline(always)]
    fn zeros(w: u64) -> u64 {
        w.wrapping_sub(ONES) & !w
    }
    let (mut high, mut special) = (0u64, 0u64);
    let mut add = |w: u64| {
        high |= w;
        special |= zeros(w) | zeros((w | (ONES * 0x08)) ^ (ONES * u64::from(b'+')));
    };
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        u64::from_le_bytes(w)
    };
    if s.len() >= 8 {
        for chunk in s.chunks_exact(8) {
            add(word(chunk));
        }
        // The last eight bytes, overlapping the words before: the findings
        // are about presence only, so reading a byte twice changes nothing.
        add(word(&s[s.len() - 8..]));
    } else {
        // Padded with 'a', which is none of the bytes looked for.
        let mut w = [b'a'; 8];
        w[..s.len()].copy_from_slice(s);
        add(u64::from_le_bytes(w));
    }
    which_special(s, high & HIGHS != 0, special & HIGHS != 0)
}

/// The scan bits of `s` once a fast pass found whether it has bytes above
/// 0x7f and whether it has a NUL, `+` or `#`: only then is it read again,
/// byte by byte, to tell which.
#[inline]
fn which_special(s: &[u8], non_ascii: bool, special: bool) -> u8 {
    let mut bits = u8::from(non_ascii) * NON_ASCII;
    if special {
        for &b in s {
            bits |= match b {
                0 => NUL,
                b'+' | b'#' => WILDCARD,
                _ => 0,
            };
        }
    }
    bits
}

/// The scan bits of `s` alone (no bytes after it to read in place).
#[cfg(test)]
fn scan(s: &[u8]) -> u8 {
    scan_in(s, s.len())
}

/// The scan bits of the string `room[..n]`.
#[cfg(test)]
fn scan_in(room: &[u8], n: usize) -> u8 {
    scan_blocks(room, n, |_, _| {})
}

/// The scan bits of the string `room[..n]`: [`scan_words`] sixteen bytes at
/// a time with SSE2, which every x86-64 processor has: one compare per
/// special byte, and the high bits taken directly. Strings of 16 bytes or
/// more are read in 16-byte blocks, the last one overlapping the one
/// before. A shorter one is read in place when `room` has 16 bytes, the
/// bits past the string masked off; else it is copied into a block padded
/// with `a`.
///
/// Every block holding a wildcard is also handed to `wildcards`: the
/// string offset of its first byte, and one bit per `+` or `#` in it (bit
/// `i` for the byte at that offset plus `i`, never past the string). A
/// byte of the overlapping last block may be handed over twice.
#[cfg(target_arch = "x86_64")]
#[inline]
fn scan_blocks(room: &[u8], n: usize, mut wildcards: impl FnMut(usize, u32)) -> u8 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        _mm_setzero_si128,
    };
    // Per block: the bytes above 0x7f, the NUL bytes, the wildcards.
    let masks = |block: &[u8; 16]| -> (i32, i32, i32) {
        // SAFETY: SSE2 is part of the x86-64 baseline, so these intrinsics
        // are available on every processor this code runs on; the load
        // reads the 16 bytes of `block`, a valid reference, and
        // `_mm_loadu_si128` needs no alignment.
        unsafe {
            let v = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
            let nul = _mm_cmpeq_epi8(v, _mm_setzero_si128());
            let wild = _mm_or_si128(
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b'+' as i8)),
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b'#' as i8)),
            );
            (
                _mm_movemask_epi8(v),
                _mm_movemask_epi8(nul),
                _mm_movemask_epi8(wild),
            )
        }
    };
    let s = &room[..n];
    let (mut high, mut nul, mut wild) = (0, 0, 0);
    // `block` is where the bytes were read: in `s` (its offset is taken
    // from the addresses, and only when a wildcard is there), or a copy of
    // its start.
    let mut add = |block: &[u8; 16], (h, n, w): (i32, i32, i32)| {
        high |= h;
        nul |= n;
        wild |= w;
        if w != 0 {
            let at = (block.as_ptr() as usize).wrapping_sub(s.as_ptr() as usize);
            // A copy lies outside `s`: it holds the string's start.
            let at = if at < s.len() { at } else { 0 };
            // Sixteen bits at most: the sign cast keeps them as they are.
            wildcards(at, w as u32);
        }
    };
    if let Some(last) = s.last_chunk::<16>() {
        for block in s.chunks_exact(16) {
            // Always 16 bytes: the conversion cannot fail.
            if let Ok(block) = <&[u8; 16]>::try_from(block) {
                add(block, masks(block));
            }
        }
        // Reading a byte twice changes nothing: the findings are about
        // presence only.
        add(last, masks(last));
    } else if let Some(block) = room.first_chunk::<16>() {
        // Only the first `n` (under 16) bytes are the string's.
        let keep = (1i32 << n) - 1;
        let (h, n, w) = masks(block);
        add(block, (h & keep, n & keep, w & keep));
    } else {
        let mut block = [b'a'; 16];
        block[..s.len()].copy_from_slice(s);
        add(&block, masks(&block));
    }
    (u8::from(high != 0) * NON_ASCII)
        | (u8::from(nul != 0) * NUL)
        | (u8::from(wild != 0) * WILDCARD)
}

/// Without SSE2 at hand, eight bytes at a time in a `u64`; a string with a
/// wildcard is read again to hand its blocks to `wildcards` as the SSE2
/// version does.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn scan_blocks(room: &[u8], n: usize, mut wildcards: impl FnMut(usize, u32)) -> u8 {
    let s = &room[..n];
    let bits = scan_words(s);
    if bits & WILDCARD != 0 {
        for (k, block) in s.chunks(16).enumerate() {
            let mask = block
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == b'+' || b == b'#')
                .fold(0u32, |m, (i, _)| m | 1 << i);
            if mask != 0 {
                wildcards(16 * k, mask);
            }
        }
    }
    bits
}

/// Checks the string rules (well-formed UTF-8, which excludes surrogates and
/// overlong forms; no U+0000) on the string `room[..n]`, found at `offset`
/// (`room` runs on to its packet's end); returns the scan bits so a caller
/// can also check wildcards.
#[inline]
pub(crate) fn check_utf8(
    room: &[u8],
    n: usize,
    offset: usize,
    field: &'static str,
) -> Result<u8, Violation> {
    check_utf8_with(room, n, offset, field, |_, _| {})
}

/// [`check_utf8`], handing the string's wildcards to `wildcards` during its
/// one pass as [`scan_blocks`] does.
#[inline]
fn check_utf8_with(
    room: &[u8],
    n: usize,
    offset: usize,
    field: &'static str,
    wildcards: impl FnMut(usize, u32),
) -> Result<u8, Violation> {
    let s = &room[..n];
    let bits = scan_blocks(room, n, wildcards);
    if bits & NON_ASCII != 0 {
        if let Err(e) = std::str::from_utf8(s) {
            return Err(Violation::new(
                ViolationKind::InvalidUtf8(Field::Named(field)),
                offset + e.valid_up_to(),
            ));
        }
    }
    if bits & NUL != 0 {
        let at = s.iter().position(|&b| b == 0).unwrap_or(0);
        return Err(fault(
            MqttFault::NullCharacter(Field::Named(field)),
            offset + at,
        ));
    }
    Ok(bits)
}

/// What a shared subscription's topic filter starts with (5.0).
const SHARE: &[u8] = b"$share/";

/// Checks a topic filter's wildcard placement and, in MQTT 5.0, the shape of
/// a shared subscription; returns whether it is a shared subscription.
pub(crate) fn check_filter(s: &[u8], offset: usize, v5: bool) -> Result<bool, Violation> {
    let mut start = 0;
    let mut shared = false;
    if v5 && s.starts_with(SHARE) {
        shared = true;
        let name_start = SHARE.len();
        let name_end = s[name_start..]
            .iter()
            .position(|&b| b == b'/')
            .map(|p| name_start + p);
        match name_end {
            Some(end)
                if end > name_start
                    && end + 1 < s.len()
                    && !s[name_start..end].iter().any(|&b| b == b'+' || b == b'#') =>
            {
                start = end + 1;
            }
            _ => return Err(fault(MqttFault::SharedSubscription, offset)),
        }
    }
    let filter = &s[start..];
    // Only the wildcards and their neighbours are looked at.
    for (i, &b) in filter.iter().enumerate() {
        if (b == b'+' || b == b'#') && !fills_level(filter, i) {
            return Err(fault(MqttFault::WildcardPlacement, offset + start + i));
        }
    }
    Ok(shared)
}

/// Whether the wildcard at `filter[i]` fills its level: the byte before it
/// (if any) is a `/`, and so is the byte after a `+`; a `#` is the last
/// byte.
#[inline(always)]
fn fills_level(filter: &[u8], i: usize) -> bool {
    let starts_level = i == 0 || filter.get(i - 1) == Some(&b'/');
    let ends_level = match filter.get(i + 1) {
        None => true,
        Some(&next) => filter.get(i) == Some(&b'+') && next == b'/',
    };
    starts_level && ends_level
}

/// A cursor over one whole packet held in `buf`. Offsets are counted from
/// the packet's first byte.
///
/// Every check reads `buf` directly. With an `owner` (the [`Bytes`] that
/// `buf` is), the string and binary fields it returns are views of it; a
/// reader made by [`checking`](Self::checking) has none and returns empty
/// views: it only checks, for a decode that keeps borrowed slices instead.
#[derive(Clone)]
pub(crate) struct Reader<'a> {
    /// The buffer up to the packet's end, so that checking a length against
    /// what is left also proves the indexing that follows in bounds.
    buf: &'a [u8],
    owner: Option<&'a Bytes>,
    /// Where the packet starts in `buf`: offsets are counted from here.
    base: usize,
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader of `whole[pos..end]`, offsets counted from `whole`'s start.
    #[inline]
    pub(crate) fn new(whole: &'a Bytes, pos: usize, end: usize) -> Self {
        Reader::with_base(whole, 0, pos, end)
    }

    /// A reader of `whole[pos..end]` for a packet starting at `base`.
    #[inline]
    pub(crate) fn with_base(whole: &'a Bytes, base: usize, pos: usize, end: usize) -> Self {
        Reader {
            buf: &whole[..end],
            owner: Some(whole),
            base,
            pos,
        }
    }

    /// A reader of `buf[pos..end]` for a packet starting at `base` that
    /// checks without taking views: the fields it returns are empty.
    #[inline]
    pub(crate) fn checking(buf: &'a [u8], base: usize, pos: usize, end: usize) -> Self {
        Reader {
            buf: &buf[..end],
            owner: None,
            base,
            pos,
        }
    }

    /// Where the next byte is in the buffer (not counted from the packet).
    #[inline]
    pub(crate) fn buf_pos(&self) -> usize {
        self.pos
    }

    /// A view of `buf[at..at + n]` (in range: every caller took it first),
    /// or an empty one for a checking reader.
    #[inline]
    pub(crate) fn view(&self, at: usize, n: usize) -> Bytes {
        match self.owner {
            Some(whole) => whole.slice(at..at + n),
            None => Bytes::new(),
        }
    }

    /// A view of `s`, a slice this reader returned (so within its buffer),
    /// or an empty one for a checking reader.
    #[inline]
    pub(crate) fn view_slice(&self, s: &[u8]) -> Bytes {
        // Addresses only, nothing is read through them: `s` lies in `buf`.
        let at = (s.as_ptr() as usize).wrapping_sub(self.buf.as_ptr() as usize);
        self.view(at, s.len())
    }

    /// A view from the start of `s`, a slice this reader returned, to where
    /// the reader stands.
    #[inline]
    pub(crate) fn view_from(&self, s: &[u8]) -> Bytes {
        let at = (s.as_ptr() as usize).wrapping_sub(self.buf.as_ptr() as usize);
        self.view(at, self.pos - at)
    }

    /// A reader of the next `n` bytes (checked by the caller to be there),
    /// offsets counted from where they start, and those bytes; `self` moves
    /// past them.
    #[inline]
    pub(crate) fn sub(&mut self, n: usize) -> (Reader<'a>, &'a [u8]) {
        let at = self.pos;
        self.pos += n;
        let buf = &self.buf[..at + n];
        let reader = Reader {
            buf,
            owner: self.owner,
            base: at,
            pos: at,
        };
        (reader, &buf[at..])
    }

    /// The offset of the next byte, from the packet's start.
    #[inline]
    pub(crate) fn pos(&self) -> usize {
        self.pos - self.base
    }

    /// Bytes left before the end.
    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether every byte was read.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// Fails with trailing bytes unless every byte was read.
    #[inline]
    pub(crate) fn finish(&self) -> Result<(), Violation> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(Violation::new(ViolationKind::TrailingBytes, self.pos()))
        }
    }

    #[inline]
    fn take(&mut self, n: usize, field: &'static str) -> Result<(usize, &'a [u8]), Violation> {
        let at = self.pos;
        // One check for the length, which also bounds every index into the
        // slice returned (its length is `n`).
        let Some(s) = self.buf.get(at..).and_then(|rest| rest.get(..n)) else {
            return Err(truncated(field, self.pos()));
        };
        self.pos = at + n;
        Ok((at, s))
    }

    /// The next byte, without reading it.
    #[inline]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// One byte.
    #[inline]
    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, Violation> {
        let (_, s) = self.take(1, field)?;
        Ok(s[0])
    }

    /// A big-endian two-byte integer.
    #[inline]
    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, Violation> {
        let (_, s) = self.take(2, field)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }

    /// A big-endian four-byte integer.
    #[inline]
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, Violation> {
        let (_, b) = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A variable byte integer: at most four bytes, in its shortest form.
    #[inline]
    pub(crate) fn var_int(&mut self, field: &'static str) -> Result<u32, Violation> {
        match read_var_int(&self.buf[self.pos..]) {
            VarInt::Value(v, n) => {
                self.pos += n;
                Ok(v)
            }
            VarInt::Incomplete => Err(truncated(field, self.pos())),
            VarInt::TooLong => Err(fault(
                MqttFault::VarIntTooLong(Field::Named(field)),
                self.pos(),
            )),
            VarInt::NotMinimal(n) => Err(fault(
                MqttFault::VarIntNotMinimal(Field::Named(field)),
                self.pos() + n - 1,
            )),
        }
    }

    /// `n` bytes as a view.
    #[inline]
    pub(crate) fn slice(&mut self, n: usize, field: &'static str) -> Result<Bytes, Violation> {
        let (at, _) = self.take(n, field)?;
        Ok(self.view(at, n))
    }

    /// Everything left, as a view.
    #[inline]
    pub(crate) fn rest(&mut self) -> Bytes {
        let at = self.pos;
        self.pos = self.buf.len();
        self.view(at, self.buf.len() - at)
    }

    /// Everything left, borrowed.
    #[inline]
    pub(crate) fn rest_slice(&mut self) -> &'a [u8] {
        let at = self.pos;
        self.pos = self.buf.len();
        &self.buf[at..]
    }

    /// A two-byte length, then that many bytes, as a view.
    #[inline]
    pub(crate) fn binary(&mut self, field: &'static str) -> Result<Bytes, Violation> {
        let n = self.u16(field)?;
        self.slice(usize::from(n), field)
    }

    /// A two-byte length, then that many bytes, borrowed.
    #[inline]
    pub(crate) fn binary_slice(&mut self, field: &'static str) -> Result<&'a [u8], Violation> {
        let n = usize::from(self.u16(field)?);
        self.take(n, field).map(|(_, s)| s)
    }

    /// A string, checked: UTF-8 without U+0000. Returns the scan bits too.
    #[inline]
    fn string_bits(&mut self, field: &'static str) -> Result<(Str, u8), Violation> {
        let (at, n, bits) = self.string_span(field)?;
        Ok((Str(self.view(at, n)), bits))
    }

    /// A string, checked as [`string`](Self::string) does, without taking a
    /// view: where its bytes start in the buffer, how many there are, and
    /// the scan bits.
    #[inline]
    pub(crate) fn string_span(
        &mut self,
        field: &'static str,
    ) -> Result<(usize, usize, u8), Violation> {
        let n = usize::from(self.u16(field)?);
        let (at, s) = self.take(n, field)?;
        let bits = check_utf8(&self.buf[at..], s.len(), at - self.base, field)?;
        Ok((at, n, bits))
    }

    /// Steps over a string, checked as [`string`](Self::string) does.
    #[inline]
    pub(crate) fn skip_string(&mut self, field: &'static str) -> Result<(), Violation> {
        self.string_span(field).map(drop)
    }

    /// Steps over binary data (a two-byte length, then that many bytes).
    #[inline]
    pub(crate) fn skip_binary(&mut self, field: &'static str) -> Result<(), Violation> {
        let n = self.u16(field)?;
        self.take(usize::from(n), field).map(drop)
    }

    /// A string, checked: UTF-8 without U+0000.
    #[inline]
    pub(crate) fn string(&mut self, field: &'static str) -> Result<Str, Violation> {
        self.string_bits(field).map(|(s, _)| s)
    }

    /// A topic name: a string without wildcards, empty only if `may_be_empty`.
    #[inline]
    pub(crate) fn topic_name(
        &mut self,
        field: &'static str,
        may_be_empty: bool,
    ) -> Result<Str, Violation> {
        let (at, s) = self.topic_name_span(field, may_be_empty)?;
        Ok(Str(self.view(at, s.len())))
    }

    /// A topic name, checked as [`topic_name`](Self::topic_name) does, but
    /// without taking a view: where its bytes start in the buffer, and how
    /// many there are.
    #[inline]
    pub(crate) fn topic_name_span(
        &mut self,
        field: &'static str,
        may_be_empty: bool,
    ) -> Result<(usize, &'a [u8]), Violation> {
        let start = self.pos();
        let n = self.u16(field)?;
        let (at, s) = self.take(usize::from(n), field)?;
        let bits = check_utf8(&self.buf[at..], s.len(), at - self.base, field)?;
        if bits & WILDCARD != 0 {
            let i = s.iter().position(|&b| b == b'+' || b == b'#');
            return Err(fault(
                MqttFault::WildcardInTopicName(Field::Named(field)),
                start + 2 + i.unwrap_or(0),
            ));
        }
        if n == 0 && !may_be_empty {
            return Err(fault(MqttFault::EmptyTopic(Field::Named(field)), start));
        }
        Ok((at, s))
    }

    /// A view of what was read since packet offset `from` (from [`pos`](Self::pos)).
    #[inline]
    pub(crate) fn span(&self, from: usize) -> Bytes {
        self.view(self.base + from, self.pos - (self.base + from))
    }

    /// Steps over a topic filter: a non-empty string whose wildcards fill
    /// their levels. Returns whether it is a shared subscription.
    ///
    /// The wildcards are checked in the pass that checks the string, by
    /// position: only a block holding one is looked at again, and only at
    /// each wildcard's neighbours. A shared subscription (5.0) is checked
    /// by [`check_filter`], after the string.
    #[inline]
    pub(crate) fn topic_filter(&mut self, v5: bool) -> Result<bool, Violation> {
        const FIELD: &str = "topic filter";
        let start = self.pos();
        let n = usize::from(self.u16(FIELD)?);
        let (at, s) = self.take(n, FIELD)?;
        let room = &self.buf[at..];
        let offset = at - self.base;
        if v5 && s.starts_with(SHARE) {
            check_utf8(room, n, offset, FIELD)?;
            return check_filter(s, start + 2, v5);
        }
        // The first wildcard that does not fill its level, if any.
        let mut misplaced = usize::MAX;
        check_utf8_with(room, n, offset, FIELD, |at, mut mask| {
            while mask != 0 {
                let i = at + mask.trailing_zeros() as usize;
                mask &= mask - 1;
                if !fills_level(s, i) {
                    misplaced = misplaced.min(i);
                }
            }
        })?;
        if n == 0 {
            return Err(fault(MqttFault::EmptyTopic(Field::Named(FIELD)), start));
        }
        if misplaced != usize::MAX {
            return Err(fault(MqttFault::WildcardPlacement, offset + misplaced));
        }
        Ok(false)
    }
}

/// The outcome of reading a variable byte integer.
pub(crate) enum VarInt {
    /// The value and the bytes it took.
    Value(u32, usize),
    /// The input ends before the last byte.
    Incomplete,
    /// The fourth byte has a continuation bit.
    TooLong,
    /// The last of `n` bytes is a redundant zero group.
    NotMinimal(usize),
}

/// Reads a variable byte integer from the start of `input`.
#[inline]
pub(crate) fn read_var_int(input: &[u8]) -> VarInt {
    // Most lengths take one byte.
    if let Some(&b) = input.first() {
        if b & 0x80 == 0 {
            return VarInt::Value(u32::from(b), 1);
        }
    }
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&b) = input.get(i) else {
            return VarInt::Incomplete;
        };
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return VarInt::NotMinimal(i + 1);
            }
            return VarInt::Value(value, i + 1);
        }
    }
    VarInt::TooLong
}

/// Bytes a variable byte integer for `value` takes.
#[inline]
pub(crate) const fn var_int_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes `value` (at most [`MAX_REMAINING_LENGTH`]) as a variable byte integer.
#[inline]
pub(crate) fn put_var_int<B: BufMut>(buf: &mut B, mut value: usize) {
    loop {
        let mut b = (value & 0x7f) as u8;
        value >>= 7;
        if value > 0 {
            b |= 0x80;
        }
        buf.put_u8(b);
        if value == 0 {
            break;
        }
    }
}

/// Bytes a binary field takes on the wire, or an error past 65,535 bytes.
#[inline]
pub(crate) fn binary_len(b: &Bytes) -> Result<usize, EncodeError> {
    if b.len() > usize::from(u16::MAX) {
        Err(EncodeError::FieldTooLong)
    } else {
        Ok(2 + b.len())
    }
}

/// Writes a two-byte length and the bytes (checked by [`binary_len`] first).
#[inline]
pub(crate) fn put_binary<B: BufMut>(buf: &mut B, b: &Bytes) {
    buf.put_u16(b.len() as u16);
    buf.put_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_1_5_5_1_var_int_shortest_form_up_to_four_bytes() {
        for (v, wire) in [
            (0u32, &[0x00][..]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xff, 0x7f]),
            (16_384, &[0x80, 0x80, 0x01]),
            (268_435_455, &[0xff, 0xff, 0xff, 0x7f]),
        ] {
            assert!(matches!(read_var_int(wire), VarInt::Value(x, n) if x == v && n == wire.len()));
            let mut out = Vec::new();
            put_var_int(&mut out, v as usize);
            assert_eq!(out, wire);
            assert_eq!(var_int_len(v as usize), wire.len());
        }
        assert!(matches!(read_var_int(&[0x80, 0x00]), VarInt::NotMinimal(2)));
        assert!(matches!(
            read_var_int(&[0xff, 0xff, 0xff, 0xff, 0x01]),
            VarInt::TooLong
        ));
        assert!(matches!(read_var_int(&[0xff, 0xff]), VarInt::Incomplete));
    }

    #[test]
    fn topic_filter_wildcards_fill_their_level() {
        for good in [
            "#",
            "+",
            "a/+/b",
            "a/#",
            "+/+",
            "/",
            "a//b",
            "sport/tennis/+",
        ] {
            assert!(check_filter(good.as_bytes(), 0, false).is_ok(), "{good}");
        }
        for bad in ["a#", "a/#/b", "a+", "+a", "a/b+", "##", "#/"] {
            assert!(check_filter(bad.as_bytes(), 0, false).is_err(), "{bad}");
        }
        assert_eq!(check_filter(b"$share/g/a/+", 0, true), Ok(true));
        assert_eq!(check_filter(b"$share/g/a/+", 0, false), Ok(false));
        for bad in [
            "$share//a",
            "$share/g",
            "$share/g/",
            "$share/g+/a",
            "$share/#",
        ] {
            assert!(check_filter(bad.as_bytes(), 0, true).is_err(), "{bad}");
        }
    }

    /// The filter's verdict from [`Reader::topic_filter`] (wildcards found
    /// during the string's scan), with `after` following it in the packet.
    fn read_filter(filter: &[u8], after: &[u8], v5: bool) -> Result<bool, Violation> {
        let mut packet = (filter.len() as u16).to_be_bytes().to_vec();
        packet.extend_from_slice(filter);
        packet.extend_from_slice(after);
        Reader::checking(&packet, 0, 0, packet.len()).topic_filter(v5)
    }

    #[test]
    fn mqtt_4_7_1_wildcard_placement_found_in_the_scan_matches_byte_by_byte() {
        // Every filter of up to 34 bytes over `a`, `/`, `+` and `#` that is
        // `a` except at three positions (so every block and the overlap of
        // the last one are covered), read with room after it holding
        // wildcards (in place) and without (copied): same verdict and
        // offset as the byte-by-byte check, shifted past the length.
        let alphabet = [b'a', b'/', b'+', b'#'];
        for len in 1..=34usize {
            let spots = [0, len / 2, len - 1, 15.min(len - 1), 16.min(len - 1)];
            for &p in &spots {
                for &q in &spots {
                    for (&x, &y) in alphabet
                        .iter()
                        .flat_map(|x| alphabet.iter().map(move |y| (x, y)))
                    {
                        for &z in &alphabet {
                            let mut f = vec![b'a'; len];
                            f[p] = x;
                            f[q] = y;
                            f[len - 1] = z;
                            let want = check_filter(&f, 2, false);
                            for after in [&b""[..], b"+#+#+#+#+#+#+#+#/"] {
                                assert_eq!(
                                    read_filter(&f, after, false),
                                    want,
                                    "{:?}",
                                    String::from_utf8_lossy(&f)
                                );
                            }
                        }
                    }
                }
            }
        }
        // Shared subscriptions keep their own check in 5.0.
        assert_eq!(read_filter(b"$share/g/a/+", b"", true), Ok(true));
        assert!(read_filter(b"$share/g+/a", b"", true).is_err());
        assert_eq!(read_filter(b"$share/g/a/+", b"", false), Ok(false));
        // A bad string is reported before a misplaced wildcard.
        let nul = read_filter(b"a+\x00", b"", false).unwrap_err();
        assert_eq!(
            (nul.kind(), nul.offset()),
            (
                ViolationKind::Mqtt(MqttFault::NullCharacter(Field::Named("topic filter"))),
                4
            )
        );
    }

    #[test]
    fn scan_finds_high_bytes_nul_and_wildcards_anywhere() {
        for len in 0..40 {
            let base = vec![b'a'; len];
            assert_eq!(scan(&base), 0);
            for at in 0..len {
                for (byte, bit) in [
                    (0x80u8, NON_ASCII),
                    (0xff, NON_ASCII),
                    (0, NUL),
                    (b'+', WILDCARD),
                    (b'#', WILDCARD),
                ] {
                    let mut s = base.clone();
                    s[at] = byte;
                    assert_eq!(scan(&s), bit, "{s:?}");
                }
            }
        }
        // Neighbours of the searched bytes are not mistaken for them.
        assert_eq!(scan(b"\x01\x01\x01\x01\x01\x01\x01\x01*,\"$"), 0);
    }

    #[test]
    fn scan_in_place_ignores_the_bytes_after_the_string() {
        // The string "ab", then every special byte: none of them counts.
        let room = b"ab\x00+#\xff\x00+#\xff\x00+#\xff\x00+#";
        assert!(room.len() >= 16);
        assert_eq!(scan_in(room, 2), 0);
        for (byte, bit) in [
            (0x80u8, NON_ASCII),
            (0, NUL),
            (b'+', WILDCARD),
            (b'#', WILDCARD),
        ] {
            for len in 1..16 {
                let mut room = [b'a'; 20];
                room[len - 1] = byte;
                assert_eq!(scan_in(&room, len), bit, "{byte:#04x} last of {len}");
                assert_eq!(scan_in(&room, len - 1), 0, "{byte:#04x} just past {len}");
            }
        }
    }

    #[test]
    fn scan_tells_every_byte_value_apart() {
        for byte in 0..=255u8 {
            let want = match byte {
                0 => NUL,
                b'+' | b'#' => WILDCARD,
                0x80.. => NON_ASCII,
                _ => 0,
            };
            for len in [1, 7, 8, 9, 15, 16, 17, 29, 33] {
                for at in [0, len / 2, len - 1] {
                    let mut s = vec![b'a'; len];
                    s[at] = byte;
                    assert_eq!(scan(&s), want, "{byte:#04x} at {at} of {len} bytes");
                    assert_eq!(scan_words(&s), want, "{byte:#04x} at {at} of {len}");
                }
            }
        }
    }

    #[test]
    fn str_rejects_null_and_bad_utf8() {
        assert_eq!(Str::try_from("a\0b"), Err(StrError::NullCharacter));
        assert_eq!(
            Str::from_utf8(Bytes::from_static(&[0xed, 0xa0, 0x80])),
            Err(StrError::NotUtf8)
        );
        assert_eq!(Str::try_from("x".repeat(65_536)), Err(StrError::TooLong));
        assert_eq!(Str::try_from("héllo").unwrap().as_str(), "héllo");
    }
}
