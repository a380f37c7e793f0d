//! How results are shown: text for people, JSON for scripts, a progress bar on terminals.

use crate::commands::CliError;
use cairn_adapters::{Location, Metadata};
use cairn_core::Instant;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;

/// Prints a line on standard output, like `println!`, but a failure to write is an error the
/// command returns instead of a panic.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))?
    };
}
pub(crate) use out;

/// Writes `text` and a newline to standard output.
pub fn line(text: std::fmt::Arguments<'_>) -> Result<(), CliError> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_fmt(text)
        .and_then(|()| stdout.write_all(b"\n"))
        .map_err(stdout_error)
}

/// A failure to write standard output. A reader that closed the pipe (`cairn ls | head`) wanted
/// no more; anything else (a full disk) is reported.
pub fn stdout_error(source: io::Error) -> CliError {
    if source.kind() == io::ErrorKind::BrokenPipe {
        return CliError::Closed;
    }
    CliError::File {
        path: PathBuf::from("<standard output>"),
        source,
    }
}

/// `text` safe to print on a terminal: control characters (an escape sequence
/// in a key, a newline in a metadata value) and the invisible marks that reorder or hide text
/// (bidirectional overrides and isolates, zero-width characters) are shown escaped, as `\u{1b}`,
/// `\n` or `\u{202e}`; everything else as is.
pub fn shown(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| match needs_escape(c) {
                true if c.is_control() => c.escape_debug().to_string(),
                true => c.escape_unicode().to_string(),
                false => c.to_string(),
            })
            .collect(),
    )
}

/// Whether [`shown`] escapes `c`.
fn needs_escape(c: char) -> bool {
    c.is_control()
        // Zero-width joiners (U+200C, U+200D) are left alone: emoji and scripts need them.
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// Transfers at least this large get a progress bar (when standard error is a terminal).
const PROGRESS_MIN: u64 = 8 << 20;

/// An instant as RFC 3339 UTC with milliseconds; past the year 9999, which RFC 3339 cannot
/// write, as milliseconds since the Unix epoch.
pub fn time(at: Instant) -> String {
    use std::fmt::Write;
    let millis = at.as_millis();
    let mut out = String::new();
    let t = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(millis));
    match t.map(|t| write!(out, "{}", humantime::format_rfc3339_millis(t))) {
        Some(Ok(())) => out,
        _ => format!("{millis} ms after 1970-01-01T00:00:00Z"),
    }
}

/// `n` things in words: `count(1, "entry", "entries")` is "1 entry", 0 or 2 take the plural.
pub fn count<N: std::fmt::Display + PartialEq + From<u8>>(n: N, one: &str, many: &str) -> String {
    let word = if n == N::from(1) { one } else { many };
    format!("{n} {word}")
}

/// Where an object lives, in words.
pub fn location(location: &Location) -> String {
    match location {
        Location::Inline => "inline".into(),
        Location::LongTerm(revision) => format!("long-term (revision {revision})"),
    }
}

/// An object's metadata as JSON.
pub fn meta_json(key: &str, meta: &Metadata, at: &Location) -> Value {
    let (tier, revision) = match at {
        Location::Inline => ("inline", None),
        Location::LongTerm(r) => ("long-term", Some(r.to_string())),
    };
    json!({
        "key": key,
        "size": meta.size,
        "tier": tier,
        "revision": revision,
        "content_type": meta.content_type(),
        "created": time(meta.created),
        "expires": meta.expires.map(time),
        "meta": meta.user().iter().map(|(k, v)| json!({ "name": k, "value": v })).collect::<Vec<_>>(),
    })
}

/// An object's metadata as aligned text lines (no newline after the last).
pub fn meta_text(key: &str, meta: &Metadata, at: &Location) -> String {
    let mut out = format!(
        "key:          {}\nsize:         {} bytes\ntier:         {}\ncontent type: {}\ncreated:      {}\nexpires:      {}",
        shown(key),
        meta.size,
        location(at),
        shown(meta.content_type().unwrap_or("-")),
        time(meta.created),
        meta.expires.map_or_else(|| "never".into(), time),
    );
    for (name, value) in meta.user() {
        out.push_str(&format!("\nmeta:         {}={}", shown(name), shown(value)));
    }
    out
}

/// Progress of a transfer whose length may be unknown (standard input): a bar from the start
/// when it is known and large, a spinner once an unknown one has turned out large.
pub struct Progress {
    what: &'static str,
    bar: Option<ProgressBar>,
    /// Whether a spinner may still start (unknown length, on a terminal, not `--json`).
    may_spin: bool,
    done: u64,
}

impl Progress {
    pub fn new(what: &'static str, total: Option<u64>, json: bool) -> Progress {
        Progress {
            what,
            bar: total.and_then(|_| progress(what, total, json)),
            may_spin: total.is_none() && !json && std::io::stderr().is_terminal(),
            done: 0,
        }
    }

    pub fn inc(&mut self, n: u64) {
        self.done += n;
        if self.may_spin && self.done >= PROGRESS_MIN {
            self.may_spin = false;
            self.bar = progress(self.what, None, false);
            if let Some(bar) = &self.bar {
                bar.set_position(self.done - n);
            }
        }
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Work counted in things rather than bytes (fsck's rows and blob files) that starts showing a
/// spinner with a count once it has turned out long: on a terminal, not with `--json`.
pub struct Tally {
    bar: Option<ProgressBar>,
    may_spin: bool,
}

/// Things counted before a [`Tally`] shows itself.
const TALLY_MIN: u64 = 10_000;

impl Tally {
    pub fn new(json: bool) -> Tally {
        Tally {
            bar: None,
            may_spin: !json && std::io::stderr().is_terminal(),
        }
    }

    /// `done` things so far, described by `message`.
    pub fn show(&mut self, done: u64, message: impl FnOnce() -> String) {
        if self.may_spin && done >= TALLY_MIN {
            self.may_spin = false;
            let bar = ProgressBar::new_spinner();
            bar.enable_steady_tick(std::time::Duration::from_millis(100));
            self.bar = Some(bar);
        }
        if let Some(bar) = &self.bar {
            bar.set_message(message());
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A progress bar for a transfer of `total` bytes (if known), or none when not on a terminal or
/// the transfer is small.
pub fn progress(what: &str, total: Option<u64>, json: bool) -> Option<ProgressBar> {
    if json || !std::io::stderr().is_terminal() || total.is_some_and(|t| t < PROGRESS_MIN) {
        return None;
    }
    let (bar, template) = match total {
        Some(total) => (
            ProgressBar::new(total),
            "{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ),
        // Standard input: no total, so no bar and no estimate.
        None => (
            ProgressBar::new_spinner(),
            "{msg} {spinner} {bytes} {bytes_per_sec}",
        ),
    };
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_string());
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::{count, shown, time};
    use cairn_core::Instant;

    #[test]
    fn control_characters_and_invisible_marks_are_shown_escaped_and_nothing_else_is() {
        assert_eq!(shown("photos/cat.jpg"), "photos/cat.jpg");
        assert_eq!(shown("héllo/日本"), "héllo/日本");
        assert_eq!(shown("a\u{1b}[31mred\nb"), "a\\u{1b}[31mred\\nb");
        // Marks that would reorder or hide the rest of a line.
        assert_eq!(shown("invoice\u{202e}fdp.exe"), "invoice\\u{202e}fdp.exe");
        assert_eq!(shown("a\u{200b}b\u{2066}"), "a\\u{200b}b\\u{2066}");
        assert_eq!(shown("line\u{2028}break"), "line\\u{2028}break");
        // Joiners that emoji and many scripts are made of are text, not tricks.
        assert_eq!(
            shown("👩\u{200d}💻 می\u{200c}خواهم"),
            "👩\u{200d}💻 می\u{200c}خواهم"
        );
    }

    #[test]
    fn times_past_what_rfc_3339_can_write_are_printed_as_milliseconds() {
        assert_eq!(time(Instant::from_millis(0)), "1970-01-01T00:00:00.000Z");
        let last = Instant::from_millis(u64::MAX);
        assert_eq!(
            time(last),
            format!("{} ms after 1970-01-01T00:00:00Z", last.as_millis())
        );
        // The year 10000 is the first RFC 3339 cannot write.
        let year_10000 = Instant::from_millis(253_402_300_800_000);
        assert_eq!(
            time(year_10000),
            "253402300800000 ms after 1970-01-01T00:00:00Z"
        );
        let just_before = Instant::from_millis(253_402_300_799_999);
        assert_eq!(time(just_before), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn counts_take_the_singular_only_for_one() {
        assert_eq!(count(0usize, "entry", "entries"), "0 entries");
        assert_eq!(count(1u64, "entry", "entries"), "1 entry");
        assert_eq!(count(2u32, "blob file", "blob files"), "2 blob files");
    }
}
