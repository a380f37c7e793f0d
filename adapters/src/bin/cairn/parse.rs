//! Parsers for command-line values. Each returns a message that says what was expected.

use cairn_core::ByteRange;

/// `90s`, `15min`, `2h`, `7d`, `1h30m`, … (humantime syntax: `m` is minutes, `M` months),
/// whole milliseconds.
pub fn duration(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (expected e.g. 90s, 15m, 2h, 7d)"))?;
    if d.subsec_nanos() % 1_000_000 != 0 {
        // Cut to whole milliseconds it would silently be shorter (`1999us` would be 1 ms).
        return Err(format!(
            "`{s}` is not a whole number of milliseconds, the finest a time to live can be"
        ));
    }
    // Whole milliseconds, as the store keeps them; then the store's own bounds.
    let millis = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    cairn_adapters::PutOptions::default()
        .ttl(cairn_core::Duration::from_millis(millis))
        .validate()
        .map_err(|e| e.to_string())?;
    Ok(d)
}

/// `START-END` (inclusive), `START-` (to the end) or `-N` (the last N bytes).
pub fn range(s: &str) -> Result<ByteRange, String> {
    let bad = || format!("`{s}` is not a range (expected START-END, START- or -N)");
    let (start, end) = s.split_once('-').ok_or_else(bad)?;
    // Digits only: `u64::from_str` would take a leading `+`. A number past any object's size
    // means as much as the largest: an end is trimmed to the object (as HTTP trims it), a start
    // past it selects nothing, a suffix that long takes the whole object.
    let number = |t: &str| match !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        true => Ok(t.parse::<u64>().unwrap_or(u64::MAX)),
        false => Err(bad()),
    };
    match (start, end) {
        ("", "") => Err(bad()),
        ("", n) => Ok(ByteRange::Suffix(number(n)?)),
        (start, "") => Ok(ByteRange::From(number(start)?)),
        (start, end) => {
            let (start, end) = (number(start)?, number(end)?);
            if end < start {
                return Err(format!("range end {end} is before its start {start}"));
            }
            Ok(ByteRange::Inclusive { start, end })
        }
    }
}

/// `NAME=VALUE`.
pub fn pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("`{s}` is not NAME=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_http_byte_ranges() {
        assert_eq!(range("0-9"), Ok(ByteRange::Inclusive { start: 0, end: 9 }));
        assert_eq!(range("100-"), Ok(ByteRange::From(100)));
        assert_eq!(range("-5"), Ok(ByteRange::Suffix(5)));
        let huge = "99999999999999999999";
        assert_eq!(
            range(&format!("0-{huge}")),
            Ok(ByteRange::Inclusive {
                start: 0,
                end: u64::MAX
            })
        );
        assert_eq!(range(&format!("{huge}-")), Ok(ByteRange::From(u64::MAX)));
        assert_eq!(range(&format!("-{huge}")), Ok(ByteRange::Suffix(u64::MAX)));
        for bad in [
            "", "-", "a-b", "5", "9-3", "1-2-3", " 1-2", "+1-2", "1-+2", "-+3",
        ] {
            assert!(range(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn durations_need_a_unit_and_must_be_positive() {
        assert_eq!(duration("90s"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(duration("1h30m"), Ok(std::time::Duration::from_secs(5400)));
        assert!(duration("10").is_err());
        assert!(duration("0s").is_err());
        assert!(duration("999us").is_err(), "less than the store's 1 ms");
        assert_eq!(duration("1ms"), Ok(std::time::Duration::from_millis(1)));
        assert!(duration("1000years").is_ok());
        assert!(duration("1001years").is_err());
        assert!(duration("18446744073709551615s").is_err());
        assert!(duration("soon").is_err());
    }

    #[test]
    fn pairs_need_a_name() {
        assert_eq!(pair("owner=ada"), Ok(("owner".into(), "ada".into())));
        assert_eq!(pair("empty="), Ok(("empty".into(), String::new())));
        assert!(pair("=x").is_err());
        assert!(pair("novalue").is_err());
    }
}
