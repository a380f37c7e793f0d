//! # cairn-tests
//!
//! Cross-crate integration and conformance tests. Everything lives under `tests/tests/`, among
//! them:
//!
//! - `transcripts.rs`: the canonical scenarios of the tiered protocol, driven against the
//!   simulator's world and compared line by line with the files in `tests/transcripts/`
//!   (`CAIRN_BLESS=1` rewrites them).
//! - `alloc.rs`: a counting global allocator proves that no call into the core touches the heap,
//!   on every path of every machine and under every single or persistent I/O fault.

#![forbid(unsafe_code)]
