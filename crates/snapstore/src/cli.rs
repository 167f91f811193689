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
use crate::server::{bind_and_serve, Limits, ServeOptions, ServerError};
use crate::source::ChunkSource;
use crate::store::{ChunkStore, GcOptions, StoreError};
use stratus_auth::{ConnLimits, Token, TOKEN_ENV};

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
    #[error(transparent)]
    Auth(#[from] stratus_auth::AuthError),
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
        Ok(Arc::new(LocalFsBackend::open(self.root_dir()?)?))
    }

    /// Where a local store keeps its server's token: `ROOT/serve.token`.
    pub fn token_path(&self) -> Result<PathBuf, CliError> {
        if self.s3.is_some() {
            return Err(CliError::Usage(format!(
                "an S3 store has no local token file: pass --token-file or set {TOKEN_ENV}"
            )));
        }
        Ok(self.root_dir()?.join(TOKEN_FILE))
    }

    fn root_dir(&self) -> Result<PathBuf, CliError> {
        match &self.root {
            Some(r) => Ok(r.clone()),
            None => Ok(std::env::var_os("HOME")
                .map(PathBuf::from)
                .ok_or_else(|| CliError::Usage("no --root given and HOME is not set".into()))?
                .join(".local/state/stratus/snapstore")),
        }
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
        /// File holding the bearer token clients must send. Default:
        /// $STRATUS_TOKEN (or $STRATUS_SNAPSTORE_TOKEN), else ROOT/serve.token (created, mode 0600, when
        /// missing; an S3 store needs --token-file or $STRATUS_TOKEN).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Host names (besides IP addresses and localhost) clients may use.
        #[arg(long = "allow-host")]
        allow_hosts: Vec<String>,
        /// Open connections at most.
        #[arg(long, default_value_t = 256)]
        max_connections: usize,
        /// Close a connection on which nothing moved for this many seconds.
        #[arg(long, default_value_t = 60)]
        idle_timeout_secs: u64,
        /// Largest request body, in bytes.
        #[arg(long, default_value_t = crate::server::MAX_BODY_BYTES)]
        max_body_bytes: usize,
        /// Chunk bytes a batch reply reads ahead of its client.
        #[arg(long, default_value_t = 64 << 20)]
        batch_budget: usize,
        /// Seconds for a request body to arrive.
        #[arg(long, default_value_t = 120)]
        body_timeout_secs: u64,
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
        /// The server's token file (default: $STRATUS_TOKEN, else the
        /// serve.token of --root).
        #[arg(long)]
        token_file: Option<PathBuf>,
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

/// The server token's file name in a local store's root.
pub const TOKEN_FILE: &str = "serve.token";

/// The server's token: `--token-file`, else `$STRATUS_TOKEN`, else the
/// store's `serve.token` (created when missing).
fn server_token(store: &StoreArgs, file: Option<&std::path::Path>) -> Result<Token, CliError> {
    let env = token_env();
    if let Some((token, _)) = Token::explicit(file, env.as_deref())? {
        return Ok(token);
    }
    let (token, source) = Token::load_or_create(&store.token_path()?)?;
    eprintln!("snapstore: clients authenticate with {source}");
    Ok(token)
}

/// The older variable, still read after `$STRATUS_TOKEN`.
pub const LEGACY_TOKEN_ENV: &str = "STRATUS_SNAPSTORE_TOKEN";

/// The value of `$STRATUS_TOKEN`, else of `$STRATUS_SNAPSTORE_TOKEN`.
fn token_env() -> Option<String> {
    [TOKEN_ENV, LEGACY_TOKEN_ENV]
        .into_iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
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
        SnapstoreCmd::Serve {
            store,
            addr,
            token_file,
            allow_hosts,
            max_connections,
            idle_timeout_secs,
            max_body_bytes,
            batch_budget,
            body_timeout_secs,
        } => {
            let token = server_token(&store, token_file.as_deref())?;
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
                allow_hosts,
                limits: Limits {
                    max_body_bytes,
                    batch_budget,
                    body_timeout: Duration::from_secs(body_timeout_secs),
                    conn: ConnLimits {
                        max_connections,
                        idle_timeout: Duration::from_secs(idle_timeout_secs),
                    },
                },
                ..ServeOptions::new(token)
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
            token_file,
        } => {
            let source: Arc<dyn ChunkSource> = match remote {
                Some(url) => {
                    let env = token_env();
                    // The store's own file is only the last resort.
                    let default = match (&token_file, &env) {
                        (None, None) => store.token_path()?,
                        _ => PathBuf::new(),
                    };
                    let (token, _) =
                        Token::discover(token_file.as_deref(), env.as_deref(), &default)?;
                    Arc::new(RemoteSource::new(RemoteConfig::new(url, token.expose()))?)
                }
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
