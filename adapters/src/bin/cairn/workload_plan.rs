//! What put number `i` of the crash workload writes: key, size and bytes derive from `(seed, i)`
//! alone. Shared, as one file, by the `__workload` command and the crash test that checks it.

use bytes::Bytes;
use cairn_core::Rng;

/// Keys the workload rewrites, few so that overwrites (and tombstone swaps) are frequent.
pub const KEYS: u64 = 6;

/// One put of the workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Put {
    /// The key written.
    pub key: String,
    /// The number of bytes.
    pub size: u64,
    seed: u64,
    i: u64,
}

impl Put {
    /// Put number `i` of the workload seeded with `seed`: a third of them large (above the
    /// default 1 MiB threshold), the rest small.
    pub fn new(seed: u64, i: u64) -> Put {
        let mut rng = Rng::new(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let key = format!("crash/{}", rng.below(KEYS));
        let size = if rng.below(3) == 0 {
            (1 << 20) + 1 + rng.below(2 << 20)
        } else {
            1 + rng.below(4096)
        };
        Put { key, size, seed, i }
    }

    /// The bytes it writes: unlike those of every other put of the run (its first block, and
    /// each block's opening tag, come from `(seed, i)`), and every block numbered in its tag, so
    /// a block misplaced or repeated shows.
    /// Cheap to make, so a kill meant for the store seldom lands here instead.
    pub fn bytes(&self) -> Bytes {
        const BLOCK: usize = 4096;
        let mut rng =
            Rng::new((self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ self.i).wrapping_add(0x5eed));
        let tag = rng.next_u64();
        let first: Vec<u8> = (0..BLOCK / 8)
            .flat_map(|_| rng.next_u64().to_le_bytes())
            .collect();
        let mut out = Vec::with_capacity(self.size as usize + BLOCK);
        for block in 0u64.. {
            if out.len() as u64 >= self.size {
                break;
            }
            let start = out.len();
            out.extend_from_slice(&first);
            out[start..start + 8].copy_from_slice(&(tag ^ block).to_le_bytes());
        }
        out.truncate(self.size as usize);
        Bytes::from(out)
    }
}
