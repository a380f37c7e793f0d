//! How values become SQLite columns and back: object metadata as a small versioned binary blob,
//! revisions and change ids as 16 big-endian bytes (so byte order is numeric order), instants and
//! sizes as integers. Decoding never trusts the file: anything malformed is a [`Corrupt`] error,
//! never a panic.

use crate::{Labels, Metadata};
use cairn_core::Instant;

/// The first byte of every encoded metadata blob.
const META_VERSION: u8 = 1;

/// Why stored bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Corrupt(pub String);

/// Encodes the parts of `meta` that have no column of their own (`size` and `expires` do).
///
/// Layout, version 1 (integers little-endian):
/// `01 | created: u64 | has_content_type: u8 | [len: u32, utf-8]? | pairs: u32 | (len: u32, utf-8,
/// len: u32, utf-8) × pairs`.
pub(crate) fn encode_meta(meta: &Metadata) -> Vec<u8> {
    let strings: usize = meta.content_type().map_or(0, str::len)
        + meta
            .user()
            .iter()
            .map(|(k, v)| k.len() + v.len() + 8)
            .sum::<usize>();
    let mut out = Vec::with_capacity(1 + 8 + 1 + 4 + 4 + strings);
    out.push(META_VERSION);
    out.extend_from_slice(&meta.created.as_millis().to_le_bytes());
    match meta.content_type() {
        Some(ct) => {
            out.push(1);
            put_str(&mut out, ct);
        }
        None => out.push(0),
    }
    put_len(&mut out, meta.user().len());
    for (name, value) in meta.user() {
        put_str(&mut out, name);
        put_str(&mut out, value);
    }
    out
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Content types and user metadata are capped far below 4 GiB (`MAX_USER_METADATA_LEN`).
    let len = u32::try_from(len).expect("metadata strings are validated to be small");
    out.extend_from_slice(&len.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// Decodes a metadata blob written by [`encode_meta`], with the row's `size` and `expires`.
pub(crate) fn decode_meta(
    bytes: &[u8],
    size: u64,
    expires: Option<Instant>,
) -> Result<Metadata, Corrupt> {
    let mut r = Reader { bytes };
    let version = r.u8()?;
    if version != META_VERSION {
        return Err(Corrupt(format!(
            "metadata format version {version} is unknown (this build reads {META_VERSION})"
        )));
    }
    let created = Instant::from_millis(u64::from_le_bytes(r.array()?));
    let content_type = match r.u8()? {
        0 => None,
        1 => Some(r.string()?),
        flag => return Err(Corrupt(format!("bad content-type flag {flag} in metadata"))),
    };
    let pairs = r.u32()? as usize;
    // Each pair takes at least 8 bytes, so a count beyond that is damage, not a reason to
    // reserve gigabytes.
    if pairs > r.bytes.len() / 8 {
        return Err(Corrupt(format!(
            "metadata claims {pairs} user pairs in {} bytes",
            r.bytes.len()
        )));
    }
    let mut user = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        let name = r.string()?;
        let value = r.string()?;
        user.push((name, value));
    }
    if !r.bytes.is_empty() {
        return Err(Corrupt(format!(
            "{} unexpected bytes after the metadata",
            r.bytes.len()
        )));
    }
    Ok(Metadata {
        size,
        created,
        expires,
        labels: Labels::shared(content_type, user),
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        if self.bytes.len() < n {
            return Err(Corrupt(format!(
                "metadata is truncated: {n} bytes wanted, {} left",
                self.bytes.len()
            )));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Corrupt> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, Corrupt> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, Corrupt> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, Corrupt> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| Corrupt("a metadata string is not UTF-8".into()))
    }
}

/// A revision or change id as stored: 16 big-endian bytes, so SQLite's bytewise BLOB order is the
/// ids' numeric order.
pub(crate) fn id_to_blob(id: u128) -> [u8; 16] {
    id.to_be_bytes()
}

/// The inverse of [`id_to_blob`].
pub(crate) fn id_from_blob(bytes: &[u8]) -> Result<u128, Corrupt> {
    <[u8; 16]>::try_from(bytes)
        .map(u128::from_be_bytes)
        .map_err(|_| Corrupt(format!("an id has {} bytes instead of 16", bytes.len())))
}

/// An instant as an SQLite integer. Instants past `i64::MAX` milliseconds (292 million years)
/// are stored as `i64::MAX`: both mean "never" in practice, and SQL comparisons stay correct.
pub(crate) fn instant_to_sql(at: Instant) -> i64 {
    i64::try_from(at.as_millis()).unwrap_or(i64::MAX)
}

/// The inverse of [`instant_to_sql`].
pub(crate) fn instant_from_sql(millis: i64) -> Result<Instant, Corrupt> {
    u64::try_from(millis)
        .map(Instant::from_millis)
        .map_err(|_| Corrupt(format!("negative instant {millis}")))
}

/// A size as an SQLite integer. No object reaches 2^63 bytes; one that claims to is refused.
pub(crate) fn size_to_sql(size: u64) -> Result<i64, Corrupt> {
    i64::try_from(size).map_err(|_| Corrupt(format!("size {size} does not fit SQLite")))
}

/// The inverse of [`size_to_sql`].
pub(crate) fn size_from_sql(size: i64) -> Result<u64, Corrupt> {
    u64::try_from(size).map_err(|_| Corrupt(format!("negative size {size}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Metadata {
        Metadata {
            size: 42,
            created: Instant::from_millis(1_700_000_000_123),
            expires: Some(Instant::from_millis(1_700_000_060_000)),
            labels: Labels::shared(
                Some("text/plain; charset=utf-8".into()),
                vec![("owner".into(), "ada".into()), ("é".into(), String::new())],
            ),
        }
    }

    #[test]
    fn metadata_round_trips_with_its_columns() {
        for m in [meta(), Metadata::default()] {
            let bytes = encode_meta(&m);
            assert_eq!(decode_meta(&bytes, m.size, m.expires), Ok(m));
        }
    }

    #[test]
    fn every_truncation_and_every_single_byte_flip_is_an_error_or_a_value_never_a_panic() {
        let bytes = encode_meta(&meta());
        for len in 0..bytes.len() {
            assert!(decode_meta(&bytes[..len], 0, None).is_err(), "cut at {len}");
        }
        for i in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[i] ^= flip;
                let _ = decode_meta(&damaged, 0, None);
            }
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode_meta(&trailing, 0, None).is_err());
    }

    #[test]
    fn a_huge_pair_count_is_refused_before_allocating() {
        let mut bytes = encode_meta(&Metadata::default());
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_meta(&bytes, 0, None)
            .unwrap_err()
            .0
            .contains("pairs"));
    }

    #[test]
    fn ids_sort_bytewise_like_numbers_and_reject_bad_lengths() {
        let ids = [0u128, 1, 255, 256, 1 << 80, u128::MAX - 1, u128::MAX];
        for w in ids.windows(2) {
            assert!(id_to_blob(w[0]) < id_to_blob(w[1]));
        }
        assert_eq!(id_from_blob(&id_to_blob(1 << 100)), Ok(1 << 100));
        assert!(id_from_blob(&[0; 15]).is_err());
    }

    #[test]
    fn far_future_instants_clamp_and_negative_columns_are_corrupt() {
        assert_eq!(instant_to_sql(Instant::from_millis(u64::MAX)), i64::MAX);
        assert!(instant_from_sql(-1).is_err());
        assert!(size_from_sql(-1).is_err());
        assert!(size_to_sql(u64::MAX).is_err());
    }
}
