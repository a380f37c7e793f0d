//! # cairn-core
//!
//! The sans-IO heart of cairn: pure, synchronous state machines that decide what to read and
//! write across a fast key-value tier (the *high-volume* tier, HV), a blob tier (the *long-term*
//! tier, LT) and a write-ahead change log. They perform no I/O, read no clock, draw no global
//! randomness, spawn nothing and allocate nothing. Drivers (tokio, smol, a blocking loop, the
//! deterministic simulator, or yours) perform the I/O they ask for.
//!
//! ## The driver loop
//!
//! Every machine — [`SmallPut`], [`LargePut`], [`Get`] (and head), [`Delete`], [`Cleanup`],
//! [`Recovery`] — implements [`Machine`] and is driven the same way:
//!
//! 1. Build the machine for one operation (validated key, ids, [`Config`]).
//! 2. Call [`Machine::poll`] with the current time:
//!    - [`Poll::Io`]`(request)`: perform the request against the named tier, then feed the answer
//!      to [`Machine::handle`] as the matching [`Completion`] (or [`Completion::Failed`]). One
//!      request is outstanding at a time; polling again before answering returns it again.
//!    - [`Poll::Wait`]`(instant)`: nothing to do until then (a cleanup backing off); poll again
//!      at or after that instant.
//!    - [`Poll::Done`]`(output)`: the machine is finished; never poll it again.
//! 3. Repeat step 2.
//!
//! Each `poll` and `handle` does a bounded amount of work. Payload bytes never pass through a
//! machine: the driver keeps the operation's body and hands it to the backend when a request
//! calls for it. A finished put or delete yields a [`MutationDone`] whose optional
//! [`PendingCleanup`] becomes a [`Cleanup`] machine, driven the same way: run it inline, spawn it,
//! or schedule it, but run it (or leave its change-log entry to [`Recovery`]).
//!
//! ## A worked example
//!
//! A small put driven by hand against a toy high-volume tier that holds one row:
//!
//! ```
//! use cairn_core::*;
//!
//! let config = Config::DEFAULT;
//! let now = Instant::from_millis(1_700_000_000_000);
//! let mut row = HvRow::Absent; // the toy HV tier
//!
//! let key = Key::new(b"greeting").expect("valid key");
//! let meta = ObjectMeta { size: 5, created: now, expires: None };
//! let mut ids = IdGen::new(7);
//! let mut put = SmallPut::new(key, meta, ids.change_id(now), config);
//!
//! let done = loop {
//!     match put.poll(now) {
//!         Poll::Io(Request::HvPutNonTombstone { meta, .. }) => {
//!             // A real backend would store the driver's 5 payload bytes with `meta`.
//!             let answer = match row {
//!                 HvRow::Tombstone(t) => Guarded::Blocked(t),
//!                 _ => { row = HvRow::Inline(meta); Guarded::Applied }
//!             };
//!             put.handle(Completion::Guarded(answer));
//!         }
//!         Poll::Io(other) => unreachable!("not in this example: {other}"),
//!         Poll::Wait(_) => unreachable!("only cleanups wait"),
//!         Poll::Done(done) => break done,
//!     }
//! };
//! assert_eq!(done.result, Ok(WriteOutcome::Committed));
//! assert!(done.cleanup.is_none());
//! assert_eq!(row, HvRow::Inline(meta));
//! ```
//!
//! The adapters crate writes this loop once, generically, for async and blocking drivers; the
//! simulator writes it once for its discrete-event world.
//!
//! ## Features
//!
//! - `alloc` (default): reserved for conveniences; no machine needs it. The crate builds and
//!   runs with `--no-default-features`.
//! - `planted-bugs` (off): compiles the deliberate protocol bugs that the simulator's mutation
//!   testing must catch (`PlantedBug`, selected through `Config::bug`). Never enable it in a
//!   build that stores data; without it, none of the deviations is compiled.

#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

mod cas;
mod config;
mod error;
mod id;
mod io;
mod key;
pub mod limits;
mod machine;
mod meta;
#[cfg(feature = "planted-bugs")]
mod planted;
mod range;
mod rng;
mod tiered;
mod time;

pub use cas::{cas_verdict, CasVerdict};
pub use config::{Config, ConfigError};
pub use error::{Applied, ReadError, WriteError};
pub use id::{ChangeId, IdGen, Revision};
pub use io::{BlobId, Change, Completion, Guarded, HvWrite, LogEntry, Request, Tier};
pub use key::{Key, KeyBuf, KeyError};
pub use machine::{Machine, Poll};
pub use meta::{HvRow, ObjectMeta, Tombstone};
#[cfg(feature = "planted-bugs")]
pub use planted::{cas_verdict_planted, PlantedBug};
pub use range::{ByteRange, RangeNotSatisfiable, Span};
pub use rng::Rng;
pub use tiered::*;
pub use time::{is_expired, Duration, Instant};
