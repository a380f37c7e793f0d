//! The client-visible history of a run: every operation with its invocation, its response and
//! what it returned, for the linearizability checker.

use crate::linearizability::{Action, Op};
use cairn_core::Instant;
use std::fmt;

/// The client number of a rival writer (the fault that lands a write right before a
/// compare-and-write).
pub const RIVAL: u32 = u32::MAX;

/// What an operation was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A get.
    Get,
    /// A head.
    Head,
    /// A small (inline) put of a value tag.
    SmallPut {
        /// The value tag.
        value: u64,
        /// Its expiry.
        expires: Option<Instant>,
    },
    /// A large put (a blob behind a tombstone) of a value tag.
    LargePut {
        /// The value tag.
        value: u64,
        /// Its expiry.
        expires: Option<Instant>,
    },
    /// A delete.
    Delete,
}

impl Kind {
    /// The operation's name, as traces spell it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Get => "get",
            Kind::Head => "head",
            Kind::SmallPut { .. } => "small_put",
            Kind::LargePut { .. } => "large_put",
            Kind::Delete => "delete",
        }
    }

    /// Whether the operation writes.
    pub fn is_write(self) -> bool {
        !matches!(self, Kind::Get | Kind::Head)
    }

    /// What a write puts into the register (`None`: absent).
    pub fn written(self) -> Option<(u64, Option<Instant>)> {
        match self {
            Kind::SmallPut { value, expires } | Kind::LargePut { value, expires } => {
                Some((value, expires))
            }
            Kind::Get | Kind::Head | Kind::Delete => None,
        }
    }
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not finished yet.
    Pending,
    /// A write that took effect.
    Committed,
    /// A write that lost the race: ordered just before a concurrent winner, never visible.
    Superseded,
    /// A write that failed before its commit point: it did not take effect.
    NotApplied,
    /// A write that failed ambiguously: it may or may not have taken effect.
    Unknown,
    /// The client crashed before the operation finished.
    Crashed,
    /// A read that returned a value tag, or absent.
    Read(Option<u64>),
    /// A read that failed.
    ReadFailed,
}

/// One operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// The client (or [`RIVAL`]).
    pub client: u32,
    /// The key's index.
    pub key: u16,
    /// What it was.
    pub kind: Kind,
    /// Invocation, on the history clock.
    pub start: u64,
    /// Response (or crash), on the history clock.
    pub end: u64,
    /// Virtual time of the invocation.
    pub start_ms: u64,
    /// Virtual time of the response.
    pub end_ms: u64,
    /// How it ended.
    pub outcome: Outcome,
}

impl Record {
    /// The operation as the linearizability checker sees it, or `None` if it cannot matter
    /// (a failed read, a write that certainly did not take effect).
    ///
    /// # Panics
    /// On a pending operation: histories are checked after every operation has ended.
    pub fn to_op(&self) -> Option<Op> {
        let (action, optional) = match (self.kind, self.outcome) {
            (_, Outcome::Pending) => panic!("history checked with a pending operation: {self}"),
            (Kind::Get | Kind::Head, Outcome::Read(tag)) => (Action::Read(tag), false),
            (Kind::Get | Kind::Head, _) => return None,
            (_, Outcome::NotApplied) => return None,
            (_, Outcome::Superseded) => (Action::Superseded, false),
            (kind, Outcome::Committed) => (write(kind), false),
            (kind, Outcome::Unknown | Outcome::Crashed) => (write(kind), true),
            (_, Outcome::Read(_) | Outcome::ReadFailed) => {
                unreachable!("a write does not end as a read: {self}")
            }
        };
        Some(Op {
            start: self.start,
            end: self.end,
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            action,
            optional,
        })
    }
}

fn write(kind: Kind) -> Action {
    Action::Write(
        kind.written()
            .map(|(value, expires)| (value, expires.map(Instant::as_millis))),
    )
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = if self.client == RIVAL {
            "rival".to_owned()
        } else {
            format!("c{}", self.client)
        };
        let written = match self.kind.written() {
            Some((value, Some(e))) => format!(" {value} expires={e}"),
            Some((value, None)) => format!(" {value}"),
            None => String::new(),
        };
        let what = format!("{}{written}", self.kind.name());
        let outcome = match self.outcome {
            Outcome::Read(Some(tag)) => format!("-> {tag}"),
            Outcome::Read(None) => "-> absent".to_owned(),
            other => format!("-> {other:?}"),
        };
        write!(
            f,
            "{who:>5} k{} {what} {outcome} [{}..{}] (t={}..{}ms)",
            self.key, self.start, self.end, self.start_ms, self.end_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: Kind, outcome: Outcome) -> Record {
        Record {
            client: 0,
            key: 0,
            kind,
            start: 1,
            end: 2,
            start_ms: 0,
            end_ms: 0,
            outcome,
        }
    }

    #[test]
    fn writes_that_certainly_did_not_happen_are_left_out() {
        let put = Kind::SmallPut {
            value: 3,
            expires: None,
        };
        assert_eq!(record(put, Outcome::NotApplied).to_op(), None);
        assert_eq!(record(Kind::Get, Outcome::ReadFailed).to_op(), None);
        assert_eq!(record(Kind::Get, Outcome::Crashed).to_op(), None);
    }

    #[test]
    fn ambiguous_and_crashed_writes_are_optional() {
        let put = Kind::LargePut {
            value: 3,
            expires: Some(Instant::from_millis(9)),
        };
        for outcome in [Outcome::Unknown, Outcome::Crashed] {
            let op = record(put, outcome).to_op().unwrap();
            assert!(op.optional);
            assert_eq!(op.action, Action::Write(Some((3, Some(9)))));
        }
        let op = record(Kind::Delete, Outcome::Committed).to_op().unwrap();
        assert_eq!((op.action, op.optional), (Action::Write(None), false));
        let op = record(put, Outcome::Superseded).to_op().unwrap();
        assert_eq!((op.action, op.optional), (Action::Superseded, false));
    }
}
