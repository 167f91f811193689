//! Container root filesystems from the chunk store, for the runc sandbox.
//!
//! `image: rcss:NAME` names an image published with [`crate::publish`].
//! Three ways to get it onto the node ([`PullMode`]):
//!
//! - **Full**: the conventional pull. Fetch every blob (manifest, config,
//!   layers) into a local OCI layout, then extract the layers into a
//!   directory (whiteouts applied). `fetch_us` = pull, `mount_us` = extract.
//! - **Lazy**: read the layers' eStargz TOCs, mount a FUSE filesystem that
//!   fetches a file's chunks on first read. `fetch_us` = manifest + TOCs,
//!   `mount_us` = FUSE mount.
//! - **LazyPrefetch**: as Lazy, and at mount fetch everything before each
//!   layer's `.prefetch.landmark` in one batch, in the background while the
//!   container starts.
//!
//! Each instance gets its own extraction or mount, released when the
//! instance is deleted (the guard in [`Rootfs`]); what a lazy start read is
//! kept by [`ImageRootfs::record`] until then, so a later conversion can
//! prioritise those files.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use parking_lot::Mutex;
use stratus_image::lazyfs::{self, LazyStats, MountHandle, MountOptions};
use stratus_image::oci::{Descriptor, ImageConfig, Layout};
use stratus_image::source::BlobSource;
use stratus_sandbox::runc::{self, DirRootfs, Rootfs, RootfsProvider};
use stratus_sandbox::SandboxError;
use stratus_snapstore::{BlobReader, ChunkSource};

use crate::publish::{
    blob_name, image_manifest_name, ANN_MANIFEST_DIGEST, ANN_MANIFEST_MEDIA_TYPE, ANN_MANIFEST_SIZE,
};
use crate::source::RcssBlobSource;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullMode {
    Full,
    Lazy,
    LazyPrefetch,
}

impl std::str::FromStr for PullMode {
    type Err = String;
    fn from_str(s: &str) -> Result<PullMode, String> {
        match s {
            "full" | "full-pull" => Ok(PullMode::Full),
            "lazy" => Ok(PullMode::Lazy),
            "prefetch" | "lazy+prefetch" => Ok(PullMode::LazyPrefetch),
            _ => Err(format!(
                "image pull mode '{s}': expected full, lazy or prefetch"
            )),
        }
    }
}

impl PullMode {
    pub fn name(self) -> &'static str {
        match self {
            PullMode::Full => "full-pull",
            PullMode::Lazy => "lazy",
            PullMode::LazyPrefetch => "lazy+prefetch",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RootfsConfig {
    /// Extractions, pulled layouts and mount points go here.
    pub work_dir: PathBuf,
    pub mode: PullMode,
    /// Decompressed chunks a lazy mount keeps in memory.
    pub mount_cache_bytes: u64,
    /// FUSE worker threads per mount.
    pub fuse_threads: usize,
    /// Bytes per read while pulling a blob whole.
    pub pull_piece: u64,
}

impl RootfsConfig {
    pub fn new(work_dir: PathBuf, mode: PullMode) -> RootfsConfig {
        RootfsConfig {
            work_dir,
            mode,
            mount_cache_bytes: 128 << 20,
            fuse_threads: 4,
            pull_piece: 32 << 20,
        }
    }
}

/// What a lazy start read, for re-conversion with priorities.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StartRecord {
    pub files: Vec<String>,
    pub stats: LazyStats,
}

type SharedMount = Arc<Mutex<Option<MountHandle>>>;

/// Releases an instance's rootfs: unmounts, removes its directories.
struct Guard {
    mount: Option<SharedMount>,
    dirs: Vec<PathBuf>,
    mounts: Arc<Mutex<HashMap<String, SharedMount>>>,
    instance: String,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.mounts.lock().remove(&self.instance);
        if let Some(m) = self.mount.take() {
            if let Some(h) = m.lock().take() {
                if let Err(e) = h.unmount() {
                    tracing::warn!(instance = %self.instance, error = %e, "unmounting a lazy rootfs");
                }
            }
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A [`RootfsProvider`] for `rcss:NAME` (and `dir:/path`) images.
pub struct ImageRootfs {
    source: Arc<dyn ChunkSource>,
    cfg: RootfsConfig,
    mounts: Arc<Mutex<HashMap<String, SharedMount>>>,
}

fn err(image: &str, what: impl std::fmt::Display) -> SandboxError {
    SandboxError::Rootfs(format!("image '{image}': {what}"))
}

impl ImageRootfs {
    pub fn new(source: Arc<dyn ChunkSource>, cfg: RootfsConfig) -> ImageRootfs {
        let _ = std::fs::create_dir_all(&cfg.work_dir);
        ImageRootfs {
            source,
            cfg,
            mounts: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn mode(&self) -> PullMode {
        self.cfg.mode
    }

    /// What the lazy mount of a running instance has read so far.
    pub fn record(&self, instance_id: &str) -> Option<StartRecord> {
        let m = self.mounts.lock().get(instance_id).cloned()?;
        let g = m.lock();
        let h = g.as_ref()?;
        Some(StartRecord {
            files: h.accessed_files(),
            stats: h.stats(),
        })
    }

    /// What every live lazy mount has read so far, by instance.
    pub fn records(&self) -> Vec<(String, StartRecord)> {
        let ids: Vec<String> = self.mounts.lock().keys().cloned().collect();
        ids.into_iter()
            .filter_map(|id| self.record(&id).map(|r| (id, r)))
            .collect()
    }

    /// The OCI manifest descriptor of a published image.
    async fn descriptor(&self, image: &str, name: &str) -> Result<Descriptor, SandboxError> {
        let m = self
            .source
            .manifest(&image_manifest_name(name))
            .await
            .map_err(|e| err(image, format!("not in the snapshot store: {e}")))?;
        let get = |k: &str| {
            m.annotations
                .get(k)
                .cloned()
                .ok_or_else(|| err(image, format!("image manifest lacks annotation {k}")))
        };
        Ok(Descriptor {
            media_type: get(ANN_MANIFEST_MEDIA_TYPE)?,
            digest: get(ANN_MANIFEST_DIGEST)?,
            size: get(ANN_MANIFEST_SIZE)?
                .parse()
                .map_err(|_| err(image, "bad manifest size annotation"))?,
            annotations: Default::default(),
            platform: None,
        })
    }

    /// Copies one blob from the store into `layout`, piece by piece.
    async fn pull_blob(
        &self,
        image: &str,
        layout: &Layout,
        d: &Descriptor,
    ) -> Result<(), SandboxError> {
        let r = BlobReader::open(self.source.clone(), &blob_name(&d.digest))
            .await
            .map_err(|e| err(image, e))?;
        if r.size() != d.size {
            return Err(err(
                image,
                format!(
                    "blob {} is {} bytes in the store, {} in its descriptor",
                    d.digest,
                    r.size(),
                    d.size
                ),
            ));
        }
        let mut w = layout.blob_writer().map_err(|e| err(image, e))?;
        let mut off = 0;
        while off < d.size {
            let n = self.cfg.pull_piece.min(d.size - off);
            let b = r.read_at(off, n).await.map_err(|e| err(image, e))?;
            w.write_all(&b)
                .map_err(|e| err(image, format!("writing {}: {e}", d.digest)))?;
            off += n;
        }
        let got = w.commit(&d.media_type).map_err(|e| err(image, e))?;
        if got.digest != d.digest {
            return Err(err(
                image,
                format!(
                    "pulled blob hashes to {}, expected {}",
                    got.digest, d.digest
                ),
            ));
        }
        Ok(())
    }

    async fn full(&self, image: &str, name: &str, instance: &str) -> Result<Rootfs, SandboxError> {
        let t0 = Instant::now();
        let desc = self.descriptor(image, name).await?;
        let base = self.cfg.work_dir.join(format!("pull-{instance}"));
        let _ = std::fs::remove_dir_all(&base);
        let guard = Guard {
            mount: None,
            dirs: vec![base.clone()],
            mounts: self.mounts.clone(),
            instance: instance.to_string(),
        };
        let layout = Layout::create(&base.join("layout")).map_err(|e| err(image, e))?;
        self.pull_blob(image, &layout, &desc).await?;
        let mbytes = std::fs::read(layout.blob_path(&desc.digest).map_err(|e| err(image, e))?)
            .map_err(|e| err(image, e))?;
        let m: stratus_image::oci::Manifest =
            serde_json::from_slice(&mbytes).map_err(|e| err(image, format!("manifest: {e}")))?;
        self.pull_blob(image, &layout, &m.config).await?;
        for l in &m.layers {
            self.pull_blob(image, &layout, l).await?;
        }
        let index = stratus_image::oci::Index {
            schema_version: 2,
            media_type: Some("application/vnd.oci.image.index.v1+json".into()),
            manifests: vec![desc.clone()],
        };
        let ij = serde_json::to_vec(&index).map_err(|e| err(image, e))?;
        stratus_image::oci::write_atomic(&layout.root().join("index.json"), &ij)
            .map_err(|e| err(image, format!("writing index.json: {e}")))?;
        let fetch_us = t0.elapsed().as_micros() as u64;
        let t1 = Instant::now();
        let dest = base.join("rootfs");
        let config = {
            let layout = layout.clone();
            let dest = dest.clone();
            tokio::task::spawn_blocking(move || {
                stratus_image::extract::extract_image(&layout, &dest, &Default::default())
                    .map_err(|e| e.to_string())?;
                let (_, m) = layout.manifest().map_err(|e| e.to_string())?;
                layout.config(&m).map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| err(image, e))?
            .map_err(|e| err(image, format!("extracting: {e}")))?
        };
        let mount_us = t1.elapsed().as_micros() as u64;
        Ok(Rootfs {
            path: dest,
            config: image_config(&config),
            fetch_us,
            mount_us,
            guard: Box::new(guard),
        })
    }

    async fn lazy(
        &self,
        image: &str,
        name: &str,
        instance: &str,
        prefetch: bool,
    ) -> Result<Rootfs, SandboxError> {
        let t0 = Instant::now();
        let desc = self.descriptor(image, name).await?;
        let src = Arc::new(RcssBlobSource::new(
            self.source.clone(),
            tokio::runtime::Handle::current(),
        ));
        let mnt = self.cfg.work_dir.join(format!("mnt-{instance}"));
        std::fs::create_dir_all(&mnt).map_err(|e| err(image, e))?;
        let opts = MountOptions {
            cache_bytes: self.cfg.mount_cache_bytes,
            prefetch,
            threads: self.cfg.fuse_threads,
            ..MountOptions::default()
        };
        let (config, fetch_us, mount) = {
            let src = src.clone();
            let mnt = mnt.clone();
            tokio::task::spawn_blocking(move || {
                let layers = lazyfs::load_image(src.as_ref(), &desc, &opts.limits)
                    .map_err(|e| e.to_string())?;
                let mbytes = src
                    .read_at(&desc.digest, 0, desc.size)
                    .map_err(|e| e.to_string())?;
                let m: stratus_image::oci::Manifest =
                    serde_json::from_slice(&mbytes).map_err(|e| e.to_string())?;
                let cbytes = src
                    .read_at(&m.config.digest, 0, m.config.size)
                    .map_err(|e| e.to_string())?;
                stratus_image::oci::check_blob(&m.config, &cbytes).map_err(|e| e.to_string())?;
                let config = ImageConfig(
                    serde_json::from_slice(&cbytes).map_err(|e| format!("config: {e}"))?,
                );
                let fetch_us = t0.elapsed().as_micros() as u64;
                let handle = lazyfs::mount(layers, src, &mnt, &opts).map_err(|e| e.to_string())?;
                Ok::<_, String>((config, fetch_us, handle))
            })
            .await
            .map_err(|e| err(image, e))?
            .map_err(|e| err(image, e))?
        };
        let mount_us = t0.elapsed().as_micros() as u64 - fetch_us;
        let shared: SharedMount = Arc::new(Mutex::new(Some(mount)));
        self.mounts
            .lock()
            .insert(instance.to_string(), shared.clone());
        Ok(Rootfs {
            path: mnt.clone(),
            config: image_config(&config),
            fetch_us,
            mount_us,
            guard: Box::new(Guard {
                mount: Some(shared),
                dirs: vec![mnt],
                mounts: self.mounts.clone(),
                instance: instance.to_string(),
            }),
        })
    }
}

fn image_config(c: &ImageConfig) -> runc::ImageConfig {
    let p = c.process();
    runc::ImageConfig {
        entrypoint: p.entrypoint.unwrap_or_default(),
        cmd: p.cmd.unwrap_or_default(),
        env: p
            .env
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.clone(), String::new()),
            })
            .collect(),
        workdir: p.working_dir.filter(|w| !w.is_empty()),
    }
}

#[async_trait]
impl RootfsProvider for ImageRootfs {
    async fn prepare(&self, image: &str, instance_id: &str) -> Result<Rootfs, SandboxError> {
        if image.starts_with("dir:") {
            return DirRootfs.prepare(image, instance_id).await;
        }
        let Some(name) = image.strip_prefix("rcss:") else {
            return Err(err(
                image,
                "the runc sandbox takes 'rcss:NAME' (an image in the snapshot store) or 'dir:/path'",
            ));
        };
        match self.cfg.mode {
            PullMode::Full => self.full(image, name, instance_id).await,
            PullMode::Lazy => self.lazy(image, name, instance_id, false).await,
            PullMode::LazyPrefetch => self.lazy(image, name, instance_id, true).await,
        }
    }
}
