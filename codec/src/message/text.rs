//! UTF-8 text that is a view of a message buffer.

use std::fmt;
use std::ops::Deref;

use bytes::{BufMut, Bytes};
use nom::bytes::complete::take;

use crate::parse::{in_field, Fault, PResult};
use crate::varint;
use crate::violation::{Field, ViolationKind};

/// A string on the wire: UTF-8 checked once, when it is made, and then held as
/// [`Bytes`] so that a decoded string is a view of the input, not a copy.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Text(Bytes);

impl Text {
    /// Text from a static string, without copying.
    pub const fn from_static(s: &'static str) -> Text {
        Text(Bytes::from_static(s.as_bytes()))
    }

    /// Text from bytes, if they are UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Result<Text, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Text(bytes))
    }

    /// The text as a `&str`.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor (`from_static` takes a `&str`, `from_utf8`
        // checks with `std::str::from_utf8`, `From<String>` takes a `String`,
        // and `parse` checks with `std::str::from_utf8`) only stores valid
        // UTF-8, and the `Bytes` inside is immutable and never exposed mutably.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The bytes behind the text.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The bytes behind the text, by value.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Length of the encoded string: varint length, then the bytes.
    pub(crate) fn encoded_len(&self) -> usize {
        varint::encoded_len(self.0.len() as u64) + self.0.len()
    }

    /// Writes the varint length, then the bytes.
    pub(crate) fn encode<B: BufMut>(&self, buf: &mut B) {
        varint::encode(self.0.len() as u64, buf);
        buf.put_slice(&self.0);
    }

    /// Parses a varint length, then that many UTF-8 bytes, as a view of `whole`.
    #[inline]
    pub(crate) fn parse<'a>(whole: &Bytes, input: &'a [u8]) -> PResult<'a, Text> {
        let (rest, len) = varint::u64_field(Field::StringLength)(input)?;
        // A length longer than what is left can never be satisfied; this also
        // keeps the `usize` conversion below in range.
        let len = match usize::try_from(len) {
            Ok(n) if n <= rest.len() => n,
            _ => return Err(Fault::at(ViolationKind::Truncated(Field::StringBody), rest)),
        };
        let (after, raw) = in_field(Field::StringBody, take(len))(rest)?;
        if let Err(e) = std::str::from_utf8(raw) {
            // Reported at the first byte that is not UTF-8.
            return Err(Fault::at(
                ViolationKind::InvalidUtf8(Field::StringBody),
                &raw[e.valid_up_to()..],
            ));
        }
        Ok((after, Text(whole.slice_ref(raw))))
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text(Bytes::from(s.into_bytes()))
    }
}

impl From<&str> for Text {
    /// Copies the string.
    fn from(s: &str) -> Text {
        Text(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
