//! Object keys: validated once at the edge, then stored inline (no allocation).

use crate::limits::MAX_KEY_LEN;
use core::fmt;

/// A validated object key: 1 to [`MAX_KEY_LEN`] bytes, no NUL byte.
///
/// Keys are bytes, not paths: backends must never turn one into a file path directly.
///
/// ```
/// use cairn_core::{Key, KeyError};
/// let key = Key::new(b"photos/2026/cat.jpg").unwrap();
/// assert_eq!(key.as_bytes(), b"photos/2026/cat.jpg");
/// assert_eq!(Key::new(b""), Err(KeyError::Empty));
/// assert_eq!(Key::new(b"a\0b"), Err(KeyError::ContainsNul { at: 1 }));
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    bytes: heapless::Vec<u8, MAX_KEY_LEN>,
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
    /// Validates and copies `bytes` into a key.
    pub fn new(bytes: &[u8]) -> Result<Key, KeyError> {
        if bytes.is_empty() {
            return Err(KeyError::Empty);
        }
        if bytes.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong { len: bytes.len() });
        }
        if let Some(at) = bytes.iter().position(|&b| b == 0) {
            return Err(KeyError::ContainsNul { at });
        }
        let bytes = heapless::Vec::from_slice(bytes)
            .unwrap_or_else(|()| unreachable!("length was checked against MAX_KEY_LEN"));
        Ok(Key { bytes })
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The key as UTF-8, if it is.
    pub fn as_str(&self) -> Option<&str> {
        core::str::from_utf8(&self.bytes).ok()
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
