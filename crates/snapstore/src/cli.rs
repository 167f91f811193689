//! `stratus snapstore …`: the server and small conveniences over a store.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::backend::{BackendError, ChunkBackend, LocalFsBackend, S3Backend, S3Config};
use crate::chunking::Chunking;
use crate::manifest::{ManifestError, ManifestKind};
use crate::reader::{BlobReader, ReadError};
use crate::remote::{RemoteConfig, RemoteError, RemoteSource};
use crate::server::{bind_and_serve, ServeOptions, ServerError};
use crate::source::ChunkSource;
use crate::store::{ChunkStore, GcOptions, StoreError};

/// A CLI command that failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

/// Which store: a local directory (default) or an S3 bucket.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Store directory (default: ~/.local/state/stratus/snapstore).
    #[arg(long, env = "STRATUS_SNAPSTORE_ROOT", conflicts_with = "s3")]
    pub root: Option<PathBuf>,
    /// S3 bucket instead: s3://BUCKET[/PREFIX].
    #[arg(long)]
    pub s3: Option<String>,
    /// S3 endpoint for a non-AWS server, e.g. http://127.0.0.1:9000.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    #[arg(
        long,
        env = "AWS_ACCESS_KEY_ID",
        default_value = "",
        hide_env_values = true
    )]
    pub s3_access_key: String,
    #[arg(
        long,
        env = "AWS_SECRET_ACCESS_KEY",
        default_value = "",
        hide_env_values = true
    )]
    pub s3_secret_key: String,
}

impl StoreArgs {
    pub fn backend(&self) -> Result<Arc<dyn ChunkBackend>, CliError> {
        if let Some(url) = &self.s3 {
            let mut cfg = S3Config::from_url(url)?;
            cfg.endpoint = self.s3_endpoint.clone();
            cfg.region = self.s3_region.clone();
            cfg.access_key = self.s3_access_key.clone();
            cfg.secret_key = self.s3_secret_key.clone();
            return Ok(Arc::new(S3Backend::new(cfg)?));
        }
        let root = match &self.root {
            Some(r) => r.clone(),
            None => std::env::var_os("HOME")
                .map(PathBuf::from)
                .ok_or_else(|| CliError::Usage("no --root given and HOME is not set".into()))?
                .join(".local/state/stratus/snapstore"),
        };
        Ok(Arc::new(LocalFsBackend::open(root)?))
    }

    pub fn store(&self) -> Result<Arc<ChunkStore>, CliError> {
        Ok(Arc::new(ChunkStore::new(self.backend()?)))
    }
}

#[derive(Subcommand, Debug)]
pub enum SnapstoreCmd {
    /// Serve the store over HTTP (chunks, batches, ranges, manifests) with a bearer token.
    Serve {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, default_value = "127.0.0.1:7070")]
        addr: SocketAddr,
        /// Bearer token clients must send.
        #[arg(long, env = "STRATUS_SNAPSTORE_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// Store a file as a blob: chunks (deduplicated, zeros elided), then its manifest.
    Put {
        #[command(flatten)]
        store: StoreArgs,
        name: String,
        file: PathBuf,
        /// blob, memory-snapshot, working-set, or another kebab-case kind.
        #[arg(long, default_value = "blob")]
        kind: ManifestKind,
        /// Chunk size in bytes (default 512 KiB; 4096 for memory pages).
        #[arg(long, default_value_t = crate::chunking::DEFAULT_CHUNK_SIZE)]
        chunk_size: u32,
        /// KEY=VALUE annotation; repeatable.
        #[arg(long = "annotation", short = 'a')]
        annotations: Vec<String>,
    },
    /// Write a blob's bytes to a file or stdout (verified chunk by chunk).
    Get {
        #[command(flatten)]
        store: StoreArgs,
        name: String,
        /// Output file (default: stdout).
        #[arg(long, short = 'o')]
        out: Option<PathBuf>,
        /// Read from a server instead of the store: http://HOST:PORT.
        #[arg(long)]
        remote: Option<String>,
        #[arg(
            long,
            env = "STRATUS_SNAPSTORE_TOKEN",
            hide_env_values = true,
            default_value = ""
        )]
        token: String,
    },
    /// List manifests with kind, size and chunk count.
    Ls {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete chunks no manifest references.
    Gc {
        #[command(flatten)]
        store: StoreArgs,
        /// Keep unreferenced chunks younger than this (uploads in flight elsewhere).
        #[arg(long, default_value_t = 3600)]
        grace_secs: u64,
        #[arg(long)]
        dry_run: bool,
    },
    /// Deduplication statistics over all manifests, as JSON.
    Stats {
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn io(what: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> CliError {
    let path = path.to_path_buf();
    move |source| CliError::Io { what, path, source }
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub async fn run(cmd: SnapstoreCmd) -> Result<(), CliError> {
    match cmd {
        SnapstoreCmd::Serve { store, addr, token } => {
            let store = store.store()?;
            let shutdown = async {
                let term = async {
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(mut s) => {
                            s.recv().await;
                        }
                        Err(_) => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term => {}
                }
            };
            let opts = ServeOptions {
                token,
                verify: true,
            };
            bind_and_serve(addr, store, opts, shutdown).await?;
            Ok(())
        }
        SnapstoreCmd::Put {
            store,
            name,
            file,
            kind,
            chunk_size,
            annotations,
        } => {
            let mut ann = BTreeMap::new();
            for a in annotations {
                let (k, v) = a.split_once('=').ok_or_else(|| {
                    CliError::Usage(format!("annotation '{a}' must be KEY=VALUE"))
                })?;
                ann.insert(k.to_string(), v.to_string());
            }
            let f = tokio::fs::File::open(&file)
                .await
                .map_err(io("opening", &file))?;
            let out = store
                .store()?
                .put_blob_annotated(&name, kind, ann, f, Chunking::Fixed(chunk_size))
                .await?;
            print_json(&serde_json::json!({
                "name": name,
                "size": out.manifest.size,
                "stats": out.stats,
            }));
            Ok(())
        }
        SnapstoreCmd::Get {
            store,
            name,
            out,
            remote,
            token,
        } => {
            let source: Arc<dyn ChunkSource> = match remote {
                Some(url) => Arc::new(RemoteSource::new(RemoteConfig::new(url, token))?),
                None => store.store()?,
            };
            let reader = BlobReader::open(source, &name).await?;
            let mut w: Box<dyn Write> = match &out {
                Some(p) => Box::new(std::fs::File::create(p).map_err(io("creating", p))?),
                None => Box::new(std::io::stdout()),
            };
            let step = 16u64 << 20;
            let mut at = 0;
            while at < reader.size() {
                let b = reader.read_at(at, step).await?;
                let shown = out.clone().unwrap_or_else(|| PathBuf::from("<stdout>"));
                w.write_all(&b).map_err(io("writing", &shown))?;
                at += b.len() as u64;
            }
            w.flush().map_err(io("writing", &out.unwrap_or_default()))?;
            Ok(())
        }
        SnapstoreCmd::Ls { store } => {
            let store = store.store()?;
            for name in store.list().await? {
                match store.manifest(&name).await {
                    Ok(m) => println!(
                        "{name}\t{}\t{} bytes\t{} chunks",
                        m.kind,
                        m.size,
                        m.chunks.len()
                    ),
                    Err(e) => println!("{name}\tunreadable: {e}"),
                }
            }
            Ok(())
        }
        SnapstoreCmd::Gc {
            store,
            grace_secs,
            dry_run,
        } => {
            let stats = store
                .store()?
                .gc(GcOptions {
                    grace: Duration::from_secs(grace_secs),
                    dry_run,
                })
                .await?;
            print_json(&stats);
            Ok(())
        }
        SnapstoreCmd::Stats { store } => {
            print_json(&store.store()?.dedup_stats().await?);
            Ok(())
        }
    }
}
