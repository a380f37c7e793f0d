//! # cairn-tests
//!
//! Cross-crate integration and conformance tests. Everything lives under `tests/tests/`, among
//! them:
//!
//! - `behaviour.rs`: every scenario of the tiered store under tokio, smol and the blocking
//!   driver, against both legal compare-and-write behaviours, with convergence checks.
//! - `transcripts.rs`: the canonical scenarios of the tiered protocol, driven against the
//!   simulator's world and compared line by line with the files in `tests/transcripts/`
//!   (`CAIRN_BLESS=1` rewrites them).
//! - `alloc.rs`: a counting global allocator proves that no call into the core touches the heap,
//!   on every path of every machine and under every single or persistent I/O fault.
//! - `streaming.rs`: a 256 MiB object goes through the long-term path while the driver holds at
//!   most the inline threshold plus one chunk.
//!
//! The README's code examples are compiled and run as this crate's doctests, so they stay true.

#![forbid(unsafe_code)]

#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
