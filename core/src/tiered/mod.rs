//! The tiered-object protocol: one machine per operation, plus the background cleanup and the
//! recovery pass. See `DESIGN.md` ("Tiered objects: the protocol").

mod cleanup;
mod commit;
mod delete;
mod get;
mod large_put;
mod mutation;
mod recovery;
mod small_put;

pub use cleanup::{Cleanup, CleanupOutcome, CleanupReport, PendingCleanup, Phase, Plan};
pub use delete::Delete;
pub use get::{Found, Get, GetResult};
pub use large_put::LargePut;
pub use mutation::{MutationDone, WriteOutcome};
pub use recovery::{Recovery, RecoveryReport};
pub use small_put::SmallPut;
