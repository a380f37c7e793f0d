//! The database layout, the pragmas every connection gets, and the one-time setup on open.
//!
//! ```sql
//! rows(key BLOB PRIMARY KEY, kind INTEGER, meta BLOB, revision BLOB, size INTEGER,
//!      expires INTEGER, payload BLOB)          -- one high-volume row per key
//! instances(id INTEGER PRIMARY KEY AUTOINCREMENT, lease_until INTEGER, claimed INTEGER)
//! changes(id BLOB PRIMARY KEY, owner INTEGER, key BLOB, new BLOB, old BLOB)   -- the change log
//! ```
//!
//! A row is an inline object (`kind` 1: encoded metadata and payload) or a tombstone (`kind` 2:
//! revision, size, expiry; empty metadata, no payload), never both: a `CHECK` constraint makes a
//! mixed row impossible to store. `payload` is the *last* column on purpose: SQLite stores a
//! record's columns in order and spills large ones to overflow pages, so every column before the
//! payload sits in the row's first page, and a metadata read never walks the payload's overflow
//! chain.

use super::{SqliteError, SqliteOptions, Synchronous};
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::sync::Arc;

/// `PRAGMA application_id` of a cairn database ("cair"), so cairn refuses a foreign SQLite file
/// instead of adding tables to it.
pub(crate) const APPLICATION_ID: i32 = 0x6361_6972;

/// `PRAGMA user_version` this build creates and reads.
pub(crate) const SCHEMA_VERSION: i32 = 1;

/// Prepared statements kept per connection. cairn issues about twenty distinct statements; the
/// headroom keeps every one of them cached without evictions.
const STATEMENT_CACHE_CAPACITY: usize = 48;

/// `rows.kind` of an inline object.
pub(crate) const KIND_INLINE: i64 = 1;
/// `rows.kind` of a tombstone.
pub(crate) const KIND_TOMBSTONE: i64 = 2;

pub(crate) const CREATE: &str = "
CREATE TABLE rows (
    key      BLOB PRIMARY KEY NOT NULL,
    kind     INTEGER NOT NULL,
    meta     BLOB NOT NULL,
    revision BLOB,
    size     INTEGER NOT NULL,
    expires  INTEGER,
    payload  BLOB,
    CHECK ((kind = 1 AND revision IS NULL AND payload IS NOT NULL)
        OR (kind = 2 AND revision IS NOT NULL AND payload IS NULL AND length(meta) = 0))
);
CREATE INDEX rows_expires ON rows(expires) WHERE expires IS NOT NULL;
CREATE TABLE instances (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    lease_until INTEGER NOT NULL,
    claimed     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE changes (
    id    BLOB PRIMARY KEY NOT NULL,
    owner INTEGER NOT NULL,
    key   BLOB NOT NULL,
    new   BLOB,
    old   BLOB
) WITHOUT ROWID;
CREATE INDEX changes_owner ON changes(owner);
";

/// Why a file could not be set up as a cairn database.
pub(crate) enum SetupError {
    Sqlite(SqliteError),
    NotCairn,
    Version(i32),
}

/// Opens one connection with cairn's pragmas. The writer creates the file (then see
/// [`writer_mode`]); readers only read.
pub(crate) fn connect(
    path: &Arc<Path>,
    options: &SqliteOptions,
    writer: bool,
) -> Result<Connection, SqliteError> {
    let err = |e| SqliteError::sqlite(path, "opening a connection", e);
    // No SQLITE_OPEN_URI: a path is a path, never a `file:` URI with options.
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if writer {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags).map_err(err)?;
    conn.busy_timeout(options.busy_timeout).map_err(err)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    if !writer {
        conn.pragma_update(None, "query_only", true).map_err(err)?;
    }
    persist_wal(&conn).map_err(err)?;
    if writer {
        // What `reserve` needs: without a chunk size, SQLite takes size hints for no-ops.
        let mut chunk: std::ffi::c_int = RESERVE_CHUNK;
        #[allow(unsafe_code)]
        // SAFETY: SQLITE_FCNTL_CHUNK_SIZE reads one `int`.
        unsafe { file_control(&conn, rusqlite::ffi::SQLITE_FCNTL_CHUNK_SIZE, &mut chunk) }
            .map_err(err)?;
    }
    Ok(conn)
}

/// The unit in which the write connection grows the database file (`SQLITE_FCNTL_CHUNK_SIZE`):
/// one page of SQLite's default size, so that the file grows by what it needs and no more.
const RESERVE_CHUNK: std::ffi::c_int = 4096;

/// Makes room in the database file for every page the write transaction under way leaves it
/// with, before it commits; fails (as [`SqliteErrorKind::Full`](super::SqliteErrorKind::Full)
/// on a full disk) if there is none.
///
/// In WAL mode a commit writes only the WAL; the database file grows later, when a checkpoint
/// copies the new pages into it. On a full disk that copy would fail, and a WAL that cannot be
/// copied back can never start over: every later write, a delete included, would need the WAL
/// to grow, and fail — in this process and, once it closed, in every process that opens the
/// store (opening registers an instance, a write). Room made at the commit keeps the WAL
/// copyable at any time: a commit that would make the database larger than the disk allows
/// fails instead, before anything is written.
///
/// SQLite makes the room itself (`SQLITE_FCNTL_SIZE_HINT`): it writes a byte into each new
/// block of the file, which allocates it, and so costs a small write per new page, only when
/// the database grows.
pub(crate) fn reserve(conn: &Connection, path: &Arc<Path>) -> Result<(), SqliteError> {
    let what = "making room in the database file for its new pages";
    let mut bytes: i64 = conn
        .prepare_cached("SELECT page_count * page_size FROM pragma_page_count, pragma_page_size")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(|e| SqliteError::sqlite(path, what, e))?;
    #[allow(unsafe_code)]
    // SAFETY: SQLITE_FCNTL_SIZE_HINT reads one `sqlite3_int64`.
    let hinted = unsafe { file_control(conn, rusqlite::ffi::SQLITE_FCNTL_SIZE_HINT, &mut bytes) };
    match hinted {
        Ok(()) => Ok(()),
        Err(e) => {
            // SQLite reports the failed write as an I/O error; the file's last error says why.
            let mut errno: std::ffi::c_int = 0;
            #[allow(unsafe_code)]
            // SAFETY: SQLITE_FCNTL_LAST_ERRNO writes one `int`.
            let known =
                unsafe { file_control(conn, rusqlite::ffi::SQLITE_FCNTL_LAST_ERRNO, &mut errno) };
            let io = std::io::Error::from_raw_os_error(errno);
            if known.is_err() || errno == 0 {
                return Err(SqliteError::sqlite(path, what, e));
            }
            let kind = match io.kind() {
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                    super::SqliteErrorKind::Full
                }
                _ => return Err(SqliteError::sqlite(path, what, e)),
            };
            Err(SqliteError::new(path, kind, format!("{what} failed: {io}")))
        }
    }
}

/// Keeps the `-wal` and `-shm` files when the last connection closes, instead of deleting them.
///
/// On a full disk SQLite cannot create them again (the `-shm` file alone needs 32 KiB), so every
/// later open — even one that only reads — would fail with a disk I/O error, and `cairn rm`
/// could not free the space that would let it. Kept, the files are reused as they are: a new
/// transaction overwrites a fully checkpointed WAL from its start, so deleting objects needs no
/// new space either. (The WAL a clean close leaves is fully checkpointed; SQLite ignores its
/// stale frames.)
fn persist_wal(conn: &Connection) -> rusqlite::Result<()> {
    let mut on: std::ffi::c_int = 1;
    #[allow(unsafe_code)]
    // SAFETY: SQLITE_FCNTL_PERSIST_WAL reads and writes one `int`.
    unsafe {
        file_control(conn, rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL, &mut on)
    }
}

/// `sqlite3_file_control` on the main database of `conn`.
///
/// # Safety
///
/// `op` must read and write at most one `T` through its argument.
#[allow(unsafe_code)]
unsafe fn file_control<T>(
    conn: &Connection,
    op: std::ffi::c_int,
    arg: &mut T,
) -> rusqlite::Result<()> {
    use rusqlite::ffi;
    let arg: *mut T = arg;
    // SAFETY: `handle` is this open connection's, used only for the duration of the call; `op`
    // reads and writes at most one `T` through the pointer (the caller's promise), which comes
    // from a `&mut T` alive for the call. "main" is a NUL-terminated C string literal.
    let rc = unsafe { ffi::sqlite3_file_control(conn.handle(), c"main".as_ptr(), op, arg.cast()) };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None))
    }
}

/// Turns on WAL (which is persistent: it changes the file) and sets `synchronous` on the write
/// connection — only once [`check`] found the file to be cairn's, or new.
pub(crate) fn writer_mode(
    conn: &Connection,
    path: &Arc<Path>,
    options: &SqliteOptions,
) -> Result<(), SqliteError> {
    let err = |e| SqliteError::sqlite(path, "opening a connection", e);
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(SqliteError::new(
            path,
            super::SqliteErrorKind::Sqlite,
            format!("cannot switch to WAL mode (journal_mode is {mode})"),
        ));
    }
    let sync = match options.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync).map_err(err)
}

/// Whether the file is a cairn database of a version this build reads (`Ok(false)`) or a new,
/// empty one (`Ok(true)`); anything else is refused. Only reads, in one statement and so one
/// snapshot: another process creating the schema meanwhile is seen wholly or not at all (read
/// piecemeal, its application id could be missed and its tables seen, a cairn file taken for a
/// foreign one).
pub(crate) fn check(conn: &Connection, path: &Arc<Path>) -> Result<bool, SetupError> {
    let err = |e| SetupError::Sqlite(SqliteError::sqlite(path, "checking the schema", e));
    let (app, version, tables): (i32, i32, i64) = conn
        .query_row(
            "SELECT (SELECT application_id FROM pragma_application_id), \
                    (SELECT user_version FROM pragma_user_version), \
                    (SELECT count(*) FROM sqlite_schema)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(err)?;
    match (app, version, tables) {
        (APPLICATION_ID, SCHEMA_VERSION, _) => Ok(false),
        (APPLICATION_ID, found, _) => Err(SetupError::Version(found)),
        (0, 0, 0) => Ok(true),
        _ => Err(SetupError::NotCairn),
    }
}

/// Creates the tables in a fresh file, or checks that an existing one is a cairn database of a
/// version this build reads. Runs inside the caller's write transaction (so that of two
/// processes creating the same file, one creates and the other finds it made).
pub(crate) fn setup(conn: &Connection, path: &Arc<Path>) -> Result<(), SetupError> {
    if !check(conn, path)? {
        return Ok(());
    }
    let err = |e| SetupError::Sqlite(SqliteError::sqlite(path, "creating the schema", e));
    conn.execute_batch(CREATE).map_err(err)?;
    conn.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(err)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(err)?;
    Ok(())
}
