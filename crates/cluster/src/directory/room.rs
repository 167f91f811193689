//! Free room per worker, for choices made outside the placement core's
//! `plan`: a start on the host a workflow placement named
//! ([`Directory::choose_near`]), and the hosts a workflow placement works
//! over ([`Directory::workflow_hosts`]).

use stratus_agent::AgentClient;
use stratus_placement::workflow::{Host, Hosts, WorkflowError};
use stratus_placement::Resources;

use super::{Directory, State};

/// The name [`Directory::workflow_hosts`] gives the control plane's own
/// host, which runs no instances (no worker may be called this: worker
/// names are DNS-like labels).
pub const CONTROL_HOST: &str = "(control plane)";

impl State {
    /// `node`'s capacity less what the instances counted there reserve.
    fn free(&self, node: &str) -> Option<Resources> {
        self.free_but(node, &[])
    }

    /// [`State::free`], with what instances of the functions in `own`
    /// reserve counted as free.
    fn free_but(&self, node: &str, own: &[&str]) -> Option<Resources> {
        let e = self.nodes.get(node)?;
        let mut free = Resources::new(e.view.cores.saturating_mul(1000), e.view.memory_bytes);
        let others = self
            .placed
            .values()
            .filter(|p| p.node == node && !own.contains(&p.function.as_str()));
        for p in others {
            free.cores_milli = free.cores_milli.saturating_sub(p.size.cores_milli);
            free.memory_bytes = free.memory_bytes.saturating_sub(p.size.memory_bytes);
        }
        Some(free)
    }
}

impl Directory {
    /// `near`, when it is a worker not in `exclude` with room for one more
    /// instance of `size`: the start a workflow placement asked for.
    /// `None` otherwise, and the caller chooses as usual.
    pub fn choose_near(
        &self,
        near: &str,
        size: Resources,
        exclude: &[String],
    ) -> Option<(String, AgentClient)> {
        if exclude.iter().any(|x| x == near) {
            return None;
        }
        let st = self.state.lock();
        let free = st.free(near)?;
        let fits = free.cores_milli >= size.cores_milli && free.memory_bytes >= size.memory_bytes;
        fits.then(|| (near.to_string(), st.nodes[near].client.clone()))
    }

    /// The workers with their free room, by name, and last the control
    /// plane's host ([`CONTROL_HOST`], no room): what a workflow placement
    /// places over. The room instances of `own` (the workflow's functions)
    /// take counts as free: its steps run on those instances, so a
    /// workflow whose warm instances fill a host still fits there.
    pub fn workflow_hosts(&self, own: &[&str]) -> Result<Hosts, WorkflowError> {
        let st = self.state.lock();
        let mut hosts: Vec<Host> = st
            .nodes
            .keys()
            .map(|name| Host {
                name: name.clone(),
                free: st.free_but(name, own).unwrap_or(Resources::new(0, 0)),
            })
            .collect();
        let control = hosts.len();
        hosts.push(Host {
            name: CONTROL_HOST.to_string(),
            free: Resources::new(0, 0),
        });
        Hosts::new(hosts, control)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::tests::view;
    use crate::DEFAULT_SIZE;
    use stratus_placement::Policy;

    #[test]
    fn near_is_taken_while_it_has_room_and_hosts_show_what_is_left() {
        let d = Directory::new("t", Policy::Spread);
        // 1 core: ten default-sized instances.
        d.set_nodes(vec![view("a", 1), view("b", 4)]);
        assert_eq!(d.choose_near("x", DEFAULT_SIZE, &[]).map(|c| c.0), None);
        assert_eq!(
            d.choose_near("a", DEFAULT_SIZE, &["a".into()]).map(|c| c.0),
            None,
            "excluded"
        );
        for i in 0..10 {
            let (n, _) = d.choose_near("a", DEFAULT_SIZE, &[]).expect("room on a");
            d.reserve(&format!("i{i}"), &n, "f", DEFAULT_SIZE);
        }
        assert_eq!(
            d.choose_near("a", DEFAULT_SIZE, &[]).map(|c| c.0),
            None,
            "a is full"
        );
        let free = |own: &[&str]| {
            let h = d.workflow_hosts(own).unwrap();
            assert_eq!(h.control(), 2);
            h.hosts()
                .iter()
                .map(|h| (h.name.clone(), h.free.cores_milli))
                .collect::<Vec<_>>()
        };
        let named = |v: [(&str, u32); 3]| v.map(|(n, c)| (n.to_string(), c)).to_vec();
        assert_eq!(free(&[]), named([("a", 0), ("b", 4000), (CONTROL_HOST, 0)]));
        // Placing a workflow of f: its own instances' room is its own.
        assert_eq!(
            free(&["g", "f"]),
            named([("a", 1000), ("b", 4000), (CONTROL_HOST, 0)])
        );
        d.forget("i0");
        assert_eq!(
            d.choose_near("a", DEFAULT_SIZE, &[]).map(|c| c.0),
            Some("a".into())
        );
    }
}
