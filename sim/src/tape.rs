//! Where every decision of a run comes from: one seeded [`Rng`], optionally recorded, or a
//! recorded list of decisions played back (what `cairn-sim shrink` edits).
//!
//! Each decision is one raw 64-bit draw, mapped so that **zero is the simplest choice**: no
//! fault, the shortest latency, the first key, the first operation kind, no expiry. A played-back
//! tape that runs out yields zeroes, so cutting a tape short, or zeroing part of it, always gives
//! a valid and simpler run. That is all the shrinker needs to know about the simulator.

use cairn_core::Rng;
use std::fmt;

/// What a decision is for, so that a recorded run reads as a list of choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Label {
    /// A per-seed parameter (fault rates, CAS mode, key count, machine settings).
    Param,
    /// Which operation a client runs next.
    OpKind,
    /// Which key it runs on.
    Key,
    /// The payload size.
    Size,
    /// Whether the write expires, and when.
    Ttl,
    /// A get's byte range.
    Range,
    /// A client's pause between operations.
    Think,
    /// How long a request takes to reach its tier, or its answer to come back.
    Latency,
    /// What goes wrong with a request.
    Fault,
    /// A rival write that lands right before a compare-and-write or a get's blob read.
    Rival,
    /// Whether a client crashes at this step, and which.
    Crash,
    /// Whether a crashed client's unapplied request still lands.
    CrashApply,
    /// How long a crashed client stays down.
    Restart,
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One recorded decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Draw {
    /// What it was for.
    pub label: Label,
    /// The raw value drawn.
    pub value: u64,
}

#[derive(Clone, Debug)]
enum Mode {
    Live,
    Record(Vec<Draw>),
    Replay {
        values: Vec<u64>,
        next: usize,
        draws: Vec<Draw>,
    },
}

/// The source of every decision in a run. See the module docs.
#[derive(Clone, Debug)]
pub struct Tape {
    rng: Rng,
    mode: Mode,
}

impl Tape {
    /// Decisions drawn from `seed`, not recorded (the fast path).
    pub fn live(seed: u64) -> Tape {
        Tape {
            rng: Rng::new(seed),
            mode: Mode::Live,
        }
    }

    /// Decisions drawn from `seed` and recorded; [`Tape::into_draws`] returns them.
    pub fn recording(seed: u64) -> Tape {
        Tape {
            rng: Rng::new(seed),
            mode: Mode::Record(Vec::new()),
        }
    }

    /// Decisions played back from `values`, then zeroes (recorded too, with their labels).
    pub fn replay(values: Vec<u64>) -> Tape {
        Tape {
            rng: Rng::new(0),
            mode: Mode::Replay {
                values,
                next: 0,
                draws: Vec::new(),
            },
        }
    }

    /// The decisions made, with what each was for (empty for a live tape, which records
    /// nothing).
    pub fn into_draws(self) -> Vec<Draw> {
        match self.mode {
            Mode::Record(draws) | Mode::Replay { draws, .. } => draws,
            Mode::Live => Vec::new(),
        }
    }

    /// One raw decision.
    pub fn draw(&mut self, label: Label) -> u64 {
        match &mut self.mode {
            Mode::Live => self.rng.next_u64(),
            Mode::Record(draws) => {
                let value = self.rng.next_u64();
                draws.push(Draw { label, value });
                value
            }
            Mode::Replay {
                values,
                next,
                draws,
            } => {
                let value = values.get(*next).copied().unwrap_or(0);
                *next += 1;
                draws.push(Draw { label, value });
                value
            }
        }
    }

    /// A number in `0..n` (`n > 0`); a zero draw gives 0.
    pub fn below(&mut self, label: Label, n: u64) -> u64 {
        assert!(n > 0, "below(0) has no possible value");
        ((u128::from(self.draw(label)) * u128::from(n)) >> 64) as u64
    }

    /// A number in `lo..=hi`; a zero draw gives `lo`.
    pub fn between(&mut self, label: Label, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "empty range {lo}..={hi}");
        lo + self.below(label, hi - lo + 1)
    }

    /// True with probability `per_million / 1_000_000`; a zero draw gives false.
    pub fn chance(&mut self, label: Label, per_million: u32) -> bool {
        self.below(label, 1_000_000) >= u64::from(1_000_000 - per_million.min(1_000_000))
    }

    /// Picks an index by weight; a zero draw picks the first entry with a weight.
    ///
    /// # Panics
    /// If every weight is zero.
    pub fn weighted(&mut self, label: Label, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        assert!(total > 0, "no choice has a weight");
        let mut pick = self.below(label, total);
        for (i, &w) in weights.iter().enumerate() {
            if pick < u64::from(w) {
                return i;
            }
            pick -= u64::from(w);
        }
        unreachable!("pick < total")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_plays_back_to_the_same_decisions() {
        let mut live = Tape::recording(9);
        let first: Vec<u64> = (0..50).map(|i| live.below(Label::Key, i + 1)).collect();
        let values = live.into_draws().iter().map(|d| d.value).collect();
        let mut replay = Tape::replay(values);
        let again: Vec<u64> = (0..50).map(|i| replay.below(Label::Key, i + 1)).collect();
        assert_eq!(first, again);
    }

    #[test]
    fn an_exhausted_replay_makes_the_simplest_choices() {
        let mut tape = Tape::replay(vec![]);
        assert_eq!(tape.below(Label::Key, 7), 0);
        assert_eq!(tape.between(Label::Latency, 3, 9), 3);
        assert!(!tape.chance(Label::Fault, 999_999));
        assert_eq!(tape.weighted(Label::OpKind, &[0, 5, 1]), 1);
    }

    #[test]
    fn chance_is_always_or_never_at_the_extremes() {
        let mut tape = Tape::live(3);
        assert!((0..1000).all(|_| tape.chance(Label::Fault, 1_000_000)));
        assert!((0..1000).all(|_| !tape.chance(Label::Fault, 0)));
    }
}
