//! The trace of a run: a hash of every event, always (the determinism check compares it), and,
//! when asked for, one readable line per event.

use crate::keys;
use cairn_core::{Completion, HvRow, HvWrite, Request};
use std::fmt;

/// Writes `text` to standard output. Standard output closed by its reader (`cairn-sim … | head`)
/// ends the process at once, silently and successfully, as it ends `cat` or `grep`; any other
/// failure to write ends it with a message on standard error and exit code 3 — where
/// `println!` would panic.
pub fn print(text: fmt::Arguments<'_>) {
    use std::io::Write as _;
    if let Err(e) = std::io::stdout().lock().write_fmt(text) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("cairn-sim: writing to standard output: {e}");
        std::process::exit(3);
    }
}

/// Where readable trace lines go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Sink {
    /// Nowhere (only the hash is kept).
    #[default]
    Off,
    /// Standard output, as they happen (so that a run that panics still shows its lines).
    Stdout,
    /// A buffer, for tests.
    Buffer(String),
}

/// The hash and optional lines of a run.
#[derive(Clone, Debug)]
pub struct Trace {
    hash: u64,
    sink: Sink,
}

impl Trace {
    /// A trace writing its lines to `sink`.
    pub fn new(sink: Sink) -> Trace {
        Trace {
            hash: 0xcbf2_9ce4_8422_2325,
            sink,
        }
    }

    /// Whether lines are wanted (format them only then: formatting is the slow part).
    pub fn enabled(&self) -> bool {
        self.sink != Sink::Off
    }

    /// The hash of everything fed so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The buffered lines, if the sink is a buffer.
    pub fn buffered(&self) -> Option<&str> {
        match &self.sink {
            Sink::Buffer(text) => Some(text),
            Sink::Off | Sink::Stdout => None,
        }
    }

    /// Writes a line (if lines are wanted).
    pub fn line(&mut self, line: fmt::Arguments<'_>) {
        match &mut self.sink {
            Sink::Off => {}
            Sink::Stdout => print(format_args!("{line}\n")),
            Sink::Buffer(text) => {
                use fmt::Write as _;
                writeln!(text, "{line}").expect("writing to a String cannot fail");
            }
        }
    }

    /// Feeds one word to the hash.
    pub fn word(&mut self, x: u64) {
        self.hash = (self.hash ^ x)
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(29);
    }

    fn revision(&mut self, r: Option<cairn_core::Revision>) {
        match r {
            Some(r) => {
                self.word(1);
                self.word(r.0 as u64);
                self.word((r.0 >> 64) as u64);
            }
            None => self.word(0),
        }
    }

    fn key(&mut self, key: &cairn_core::Key) {
        self.word(keys::index(key) as u64);
    }

    fn write(&mut self, write: &HvWrite) {
        match write {
            HvWrite::Tombstone(t) => {
                self.word(1);
                self.revision(Some(t.revision));
                self.word(t.size);
                self.word(t.expires.map_or(u64::MAX, |e| e.as_millis()));
            }
            HvWrite::Inline(meta) => {
                self.word(2);
                self.word(meta.size);
                self.word(meta.expires.map_or(u64::MAX, |e| e.as_millis()));
            }
            HvWrite::Delete => self.word(3),
        }
    }

    /// Feeds a request to the hash.
    pub fn request(&mut self, request: &Request<'_>) {
        match *request {
            Request::HvRead { key, payload, now } => {
                self.word(10 + u64::from(payload));
                self.key(key);
                self.word(now.as_millis());
            }
            Request::HvPutNonTombstone { key, meta, now } => {
                self.word(12);
                self.key(key);
                self.write(&HvWrite::Inline(meta));
                self.word(now.as_millis());
            }
            Request::HvDeleteNonTombstone { key, now } => {
                self.word(13);
                self.key(key);
                self.word(now.as_millis());
            }
            Request::HvCompareAndWrite {
                key,
                expected,
                write,
                now,
            } => {
                self.word(14);
                self.key(key);
                self.revision(expected);
                self.write(&write);
                self.word(now.as_millis());
            }
            Request::LtPut { blob, expires } => {
                self.word(15);
                self.key(blob.key);
                self.revision(Some(blob.revision));
                self.word(expires.map_or(u64::MAX, |e| e.as_millis()));
            }
            Request::LtGet { blob, span } => {
                self.word(16);
                self.key(blob.key);
                self.revision(Some(blob.revision));
                self.word(span.map_or(u64::MAX, |s| s.start));
            }
            Request::LtHead { blob } => {
                self.word(17);
                self.key(blob.key);
                self.revision(Some(blob.revision));
            }
            Request::LtDelete { blob } => {
                self.word(18);
                self.key(blob.key);
                self.revision(Some(blob.revision));
            }
            Request::LogRecord { id, change } => {
                self.word(19);
                self.word(id.0 as u64);
                self.key(change.key);
                self.revision(change.new);
                self.revision(change.old);
            }
            Request::LogRemove { id } => {
                self.word(20);
                self.word(id.0 as u64);
            }
            Request::LogScan { after } => {
                self.word(21);
                self.word(after.map_or(u64::MAX, |id| id.0 as u64));
            }
        }
    }

    /// Feeds a completion to the hash.
    pub fn completion(&mut self, completion: &Completion<'_>) {
        match *completion {
            Completion::Row(row) => {
                self.word(30);
                match row {
                    HvRow::Absent => self.word(0),
                    HvRow::Inline(meta) => self.write(&HvWrite::Inline(meta)),
                    HvRow::Tombstone(t) => self.write(&HvWrite::Tombstone(t)),
                }
            }
            Completion::Guarded(g) => {
                self.word(31);
                self.word(match g {
                    cairn_core::Guarded::Applied => 0,
                    cairn_core::Guarded::Blocked(t) => t.revision.0 as u64,
                });
            }
            Completion::Cas(ok) => self.word(32 + u64::from(ok)),
            Completion::BlobWritten { size } => {
                self.word(34);
                self.word(size);
            }
            Completion::Blob { found } => self.word(35 + u64::from(found)),
            Completion::Done => self.word(37),
            Completion::Entry(entry) => {
                self.word(38);
                self.word(entry.map_or(u64::MAX, |e| e.id.0 as u64));
            }
            Completion::Failed => self.word(39),
            Completion::Refused => self.word(40),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_depends_on_order() {
        let (mut a, mut b) = (Trace::new(Sink::Off), Trace::new(Sink::Off));
        a.word(1);
        a.word(2);
        b.word(2);
        b.word(1);
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn lines_go_to_the_buffer_only_when_asked_for() {
        let mut off = Trace::new(Sink::Off);
        off.line(format_args!("x"));
        assert_eq!(off.buffered(), None);
        let mut on = Trace::new(Sink::Buffer(String::new()));
        on.line(format_args!("hello {}", 1));
        assert_eq!(on.buffered(), Some("hello 1\n"));
    }
}
