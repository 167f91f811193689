//! The sandbox backends of one node, as `stratus up` and `stratus worker`
//! both build them: the same flags ([`NodeArgs`]), the same runc and
//! microVM backends over the same RCSS node caches.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use stratus_sandbox::Sandbox;

/// The node data store's flags: by-reference items (`stratus.dev/data:
/// file`) on `stratus up`, and on `stratus worker` also the workflow items
/// it keeps (`stratus up --workflow-data workers`).
#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// Node data store: bytes of items kept in the memory tier (a tmpfs);
    /// more spill to disk.
    #[arg(long, default_value_t = 2 << 30)]
    pub data_memory_bytes: u64,
    /// Node data store: bytes of items kept on disk; past it a step's
    /// output is refused (507).
    #[arg(long, default_value_t = 32 << 30)]
    pub data_disk_bytes: u64,
    /// Node data store: the disk tier's directory (default: the temporary
    /// directory's stratus-data).
    #[arg(long)]
    pub data_disk_dir: Option<PathBuf>,
    /// Node data store: the memory tier's directory, on a tmpfs (default:
    /// /dev/shm/stratus-data). A tmpfs mounted with `huge=within_size`
    /// backs large items with 2 MiB pages: cheaper to write, map and free.
    #[arg(long)]
    pub data_memory_dir: Option<PathBuf>,
    /// No node data store: stratus.dev/data: file functions get HTTP
    /// bodies, and a worker keeps no workflow items (it answers with the
    /// bodies).
    #[arg(long)]
    pub no_data_store: bool,
}

impl DataArgs {
    /// The store these flags ask for.
    pub fn config(&self) -> Option<stratus_gateway::config::DataConfig> {
        (!self.no_data_store).then(|| {
            let d = stratus_gateway::config::DataConfig::default();
            stratus_gateway::config::DataConfig {
                memory_bytes: self.data_memory_bytes,
                disk_bytes: self.data_disk_bytes,
                disk_dir: self.data_disk_dir.clone().unwrap_or(d.disk_dir.clone()),
                memory_dir: self.data_memory_dir.clone().unwrap_or(d.memory_dir.clone()),
                ..d
            }
        })
    }
}

/// Flags that say how this node runs instances.
#[derive(clap::Args, Debug, Clone)]
pub struct NodeArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Snapshot-store server the runc sandbox pulls `rcss:NAME` images from.
    #[arg(long, env = "STRATUS_SNAPSTORE_URL")]
    pub snapstore: Option<String>,
    /// File holding the bearer token for --snapstore (else
    /// $STRATUS_SNAPSTORE_TOKEN; never a command-line value, which `ps` shows).
    #[arg(long, value_name = "PATH")]
    pub snapstore_token_file: Option<PathBuf>,
    /// A local snapshot-store directory instead of a server.
    #[arg(long)]
    pub snapstore_dir: Option<PathBuf>,
    /// How runc containers get their image: full (pull + extract), lazy, or
    /// prefetch (lazy + landmark prefetch).
    #[arg(long, default_value = "prefetch")]
    pub image_pull: stratus_rcss_image::PullMode,
    /// How microVM functions restore from their memory snapshot unless
    /// annotated (stratus.dev/restore-policy): eager, lazy, working-set,
    /// warm-local.
    #[arg(long, default_value = "working-set")]
    pub restore_policy: stratus_microvm::snapshot::RestorePolicy,
    /// Guest memory of microVM functions, MiB.
    #[arg(long, default_value_t = 256)]
    pub vm_memory_mib: u32,
    /// Node snapshot cache (eager / warm-local restores), bytes.
    #[arg(long, default_value_t = 8 << 30)]
    pub snapshot_cache_bytes: u64,
    /// Node snapshot cache eviction: lru or size (largest first).
    #[arg(long, default_value = "lru")]
    pub snapshot_cache_policy: stratus_rcss_vm::snapcache::EvictionPolicy,
    /// Snapshot keys the node cache never evicts (repeatable).
    #[arg(long = "pin-snapshot")]
    pub pin_snapshot: Vec<String>,
    /// The user process-runtime functions run as when the platform runs as
    /// root: a user name or uid[:gid] (default: nobody). A platform that is
    /// not root runs them as its own user. runc and microVM functions keep
    /// their own isolation.
    #[arg(long, value_name = "USER")]
    pub run_as: Option<String>,
}

/// The runc and microVM backends where this node can run them, and why not
/// where it cannot (the process backend comes from
/// [`stratus_gateway::process_backend`]).
#[derive(Default)]
pub struct Backends {
    pub extra: Vec<Arc<dyn Sandbox>>,
    /// `(runtime, why)` for each backend this node lacks.
    pub unavailable: Vec<(String, String)>,
}

/// Builds the runc and microVM backends with their state under `state_dir`.
pub fn extra_backends(a: &NodeArgs, state_dir: &Path) -> Result<Backends> {
    let snapstore_token = match &a.snapstore_token_file {
        Some(p) => stratus_auth::Token::read_file(p)?.expose().to_string(),
        None => std::env::var("STRATUS_SNAPSTORE_TOKEN").unwrap_or_default(),
    };
    let mut b = Backends {
        extra: Vec::new(),
        unavailable: Vec::new(),
    };
    match stratus_rcss_image::runc_backend(&stratus_rcss_image::RuncBackendOptions {
        state_dir: state_dir.to_path_buf(),
        snapstore_url: a.snapstore.clone(),
        snapstore_token: snapstore_token.clone(),
        snapstore_dir: a.snapstore_dir.clone(),
        pull: a.image_pull,
        cache_memory_bytes: 512 << 20,
        cache_disk_bytes: 8 << 30,
    })? {
        Ok(sb) => b.extra.push(sb),
        Err(why) => {
            eprintln!("runc runtime unavailable: {why}");
            b.unavailable.push(("runc".into(), why));
        }
    }
    match stratus_rcss_vm::vm::microvm_backend(&stratus_rcss_vm::vm::MicrovmBackendOptions {
        state_dir: state_dir.to_path_buf(),
        snapstore_url: a.snapstore.clone(),
        snapstore_token,
        snapstore_dir: a.snapstore_dir.clone(),
        restore_policy: a.restore_policy,
        memory_mib: a.vm_memory_mib,
        cache_bytes: a.snapshot_cache_bytes,
        cache_policy: a.snapshot_cache_policy,
        pinned: a.pin_snapshot.clone(),
        chunk_cache_bytes: 512 << 20,
        extra_path: std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| vec![d.to_path_buf()]))
            .unwrap_or_default(),
    })? {
        Ok(sb) => b.extra.push(sb),
        Err(why) => {
            eprintln!("microvm runtime unavailable: {why}");
            b.unavailable.push(("microvm".into(), why));
        }
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        data: DataArgs,
    }

    #[test]
    fn the_data_store_dirs_come_from_the_flags() {
        let d = stratus_gateway::config::DataConfig::default();
        let c = Args::parse_from(["t"]).data.config().unwrap();
        assert_eq!((c.memory_dir, c.disk_dir), (d.memory_dir, d.disk_dir));
        let c = Args::parse_from([
            "t",
            "--data-memory-dir",
            "/mnt/huge",
            "--data-disk-dir",
            "/d",
        ])
        .data
        .config()
        .unwrap();
        assert_eq!(c.memory_dir, PathBuf::from("/mnt/huge"));
        assert_eq!(c.disk_dir, PathBuf::from("/d"));
        assert!(Args::parse_from(["t", "--no-data-store"])
            .data
            .config()
            .is_none());
    }
}
