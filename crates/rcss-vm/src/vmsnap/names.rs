//! Manifest names of a snapshot and how a node looks its manifests up.

use std::sync::Arc;

use stratus_microvm::snapshot::{SnapshotError, SnapshotKey};
use stratus_snapstore::{ChunkRef, Manifest, ManifestKind, SourceError};

use super::{store_err, RcssSnapshots};

/// Manifest names of one snapshot.
pub fn memory_name(key: &impl std::fmt::Display) -> String {
    format!("vm/{key}/memory")
}

pub fn vmstate_name(key: &impl std::fmt::Display) -> String {
    format!("vm/{key}/vmstate")
}

/// The first working set of a snapshot (generation 1, the recording).
pub fn working_set_name(key: &impl std::fmt::Display) -> String {
    working_set_generation_name(key, 1)
}

/// Working set generation `generation` of a snapshot. Generation 1 is
/// recorded by the first working-set restore; a later restore that still
/// faults many pages on demand publishes the next generation: the previous
/// one plus the pages it mapped (see [`RcssSnapshotsConfig::working_set_generations`]).
/// Manifests are immutable, so each generation has its own name, and its
/// pack ([`wspack::pack_generation_name`]) is stored before it.
pub fn working_set_generation_name(key: &impl std::fmt::Display, generation: u32) -> String {
    match generation {
        0 | 1 => format!("vm/{key}/working-set"),
        g => format!("vm/{key}/working-set.{g}"),
    }
}

/// Annotation on the memory manifest naming the vmstate manifest.
pub const VMSTATE_ANNOTATION: &str = "stratus.vmstate";

pub(super) fn manifest(
    kind: ManifestKind,
    name: String,
    size: u64,
    chunks: Vec<ChunkRef>,
) -> Manifest {
    Manifest {
        version: stratus_snapstore::manifest::MANIFEST_VERSION,
        kind,
        name,
        size,
        chunks,
        annotations: Default::default(),
    }
}

impl RcssSnapshots {
    /// A manifest, from the node's table or the store (not-found is not
    /// remembered: it may appear later).
    pub(super) async fn manifest(&self, name: &str) -> Result<Arc<Manifest>, SourceError> {
        if let Some(m) = self.ws.manifests.lock().get(name) {
            return Ok(m.clone());
        }
        let m = Arc::new(self.cfg.chunks.manifest(name).await?);
        self.ws.manifests.lock().insert(name.to_string(), m.clone());
        Ok(m)
    }

    /// The memory manifest, or `None` when there is no snapshot.
    pub(super) async fn memory_manifest(
        &self,
        key: &SnapshotKey,
    ) -> Result<Option<Arc<Manifest>>, SnapshotError> {
        match self.manifest(&memory_name(key)).await {
            Ok(m) => {
                if m.kind != ManifestKind::MemorySnapshot {
                    return Err(Self::err(
                        key,
                        format!("{} is a {} manifest, not memory-snapshot", m.name, m.kind),
                    ));
                }
                Ok(Some(m))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(store_err(key, e)),
        }
    }

    /// The vmstate manifest of snapshot `memory`.
    pub(super) async fn vmstate_manifest(
        &self,
        key: &SnapshotKey,
        memory: &Manifest,
    ) -> Result<Arc<Manifest>, SnapshotError> {
        let name = memory
            .annotations
            .get(VMSTATE_ANNOTATION)
            .cloned()
            .unwrap_or_else(|| vmstate_name(key));
        self.manifest(&name).await.map_err(|e| store_err(key, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wspack;

    #[test]
    fn generations_have_their_own_names() {
        assert_eq!(working_set_generation_name(&"k", 1), working_set_name(&"k"));
        assert_eq!(working_set_generation_name(&"k", 3), "vm/k/working-set.3");
        assert_eq!(
            wspack::pack_generation_name(&"k", 1),
            wspack::pack_name(&"k")
        );
        assert_eq!(
            wspack::pack_generation_name(&"k", 3),
            "vm/k/working-set-pack.3"
        );
    }
}
