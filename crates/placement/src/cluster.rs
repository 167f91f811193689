//! The nodes placement chooses among, validated once.

use std::collections::{BTreeSet, HashMap};

use crate::resources::{Resources, MAX_NODE_CORES_MILLI, MAX_NODE_MEMORY_BYTES};
use crate::Micros;

/// Most nodes one cluster may have.
pub const MAX_NODES: usize = 1 << 20;

/// One node as its last heartbeat described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Unique within the cluster; ties between equally good nodes go to the
    /// name that sorts first.
    pub name: String,
    /// Everything the node has.
    pub capacity: Resources,
    /// Room placement must leave alone: the node's own daemons, work that
    /// placement does not manage. The instances it placed are not here;
    /// they are in [`crate::Demand::current`].
    pub reserved: Resources,
    /// Digests of the container images in the node's cache.
    pub images: BTreeSet<String>,
    /// Digests of the memory snapshots in the node's cache.
    pub snapshots: BTreeSet<String>,
    /// When the node last reported (µs since the driver's epoch).
    pub last_heartbeat: Micros,
    /// Being emptied: no new instances; its instances move elsewhere while
    /// there is room.
    pub draining: bool,
}

impl Node {
    /// A node with nothing reserved, empty caches, not draining, heard
    /// from at time 0.
    pub fn new(name: impl Into<String>, capacity: Resources) -> Node {
        Node {
            name: name.into(),
            capacity,
            reserved: Resources::default(),
            images: BTreeSet::new(),
            snapshots: BTreeSet::new(),
            last_heartbeat: 0,
            draining: false,
        }
    }
}

/// Why a list of nodes is not a cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// More nodes than [`MAX_NODES`].
    #[error("{count} nodes; a cluster may have at most {MAX_NODES}")]
    TooManyNodes {
        /// How many were given.
        count: usize,
    },
    /// A node without a name.
    #[error("node #{index} has an empty name")]
    EmptyName {
        /// Its position in the list given.
        index: usize,
    },
    /// Two nodes with one name.
    #[error("node {node:?} appears twice; node names must be unique")]
    DuplicateNode {
        /// The name.
        node: String,
    },
    /// A node without CPU or without memory.
    #[error(
        "node {node:?} declares no capacity ({capacity}); both cores and memory must be above zero"
    )]
    ZeroCapacity {
        /// The node.
        node: String,
        /// What it declared.
        capacity: Resources,
    },
    /// A node declaring more than any machine has.
    #[error(
        "node {node:?} declares {capacity}; a node may declare at most {} cores and {} TiB",
        MAX_NODE_CORES_MILLI / 1000,
        MAX_NODE_MEMORY_BYTES >> 40
    )]
    CapacityTooLarge {
        /// The node.
        node: String,
        /// What it declared.
        capacity: Resources,
    },
    /// A node the cluster does not have.
    #[error("node {node:?} is not in the cluster")]
    UnknownNode {
        /// The name given.
        node: String,
    },
    /// A node reserving more than it has.
    #[error("node {node:?} reserves {reserved}, more than its capacity ({capacity})")]
    ReservedBeyondCapacity {
        /// The node.
        node: String,
        /// What it reserves.
        reserved: Resources,
        /// What it has.
        capacity: Resources,
    },
}

/// Validated nodes, sorted by name, with an index of which nodes cache
/// which digest.
#[derive(Debug, Clone)]
pub struct Cluster {
    nodes: Vec<Node>,
    by_name: HashMap<String, u32>,
    image_holders: HashMap<String, Vec<u32>>,
    snapshot_holders: HashMap<String, Vec<u32>>,
}

impl Cluster {
    /// Checks the nodes: at most [`MAX_NODES`], non-empty unique names, capacity above zero and
    /// within [`MAX_NODE_CORES_MILLI`] and [`MAX_NODE_MEMORY_BYTES`],
    /// reservations within capacity. Errors name the node.
    pub fn new(mut nodes: Vec<Node>) -> Result<Cluster, ClusterError> {
        if nodes.len() > MAX_NODES {
            return Err(ClusterError::TooManyNodes { count: nodes.len() });
        }
        for (index, node) in nodes.iter().enumerate() {
            check_node(index, node)?;
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(pair) = nodes.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(ClusterError::DuplicateNode {
                node: pair[0].name.clone(),
            });
        }
        let mut by_name = HashMap::with_capacity(nodes.len());
        let mut image_holders: HashMap<String, Vec<u32>> = HashMap::new();
        let mut snapshot_holders: HashMap<String, Vec<u32>> = HashMap::new();
        for (i, node) in nodes.iter().enumerate() {
            let i = i as u32; // below MAX_NODES
            by_name.insert(node.name.clone(), i);
            for d in &node.images {
                image_holders.entry(d.clone()).or_default().push(i);
            }
            for d in &node.snapshots {
                snapshot_holders.entry(d.clone()).or_default().push(i);
            }
        }
        Ok(Cluster {
            nodes,
            by_name,
            image_holders,
            snapshot_holders,
        })
    }

    /// The nodes, sorted by name.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.index_of(name).map(|i| &self.nodes[i as usize])
    }

    /// Changes what node `name` reserves (capacity its instances may not
    /// use), checked against its capacity like [`Cluster::new`] does. A
    /// driver that keeps one cluster across many plans (the simulator)
    /// accounts the instances of functions it does not pass to `plan` here,
    /// instead of rebuilding the cluster and its indexes for each plan.
    pub fn set_reserved(&mut self, name: &str, reserved: Resources) -> Result<(), ClusterError> {
        let i = self
            .index_of(name)
            .ok_or_else(|| ClusterError::UnknownNode { node: name.into() })?;
        let node = &mut self.nodes[i as usize];
        if !node.capacity.fits(reserved) {
            return Err(ClusterError::ReservedBeyondCapacity {
                node: name.into(),
                reserved,
                capacity: node.capacity,
            });
        }
        node.reserved = reserved;
        Ok(())
    }

    pub(crate) fn index_of(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The nodes whose cache holds image `digest`, in name order.
    pub(crate) fn image_holders(&self, digest: &str) -> &[u32] {
        self.image_holders.get(digest).map_or(&[], Vec::as_slice)
    }

    /// The nodes whose cache holds snapshot `digest`, in name order.
    pub(crate) fn snapshot_holders(&self, digest: &str) -> &[u32] {
        self.snapshot_holders.get(digest).map_or(&[], Vec::as_slice)
    }
}

fn check_node(index: usize, node: &Node) -> Result<(), ClusterError> {
    let named = || node.name.clone();
    if node.name.is_empty() {
        return Err(ClusterError::EmptyName { index });
    }
    if node.capacity.any_zero() {
        return Err(ClusterError::ZeroCapacity {
            node: named(),
            capacity: node.capacity,
        });
    }
    if node.capacity.beyond_node_limits() {
        return Err(ClusterError::CapacityTooLarge {
            node: named(),
            capacity: node.capacity,
        });
    }
    if !node.capacity.fits(node.reserved) {
        return Err(ClusterError::ReservedBeyondCapacity {
            node: named(),
            reserved: node.reserved,
            capacity: node.capacity,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn node(name: &str) -> Node {
        Node::new(name, Resources::new(4000, 8 * GIB))
    }

    #[test]
    fn sorts_by_name_and_indexes_caches() {
        let mut b = node("b");
        b.images.insert("sha256:img".into());
        let mut a = node("a");
        a.images.insert("sha256:img".into());
        a.snapshots.insert("sha256:snap".into());
        let c = Cluster::new(vec![b, a, node("c")]).unwrap();
        let names: Vec<_> = c.nodes().iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(c.image_holders("sha256:img"), [0, 1]);
        assert_eq!(c.snapshot_holders("sha256:snap"), [0]);
        assert!(c.image_holders("sha256:other").is_empty());
        assert_eq!(c.node("c").map(|n| n.name.as_str()), Some("c"));
        assert!(c.node("d").is_none());
    }

    #[test]
    fn refuses_bad_nodes_naming_them() {
        let check = |nodes: Vec<Node>, want: &str| {
            let err = Cluster::new(nodes).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        };
        check(
            vec![node("a"), node("b"), node("a")],
            "node \"a\" appears twice",
        );
        check(vec![node("a"), node("")], "node #1 has an empty name");
        let mut zero = node("z");
        zero.capacity.memory_bytes = 0;
        check(vec![zero], "node \"z\" declares no capacity");
        let mut huge = node("h");
        huge.capacity.cores_milli = MAX_NODE_CORES_MILLI + 1;
        check(vec![huge], "node \"h\" declares 4096001m cores");
        let mut huge = node("m");
        huge.capacity.memory_bytes = MAX_NODE_MEMORY_BYTES + 1;
        check(vec![huge], "at most 4096 cores and 64 TiB");
        let mut over = node("o");
        over.reserved = Resources::new(100, 9 * GIB);
        check(vec![over], "node \"o\" reserves 100m cores, 9216 MiB");
    }

    #[test]
    fn set_reserved_checks_capacity_and_name() {
        let mut c = Cluster::new(vec![node("a"), node("b")]).unwrap();
        c.set_reserved("b", Resources::new(1000, GIB)).unwrap();
        assert_eq!(c.node("b").unwrap().reserved, Resources::new(1000, GIB));
        let err = c
            .set_reserved("a", Resources::new(5000, GIB))
            .unwrap_err()
            .to_string();
        assert!(err.contains("node \"a\" reserves 5000m cores"), "{err}");
        assert_eq!(c.node("a").unwrap().reserved, Resources::default());
        let err = c.set_reserved("x", Resources::default()).unwrap_err();
        assert_eq!(err.to_string(), "node \"x\" is not in the cluster");
    }

    #[test]
    fn accepts_the_limits_and_an_empty_cluster() {
        let mut edge = node("edge");
        edge.capacity = Resources::new(MAX_NODE_CORES_MILLI, MAX_NODE_MEMORY_BYTES);
        edge.reserved = edge.capacity;
        assert_eq!(Cluster::new(vec![edge]).unwrap().nodes().len(), 1);
        assert!(Cluster::new(vec![]).unwrap().nodes().is_empty());
    }
}
