//! Workflow-placement policies, by name (per workflow or cluster-wide).

use std::fmt;
use std::str::FromStr;

/// How [`super::place`] puts a workflow's step instances on hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkflowPolicy {
    /// `locality`: few cross-host bytes within the hosts' room (greedy
    /// heaviest-edge merging, then single-move refinement; see
    /// `locality.rs`); data moves worker to worker.
    Locality,
    /// `centralised`: today's engine. Each instance goes where the most
    /// memory is free (the `spread` policy for a function's first
    /// instance), and every edge is relayed by the control plane's host.
    Centralised,
    /// `round-robin`: instance after instance on the next host with room;
    /// data moves worker to worker.
    RoundRobin,
    /// `random:SEED`: each instance on a host with room, uniformly, from a
    /// seeded generator; data moves worker to worker.
    Random {
        /// The generator's seed; the same seed gives the same placement.
        seed: u64,
    },
}

impl WorkflowPolicy {
    /// Whether the control plane relays every edge.
    pub fn relays(&self) -> bool {
        matches!(self, WorkflowPolicy::Centralised)
    }

    /// One of each, for comparisons (`random` with `seed`).
    pub fn all(seed: u64) -> [WorkflowPolicy; 4] {
        [
            WorkflowPolicy::Locality,
            WorkflowPolicy::Centralised,
            WorkflowPolicy::Random { seed },
            WorkflowPolicy::RoundRobin,
        ]
    }
}

/// A workflow-placement policy name that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown workflow placement policy {given:?}; expected locality, centralised, round-robin or random:SEED (SEED an unsigned 64-bit integer)")]
pub struct WorkflowPolicyError {
    /// What was given.
    pub given: String,
}

impl FromStr for WorkflowPolicy {
    type Err = WorkflowPolicyError;

    fn from_str(s: &str) -> Result<WorkflowPolicy, WorkflowPolicyError> {
        let err = || WorkflowPolicyError {
            given: s.to_string(),
        };
        Ok(match s {
            "locality" => WorkflowPolicy::Locality,
            "centralised" => WorkflowPolicy::Centralised,
            "round-robin" => WorkflowPolicy::RoundRobin,
            _ => {
                let seed = s.strip_prefix("random:").ok_or_else(err)?;
                if seed.starts_with('+') {
                    return Err(err());
                }
                WorkflowPolicy::Random {
                    seed: seed.parse().map_err(|_| err())?,
                }
            }
        })
    }
}

impl fmt::Display for WorkflowPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkflowPolicy::Locality => f.write_str("locality"),
            WorkflowPolicy::Centralised => f.write_str("centralised"),
            WorkflowPolicy::RoundRobin => f.write_str("round-robin"),
            WorkflowPolicy::Random { seed } => write!(f, "random:{seed}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in WorkflowPolicy::all(7) {
            assert_eq!(p.to_string().parse::<WorkflowPolicy>(), Ok(p));
        }
        assert_eq!(
            "random:18446744073709551615".parse::<WorkflowPolicy>(),
            Ok(WorkflowPolicy::Random { seed: u64::MAX })
        );
    }

    #[test]
    fn bad_names_say_what_is_expected() {
        for bad in [
            "",
            "Locality",
            "centralized",
            "roundrobin",
            "random",
            "random:",
            "random:-1",
            "random:+1",
            "random:1x",
            "random:18446744073709551616",
            "spread",
            " locality",
        ] {
            let err = bad.parse::<WorkflowPolicy>().unwrap_err();
            assert_eq!(err.given, bad);
            assert!(err.to_string().contains("expected locality"), "{err}");
        }
    }

    #[test]
    fn only_centralised_relays() {
        let relays: Vec<bool> = WorkflowPolicy::all(1).iter().map(|p| p.relays()).collect();
        assert_eq!(relays, [false, true, false, false]);
    }
}
