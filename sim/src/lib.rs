//! # cairn-sim
//!
//! The deterministic simulator for cairn's core machines. It drives `cairn-core` directly (never
//! through an async runtime) against [`world`], an in-memory model of the high-volume tier, the
//! long-term tier and the change log, and checks the protocol's invariants on it.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod world;
