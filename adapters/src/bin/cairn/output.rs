//! How results are shown: text for people, JSON for scripts, a progress bar on terminals.

use cairn_adapters::{Location, Metadata};
use cairn_core::Instant;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::io::IsTerminal;

/// Transfers at least this large get a progress bar (when standard error is a terminal).
const PROGRESS_MIN: u64 = 8 << 20;

/// An instant as RFC 3339 UTC with milliseconds.
pub fn time(at: Instant) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at.as_millis());
    humantime::format_rfc3339_millis(t).to_string()
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

/// An object's metadata as aligned text lines.
pub fn meta_text(key: &str, meta: &Metadata, at: &Location) -> String {
    let mut out = format!(
        "key:          {key}\nsize:         {} bytes\ntier:         {}\ncontent type: {}\ncreated:      {}\nexpires:      {}\n",
        meta.size,
        location(at),
        meta.content_type().unwrap_or("-"),
        time(meta.created),
        meta.expires.map_or_else(|| "never".into(), time),
    );
    for (name, value) in meta.user() {
        out.push_str(&format!("meta:         {name}={value}\n"));
    }
    out
}

/// A progress bar for a transfer of `total` bytes (if known), or none when not on a terminal or
/// the transfer is small.
pub fn progress(what: &str, total: Option<u64>, json: bool) -> Option<ProgressBar> {
    if json || !std::io::stderr().is_terminal() || total.is_some_and(|t| t < PROGRESS_MIN) {
        return None;
    }
    let bar = match total {
        Some(total) => ProgressBar::new(total),
        None => ProgressBar::new_spinner(),
    };
    let template = "{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_string());
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_take_the_singular_only_for_one() {
        assert_eq!(count(0usize, "entry", "entries"), "0 entries");
        assert_eq!(count(1u64, "entry", "entries"), "1 entry");
        assert_eq!(count(2u32, "blob file", "blob files"), "2 blob files");
    }
}
