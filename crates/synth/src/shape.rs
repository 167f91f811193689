//! DAG structures: the layered builder for trace-driven shapes, the classic
//! scientific workflows and the microbenchmarks.
//!
//! A structure is a [`Topology`]: named nodes in topological order, each with
//! the indices of the nodes it reads; a node with no inputs reads the
//! workflow input. Every topology built here has exactly one sink.

mod azure;
mod classic;

use rand::Rng;
use serde::{Deserialize, Serialize};

pub use azure::{AzureModel, AzureShapes, Marginals};
pub use classic::ClassicLimits;

/// Problems with a shape's parameters, found before anything is generated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ShapeError {
    #[error("shape {shape}: {problem}")]
    Parameter {
        shape: &'static str,
        problem: String,
    },
    #[error(
        "shape {shape} has {nodes} nodes, more than max_nodes ({max_nodes}); \
         raise max_nodes or pick a smaller size"
    )]
    TooManyNodes {
        shape: &'static str,
        nodes: u64,
        max_nodes: u64,
    },
    #[error("the Azure shape CDFs cannot be used: {0}")]
    Azure(String),
    #[error(
        "no layered DAG has {nodes} nodes, depth {depth} and width {width} \
         (needs depth ≤ nodes, width ≤ nodes - depth + 1 and width × depth ≥ nodes)"
    )]
    Infeasible { nodes: u64, depth: u64, width: u64 },
}

/// Which kind of DAG to generate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Production shapes: node count, depth and width drawn from the Azure
    /// DAG shape CDFs (see the crate documentation for the rules).
    Azure,
    /// Pegasus Cycles (agroecosystem simulation) with `size` parameter
    /// combinations (1..=18). Structures, sources and limits of the classic
    /// workflows: [`ClassicLimits`].
    Cycles { size: u32 },
    /// Pegasus Epigenomics with `size` splits per lane (1..=14; 2 lanes).
    Epigenomics { size: u32 },
    /// Pegasus 1000Genome with `size` `individuals` tasks (1..=18; one
    /// chromosome, 7 populations).
    Genome { size: u32 },
    /// Pegasus SoyKB with `size` samples (1..=6; 3 chromosomes).
    #[serde(rename = "soykb")]
    SoyKb { size: u32 },
    /// `n` steps in a row.
    Chain(u32),
    /// A source, `n` parallel steps, and a join.
    #[serde(rename = "fanout")]
    FanOut(u32),
    /// A split, `mappers` parallel maps, `reducers` reduces each reading
    /// every map (the shuffle), and a merge when `reducers > 1`.
    #[serde(rename = "mapreduce")]
    MapReduce { mappers: u32, reducers: u32 },
}

impl Shape {
    /// Cycles at its default size (8: 35 nodes, depth 5, fan-in 8).
    pub const fn cycles() -> Shape {
        Shape::Cycles { size: 8 }
    }

    /// Epigenomics at its default size (4: 39 nodes, depth 9, fan-out 4).
    pub const fn epigenomics() -> Shape {
        Shape::Epigenomics { size: 4 }
    }

    /// 1000Genome at its default size (10: 27 nodes, depth 4, fan-out 14).
    pub const fn genome() -> Shape {
        Shape::Genome { size: 10 }
    }

    /// SoyKB at its default size (4: 44 nodes, depth 11, fan-in 12).
    pub const fn soykb() -> Shape {
        Shape::SoyKb { size: 4 }
    }

    /// The kind's name, used as the default workflow name prefix.
    pub fn kind(&self) -> &'static str {
        match self {
            Shape::Azure => "azure",
            Shape::Cycles { .. } => "cycles",
            Shape::Epigenomics { .. } => "epigenomics",
            Shape::Genome { .. } => "genome",
            Shape::SoyKb { .. } => "soykb",
            Shape::Chain(_) => "chain",
            Shape::FanOut(_) => "fanout",
            Shape::MapReduce { .. } => "mapreduce",
        }
    }

    /// The fixed structure of every shape but [`Shape::Azure`] (`None`),
    /// after checking its parameters and that it has at most `max_nodes` nodes.
    pub fn fixed_topology(&self, max_nodes: u64) -> Result<Option<Topology>, ShapeError> {
        let shape = self.kind();
        let param = |problem: String| ShapeError::Parameter { shape, problem };
        let topo = match *self {
            Shape::Azure => return Ok(None),
            Shape::Cycles { size } => classic::cycles(size).map_err(param)?,
            Shape::Epigenomics { size } => classic::epigenomics(size).map_err(param)?,
            Shape::Genome { size } => classic::genome(size).map_err(param)?,
            Shape::SoyKb { size } => classic::soykb(size).map_err(param)?,
            Shape::Chain(n) => {
                if n == 0 {
                    return Err(param("needs at least 1 step".into()));
                }
                check_size(shape, u64::from(n), max_nodes)?;
                chain(n)
            }
            Shape::FanOut(n) => {
                if n == 0 {
                    return Err(param("needs at least 1 parallel step".into()));
                }
                check_size(shape, u64::from(n) + 2, max_nodes)?;
                fan_out(n)
            }
            Shape::MapReduce { mappers, reducers } => {
                if mappers == 0 || reducers == 0 {
                    return Err(param("needs at least 1 mapper and 1 reducer".into()));
                }
                let nodes = 1 + u64::from(mappers) + u64::from(reducers) + u64::from(reducers > 1);
                check_size(shape, nodes, max_nodes)?;
                map_reduce(mappers, reducers)
            }
        };
        check_size(shape, topo.nodes.len() as u64, max_nodes)?;
        Ok(Some(topo))
    }
}

fn check_size(shape: &'static str, nodes: u64, max_nodes: u64) -> Result<(), ShapeError> {
    if nodes > max_nodes {
        return Err(ShapeError::TooManyNodes {
            shape,
            nodes,
            max_nodes,
        });
    }
    Ok(())
}

/// The measured shape of a layered DAG, as the Azure CDFs describe DAGs:
/// `nodes` steps, `depth` levels (the longest chain), `width` steps on the
/// widest level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapeTarget {
    pub nodes: u64,
    pub depth: u64,
    pub width: u64,
}

impl ShapeTarget {
    /// The consistency rule: a layered DAG with these numbers exists iff
    /// `1 ≤ depth ≤ nodes`, `1 ≤ width ≤ nodes - depth + 1` (every other
    /// level has at least one node) and `width × depth ≥ nodes` (no level is
    /// wider than `width`).
    pub fn is_feasible(&self) -> bool {
        let ShapeTarget {
            nodes,
            depth,
            width,
        } = *self;
        depth >= 1
            && width >= 1
            && depth <= nodes
            && width <= nodes - depth + 1
            && width.checked_mul(depth).is_some_and(|c| c >= nodes)
    }
}

/// One node of a [`Topology`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopoNode {
    /// A DNS-1123 label, unique in the DAG.
    pub name: String,
    /// Indices of earlier nodes whose outputs this node reads, ascending;
    /// empty: it reads the workflow input.
    pub inputs: Vec<usize>,
    /// A zero-work join added only so that the workflow has one output; not
    /// part of the shape it was built from.
    pub synthetic_join: bool,
}

/// A DAG structure: nodes in topological order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub nodes: Vec<TopoNode>,
}

impl Topology {
    fn add(&mut self, name: String, inputs: Vec<usize>) -> usize {
        debug_assert!(inputs.iter().all(|&i| i < self.nodes.len()));
        self.nodes.push(TopoNode {
            name,
            inputs,
            synthetic_join: false,
        });
        self.nodes.len() - 1
    }

    fn add_join(&mut self, name: String, inputs: Vec<usize>) -> usize {
        let i = self.add(name, inputs);
        self.nodes[i].synthetic_join = true;
        i
    }

    /// Whether every node's inputs are earlier nodes (so the DAG is acyclic).
    pub fn is_topological(&self) -> bool {
        self.nodes
            .iter()
            .enumerate()
            .all(|(i, n)| n.inputs.iter().all(|&j| j < i))
    }

    /// Each node's level: 0 for nodes reading the workflow input, else one
    /// more than its deepest input (the longest chain ending at it, minus 1).
    pub fn levels(&self) -> Vec<usize> {
        let mut level = vec![0usize; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            level[i] = n.inputs.iter().map(|&j| level[j] + 1).max().unwrap_or(0);
        }
        level
    }

    /// Nodes per level.
    pub fn level_widths(&self) -> Vec<usize> {
        let mut widths = Vec::new();
        for l in self.levels() {
            if widths.len() <= l {
                widths.resize(l + 1, 0);
            }
            widths[l] += 1;
        }
        widths
    }

    /// The longest chain, in nodes.
    pub fn depth(&self) -> usize {
        self.level_widths().len()
    }

    /// The widest level.
    pub fn width(&self) -> usize {
        self.level_widths().into_iter().max().unwrap_or(0)
    }

    /// Nodes no other node reads.
    pub fn sinks(&self) -> Vec<usize> {
        let mut read = vec![false; self.nodes.len()];
        for n in &self.nodes {
            for &j in &n.inputs {
                read[j] = true;
            }
        }
        (0..self.nodes.len()).filter(|&i| !read[i]).collect()
    }

    /// The most inputs of any node.
    pub fn max_fan_in(&self) -> usize {
        self.nodes.iter().map(|n| n.inputs.len()).max().unwrap_or(0)
    }

    /// The most readers of any node.
    pub fn max_fan_out(&self) -> usize {
        let mut out = vec![0usize; self.nodes.len()];
        for n in &self.nodes {
            for &j in &n.inputs {
                out[j] += 1;
            }
        }
        out.into_iter().max().unwrap_or(0)
    }
}

/// Uniform integer in `0..n` (`n > 0`), drawn as a `u64` so that the result
/// does not depend on the platform's pointer width.
pub(crate) fn below<R: Rng + ?Sized>(rng: &mut R, n: usize) -> usize {
    rng.random_range(0..n as u64) as usize
}

/// Builds a layered DAG with exactly `target`'s node count, depth and width,
/// named `n0`, `n1`, ... level by level, plus a synthetic join when the last
/// level has more than one node.
///
/// Level sizes: when `depth ≥ 2` and the other levels can hold `nodes - 1`
/// nodes, the last level has one node (the workflow's output) and the widest
/// level is one of the others, chosen uniformly; otherwise the widest level
/// is any level. All other levels start with one node, and the remaining
/// nodes are dealt one at a time to a uniformly chosen level that is not yet
/// full (`width` nodes).
///
/// Edges (the arity rule): each node on level `i > 0` draws one parent
/// uniformly from level `i - 1`; then every node of level `i - 1` that no
/// node picked becomes an extra parent of a uniformly chosen node of level
/// `i`. So each node has 1 ≤ fan-in ≤ (width of the level above), every
/// non-final node has a child, the edge count between two levels of sizes
/// `a` and `b` is between `max(a, b)` and `a + b - 1`, and the expected
/// fan-in is about `max(1, a / b)`: a level narrower than the one above is a
/// join, a wider one a fan-out, equal ones mostly one-to-one pipelines.
pub fn build_layered<R: Rng + ?Sized>(
    target: ShapeTarget,
    rng: &mut R,
) -> Result<Topology, ShapeError> {
    if !target.is_feasible() {
        return Err(ShapeError::Infeasible {
            nodes: target.nodes,
            depth: target.depth,
            width: target.width,
        });
    }
    let n = target.nodes as usize;
    let d = target.depth as usize;
    let w = target.width as usize;

    // Level sizes.
    let pin_last = d >= 2 && n - 1 <= (d - 1) * w;
    let free_levels = if pin_last { d - 1 } else { d };
    let mut sizes = vec![1usize; d];
    let wide = below(rng, free_levels);
    sizes[wide] = w;
    let mut open: Vec<usize> = (0..free_levels).filter(|&l| l != wide && w > 1).collect();
    let mut remaining = n - (w + d - 1);
    while remaining > 0 {
        let k = below(rng, open.len());
        let l = open[k];
        sizes[l] += 1;
        if sizes[l] == w {
            open.swap_remove(k);
        }
        remaining -= 1;
    }

    // Nodes and edges, level by level.
    let mut topo = Topology::default();
    let mut prev: Vec<usize> = Vec::new();
    for &size in &sizes {
        let first = topo.nodes.len();
        let level: Vec<usize> = (first..first + size).collect();
        let mut parents: Vec<Vec<usize>> = vec![Vec::new(); size];
        if !prev.is_empty() {
            let mut has_child = vec![false; prev.len()];
            for p in parents.iter_mut() {
                let k = below(rng, prev.len());
                p.push(prev[k]);
                has_child[k] = true;
            }
            for (k, &child) in has_child.iter().enumerate() {
                if !child {
                    parents[below(rng, size)].push(prev[k]);
                }
            }
        }
        for mut p in parents {
            p.sort_unstable();
            let i = topo.nodes.len();
            topo.add(format!("n{i}"), p);
        }
        prev = level;
    }
    if prev.len() > 1 {
        let i = topo.nodes.len();
        topo.add_join(format!("n{i}"), prev);
    }
    Ok(topo)
}

fn chain(n: u32) -> Topology {
    let mut t = Topology::default();
    for i in 1..=n {
        let inputs = if i == 1 {
            vec![]
        } else {
            vec![t.nodes.len() - 1]
        };
        t.add(format!("s{i}"), inputs);
    }
    t
}

fn fan_out(n: u32) -> Topology {
    let mut t = Topology::default();
    let source = t.add("source".into(), vec![]);
    let par: Vec<usize> = (1..=n)
        .map(|i| t.add(format!("p{i}"), vec![source]))
        .collect();
    t.add("join".into(), par);
    t
}

fn map_reduce(mappers: u32, reducers: u32) -> Topology {
    let mut t = Topology::default();
    let split = t.add("split".into(), vec![]);
    let maps: Vec<usize> = (1..=mappers)
        .map(|i| t.add(format!("map-{i}"), vec![split]))
        .collect();
    let reduces: Vec<usize> = (1..=reducers)
        .map(|i| t.add(format!("reduce-{i}"), maps.clone()))
        .collect();
    if reducers > 1 {
        t.add("merge".into(), reduces);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn edges(t: &Topology) -> String {
        t.nodes
            .iter()
            .map(|n| {
                let ins: Vec<&str> = n.inputs.iter().map(|&i| t.nodes[i].name.as_str()).collect();
                format!("{}<-[{}]", n.name, ins.join(","))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn feasibility_rule() {
        let t = |nodes, depth, width| ShapeTarget {
            nodes,
            depth,
            width,
        };
        assert!(t(1, 1, 1).is_feasible());
        assert!(t(2, 1, 2).is_feasible());
        assert!(t(2, 2, 1).is_feasible());
        assert!(!t(2, 1, 1).is_feasible()); // one level of width 1 holds 1 node
        assert!(!t(3, 2, 3).is_feasible()); // the other level needs a node
        assert!(!t(2, 3, 1).is_feasible());
        assert!(!t(0, 1, 1).is_feasible());
        assert!(t(10, 3, 8).is_feasible());
        assert!(!t(10, 3, 9).is_feasible());
    }

    #[test]
    fn layered_single_level_gets_a_join() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let t = build_layered(
            ShapeTarget {
                nodes: 3,
                depth: 1,
                width: 3,
            },
            &mut rng,
        )
        .unwrap();
        assert_eq!(edges(&t), "n0<-[] n1<-[] n2<-[] n3<-[n0,n1,n2]");
        assert!(t.nodes[3].synthetic_join);
    }

    #[test]
    fn layered_pins_last_level_when_possible() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..50 {
            let t = build_layered(
                ShapeTarget {
                    nodes: 7,
                    depth: 3,
                    width: 4,
                },
                &mut rng,
            )
            .unwrap();
            let widths = t.level_widths();
            assert_eq!(widths.len(), 3);
            assert_eq!(widths[2], 1);
            assert_eq!(widths.iter().max(), Some(&4));
            assert!(t.nodes.iter().all(|n| !n.synthetic_join));
        }
        // 6 nodes in 2 levels of width 3: both levels full, so a join.
        let t = build_layered(
            ShapeTarget {
                nodes: 6,
                depth: 2,
                width: 3,
            },
            &mut rng,
        )
        .unwrap();
        assert_eq!(t.level_widths(), vec![3, 3, 1]);
        assert!(t.nodes[6].synthetic_join);
    }

    #[test]
    fn micro_shapes() {
        assert_eq!(edges(&chain(3)), "s1<-[] s2<-[s1] s3<-[s2]");
        assert_eq!(
            edges(&fan_out(2)),
            "source<-[] p1<-[source] p2<-[source] join<-[p1,p2]"
        );
        assert_eq!(
            edges(&map_reduce(2, 2)),
            "split<-[] map-1<-[split] map-2<-[split] reduce-1<-[map-1,map-2] \
             reduce-2<-[map-1,map-2] merge<-[reduce-1,reduce-2]"
        );
        assert_eq!(
            edges(&map_reduce(1, 1)),
            "split<-[] map-1<-[split] reduce-1<-[map-1]"
        );
    }

    #[test]
    fn shape_parameters_are_checked() {
        let err = |s: Shape, max| s.fixed_topology(max).unwrap_err().to_string();
        assert_eq!(
            err(Shape::Chain(0), 10),
            "shape chain: needs at least 1 step"
        );
        assert_eq!(
            err(Shape::FanOut(9), 10),
            "shape fanout has 11 nodes, more than max_nodes (10); raise max_nodes or pick a smaller size"
        );
        assert_eq!(
            err(
                Shape::MapReduce {
                    mappers: 0,
                    reducers: 1
                },
                10
            ),
            "shape mapreduce: needs at least 1 mapper and 1 reducer"
        );
        assert!(Shape::Azure.fixed_topology(10).unwrap().is_none());
    }
}
