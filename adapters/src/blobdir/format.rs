//! The blob file format: a small versioned header, then the payload.
//!
//! Every integer is little-endian. The header starts with a fixed part:
//!
//! | offset | bytes | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `CAIRNBLB` |
//! | 8 | 2 | format version, [`VERSION`] |
//! | 10 | 2 | flags: bit 0 an expiry is present, bit 1 a content type is present; others zero |
//! | 12 | 4 | header length: where the payload starts |
//! | 16 | 8 | payload size in bytes |
//! | 24 | 8 | checksum: 64-bit FNV-1a of the whole header with these 8 bytes zeroed |
//! | 32 | 16 | revision |
//! | 48 | 8 | created, milliseconds |
//! | 56 | 8 | expires, milliseconds (zero when absent) |
//! | 64 | 2 | key length |
//! | 66 | 2 | content type length |
//! | 68 | 2 | number of user pairs |
//!
//! then the key bytes, the content type (UTF-8), and each user pair as a 2-byte name length, the
//! name, a 2-byte value length and the value (UTF-8). The payload follows the header directly;
//! the file is exactly `header length + payload size` bytes long.
//!
//! A writer does not know the payload size until the body ends, so it writes the header with
//! size zero, streams the payload, then rewrites the header with the size and checksum before
//! the file is synced and renamed into place. No file at a final path has a placeholder size.

use super::layout::corrupt;
use crate::{Labels, Metadata, MAX_CONTENT_TYPE_LEN, MAX_USER_METADATA_LEN};
use cairn_core::limits::MAX_KEY_LEN;
use cairn_core::{Instant, Key, KeyBuf, Revision};
use std::io::{self, Read};
use std::path::Path;

/// The file's first bytes.
pub(crate) const MAGIC: [u8; 8] = *b"CAIRNBLB";
/// The only format version this code reads and writes. A file of another version is an error,
/// never a guess.
pub(crate) const VERSION: u16 = 1;
/// Length of the fixed part of the header.
pub(crate) const FIXED_LEN: usize = 70;
/// Most user pairs a header holds: every name has at least one byte, and names and values
/// together are at most [`MAX_USER_METADATA_LEN`] bytes.
const MAX_USER_PAIRS: usize = MAX_USER_METADATA_LEN;
/// Longest header: every variable field at its limit, plus two length prefixes per user pair.
/// A header claiming more is corrupt, so a reader never allocates more than this for one.
pub(crate) const MAX_HEADER_LEN: usize =
    FIXED_LEN + MAX_KEY_LEN + MAX_CONTENT_TYPE_LEN + MAX_USER_METADATA_LEN + 4 * MAX_USER_PAIRS;

const FLAG_EXPIRES: u16 = 1 << 0;
const FLAG_CONTENT_TYPE: u16 = 1 << 1;
const KNOWN_FLAGS: u16 = FLAG_EXPIRES | FLAG_CONTENT_TYPE;
const SIZE_AT: usize = 16;
const CHECKSUM_AT: usize = 24;

const _: () = assert!(
    MAX_HEADER_LEN <= u32::MAX as usize,
    "the length field is 4 bytes"
);
// Variable lengths and the pair count are stored in 2 bytes each.
const _: () = assert!(MAX_KEY_LEN <= u16::MAX as usize);
const _: () = assert!(MAX_CONTENT_TYPE_LEN <= u16::MAX as usize);
const _: () = assert!(MAX_USER_METADATA_LEN <= u16::MAX as usize);
const _: () = assert!(MAX_USER_PAIRS <= u16::MAX as usize);

/// A decoded header: which blob the file holds and its metadata, `size` included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub key: KeyBuf,
    pub revision: Revision,
    pub meta: Metadata,
    /// Where the payload starts.
    pub len: u64,
}

/// A header being written: encoded once, patched with the size when the body has ended.
pub(crate) struct Draft {
    bytes: Vec<u8>,
}

impl Draft {
    /// Encodes the header of blob `key`@`revision` with size zero. Metadata over the limits of
    /// [`PutOptions`](crate::PutOptions) is refused (the caller's fault) so every header written
    /// is one a reader accepts.
    pub(crate) fn new(key: &Key, revision: Revision, meta: &Metadata) -> io::Result<Draft> {
        let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, why.to_string());
        let content_type = meta.content_type().map(str::as_bytes);
        if content_type.is_some_and(|c| c.len() > MAX_CONTENT_TYPE_LEN) {
            return Err(invalid("blob directory: content type too long"));
        }
        let user_len: usize = meta.user().iter().map(|(n, v)| n.len() + v.len()).sum();
        if user_len > MAX_USER_METADATA_LEN || meta.user().iter().any(|(n, _)| n.is_empty()) {
            return Err(invalid(
                "blob directory: user metadata too large or unnamed",
            ));
        }
        let mut flags = 0;
        if meta.expires.is_some() {
            flags |= FLAG_EXPIRES;
        }
        if content_type.is_some() {
            flags |= FLAG_CONTENT_TYPE;
        }
        let content_type = content_type.unwrap_or_default();
        let mut b = Vec::with_capacity(FIXED_LEN + key.as_bytes().len() + content_type.len());
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&flags.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // header length, below
        b.extend_from_slice(&0u64.to_le_bytes()); // size, patched
        b.extend_from_slice(&0u64.to_le_bytes()); // checksum, patched
        b.extend_from_slice(&revision.0.to_le_bytes());
        b.extend_from_slice(&meta.created.as_millis().to_le_bytes());
        let expires = meta.expires.map_or(0, Instant::as_millis);
        b.extend_from_slice(&expires.to_le_bytes());
        // Each length was checked against a limit that fits in u16 (asserted above).
        b.extend_from_slice(&(key.as_bytes().len() as u16).to_le_bytes());
        b.extend_from_slice(&(content_type.len() as u16).to_le_bytes());
        b.extend_from_slice(&(meta.user().len() as u16).to_le_bytes());
        debug_assert_eq!(b.len(), FIXED_LEN);
        b.extend_from_slice(key.as_bytes());
        b.extend_from_slice(content_type);
        for (name, value) in meta.user() {
            b.extend_from_slice(&(name.len() as u16).to_le_bytes());
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(&(value.len() as u16).to_le_bytes());
            b.extend_from_slice(value.as_bytes());
        }
        assert!(
            b.len() <= MAX_HEADER_LEN,
            "every field was checked against its limit"
        );
        let len = b.len() as u32;
        b[12..16].copy_from_slice(&len.to_le_bytes());
        let mut draft = Draft { bytes: b };
        draft.set_size(0);
        Ok(draft)
    }

    /// Records the payload size and seals the header with its checksum.
    pub(crate) fn set_size(&mut self, size: u64) {
        let b = &mut self.bytes;
        b[SIZE_AT..SIZE_AT + 8].copy_from_slice(&size.to_le_bytes());
        b[CHECKSUM_AT..CHECKSUM_AT + 8].fill(0);
        let sum = checksum(b);
        b[CHECKSUM_AT..CHECKSUM_AT + 8].copy_from_slice(&sum.to_le_bytes());
    }

    /// The encoded header.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// 64-bit FNV-1a: catches torn or flipped header bytes. Not a defence against tampering, which a
/// local directory cannot offer anyway.
fn checksum(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Header {
    /// Reads and checks the header at the start of `file`, leaving the position at the payload.
    /// Every way the bytes can be wrong is an `InvalidData` error naming `path`, never a panic.
    pub(crate) fn read(file: &mut impl Read, path: &Path) -> io::Result<Header> {
        let mut fixed = [0u8; FIXED_LEN];
        read_exact(file, &mut fixed, path)?;
        if fixed[..8] != MAGIC {
            return Err(corrupt(path, "not a cairn blob file (bad magic bytes)"));
        }
        let version = u16::from_le_bytes([fixed[8], fixed[9]]);
        if version != VERSION {
            return Err(corrupt(
                path,
                format_args!(
                    "unsupported blob format version {version} (this build reads {VERSION})"
                ),
            ));
        }
        let len = u32::from_le_bytes([fixed[12], fixed[13], fixed[14], fixed[15]]) as usize;
        if !(FIXED_LEN..=MAX_HEADER_LEN).contains(&len) {
            return Err(corrupt(
                path,
                format_args!("header length {len} out of bounds"),
            ));
        }
        let mut bytes = vec![0u8; len];
        bytes[..FIXED_LEN].copy_from_slice(&fixed);
        read_exact(file, &mut bytes[FIXED_LEN..], path)?;
        Header::decode(&mut bytes, path)
    }

    /// Decodes a whole header whose length field has been checked against `bytes.len()`.
    fn decode(bytes: &mut [u8], path: &Path) -> io::Result<Header> {
        let stored = u64::from_le_bytes(array(&bytes[CHECKSUM_AT..CHECKSUM_AT + 8]));
        bytes[CHECKSUM_AT..CHECKSUM_AT + 8].fill(0);
        if checksum(bytes) != stored {
            return Err(corrupt(path, "header checksum mismatch"));
        }
        let mut r = Cursor {
            bytes: &*bytes,
            at: 10,
            path,
        };
        let flags = r.u16()?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(corrupt(
                path,
                format_args!("unknown header flags {flags:#06x}"),
            ));
        }
        let len = u64::from(r.u32()?);
        let size = r.u64()?;
        r.u64()?; // checksum, verified above
        let revision = Revision(u128::from_le_bytes(array(r.take(16)?)));
        let created = Instant::from_millis(r.u64()?);
        let expires = Instant::from_millis(r.u64()?);
        let key_len = r.u16()? as usize;
        let content_type_len = r.u16()? as usize;
        let pairs = r.u16()? as usize;
        debug_assert_eq!(r.at, FIXED_LEN);
        let key = KeyBuf::new(r.take(key_len)?).map_err(|e| corrupt(path, e))?;
        let content_type = r.string(content_type_len)?;
        if flags & FLAG_CONTENT_TYPE == 0 && !content_type.is_empty() {
            return Err(corrupt(path, "content type present but not flagged"));
        }
        let mut user = Vec::with_capacity(pairs.min(MAX_USER_PAIRS));
        for _ in 0..pairs {
            let name_len = r.u16()? as usize;
            let name = r.string(name_len)?;
            let value_len = r.u16()? as usize;
            user.push((name, r.string(value_len)?));
        }
        if r.at != bytes.len() {
            return Err(corrupt(path, "trailing bytes in header"));
        }
        Ok(Header {
            key,
            revision,
            meta: Metadata {
                size,
                created,
                expires: (flags & FLAG_EXPIRES != 0).then_some(expires),
                labels: Labels::shared(
                    (flags & FLAG_CONTENT_TYPE != 0).then_some(content_type),
                    user,
                ),
            },
            len,
        })
    }
}

fn read_exact(file: &mut impl Read, buf: &mut [u8], path: &Path) -> io::Result<()> {
    file.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => corrupt(path, "truncated header"),
        _ => super::layout::context("reading header of", path)(e),
    })
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    bytes
        .try_into()
        .unwrap_or_else(|_| unreachable!("callers slice exactly N bytes"))
}

/// Reads fields in order, each a bounds-checked slice of the header.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        let bytes: &'a [u8] = self.bytes;
        let field = self
            .at
            .checked_add(n)
            .and_then(|end| bytes.get(self.at..end))
            .ok_or_else(|| corrupt(self.path, "header field runs past the header length"))?;
        self.at += n;
        Ok(field)
    }
    fn u16(&mut self) -> io::Result<u16> {
        self.take(2).map(|b| u16::from_le_bytes(array(b)))
    }
    fn u32(&mut self) -> io::Result<u32> {
        self.take(4).map(|b| u32::from_le_bytes(array(b)))
    }
    fn u64(&mut self) -> io::Result<u64> {
        self.take(8).map(|b| u64::from_le_bytes(array(b)))
    }
    fn string(&mut self, n: usize) -> io::Result<String> {
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| corrupt(self.path, "metadata is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/data/blobs/00/x.blob";

    fn meta() -> Metadata {
        Metadata {
            size: 0,
            created: Instant::from_millis(1_700_000_000_000),
            expires: Some(Instant::from_millis(1_700_000_060_000)),
            labels: Labels::shared(
                Some("text/plain".into()),
                vec![
                    ("owner".into(), "ada".into()),
                    ("empty".into(), String::new()),
                ],
            ),
        }
    }

    fn draft(meta: &Metadata) -> Draft {
        let key = Key::new(b"k\x01/../\xff").unwrap();
        Draft::new(key, Revision(u128::MAX - 5), meta).unwrap()
    }

    fn read(bytes: &[u8]) -> io::Result<Header> {
        Header::read(&mut &bytes[..], Path::new(PATH))
    }

    #[test]
    fn a_header_round_trips_with_its_size() {
        for meta in [meta(), Metadata::default()] {
            let mut d = draft(&meta);
            d.set_size(12_345);
            let h = read(d.bytes()).unwrap();
            assert_eq!(h.key.as_bytes(), b"k\x01/../\xff");
            assert_eq!(h.revision, Revision(u128::MAX - 5));
            assert_eq!(h.len, d.bytes().len() as u64);
            assert_eq!(
                h.meta,
                Metadata {
                    size: 12_345,
                    ..meta
                }
            );
        }
    }

    #[test]
    fn an_empty_content_type_is_kept_apart_from_none() {
        let m = Metadata {
            labels: Labels::shared(Some(String::new()), Vec::new()),
            ..Metadata::default()
        };
        assert_eq!(
            read(draft(&m).bytes()).unwrap().meta.content_type(),
            Some("")
        );
    }

    #[test]
    fn the_largest_metadata_fits_and_more_is_refused() {
        let key = Key::new(&[b'k'; MAX_KEY_LEN]).unwrap();
        let big = Metadata {
            labels: Labels::shared(
                Some("c".repeat(MAX_CONTENT_TYPE_LEN)),
                (0..MAX_USER_METADATA_LEN / 2)
                    .map(|_| ("n".into(), "v".into()))
                    .collect(),
            ),
            ..meta()
        };
        let d = Draft::new(key, Revision(1), &big).unwrap();
        assert!(d.bytes().len() <= MAX_HEADER_LEN);
        assert_eq!(
            read(d.bytes()).unwrap().meta.user().len(),
            MAX_USER_METADATA_LEN / 2
        );

        let too_long = Metadata {
            labels: Labels::shared(Some("c".repeat(MAX_CONTENT_TYPE_LEN + 1)), Vec::new()),
            ..meta()
        };
        let too_many = Metadata {
            labels: Labels::shared(None, vec![("n".into(), "v".repeat(MAX_USER_METADATA_LEN))]),
            ..meta()
        };
        for m in [too_long, too_many] {
            let err = Draft::new(key, Revision(1), &m).err().unwrap();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
    }

    /// Every truncation and every single flipped byte is an `InvalidData` error, never a panic
    /// and never a header that decodes.
    #[test]
    fn every_truncation_and_every_flipped_byte_is_an_error() {
        let mut d = draft(&meta());
        d.set_size(99);
        let good = d.bytes().to_vec();
        for cut in 0..good.len() {
            let err = read(&good[..cut]).unwrap_err();
            assert_eq!(
                err.kind(),
                io::ErrorKind::InvalidData,
                "cut at {cut}: {err}"
            );
            assert!(err.to_string().contains(PATH), "{err}");
        }
        for at in 0..good.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[at] ^= flip;
                let err = read(&bad).unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::InvalidData, "byte {at}: {err}");
            }
        }
    }

    #[test]
    fn wrong_magic_version_length_and_flags_are_named() {
        let good = draft(&meta()).bytes().to_vec();
        let reseal = |mut b: Vec<u8>| {
            b[CHECKSUM_AT..CHECKSUM_AT + 8].fill(0);
            let sum = checksum(&b);
            b[CHECKSUM_AT..CHECKSUM_AT + 8].copy_from_slice(&sum.to_le_bytes());
            b
        };
        let mut v2 = good.clone();
        v2[8] = 2;
        assert!(read(&v2).unwrap_err().to_string().contains("version 2"));
        let mut huge = good.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(read(&huge)
            .unwrap_err()
            .to_string()
            .contains("out of bounds"));
        let mut flags = good.clone();
        flags[10] |= 0x80;
        assert!(read(&reseal(flags))
            .unwrap_err()
            .to_string()
            .contains("flags"));
        let mut key_len = good.clone();
        key_len[64..66].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(read(&reseal(key_len))
            .unwrap_err()
            .to_string()
            .contains("runs past"));
        let mut no_key = good.clone();
        no_key[64..66].copy_from_slice(&0u16.to_le_bytes());
        assert!(read(&reseal(no_key))
            .unwrap_err()
            .to_string()
            .contains("key"));
        assert!(read(&[b'G'; 2 * FIXED_LEN])
            .unwrap_err()
            .to_string()
            .contains("magic"));
    }
}
