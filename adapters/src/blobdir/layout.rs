//! Where every file of a blob directory lives, and how names are made and read back.
//!
//! Keys never become paths. A blob's path is built from two fixed-width hex numbers only: a
//! 128-bit hash of the key bytes and the revision. Whatever bytes a key holds (`..`, `/`,
//! control bytes, invalid UTF-8), the path has the same shape:
//!
//! ```text
//! {root}/LAYOUT                                        layout version, checked on open
//! {root}/tmp/{revision}-{pid}-{seq}.partial            writes in progress (or crash leftovers)
//! {root}/blobs/{hh}/{keyhash}-{revision}.blob          one finished blob
//! {root}/blobs/{hh}/{keyhash}-{revision}-{expires}.expires
//!                                                      empty marker of a blob that expires
//! ```
//!
//! `hh` is the top byte of the key hash (256 fan-out directories, all made when the directory is
//! opened), `keyhash` and `revision` are 32 lowercase hex digits, `expires` is 16 (milliseconds).
//! Every revision of a key lands in the same fan-out directory.

use cairn_core::{Instant, Key, Revision};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Number of fan-out directories under `blobs/`: one per value of the key hash's top byte.
/// 256 keeps each directory near 4 000 entries at a million blobs, well within what ext4's and
/// XFS's hashed directories look up in constant time, while opening makes them all in a blink.
pub(crate) const FANOUT_DIRS: usize = 256;

/// What `{root}/LAYOUT` holds. A different layout is refused rather than misread.
pub(crate) const LAYOUT_TAG: &str = "cairn blobdir layout 1\n";

/// Longest name this module makes: `{keyhash}-{revision}-{expires}.expires`.
const MAX_NAME_LEN: usize = 32 + 1 + 32 + 1 + 16 + ".expires".len();
// Every file system cairn targets allows names of 255 bytes.
const _: () = assert!(MAX_NAME_LEN <= 255);

const BLOB_SUFFIX: &str = ".blob";
const MARKER_SUFFIX: &str = ".expires";
pub(crate) const TEMP_SUFFIX: &str = ".partial";

/// The fixed paths of one blob directory.
#[derive(Debug)]
pub(crate) struct Layout {
    root: PathBuf,
    blobs: PathBuf,
    tmp: PathBuf,
}

/// A key's 128-bit hash: FNV-1a over the bytes, then a bijective finaliser so that keys differing
/// only in their last byte still spread over all fan-out directories.
///
/// Not cryptographic, and it need not be: the hash only spreads files over directories. Two keys
/// with the same hash share a directory but never a file, because file names also carry the
/// revision, and every file's header names its key, which each read checks.
pub(crate) fn key_hash(key: &Key) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut h = OFFSET;
    for &b in key.as_bytes() {
        h = (h ^ u128::from(b)).wrapping_mul(PRIME);
    }
    // xor-shift and odd multipliers are each invertible, so this adds no collisions.
    h ^= h >> 71;
    h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    h ^= h >> 67;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9_94d0_49bb_1331_11eb);
    h ^ (h >> 64)
}

/// What a name found in a fan-out directory says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A finished blob.
    Blob { key_hash: u128, revision: Revision },
    /// The expiry marker of a blob (which may already be gone).
    Marker {
        key_hash: u128,
        revision: Revision,
        expires: Instant,
    },
}

impl Entry {
    /// Reads a name made by [`Layout::blob_path`] or [`Layout::marker_path`]; anything else is
    /// `None`.
    pub(crate) fn parse(name: &str) -> Option<Entry> {
        if let Some(stem) = name.strip_suffix(BLOB_SUFFIX) {
            let (key_hash, revision) = stem.split_once('-')?;
            return Some(Entry::Blob {
                key_hash: hex(key_hash, 32)?,
                revision: Revision(hex(revision, 32)?),
            });
        }
        let stem = name.strip_suffix(MARKER_SUFFIX)?;
        let mut parts = stem.splitn(3, '-');
        let key_hash = hex(parts.next()?, 32)?;
        let revision = Revision(hex(parts.next()?, 32)?);
        let expires = Instant::from_millis(u64::try_from(hex(parts.next()?, 16)?).ok()?);
        Some(Entry::Marker {
            key_hash,
            revision,
            expires,
        })
    }
}

/// Exactly `digits` lowercase hex digits, as this module writes them.
fn hex(s: &str, digits: usize) -> Option<u128> {
    let lowercase_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    if s.len() != digits || !s.as_bytes().iter().all(lowercase_hex) {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}

impl Layout {
    /// The layout under `root` (no file system access).
    pub(crate) fn new(root: PathBuf) -> Layout {
        Layout {
            blobs: root.join("blobs"),
            tmp: root.join("tmp"),
            root,
        }
    }

    /// The root directory.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of temporary files.
    pub(crate) fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// The `LAYOUT` file.
    pub(crate) fn tag_path(&self) -> PathBuf {
        self.root.join("LAYOUT")
    }

    /// The directory holding everything under `blobs/`.
    pub(crate) fn blobs(&self) -> &Path {
        &self.blobs
    }

    /// Fan-out directory number `index` (`0..FANOUT_DIRS`).
    pub(crate) fn fanout_dir(&self, index: usize) -> PathBuf {
        debug_assert!(index < FANOUT_DIRS);
        self.blobs.join(format!("{index:02x}"))
    }

    /// The fan-out directory of every blob of `key_hash`.
    pub(crate) fn dir_of(&self, key_hash: u128) -> PathBuf {
        self.fanout_dir((key_hash >> 120) as usize)
    }

    /// Where blob `revision` of the key with hash `key_hash` lives once finished.
    pub(crate) fn blob_path(&self, key_hash: u128, revision: Revision) -> PathBuf {
        self.dir_of(key_hash)
            .join(format!("{key_hash:032x}-{revision}{BLOB_SUFFIX}"))
    }

    /// The expiry marker of that blob, if it expires at `expires`.
    pub(crate) fn marker_path(
        &self,
        key_hash: u128,
        revision: Revision,
        expires: Instant,
    ) -> PathBuf {
        let ms = expires.as_millis();
        self.dir_of(key_hash).join(format!(
            "{key_hash:032x}-{revision}-{ms:016x}{MARKER_SUFFIX}"
        ))
    }

    /// A fresh temporary file name for a write of `revision`, unique within this machine: the
    /// process id tells processes apart and a counter tells this process's writes apart.
    pub(crate) fn temp_path(&self, revision: Revision) -> PathBuf {
        self.tmp
            .join(format!("{revision}-{}{TEMP_SUFFIX}", unique()))
    }

    /// A fresh temporary file name for writing `LAYOUT`, unique as [`temp_path`]'s are: two
    /// threads creating the same directory must not truncate or rename each other's file.
    ///
    /// [`temp_path`]: Layout::temp_path
    pub(crate) fn tag_temp_path(&self) -> PathBuf {
        self.tmp.join(format!("LAYOUT-{}{TEMP_SUFFIX}", unique()))
    }
}

/// `{pid}-{seq}`: a process id and a counter of this process's temporary files.
fn unique() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{}-{seq}", std::process::id())
}

/// Makes `dir`'s entries (files created, renamed in or removed) durable. On platforms where a
/// directory cannot be opened and synced (Windows), renames are durable once the file system
/// journals them, and this does nothing.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(context("syncing directory", dir))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Adds what was being done, and to which path, to an I/O error, keeping its kind.
pub(crate) fn context<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> io::Error + 'a {
    move |e| {
        io::Error::new(
            e.kind(),
            format!("blob directory: {what} {}: {e}", path.display()),
        )
    }
}

/// An error for a file whose contents are not what this module writes.
pub(crate) fn corrupt(path: &Path, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("blob directory: {}: {why}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(bytes: &[u8]) -> &Key {
        Key::new(bytes).unwrap()
    }

    #[test]
    fn names_round_trip_and_nothing_else_parses() {
        let layout = Layout::new(PathBuf::from("/data"));
        let h = key_hash(key(b"../../etc/passwd"));
        let r = Revision(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let blob = layout.blob_path(h, r);
        let name = blob.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            Entry::parse(name),
            Some(Entry::Blob {
                key_hash: h,
                revision: r
            })
        );
        assert_eq!(
            blob.parent().unwrap(),
            Path::new("/data/blobs").join(format!("{:02x}", h >> 120))
        );
        let expires = Instant::from_millis(1_700_000_000_000);
        let marker = layout.marker_path(h, r, expires);
        let name = marker.file_name().unwrap().to_str().unwrap();
        assert!(name.len() <= MAX_NAME_LEN);
        assert_eq!(
            Entry::parse(name),
            Some(Entry::Marker {
                key_hash: h,
                revision: r,
                expires
            })
        );
        for junk in [
            "",
            ".blob",
            "x-y.blob",
            "LAYOUT",
            &format!("{h:032X}-{r}.blob"),
            &format!("{h:032x}-{r}.blob.partial"),
            &format!("{h:032x}-{r}.blob")[1..],
            &format!("+{:031x}-{r}.blob", h >> 4),
            &format!("{h:032x}-{r}-ffffffffffffffffff.expires"),
        ] {
            assert_eq!(Entry::parse(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn hostile_keys_make_plain_hex_names() {
        let layout = Layout::new(PathBuf::from("/data"));
        let long = [b'a'; 1024];
        let hostile: [&[u8]; 7] = [
            b"../../etc/passwd",
            b"/absolute",
            b"..",
            b"\x01\n\r",
            b"\xff\xfe",
            b"C:\\windows",
            &long,
        ];
        for k in hostile {
            let path = layout.blob_path(key_hash(key(k)), Revision(7));
            let rest = path.strip_prefix("/data/blobs").unwrap();
            let parts: Vec<_> = rest.components().collect();
            assert_eq!(parts.len(), 2, "{path:?}");
            let name = rest.to_str().unwrap().strip_suffix(".blob").unwrap();
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_hexdigit() || b"-/".contains(&b)),
                "{name}"
            );
        }
    }

    #[test]
    fn similar_keys_spread_over_the_fanout_directories() {
        let mut seen = [0u32; FANOUT_DIRS];
        for i in 0..10_000 {
            let k = format!("photos/2026/{i}");
            seen[(key_hash(key(k.as_bytes())) >> 120) as usize] += 1;
        }
        // 10 000 keys over 256 directories: about 39 each if spread evenly.
        let (min, max) = (seen.iter().min().unwrap(), seen.iter().max().unwrap());
        assert!(*min >= 15 && *max <= 70, "min {min}, max {max}");
    }

    #[test]
    fn temp_names_are_unique() {
        let layout = Layout::new(PathBuf::from("/data"));
        assert_ne!(layout.temp_path(Revision(1)), layout.temp_path(Revision(1)));
        assert_ne!(layout.tag_temp_path(), layout.tag_temp_path());
    }
}
