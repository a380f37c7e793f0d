use crate::backend::{BackendResult, SyncLtBackend};
use crate::memory_lock as lock;
use crate::{Body, Metadata};
use bytes::Bytes;
use cairn_core::{is_expired, BlobId, Instant, Key, KeyBuf, Revision, Span};
use hashbrown::HashMap;
use std::sync::Mutex;

/// A clock the in-memory long-term tier uses to hide expired blobs (the blob tier has no `now` in
/// its requests, like a real object store that expires by its own lifecycle rules).
pub type LtClock = Box<dyn Fn() -> Instant + Send + Sync>;

/// The long-term tier in memory. Expired blobs read as absent.
#[derive(Default)]
pub struct MemoryLt {
    blobs: Mutex<HashMap<(KeyBuf, Revision), (Metadata, Bytes)>>,
    clock: Option<LtClock>,
}

impl std::fmt::Debug for MemoryLt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLt")
            .field("blobs", &self.len())
            .finish()
    }
}

impl MemoryLt {
    /// An empty tier in which nothing expires.
    pub fn new() -> Self {
        Self::default()
    }

    /// Expires blobs against `clock`.
    pub fn with_clock(mut self, clock: impl Fn() -> Instant + Send + Sync + 'static) -> Self {
        self.clock = Some(Box::new(clock));
        self
    }

    /// Number of stored blobs, expired ones included.
    pub fn len(&self) -> usize {
        lock(&self.blobs).len()
    }

    /// Whether no blobs are stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every stored blob, expired ones included, for checkers and `fsck`.
    pub fn snapshot(&self) -> Vec<(KeyBuf, Revision, Metadata)> {
        lock(&self.blobs)
            .iter()
            .map(|((k, r), (m, _))| (k.clone(), *r, m.clone()))
            .collect()
    }

    /// Removes a blob behind cairn's back (for tests of damaged states).
    pub fn remove_behind_back(&self, key: &Key, revision: Revision) -> bool {
        lock(&self.blobs)
            .remove(&(key.to_key_buf(), revision))
            .is_some()
    }

    fn live(&self, meta: &Metadata) -> bool {
        self.clock
            .as_ref()
            .is_none_or(|now| !is_expired(meta.expires, now()))
    }

    fn id(blob: BlobId<'_>) -> (KeyBuf, Revision) {
        (blob.key.to_key_buf(), blob.revision)
    }
}

impl SyncLtBackend for MemoryLt {
    fn put(&self, blob: BlobId<'_>, meta: &Metadata, body: Bytes) -> BackendResult<u64> {
        let size = body.len() as u64;
        let meta = Metadata {
            size,
            ..meta.clone()
        };
        lock(&self.blobs).insert(Self::id(blob), (meta, body));
        Ok(size)
    }

    fn get(&self, blob: BlobId<'_>, span: Option<Span>) -> BackendResult<Option<(Metadata, Body)>> {
        let blobs = lock(&self.blobs);
        Ok(blobs
            .get(&Self::id(blob))
            .filter(|(m, _)| self.live(m))
            .map(|(meta, bytes)| {
                let bytes = match span {
                    Some(s) => bytes.slice(s.start as usize..(s.end as usize).min(bytes.len())),
                    None => bytes.clone(),
                };
                (meta.clone(), Body::from_bytes(bytes))
            }))
    }

    fn head(&self, blob: BlobId<'_>) -> BackendResult<Option<Metadata>> {
        let blobs = lock(&self.blobs);
        Ok(blobs
            .get(&Self::id(blob))
            .filter(|(m, _)| self.live(m))
            .map(|(m, _)| m.clone()))
    }

    fn delete(&self, blob: BlobId<'_>) -> BackendResult<()> {
        lock(&self.blobs).remove(&Self::id(blob));
        Ok(())
    }
}
