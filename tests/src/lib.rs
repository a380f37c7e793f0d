//! # cairn-tests
//!
//! Cross-crate integration and conformance tests. Everything lives under `tests/tests/`, among
//! them:
//!
//! - `transcripts.rs`: the canonical scenarios of the tiered protocol, driven against the
//!   simulator's world and compared line by line with the files in `tests/transcripts/`
//!   (`CAIRN_BLESS=1` rewrites them).

#![forbid(unsafe_code)]
