//! Per-key linearizability of a register history (invariant 3), by the Wing–Gong search with
//! Lowe's memoisation: find an order of the operations that respects real time and in which every
//! read returns the value of the write before it.
//!
//! The register's state is a value tag (or absent) with its expiry. Operations that may or may
//! not have taken effect (a write that returned an ambiguous error, or was cut off by a crash)
//! are *optional*: each may be placed anywhere inside its window, or nowhere. A read must see the
//! state it returned at its place in the order; expiry is judged against the read's own
//! interval, the way the tiers judge it against the request's `now`: a value is live for a read
//! that started before it expired, and absent for one that ended after.
//!
//! A write that reported *superseded* (it lost the race to a concurrent writer) must be placed
//! immediately before another write that started before it ended: last writer wins, and the
//! loser's value is never visible. A loss with no winner (say, to an expired tombstone) is a
//! lost write.
//!
//! The search is exponential in the number of overlapping operations, which the simulator bounds
//! by its number of clients; memoising (operations placed, state) keeps ordinary histories cheap.
//! A search that exceeds its node budget is reported as inconclusive, never as a pass.

use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// What one operation did to, or saw in, the register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Wrote a value (`Some(tag, expires_ms)`) or deleted (`None`).
    Write(Option<(u64, Option<u64>)>),
    /// Read a value tag, or absent.
    Read(Option<u64>),
    /// A write that lost the race: it must be followed at once by a concurrent write.
    Superseded,
}

/// One operation on one key, as the checker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    /// Invocation, on the history's event clock (unique across invocations and responses).
    pub start: u64,
    /// Response on the same clock; for an optional op, the last instant it could take effect.
    pub end: u64,
    /// Virtual time of the invocation, in milliseconds (for expiry).
    pub start_ms: u64,
    /// Virtual time of the response, in milliseconds (for expiry).
    pub end_ms: u64,
    /// What it did.
    pub action: Action,
    /// May or may not have taken effect.
    pub optional: bool,
}

/// The register: absent, or a value tag with its expiry (ms).
type Value = Option<(u64, Option<u64>)>;

/// The register, and whether a superseded write was just placed: then the next op must be a
/// write invoked before this clock value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct State {
    value: Value,
    winner_by: Option<u64>,
}

/// The outcome of checking one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A linearization exists.
    Linearizable,
    /// None exists.
    Violation,
    /// The search ran out of budget before deciding.
    Inconclusive,
}

/// Nodes one key's search may visit before giving up. Ordinary histories need a few hundred.
pub const NODE_BUDGET: u64 = 2_000_000;

/// Ops of one key searched on the caller's stack. An unoptimised build spends about 1.5 KiB of
/// stack per op placed, so 512 of them fit well inside a spawned thread's default 2 MiB.
const ON_CALLERS_STACK: usize = 512;

/// Stack per op for a longer history, searched on a thread of its own: about twice what one
/// level of the search takes in an unoptimised build (optimised, it takes far less).
const STACK_PER_OP: usize = 4 * 1024;

/// Checks one key's history. `ops` may come in any order.
pub fn check(ops: &[Op]) -> Verdict {
    check_with_budget(ops, NODE_BUDGET)
}

/// [`check`] with an explicit node budget.
pub fn check_with_budget(ops: &[Op], budget: u64) -> Verdict {
    let mut ops = ops.to_vec();
    ops.sort_by_key(|op| op.start);
    for op in &ops {
        assert!(
            op.start < op.end,
            "an operation ends after it starts: {op:?}"
        );
    }
    let mut search = Search {
        zobrist: (0..ops.len() as u64).map(zobrist).collect(),
        done: vec![false; ops.len()],
        ops,
        memo: HashSet::default(),
        closed: Vec::new(),
        nodes: 0,
        budget,
    };
    let mandatory = search.ops.iter().filter(|op| !op.optional).count();
    let initial = State {
        value: None,
        winner_by: None,
    };
    let depth = search.ops.len();
    let mut searched = move || search.dfs(0, initial, mandatory, 0);
    let result = if depth <= ON_CALLERS_STACK {
        searched()
    } else {
        // The search recurses once per op placed: a long history gets a stack to match, where
        // the caller's (2 MiB on a spawned thread) would overflow and abort the process.
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("linearizability".to_owned())
                .stack_size((depth + ON_CALLERS_STACK).saturating_mul(STACK_PER_OP))
                .spawn_scoped(scope, &mut searched)
                .expect("a thread for a long history's search")
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    };
    match result {
        Ok(true) => Verdict::Linearizable,
        Ok(false) => Verdict::Violation,
        Err(Exhausted) => Verdict::Inconclusive,
    }
}

struct Exhausted;

struct Search {
    ops: Vec<Op>,
    zobrist: Vec<u128>,
    done: Vec<bool>,
    memo: HashSet<(u128, State), BuildHasherDefault<WordHasher>>,
    /// Ops closed by placements on the current path, as a stack of runs (reused, not
    /// allocated per node).
    closed: Vec<usize>,
    nodes: u64,
    budget: u64,
}

impl Search {
    /// Whether the ops not yet done can be placed after a prefix whose done-set hashes to `hash`
    /// and leaves the register in `state`, with `mandatory` required ops still to place. Every
    /// op before index `from` is done.
    fn dfs(
        &mut self,
        hash: u128,
        state: State,
        mandatory: usize,
        from: usize,
    ) -> Result<bool, Exhausted> {
        if mandatory == 0 && state.winner_by.is_none() {
            return Ok(true); // every optional op left can simply not have happened
        }
        if !self.memo.insert((hash, state)) {
            return Ok(false);
        }
        self.nodes += 1;
        if self.nodes > self.budget {
            return Err(Exhausted);
        }
        let from = (from..self.ops.len())
            .find(|&i| !self.done[i])
            .unwrap_or(self.ops.len());
        // No op may go before a required op that ended before it started. (An op that starts
        // after the smallest end so far ends later still: the scan can stop there.)
        let mut horizon = u64::MAX;
        let mut due = None;
        for i in from..self.ops.len() {
            let op = &self.ops[i];
            if op.start > horizon {
                break;
            }
            if !self.done[i] && !op.optional && op.end < horizon {
                horizon = op.end;
                due = Some(op.action);
            }
        }
        // A read that can go now, and whose placing closes no optional op's window, goes now
        // without branching: a linearization that places it later can place it here instead
        // (it changes no state, and nothing it could precede is constrained by it).
        let free_read = (from..self.ops.len())
            .take_while(|&i| self.ops[i].start <= horizon)
            .filter(|&i| !self.done[i])
            .find(|&i| {
                let op = &self.ops[i];
                matches!(op.action, Action::Read(_))
                    && step(state, op).is_some()
                    && !(from..i).any(|j| {
                        !self.done[j] && self.ops[j].optional && self.ops[j].end < op.start
                    })
            });
        if let Some(i) = free_read {
            self.done[i] = true;
            let left = mandatory - usize::from(!self.ops[i].optional);
            let found = self.dfs(hash ^ self.zobrist[i], state, left, from);
            self.done[i] = false;
            return found;
        }
        // The op due first is the most constrained: if it reads a value, try the write of that
        // value first (a heuristic for the order of the search only; memoisation keeps the
        // second pass from repeating the first).
        let wanted = match due {
            Some(Action::Read(tag)) => Some(tag),
            _ => None,
        };
        let writes_wanted = |op: &Op| match (op.action, wanted) {
            (Action::Write(value), Some(tag)) => value.map(|(v, _)| v) == tag,
            _ => false,
        };
        for pass in [true, false] {
            if pass && wanted.is_none() {
                continue;
            }
            for i in from..self.ops.len() {
                let op = self.ops[i];
                if op.start > horizon {
                    break; // sorted by start
                }
                if self.done[i] || writes_wanted(&op) != pass {
                    continue;
                }
                if self.place(i, hash, state, mandatory, from)? {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Places op `i` next (if it can happen in `state`) and searches on.
    fn place(
        &mut self,
        i: usize,
        hash: u128,
        state: State,
        mandatory: usize,
        from: usize,
    ) -> Result<bool, Exhausted> {
        let op = self.ops[i];
        let Some(next) = step(state, &op) else {
            return Ok(false);
        };
        // Placing `op` closes the window of every optional op that ended before it started
        // (such an op also started before it, so comes earlier in the order).
        let mark = self.closed.len();
        self.closed.push(i);
        for j in from..i {
            if !self.done[j] && self.ops[j].optional && self.ops[j].end < op.start {
                self.closed.push(j);
            }
        }
        let mut next_hash = hash;
        for k in mark..self.closed.len() {
            let j = self.closed[k];
            self.done[j] = true;
            next_hash ^= self.zobrist[j];
        }
        let left = mandatory - usize::from(!op.optional);
        let found = self.dfs(next_hash, next, left, from);
        for k in mark..self.closed.len() {
            let j = self.closed[k];
            self.done[j] = false;
        }
        self.closed.truncate(mark);
        found
    }
}

/// The register after `op`, or `None` if `op` cannot happen in `state`.
fn step(state: State, op: &Op) -> Option<State> {
    if let Some(by) = state.winner_by {
        let is_write = matches!(op.action, Action::Write(_) | Action::Superseded);
        if !is_write || op.start >= by {
            return None; // only a concurrent write may follow a superseded one
        }
    }
    let value = match op.action {
        Action::Write(value) => value,
        Action::Superseded => {
            return Some(State {
                value: state.value,
                winner_by: Some(op.end),
            })
        }
        Action::Read(Some(tag)) => match state.value {
            Some((value, expires)) if value == tag && expires.is_none_or(|e| e > op.start_ms) => {
                state.value
            }
            _ => return None,
        },
        Action::Read(None) => match state.value {
            None => None,
            Some((_, Some(expires))) if expires <= op.end_ms => state.value,
            Some(_) => return None,
        },
    };
    Some(State {
        value,
        winner_by: None,
    })
}

/// A fast hasher for the memo's keys, which are already well mixed (Zobrist hashes): fold the
/// words together. (The memo is only probed, never iterated, so its order cannot leak into a
/// result.)
#[derive(Default)]
struct WordHasher(u64);

impl Hasher for WordHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// A fixed pseudo-random 128-bit label for op `i` (SplitMix64, twice).
fn zobrist(i: u64) -> u128 {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let a = mix(i.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1));
    let b = mix(a ^ 0xdead_beef_cafe_f00d);
    (u128::from(a) << 64) | u128::from(b)
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.action {
            Action::Write(Some((tag, None))) => write!(f, "write {tag}")?,
            Action::Write(Some((tag, Some(e)))) => write!(f, "write {tag} expires={e}ms")?,
            Action::Write(None) => write!(f, "delete")?,
            Action::Read(Some(tag)) => write!(f, "read -> {tag}")?,
            Action::Read(None) => write!(f, "read -> absent")?,
            Action::Superseded => write!(f, "superseded write")?,
        }
        write!(
            f,
            " [{}..{}] ({}..{}ms)",
            self.start, self.end, self.start_ms, self.end_ms
        )?;
        if self.optional {
            f.write_str(" maybe")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(start: u64, end: u64, action: Action) -> Op {
        Op {
            start,
            end,
            start_ms: start,
            end_ms: end,
            action,
            optional: false,
        }
    }
    fn w(start: u64, end: u64, tag: u64) -> Op {
        op(start, end, Action::Write(Some((tag, None))))
    }
    fn r(start: u64, end: u64, tag: Option<u64>) -> Op {
        op(start, end, Action::Read(tag))
    }
    fn maybe(op: Op) -> Op {
        Op {
            optional: true,
            ..op
        }
    }

    #[test]
    fn a_long_history_on_one_key_is_searched_without_overflowing_the_stack() {
        // The search goes one level deeper per op placed; a test thread has 2 MiB of stack.
        let n = 20_000;
        let mut h: Vec<Op> = (0..n).map(|i| w(4 * i, 4 * i + 1, i + 1)).collect();
        h.extend((0..n).map(|i| r(4 * i + 2, 4 * i + 3, Some(i + 1))));
        assert_eq!(check(&h), Verdict::Linearizable);
        h.push(r(4 * n, 4 * n + 1, Some(1)));
        assert_eq!(check(&h), Verdict::Violation);
    }

    #[test]
    fn sequential_reads_see_the_last_write() {
        let h = [w(0, 1, 1), r(2, 3, Some(1)), w(4, 5, 2), r(6, 7, Some(2))];
        assert_eq!(check(&h), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_caught() {
        let h = [w(0, 1, 1), w(2, 3, 2), r(4, 5, Some(1))];
        assert_eq!(check(&h), Verdict::Violation);
    }

    #[test]
    fn concurrent_writes_may_be_seen_in_either_order() {
        let h = [w(0, 10, 1), w(1, 9, 2), r(11, 12, Some(1))];
        assert_eq!(check(&h), Verdict::Linearizable);
        let h = [w(0, 10, 1), w(1, 9, 2), r(11, 12, Some(2))];
        assert_eq!(check(&h), Verdict::Linearizable);
    }

    #[test]
    fn values_cannot_flip_back() {
        // 1 then 2 then 1 again, all reads after both writes: no single order explains it.
        let h = [
            w(0, 10, 1),
            w(1, 9, 2),
            r(11, 12, Some(1)),
            r(13, 14, Some(2)),
            r(15, 16, Some(1)),
        ];
        assert_eq!(check(&h), Verdict::Violation);
    }

    #[test]
    fn a_read_of_a_value_nobody_wrote_is_caught() {
        assert_eq!(check(&[r(0, 1, Some(7))]), Verdict::Violation);
    }

    #[test]
    fn a_write_that_errored_may_or_may_not_have_taken_effect() {
        let h = [maybe(w(0, 5, 1)), r(6, 7, Some(1))];
        assert_eq!(check(&h), Verdict::Linearizable);
        let h = [maybe(w(0, 5, 1)), r(6, 7, None)];
        assert_eq!(check(&h), Verdict::Linearizable);
    }

    #[test]
    fn an_optional_write_cannot_take_effect_after_its_window() {
        // Absent after the window, then the value appears: too late for the optional write.
        let h = [maybe(w(0, 5, 1)), r(6, 7, None), r(8, 9, Some(1))];
        assert_eq!(check(&h), Verdict::Violation);
    }

    #[test]
    fn a_delete_makes_the_key_absent() {
        let h = [w(0, 1, 1), op(2, 3, Action::Write(None)), r(4, 5, None)];
        assert_eq!(check(&h), Verdict::Linearizable);
        let h = [w(0, 1, 1), op(2, 3, Action::Write(None)), r(4, 5, Some(1))];
        assert_eq!(check(&h), Verdict::Violation);
    }

    #[test]
    fn an_expired_value_reads_absent_and_only_then() {
        let put = op(0, 1, Action::Write(Some((1, Some(10)))));
        assert_eq!(check(&[put, r(5, 6, Some(1))]), Verdict::Linearizable);
        assert_eq!(check(&[put, r(5, 6, None)]), Verdict::Violation);
        assert_eq!(check(&[put, r(9, 12, None)]), Verdict::Linearizable);
        assert_eq!(check(&[put, r(11, 12, Some(1))]), Verdict::Violation);
    }

    #[test]
    fn a_superseded_write_needs_a_concurrent_winner() {
        let lost = op(0, 10, Action::Superseded);
        // The winner overlaps the loser: fine, and the loser's value is never seen.
        assert_eq!(
            check(&[lost, w(5, 12, 2), r(13, 14, Some(2))]),
            Verdict::Linearizable
        );
        // No winner at all: the write reported a loss to nobody.
        let alone = op(2, 10, Action::Superseded);
        assert_eq!(
            check(&[w(0, 1, 1), alone, r(13, 14, Some(1))]),
            Verdict::Violation
        );
        // A "winner" that started after the loser finished cannot have beaten it.
        assert_eq!(
            check(&[lost, w(11, 12, 2), r(13, 14, Some(2))]),
            Verdict::Violation
        );
        // An optional write may be the winner.
        let maybe_winner = maybe(w(3, 8, 2));
        assert_eq!(check(&[lost, maybe_winner]), Verdict::Linearizable);
    }

    #[test]
    fn reads_placed_greedily_do_not_hide_a_linearization() {
        // The read of 1 is legal at once, but an optional write closing its window must be
        // allowed to go first: 2 is read later, so the optional write happened before.
        let h = [
            w(0, 1, 1),
            maybe(w(2, 3, 2)),
            r(4, 9, Some(2)),
            r(5, 6, Some(1)),
        ];
        assert_eq!(check(&h), Verdict::Violation, "1 after 2 with 2 before");
        let h = [
            w(0, 1, 1),
            maybe(w(2, 8, 2)),
            r(3, 4, Some(1)),
            r(5, 6, Some(2)),
        ];
        assert_eq!(check(&h), Verdict::Linearizable);
        // Many concurrent reads and writes: fast, whatever their number.
        let mut h: Vec<Op> = (0..30).map(|i| w(i, 100 + i, i)).collect();
        h.extend((0..30).map(|i| r(40 + i, 200 + i, Some(29))));
        assert_eq!(check_with_budget(&h, 20_000), Verdict::Linearizable);
    }

    #[test]
    fn an_exhausted_budget_is_inconclusive_not_a_pass() {
        let h: Vec<Op> = (0..12).map(|i| w(i, 100 + i, i)).collect();
        let mut h = h;
        h.push(r(200, 201, Some(99)));
        assert_eq!(check_with_budget(&h, 50), Verdict::Inconclusive);
        assert_eq!(check(&h), Verdict::Violation);
    }
}
