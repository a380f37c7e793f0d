//! Instance leases: which open handle owns which change-log entries, when a dead owner's entries
//! may be taken over, and the fence that stops a stalled owner from committing afterwards.
//!
//! Every [`SqliteDb::open`](super::SqliteDb::open) registers a fresh instance (a row of
//! `instances`, its id never reused thanks to `AUTOINCREMENT`) whose lease runs until
//! `lease_until`. The writer thread renews it, inside a batch transaction, whenever less than half
//! of it remains. An instance is *live* while `claimed = 0 AND lease_until > now`.
//!
//! - **Takeover.** A scan that meets an entry of a non-live owner claims it: in one write
//!   transaction, every non-live instance that owns entries is marked `claimed = 1` and its
//!   entries are re-owned by the scanning instance, which must itself be live.
//! - **Fencing.** Every `compare_and_write` and every `record` checks, inside the transaction that
//!   writes, that its own instance has not been claimed. The check and the commit hold the
//!   database's write lock together, so no claim can fall between them: once a claim has
//!   committed, the stalled instance's writes fail instead of pointing a tombstone at a blob
//!   whose cleanup now belongs to someone else. `claimed = 1` keeps this true even when the
//!   stalled process's clock lags the claimer's. A claimed instance never becomes live again.
//! - **Revival.** A lapsed lease is only a permission for others to take over. An instance that
//!   finds its own lease lapsed while nobody claimed it (the process was suspended, the machine
//!   slept, the clock stepped forward, a test advanced a manual clock) renews it in the same
//!   transaction and carries on: nothing of it was taken, and until its lease lapses again no
//!   one may take it. Only a claim — or the instance's row having been pruned — fences it.
//! - **Pruning.** Rows that own no entries are deleted once claimed (a clean close claims its
//!   own), or once their lease lapsed more than [`PRUNE_AFTER`] ago (a process killed while it
//!   owned nothing). An instance whose row was pruned is fenced: that is the one way a handle
//!   that stalled with no entries (for over a week) must be reopened.

use cairn_core::{Duration, Instant};
use rusqlite::{params, Connection};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::codec::instant_to_sql;
use super::writer::WriteCx;
use super::{SqliteError, SqliteErrorKind};

/// How long after its lease lapsed an unclaimed instance that owns no entries is pruned. Until
/// then it may revive; a week covers a laptop shut for a long weekend, and the table holds at
/// most one row per process killed within it.
pub(crate) const PRUNE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

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

    /// Records that the database says this instance was claimed (or pruned). Permanent.
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

/// Deletes the instances that own no entries and are either claimed or lapsed more than
/// [`PRUNE_AFTER`] before `now` (nothing refers to them any more; a missing instance is as
/// non-live as a claimed one, and ids are never reused). Returns how many went.
pub(crate) fn prune(conn: &Connection, me: i64, now: Instant) -> rusqlite::Result<usize> {
    let long_ago = Instant::from_millis(now.as_millis().saturating_sub(PRUNE_AFTER.as_millis()));
    conn.prepare_cached(
        "DELETE FROM instances
         WHERE id != ?1 AND (claimed != 0 OR lease_until <= ?2)
           AND NOT EXISTS (SELECT 1 FROM changes WHERE owner = instances.id)",
    )?
    .execute(params![me, instant_to_sql(long_ago)])
}

/// Fails unless this instance is live at the clock's `now` or, its lease lapsed, can revive:
/// nobody claimed it, so it renews in this transaction. Call inside the transaction whose commit
/// the lease must cover. A revival's UPDATE commits with the batch even if the calling job then
/// fails alone — the one write of such a job that outlives its failure, and a harmless one,
/// since reviving an unclaimed instance is always allowed.
pub(crate) fn ensure_live(cx: &WriteCx<'_>, what: &str) -> Result<(), SqliteError> {
    let lease = &cx.shared.lease;
    let now = cx.shared.clock.now();
    let err = cx.shared.sqlite_err("checking the instance lease");
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
            .map_err(&err)?;
    // The in-memory lease is left alone: it records commits, and this one has not committed.
    // The writer renews by itself soon after, finding half the lease gone.
    if live
        || (!lease.is_fenced()
            && renew(cx.conn, lease.instance, now, lease.duration)
                .map_err(&err)?
                .is_some())
    {
        return Ok(());
    }
    lease.fence();
    Err(fenced(cx, what))
}

/// The error of a write refused because this instance was claimed.
pub(crate) fn fenced(cx: &WriteCx<'_>, what: &str) -> SqliteError {
    SqliteError::new(
        &cx.shared.path,
        SqliteErrorKind::Fenced,
        format!(
            "{what} refused: instance {} stalled past its lease (which ran until {}) and another \
             instance claimed its change-log entries (or, as it owned none, pruned it a week \
             later); reopen the database",
            cx.shared.lease.instance,
            cx.shared.lease.until()
        ),
    )
}

/// Extends this instance's lease to `now + duration` unless it was claimed (or pruned), reviving
/// it if it had lapsed. Returns the new end, or `None` if it was claimed (then it never will be
/// live again).
pub(crate) fn renew(
    conn: &Connection,
    me: i64,
    now: Instant,
    duration: Duration,
) -> rusqlite::Result<Option<Instant>> {
    let until = now + duration;
    let changed = conn
        .prepare_cached(
            "UPDATE instances SET lease_until = max(lease_until, ?2) WHERE id = ?1 AND claimed = 0",
        )?
        .execute(params![me, instant_to_sql(until)])?;
    Ok((changed == 1).then_some(until))
}

/// Takes over the entries of every instance that is not live at `now`: marks each that owns
/// entries `claimed` and re-owns its entries to `me`. Returns how many entries changed hands.
/// A lapsed instance that owns nothing is left unclaimed, free to revive. The caller checks
/// first that `me` itself is live.
pub(crate) fn claim(conn: &Connection, me: i64, now: Instant) -> rusqlite::Result<usize> {
    let now = instant_to_sql(now);
    conn.prepare_cached(
        "UPDATE instances SET claimed = 1
         WHERE id != ?1 AND claimed = 0 AND lease_until <= ?2
           AND EXISTS (SELECT 1 FROM changes WHERE owner = instances.id)",
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

/// Ends this instance's lease at once and for good (on a clean close), so another instance may
/// take over its remaining entries without waiting for the lease to run out, and its row may go.
pub(crate) fn release(conn: &Connection, me: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE instances SET lease_until = 0, claimed = 1 WHERE id = ?1")?
        .execute([me])?;
    Ok(())
}
