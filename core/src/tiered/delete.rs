//! Delete of an object, inline or behind a tombstone.

use crate::tiered::mutation::{mutation_machine, Mutation, Opening};
use crate::{ChangeId, Config, Key};

/// Deletes the object under a key; deleting a missing key succeeds.
///
/// `delete_non_tombstone` first; over a live tombstone it records the change, then
/// compare-and-writes a delete (the commit point: the blob is unreachable from then on), and its
/// cleanup deletes the blob.
///
/// ```
/// use cairn_core::*;
/// let mut del = Delete::new(Key::new(b"k").unwrap(), ChangeId(1), Config::DEFAULT);
/// let now = Instant::ZERO;
/// assert!(matches!(del.poll(now), Poll::Io(Request::HvDeleteNonTombstone { .. })));
/// let t = Tombstone { revision: Revision(7), size: 10, expires: None };
/// del.handle(Completion::Guarded(Guarded::Blocked(t)));
/// assert!(matches!(del.poll(now), Poll::Io(Request::LogRecord { .. })));
/// ```
#[derive(Clone, Debug)]
pub struct Delete<'k>(Mutation<'k>);

impl<'k> Delete<'k> {
    /// A delete of `key`. `id` names the change-log entry, used only if a tombstone is met.
    pub fn new(key: &'k Key, id: ChangeId, config: Config) -> Delete<'k> {
        Delete(Mutation::new(key, id, config, Opening::DeleteNonTombstone))
    }

    /// The key being deleted.
    pub fn key(&self) -> &'k Key {
        self.0.key()
    }
}

mutation_machine!(Delete);
