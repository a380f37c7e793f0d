//! Invariant 4: a write acknowledged as committed survives a crash of the process.
//!
//! The tiers are durable in the simulator; a client crash loses only the client's machines. So
//! when a write ran *alone* on its key (no other write in flight when it started, none started
//! before it ended) and committed, the key must show that write — until the next write starts,
//! or the value expires — whatever crashes and recoveries happen meanwhile. [`Durability`] tracks
//! which keys are in that state and [`Durability::check`] compares them with the world; the
//! simulator checks after every crash, after every recovery, and at the end.

use crate::keys;
use crate::world::World;
use cairn_core::Instant;

/// What a settled key must show: a value tag with its expiry, or (`None`) nothing.
pub type Settled = Option<(u64, Option<Instant>)>;

/// A key that does not show the write acknowledged on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LostWrite {
    /// The key's index.
    pub key: usize,
    /// The value tag that should be visible (`None`: absent).
    pub expected: Option<u64>,
    /// What is visible.
    pub found: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default)]
struct KeyState {
    /// Writes started and not yet ended (or cut off by a crash).
    in_flight: u32,
    /// Bumped whenever a write starts (or a rival lands).
    epoch: u64,
    /// What the key must show, if a lone write committed and nothing has started since.
    settled: Option<Settled>,
}

/// Per-key bookkeeping of acknowledged writes. See the module docs.
#[derive(Clone, Debug)]
pub struct Durability {
    keys: Vec<KeyState>,
}

/// The ticket a write gets when it starts: whether it started alone, and the key's epoch then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    alone_since: Option<u64>,
}

impl Durability {
    /// Nothing settled on any of `keys` keys.
    pub fn new(keys: usize) -> Durability {
        Durability {
            keys: vec![KeyState::default(); keys],
        }
    }

    /// A write starts on `key`.
    pub fn started(&mut self, key: usize) -> Ticket {
        let state = &mut self.keys[key];
        state.epoch += 1;
        let alone_since = (state.in_flight == 0).then_some(state.epoch);
        state.in_flight += 1;
        state.settled = None;
        Ticket { alone_since }
    }

    /// The write holding `ticket` ended; `committed` is what it wrote if it committed.
    pub fn ended(&mut self, key: usize, ticket: Ticket, committed: Option<Settled>) {
        let state = &mut self.keys[key];
        state.in_flight -= 1;
        let alone = ticket.alone_since == Some(state.epoch) && state.in_flight == 0;
        if let (true, Some(written)) = (alone, committed) {
            state.settled = Some(written);
        }
    }

    /// A write on `key` was cut off by a crash: it is over, and it settles nothing.
    pub fn cut(&mut self, key: usize) {
        self.keys[key].in_flight -= 1;
    }

    /// Another writer (a rival) changed `key` without going through a ticket.
    pub fn interfered(&mut self, key: usize) {
        let state = &mut self.keys[key];
        state.epoch += 1;
        state.settled = None;
    }

    /// Every settled key shows what it must (or nothing, once it expired). Returns how many
    /// keys were settled, and so checked.
    pub fn check(&self, world: &World) -> Result<u64, LostWrite> {
        let mut checked = 0;
        for (i, state) in self.keys.iter().enumerate() {
            let Some(expected) = state.settled else {
                continue;
            };
            let found = world.visible(keys::key(i));
            let want = expected.map(|(value, _)| value);
            let expired = expected.is_some_and(|(_, e)| e.is_some_and(|e| e <= world.now()));
            if found != want && !(expired && found.is_none()) {
                return Err(LostWrite {
                    key: i,
                    expected: want,
                    found,
                });
            }
            checked += 1;
        }
        Ok(checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::{ObjectMeta, Revision};

    fn meta() -> ObjectMeta {
        ObjectMeta {
            size: 1,
            created: Instant::ZERO,
            expires: None,
        }
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        let mut d = Durability::new(2);
        let ticket = d.started(1);
        let mut world = World::new();
        world.insert_inline(keys::key(1), meta(), 5);
        d.ended(1, ticket, Some(Some((5, None))));
        assert!(d.check(&world).is_ok());
        // Behind cairn's back (as a buggy recovery might), the value goes.
        world.remove_row(keys::key(1));
        let lost = LostWrite {
            key: 1,
            expected: Some(5),
            found: None,
        };
        assert_eq!(d.check(&world), Err(lost));
        // A large object whose blob vanished is lost too.
        world.insert_large(keys::key(1), Revision(3), 9, None, 5);
        assert!(d.check(&world).is_ok());
        world.remove_blob(keys::key(1), Revision(3));
        assert_eq!(d.check(&world), Err(lost));
    }

    #[test]
    fn an_acknowledged_delete_must_stay_deleted() {
        let mut d = Durability::new(1);
        let ticket = d.started(0);
        d.ended(0, ticket, Some(None));
        let mut world = World::new();
        assert!(d.check(&world).is_ok());
        world.insert_inline(keys::key(0), meta(), 7);
        assert_eq!(
            d.check(&world),
            Err(LostWrite {
                key: 0,
                expected: None,
                found: Some(7)
            })
        );
    }

    #[test]
    fn only_a_write_that_ran_alone_settles_its_key() {
        let mut world = World::new();
        world.insert_inline(keys::key(0), meta(), 1);
        // Two overlapping writes: either may have landed last, so neither settles the key.
        let mut d = Durability::new(1);
        let (a, b) = (d.started(0), d.started(0));
        d.ended(0, b, Some(Some((2, None))));
        d.ended(0, a, Some(Some((3, None))));
        assert!(d.check(&world).is_ok());
        // One write started and ended inside another's lifetime: the outer one does not settle.
        let mut d = Durability::new(1);
        let outer = d.started(0);
        let inner = d.started(0);
        d.ended(0, inner, Some(Some((2, None))));
        d.ended(0, outer, Some(Some((3, None))));
        assert!(d.check(&world).is_ok());
        // A write that did not commit settles nothing; nor does a rival's.
        let mut d = Durability::new(1);
        let t = d.started(0);
        d.ended(0, t, None);
        assert!(d.check(&world).is_ok());
        let t = d.started(0);
        d.ended(0, t, Some(Some((1, None))));
        d.interfered(0);
        world.insert_inline(keys::key(0), meta(), 4);
        assert!(d.check(&world).is_ok());
    }

    #[test]
    fn an_expired_acknowledged_write_may_be_gone() {
        let mut d = Durability::new(1);
        let t = d.started(0);
        let at = Instant::from_millis(10);
        d.ended(0, t, Some(Some((5, Some(at)))));
        let mut world = World::new();
        world.advance_to(at);
        assert!(d.check(&world).is_ok());
    }
}
