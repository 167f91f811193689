//! Putting an OCI image layout into the chunk store.

use std::collections::BTreeMap;
use std::path::Path;

use stratus_image::oci::Layout;
use stratus_snapstore::{ChunkStore, Chunking, ManifestKind, PutStats};

use crate::ImageError;

/// The store name of an image blob (`sha256:<hex>`).
pub fn blob_name(digest: &str) -> String {
    format!("blobs/{digest}")
}

/// The store name of an image's entry manifest.
pub fn image_manifest_name(image: &str) -> String {
    format!("images/{image}")
}

/// Annotations on an `images/<name>` manifest.
pub const ANN_MANIFEST_DIGEST: &str = "org.opencontainers.image.manifest.digest";
pub const ANN_MANIFEST_SIZE: &str = "org.opencontainers.image.manifest.size";
pub const ANN_MANIFEST_MEDIA_TYPE: &str = "org.opencontainers.image.manifest.mediaType";

/// What [`publish`] stored.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PublishStats {
    pub blobs: u64,
    /// Blobs already in the store under their name (skipped whole).
    pub blobs_present: u64,
    pub chunks: PutStats,
}

fn add(a: &mut PutStats, b: &PutStats) {
    a.chunks += b.chunks;
    a.written += b.written;
    a.deduplicated += b.deduplicated;
    a.zero += b.zero;
    a.bytes_written += b.bytes_written;
    a.bytes_deduplicated += b.bytes_deduplicated;
    a.bytes_zero += b.bytes_zero;
}

/// Stores every blob of the image at `layout` (manifest, config, layers),
/// each as a chunked blob, then the image manifest `images/<name>` — last,
/// so a reader never finds an image whose blobs are not all stored.
pub async fn publish(
    store: &ChunkStore,
    layout: &Path,
    name: &str,
    chunking: Chunking,
) -> Result<PublishStats, ImageError> {
    let lerr = |message: String| ImageError::Layout {
        path: layout.display().to_string(),
        message,
    };
    let lread = |e| ImageError::LayoutRead {
        path: layout.display().to_string(),
        source: Box::new(e),
    };
    let l = Layout::open(layout).map_err(lread)?;
    let (desc, m) = l.manifest().map_err(lread)?;
    let mut stats = PublishStats::default();
    let existing: std::collections::HashSet<String> = store
        .list()
        .await
        .map_err(|e| ImageError::store("listing the store", e))?
        .into_iter()
        .collect();
    for d in std::iter::once(&desc)
        .chain(std::iter::once(&m.config))
        .chain(m.layers.iter())
    {
        stats.blobs += 1;
        let bname = blob_name(&d.digest);
        if existing.contains(&bname) {
            stats.blobs_present += 1;
            continue;
        }
        let path = l.blob_path(&d.digest).map_err(lread)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|source| ImageError::Io {
                what: format!("opening {}", path.display()),
                source,
            })?;
        let out = store
            .put_blob(&bname, ManifestKind::Blob, file, chunking)
            .await
            .map_err(|e| ImageError::store(format!("storing {}", d.digest), e))?;
        if out.manifest.size != d.size {
            return Err(lerr(format!(
                "blob {} is {} bytes, its descriptor says {}",
                d.digest, out.manifest.size, d.size
            )));
        }
        add(&mut stats.chunks, &out.stats);
    }
    if let Ok(old) = store.manifest(&image_manifest_name(name)).await {
        return match old.annotations.get(ANN_MANIFEST_DIGEST) {
            Some(d) if *d == desc.digest => Ok(stats),
            other => Err(ImageError::Image {
                image: name.to_string(),
                message: format!(
                    "already published as {} (image manifests are immutable; delete it first or use another name)",
                    other.map(String::as_str).unwrap_or("?")
                ),
            }),
        };
    }
    let mut ann = BTreeMap::new();
    ann.insert(ANN_MANIFEST_DIGEST.to_string(), desc.digest.clone());
    ann.insert(ANN_MANIFEST_SIZE.to_string(), desc.size.to_string());
    ann.insert(ANN_MANIFEST_MEDIA_TYPE.to_string(), desc.media_type.clone());
    let body = serde_json::to_vec(&desc).unwrap_or_default();
    store
        .put_blob_annotated(
            &image_manifest_name(name),
            ManifestKind::Other("oci-image".into()),
            ann,
            &body[..],
            chunking,
        )
        .await
        .map_err(|e| ImageError::store(format!("storing image manifest {name}"), e))?;
    Ok(stats)
}
