//! What went wrong in the SQLite tiers: which database, what cairn was doing, and whether waiting
//! or reopening could help. Every failure reaches the driver as a
//! [`BackendError`](crate::backend::BackendError) wrapping a [`SqliteError`]; callers who care
//! downcast it and look at [`SqliteError::kind`].

use rusqlite::ErrorCode;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// The kind of a [`SqliteError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SqliteErrorKind {
    /// Another connection (another process, or another handle in this one) held the database's
    /// write lock for longer than the busy timeout. Nothing was written; retrying later may
    /// succeed.
    Busy,
    /// This handle stalled past its instance lease and another instance claimed its change-log
    /// entries: it may no longer record changes or compare-and-write. Reopen the database to get
    /// a fresh instance.
    Fenced,
    /// The file holds a row cairn cannot decode (damaged metadata, a malformed revision, a key that
    /// breaks the key rules). The row is reported, never trusted.
    Corrupt,
    /// The writer thread has stopped (the database is closing, or the thread died).
    Closed,
    /// The database, or the directory it is in, cannot be written (a read-only file system,
    /// permissions). cairn writes even to read: opening registers an instance with a lease, and
    /// the embedded store recovers on open.
    ReadOnly,
    /// The disk (or the file system, or a quota) is full: the write needed space that is not
    /// there. Deleting objects frees space, and needs none: the writer tries such a write again
    /// once it has copied the WAL back into the database, so that the write can start the WAL
    /// over instead of growing it (see [the module docs](super#a-full-disk)).
    Full,
    /// Any other SQLite failure: I/O, a damaged file.
    Sqlite,
}

/// A failure of the SQLite high-volume tier or change log.
///
/// ```
/// use cairn_adapters::sqlite::{SqliteError, SqliteErrorKind};
/// fn should_retry(e: &cairn_adapters::backend::BackendError) -> bool {
///     e.source_ref()
///         .downcast_ref::<SqliteError>()
///         .is_some_and(|e| e.kind() == SqliteErrorKind::Busy)
/// }
/// ```
#[derive(Clone, Debug)]
pub struct SqliteError {
    kind: SqliteErrorKind,
    path: Arc<Path>,
    /// What cairn was doing, or what is wrong.
    what: String,
    source: Option<Arc<rusqlite::Error>>,
    /// The request certainly took no effect (it failed before its batch's commit).
    refused: bool,
}

impl SqliteError {
    /// Classifies a SQLite failure that happened while doing `what`.
    pub(crate) fn sqlite(path: &Arc<Path>, what: impl Into<String>, e: rusqlite::Error) -> Self {
        let kind = match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => SqliteErrorKind::Busy,
            Some(ErrorCode::ReadOnly) => SqliteErrorKind::ReadOnly,
            Some(ErrorCode::DiskFull) => SqliteErrorKind::Full,
            // On a read-only file system SQLite opens the file read-only without a word, then
            // cannot create the WAL's shared-memory file beside it: "unable to open".
            Some(ErrorCode::CannotOpen) if unwritable(path) => SqliteErrorKind::ReadOnly,
            _ => SqliteErrorKind::Sqlite,
        };
        SqliteError {
            kind,
            path: path.clone(),
            what: what.into(),
            source: Some(Arc::new(e)),
            refused: false,
        }
    }

    /// A failure cairn itself detected.
    pub(crate) fn new(path: &Arc<Path>, kind: SqliteErrorKind, what: impl Into<String>) -> Self {
        SqliteError {
            kind,
            path: path.clone(),
            what: what.into(),
            source: None,
            refused: false,
        }
    }

    /// The same failure, known to have come before the request's commit point: nothing of it
    /// took effect, and nothing will.
    pub(crate) fn refused(mut self) -> Self {
        self.refused = true;
        self
    }

    /// Whether the request certainly took no effect: it failed before its transaction's commit
    /// (a busy lock at its start, its own statement undone, a fenced lease). A failure of the
    /// commit itself may have taken effect, and is not refused.
    pub fn is_refused(&self) -> bool {
        self.refused
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> SqliteErrorKind {
        self.kind
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether the database file exists and certainly cannot be written (a read-only file system,
/// permissions).
fn unwritable(path: &Path) -> bool {
    use std::io::ErrorKind::{PermissionDenied, ReadOnlyFilesystem};
    let target = match path.exists() {
        true => std::fs::OpenOptions::new().append(true).open(path),
        false => return false,
    };
    matches!(target, Err(e) if matches!(e.kind(), ReadOnlyFilesystem | PermissionDenied))
}

impl fmt::Display for SqliteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        let what = &self.what;
        match self.kind {
            SqliteErrorKind::Busy => write!(
                f,
                "SQLite database {path} is busy: {what} waited longer than the busy timeout for \
                 another connection's lock"
            ),
            SqliteErrorKind::Fenced => write!(f, "SQLite database {path}: {what}"),
            SqliteErrorKind::Corrupt => write!(f, "SQLite database {path} is damaged: {what}"),
            SqliteErrorKind::Closed => {
                write!(
                    f,
                    "SQLite database {path}: {what}: the writer thread has stopped"
                )
            }
            SqliteErrorKind::ReadOnly => write!(
                f,
                "SQLite database {path} cannot be written ({what}): cairn needs write access to \
                 it and its directory even to read, since opening registers a lease and recovers"
            ),
            SqliteErrorKind::Sqlite | SqliteErrorKind::Full => match &self.source {
                Some(source) => write!(f, "SQLite database {path}: {what} failed: {source}"),
                None => write!(f, "SQLite database {path}: {what}"),
            },
        }
    }
}

/// The cause, unless the message already names it: then the cause's own cause, so that a report
/// walking the chain shows no message twice.
impl std::error::Error for SqliteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let cause = self.source.as_deref()?;
        match self.kind {
            SqliteErrorKind::Sqlite | SqliteErrorKind::Full => cause.source(),
            _ => Some(cause),
        }
    }
}

impl From<SqliteError> for crate::backend::BackendError {
    fn from(e: SqliteError) -> Self {
        if e.refused {
            crate::backend::BackendError::refused(e)
        } else {
            crate::backend::BackendError::new(e)
        }
    }
}
