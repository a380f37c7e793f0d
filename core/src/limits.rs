//! Every capacity in the core, in one place, each with the reason for its number.
//!
//! Loops in the core are bounded by one of these; reaching a bound is a typed outcome, never a
//! hang. Relations between them are checked at compile time at the bottom of this file.

/// Longest key, in bytes. Keys are stored inline in every machine (no allocation), so this is
/// also the size of the largest machine. 1 KiB matches the S3 object-key limit, which is the
/// widest limit among the long-term tiers cairn targets.
pub const MAX_KEY_LEN: usize = 1024;

/// Default size at or below which an object is stored inline in the high-volume tier. 1 MiB keeps
/// inline rows small enough for key-value stores (SQLite, BigTable cells) while sending the bulk
/// of bytes, which lives in few large objects, to the blob tier.
pub const DEFAULT_INLINE_THRESHOLD: u64 = 1024 * 1024;

/// Largest configurable inline threshold: the high-volume tier holds whole payloads in memory
/// while serving them, so a row must stay well below what a single allocation comfortably holds.
pub const MAX_INLINE_THRESHOLD: u64 = 64 * 1024 * 1024;

/// How many times a get follows a fresh tombstone after the blob it was sent to vanished. Each
/// hop means a concurrent overwrite committed *and* cleaned up between our two reads; eight in a
/// row means the key is being rewritten faster than we can read it, and the caller is told so.
pub const MAX_REDIRECT_HOPS: u8 = 8;

/// Upper bound on attempts for one idempotent I/O request (high-volume reads and conditional
/// writes, change-log writes). Retrying more than this inside one operation only hides an
/// outage from the caller.
pub const MAX_IO_ATTEMPTS: u8 = 8;

/// Upper bound on attempts for each step of a cleanup. After that the change-log entry stays,
/// and recovery finishes the job later; nothing is lost by giving up.
pub const MAX_CLEANUP_ATTEMPTS: u8 = 16;

/// Longest single backoff between cleanup attempts, in milliseconds: long enough to ride out a
/// short outage, short enough that a shutdown `join()` is not held hostage for minutes.
pub const MAX_BACKOFF_MILLIS: u64 = 30_000;

const _: () = assert!(
    MAX_KEY_LEN >= 1,
    "a key must be able to hold at least one byte"
);
const _: () = assert!(DEFAULT_INLINE_THRESHOLD <= MAX_INLINE_THRESHOLD);
const _: () = assert!(
    MAX_REDIRECT_HOPS >= 1,
    "a get must be able to follow one tombstone"
);
const _: () = assert!(MAX_IO_ATTEMPTS >= 1 && MAX_CLEANUP_ATTEMPTS >= 1);
