//! Placement policies, chosen per cluster, by name.

use std::fmt;
use std::str::FromStr;

/// How [`crate::plan`] chooses among nodes with room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `spread`: first the nodes running the fewest instances of the
    /// function, then the most free memory. Keeps a node's loss small and
    /// load even. Scale-down stops instances where the function has most.
    Spread,
    /// `bin-pack`: the node with the least free memory that fits (best
    /// fit), so whole nodes stay free for large instances or can be
    /// released. Scale-down stops instances on the least loaded node.
    BinPack,
    /// `cache-aware[:FALLBACK]`: first the nodes whose cache holds the
    /// function's snapshot, then its image, then any node; within each
    /// tier, and for scale-down, as `FALLBACK` (default `spread`) would.
    /// The cache comes first: a holder takes a second instance of a
    /// function before a node without the digest takes its first.
    CacheAware(Fallback),
    /// `random:SEED`: any node that fits, uniformly, from a seeded
    /// generator. A baseline to compare the others against.
    Random {
        /// The generator's seed; the same seed gives the same plan.
        seed: u64,
    },
}

/// The order [`Policy::CacheAware`] uses within a cache tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fallback {
    /// As [`Policy::Spread`].
    #[default]
    Spread,
    /// As [`Policy::BinPack`].
    BinPack,
}

/// A policy name that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown placement policy {given:?}; expected spread, bin-pack, cache-aware, cache-aware:spread, cache-aware:bin-pack or random:SEED (SEED an unsigned 64-bit integer)")]
pub struct PolicyError {
    /// What was given.
    pub given: String,
}

impl FromStr for Policy {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Policy, PolicyError> {
        let err = || PolicyError {
            given: s.to_string(),
        };
        Ok(match s {
            "spread" => Policy::Spread,
            "bin-pack" => Policy::BinPack,
            "cache-aware" | "cache-aware:spread" => Policy::CacheAware(Fallback::Spread),
            "cache-aware:bin-pack" => Policy::CacheAware(Fallback::BinPack),
            _ => {
                let seed = s.strip_prefix("random:").ok_or_else(err)?;
                Policy::Random {
                    seed: seed.parse().map_err(|_| err())?,
                }
            }
        })
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Spread => f.write_str("spread"),
            Policy::BinPack => f.write_str("bin-pack"),
            Policy::CacheAware(Fallback::Spread) => f.write_str("cache-aware"),
            Policy::CacheAware(Fallback::BinPack) => f.write_str("cache-aware:bin-pack"),
            Policy::Random { seed } => write!(f, "random:{seed}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (name, policy) in [
            ("spread", Policy::Spread),
            ("bin-pack", Policy::BinPack),
            ("cache-aware", Policy::CacheAware(Fallback::Spread)),
            (
                "cache-aware:bin-pack",
                Policy::CacheAware(Fallback::BinPack),
            ),
            ("random:42", Policy::Random { seed: 42 }),
            (
                "random:18446744073709551615",
                Policy::Random { seed: u64::MAX },
            ),
        ] {
            assert_eq!(name.parse::<Policy>(), Ok(policy));
            assert_eq!(policy.to_string(), name);
        }
        assert_eq!(
            "cache-aware:spread".parse::<Policy>(),
            Ok(Policy::CacheAware(Fallback::Spread))
        );
    }

    #[test]
    fn bad_names_say_what_is_expected() {
        for bad in [
            "",
            "Spread",
            "binpack",
            "random",
            "random:",
            "random:-1",
            "random:x",
            "cache-aware:",
            "cache-aware:random:1",
            "cache-aware:cache-aware",
        ] {
            let err = bad.parse::<Policy>().unwrap_err();
            assert_eq!(err.given, bad);
            assert!(
                err.to_string().contains("expected spread, bin-pack"),
                "{err}"
            );
        }
    }
}
