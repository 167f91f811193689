//! The merged view of an image's layers ([`Tree`]), built from their TOCs
//! alone (pure: no IO). An upper layer's entry replaces a lower one,
//! `.wh.NAME` hides `NAME`, `.wh..wh..opq` hides the lower layers' contents
//! of its directory, and hardlinks share an inode within their layer.

use crate::estargz::{self, ChunkSpan, EntryType, ParsedToc};
use crate::extract::{OPAQUE, WHITEOUT_PREFIX};
use crate::paths;
use crate::tarfmt::Kind;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One layer of a mounted image: its blob and validated TOC.
#[derive(Debug, Clone)]
pub struct LayerToc {
    pub blob: String,
    pub toc: ParsedToc,
}

/// Data of a regular file: which layer and which chunks.
#[derive(Debug, Clone)]
pub struct FileData {
    pub layer: usize,
    pub chunks: Arc<[ChunkSpan]>,
}

/// One inode of the merged tree.
#[derive(Debug, Clone)]
pub struct Node {
    pub ino: u64,
    pub parent: u64,
    /// Path from the root (`""` for the root).
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub size: u64,
    pub link: String,
    pub rdev: u32,
    pub nlink: u32,
    pub children: BTreeMap<String, u64>,
    pub data: Option<FileData>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// The merged view of all layers (pure: built from TOCs only).
#[derive(Debug, Clone)]
pub struct Tree {
    /// `nodes[ino - 1]`; the root is inode 1.
    pub nodes: Vec<Node>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Merged {
    layer: usize,
    /// Entry index in the layer's TOC; `None` for an implied directory.
    /// For a hardlink, the entry of its target in the same layer.
    entry: Option<usize>,
    hardlink: bool,
}

fn is_landmark(name: &str) -> bool {
    name == estargz::PREFETCH_LANDMARK || name == estargz::NO_PREFETCH_LANDMARK
}

/// Removes `dir/…` entries that came from layers below `layer`.
fn remove_lower_under(map: &mut BTreeMap<String, Merged>, dir: &str, layer: usize) {
    let keys: Vec<String> = if dir.is_empty() {
        map.keys().filter(|k| !k.is_empty()).cloned().collect()
    } else {
        let pre = format!("{dir}/");
        map.range(pre.clone()..)
            .take_while(|(k, _)| k.starts_with(&pre))
            .map(|(k, _)| k.clone())
            .collect()
    };
    for k in keys {
        if map.get(&k).is_some_and(|m| m.layer < layer) {
            map.remove(&k);
        }
    }
}

fn new_node(ino: u64, parent: u64, path: &str, layers: &[LayerToc], m: Merged) -> Node {
    let mut n = Node {
        ino,
        parent,
        path: path.to_string(),
        kind: Kind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: 0,
        size: 0,
        link: String::new(),
        rdev: 0,
        nlink: 1,
        children: BTreeMap::new(),
        data: None,
        xattrs: BTreeMap::new(),
    };
    let Some(i) = m.entry else {
        n.nlink = 2;
        return n;
    };
    let e = &layers[m.layer].toc.toc.entries[i];
    n.kind = match e.kind {
        EntryType::Dir => Kind::Dir,
        EntryType::Symlink => Kind::Symlink,
        EntryType::Char => Kind::Char,
        EntryType::Block => Kind::Block,
        EntryType::Fifo => Kind::Fifo,
        _ => Kind::Reg,
    };
    n.mode = e.mode & 0o7777;
    n.uid = u32::try_from(e.uid).unwrap_or(u32::MAX - 1);
    n.gid = u32::try_from(e.gid).unwrap_or(u32::MAX - 1);
    n.mtime = e.mtime();
    n.link = e.link_name.clone();
    n.rdev = rustix::fs::makedev(e.dev_major, e.dev_minor) as u32;
    n.xattrs = e.xattrs();
    match n.kind {
        Kind::Reg => {
            n.size = e.size;
            if let Some(ch) = layers[m.layer].toc.chunks.get(&i) {
                n.data = Some(FileData {
                    layer: m.layer,
                    chunks: ch.clone().into(),
                });
            }
        }
        Kind::Symlink => n.size = n.link.len() as u64,
        Kind::Dir => n.nlink = 2,
        _ => {}
    }
    n
}

impl Tree {
    pub fn build(layers: &[LayerToc]) -> Tree {
        let mut map: BTreeMap<String, Merged> = BTreeMap::new();
        let implied = |layer| Merged {
            layer,
            entry: None,
            hardlink: false,
        };
        map.insert(String::new(), implied(0));
        for (li, l) in layers.iter().enumerate() {
            let entries = &l.toc.toc.entries;
            // Latest entry of each name in this layer, for hardlinks.
            let mut here: HashMap<&str, usize> = HashMap::new();
            for (ei, e) in entries.iter().enumerate() {
                if e.kind == EntryType::Chunk || is_landmark(&e.name) {
                    continue;
                }
                let name = e.name.as_str();
                let base = paths::base(name);
                let parent = paths::parent(name);
                if base == OPAQUE {
                    remove_lower_under(&mut map, parent, li);
                    continue;
                }
                if let Some(hidden) = base.strip_prefix(WHITEOUT_PREFIX) {
                    let target = paths::join(parent, hidden);
                    if map.get(&target).is_some_and(|m| m.layer < li) {
                        map.remove(&target);
                        remove_lower_under(&mut map, &target, li);
                    }
                    continue;
                }
                let merged = if e.kind == EntryType::Hardlink {
                    // A hardlink shares the content its target had in this
                    // layer; targets must come first, as in a tar.
                    match here.get(e.link_name.as_str()) {
                        Some(&t) if matches!(entries[t].kind, EntryType::Reg) => Merged {
                            layer: li,
                            entry: Some(t),
                            hardlink: true,
                        },
                        _ => continue,
                    }
                } else {
                    Merged {
                        layer: li,
                        entry: Some(ei),
                        hardlink: false,
                    }
                };
                // Implied parents.
                let mut anc = Vec::new();
                let mut d = parent;
                while !d.is_empty() {
                    anc.push(d);
                    d = paths::parent(d);
                }
                for a in anc.into_iter().rev() {
                    let is_dir = map.get(a).is_some_and(|m| {
                        m.entry.is_none_or(|i| {
                            !m.hardlink && layers[m.layer].toc.toc.entries[i].kind == EntryType::Dir
                        })
                    });
                    if !is_dir {
                        remove_lower_under(&mut map, a, li);
                        map.insert(a.to_string(), implied(li));
                    }
                }
                if e.kind != EntryType::Dir {
                    remove_lower_under(&mut map, name, li);
                }
                here.insert(name, merged.entry.unwrap_or(ei));
                map.insert(name.to_string(), merged);
            }
        }

        // Inodes: parents sort before children; entries sharing a TOC entry
        // (hardlinks) share an inode.
        let mut nodes: Vec<Node> = Vec::with_capacity(map.len());
        let mut by_path: HashMap<&str, u64> = HashMap::new();
        let mut by_entry: HashMap<(usize, usize), u64> = HashMap::new();
        for (path, m) in &map {
            let parent = if path.is_empty() {
                1
            } else {
                match by_path.get(paths::parent(path)) {
                    Some(&p) if nodes[p as usize - 1].kind == Kind::Dir => p,
                    _ => continue,
                }
            };
            let shared = m
                .entry
                .and_then(|e| by_entry.get(&(m.layer, e)).copied())
                .filter(|_| nodes_kind_is_reg(&nodes, m, &by_entry));
            let ino = match shared {
                Some(ino) => {
                    nodes[ino as usize - 1].nlink += 1;
                    ino
                }
                None => {
                    let ino = nodes.len() as u64 + 1;
                    nodes.push(new_node(ino, parent, path, layers, *m));
                    if let Some(e) = m.entry {
                        by_entry.insert((m.layer, e), ino);
                    }
                    ino
                }
            };
            if !path.is_empty() {
                nodes[parent as usize - 1]
                    .children
                    .insert(paths::base(path).to_string(), ino);
            }
            by_path.insert(path, ino);
        }
        // Directory link counts: 2 + subdirectories.
        let counts: Vec<u32> = nodes
            .iter()
            .map(|n| {
                n.children
                    .values()
                    .filter(|&&c| nodes[c as usize - 1].kind == Kind::Dir)
                    .count() as u32
            })
            .collect();
        for (n, c) in nodes.iter_mut().zip(counts) {
            if n.kind == Kind::Dir {
                n.nlink = 2 + c;
            }
        }
        Tree { nodes }
    }

    pub fn node(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(usize::try_from(ino).ok()?.checked_sub(1)?)
    }

    /// Looks up a normalised path.
    pub fn lookup_path(&self, path: &str) -> Option<&Node> {
        let mut n = self.node(1)?;
        for c in path.split('/').filter(|c| !c.is_empty()) {
            n = self.node(*n.children.get(c)?)?;
        }
        Some(n)
    }
}

fn nodes_kind_is_reg(nodes: &[Node], m: &Merged, by_entry: &HashMap<(usize, usize), u64>) -> bool {
    m.entry
        .and_then(|e| by_entry.get(&(m.layer, e)))
        .is_some_and(|&ino| nodes[ino as usize - 1].kind == Kind::Reg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estargz::{Toc, TocEntry};

    fn e(name: &str, kind: EntryType) -> TocEntry {
        TocEntry {
            name: name.into(),
            kind,
            size: 0,
            modtime: String::new(),
            link_name: String::new(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            user_name: String::new(),
            group_name: String::new(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: BTreeMap::new(),
            digest: String::new(),
            offset: 0,
            chunk_offset: 0,
            chunk_size: 0,
            chunk_digest: String::new(),
        }
    }

    fn link(name: &str, kind: EntryType, target: &str) -> TocEntry {
        TocEntry {
            link_name: target.into(),
            ..e(name, kind)
        }
    }

    fn layer(entries: Vec<TocEntry>) -> LayerToc {
        LayerToc {
            blob: String::new(),
            toc: ParsedToc {
                toc: Toc {
                    version: 1,
                    entries,
                },
                toc_offset: 0,
                chunks: HashMap::new(),
            },
        }
    }

    fn paths_of(t: &Tree) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(t: &Tree, ino: u64, out: &mut Vec<String>) {
            let n = t.node(ino).unwrap();
            for (name, &c) in &n.children {
                let child = t.node(c).unwrap();
                out.push(format!(
                    "{}{}",
                    paths::join(&n.path, name),
                    if child.kind == Kind::Dir { "/" } else { "" }
                ));
                if child.kind == Kind::Dir && child.parent == ino {
                    walk(t, c, out);
                }
            }
        }
        walk(t, 1, &mut out);
        out
    }

    use EntryType::*;

    #[test]
    fn merges_layers_with_whiteouts() {
        let lower = layer(vec![
            e("a", Dir),
            e("a/x", Reg),
            e("a/y", Reg),
            e("b/deep/f", Reg), // implied parents
            e("c", Dir),
            e("c/old", Reg),
            e("d", Dir),
            e("d/sub/f", Reg),
            e(".no.prefetch.landmark", Reg),
        ]);
        let upper = layer(vec![
            e("a/.wh.x", Reg),
            e("c/.wh..wh..opq", Reg),
            e("c/new", Reg),
            e("d", Reg), // a file replaces a directory
            e("b/deep/g", Reg),
        ]);
        let t = Tree::build(&[lower, upper]);
        assert_eq!(
            paths_of(&t),
            ["a/", "a/y", "b/", "b/deep/", "b/deep/f", "b/deep/g", "c/", "c/new", "d"]
        );
        assert_eq!(t.lookup_path("b/deep").unwrap().nlink, 2);
        assert_eq!(t.lookup_path("").unwrap().nlink, 5);
        assert!(t.lookup_path("c/old").is_none());
        assert!(t.lookup_path("d/sub/f").is_none());
    }

    #[test]
    fn opaque_root_and_whiteout_of_a_directory() {
        let lower = layer(vec![e("a/x", Reg), e("b/y", Reg)]);
        let mid = layer(vec![e(".wh.a", Reg)]);
        let upper = layer(vec![e(".wh..wh..opq", Reg), e("z", Reg)]);
        let t = Tree::build(&[lower.clone(), mid.clone()]);
        assert_eq!(paths_of(&t), ["b/", "b/y"]);
        let t = Tree::build(&[lower, mid, upper]);
        assert_eq!(paths_of(&t), ["z"]);
    }

    #[test]
    fn hardlinks_share_an_inode_within_their_layer() {
        let lower = layer(vec![
            e("f", Reg),
            link("h1", Hardlink, "f"),
            link("h2", Hardlink, "h1"),
            link("dangling", Hardlink, "nope"),
            link("s", Symlink, "f"),
        ]);
        let t = Tree::build(std::slice::from_ref(&lower));
        let f = t.lookup_path("f").unwrap();
        assert_eq!(t.lookup_path("h1").unwrap().ino, f.ino);
        assert_eq!(t.lookup_path("h2").unwrap().ino, f.ino);
        assert_eq!(f.nlink, 3);
        assert!(t.lookup_path("dangling").is_none());
        assert_eq!(t.lookup_path("s").unwrap().link, "f");
        // Replacing `f` above leaves the links on the old content.
        let upper = layer(vec![e("f", Reg)]);
        let t = Tree::build(&[lower, upper]);
        let f = t.lookup_path("f").unwrap();
        let h1 = t.lookup_path("h1").unwrap();
        assert_ne!(f.ino, h1.ino);
        assert_eq!(t.lookup_path("h2").unwrap().ino, h1.ino);
        assert_eq!(h1.nlink, 2);
    }
}
