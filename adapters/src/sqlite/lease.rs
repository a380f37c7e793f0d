//! Instance leases: which open handle owns which change-log entries, when a dead owner's entries
//! may be taken over, and the fence that stops a stalled owner from committing afterwards.
//!
//! Every [`SqliteDb::open`](super::SqliteDb::open) registers a fresh instance (a row of
//! `instances`, its id never reused thanks to `AUTOINCREMENT`) whose lease runs until
//! `lease_until`. The writer thread renews it, inside a batch transaction, whenever less than half
//! of it remains. An instance is *live* while `claimed = 0 AND lease_until > now`; once it is not,
//! it never becomes live again: renewal requires a live lease.
//!
//! - **Takeover.** A scan that meets an entry of a non-live owner claims it: in one write
//!   transaction, every non-live instance is marked `claimed = 1` and its entries are re-owned
//!   by the scanning instance, which must itself be live.
//! - **Fencing.** Every `compare_and_write` and every `record` checks, inside the transaction that
//!   writes, that its own instance is live. The check and the commit hold the database's write
//!   lock together, so no claim can fall between them: once a claim has committed (or the lease
//!   has run out), the stalled instance's writes fail instead of pointing a tombstone at a blob
//!   whose cleanup now belongs to someone else. `claimed = 1` keeps this true even when the
//!   stalled process's clock lags the claimer's.

use cairn_core::{Duration, Instant};
use rusqlite::{params, Connection};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::codec::instant_to_sql;
use super::writer::WriteCx;
use super::{SqliteError, SqliteErrorKind};

/// This handle's lease, as the writer thread last committed it.
#[derive(Debug)]
pub(crate) struct Lease {
    /// The `instances.id` of this handle.
    pub instance: i64,
    /// How long a renewal extends the lease.
    pub duration: Duration,
    until: AtomicU64,
    fenced: AtomicBool,
}

impl Lease {
    pub fn new(instance: i64, duration: Duration, until: Instant) -> Lease {
        Lease {
            instance,
            duration,
            until: AtomicU64::new(until.as_millis()),
            fenced: AtomicBool::new(false),
        }
    }

    /// When the lease runs out unless renewed.
    pub fn until(&self) -> Instant {
        Instant::from_millis(self.until.load(Ordering::Acquire))
    }

    /// Whether less than half of the lease remains at `now` (and renewing still makes sense).
    pub fn renewal_due(&self, now: Instant) -> bool {
        let half = Duration::from_millis(self.duration.as_millis() / 2);
        !self.is_fenced() && now + half >= self.until()
    }

    /// Records a committed renewal.
    pub fn renewed(&self, until: Instant) {
        self.until.fetch_max(until.as_millis(), Ordering::AcqRel);
    }

    /// Records that the database says this instance is no longer live. Permanent.
    pub fn fence(&self) {
        self.fenced.store(true, Ordering::Release);
    }

    /// Whether this instance is known to be fenced.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }
}

/// Registers a new instance whose lease runs until `until`; returns its id.
pub(crate) fn register(conn: &Connection, until: Instant) -> rusqlite::Result<i64> {
    conn.prepare_cached("INSERT INTO instances (lease_until, claimed) VALUES (?1, 0)")?
        .execute([instant_to_sql(until)])?;
    Ok(conn.last_insert_rowid())
}

/// Deletes non-live instances that own no entries (nothing refers to them any more; a missing
/// instance is as non-live as a claimed one, and ids are never reused). Returns how many went.
pub(crate) fn prune(conn: &Connection, me: i64, now: Instant) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "DELETE FROM instances
         WHERE id != ?1 AND (claimed != 0 OR lease_until <= ?2)
           AND NOT EXISTS (SELECT 1 FROM changes WHERE owner = instances.id)",
    )?
    .execute(params![me, instant_to_sql(now)])
}

/// Fails unless this instance is live at the clock's `now`. Call inside the transaction whose
/// commit the lease must cover.
pub(crate) fn ensure_live(cx: &WriteCx<'_>, what: &str) -> Result<(), SqliteError> {
    let lease = &cx.shared.lease;
    let now = cx.shared.clock.now();
    let live = !lease.is_fenced()
        && cx
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM instances
                                WHERE id = ?1 AND claimed = 0 AND lease_until > ?2)",
            )
            .and_then(|mut s| {
                s.query_row(params![lease.instance, instant_to_sql(now)], |r| r.get(0))
            })
            .map_err(cx.shared.sqlite_err("checking the instance lease"))?;
    if live {
        return Ok(());
    }
    lease.fence();
    Err(SqliteError::new(
        &cx.shared.path,
        SqliteErrorKind::Fenced,
        format!(
            "{what} refused: instance {} lost its lease (it expired at {}, or another instance \
             claimed its change-log entries); reopen the database",
            lease.instance,
            lease.until()
        ),
    ))
}

/// Extends this instance's lease to `now + duration` if it is still live at `now`. Returns the
/// new end, or `None` if the instance is no longer live (then it never will be again).
pub(crate) fn renew(
    conn: &Connection,
    me: i64,
    now: Instant,
    duration: Duration,
) -> rusqlite::Result<Option<Instant>> {
    let until = now + duration;
    let changed = conn
        .prepare_cached(
            "UPDATE instances SET lease_until = max(lease_until, ?3)
             WHERE id = ?1 AND claimed = 0 AND lease_until > ?2",
        )?
        .execute(params![me, instant_to_sql(now), instant_to_sql(until)])?;
    Ok((changed == 1).then_some(until))
}

/// Takes over the entries of every instance that is not live at `now`: marks each `claimed` and
/// re-owns its entries to `me`. Returns how many entries changed hands. The caller checks first
/// that `me` itself is live.
pub(crate) fn claim(conn: &Connection, me: i64, now: Instant) -> rusqlite::Result<usize> {
    let now = instant_to_sql(now);
    conn.prepare_cached(
        "UPDATE instances SET claimed = 1 WHERE id != ?1 AND claimed = 0 AND lease_until <= ?2",
    )?
    .execute(params![me, now])?;
    // Owners with no instance row at all (pruned, or never registered) are not live either.
    conn.prepare_cached(
        "UPDATE changes SET owner = ?1
         WHERE owner != ?1
           AND owner NOT IN (SELECT id FROM instances WHERE claimed = 0 AND lease_until > ?2)",
    )?
    .execute(params![me, now])
}

/// Ends this instance's lease at once (on a clean close), so another instance may take over its
/// remaining entries without waiting for the lease to run out.
pub(crate) fn release(conn: &Connection, me: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE instances SET lease_until = 0 WHERE id = ?1")?
        .execute([me])?;
    Ok(())
}
