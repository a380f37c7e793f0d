//! Properties of the pure parts (cleanup decisions, the compare-and-write verdict, keys and
//! revisions, the linearizability checker) and of short whole histories against a plain model.

use cairn_core::{
    cas_verdict, CasVerdict, ChangeId, Cleanup, Config, Delete, Found, Get, HvRow, HvWrite, IdGen,
    Instant, Key, KeyBuf, LargePut, ObjectMeta, Phase, Revision, SmallPut, Tombstone, WriteOutcome,
};
use cairn_sim::keys;
use cairn_sim::linearizability::{self, Action, Op, Verdict};
use cairn_sim::world::{check_quiescent, check_safety, run, CasMode, OpContext, World};
use quickcheck::{QuickCheck, TestResult};
use std::collections::BTreeMap;

fn qc() -> QuickCheck {
    QuickCheck::new().tests(300)
}

/// A revision from a small domain, so that collisions between the arguments are common.
fn rev(n: u8) -> Option<Revision> {
    (n % 4 != 0).then(|| Revision(u128::from(n % 4)))
}

#[test]
fn cleanup_of_unknown_outcome_deletes_exactly_the_unreferenced_blobs() {
    fn prop(old: u8, new: u8, current: u8) -> TestResult {
        let (old, new, current) = (rev(old), rev(new), rev(current));
        if new.is_some() && new == old {
            return TestResult::discard(); // a revision never replaces itself
        }
        let plan = Phase::Unknown.plan(old, new, current);
        let planned: Vec<_> = [plan.first, plan.second].into_iter().flatten().collect();
        let expected: Vec<_> = [old, new]
            .into_iter()
            .flatten()
            .filter(|r| Some(*r) != current)
            .collect();
        let mut a = planned.clone();
        let mut b = expected;
        a.sort();
        b.sort();
        TestResult::from_bool(a == b && !planned.iter().any(|r| Some(*r) == current))
    }
    qc().quickcheck(prop as fn(u8, u8, u8) -> TestResult);
}

#[test]
fn cleanup_of_a_known_outcome_deletes_only_what_the_mutation_owns() {
    fn prop(old: u8, new: u8) -> TestResult {
        let (old, new) = (rev(old), rev(new));
        if new.is_some() && new == old {
            return TestResult::discard();
        }
        let lost = Phase::Lost.plan(old, new, None);
        let recorded = Phase::Recorded.plan(old, new, None);
        let committed = Phase::Committed.plan(old, new, None);
        TestResult::from_bool(
            lost.first == new
                && lost.second.is_none()
                && recorded == lost
                && committed.first == old
                && committed.second.is_none(),
        )
    }
    qc().quickcheck(prop as fn(u8, u8) -> TestResult);
}

#[test]
fn a_cleanup_machine_issues_exactly_its_plan_then_removes_the_entry() {
    fn prop(old: u8, new: u8, current: u8, phase: u8) -> TestResult {
        let (old, new, current) = (rev(old), rev(new), rev(current));
        if new.is_some() && new == old {
            return TestResult::discard();
        }
        let phase = [
            Phase::Recorded,
            Phase::Lost,
            Phase::Committed,
            Phase::Unknown,
        ][usize::from(phase % 4)];
        let key = keys::key(0);
        let mut world = World::new();
        if let Some(current) = current {
            world.insert_large(key, current, 10, None, 1);
        }
        for r in [old, new]
            .into_iter()
            .flatten()
            .filter(|r| Some(*r) != current)
        {
            world.set_blob(key, r, *world_blob());
        }
        let pending = cairn_core::PendingCleanup {
            id: ChangeId(1),
            new,
            old,
            phase,
        };
        let report = run(
            &mut world,
            Cleanup::new(key, pending, Config::DEFAULT),
            Instant::ZERO,
            OpContext::read(),
        );
        // Only an unknown outcome reads the row before it plans.
        let read = if phase.needs_read() { current } else { None };
        let plan = phase.plan(old, new, read);
        let planned = [plan.first, plan.second].into_iter().flatten().count() as u8;
        let referenced_survives = read.is_none_or(|c| world.blob(key, c).is_some());
        TestResult::from_bool(
            report.blobs_deleted == planned && world.log().next().is_none() && referenced_survives,
        )
    }
    qc().quickcheck(prop as fn(u8, u8, u8, u8) -> TestResult);
}

fn world_blob() -> &'static cairn_sim::world::Blob {
    &cairn_sim::world::Blob {
        size: 10,
        expires: None,
        value: 9,
        complete: true,
    }
}

#[test]
fn compare_and_write_conflicts_only_on_a_tombstone_nobody_expected() {
    fn prop(row: u8, expected: u8, write: u8) -> bool {
        let t = |r: Revision| Tombstone {
            revision: r,
            size: 1,
            expires: None,
        };
        let live = match row % 5 {
            0 => HvRow::Absent,
            1 => HvRow::Inline(ObjectMeta {
                size: 1,
                created: Instant::ZERO,
                expires: None,
            }),
            n => HvRow::Tombstone(t(Revision(u128::from(n)))),
        };
        let expected = rev(expected);
        let write = match write % 4 {
            0 => HvWrite::Delete,
            1 => HvWrite::Inline(ObjectMeta {
                size: 1,
                created: Instant::ZERO,
                expires: None,
            }),
            n => HvWrite::Tombstone(t(Revision(u128::from(n) + 1))),
        };
        let verdict = cas_verdict(live, expected, &write);
        let conflict = live
            .target()
            .is_some_and(|c| Some(c) != expected && Some(c) != write.target());
        (verdict == CasVerdict::Conflict) == conflict
            && (verdict == CasVerdict::AlreadyApplied)
                == (live.target().is_some()
                    && live.target() == write.target()
                    && live.target() != expected)
    }
    qc().quickcheck(prop as fn(u8, u8, u8) -> bool);
}

#[test]
fn keys_validate_and_round_trip() {
    fn prop(bytes: Vec<u8>) -> bool {
        match Key::new(&bytes) {
            Ok(key) => {
                !bytes.is_empty()
                    && !bytes.contains(&0)
                    && KeyBuf::new(&bytes).is_ok_and(|k| *k == *key && k.as_bytes() == &bytes[..])
            }
            Err(_) => bytes.is_empty() || bytes.contains(&0) || bytes.len() > 1024,
        }
    }
    qc().quickcheck(prop as fn(Vec<u8>) -> bool);
    for i in 0..keys::MAX_KEYS {
        assert_eq!(keys::index(keys::key(i)), i);
    }
}

#[test]
fn revisions_are_unique_and_sort_by_creation_time() {
    fn prop(seed: u64, steps: Vec<u16>) -> bool {
        let mut ids = IdGen::new(seed);
        let mut now = 0u64;
        let mut previous: Option<(u64, Revision)> = None;
        let mut seen = std::collections::BTreeSet::new();
        for step in steps {
            now += u64::from(step % 3);
            let r = ids.revision(Instant::from_millis(now));
            if !seen.insert(r) {
                return false;
            }
            if let Some((then, earlier)) = previous {
                if then < now && earlier >= r {
                    return false;
                }
            }
            previous = Some((now, r));
        }
        true
    }
    qc().quickcheck(prop as fn(u64, Vec<u16>) -> bool);
}

/// One step of a short sequential history.
#[derive(Clone, Copy, Debug)]
enum Step {
    Get(usize),
    Head(usize),
    Small(usize, Option<u64>),
    Large(usize, Option<u64>),
    Delete(usize),
    Wait(u64),
}

fn decode(raw: &[(u8, u8, u8)]) -> Vec<Step> {
    raw.iter()
        .take(40)
        .map(|&(kind, key, ttl)| {
            let key = usize::from(key % 3);
            let ttl = (ttl % 4 == 0).then_some(u64::from(ttl % 50) + 1);
            match kind % 6 {
                0 => Step::Get(key),
                1 => Step::Head(key),
                2 => Step::Small(key, ttl),
                3 => Step::Large(key, ttl),
                4 => Step::Delete(key),
                _ => Step::Wait(ttl.unwrap_or(7)),
            }
        })
        .collect()
}

/// Runs `steps` one at a time through the real machines against the world (each mutation with
/// its cleanup), and compares every read with a plain map that knows nothing of tiers.
fn sequential_history_matches_a_plain_map(raw: Vec<(u8, u8, u8)>, skip: bool) -> TestResult {
    let mode = if skip {
        CasMode::Skip
    } else {
        CasMode::Reapply
    };
    let mut world = World::with_mode(mode);
    let mut model: BTreeMap<usize, (u64, Option<Instant>)> = BTreeMap::new();
    let config = Config {
        inline_threshold: 100,
        ..Config::DEFAULT
    };
    let mut ids = IdGen::new(7);
    let mut now = Instant::from_millis(1_000);
    let mut value = 0;
    for step in decode(&raw) {
        world.advance_to(now);
        model.retain(|_, (_, expires)| expires.is_none_or(|e| e > now));
        let visible =
            |model: &BTreeMap<usize, (u64, Option<Instant>)>, key| model.get(&key).map(|(v, _)| *v);
        let expect_read = |world: &mut World, key: usize, head: bool, want: Option<u64>| {
            let k = keys::key(key);
            let get = if head {
                Get::head(k, config)
            } else {
                Get::new(k, None, config)
            };
            let found = run(world, get, now, OpContext::read());
            let got = match found {
                Ok(None) => None,
                Ok(Some(Found::Inline { .. })) => world.row(k).and_then(|r| r.value()),
                Ok(Some(Found::LongTerm { tombstone, .. })) => {
                    world.blob(k, tombstone.revision).map(|b| b.value)
                }
                Err(e) => panic!("a read without faults failed: {e}"),
            };
            got == want
        };
        let mutate = |world: &mut World, done: cairn_core::MutationDone, key: usize| {
            if let Some(pending) = done.cleanup {
                run(
                    world,
                    Cleanup::new(keys::key(key), pending, config),
                    now,
                    OpContext::read(),
                );
            }
            done.result == Ok(WriteOutcome::Committed)
        };
        let ok = match step {
            Step::Get(key) => expect_read(&mut world, key, false, visible(&model, key)),
            Step::Head(key) => expect_read(&mut world, key, true, visible(&model, key)),
            Step::Small(key, ttl) => {
                value += 1;
                let expires = ttl.map(|t| now + cairn_core::Duration::from_millis(t));
                let meta = ObjectMeta {
                    size: 5,
                    created: now,
                    expires,
                };
                let put = SmallPut::new(keys::key(key), meta, ids.change_id(now), config);
                let done = run(&mut world, put, now, OpContext::put(value));
                model.insert(key, (value, expires));
                mutate(&mut world, done, key)
            }
            Step::Large(key, ttl) => {
                value += 1;
                let expires = ttl.map(|t| now + cairn_core::Duration::from_millis(t));
                let put = LargePut::new(
                    keys::key(key),
                    ids.revision(now),
                    expires,
                    ids.change_id(now),
                    config,
                );
                let done = run(&mut world, put, now, OpContext::put_large(value, 500));
                model.insert(key, (value, expires));
                mutate(&mut world, done, key)
            }
            Step::Delete(key) => {
                let delete = Delete::new(keys::key(key), ids.change_id(now), config);
                let done = run(&mut world, delete, now, OpContext::read());
                model.remove(&key);
                mutate(&mut world, done, key)
            }
            Step::Wait(ms) => {
                now = now + cairn_core::Duration::from_millis(ms);
                true
            }
        };
        if !ok || check_safety(&world).is_err() || check_quiescent(&world).is_err() {
            return TestResult::error(format!("{step:?} diverged from the model:\n{world}"));
        }
    }
    TestResult::passed()
}

#[test]
fn short_sequential_histories_match_a_plain_map_in_both_cas_modes() {
    qc().quickcheck(
        sequential_history_matches_a_plain_map as fn(Vec<(u8, u8, u8)>, bool) -> TestResult,
    );
}

#[test]
fn the_checker_accepts_every_sequential_history_and_rejects_a_read_of_an_unwritten_value() {
    fn prop(raw: Vec<(bool, u8)>, corrupt: usize) -> TestResult {
        if raw.is_empty() {
            return TestResult::discard();
        }
        // A sequential register history: op i runs over [2i, 2i+1].
        let mut value = None;
        let mut ops = Vec::new();
        for (i, (write, v)) in raw.iter().enumerate() {
            let action = if *write {
                value = Some((u64::from(*v), None));
                Action::Write(value)
            } else {
                Action::Read(value.map(|(v, _)| v))
            };
            let at = 2 * i as u64;
            ops.push(Op {
                start: at,
                end: at + 1,
                start_ms: at,
                end_ms: at + 1,
                action,
                optional: false,
            });
        }
        if linearizability::check(&ops) != Verdict::Linearizable {
            return TestResult::failed();
        }
        let reads: Vec<usize> = (0..ops.len())
            .filter(|&i| matches!(ops[i].action, Action::Read(_)))
            .collect();
        if reads.is_empty() {
            return TestResult::passed();
        }
        let i = reads[corrupt % reads.len()];
        ops[i].action = Action::Read(Some(1_000)); // never written (values are below 256)
        TestResult::from_bool(linearizability::check(&ops) == Verdict::Violation)
    }
    qc().quickcheck(prop as fn(Vec<(bool, u8)>, usize) -> TestResult);
}
