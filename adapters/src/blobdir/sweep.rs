//! Removing files: one blob on request, expired blobs in bulk, and crash leftovers.

use super::layout::{context, key_hash, sync_dir, Entry, FANOUT_DIRS, TEMP_SUFFIX};
use super::read::open_file;
use super::BlobDir;
use cairn_core::{is_expired, BlobId, Instant, Revision};
use std::io;
use std::path::Path;
use std::time::SystemTime;

/// What [`BlobDir::sweep_expired`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Expired blobs whose files were deleted.
    pub blobs_deleted: u64,
    /// Expiry markers removed whose blob was already gone (deleted earlier, or a write that
    /// crashed before its rename) at least [`STALE_MARKER_AGE`] ago.
    pub stale_markers: u64,
    /// Expired blobs that could not be removed, and fan-out directories that could not be
    /// listed (a directory in a blob's place, a file this user may not delete). The sweep goes
    /// on past them — one bad entry must not stop the rest, or an open — and leaves them with
    /// their markers for the next sweep; `fsck` reports what is not a blob.
    pub skipped: u64,
}

/// How old a marker without its blob must be before a sweep removes it. A write creates its
/// marker just before it renames its blob into place, so for a moment the marker is alone; a
/// sweep (in this process or another) that removed it then would leave the blob with no marker,
/// never to be swept. A marker alone for this long belongs to a write that crashed, or to a
/// delete that crashed between its two unlinks.
pub const STALE_MARKER_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

impl BlobDir {
    /// Deletes `blob`'s file (and its expiry marker), then syncs the directory.
    ///
    /// The header is read first, for two reasons: it names the marker to remove, and a file that
    /// holds another key is left alone (the blob asked for does not exist, so the delete has
    /// succeeded; the stray file is for `fsck` to judge). A file at this name whose header cannot
    /// be read, or whose length disagrees with it, is removed: its name says it is this
    /// revision's, and nobody can read it anyway; its marker, which it cannot name, is looked
    /// for as a lone one.
    pub(crate) fn remove(&self, blob: BlobId<'_>) -> io::Result<()> {
        let layout = &self.inner.layout;
        let hash = key_hash(blob.key);
        let path = layout.blob_path(hash, blob.revision);
        // The marker's expiry, if the header names it; `None` if it cannot be read.
        let expires = match open_file(&path) {
            Ok(None) => {
                self.remove_lone_markers(hash, blob.revision);
                return Ok(());
            }
            Ok(Some((_, h))) if *h.key != *blob.key || h.revision != blob.revision => return Ok(()),
            Ok(Some((_, h))) => Some(h.meta.expires),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => None,
            Err(e) => return Err(e),
        };
        remove_if_present(&path)?;
        match expires {
            Some(Some(at)) => {
                remove_if_present(&layout.marker_path(hash, blob.revision, at))?;
            }
            Some(None) => {}
            // A damaged file cannot name its marker, if it has one: now that the blob is gone,
            // any marker of its revision is a lone one, found by a listing as a crashed write's.
            None => self.remove_lone_markers(hash, blob.revision),
        }
        sync_dir(&layout.dir_of(hash))
    }

    /// Removes the expiry markers of blob `revision` of the key with hash `key_hash`, whose blob
    /// is not there: a write that crashed between making its marker and renaming its blob
    /// leaves one, which the sweep removes only once it has expired — for a long time to live,
    /// practically never. Recovery then deletes the blob this way, and has no header to name the
    /// marker by, so the blob's fan-out directory is listed for it: one listing, on a path that
    /// only cleanup after a failure takes. Nobody is writing this revision any more (its write
    /// failed, or recovery took its entry over after its lease ran out), so its marker cannot
    /// be on its way to a blob.
    ///
    /// Best effort, as the sweep is: the blob is not there, so the delete has succeeded. A
    /// marker that cannot be listed, removed or synced away (a directory under its name, a
    /// fan-out directory that cannot be read) only waits for the sweep; failing the delete for
    /// it would keep the change-log entry behind it in recovery for good.
    fn remove_lone_markers(&self, key_hash: u128, revision: Revision) {
        let dir = self.inner.layout.dir_of(key_hash);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let mut removed = false;
        for entry in entries {
            let Ok(entry) = entry else {
                break;
            };
            if let Some(Entry::Marker {
                key_hash: h,
                revision: r,
                ..
            }) = entry.file_name().to_str().and_then(Entry::parse)
            {
                if (h, r) == (key_hash, revision) {
                    removed |= remove_if_present(&entry.path()).unwrap_or(false);
                }
            }
        }
        if removed {
            // Undone by a power loss, the removal leaves a marker the sweep takes later.
            let _ = sync_dir(&dir);
        }
    }

    /// Whether the expiry marker of blob `revision` of `key`, expiring at `expires`, is there:
    /// without it, [`sweep_expired`](BlobDir::sweep_expired) would never remove the blob.
    #[cfg(feature = "sqlite")] // for the embedded data directory's `fsck`
    pub(crate) fn has_marker(
        &self,
        key: &cairn_core::Key,
        revision: Revision,
        expires: Instant,
    ) -> bool {
        let marker = self
            .inner
            .layout
            .marker_path(key_hash(key), revision, expires);
        // An error other than absence (permissions) is no proof that it is missing.
        !matches!(std::fs::symlink_metadata(marker), Err(e) if e.kind() == io::ErrorKind::NotFound)
    }

    /// Deletes every blob that has expired at `now`, without opening any blob file: expiring
    /// blobs have an empty marker whose name carries the expiry. One that cannot be removed is
    /// counted in [`SweepReport::skipped`] and left for the next sweep; only a failure to sync a
    /// directory it removed something from fails the sweep.
    ///
    /// Safe while the store runs: a blob expires at the same instant as the tombstone pointing
    /// at it, and an expired tombstone is already absent to every operation, so no reader can
    /// still be sent to the blob. (A reader that opened the file before keeps reading it; the
    /// file system frees it when the reader closes it.)
    ///
    /// Cost: one directory listing per fan-out directory (256), reading every entry name once;
    /// two unlinks per expired blob; one directory sync per directory where something was
    /// removed.
    pub fn sweep_expired(&self, now: Instant) -> io::Result<SweepReport> {
        let layout = &self.inner.layout;
        let mut report = SweepReport::default();
        for index in 0..FANOUT_DIRS {
            let dir = layout.fanout_dir(index);
            let mut removed = false;
            let Ok(entries) = std::fs::read_dir(&dir) else {
                report.skipped += 1;
                continue;
            };
            for entry in entries {
                let Ok(entry) = entry else {
                    report.skipped += 1;
                    break;
                };
                let name = entry.file_name();
                let Some(Entry::Marker {
                    key_hash,
                    revision,
                    expires,
                }) = name.to_str().and_then(Entry::parse)
                else {
                    continue;
                };
                if !is_expired(Some(expires), now) {
                    continue;
                }
                match remove_if_present(&layout.blob_path(key_hash, revision)) {
                    Ok(true) => report.blobs_deleted += 1,
                    Ok(false) if is_older(&entry, STALE_MARKER_AGE).unwrap_or(false) => {
                        report.stale_markers += 1
                    }
                    Ok(false) => continue, // its blob may be on its way: see STALE_MARKER_AGE
                    Err(_) => {
                        // Kept with its marker, so the next sweep tries again.
                        report.skipped += 1;
                        continue;
                    }
                }
                removed = true;
                // A marker that stays only makes the next sweep look again.
                if remove_if_present(&entry.path()).is_err() {
                    report.skipped += 1;
                }
            }
            if removed {
                sync_dir(&dir)?;
            }
        }
        Ok(report)
    }

    /// Removes temp files of writes that crashed or were abandoned, returning how many.
    ///
    /// Only files untouched for at least `older_than` go: another process sharing the directory
    /// may be writing one right now. A write in progress touches its file with every chunk; a
    /// staged blob (see `LtBackend::stage`) then waits untouched only while its put's change-log
    /// record commits. Were it removed meanwhile, its publication's rename would fail and the
    /// put with it: never a blob lost or half-published.
    /// Pass a grace period longer than the slowest stall of a put's body (the `cairn recover`
    /// command, for instance); `Duration::ZERO` removes every temp file, which is right only
    /// when no other writer can be running.
    pub fn remove_temp_files(&self, older_than: std::time::Duration) -> io::Result<usize> {
        let tmp = self.inner.layout.tmp();
        let mut removed = 0;
        for entry in std::fs::read_dir(tmp).map_err(context("listing", tmp))? {
            let entry = entry.map_err(context("listing", tmp))?;
            if !entry.file_name().to_string_lossy().ends_with(TEMP_SUFFIX) {
                continue;
            }
            // One that cannot be judged or removed stays for the next pass; the rest go.
            if is_older(&entry, older_than).unwrap_or(false)
                && remove_if_present(&entry.path()).unwrap_or(false)
            {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Whether `entry` was last modified at least `age` ago by the wall clock. A file gone meanwhile
/// is not; a file from the future (the clock stepped back) is new.
fn is_older(entry: &std::fs::DirEntry, age: std::time::Duration) -> io::Result<bool> {
    match entry.metadata().and_then(|m| m.modified()) {
        Ok(modified) => Ok(SystemTime::now()
            .duration_since(modified)
            .is_ok_and(|elapsed| elapsed >= age)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(context("reading age of", &entry.path())(e)),
    }
}

/// Removes a file, returning whether it was there.
fn remove_if_present(path: &Path) -> io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(context("removing", path)(e)),
    }
}
