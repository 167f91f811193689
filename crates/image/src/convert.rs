//! `stratus image convert`: rewrites every layer of an image as an eStargz
//! blob, prioritised files first (ending at `.prefetch.landmark`), and
//! writes a new layout whose manifest carries each layer's TOC digest and
//! whose config carries the new diff IDs.

use crate::estargz::{self, EstargzError, WriteOptions};
use crate::oci::{self, Descriptor, Layout, OciError};
use crate::paths;
use crate::tarfmt::{self, EntryMeta, Kind, TarError, TarLimits};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error("layer {layer}")]
    Layer {
        layer: String,
        #[source]
        source: EstargzError,
    },
    #[error("layer {layer}")]
    Tar {
        layer: String,
        #[source]
        source: TarError,
    },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T, E = ConvertError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    pub write: WriteOptions,
    /// Files to put first, in this order (paths in the image, as recorded
    /// by `lazyfs`).
    pub prioritized: Vec<String>,
    pub limits: TarLimits,
}

/// Reads a prioritised-files list: one path per line, `#` comments and
/// blank lines ignored, leading `/` allowed.
pub fn read_priority_list(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| paths::normalize(l.trim_start_matches('/')).ok())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Converts the image in `src` into an eStargz image in `out`.
pub fn convert(
    src: &Path,
    out: &Path,
    opts: &ConvertOptions,
) -> Result<crate::build::ImageSummary> {
    let from = Layout::open(src)?;
    let to = Layout::create(out)?;
    let (_, m) = from.manifest()?;
    let mut config = from.config(&m)?;
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for l in &m.layers {
        let (desc, info) = convert_layer(&from, &to, l, opts)?;
        diff_ids.push(info.diff_id);
        layers.push(desc);
    }
    config.set_diff_ids(&diff_ids);
    let manifest = to.commit_image(&config, layers.clone(), BTreeMap::new(), "latest")?;
    Ok(crate::build::ImageSummary {
        manifest,
        layers,
        diff_ids,
    })
}

struct Spooled {
    meta: EntryMeta,
    data_at: u64,
}

/// Converts one layer; returns its descriptor (with the TOC digest
/// annotation) and blob info.
pub fn convert_layer(
    from: &Layout,
    to: &Layout,
    layer: &Descriptor,
    opts: &ConvertOptions,
) -> Result<(Descriptor, estargz::BlobInfo)> {
    let lerr = |source| ConvertError::Layer {
        layer: layer.digest.clone(),
        source,
    };
    // Spool the payloads so entries can be written in any order.
    let spool_path = to.blob_dir();
    let mut spool = tempfile::tempfile_in(&spool_path).map_err(|source| ConvertError::Io {
        path: spool_path.clone(),
        source,
    })?;
    let mut entries: Vec<Spooled> = Vec::new();
    {
        let mut w = BufWriter::new(&mut spool);
        let mut at = 0u64;
        let input = oci::open_layer(from, layer)?;
        tarfmt::for_each_entry(input, opts.limits, |m, r| {
            if [
                estargz::TOC_NAME,
                estargz::PREFETCH_LANDMARK,
                estargz::NO_PREFETCH_LANDMARK,
            ]
            .contains(&m.name.as_str())
                || m.name.is_empty()
            {
                return Ok(());
            }
            let n = io::copy(&mut r.take(m.size), &mut w).map_err(|e| TarError::Bad {
                name: m.name.clone(),
                what: format!("spooling payload: {e}"),
            })?;
            if n != m.size {
                return Err(TarError::Bad {
                    name: m.name.clone(),
                    what: format!("payload is {n} of {} bytes", m.size),
                });
            }
            entries.push(Spooled {
                meta: m.clone(),
                data_at: at,
            });
            at += n;
            Ok(())
        })
        .map_err(|source| ConvertError::Tar {
            layer: layer.digest.clone(),
            source,
        })?;
        w.flush().map_err(|source| ConvertError::Io {
            path: spool_path.clone(),
            source,
        })?;
    }

    let order = order_entries(
        &entries.iter().map(|s| &s.meta).collect::<Vec<_>>(),
        &opts.prioritized,
    );
    let blob = to.blob_writer()?;
    let mut w = estargz::Writer::new(blob, opts.write.clone());
    if order.prioritized == 0 {
        w.append_landmark(false).map_err(lerr)?;
    }
    for (pos, &i) in order.order.iter().enumerate() {
        if pos == order.prioritized && order.prioritized > 0 {
            w.append_landmark(true).map_err(lerr)?;
        }
        let s = &entries[i];
        spool
            .seek(SeekFrom::Start(s.data_at))
            .map_err(|source| ConvertError::Io {
                path: spool_path.clone(),
                source,
            })?;
        let mut r = io::BufReader::new((&mut spool).take(s.meta.size));
        w.append(&s.meta, &mut r).map_err(lerr)?;
    }
    if order.prioritized > 0 && order.prioritized == order.order.len() {
        w.append_landmark(true).map_err(lerr)?;
    }
    let (info, blob) = w.finish().map_err(lerr)?;
    let mut desc = blob.commit(oci::MEDIA_LAYER_GZIP)?;
    desc.annotations.insert(
        estargz::TOC_DIGEST_ANNOTATION.into(),
        info.toc_digest.clone(),
    );
    desc.annotations.insert(
        estargz::UNCOMPRESSED_SIZE_ANNOTATION.into(),
        info.uncompressed_size.to_string(),
    );
    Ok((desc, info))
}

/// The write order of a layer's entries.
#[derive(Debug, PartialEq, Eq)]
pub struct Order {
    /// Indices into the entry list.
    pub order: Vec<usize>,
    /// How many of them (from the start) are prioritised.
    pub prioritized: usize,
}

/// Orders entries: each prioritised name present in the layer (its last
/// occurrence), preceded by its not-yet-written ancestor directories and,
/// for a hardlink, its target; then everything else in archive order.
/// Earlier duplicates of a moved name are dropped, as the last one wins.
pub fn order_entries(entries: &[&EntryMeta], prioritized: &[String]) -> Order {
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, m) in entries.iter().enumerate() {
        last.insert(m.name.as_str(), i);
    }
    // Emitted entries, by the index of their name's last occurrence.
    let mut done: HashSet<usize> = HashSet::new();
    let mut order = Vec::new();
    let emit = |name: &str, order: &mut Vec<usize>, done: &mut HashSet<usize>| {
        if let Some(&i) = last.get(name) {
            if done.insert(i) {
                order.push(i);
            }
        }
    };
    for p in prioritized {
        let Some(&i) = last.get(p.as_str()) else {
            continue;
        };
        if done.contains(&i) {
            continue;
        }
        let mut anc = Vec::new();
        let mut d = paths::parent(p);
        while !d.is_empty() {
            anc.push(d);
            d = paths::parent(d);
        }
        for a in anc.into_iter().rev() {
            emit(a, &mut order, &mut done);
        }
        if entries[i].kind == Kind::Hardlink {
            emit(&entries[i].link, &mut order, &mut done);
        }
        emit(p, &mut order, &mut done);
    }
    let prioritized_n = order.len();
    for (i, m) in entries.iter().enumerate() {
        if done.contains(&last[m.name.as_str()]) {
            continue;
        }
        order.push(i);
    }
    Order {
        order,
        prioritized: prioritized_n,
    }
}

/// Converts and reports each layer's TOC (for `stratus image inspect`-like
/// debugging and tests): reads a blob file's TOC.
pub fn read_blob_toc(path: &Path) -> Result<(estargz::ParsedToc, String)> {
    let mut f = fs::File::open(path).map_err(|source| ConvertError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let size = f
        .metadata()
        .map_err(|source| ConvertError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    estargz::read_toc(size, &estargz::TocLimits::default(), |off, len| {
        let mut buf = vec![0u8; len as usize];
        f.seek(SeekFrom::Start(off))?;
        f.read_exact(&mut buf)?;
        Ok(buf)
    })
    .map_err(|source| ConvertError::Layer {
        layer: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, kind: Kind) -> EntryMeta {
        EntryMeta::new(name, kind)
    }

    #[test]
    fn orders_prioritised_first_with_parents() {
        let mut h = m("b/h", Kind::Hardlink);
        h.link = "a/x".into();
        let es = [
            m("a", Kind::Dir),
            m("a/x", Kind::Reg),
            m("b", Kind::Dir),
            m("b/y", Kind::Reg),
            h,
            m("a/x", Kind::Reg),
        ];
        let refs: Vec<&EntryMeta> = es.iter().collect();
        let o = order_entries(&refs, &["b/y".into(), "missing".into(), "b/h".into()]);
        assert_eq!(o.order, vec![2, 3, 5, 4, 0]);
        assert_eq!(o.prioritized, 4);
        let o = order_entries(&refs, &[]);
        assert_eq!(o.order, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(o.prioritized, 0);
    }

    #[test]
    fn priority_lists() {
        assert_eq!(
            read_priority_list("# c\n/bin/sh\n\nusr/lib/x\n../evil\n/\n"),
            vec!["bin/sh", "usr/lib/x"]
        );
    }
}
