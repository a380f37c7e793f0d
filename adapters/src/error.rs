//! The errors a [`TieredStore`](crate::TieredStore) call returns, typed by whose fault they are.

use crate::backend::BackendError;
use crate::MetadataError;
use cairn_core::{Applied, ConfigError, KeyError, Revision, Tier, WriteError};
use std::io;

/// Why a store call failed.
///
/// - The caller's fault, nothing read or written: [`InvalidKey`](Error::InvalidKey),
///   [`InvalidMetadata`](Error::InvalidMetadata), [`InvalidRange`](Error::InvalidRange),
///   [`InvalidConfig`](Error::InvalidConfig), [`Body`](Error::Body).
/// - A backend's fault: [`Write`](Error::Write) (with whether it may have applied) and
///   [`Read`](Error::Read).
/// - Contention: [`Unstable`](Error::Unstable).
/// - Damage done outside cairn: [`Lost`](Error::Lost).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key is empty, too long, or contains NUL.
    #[error("invalid key: {0}")]
    InvalidKey(#[from] KeyError),
    /// Content type or user metadata break a limit.
    #[error("invalid metadata: {0}")]
    InvalidMetadata(#[from] MetadataError),
    /// The requested range selects no byte of the object.
    #[error("range not satisfiable: the object has {size} bytes")]
    InvalidRange {
        /// The object's size.
        size: u64,
    },
    /// A configuration value is out of bounds.
    #[error("invalid configuration: {0}")]
    InvalidConfig(#[from] ConfigError),
    /// The caller's body stream failed; nothing was committed.
    #[error("reading the object body failed: {0}")]
    Body(#[source] io::Error),
    /// A put or delete failed in a backend.
    #[error("{error}: {source}")]
    Write {
        /// Which tier failed and whether the write may have taken effect.
        error: WriteError,
        /// The backend's error.
        #[source]
        source: BackendError,
    },
    /// A read, listing, recovery or maintenance pass (a sweep of expired rows and blobs, fsck's
    /// repair) failed in a backend. Such passes only collect garbage: a failed one leaves the
    /// objects as they were, and the next pass tries again.
    #[error("{tier} failed: {source}")]
    Read {
        /// The tier that failed.
        tier: Tier,
        /// The backend's error.
        #[source]
        source: BackendError,
    },
    /// The key was overwritten under the read too many times in a row; retrying may succeed.
    #[error("the key kept changing under the read; try again")]
    Unstable,
    /// The key's tombstone points at a blob the long-term tier does not have: it was removed
    /// outside cairn, and the object is lost. `fsck` lists it as a dangling tombstone;
    /// overwriting or deleting the key clears it. (Processes whose clocks disagree by more than
    /// an object's remaining time to live — or a clock stepped back — can also see this for an
    /// expiring object whose blob one of them already swept.)
    #[error(
        "the object's blob (revision {revision}) is missing from the long-term tier: it was \
         removed outside cairn, and the object is lost (delete or overwrite the key to clear it)"
    )]
    Lost {
        /// The revision the tombstone points at.
        revision: Revision,
    },
}

impl Error {
    /// Whether the caller's input caused this (retrying the same call cannot help).
    pub fn is_caller_error(&self) -> bool {
        matches!(
            self,
            Error::InvalidKey(_)
                | Error::InvalidMetadata(_)
                | Error::InvalidRange { .. }
                | Error::InvalidConfig(_)
                | Error::Body(_)
        )
    }

    /// A body read back from the store that failed half way (a disk error under a long-term
    /// read): the long-term tier's failure, not the caller's ([`Error::Body`] is the caller's
    /// own stream failing).
    pub fn stored_body(e: io::Error) -> Error {
        Error::Read {
            tier: Tier::Lt,
            source: e.into(),
        }
    }

    /// For a failed write: whether it may have taken effect.
    pub fn applied(&self) -> Option<Applied> {
        match self {
            Error::Write { error, .. } => Some(error.applied),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    /// Every message in an error's chain, as `anyhow`'s `{:#}` or a `Caused by:` list shows it.
    fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
        std::iter::successors(Some(e), |&e| e.source())
            .map(ToString::to_string)
            .collect()
    }

    /// A backend's error is a transparent wrapper: it prints as the error it wraps, so its
    /// source is what that error names as its own, never the wrapped error a second time.
    #[test]
    fn a_backend_error_is_not_its_own_cause() {
        let disk = io::Error::other("disk full");
        let e = BackendError::new(disk);
        assert_eq!(chain(&e), ["disk full"]);
        assert!(e.source().is_none());
        assert!(e.source_ref().downcast_ref::<io::Error>().is_some());

        let write = Error::Write {
            error: WriteError {
                tier: cairn_core::Tier::Hv,
                applied: Applied::No,
            },
            source: BackendError::refused(io::Error::other("database is locked")),
        };
        let messages = chain(&write);
        let locked = messages
            .iter()
            .filter(|m| m.contains("database is locked"))
            .count();
        assert!(locked <= 2, "{messages:#?}");
    }
}
