//! The high-volume tier on SQLite: one row per key in `rows`, read on the caller's thread,
//! written through group commit. Every conditional operation is one job, so it runs atomically
//! inside the batch transaction, and judges the row as live at the request's `now` exactly like
//! the in-memory tier (`cairn_core::cas_verdict` on `HvRow::at(now)`).

use super::codec::{
    decode_meta, encode_meta, id_from_blob, id_to_blob, instant_from_sql, instant_to_sql,
    size_from_sql, size_to_sql, Corrupt,
};
use super::schema::{KIND_INLINE, KIND_TOMBSTONE};
use super::writer::{Shape, WriteCx};
use super::{lease, CasMode, Shared, SqliteDb, SqliteError, SqliteErrorKind};
use crate::backend::{BackendResult, HvBackend, ListEntry, Row, Write};
use crate::Metadata;
use bytes::Bytes;
use cairn_core::{
    cas_verdict, CasVerdict, Guarded, HvRow, HvWrite, Instant, Key, KeyBuf, ObjectMeta, Revision,
    Tombstone,
};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension, Statement};
use std::sync::Arc;

// Every read selects the row's head (`kind, revision, size, expires`) first, then `meta`, then
// `payload`, as far as it needs: see `Head` and `decode`.

/// A metadata read: every column but `payload`, so SQLite never touches the payload's pages.
pub(crate) const READ_META_SQL: &str =
    "SELECT kind, revision, size, expires, meta FROM rows WHERE key = ?1";
/// A full read.
pub(crate) const READ_FULL_SQL: &str =
    "SELECT kind, revision, size, expires, meta, payload FROM rows WHERE key = ?1";
/// What a conditional write needs to decide: the head alone.
const PROBE_SQL: &str = "SELECT kind, revision, size, expires FROM rows WHERE key = ?1";
/// Writes a row. With `?8` NULL it always writes. With `?8` = now it replaces an inline row or a
/// tombstone that has expired by then (`expires <= now`), and leaves a live tombstone alone, and
/// a row of an unknown kind too: the probe after a write that did not happen then reports the
/// tombstone, or the row as corrupt, as a probe before the write would have. A put that a live
/// tombstone blocks is thus decided and written in one statement. (An inline row, or an expired
/// tombstone, whose head is damaged is replaced rather than reported: the write makes it whole.)
const UPSERT_SQL: &str = "
    INSERT INTO rows (key, kind, meta, revision, size, expires, payload)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
    ON CONFLICT (key) DO UPDATE SET kind = excluded.kind, meta = excluded.meta,
        revision = excluded.revision, size = excluded.size, expires = excluded.expires,
        payload = excluded.payload
    WHERE ?8 IS NULL OR rows.kind = 1 OR (rows.kind = 2 AND rows.expires <= ?8)";
/// Deletes a row; `?2` as in [`UPSERT_SQL`].
const DELETE_SQL: &str = "
    DELETE FROM rows WHERE key = ?1 AND (?2 IS NULL OR kind = 1 OR (kind = 2 AND expires <= ?2))";
/// Live rows in `[lower, upper)`, bytewise (BLOB comparison is `memcmp`), never `LIKE`.
const LIST_RANGE_SQL: &str = "
    SELECT key, kind, revision, size, expires, meta FROM rows
    WHERE key >= ?1 AND key < ?2 AND (expires IS NULL OR expires > ?3)
    ORDER BY key LIMIT ?4";
/// Live rows from `lower` on, for a prefix without a successor (empty, or all `0xFF`).
const LIST_FROM_SQL: &str = "
    SELECT key, kind, revision, size, expires, meta FROM rows
    WHERE key >= ?1 AND (expires IS NULL OR expires > ?2)
    ORDER BY key LIMIT ?3";
/// Every stored row after a key, expired ones included, for `fsck`.
const ROWS_SQL: &str = "
    SELECT key, kind, revision, size, expires, meta FROM rows
    WHERE key > ?1 ORDER BY key LIMIT ?2";
/// Whether a tombstone, or a change-log entry, refers to blob `?2` of key `?1`: one statement,
/// so both are read in one snapshot.
const REFERENCED_SQL: &str = "
    SELECT EXISTS (SELECT 1 FROM rows WHERE key = ?1 AND kind = 2 AND revision = ?2)
        OR EXISTS (SELECT 1 FROM changes WHERE key = ?1 AND (new = ?2 OR old = ?2))";
/// Whether any tombstone (live or expired) or change-log entry refers to a blob.
const ANY_BLOB_SQL: &str = "
    SELECT EXISTS (SELECT 1 FROM rows WHERE kind = 2) OR EXISTS (SELECT 1 FROM changes)";
/// Whether the row of key `?1` is a tombstone for revision `?2`, live at `?3`.
const TOMBSTONE_SQL: &str = "
    SELECT EXISTS (SELECT 1 FROM rows WHERE key = ?1 AND kind = 2 AND revision = ?2
        AND (expires IS NULL OR expires > ?3))";
/// At most `?2` rows whose expiry has passed at `?1`.
const SWEEP_SQL: &str = "
    DELETE FROM rows WHERE rowid IN
        (SELECT rowid FROM rows WHERE expires <= ?1 ORDER BY expires LIMIT ?2)";

/// The high-volume tier over a [`SqliteDb`]. Cheap to clone.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use cairn_adapters::sqlite::{SqliteDb, SqliteOptions};
/// use cairn_adapters::{BlockingStore, PutOptions, memory::MemoryLt};
/// let dir = std::env::temp_dir().join(format!("cairn-doc-hv-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let db = SqliteDb::open(&dir.join("hv.sqlite"), SqliteOptions::default())?;
/// let store = BlockingStore::new(db.hv(), MemoryLt::new(), db.log());
/// store.put("greeting", "hello", &PutOptions::default())?;
/// assert_eq!(store.get_bytes("greeting")?.unwrap(), "hello");
/// # drop(store); drop(db); std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SqliteHv(pub Arc<SqliteDb>);

/// A stored row, decoded.
enum Stored {
    Inline {
        meta: Metadata,
        payload: Option<Bytes>,
    },
    Tombstone(Tombstone),
}

impl Stored {
    fn core(&self) -> HvRow {
        match self {
            Stored::Inline { meta, .. } => HvRow::Inline(meta.core()),
            Stored::Tombstone(t) => HvRow::Tombstone(*t),
        }
    }
}

/// What a conditional write stores, owned so that it can travel to the writer thread.
enum OwnedWrite {
    Tombstone(Tombstone),
    Inline { meta: Metadata, payload: Bytes },
    Delete,
}

fn bad(column: &'static str) -> impl Fn(rusqlite::types::FromSqlError) -> Corrupt {
    move |e| Corrupt(format!("column {column}: {e}"))
}

fn column<'r>(row: &'r rusqlite::Row<'_>, i: usize) -> Result<ValueRef<'r>, Corrupt> {
    row.get_ref(i)
        .map_err(|e| Corrupt(format!("column {i}: {e}")))
}

/// The columns every read selects first: `kind, revision, size, expires`.
struct Head {
    kind: i64,
    revision: Option<Revision>,
    size: u64,
    expires: Option<Instant>,
}

impl Head {
    fn decode(row: &rusqlite::Row<'_>, first: usize) -> Result<Head, Corrupt> {
        let revision = column(row, first + 1)?
            .as_blob_or_null()
            .map_err(bad("revision"))?;
        let size = column(row, first + 2)?.as_i64().map_err(bad("size"))?;
        let expires = column(row, first + 3)?
            .as_i64_or_null()
            .map_err(bad("expires"))?;
        Ok(Head {
            kind: column(row, first)?.as_i64().map_err(bad("kind"))?,
            revision: revision.map(id_from_blob).transpose()?.map(Revision),
            size: size_from_sql(size)?,
            expires: expires.map(instant_from_sql).transpose()?,
        })
    }

    /// The tombstone a tombstone row holds.
    fn tombstone(&self) -> Result<Tombstone, Corrupt> {
        let revision = self
            .revision
            .ok_or_else(|| Corrupt("a tombstone without a revision".into()))?;
        Ok(Tombstone {
            revision,
            size: self.size,
            expires: self.expires,
        })
    }

    /// The row as a conditional write judges it. An inline row's `created` lives in its
    /// metadata, which a conditional write never reads (so a row whose metadata is damaged can
    /// still be overwritten or deleted); it is reported as zero, and no caller looks at it.
    fn verdict_view(&self) -> Result<HvRow, Corrupt> {
        match self.kind {
            KIND_INLINE => Ok(HvRow::Inline(ObjectMeta {
                size: self.size,
                created: Instant::ZERO,
                expires: self.expires,
            })),
            KIND_TOMBSTONE => self.tombstone().map(HvRow::Tombstone),
            other => Err(Corrupt(format!("unknown row kind {other}"))),
        }
    }
}

/// Decodes the head at `first`, then `meta` (and `payload`, if asked for) after it.
fn decode(row: &rusqlite::Row<'_>, first: usize, payload: bool) -> Result<Stored, Corrupt> {
    let head = Head::decode(row, first)?;
    match head.kind {
        KIND_INLINE => {
            let meta = column(row, first + 4)?.as_blob().map_err(bad("meta"))?;
            let meta = decode_meta(meta, head.size, head.expires)?;
            let payload = match payload {
                true => {
                    let bytes = column(row, first + 5)?.as_blob().map_err(bad("payload"))?;
                    if bytes.len() as u64 != head.size {
                        return Err(Corrupt(format!(
                            "payload of {} bytes where the row says {}",
                            bytes.len(),
                            head.size
                        )));
                    }
                    Some(Bytes::copy_from_slice(bytes))
                }
                false => None,
            };
            Ok(Stored::Inline { meta, payload })
        }
        KIND_TOMBSTONE => head.tombstone().map(Stored::Tombstone),
        other => Err(Corrupt(format!("unknown row kind {other}"))),
    }
}

/// Decodes a key column: stored keys were validated on the way in.
fn decode_key(row: &rusqlite::Row<'_>) -> Result<KeyBuf, Corrupt> {
    let bytes = row.get_ref(0).map_err(|e| Corrupt(e.to_string()))?;
    let bytes = bytes.as_blob().map_err(bad("key"))?;
    KeyBuf::new(bytes).map_err(|e| Corrupt(format!("stored key {}: {e}", bytes.escape_ascii())))
}

impl Shared {
    fn corrupt(&self, key: &[u8], c: Corrupt) -> SqliteError {
        SqliteError::new(
            &self.path,
            SqliteErrorKind::Corrupt,
            format!("row {}: {}", key.escape_ascii(), c.0),
        )
    }
}

/// Reads one row as stored (expired or not).
fn load(
    conn: &Connection,
    shared: &Shared,
    key: &Key,
    payload: bool,
) -> Result<Option<Stored>, SqliteError> {
    let sql = if payload {
        READ_FULL_SQL
    } else {
        READ_META_SQL
    };
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(shared.sqlite_err("reading a row"))?;
    let found = stmt
        .query_row([key.as_bytes()], |row| Ok(decode(row, 0, payload)))
        .optional()
        .map_err(shared.sqlite_err("reading a row"))?;
    found
        .transpose()
        .map_err(|c| shared.corrupt(key.as_bytes(), c))
}

/// The row's state as a conditional write judges it, live at `now`: from its head alone.
fn probe(cx: &WriteCx<'_>, key: &Key, now: Instant) -> Result<HvRow, SqliteError> {
    let shared = cx.shared;
    let err = shared.sqlite_err("reading a row to write it");
    let mut stmt = cx.conn.prepare_cached(PROBE_SQL).map_err(&err)?;
    let found = stmt
        .query_row([key.as_bytes()], |row| {
            Ok(Head::decode(row, 0).and_then(|h| h.verdict_view()))
        })
        .optional()
        .map_err(&err)?;
    match found {
        None => Ok(HvRow::Absent),
        Some(row) => Ok(row.map_err(|c| shared.corrupt(key.as_bytes(), c))?.at(now)),
    }
}

/// A write that a live tombstone blocks (an inline put or a delete), in one statement in the
/// common case: the statement itself skips a live tombstone, and only when it changed nothing is
/// the row probed, to report the tombstone (or a corrupt row). A probe before every write cost
/// the writer thread, which every durable put waits on, a second B-tree search per put.
fn guarded(
    cx: &WriteCx<'_>,
    key: &Key,
    write: &OwnedWrite,
    now: Instant,
) -> Result<Guarded, SqliteError> {
    if write_row(cx, key, write, Some(now))? > 0 {
        return Ok(Guarded::Applied);
    }
    match (probe(cx, key, now)?, write) {
        (HvRow::Tombstone(t), _) => Ok(Guarded::Blocked(t)),
        // There was nothing to delete.
        (_, OwnedWrite::Delete) => Ok(Guarded::Applied),
        // Never under one writer: a row the statement should have taken. Written the plain way.
        _ => store(cx, key, write).map(|()| Guarded::Applied),
    }
}

/// Writes `write` unconditionally.
fn store(cx: &WriteCx<'_>, key: &Key, write: &OwnedWrite) -> Result<(), SqliteError> {
    write_row(cx, key, write, None).map(drop)
}

/// Writes `write` at `key`, unless `unless_tombstone_at` is given and the row is a tombstone live
/// at that instant (see [`UPSERT_SQL`]); returns how many rows changed.
fn write_row(
    cx: &WriteCx<'_>,
    key: &Key,
    write: &OwnedWrite,
    unless_tombstone_at: Option<Instant>,
) -> Result<usize, SqliteError> {
    let shared = cx.shared;
    let err = shared.sqlite_err("writing a row");
    let too_large = |c: Corrupt| SqliteError::new(&shared.path, SqliteErrorKind::Sqlite, c.0);
    let guard = unless_tombstone_at.map(instant_to_sql);
    let upsert = |kind, meta: &[u8], revision: Option<&[u8]>, size, expires, payload| {
        cx.conn.prepare_cached(UPSERT_SQL).and_then(|mut s| {
            s.execute(params![
                key.as_bytes(),
                kind,
                meta,
                revision,
                size,
                expires,
                payload,
                guard
            ])
        })
    };
    match write {
        OwnedWrite::Inline { meta, payload } => {
            let size = size_to_sql(meta.size).map_err(too_large)?;
            let expires = meta.expires.map(instant_to_sql);
            let payload: Option<&[u8]> = Some(payload);
            upsert(
                KIND_INLINE,
                &encode_meta(meta),
                None,
                size,
                expires,
                payload,
            )
        }
        OwnedWrite::Tombstone(t) => {
            let size = size_to_sql(t.size).map_err(too_large)?;
            let revision = id_to_blob(t.revision.0);
            let expires = t.expires.map(instant_to_sql);
            upsert(
                KIND_TOMBSTONE,
                &[],
                Some(&revision[..]),
                size,
                expires,
                None,
            )
        }
        OwnedWrite::Delete => cx
            .conn
            .prepare_cached(DELETE_SQL)
            .and_then(|mut s| s.execute(params![key.as_bytes(), guard])),
    }
    .map_err(err)
}

/// The smallest byte string greater than every string that starts with `prefix`, if any: the
/// prefix without its trailing `0xFF` bytes, last byte plus one. An empty or all-`0xFF` prefix
/// has none (every longer key still starts with it).
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let keep = prefix.iter().rposition(|&b| b != 0xFF)?;
    let mut next = prefix[..=keep].to_vec();
    next[keep] += 1;
    Some(next)
}

/// The inclusive lower bound of a listing: the prefix, or just past `after` if that is later. The
/// byte string right after `a` in byte order is `a` followed by `0x00`.
fn list_lower_bound(prefix: &[u8], after: Option<&Key>) -> Vec<u8> {
    match after {
        Some(a) if a.as_bytes() >= prefix => {
            let mut lower = a.as_bytes().to_vec();
            lower.push(0);
            lower
        }
        _ => prefix.to_vec(),
    }
}

/// Runs a statement selecting `key` and a row without payload; decodes every row.
fn keyed_rows(
    shared: &Shared,
    stmt: &mut Statement<'_>,
    params: impl rusqlite::Params,
) -> Result<Vec<(KeyBuf, Stored)>, SqliteError> {
    let err = shared.sqlite_err("reading rows");
    let rows = stmt
        .query_map(params, |row| Ok((decode_key(row), decode(row, 1, false))))
        .map_err(&err)?;
    let mut out = Vec::new();
    for row in rows {
        let (key, stored) = row.map_err(&err)?;
        let key = key.map_err(|c| shared.corrupt(&[], c))?;
        let stored = stored.map_err(|c| shared.corrupt(key.as_bytes(), c))?;
        out.push((key, stored));
    }
    Ok(out)
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl SqliteHv {
    fn db(&self) -> &SqliteDb {
        &self.0
    }

    fn read_on_the_spot(&self, key: &Key, payload: bool, now: Instant) -> BackendResult<Row> {
        let db = self.db();
        let stored = db
            .readers
            .with(|conn| load(conn, &db.shared, key, payload))?;
        Ok(match stored {
            Some(row) if row.core().at(now) != HvRow::Absent => match row {
                Stored::Inline { meta, payload } => Row::Inline { meta, payload },
                Stored::Tombstone(t) => Row::Tombstone(t),
            },
            _ => Row::Absent,
        })
    }
}

impl HvBackend for SqliteHv {
    async fn read(&self, key: &Key, payload: bool, now: Instant) -> BackendResult<Row> {
        self.read_on_the_spot(key, payload, now)
    }

    /// A write handed to the writer thread runs even if its caller stops waiting; the writer
    /// takes jobs in order and answers each only after its batch committed, so an empty job
    /// sent now is answered after every write sent before it has committed or failed. (It
    /// shows in [`SqliteDb::writer_stats`] as one write in a lazy commit.)
    async fn settled(&self) {
        // Lazy: a batch of nothing but it commits without an fsync (it writes nothing anyway).
        let _ = self
            .db()
            .writer
            .submit_shaped("waiting for earlier writes", Shape::Lazy, |_| Ok(()))
            .await;
    }

    /// Reads run on the calling thread (on a pooled read connection), never behind the writer.
    #[inline]
    fn read_now(&self, key: &Key, payload: bool, now: Instant) -> Option<BackendResult<Row>> {
        Some(self.read_on_the_spot(key, payload, now))
    }

    async fn put_non_tombstone(
        &self,
        key: &Key,
        meta: &Metadata,
        payload: &Bytes,
        now: Instant,
    ) -> BackendResult<Guarded> {
        let key = key.to_key_buf();
        let write = OwnedWrite::Inline {
            meta: meta.clone(),
            payload: payload.clone(),
        };
        let guarded = self
            .db()
            .writer
            .submit_shaped("put_non_tombstone", Shape::Atomic, move |cx| {
                guarded(cx, &key, &write, now)
            })
            .await?;
        Ok(guarded)
    }

    async fn delete_non_tombstone(&self, key: &Key, now: Instant) -> BackendResult<Guarded> {
        let key = key.to_key_buf();
        let guarded = self
            .db()
            .writer
            .submit_shaped("delete_non_tombstone", Shape::Atomic, move |cx| {
                guarded(cx, &key, &OwnedWrite::Delete, now)
            })
            .await?;
        Ok(guarded)
    }

    async fn compare_and_write(
        &self,
        key: &Key,
        expected: Option<Revision>,
        write: Write<'_>,
        now: Instant,
    ) -> BackendResult<bool> {
        let key = key.to_key_buf();
        let (core_write, write) = match write {
            Write::Tombstone(t) => (HvWrite::Tombstone(t), OwnedWrite::Tombstone(t)),
            Write::Inline { meta, payload } => (
                HvWrite::Inline(meta.core()),
                OwnedWrite::Inline {
                    meta: meta.clone(),
                    payload: payload.clone(),
                },
            ),
            Write::Delete => (HvWrite::Delete, OwnedWrite::Delete),
        };
        let mode = self.db().shared.cas_mode;
        let ok = self
            .db()
            .writer
            .submit_shaped("compare_and_write", Shape::Atomic, move |cx| {
                lease::ensure_live(cx, "compare_and_write")?;
                let verdict = cas_verdict(probe(cx, &key, now)?, expected, &core_write);
                let apply = match verdict {
                    CasVerdict::Apply => true,
                    CasVerdict::AlreadyApplied => mode == CasMode::Reapply,
                    CasVerdict::Conflict => false,
                };
                if apply {
                    store(cx, &key, &write)?;
                }
                Ok(verdict.succeeded())
            })
            .await?;
        Ok(ok)
    }

    async fn list(
        &self,
        prefix: &[u8],
        after: Option<&Key>,
        limit: usize,
        now: Instant,
    ) -> BackendResult<Vec<ListEntry>> {
        let db = self.db();
        let shared = &db.shared;
        let lower = list_lower_bound(prefix, after);
        let upper = prefix_successor(prefix);
        let (now, limit) = (instant_to_sql(now), sql_limit(limit));
        let entries = db.readers.with(|conn| {
            let err = shared.sqlite_err("listing rows");
            let sql = if upper.is_some() {
                LIST_RANGE_SQL
            } else {
                LIST_FROM_SQL
            };
            let mut stmt = conn.prepare_cached(sql).map_err(&err)?;
            match &upper {
                Some(upper) => keyed_rows(shared, &mut stmt, params![lower, upper, now, limit]),
                None => keyed_rows(shared, &mut stmt, params![lower, now, limit]),
            }
        })?;
        let entries = entries.into_iter().map(|(key, stored)| ListEntry {
            key,
            row: stored.core(),
        });
        Ok(entries.collect())
    }
}

impl SqliteDb {
    /// Up to `limit` stored rows with keys after `after`, in key order, **expired ones
    /// included** (their core view is returned as stored, not as live at some `now`): what `fsck`
    /// walks. Pass the last key of a page as `after` to get the next.
    pub fn rows(&self, after: Option<&Key>, limit: usize) -> BackendResult<Vec<(KeyBuf, HvRow)>> {
        let shared = &self.shared;
        let after: &[u8] = after.map_or(&[], |k| k.as_bytes());
        let rows = self.readers.with(|conn| {
            let err = shared.sqlite_err("walking rows");
            let mut stmt = conn.prepare_cached(ROWS_SQL).map_err(err)?;
            keyed_rows(shared, &mut stmt, params![after, sql_limit(limit)])
        })?;
        let rows = rows.into_iter().map(|(key, stored)| (key, stored.core()));
        Ok(rows.collect())
    }

    /// Whether a tombstone (live or expired) or a change-log entry refers to blob `revision`
    /// of `key` now, both read in one snapshot: what `fsck` asks before it calls a blob an
    /// orphan. (Its walk reads rows, log and blobs one after another, while a put moves its
    /// blob's cover from its log entry to its tombstone.)
    pub fn blob_referenced(&self, key: &Key, revision: Revision) -> BackendResult<bool> {
        self.exists(
            REFERENCED_SQL,
            params![key.as_bytes(), id_to_blob(revision.0)],
        )
    }

    /// Whether any tombstone (live or expired) or change-log entry refers to a blob at all: a
    /// database that does needs its blob directory. (Reads every row when none does.)
    pub fn refers_to_blobs(&self) -> BackendResult<bool> {
        self.exists(ANY_BLOB_SQL, [])
    }

    /// Whether the row of `key` is a tombstone for `revision`, live at `now`.
    pub fn tombstone_is(&self, key: &Key, revision: Revision, now: Instant) -> BackendResult<bool> {
        let now = instant_to_sql(now);
        self.exists(
            TOMBSTONE_SQL,
            params![key.as_bytes(), id_to_blob(revision.0), now],
        )
    }

    fn exists(&self, sql: &str, params: impl rusqlite::Params) -> BackendResult<bool> {
        let found = self.readers.with(|conn| {
            conn.prepare_cached(sql)
                .and_then(|mut s| s.query_row(params, |r| r.get(0)))
                .map_err(self.shared.sqlite_err("checking what refers to a blob"))
        })?;
        Ok(found)
    }

    /// Deletes up to `limit` rows whose expiry has passed at `now`; returns how many went.
    ///
    /// SQLite has no native expiry, so cairn sweeps. This is safe at any moment: an expired row
    /// is already absent to every read and every conditional operation, so removing it changes
    /// nothing anyone can observe. The blob behind an expired tombstone carries the same expiry
    /// and is swept by the long-term tier's own sweeper.
    pub async fn sweep_expired_rows(&self, now: Instant, limit: usize) -> BackendResult<usize> {
        let deleted = self
            .writer
            .submit_shaped("sweeping expired rows", Shape::Atomic, move |cx| {
                cx.conn
                    .prepare_cached(SWEEP_SQL)
                    .and_then(|mut s| s.execute(params![instant_to_sql(now), sql_limit(limit)]))
                    .map_err(cx.shared.sqlite_err("sweeping expired rows"))
            })
            .await?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_successor_handles_high_bytes_and_runs_of_ff() {
        assert_eq!(prefix_successor(b""), None);
        assert_eq!(prefix_successor(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_successor(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(prefix_successor(&[0x61, 0xFF]), Some(vec![0x62]));
        assert_eq!(prefix_successor(&[0x7F]), Some(vec![0x80]));
        assert_eq!(
            prefix_successor(&[0x80, 0xFE, 0xFF]),
            Some(vec![0x80, 0xFF])
        );
    }

    #[test]
    fn the_lower_bound_is_the_later_of_prefix_and_just_after_after() {
        let k = |b: &'static [u8]| Key::new(b).unwrap();
        assert_eq!(list_lower_bound(b"b", None), b"b");
        assert_eq!(list_lower_bound(b"b", Some(k(b"a"))), b"b");
        assert_eq!(list_lower_bound(b"b", Some(k(b"b"))), b"b\0");
        assert_eq!(list_lower_bound(b"b", Some(k(b"bz"))), b"bz\0");
    }

    /// The columns a statement's program reads from `rows` (by column number), from `EXPLAIN`.
    fn columns_read(conn: &Connection, sql: &str) -> Vec<i64> {
        let mut stmt = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
        let nulls = std::iter::repeat_n(rusqlite::types::Null, stmt.parameter_count());
        let ops = stmt
            .query_map(rusqlite::params_from_iter(nulls), |r| {
                Ok((r.get::<_, String>("opcode")?, r.get::<_, i64>("p2")?))
            })
            .unwrap();
        ops.map(Result::unwrap)
            .filter(|(op, _)| op == "Column")
            .map(|(_, p2)| p2)
            .collect()
    }

    #[test]
    fn a_metadata_read_never_reads_the_payload_column() {
        let conn = Connection::open_in_memory().unwrap();
        let create = super::super::schema::CREATE;
        conn.execute_batch(create).unwrap();
        let payload_column: i64 = conn
            .query_row(
                "SELECT cid FROM pragma_table_info('rows') WHERE name = 'payload'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let last: i64 = conn
            .query_row("SELECT max(cid) FROM pragma_table_info('rows')", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(payload_column, last, "the payload is stored last");
        assert!(
            columns_read(&conn, READ_FULL_SQL).contains(&payload_column),
            "the check sees a payload read when there is one"
        );
        for sql in [
            READ_META_SQL,
            PROBE_SQL,
            LIST_RANGE_SQL,
            LIST_FROM_SQL,
            ROWS_SQL,
        ] {
            assert!(!sql.contains("payload"), "{sql}");
            assert!(
                !columns_read(&conn, sql).contains(&payload_column),
                "{sql} reads the payload"
            );
        }
    }
}
