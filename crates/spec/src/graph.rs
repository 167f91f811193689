//! Cycle finding over the step graph (edges: producer -> consumer).

use std::collections::{HashMap, VecDeque};

/// One cycle per non-trivial strongly connected component (self-loops are
/// reported separately). Each cycle starts and ends at the component's first
/// step, e.g. `[a, b, c, a]`.
pub(crate) fn cycles(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let comp = tarjan(edges);
    let mut members: HashMap<usize, Vec<usize>> = HashMap::new();
    for (v, &c) in comp.iter().enumerate() {
        members.entry(c).or_default().push(v);
    }
    let mut out: Vec<Vec<usize>> = Vec::new();
    // BFS predecessor links, shared by all components (each BFS stays in its
    // own component, so entries never collide).
    let mut prev: Vec<Option<usize>> = vec![None; edges.len()];
    for vs in members.values().filter(|vs| vs.len() > 1) {
        let start = vs[0]; // members are pushed in index order
        let c = comp[start];
        // Shortest path from start back to start within the component.
        let mut queue = VecDeque::from([start]);
        let mut last = None;
        'bfs: while let Some(u) = queue.pop_front() {
            for &w in &edges[u] {
                if comp[w] != c {
                    continue;
                }
                if w == start {
                    last = Some(u);
                    break 'bfs;
                }
                if prev[w].is_none() {
                    prev[w] = Some(u);
                    queue.push_back(w);
                }
            }
        }
        let Some(mut u) = last else { continue };
        let mut path = vec![start, u];
        while u != start {
            u = prev[u].unwrap_or(start);
            path.push(u);
        }
        path.reverse();
        out.push(path);
    }
    out.sort_by_key(|p| p[0]);
    out
}

/// Iterative Tarjan: the component id of every vertex.
fn tarjan(edges: &[Vec<usize>]) -> Vec<usize> {
    let n = edges.len();
    const NONE: usize = usize::MAX;
    let mut index = vec![NONE; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut comp = vec![NONE; n];
    let mut stack = Vec::new();
    let mut next = 0;
    let mut ncomp = 0;
    for root in 0..n {
        if index[root] != NONE {
            continue;
        }
        let mut call: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut ei)) = call.last_mut() {
            if let Some(&w) = edges[v].get(*ei) {
                *ei += 1;
                if index[w] == NONE {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    call.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            call.pop();
            if let Some(&(parent, _)) = call.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    comp[w] = ncomp;
                    if w == v {
                        break;
                    }
                }
                ncomp += 1;
            }
        }
    }
    comp
}
