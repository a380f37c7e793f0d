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
///
/// Every message is whole: it names its cause's message too, so printing it alone says all.
/// [`source`](std::error::Error::source) therefore goes on from what the message has not
/// already said (the cause's own cause), and a report that walks the chain (`anyhow`'s `{:#}`,
/// a `Caused by:` list) shows nothing twice. The variants' fields hold the cause itself.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The key is empty, too long, or contains NUL.
    InvalidKey(KeyError),
    /// Content type or user metadata break a limit.
    InvalidMetadata(MetadataError),
    /// The requested range selects no byte of the object.
    InvalidRange {
        /// The object's size.
        size: u64,
    },
    /// A configuration value is out of bounds.
    InvalidConfig(ConfigError),
    /// The caller's body stream failed; nothing was committed.
    Body(io::Error),
    /// A put or delete failed in a backend.
    Write {
        /// Which tier failed and whether the write may have taken effect.
        error: WriteError,
        /// The backend's error.
        source: BackendError,
    },
    /// A read, listing, recovery or maintenance pass (a sweep of expired rows and blobs, fsck's
    /// repair) failed in a backend. Such passes only collect garbage: a failed one leaves the
    /// objects as they were, and the next pass tries again.
    Read {
        /// The tier that failed.
        tier: Tier,
        /// The backend's error.
        source: BackendError,
    },
    /// The key was overwritten under the read too many times in a row; retrying may succeed.
    Unstable,
    /// The key's tombstone points at a blob the long-term tier does not have: it was removed
    /// outside cairn, and the object is lost. `fsck` lists it as a dangling tombstone;
    /// overwriting or deleting the key clears it. (Processes whose clocks disagree by more than
    /// an object's remaining time to live — or a clock stepped back — can also see this for an
    /// expiring object whose blob one of them already swept.)
    Lost {
        /// The revision the tombstone points at.
        revision: Revision,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::InvalidKey(e) => write!(f, "invalid key: {e}"),
            Error::InvalidMetadata(e) => write!(f, "invalid metadata: {e}"),
            Error::InvalidRange { size } => {
                write!(f, "range not satisfiable: the object has {size} bytes")
            }
            Error::InvalidConfig(e) => write!(f, "invalid configuration: {e}"),
            Error::Body(e) => write!(f, "reading the object body failed: {e}"),
            Error::Write { error, source } => write!(f, "{error}: {source}"),
            Error::Read { tier, source } => write!(f, "{tier} failed: {source}"),
            Error::Unstable => f.write_str("the key kept changing under the read; try again"),
            Error::Lost { revision } => write!(
                f,
                "the object's blob (revision {revision}) is missing from the long-term tier: it \
                 was removed outside cairn, and the object is lost (delete or overwrite the key \
                 to clear it)"
            ),
        }
    }
}

/// See [`Error`]: each message already holds its cause's, so the chain goes on from the
/// cause's own cause.
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::InvalidKey(e) => e.source(),
            Error::InvalidMetadata(e) => e.source(),
            Error::InvalidConfig(e) => e.source(),
            Error::Body(e) => e.source(),
            Error::Write { source, .. } | Error::Read { source, .. } => source.source(),
            Error::InvalidRange { .. } | Error::Unstable | Error::Lost { .. } => None,
        }
    }
}

impl From<KeyError> for Error {
    fn from(e: KeyError) -> Self {
        Error::InvalidKey(e)
    }
}

impl From<MetadataError> for Error {
    fn from(e: MetadataError) -> Self {
        Error::InvalidMetadata(e)
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::InvalidConfig(e)
    }
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

    /// Whether a backend failed for want of space: the disk, the file system or a quota is
    /// full (an I/O error of kind [`StorageFull`](io::ErrorKind::StorageFull) or
    /// [`QuotaExceeded`](io::ErrorKind::QuotaExceeded), or a `SqliteError` of kind
    /// `SqliteErrorKind::Full`). Deleting objects frees space, and needs none.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Write { source, .. } | Error::Read { source, .. } => disk_full(source),
            _ => false,
        }
    }
}

/// Whether `e` wraps a full disk's error.
fn disk_full(e: &BackendError) -> bool {
    let e = e.source_ref();
    if let Some(io) = e.downcast_ref::<io::Error>() {
        return matches!(
            io.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        );
    }
    #[cfg(feature = "sqlite")]
    if let Some(sqlite) = e.downcast_ref::<crate::sqlite::SqliteError>() {
        return sqlite.kind() == crate::sqlite::SqliteErrorKind::Full;
    }
    false
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
        assert_eq!(locked, 1, "{messages:#?}");
    }

    /// A store error's message names its cause, so its chain goes on from the cause's cause:
    /// no message appears twice, and nothing the cause chain held is lost.
    #[test]
    fn no_store_error_repeats_its_cause_in_a_chain() {
        #[derive(Debug)]
        struct Deep;
        impl std::fmt::Display for Deep {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("sector 7 unreadable")
            }
        }
        impl std::error::Error for Deep {}
        #[derive(Debug)]
        struct Shallow(Deep);
        impl std::fmt::Display for Shallow {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("reading the row failed")
            }
        }
        impl std::error::Error for Shallow {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let read = Error::Read {
            tier: Tier::Hv,
            source: BackendError::new(Shallow(Deep)),
        };
        assert_eq!(
            chain(&read),
            [
                "high-volume tier failed: reading the row failed".to_string(),
                "sector 7 unreadable".to_string()
            ]
        );
        let key = Error::from(cairn_core::Key::new(b"").unwrap_err());
        assert_eq!(chain(&key).len(), 1, "{:?}", chain(&key));
        let body = Error::Body(io::Error::other(Shallow(Deep)));
        assert_eq!(
            chain(&body),
            [
                "reading the object body failed: reading the row failed".to_string(),
                "sector 7 unreadable".to_string()
            ]
        );
    }
}
