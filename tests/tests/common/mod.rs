//! Test code shared between test files: the behavioural suite, written once and run on every
//! set of backends (`behaviour.rs` on memory, one file per durable backend beside it).
//!
//! Each test file includes this module with `mod common;` and uses a different part of it, so
//! items unused by one file are expected.
#![allow(dead_code, unused_macros)]

pub mod api;
pub mod scenarios;
pub mod tiers;
