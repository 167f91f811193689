//! The baselines: `centralised` (most free memory first, as `spread` puts
//! a function's first instance), `round-robin` and `random:SEED`. Each
//! places instance after instance, steps in index order; O(instances ×
//! hosts) at worst.

use super::{Hosts, State, Workflow};
use crate::rng::SplitMix64;

/// Each instance on the host with the most free memory (then the most
/// free cores, then the lowest index) that has room.
pub(crate) fn most_free(workflow: &Workflow, hosts: &Hosts) -> State {
    let mut st = State::new(workflow, hosts);
    for (s, step) in workflow.steps().iter().enumerate() {
        for placed in 0..step.instances {
            let best = (0..st.free.len())
                .filter(|&h| st.free[h].fits(step.need))
                .max_by_key(|&h| {
                    (
                        st.free[h].memory_bytes,
                        st.free[h].cores_milli,
                        std::cmp::Reverse(h),
                    )
                });
            match best {
                Some(h) => st.add(s, step.need, h, 1),
                None => {
                    st.no_room(s, step.need, step.instances - placed);
                    break;
                }
            }
        }
    }
    st
}

/// Instance after instance on the next host (cyclically, from host 0)
/// with room.
pub(crate) fn round_robin(workflow: &Workflow, hosts: &Hosts) -> State {
    let mut st = State::new(workflow, hosts);
    let n = st.free.len();
    let mut next = 0;
    for (s, step) in workflow.steps().iter().enumerate() {
        for placed in 0..step.instances {
            match (0..n)
                .map(|k| (next + k) % n)
                .find(|&h| st.free[h].fits(step.need))
            {
                Some(h) => {
                    st.add(s, step.need, h, 1);
                    next = (h + 1) % n;
                }
                None => {
                    st.no_room(s, step.need, step.instances - placed);
                    break;
                }
            }
        }
    }
    st
}

/// Each instance on a uniformly drawn host with room: up to 32 draws, then
/// the first host with room after a drawn one (near-uniform when few hosts
/// have room).
pub(crate) fn random(workflow: &Workflow, hosts: &Hosts, seed: u64) -> State {
    let mut st = State::new(workflow, hosts);
    let mut rng = SplitMix64::new(seed);
    let n = st.free.len();
    for (s, step) in workflow.steps().iter().enumerate() {
        for placed in 0..step.instances {
            let drawn = (0..32)
                .map(|_| rng.below(n))
                .find(|&h| st.free[h].fits(step.need));
            let h = drawn.or_else(|| {
                let start = rng.below(n);
                (0..n)
                    .map(|k| (start + k) % n)
                    .find(|&h| st.free[h].fits(step.need))
            });
            match h {
                Some(h) => st.add(s, step.need, h, 1),
                None => {
                    st.no_room(s, step.need, step.instances - placed);
                    break;
                }
            }
        }
    }
    st
}
