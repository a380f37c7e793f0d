//! # cairn-adapters
//!
//! Everything around cairn's sans-IO core that touches the world: the backend contracts for the
//! three tiers ([`backend`]), in-memory backends ([`memory`]), a fault-injecting wrapper for tests
//! ([`fault`]), and the drivers that run the core's machines against backends — async on any
//! runtime ([`TieredStore`], with `TokioRuntime` / `SmolRuntime` behind the `tokio` and `smol`
//! features) or on the calling thread ([`BlockingStore`]).
//!
//! The core's types a caller meets in answers and options (`ByteRange`, `Duration`,
//! `WriteOutcome`, …) are re-exported here, and the whole core as [`cairn_core`].
//!
//! The driver loop is written once (`driver.rs`): poll the machine, perform its request against
//! a backend, feed the completion back. Payload bytes stay here; the core sees sizes.
//!
//! ```
//! use cairn_adapters::memory::{MemoryHv, MemoryLog, MemoryLt};
//! use cairn_adapters::{BlockingStore, PutOptions};
//! use cairn_core::ByteRange;
//!
//! let store = BlockingStore::new(MemoryHv::new(), MemoryLt::new(), MemoryLog::new());
//! store.put("greeting", "hello, world", &PutOptions::default().content_type("text/plain"))?;
//! let part = store.get_range("greeting", ByteRange::Inclusive { start: 7, end: 11 })?.unwrap();
//! assert_eq!(part.body.bytes_blocking()?, "world");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod backend;
#[cfg(feature = "blobdir")]
pub mod blobdir;
mod blocking;
mod body;
mod clock;
mod driver;
#[cfg(all(feature = "sqlite", feature = "blobdir"))]
pub mod embedded;
mod error;
pub mod fault;
pub mod memory;
mod metadata;
#[cfg(any(feature = "sqlite", feature = "blobdir"))]
mod oneshot;
mod runtime;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod store;

pub use blocking::BlockingStore;
pub use body::Body;
pub use cairn_core;
pub use cairn_core::{
    Applied, ByteRange, Config, Duration, Instant, Key, KeyBuf, ReadError, RecoveryReport,
    Revision, Span, WriteError, WriteOutcome,
};
pub use clock::{Clock, CoarseClock, ManualClock, SystemClock};
pub use error::Error;
pub use metadata::{
    Labels, Metadata, MetadataError, PutOptions, MAX_CONTENT_TYPE_LEN, MAX_TTL,
    MAX_USER_METADATA_LEN,
};
#[cfg(feature = "smol")]
pub use runtime::SmolRuntime;
#[cfg(feature = "tokio")]
pub use runtime::TokioRuntime;
pub use runtime::{BlockingJob, InlineRuntime, Runtime, Task};
pub use store::{
    ListPage, Location, Object, ObjectInfo, StoreBuilder, TieredStore, MAX_LIST_LIMIT,
};

/// Locks a mutex, ignoring poisoning: no critical section in this crate leaves its data half
/// updated before something that could panic, so a poisoned lock still guards valid data.
pub(crate) fn memory_lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
