use crate::backend::{BackendResult, InFlightEntries, LogRecord, SyncChangeLog};
use crate::memory_lock as lock;
use cairn_core::{Change, ChangeId};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The change log in memory, ordered by id.
#[derive(Debug, Default)]
pub struct MemoryLog {
    entries: Mutex<BTreeMap<ChangeId, LogRecord>>,
    /// Shared by every store on this log: one store's recovery skips another's puts.
    in_flight: InFlightEntries,
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of open entries.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// Whether no entries are open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every open entry, for checkers and `fsck`.
    pub fn snapshot(&self) -> Vec<LogRecord> {
        lock(&self.entries).values().cloned().collect()
    }
}

impl SyncChangeLog for MemoryLog {
    fn record(&self, id: ChangeId, change: Change<'_>) -> BackendResult<()> {
        let record = LogRecord {
            id,
            key: change.key.to_key_buf(),
            new: change.new,
            old: change.old,
        };
        lock(&self.entries).insert(id, record);
        Ok(())
    }

    fn remove(&self, id: ChangeId) -> BackendResult<()> {
        lock(&self.entries).remove(&id);
        Ok(())
    }

    fn scan(&self, after: Option<ChangeId>) -> BackendResult<Option<LogRecord>> {
        let entries = lock(&self.entries);
        let next = match after {
            Some(after) => entries
                .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
                .next(),
            None => entries.iter().next(),
        };
        Ok(next.map(|(_, r)| r.clone()))
    }

    fn in_flight(&self) -> Option<&InFlightEntries> {
        Some(&self.in_flight)
    }
}
