//! Put of an object small enough to live inline in the high-volume tier.

use crate::tiered::mutation::{mutation_machine, Mutation, Opening};
use crate::{ChangeId, Config, Key, ObjectMeta};

/// Puts an object of at most [`Config::inline_threshold`] bytes inline.
///
/// `put_non_tombstone` first; that is the whole operation unless a live tombstone is there. Over
/// a tombstone it records the change, then compare-and-writes the inline object in place of the
/// tombstone, and its cleanup deletes the blob the tombstone pointed at.
///
/// ```
/// use cairn_core::*;
/// let meta = ObjectMeta { size: 5, created: Instant::ZERO, expires: None };
/// let mut put = SmallPut::new(Key::new(b"k").unwrap(), meta, ChangeId(1), Config::DEFAULT);
/// assert!(matches!(put.poll(Instant::ZERO), Poll::Io(Request::HvPutNonTombstone { .. })));
/// put.handle(Completion::Guarded(Guarded::Applied));
/// let Poll::Done(done) = put.poll(Instant::ZERO) else { panic!() };
/// assert_eq!(done.result, Ok(WriteOutcome::Committed));
/// assert!(done.cleanup.is_none(), "no tombstone met, no log entry, nothing to clean");
/// ```
#[derive(Clone, Debug)]
pub struct SmallPut<'k>(Mutation<'k>);

impl<'k> SmallPut<'k> {
    /// A put of `meta.size` bytes (the driver holds them) under `key`. `id` names the change-log
    /// entry, used only if a tombstone is met.
    ///
    /// `meta.size` must [fit inline](Config::fits_inline): the driver chooses between this and
    /// [`LargePut`](crate::LargePut) by size. A debug build panics on a larger one; a release
    /// build stores it inline all the same.
    #[inline]
    pub fn new(key: &'k Key, meta: ObjectMeta, id: ChangeId, config: Config) -> SmallPut<'k> {
        debug_assert!(config.fits_inline(meta.size), "a small put must fit inline");
        SmallPut(Mutation::new(
            key,
            id,
            config,
            Opening::PutNonTombstone(meta),
        ))
    }

    /// The key being written.
    pub fn key(&self) -> &'k Key {
        self.0.key()
    }
}

mutation_machine!(SmallPut);
