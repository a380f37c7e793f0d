use crate::backend::{BackendResult, ListEntry, Row, SyncHvBackend, Write};
use crate::memory_lock as lock;
use crate::Metadata;
use bytes::Bytes;
use cairn_core::{
    cas_verdict, CasVerdict, Guarded, HvRow, HvWrite, Instant, Key, KeyBuf, Revision, Tombstone,
};
use hashbrown::HashMap;
use std::sync::Mutex;

/// What a compare-and-write does when the row is already in its target state. Both are legal;
/// cairn must be correct under either, and the tests run both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CasMode {
    /// Write again (what a store with predicate-only conditional writes, like BigTable, does).
    #[default]
    Reapply,
    /// Answer true without writing.
    Skip,
}

/// A row's key: inline in the slot up to [`RowKey::INLINE`] bytes (most keys), boxed beyond. A
/// lookup of a short key then reads the slot and nothing else: no pointer to chase to a key
/// allocation that the cache may have lost.
#[derive(Clone, Debug)]
enum RowKey {
    Inline {
        len: u8,
        bytes: [u8; RowKey::INLINE],
    },
    Boxed(Box<[u8]>),
}

impl RowKey {
    /// The longest key kept inline: what fits beside the length in the 24 bytes a boxed key
    /// takes with its tag anyway.
    const INLINE: usize = 22;

    fn new(key: &Key) -> RowKey {
        let key = key.as_bytes();
        match key.len() {
            len @ ..=RowKey::INLINE => {
                let mut bytes = [0; RowKey::INLINE];
                bytes[..len].copy_from_slice(key);
                RowKey::Inline {
                    len: len as u8,
                    bytes,
                }
            }
            _ => RowKey::Boxed(key.into()),
        }
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        match self {
            RowKey::Inline { len, bytes } => &bytes[..*len as usize],
            RowKey::Boxed(bytes) => bytes,
        }
    }
}

// Hashed and compared as its bytes, so that rows are found by `&[u8]`.
impl std::hash::Hash for RowKey {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes().hash(state)
    }
}

impl PartialEq for RowKey {
    #[inline]
    fn eq(&self, other: &RowKey) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for RowKey {}

impl std::borrow::Borrow<[u8]> for RowKey {
    #[inline]
    fn borrow(&self) -> &[u8] {
        self.bytes()
    }
}

/// A row as kept in memory. Small on purpose: a lookup touches the slot, the key and nothing
/// else, and 10,000 rows fit a core's L2 cache (at 136 bytes a slot they did not, and every get
/// and put paid three misses to L3).
#[derive(Clone, Debug)]
enum Stored {
    Inline(Inline),
    /// Boxed: tombstones are the rarer rows, and a 40-byte one inline would grow every slot.
    Tombstone(Box<Tombstone>),
}

#[derive(Clone, Debug)]
struct Inline {
    payload: Bytes,
    /// 32 bytes; its content type and user pairs are shared with the metadata written and read.
    meta: Metadata,
}

impl Inline {
    #[inline]
    fn new(meta: &Metadata, payload: &Bytes) -> Inline {
        Inline {
            payload: payload.clone(),
            meta: meta.clone(),
        }
    }
}

impl Stored {
    #[inline]
    fn core(&self) -> HvRow {
        match self {
            Stored::Inline(row) => HvRow::Inline(row.meta.core()),
            Stored::Tombstone(t) => HvRow::Tombstone(**t),
        }
    }
}

/// The high-volume tier in memory, with atomic conditional operations and expiry.
///
/// ```
/// use cairn_adapters::memory::{CasMode, MemoryHv};
/// let hv = MemoryHv::new().with_cas_mode(CasMode::Skip);
/// assert_eq!(hv.len(), 0);
/// ```
#[derive(Debug, Default)]
pub struct MemoryHv {
    rows: Mutex<HashMap<RowKey, Stored>>,
    mode: CasMode,
}

impl MemoryHv {
    /// An empty tier answering idempotent compare-and-writes by re-applying them.
    pub fn new() -> Self {
        Self::default()
    }

    /// Chooses the idempotent compare-and-write behaviour.
    pub fn with_cas_mode(mut self, mode: CasMode) -> Self {
        self.mode = mode;
        self
    }

    /// Number of stored rows, expired ones included.
    pub fn len(&self) -> usize {
        lock(&self.rows).len()
    }

    /// Whether no rows are stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every stored row, expired ones included, for checkers and `fsck`.
    pub fn snapshot(&self) -> Vec<(KeyBuf, HvRow)> {
        lock(&self.rows)
            .iter()
            .map(|(k, v)| (stored_key(k.bytes()), v.core()))
            .collect()
    }

    /// Writes a tombstone directly, bypassing the protocol (for tests of damaged states).
    pub fn force_tombstone(&self, key: &Key, tombstone: Tombstone) {
        lock(&self.rows).insert(RowKey::new(key), Stored::Tombstone(Box::new(tombstone)));
    }
}

/// Keys are validated before they are stored.
fn stored_key(bytes: &[u8]) -> KeyBuf {
    KeyBuf::new(bytes).expect("stored keys were validated on the way in")
}

#[inline]
fn live(row: Option<&Stored>, now: Instant) -> HvRow {
    row.map_or(HvRow::Absent, |r| r.core().at(now))
}

/// The row a read returns for `stored`, whose live view is `view`.
#[inline(always)]
fn answer(view: HvRow, stored: Option<&Stored>, payload: bool) -> Row {
    match (view, stored) {
        (HvRow::Absent, _) => Row::Absent,
        (HvRow::Tombstone(t), _) => Row::Tombstone(t),
        (HvRow::Inline(_), Some(Stored::Inline(row))) => Row::Inline {
            meta: row.meta.clone(),
            payload: payload.then(|| row.payload.clone()),
        },
        (HvRow::Inline(_), _) => unreachable!("an inline view comes from an inline row"),
    }
}

impl SyncHvBackend for MemoryHv {
    #[inline]
    fn read(&self, key: &Key, payload: bool, now: Instant) -> BackendResult<Row> {
        let rows = lock(&self.rows);
        let stored = rows.get(key.as_bytes());
        Ok(answer(live(stored, now), stored, payload))
    }

    #[inline]
    fn read_into(
        &self,
        key: &Key,
        payload: bool,
        now: Instant,
        into: &mut Option<Row>,
    ) -> BackendResult<HvRow> {
        let rows = lock(&self.rows);
        let stored = rows.get(key.as_bytes());
        let view = live(stored, now);
        *into = Some(answer(view, stored, payload));
        Ok(view)
    }

    #[inline]
    fn put_non_tombstone(
        &self,
        key: &Key,
        meta: &Metadata,
        payload: &Bytes,
        now: Instant,
    ) -> BackendResult<Guarded> {
        let mut rows = lock(&self.rows);
        let row = || Stored::Inline(Inline::new(meta, payload));
        // One lookup: overwrite in place, or insert with an owned key only if the key is new.
        match rows.get_mut(key.as_bytes()) {
            Some(slot) => match slot.core().at(now) {
                HvRow::Tombstone(t) => return Ok(Guarded::Blocked(t)),
                _ => *slot = row(),
            },
            None => {
                rows.insert(RowKey::new(key), row());
            }
        }
        Ok(Guarded::Applied)
    }

    fn delete_non_tombstone(&self, key: &Key, now: Instant) -> BackendResult<Guarded> {
        let mut rows = lock(&self.rows);
        if let HvRow::Tombstone(t) = live(rows.get(key.as_bytes()), now) {
            return Ok(Guarded::Blocked(t));
        }
        rows.remove(key.as_bytes());
        Ok(Guarded::Applied)
    }

    fn compare_and_write(
        &self,
        key: &Key,
        expected: Option<Revision>,
        write: Write<'_>,
        now: Instant,
    ) -> BackendResult<bool> {
        let mut rows = lock(&self.rows);
        let core_write = match write {
            Write::Tombstone(t) => HvWrite::Tombstone(t),
            Write::Inline { meta, .. } => HvWrite::Inline(meta.core()),
            Write::Delete => HvWrite::Delete,
        };
        let verdict = cas_verdict(live(rows.get(key.as_bytes()), now), expected, &core_write);
        let apply = match verdict {
            CasVerdict::Apply => true,
            CasVerdict::AlreadyApplied => self.mode == CasMode::Reapply,
            CasVerdict::Conflict => false,
        };
        if apply {
            match write {
                Write::Tombstone(t) => {
                    rows.insert(RowKey::new(key), Stored::Tombstone(Box::new(t)));
                }
                Write::Inline { meta, payload } => {
                    let row = Stored::Inline(Inline::new(meta, payload));
                    rows.insert(RowKey::new(key), row);
                }
                Write::Delete => {
                    rows.remove(key.as_bytes());
                }
            }
        }
        Ok(verdict.succeeded())
    }

    fn list(
        &self,
        prefix: &[u8],
        after: Option<&Key>,
        limit: usize,
        now: Instant,
    ) -> BackendResult<Vec<ListEntry>> {
        let rows = lock(&self.rows);
        let mut hits: Vec<ListEntry> = rows
            .iter()
            .filter(|(k, _)| {
                let k = k.bytes();
                k.starts_with(prefix) && after.is_none_or(|a| k > a.as_bytes())
            })
            .filter_map(|(k, v)| match v.core().at(now) {
                HvRow::Absent => None,
                row => Some(ListEntry {
                    key: stored_key(k.bytes()),
                    row,
                }),
            })
            .collect();
        hits.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        hits.truncate(limit);
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Labels;

    #[test]
    fn a_row_stays_small() {
        // A slot is the key plus the row: 96 bytes, short keys included, against 136 plus a
        // key allocation before, which made 10,000 rows spill out of a 2 MiB L2 cache.
        assert!(size_of::<Stored>() <= 72, "{} bytes", size_of::<Stored>());
        assert_eq!(size_of::<RowKey>(), 24);
    }

    #[test]
    fn short_and_long_keys_are_found_by_their_bytes() {
        let hv = MemoryHv::new();
        let meta = Metadata::default();
        let (now, payload) = (Instant::ZERO, Bytes::from_static(b"x"));
        for len in [1, RowKey::INLINE, RowKey::INLINE + 1, 1024] {
            let bytes = vec![b'k'; len];
            let key = Key::new(&bytes).expect("valid");
            assert!(matches!(hv.read(key, true, now), Ok(Row::Absent)));
            hv.put_non_tombstone(key, &meta, &payload, now)
                .expect("put");
            assert!(
                matches!(hv.read(key, true, now), Ok(Row::Inline { .. })),
                "{len}"
            );
        }
        let listed = hv.list(b"k", None, 10, now).expect("list");
        assert_eq!(listed.len(), 4);
    }

    #[test]
    fn read_into_builds_the_row_read_returns_and_answers_its_view() {
        let hv = MemoryHv::new();
        let (t0, later) = (Instant::from_millis(10), Instant::from_millis(1_000));
        let plain = Metadata::default();
        let labelled = Metadata {
            size: 1,
            expires: Some(Instant::from_millis(500)),
            labels: Labels::shared(
                Some("text/plain".into()),
                vec![("owner".into(), "ada".into())],
            ),
            ..Metadata::default()
        };
        let x = Bytes::from_static(b"x");
        let key = |k: &'static str| Key::new(k.as_bytes()).expect("valid");
        hv.put_non_tombstone(key("plain"), &plain, &x, t0)
            .expect("put");
        hv.put_non_tombstone(key("labelled"), &labelled, &x, t0)
            .expect("put");
        let tombstone = Tombstone {
            revision: Revision(7),
            size: 5 << 20,
            expires: Some(Instant::from_millis(500)),
        };
        let write = Write::Tombstone(tombstone);
        assert!(hv
            .compare_and_write(key("big"), None, write, t0)
            .expect("cas"));
        for k in ["plain", "labelled", "big", "missing"] {
            for now in [t0, later] {
                for payload in [true, false] {
                    let read = hv.read(key(k), payload, now).expect("read");
                    // A slot holding another row beforehand: it is replaced, not merged.
                    let mut into = Some(Row::Tombstone(tombstone));
                    let view = hv.read_into(key(k), payload, now, &mut into).expect("read");
                    assert_eq!(into.as_ref(), Some(&read), "{k} at {now:?}");
                    assert_eq!(view, read.core(), "{k} at {now:?}");
                }
            }
        }
    }
}
