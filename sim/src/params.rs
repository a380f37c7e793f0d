//! What a run is asked to do ([`Options`], from the command line) and what its seed draws on top
//! ([`Params`]: fault rates, the compare-and-write mode, the machines' settings). Drawing fault
//! rates per seed is *swarm testing*: each seed switches some fault kinds off and turns others
//! up, so that rare combinations get runs of their own instead of being drowned in noise.

use crate::bugs::Bug;
use crate::keys::MAX_KEYS;
use crate::tape::{Label, Tape};
use crate::world::CasMode;
use cairn_core::{Config, Duration};
use std::fmt;
use std::str::FromStr;

/// Default number of concurrent clients.
pub const DEFAULT_CLIENTS: usize = 8;
/// Default number of operations per seed, over all clients.
pub const DEFAULT_OPS: usize = 200;
/// Fewest and most hot keys a seed draws when `--keys` is not given: few enough that clients
/// collide constantly, enough that some keys see quiet stretches.
pub const DRAWN_KEYS: (usize, usize) = (4, 20);
/// Most clients a run may have (a bound on the task table, and on concurrency per key, which
/// the linearizability search is exponential in).
pub const MAX_CLIENTS: usize = 64;

/// Most operations a seed may run. A seed is meant to be short (200 by default; run more
/// seeds, not longer ones): on one hot key a seed of 100,000 operations takes about 3 s, and
/// the linearizability search, which grows faster than the history, takes minutes at a
/// million. Bounding it also keeps every count derived from it far from overflowing.
pub const MAX_OPS: usize = 100_000;

/// How aggressive the per-seed fault rates are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Swarm testing: each fault kind on or off per seed, at a drawn rate.
    #[default]
    Swarm,
    /// No faults and no crashes: concurrency and expiry only.
    Calm,
    /// Every fault kind on, at high rates.
    Chaos,
}

impl Profile {
    /// Every profile, for help texts.
    pub const ALL: [Profile; 3] = [Profile::Swarm, Profile::Calm, Profile::Chaos];

    /// The profile's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Swarm => "swarm",
            Profile::Calm => "calm",
            Profile::Chaos => "chaos",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Profile, String> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s || (s == "default" && *p == Profile::Swarm))
            .ok_or_else(|| {
                let names: Vec<_> = Profile::ALL.iter().map(|p| p.name()).collect();
                format!("unknown profile {s:?}; one of {}", names.join(", "))
            })
    }
}

/// What a run is asked to do. Everything else is drawn from the seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Concurrent clients.
    pub clients: usize,
    /// Hot keys; `None` draws 4 to 20 per seed.
    pub keys: Option<usize>,
    /// Operations per seed, over all clients.
    pub ops: usize,
    /// Fault-rate profile.
    pub profile: Profile,
    /// A planted bug to run with (mutation testing).
    pub bug: Option<Bug>,
    /// Make 1 % of seeds fail on purpose, to prove that failures are reported.
    pub canary: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            clients: DEFAULT_CLIENTS,
            keys: None,
            ops: DEFAULT_OPS,
            profile: Profile::Swarm,
            bug: None,
            canary: false,
        }
    }
}

impl Options {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), String> {
        if self.clients == 0 || self.clients > MAX_CLIENTS {
            return Err(format!("--clients must be 1..={MAX_CLIENTS}"));
        }
        if self.ops == 0 || self.ops > MAX_OPS {
            return Err(format!("--ops must be 1..={MAX_OPS}"));
        }
        if let Some(keys) = self.keys {
            if keys == 0 || keys > MAX_KEYS {
                return Err(format!("--keys must be 1..={MAX_KEYS}"));
            }
        }
        Ok(())
    }

    /// The command-line flags that reproduce these options (after the seed).
    pub fn flags(&self) -> String {
        let mut flags = format!("--clients {} --ops {}", self.clients, self.ops);
        if let Some(keys) = self.keys {
            flags += &format!(" --keys {keys}");
        }
        if self.profile != Profile::Swarm {
            flags += &format!(" --profile {}", self.profile);
        }
        if let Some(bug) = self.bug {
            flags += &format!(" --bug {}", bug.name());
        }
        if self.canary {
            flags += " --canary";
        }
        flags
    }
}

/// Per-request fault probabilities, in parts per million.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultRates {
    /// Any request fails without taking effect.
    pub fail_before: u32,
    /// Any request other than a compare-and-write takes effect, then reports failure.
    pub fail_after: u32,
    /// A compare-and-write takes effect and its answer is lost (an error or a timeout).
    pub cas_lost: u32,
    /// A compare-and-write is delivered twice in a row by the transport (it must be idempotent).
    pub cas_duplicated: u32,
    /// A blob write leaves a partial blob and fails.
    pub partial_blob: u32,
    /// A blob delete fails.
    pub delete_fails: u32,
    /// Another writer commits on the same key right before a compare-and-write lands.
    pub rival: u32,
    /// Another writer overwrites the key (a large put and its cleanup) right before a get's blob
    /// read lands, so the blob vanishes under the get. High rates make a get lose several blobs
    /// in a row, up to its redirect limit.
    pub rival_read: u32,
    /// A request or answer is held up for a long time (a latency spike).
    pub spike: u32,
    /// Per step: a client crashes.
    pub crash: u32,
}

/// Everything a seed draws before its first operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Hot keys in use.
    pub keys: usize,
    /// How the high-volume tier treats an idempotent compare-and-write match.
    pub cas_mode: CasMode,
    /// The machines' settings.
    pub config: Config,
    /// Relative weights of get, head, small put, large put, delete.
    pub weights: [u32; 5],
    /// Chance (per million) that a put expires.
    pub ttl_chance: u32,
    /// Longest time-to-live drawn, in milliseconds.
    pub ttl_max: u64,
    /// Longest ordinary latency of a request or answer, in milliseconds.
    pub latency_max: u64,
    /// Longest pause between a client's operations, in milliseconds.
    pub think_max: u64,
    /// Fault rates.
    pub faults: FaultRates,
}

/// Largest inline payload in the simulator. The protocol does not care about sizes beyond the
/// threshold; a small number keeps traces short.
pub const INLINE_THRESHOLD: u64 = 100;

impl Params {
    /// Draws a seed's parameters. Zero draws give the calmest run: few keys, reapply mode, no
    /// faults, gets only.
    pub fn draw(tape: &mut Tape, options: &Options) -> Params {
        let p = Label::Param;
        let keys = match options.keys {
            Some(keys) => keys,
            None => tape.between(p, DRAWN_KEYS.0 as u64, DRAWN_KEYS.1 as u64) as usize,
        };
        let cas_mode = if tape.below(p, 2) == 0 {
            CasMode::Reapply
        } else {
            CasMode::Skip
        };
        let backoff_initial = tape.between(p, 1, 50);
        let config = Config {
            inline_threshold: INLINE_THRESHOLD,
            io_attempts: tape.between(p, 1, 4) as u8,
            cleanup_attempts: tape.between(p, 1, 6) as u8,
            backoff_initial: Duration::from_millis(backoff_initial),
            backoff_max: Duration::from_millis(backoff_initial * tape.between(p, 1, 40)),
            bug: options.bug.and_then(Bug::core),
        };
        debug_assert_eq!(config.validate(), Ok(()));
        let weights = [
            tape.between(p, 1, 10) as u32, // get
            tape.between(p, 0, 4) as u32,  // head
            tape.between(p, 0, 10) as u32, // small put
            tape.between(p, 0, 10) as u32, // large put
            tape.between(p, 0, 6) as u32,  // delete
        ];
        let ttl_chance = if tape.below(p, 3) == 2 {
            tape.between(p, 50_000, 500_000) as u32
        } else {
            0
        };
        let ttl_max = tape.between(p, 5, 400);
        let latency_max = tape.between(p, 1, 20);
        let think_max = tape.between(p, 0, 20);
        let faults = FaultRates::draw(tape, options.profile);
        Params {
            keys,
            cas_mode,
            config,
            weights,
            ttl_chance,
            ttl_max,
            latency_max,
            think_max,
            faults,
        }
    }
}

impl FaultRates {
    fn draw(tape: &mut Tape, profile: Profile) -> FaultRates {
        let p = Label::Param;
        // Each kind: on with probability `on` (per 4), then a rate in lo..=hi parts per million.
        let mut rate = |on: u64, lo: u64, hi: u64| -> u32 {
            let enabled = tape.below(p, 4) >= 4 - on;
            let value = tape.between(p, lo, hi) as u32;
            if enabled {
                value
            } else {
                0
            }
        };
        let on = match profile {
            Profile::Swarm => 2,
            Profile::Calm => 0,
            Profile::Chaos => 4,
        };
        FaultRates {
            fail_before: rate(on, 5_000, 60_000),
            fail_after: rate(on, 5_000, 60_000),
            cas_lost: rate(on, 20_000, 200_000),
            cas_duplicated: rate(on, 20_000, 200_000),
            partial_blob: rate(on, 20_000, 200_000),
            delete_fails: rate(on, 20_000, 300_000),
            rival: rate(on, 20_000, 200_000),
            rival_read: rate(on, 100_000, 900_000),
            spike: rate(on, 5_000, 50_000),
            crash: rate(on, 200, 3_000),
        }
    }
}

fn percent(per_million: u32) -> String {
    let p = f64::from(per_million) / 10_000.0;
    if p == 0.0 {
        "0".into()
    } else {
        format!("{p:.1}%")
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let [get, head, small, large, delete] = self.weights;
        write!(
            f,
            "keys={} cas={:?} io_attempts={} cleanup_attempts={} backoff={}..{}ms \
             mix(get:head:small:large:delete)={get}:{head}:{small}:{large}:{delete} \
             ttl={}(≤{}ms) latency≤{}ms think≤{}ms",
            self.keys,
            self.cas_mode,
            c.io_attempts,
            c.cleanup_attempts,
            c.backoff_initial.as_millis(),
            c.backoff_max.as_millis(),
            percent(self.ttl_chance),
            self.ttl_max,
            self.latency_max,
            self.think_max,
        )?;
        let r = &self.faults;
        write!(
            f,
            "\n  faults: fail_before={} fail_after={} cas_lost={} cas_duplicated={} \
             partial_blob={} delete_fails={} rival={} rival_read={} spike={} crash/step={}",
            percent(r.fail_before),
            percent(r.fail_after),
            percent(r.cas_lost),
            percent(r.cas_duplicated),
            percent(r.partial_blob),
            percent(r.delete_fails),
            percent(r.rival),
            percent(r.rival_read),
            percent(r.spike),
            percent(r.crash),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawn_params_are_valid_machine_settings() {
        for seed in 0..500 {
            let params = Params::draw(&mut Tape::live(seed), &Options::default());
            assert_eq!(params.config.validate(), Ok(()), "seed {seed}");
            assert!((DRAWN_KEYS.0..=DRAWN_KEYS.1).contains(&params.keys));
            assert!(params.weights.iter().any(|&w| w > 0));
        }
    }

    #[test]
    fn the_calm_profile_draws_no_faults() {
        let options = Options {
            profile: Profile::Calm,
            ..Options::default()
        };
        for seed in 0..100 {
            let params = Params::draw(&mut Tape::live(seed), &options);
            assert_eq!(params.faults, FaultRates::default());
        }
    }

    #[test]
    fn a_zero_tape_draws_the_calmest_run() {
        let params = Params::draw(&mut Tape::replay(vec![]), &Options::default());
        assert_eq!(params.faults, FaultRates::default());
        assert_eq!(params.ttl_chance, 0);
        assert_eq!(params.keys, DRAWN_KEYS.0);
    }

    #[test]
    fn profiles_parse_by_name() {
        for profile in Profile::ALL {
            assert_eq!(profile.name().parse(), Ok(profile));
        }
        assert_eq!("default".parse(), Ok(Profile::Swarm));
        assert!("nope".parse::<Profile>().is_err());
    }
}
