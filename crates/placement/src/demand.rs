//! What each function needs: how many instances, how large, which cached
//! digests help it start, and where its instances run now.

use std::collections::HashSet;

use crate::resources::Resources;

/// Most instances one function may want or run.
pub const MAX_INSTANCES: u32 = 1_000_000;

/// One function's demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    /// Unique among the demands.
    pub function: String,
    /// How many instances it should have (the activator's desired scale).
    pub want: u32,
    /// What one instance needs.
    pub size: Resources,
    /// Digest of its container image, if a node's cache can hold it.
    pub image: Option<String>,
    /// Digest of its memory snapshot, if a node's cache can hold it
    /// (restoring one is faster than starting from the image).
    pub snapshot: Option<String>,
    /// Where its instances run now: node name and instance count. A
    /// function that should have no instances any more (deleted) stays in
    /// the demands with `want` 0 until they are stopped.
    pub current: Vec<(String, u32)>,
}

impl Demand {
    /// `want` instances of `size`, none running, no cached digests.
    pub fn new(function: impl Into<String>, want: u32, size: Resources) -> Demand {
        Demand {
            function: function.into(),
            want,
            size,
            image: None,
            snapshot: None,
            current: Vec::new(),
        }
    }
}

/// Why a list of demands is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DemandError {
    /// A demand without a function name.
    #[error("demand #{index} has an empty function name")]
    EmptyName {
        /// Its position in the list given.
        index: usize,
    },
    /// Two demands for one function.
    #[error("function {function:?} has two demands; give one per function")]
    DuplicateFunction {
        /// The function.
        function: String,
    },
    /// An instance needing no CPU or no memory.
    #[error(
        "function {function:?}: an instance needs {size}; both cores and memory must be above zero"
    )]
    ZeroSize {
        /// The function.
        function: String,
        /// The size given.
        size: Resources,
    },
    /// An instance larger than any node may be.
    #[error("function {function:?}: an instance needs {size}, more than any node may declare")]
    SizeTooLarge {
        /// The function.
        function: String,
        /// The size given.
        size: Resources,
    },
    /// More instances than [`MAX_INSTANCES`], wanted or running.
    #[error("function {function:?}: {count} instances {what}; at most {MAX_INSTANCES}")]
    TooManyInstances {
        /// The function.
        function: String,
        /// How many.
        count: u64,
        /// "wanted" or "running".
        what: &'static str,
    },
    /// One node listed twice in a function's current instances.
    #[error("function {function:?} lists node {node:?} twice in its current instances")]
    DuplicateCurrent {
        /// The function.
        function: String,
        /// The node.
        node: String,
    },
}

/// Validated demands, sorted by function name.
#[derive(Debug, Clone, Default)]
pub struct Demands {
    demands: Vec<Demand>,
}

impl Demands {
    /// Checks the demands: non-empty unique function names, instance sizes
    /// above zero and within a node's limits, at most [`MAX_INSTANCES`]
    /// wanted and running per function, each node at most once in
    /// `current`. Errors name the function. Whether the nodes in `current`
    /// exist is checked against the cluster by [`crate::plan`].
    pub fn new(mut demands: Vec<Demand>) -> Result<Demands, DemandError> {
        for (index, d) in demands.iter().enumerate() {
            check_demand(index, d)?;
        }
        demands.sort_by(|a, b| a.function.cmp(&b.function));
        if let Some(pair) = demands.windows(2).find(|w| w[0].function == w[1].function) {
            return Err(DemandError::DuplicateFunction {
                function: pair[0].function.clone(),
            });
        }
        Ok(Demands { demands })
    }

    /// The demands, sorted by function name.
    pub fn demands(&self) -> &[Demand] {
        &self.demands
    }
}

fn check_demand(index: usize, d: &Demand) -> Result<(), DemandError> {
    let function = || d.function.clone();
    if d.function.is_empty() {
        return Err(DemandError::EmptyName { index });
    }
    if d.size.any_zero() {
        return Err(DemandError::ZeroSize {
            function: function(),
            size: d.size,
        });
    }
    if d.size.beyond_node_limits() {
        return Err(DemandError::SizeTooLarge {
            function: function(),
            size: d.size,
        });
    }
    if d.want > MAX_INSTANCES {
        return Err(DemandError::TooManyInstances {
            function: function(),
            count: u64::from(d.want),
            what: "wanted",
        });
    }
    let running: u64 = d.current.iter().map(|(_, n)| u64::from(*n)).sum();
    if running > u64::from(MAX_INSTANCES) {
        return Err(DemandError::TooManyInstances {
            function: function(),
            count: running,
            what: "running",
        });
    }
    let mut seen = HashSet::with_capacity(d.current.len());
    for (node, _) in &d.current {
        if !seen.insert(node.as_str()) {
            return Err(DemandError::DuplicateCurrent {
                function: function(),
                node: node.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand(f: &str) -> Demand {
        Demand::new(f, 2, Resources::new(500, 1 << 28))
    }

    #[test]
    fn sorts_by_function() {
        let d = Demands::new(vec![demand("b"), demand("a")]).unwrap();
        let names: Vec<_> = d.demands().iter().map(|d| d.function.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn refuses_bad_demands_naming_them() {
        let check = |demands: Vec<Demand>, want: &str| {
            let err = Demands::new(demands).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        };
        check(
            vec![demand("f"), demand("f")],
            "function \"f\" has two demands",
        );
        check(vec![demand("")], "demand #0 has an empty function name");
        let mut zero = demand("z");
        zero.size.cores_milli = 0;
        check(vec![zero], "function \"z\": an instance needs 0m cores");
        let mut huge = demand("h");
        huge.size.memory_bytes = crate::MAX_NODE_MEMORY_BYTES + 1;
        check(vec![huge], "more than any node may declare");
        let mut many = demand("w");
        many.want = MAX_INSTANCES + 1;
        check(vec![many], "function \"w\": 1000001 instances wanted");
        let mut running = demand("r");
        running.current = vec![("a".into(), u32::MAX), ("b".into(), u32::MAX)];
        check(vec![running], "8589934590 instances running");
        let mut twice = demand("t");
        twice.current = vec![("n1".into(), 1), ("n1".into(), 2)];
        check(vec![twice], "lists node \"n1\" twice");
    }
}
