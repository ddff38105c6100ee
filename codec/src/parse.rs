//! The nom plumbing shared by every decoder: one error type that carries a
//! [`ViolationKind`] and the input position it was found at.
//!
//! Parsers work on `&[u8]` sub-slices of one buffer; a fault records the slice
//! it stopped at, and [`offset_in`] turns that into a byte offset once, at the
//! top, so no parser computes offsets itself.

use nom::error::{ErrorKind, ParseError};

use crate::violation::{Field, Violation, ViolationKind};

/// A parse fault: what is wrong, and the remaining input where it was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fault<'a> {
    pub kind: ViolationKind,
    pub at: &'a [u8],
}

/// The result type of every parser in the crate.
pub(crate) type PResult<'a, T> = nom::IResult<&'a [u8], T, Fault<'a>>;

impl<'a> Fault<'a> {
    /// A nom error carrying `kind` at the start of `at`.
    pub fn at(kind: ViolationKind, at: &'a [u8]) -> nom::Err<Fault<'a>> {
        nom::Err::Error(Fault { kind, at })
    }

    /// The violation, with its offset counted from the start of `whole`.
    pub fn violation(self, whole: &[u8]) -> Violation {
        Violation::new(self.kind, offset_in(whole, self.at))
    }
}

impl<'a> ParseError<&'a [u8]> for Fault<'a> {
    /// nom's own parsers (`take`, `be_u32`) fail only for want of input.
    fn from_error_kind(input: &'a [u8], _kind: ErrorKind) -> Self {
        Fault {
            kind: ViolationKind::Truncated(Field::Body),
            at: input,
        }
    }

    fn append(_input: &'a [u8], _kind: ErrorKind, other: Self) -> Self {
        other
    }
}

/// Unwraps a nom error; every parser here is a `complete` parser, so
/// `Incomplete` stands for input that ended early.
pub(crate) trait IntoFault<'a> {
    fn into_fault(self) -> Fault<'a>;
}

impl<'a> IntoFault<'a> for nom::Err<Fault<'a>> {
    fn into_fault(self) -> Fault<'a> {
        match self {
            nom::Err::Error(f) | nom::Err::Failure(f) => f,
            nom::Err::Incomplete(_) => Fault {
                kind: ViolationKind::Truncated(Field::Body),
                at: &[],
            },
        }
    }
}

/// Relabels nom's generic truncation as truncation of `field`.
pub(crate) fn in_field<'a, O>(
    field: Field,
    mut parser: impl FnMut(&'a [u8]) -> PResult<'a, O>,
) -> impl FnMut(&'a [u8]) -> PResult<'a, O> {
    move |input| {
        parser(input).map_err(|e| {
            e.map(|mut f| {
                if f.kind == ViolationKind::Truncated(Field::Body) {
                    f.kind = ViolationKind::Truncated(field);
                }
                f
            })
        })
    }
}

/// The offset of `part` inside `whole`; `whole.len()` for a slice that does not
/// start inside it (an empty slice at the end, or a detached empty slice).
pub(crate) fn offset_in(whole: &[u8], part: &[u8]) -> usize {
    let start = whole.as_ptr() as usize;
    let at = part.as_ptr() as usize;
    match at.checked_sub(start) {
        Some(off) if off <= whole.len() => off,
        _ => whole.len(),
    }
}

/// Fails with [`ViolationKind::TrailingBytes`] unless `rest` is empty.
pub(crate) fn expect_end(rest: &[u8]) -> Result<(), nom::Err<Fault<'_>>> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(Fault::at(ViolationKind::TrailingBytes, rest))
    }
}
