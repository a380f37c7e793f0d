//! The simulator's hot keys: `k0`, `k1`, … as `&'static Key`, so that machines borrowing their
//! key can live in the simulator's task table, and every key maps back to a small index.

use cairn_core::Key;
use std::sync::OnceLock;

/// Most keys a run may use. A handful of hot keys is the point of the simulator (races need
/// collisions); this bound only keeps the static table small.
pub const MAX_KEYS: usize = 256;

fn table() -> &'static [&'static Key] {
    static TABLE: OnceLock<Vec<&'static Key>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..MAX_KEYS)
            .map(|i| {
                let name: &'static str = Box::leak(format!("k{i}").into_boxed_str());
                Key::new(name.as_bytes()).expect("k<digits> is a valid key")
            })
            .collect()
    })
}

/// Key number `i` (`i < MAX_KEYS`).
pub fn key(i: usize) -> &'static Key {
    table()[i]
}

/// The index of a simulator key.
///
/// # Panics
/// If `key` is not one of the simulator's keys: every key in a run comes from [`key`].
pub fn index(key: &Key) -> usize {
    let bytes = key.as_bytes();
    let digits = bytes
        .strip_prefix(b"k")
        .unwrap_or_else(|| panic!("not a sim key: {key}"));
    let mut i = 0usize;
    for &d in digits {
        assert!(d.is_ascii_digit(), "not a sim key: {key}");
        i = i * 10 + usize::from(d - b'0');
    }
    assert!(i < MAX_KEYS, "not a sim key: {key}");
    i
}

/// The static twin of a simulator key borrowed from anywhere (a machine, a log entry).
pub fn to_static(key: &Key) -> &'static Key {
    self::key(index(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_maps_back_to_its_index() {
        for i in [0, 1, 9, 10, 99, MAX_KEYS - 1] {
            assert_eq!(index(key(i)), i);
            assert_eq!(key(i).as_bytes(), format!("k{i}").as_bytes());
        }
    }

    #[test]
    #[should_panic(expected = "not a sim key")]
    fn a_foreign_key_is_rejected() {
        index(Key::new(b"photos/cat").unwrap());
    }
}
