//! Put of an object too large to live inline: a blob in the long-term tier behind a tombstone.

use crate::tiered::mutation::{mutation_machine, Mutation, Opening};
use crate::{ChangeId, Config, Instant, Key, Revision};

/// Puts an object larger than [`Config::inline_threshold`] as blob `{key}/{revision}`.
///
/// Reads the current tombstone target (metadata only), records the change `{new, old}` durably,
/// writes the blob (the driver streams the body), then compare-and-writes the tombstone — the
/// commit point. Its cleanup deletes `old` if it won and `new` if it lost.
///
/// ```
/// use cairn_core::*;
/// let key = Key::new(b"video").unwrap();
/// let mut put = LargePut::new(key, Revision(5), None, ChangeId(1), Config::DEFAULT);
/// let now = Instant::ZERO;
/// assert!(matches!(put.poll(now), Poll::Io(Request::HvRead { payload: false, .. })));
/// put.handle(Completion::Row(HvRow::Absent));
/// assert!(matches!(put.poll(now), Poll::Io(Request::LogRecord { .. })), "durable before the blob");
/// put.handle(Completion::Done);
/// assert!(matches!(put.poll(now), Poll::Io(Request::LtPut { .. })));
/// ```
#[derive(Clone, Debug)]
pub struct LargePut<'k>(Mutation<'k>);

impl<'k> LargePut<'k> {
    /// A put under `key` whose blob will be `revision` (fresh: never used before for this key),
    /// expiring at `expires`. `id` names the change-log entry.
    ///
    /// # Panics
    ///
    /// When the key's tombstone turns out to point at `revision` already: a revision handed out
    /// twice is the driver's bug, and going on would let cleanup delete the blob that tombstone
    /// references. [`IdGen`](crate::IdGen) draws 80 random bits for each within a millisecond.
    pub fn new(
        key: &'k Key,
        revision: Revision,
        expires: Option<Instant>,
        id: ChangeId,
        config: Config,
    ) -> LargePut<'k> {
        LargePut(Mutation::new(
            key,
            id,
            config,
            Opening::ReadCurrent { revision, expires },
        ))
    }

    /// The key being written.
    pub fn key(&self) -> &'k Key {
        self.0.key()
    }
}

mutation_machine!(LargePut);
