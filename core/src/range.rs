//! Byte ranges for partial reads, resolved against an object's size by the core so that every
//! tier agrees on what a range means.

use core::fmt;

/// A requested byte range, with HTTP `Range` semantics.
///
/// ```
/// use cairn_core::{ByteRange, Span};
/// assert_eq!(ByteRange::Inclusive { start: 2, end: 99 }.resolve(10), Ok(Span { start: 2, end: 10 }));
/// assert_eq!(ByteRange::Suffix(3).resolve(10), Ok(Span { start: 7, end: 10 }));
/// assert!(ByteRange::From(10).resolve(10).is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// From `start` to the end.
    From(u64),
    /// From `start` to `end`, both included; `end` past the object is clamped.
    Inclusive {
        /// First byte.
        start: u64,
        /// Last byte.
        end: u64,
    },
    /// The last `n` bytes (all of them if the object is shorter).
    Suffix(u64),
}

/// A resolved, non-empty, in-bounds range: bytes `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Span {
    /// Number of bytes in the span (none for a span built by hand with `end` before `start`:
    /// the fields are public, and a caller's mistake must not overflow).
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Always false: a resolved span is never empty. Present for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// The requested range selects no byte of the object. The caller's fault; nothing was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeNotSatisfiable {
    /// The object's size.
    pub size: u64,
}

impl ByteRange {
    /// Resolves the range against an object of `size` bytes.
    pub fn resolve(self, size: u64) -> Result<Span, RangeNotSatisfiable> {
        let span = match self {
            ByteRange::From(start) => Span { start, end: size },
            ByteRange::Inclusive { start, end } if end >= start => Span {
                start,
                end: end.saturating_add(1).min(size),
            },
            ByteRange::Inclusive { .. } => return Err(RangeNotSatisfiable { size }),
            ByteRange::Suffix(n) => Span {
                start: size.saturating_sub(n),
                end: size,
            },
        };
        if span.start >= size || span.is_empty() {
            return Err(RangeNotSatisfiable { size });
        }
        Ok(span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_built_backwards_by_hand_is_empty_rather_than_an_overflow() {
        assert_eq!(Span { start: 5, end: 2 }.len(), 0);
        assert_eq!(Span { start: 2, end: 5 }.len(), 3);
    }
}
