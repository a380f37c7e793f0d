//! Listing every stored blob with its key read back from its header, for `fsck`.

use super::layout::{context, corrupt, key_hash, Entry, Layout, FANOUT_DIRS};
use super::read::open_file;
use crate::Metadata;
use cairn_core::{KeyBuf, Revision};
use std::fs::ReadDir;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// One stored blob, as [`BlobDir::blobs`](super::BlobDir::blobs) finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// The key, read from the file's header (file names never hold keys).
    pub key: KeyBuf,
    /// The revision.
    pub revision: Revision,
    /// The metadata, `size` included. Expired blobs are listed too; see `meta.expires`.
    pub meta: Metadata,
    /// The blob's file.
    pub path: PathBuf,
}

/// Walks the fan-out directories one listing at a time (memory stays bounded by one directory
/// handle), opening each blob file to read its header.
pub(crate) struct Blobs {
    layout: Arc<super::Inner>,
    next_dir: usize,
    current: Option<ReadDir>,
}

impl Blobs {
    pub(crate) fn new(layout: Arc<super::Inner>) -> Blobs {
        Blobs {
            layout,
            next_dir: 0,
            current: None,
        }
    }

    fn layout(&self) -> &Layout {
        &self.layout.layout
    }

    /// The next name in the fan-out directories, opening the next directory as each runs out.
    fn next_path(&mut self) -> Option<io::Result<PathBuf>> {
        loop {
            if let Some(dir) = &mut self.current {
                match dir.next() {
                    Some(entry) => {
                        return Some(entry.map(|e| e.path()).map_err(|e| {
                            let dir = self.layout().fanout_dir(self.next_dir - 1);
                            context("listing", &dir)(e)
                        }))
                    }
                    None => self.current = None,
                }
            }
            if self.next_dir == FANOUT_DIRS {
                return None;
            }
            let dir = self.layout().fanout_dir(self.next_dir);
            self.next_dir += 1;
            match std::fs::read_dir(&dir) {
                Ok(listing) => self.current = Some(listing),
                // Without `blobs/` itself, one error for it rather than one per fan-out one.
                Err(e) if !self.layout().blobs().is_dir() => {
                    self.next_dir = FANOUT_DIRS;
                    return Some(Err(context("listing", self.layout().blobs())(e)));
                }
                Err(e) => return Some(Err(context("listing", &dir)(e))),
            }
        }
    }
}

/// Reads one file's header and checks that the file sits where its key and revision say; `None`
/// if it was deleted since it was listed.
fn info(path: PathBuf, hash_in_name: u128, revision: Revision) -> io::Result<Option<BlobInfo>> {
    let Some((_, header)) = open_file(&path)? else {
        return Ok(None);
    };
    if key_hash(&header.key) != hash_in_name || header.revision != revision {
        return Err(corrupt(
            &path,
            format_args!(
                "holds blob {}@{}, which belongs elsewhere",
                header.key, header.revision
            ),
        ));
    }
    Ok(Some(BlobInfo {
        key: header.key,
        revision: header.revision,
        meta: header.meta,
        path,
    }))
}

impl Iterator for Blobs {
    type Item = io::Result<BlobInfo>;

    fn next(&mut self) -> Option<io::Result<BlobInfo>> {
        loop {
            let path = match self.next_path()? {
                Ok(path) => path,
                Err(e) => return Some(Err(e)),
            };
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(Entry::parse);
            match name {
                Some(Entry::Blob { key_hash, revision }) => {
                    match info(path, key_hash, revision).transpose() {
                        Some(found) => return Some(found),
                        None => continue,
                    }
                }
                Some(Entry::Marker { .. }) => continue,
                None => return Some(Err(corrupt(&path, "unexpected file in blob directory"))),
            }
        }
    }
}

/// What lies outside the fan-out directories, as [`BlobDir::surroundings`](super::BlobDir::surroundings)
/// finds it.
#[derive(Debug, Default)]
pub struct Surroundings {
    /// Temporary files: writes in progress, or left by writes that crashed (swept once old).
    pub temp_files: u64,
    /// Their bytes.
    pub temp_bytes: u64,
    /// Anything cairn did not put there — a file beside `LAYOUT`, `tmp/` and `blobs/`, an entry
    /// of `blobs/` that is not a fan-out directory, a file in `tmp/` that is not a temporary
    /// file — and listings that failed, each as an error naming the path.
    pub strays: Vec<io::Error>,
}

/// Walks the root, `tmp/` and `blobs/` (not the fan-out directories under it).
pub(crate) fn surroundings(layout: &Layout) -> Surroundings {
    let mut found = Surroundings::default();
    let root = layout.root();
    let fanout: Vec<PathBuf> = (0..FANOUT_DIRS).map(|i| layout.fanout_dir(i)).collect();
    let expected = |path: &std::path::Path| {
        path == layout.tag_path() || path == layout.tmp() || path == layout.blobs()
    };
    let mut list = |dir: &std::path::Path, each: &mut dyn FnMut(PathBuf, &mut Surroundings)| {
        match std::fs::read_dir(dir) {
            Ok(listing) => {
                for entry in listing {
                    match entry {
                        Ok(entry) => each(entry.path(), &mut found),
                        Err(e) => found.strays.push(context("listing", dir)(e)),
                    }
                }
            }
            Err(e) => found.strays.push(context("listing", dir)(e)),
        }
    };
    list(root, &mut |path, found| {
        if !expected(&path) {
            found
                .strays
                .push(corrupt(&path, "unexpected entry in blob directory"));
        }
    });
    list(layout.blobs(), &mut |path, found| {
        if !fanout.contains(&path) || !path.is_dir() {
            found
                .strays
                .push(corrupt(&path, "unexpected entry in blob directory"));
        }
    });
    list(layout.tmp(), &mut |path, found| {
        let temp = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(super::layout::TEMP_SUFFIX));
        match std::fs::symlink_metadata(&path) {
            Ok(m) if temp && m.is_file() => {
                found.temp_files += 1;
                found.temp_bytes += m.len();
            }
            // Finished (renamed or removed) since it was listed.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            _ => found
                .strays
                .push(corrupt(&path, "unexpected entry in blob directory")),
        }
    });
    found
}
