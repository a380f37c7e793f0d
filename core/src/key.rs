//! Object keys: validated once at the edge, then borrowed. The caller owns the bytes; a machine
//! keeps its own copy ([`KeyBuf`], inline, no allocation) only when it outlives the call that
//! started it (cleanup, recovery).

use crate::limits::MAX_KEY_LEN;
use core::borrow::Borrow;
use core::fmt;
use core::ops::Deref;

/// A validated object key: 1 to [`MAX_KEY_LEN`] bytes, no NUL byte. Borrowed, like `str`.
///
/// Keys are bytes, not paths: backends must never turn one into a file path directly.
///
/// ```
/// use cairn_core::{Key, KeyError};
/// let key = Key::new(b"photos/2026/cat.jpg").unwrap();
/// assert_eq!(key.as_bytes(), b"photos/2026/cat.jpg");
/// assert_eq!(Key::new(b"").unwrap_err(), KeyError::Empty);
/// assert_eq!(Key::new(b"a\0b").unwrap_err(), KeyError::ContainsNul { at: 1 });
/// ```
#[derive(PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Key {
    bytes: [u8],
}

/// Why a key was rejected. Always the caller's fault; nothing was read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// The key has no bytes.
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`].
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The key contains a NUL byte at this offset.
    ContainsNul {
        /// Offset of the first NUL byte.
        at: usize,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Empty => f.write_str("key is empty"),
            KeyError::TooLong { len } => {
                write!(f, "key is {len} bytes long; the limit is {MAX_KEY_LEN}")
            }
            KeyError::ContainsNul { at } => write!(f, "key contains a NUL byte at offset {at}"),
        }
    }
}

impl Key {
    /// Validates `bytes` as a key, without copying them.
    #[inline]
    pub fn new(bytes: &[u8]) -> Result<&Key, KeyError> {
        if bytes.is_empty() {
            return Err(KeyError::Empty);
        }
        if bytes.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong { len: bytes.len() });
        }
        // The position is only wanted on failure.
        if has_nul(bytes) {
            let at = bytes.iter().position(|&b| b == 0).unwrap_or_default();
            return Err(KeyError::ContainsNul { at });
        }
        Ok(Key::new_unchecked(bytes))
    }

    #[inline]
    fn new_unchecked(bytes: &[u8]) -> &Key {
        // SAFETY: `Key` is `repr(transparent)` over `[u8]`, so the two references have the same
        // layout and metadata; the lifetime is carried over unchanged. Callers have validated.
        #[allow(unsafe_code)]
        unsafe {
            &*(bytes as *const [u8] as *const Key)
        }
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The key as UTF-8, if it is.
    pub fn as_str(&self) -> Option<&str> {
        core::str::from_utf8(&self.bytes).ok()
    }

    /// An owned copy, stored inline.
    pub fn to_key_buf(&self) -> KeyBuf {
        let bytes = heapless::Vec::from_slice(&self.bytes)
            .unwrap_or_else(|()| unreachable!("a Key is at most MAX_KEY_LEN bytes"));
        KeyBuf { bytes }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Quoted, with non-printable bytes escaped, so transcripts stay readable and unambiguous.
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for chunk in self.bytes.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c == '"' || c == '\\' || c.is_control() {
                    write!(f, "{}", c.escape_default())?;
                } else {
                    write!(f, "{c}")?;
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        f.write_str("\"")
    }
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// An owned key, stored inline (no allocation): what machines keep when they outlive the call
/// that started them, and what change-log scans hand back.
///
/// ```
/// use cairn_core::{Key, KeyBuf};
/// let owned: KeyBuf = Key::new(b"k").unwrap().to_key_buf();
/// let borrowed: &Key = &owned;
/// assert_eq!(borrowed.as_bytes(), b"k");
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyBuf {
    bytes: heapless::Vec<u8, MAX_KEY_LEN>,
}

/// Whether `bytes` holds a zero byte. Keys are short: up to 64 bytes, eight at a time as words
/// (a few instructions where the vectorised `memchr` spends about fifty on setup); longer ones go
/// to `memchr`.
#[inline]
fn has_nul(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // Non-zero exactly when some byte of `w` is zero.
    let zero_in = |w: u64| w.wrapping_sub(ONES) & !w & HIGHS != 0;
    let word = |at: usize| {
        let mut w = [0; 8];
        w.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let n = bytes.len();
    if n < 8 {
        // A plain loop: `contains` would call `memchr`, the setup this avoids.
        #[allow(clippy::manual_contains)]
        return bytes.iter().any(|&b| b == 0);
    }
    if n > 64 {
        return bytes.contains(&0);
    }
    let mut at = 0;
    while at + 8 < n {
        if zero_in(word(at)) {
            return true;
        }
        at += 8;
    }
    // The last eight bytes, overlapping the words already checked.
    zero_in(word(n - 8))
}

impl KeyBuf {
    /// Validates and copies `bytes`.
    pub fn new(bytes: &[u8]) -> Result<KeyBuf, KeyError> {
        Key::new(bytes).map(Key::to_key_buf)
    }
}

impl Deref for KeyBuf {
    type Target = Key;
    fn deref(&self) -> &Key {
        Key::new_unchecked(&self.bytes)
    }
}

impl Borrow<Key> for KeyBuf {
    fn borrow(&self) -> &Key {
        self
    }
}

impl AsRef<Key> for KeyBuf {
    fn as_ref(&self) -> &Key {
        self
    }
}

impl fmt::Debug for KeyBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl fmt::Display for KeyBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

#[cfg(feature = "alloc")]
impl alloc::borrow::ToOwned for Key {
    type Owned = KeyBuf;
    fn to_owned(&self) -> KeyBuf {
        self.to_key_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nul_is_found_at_every_position_of_every_length() {
        let mut bytes = [b'k'; 130];
        for len in 1..=bytes.len() {
            assert!(!has_nul(&bytes[..len]), "no NUL in {len} bytes");
            for at in 0..len {
                bytes[at] = 0;
                assert!(has_nul(&bytes[..len]), "NUL at {at} of {len}");
                // A byte with the high bit set beside it must not hide or fake one.
                bytes[at] = 0x80;
                assert!(!has_nul(&bytes[..len]), "0x80 at {at} of {len}");
                bytes[at] = b'k';
            }
        }
        assert_eq!(
            Key::new(b"ab\0cdefghijk"),
            Err(KeyError::ContainsNul { at: 2 })
        );
    }
}
