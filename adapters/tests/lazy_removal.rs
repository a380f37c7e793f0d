//! Change-log removals commit lazily under `synchronous=FULL` (no fsync of their own; see
//! `sqlite/writer.rs`, "Lazy jobs"). A power loss may therefore take a removal back — and every
//! commit after it, since SQLite replays only an unbroken prefix of the WAL. What is left is the
//! state a crash just before the removal leaves. These tests build that state and check that
//! recovery removes the entry again without harming the object it covered.

#![cfg(all(feature = "sqlite", feature = "blobdir"))]

use bytes::Bytes;
use cairn_adapters::backend::ChangeLog;
use cairn_adapters::embedded::{Embedded, EmbeddedOptions};
use cairn_adapters::{InlineRuntime, Location, PutOptions};
use cairn_core::{Change, ChangeId, Key, Revision};
use futures_lite::future::block_on;

/// Larger than the inline threshold (1 MiB): stored as a blob behind a tombstone.
fn large(fill: u8) -> Bytes {
    Bytes::from(vec![fill; (1 << 20) + 4096])
}

fn open(dir: &tempfile::TempDir) -> Embedded<InlineRuntime> {
    block_on(Embedded::open(
        dir.path(),
        EmbeddedOptions::default(),
        InlineRuntime,
    ))
    .expect("open")
}

fn revision(data: &Embedded<InlineRuntime>, key: &str) -> Revision {
    let info = block_on(data.store().head(key)).unwrap().expect("stored");
    match info.location {
        Location::LongTerm(revision) => revision,
        Location::Inline => panic!("{key} is inline"),
    }
}

fn read(data: &Embedded<InlineRuntime>, key: &str) -> Bytes {
    let object = block_on(data.store().get(key)).unwrap().expect("stored");
    block_on(object.bytes()).expect("body")
}

fn blob_revisions(data: &Embedded<InlineRuntime>) -> Vec<Revision> {
    let mut revisions: Vec<Revision> = data
        .blobs()
        .blobs()
        .map(|b| b.expect("list blobs").revision)
        .collect();
    revisions.sort();
    revisions
}

#[test]
fn a_large_put_removes_its_change_log_entry_in_a_lazy_commit() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = open(&dir);
    let before = data.db().writer_stats();
    let opts = PutOptions::default();
    block_on(data.store().put("k", large(1), &opts)).unwrap();
    block_on(data.store().put("k", large(2), &opts)).unwrap();
    let after = data.db().writer_stats();
    // Per put: the record and the tombstone commit durably, the removal lazily.
    assert_eq!(after.commits - before.commits, 6);
    assert_eq!(after.lazy_commits - before.lazy_commits, 2);
    // Committed all the same: visible to every reader at once.
    assert_eq!(data.db().log_entries().unwrap(), []);
    // And in the database file, not only in this process: reopened without recovery (which
    // would remove a leftover entry itself), the log is empty. (That a power loss takes a lazy
    // commit back only together with every later one is SQLite's WAL replay rule, argued in
    // `sqlite/writer.rs`, not something a test without a power cut can show.)
    drop(data);
    let data = block_on(Embedded::open_unrecovered(
        dir.path(),
        EmbeddedOptions::default(),
        InlineRuntime,
    ))
    .expect("open without recovery");
    assert_eq!(data.db().log_entries().unwrap(), []);
    assert_eq!(read(&data, "k"), large(2));
}

/// What a lost lazy removal leaves — the entry back in the log, exactly as its put recorded
/// it — built by hand (no power cut in a test), and recovery putting it right.
#[test]
fn a_lost_removal_is_harmless_recovery_removes_the_entry_again() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = open(&dir);
    let opts = PutOptions::default();
    block_on(data.store().put("k", large(1), &opts)).unwrap();
    let first = revision(&data, "k");
    block_on(data.store().put("k", large(2), &opts)).unwrap();
    let second = revision(&data, "k");
    assert_eq!(
        blob_revisions(&data),
        [second],
        "the overwritten blob is gone"
    );
    assert_eq!(data.db().log_entries().unwrap(), []);
    // The removal of the second put's entry, lost: the entry is back as the put recorded it.
    let key = Key::new(b"k").unwrap();
    let lost = Change {
        key,
        new: Some(second),
        old: Some(first),
    };
    block_on(data.db().log().record(ChangeId(u128::MAX), lost)).unwrap();
    assert_eq!(data.db().log_entries().unwrap().len(), 1);
    drop(data);

    // Reopening recovers: the entry is cleaned up (again) and removed.
    let data = open(&dir);
    assert_eq!(data.db().log_entries().unwrap(), []);
    assert_eq!(revision(&data, "k"), second);
    assert_eq!(read(&data, "k"), large(2));
    assert_eq!(blob_revisions(&data), [second], "the live blob survived");
    let report = block_on(data.fsck(false)).unwrap();
    assert!(report.is_clean(), "{report:?}");
}
