//! # cairn-sim
//!
//! The deterministic simulator for cairn's core machines, in the style of TigerBeetle's VOPR and
//! FoundationDB's simulation testing. It drives `cairn-core` directly (never through an async
//! runtime) as a discrete-event [`sim`]: one seed decides everything — a virtual clock, an event
//! queue keyed by (time, sequence), the simulated tiers ([`world`]), N clients running tiered
//! operations on a few hot keys, and the faults ([`params`]: drawn per seed, swarm testing).
//!
//! After every step it checks the safety invariants (no dangling tombstone, no blob deleted while
//! referenced, no orphan blob); after a liveness phase with faults off it checks quiescence (no
//! orphan blob, no change-log entry left), per-key [`linearizability`] of the history, and that
//! acknowledged writes survive client crashes. A catalogue of planted [`bugs`] proves that these
//! checkers catch real protocol mistakes ([`mutants`]); failing seeds replay exactly and
//! [`shrink`] to a minimal list of decisions.
//!
//! ```
//! use cairn_sim::{params::Options, sim::{run, TapeSource}, trace::Sink};
//! let report = run(7, &Options::default(), TapeSource::Live, Sink::Off);
//! assert!(report.failure.is_none(), "{:?}", report.failure);
//! let again = run(7, &Options::default(), TapeSource::Live, Sink::Off);
//! assert_eq!(report.trace_hash, again.trace_hash, "one seed, one trace");
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod bugs;
pub mod durability;
pub mod history;
pub mod keys;
pub mod linearizability;
pub mod mutants;
pub mod panics;
pub mod params;
pub mod runner;
pub mod shrink;
pub mod sim;
pub mod stats;
pub mod tape;
pub mod trace;
pub mod world;
