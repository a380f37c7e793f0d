//! In-memory backends (hashbrown maps behind mutexes), for tests, examples and benchmarks.
//! Nothing is durable.

mod hv;
mod log;
mod lt;

pub use hv::{CasMode, MemoryHv};
pub use log::MemoryLog;
pub use lt::MemoryLt;
