//! The change log on SQLite: the `changes` table, in the same database as the rows and written
//! through the same group commit, so `record` is durable when it returns. Entries belong to the
//! instance that recorded them; a scan returns this instance's entries and takes over those of
//! instances whose lease has run out (see `lease.rs`).

use super::codec::{id_from_blob, id_to_blob, instant_to_sql, Corrupt};
use super::writer::Shape;
use super::{lease, Shared, SqliteDb, SqliteError, SqliteErrorKind};
use crate::backend::{BackendResult, ChangeLog, InFlightEntries, LogRecord};
use cairn_core::{Change, ChangeId, KeyBuf, Revision};
use rusqlite::{params, OptionalExtension};
use std::sync::Arc;

/// Claims one scan may make before giving up. The first claim takes over every dead owner's
/// entries at once; another is needed only if a further instance dies during the scan.
const MAX_SCAN_CLAIMS: usize = 3;

const RECORD_SQL: &str = "
    INSERT INTO changes (id, owner, key, new, old) VALUES (?1, ?2, ?3, ?4, ?5)
    ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, key = excluded.key,
        new = excluded.new, old = excluded.old";
const REMOVE_SQL: &str = "DELETE FROM changes WHERE id = ?1";
/// The first entry after `?1` that is this instance's (`?2`) or whose owner is not live at `?3`.
const SCAN_SQL: &str = "
    SELECT id, owner, key, new, old FROM changes
    WHERE id > ?1 AND (owner = ?2 OR owner NOT IN
        (SELECT id FROM instances WHERE claimed = 0 AND lease_until > ?3))
    ORDER BY id LIMIT 1";
const ENTRIES_SQL: &str = "
    SELECT id, owner, key, new, old,
        owner IN (SELECT id FROM instances WHERE claimed = 0 AND lease_until > ?1)
    FROM changes ORDER BY id";

/// The change log over a [`SqliteDb`]. Cheap to clone.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use cairn_adapters::backend::ChangeLog;
/// use cairn_adapters::sqlite::{SqliteDb, SqliteOptions};
/// use cairn_core::{Change, ChangeId, Key};
/// let dir = std::env::temp_dir().join(format!("cairn-doc-log-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let db = SqliteDb::open(&dir.join("log.sqlite"), SqliteOptions::default())?;
/// let log = db.log();
/// futures_lite::future::block_on(async {
///     let change = Change { key: Key::new(b"k")?, new: None, old: None };
///     log.record(ChangeId(7), change).await?; // durable now
///     assert_eq!(log.scan(None).await?.map(|r| r.id), Some(ChangeId(7)));
///     log.remove(ChangeId(7)).await?;
///     Ok::<(), Box<dyn std::error::Error>>(())
/// })?;
/// # drop(log); drop(db); std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SqliteLog(pub Arc<SqliteDb>);

/// A change-log entry with its owner, as [`SqliteDb::log_entries`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedChange {
    /// The entry.
    pub record: LogRecord,
    /// The instance that owns it (see [`SqliteDb::instance_id`]).
    pub owner: i64,
    /// Whether that instance's lease is live now; a non-live owner's entry waits for a scan to
    /// take it over.
    pub owner_live: bool,
}

fn optional_revision(bytes: Option<&[u8]>) -> Result<Option<Revision>, Corrupt> {
    bytes.map(|b| id_from_blob(b).map(Revision)).transpose()
}

/// Decodes `id, owner, key, new, old`.
fn decode(row: &rusqlite::Row<'_>) -> Result<Result<(LogRecord, i64), Corrupt>, rusqlite::Error> {
    let id = row.get_ref(0)?.as_blob().map(<[u8]>::to_vec);
    let owner: i64 = row.get(1)?;
    let key = row.get_ref(2)?.as_blob().map(<[u8]>::to_vec);
    let new = row
        .get_ref(3)?
        .as_blob_or_null()
        .map(|b| b.map(<[u8]>::to_vec));
    let old = row
        .get_ref(4)?
        .as_blob_or_null()
        .map(|b| b.map(<[u8]>::to_vec));
    Ok((|| {
        let bad = |what: &'static str| move |e| Corrupt(format!("change-log {what}: {e}"));
        let id = ChangeId(id_from_blob(&id.map_err(bad("id"))?)?);
        let key = key.map_err(bad("key"))?;
        let key = KeyBuf::new(&key)
            .map_err(|e| Corrupt(format!("change {id}: key {}: {e}", key.escape_ascii())))?;
        let new = optional_revision(new.map_err(bad("new"))?.as_deref())?;
        let old = optional_revision(old.map_err(bad("old"))?.as_deref())?;
        Ok((LogRecord { id, key, new, old }, owner))
    })())
}

impl Shared {
    fn corrupt_log(&self, c: Corrupt) -> SqliteError {
        SqliteError::new(&self.path, SqliteErrorKind::Corrupt, c.0)
    }
}

impl SqliteLog {
    fn db(&self) -> &SqliteDb {
        &self.0
    }

    /// The first entry after `after` that is this instance's or has a non-live owner.
    fn find(&self, after: Option<ChangeId>) -> Result<Option<(LogRecord, i64)>, SqliteError> {
        let db = self.db();
        let shared = &db.shared;
        let after = after.map(|id| id_to_blob(id.0));
        let after: &[u8] = after.as_ref().map_or(&[], |a| &a[..]);
        let now = instant_to_sql(shared.clock.now());
        let found = db.readers.with(|conn| {
            conn.prepare_cached(SCAN_SQL)
                .and_then(|mut s| {
                    s.query_row(params![after, shared.lease.instance, now], decode)
                        .optional()
                })
                .map_err(shared.sqlite_err("scanning the change log"))
        })?;
        found.transpose().map_err(|c| shared.corrupt_log(c))
    }
}

impl ChangeLog for SqliteLog {
    async fn record(&self, id: ChangeId, change: Change<'_>) -> BackendResult<()> {
        let key = change.key.to_key_buf();
        let (new, old) = (change.new, change.old);
        self.db()
            .writer
            .submit_shaped("recording a change", Shape::Atomic, move |cx| {
                lease::ensure_live(cx, "recording a change")?;
                let blob = |r: Option<Revision>| r.map(|r| id_to_blob(r.0));
                cx.conn
                    .prepare_cached(RECORD_SQL)
                    .and_then(|mut s| {
                        s.execute(params![
                            &id_to_blob(id.0)[..],
                            cx.shared.lease.instance,
                            key.as_bytes(),
                            blob(new).as_ref().map(|b| &b[..]),
                            blob(old).as_ref().map(|b| &b[..]),
                        ])
                    })
                    .map(drop)
                    .map_err(cx.shared.sqlite_err("recording a change"))
            })
            .await?;
        Ok(())
    }

    async fn remove(&self, id: ChangeId) -> BackendResult<()> {
        self.db()
            .writer
            .submit_shaped("removing a change", Shape::Lazy, move |cx| {
                cx.conn
                    .prepare_cached(REMOVE_SQL)
                    .and_then(|mut s| s.execute([&id_to_blob(id.0)[..]]))
                    .map(drop)
                    .map_err(cx.shared.sqlite_err("removing a change"))
            })
            .await?;
        Ok(())
    }

    async fn scan(&self, after: Option<ChangeId>) -> BackendResult<Option<LogRecord>> {
        let me = self.db().shared.lease.instance;
        for _ in 0..MAX_SCAN_CLAIMS {
            match self.find(after)? {
                None => return Ok(None),
                Some((record, owner)) if owner == me => return Ok(Some(record)),
                Some(_) => {
                    self.db()
                        .writer
                        .submit("claiming a dead instance's changes", move |cx| {
                            lease::ensure_live(cx, "claiming a dead instance's changes")?;
                            lease::claim(cx.conn, me, cx.shared.clock.now())
                                .map_err(cx.shared.sqlite_err("claiming changes"))
                        })
                        .await?;
                }
            }
        }
        Err(SqliteError::new(
            &self.db().shared.path,
            SqliteErrorKind::Sqlite,
            "scanning the change log: owners kept dying during the scan; try again",
        )
        .into())
    }

    /// Every store over this database is one instance, owner of all their entries: they share
    /// one registry of the entries in use.
    fn in_flight(&self) -> Option<&InFlightEntries> {
        Some(&self.db().shared.in_flight)
    }
}

impl SqliteDb {
    /// Every change-log entry, of every instance, in id order, with its owner: what `fsck`
    /// reports. Runs on the calling thread.
    pub fn log_entries(&self) -> BackendResult<Vec<LoggedChange>> {
        let shared = &self.shared;
        let now = instant_to_sql(shared.clock.now());
        let entries = self.readers.with(|conn| {
            let err = shared.sqlite_err("listing the change log");
            let mut stmt = conn.prepare_cached(ENTRIES_SQL).map_err(&err)?;
            let rows = stmt
                .query_map([now], |row| Ok((decode(row)?, row.get::<_, bool>(5)?)))
                .map_err(&err)?;
            let mut out = Vec::new();
            for row in rows {
                let (decoded, owner_live) = row.map_err(&err)?;
                let (record, owner) = decoded.map_err(|c| shared.corrupt_log(c))?;
                out.push(LoggedChange {
                    record,
                    owner,
                    owner_live,
                });
            }
            Ok(out)
        })?;
        Ok(entries)
    }
}
