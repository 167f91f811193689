//! Chunks and manifests in an S3-compatible bucket through `object_store`:
//!
//! ```text
//! s3://BUCKET/PREFIX/chunks/ab/abcdef…(64 hex)
//! s3://BUCKET/PREFIX/manifests/img/py/layer0
//! ```
//!
//! S3 PUTs are atomic per object, so no temporary objects are needed; the
//! chunks-first, manifest-last order is [`crate::ChunkStore`]'s. Requests use
//! path-style addressing (local servers such as `s3s-fs` need it), a
//! per-request timeout and `object_store`'s bounded retries.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, PutPayload, RetryConfig};

use super::{check_range, BackendError, ChunkBackend};
use crate::digest::Digest;
use crate::manifest::validate_name;

/// Where the bucket is and how to reach it.
#[derive(Clone, Debug)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix inside the bucket ("" for none).
    pub prefix: String,
    /// `http://127.0.0.1:9000` for a local server; `None` for AWS.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries of a failed request inside `object_store` (0: none).
    pub max_retries: usize,
}

impl S3Config {
    /// Parses `s3://BUCKET[/PREFIX]`; the rest from defaults (region
    /// `us-east-1`, no credentials, 30 s timeout, 3 retries).
    pub fn from_url(url: &str) -> Result<S3Config, BackendError> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            BackendError::Invalid(format!(
                "S3 URL '{url}' must look like s3://BUCKET[/PREFIX]"
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(BackendError::Invalid(format!(
                "S3 URL '{url}' has no bucket"
            )));
        }
        Ok(S3Config {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint: None,
            region: "us-east-1".into(),
            access_key: String::new(),
            secret_key: String::new(),
            timeout: Duration::from_secs(30),
            max_retries: 3,
        })
    }
}

/// An S3-compatible bucket as a chunk backend.
pub struct S3Backend {
    store: Arc<dyn ObjectStore>,
    cfg: S3Config,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl S3Backend {
    pub fn new(cfg: S3Config) -> Result<S3Backend, BackendError> {
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_virtual_hosted_style_request(false)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(50),
                    max_backoff: Duration::from_secs(2),
                    base: 2.0,
                },
                max_retries: cfg.max_retries,
                retry_timeout: cfg.timeout * 4,
            })
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(cfg.timeout)
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_allow_http(true),
            );
        if let Some(ep) = &cfg.endpoint {
            b = b.with_endpoint(ep);
        }
        if cfg.access_key.is_empty() {
            b = b.with_skip_signature(true);
        } else {
            b = b
                .with_access_key_id(&cfg.access_key)
                .with_secret_access_key(&cfg.secret_key);
        }
        let store = b.build().map_err(|e| BackendError::ObjectStore {
            op: "configure",
            what: format!("bucket '{}'", cfg.bucket),
            backend: "S3".into(),
            source: Box::new(e),
        })?;
        Ok(S3Backend {
            store: Arc::new(store),
            cfg,
        })
    }

    fn key(&self, rest: &str) -> Path {
        if self.cfg.prefix.is_empty() {
            Path::from(rest)
        } else {
            Path::from(format!("{}/{rest}", self.cfg.prefix))
        }
    }

    fn chunk_key(&self, d: &Digest) -> Path {
        let hex = d.hex();
        self.key(&format!("chunks/{}/{hex}", &hex[..2]))
    }

    fn manifest_key(&self, name: &str) -> Result<Path, BackendError> {
        validate_name(name).map_err(|e| BackendError::Invalid(e.to_string()))?;
        Ok(self.key(&format!("manifests/{name}")))
    }

    fn err(
        &self,
        op: &'static str,
        what: String,
    ) -> impl FnOnce(object_store::Error) -> BackendError {
        let backend = self.describe();
        move |e| match e {
            object_store::Error::NotFound { .. } => BackendError::NotFound { what, backend },
            e => BackendError::ObjectStore {
                op,
                what,
                backend,
                source: Box::new(e),
            },
        }
    }

    async fn list_under(&self, sub: &str) -> Result<Vec<String>, BackendError> {
        let prefix = self.key(sub);
        let metas: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(self.err("list", sub.to_string()))?;
        let strip = format!("{}/", prefix.as_ref());
        Ok(metas
            .into_iter()
            .filter_map(|m| m.location.as_ref().strip_prefix(&strip).map(str::to_string))
            .collect())
    }
}

#[async_trait]
impl ChunkBackend for S3Backend {
    async fn get(&self, digest: &Digest) -> Result<Bytes, BackendError> {
        let what = format!("chunk {digest}");
        let r = self.store.get(&self.chunk_key(digest)).await;
        let r = r.map_err(self.err("get", what.clone()))?;
        r.bytes().await.map_err(self.err("read", what))
    }

    async fn get_range(&self, digest: &Digest, range: Range<u64>) -> Result<Bytes, BackendError> {
        let what = format!("chunk {digest}");
        let key = self.chunk_key(digest);
        // S3 answers a range past the end with what it has (or 416); check
        // against the size for one clear error.
        let meta = self
            .store
            .head(&key)
            .await
            .map_err(self.err("stat", what.clone()))?;
        check_range(&what, &range, meta.size)?;
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        self.store
            .get_range(&key, range)
            .await
            .map_err(self.err("get range of", what))
    }

    async fn put(&self, digest: &Digest, data: Bytes) -> Result<(), BackendError> {
        self.store
            .put(&self.chunk_key(digest), PutPayload::from(data))
            .await
            .map_err(self.err("put", format!("chunk {digest}")))?;
        Ok(())
    }

    async fn exists(&self, digest: &Digest) -> Result<bool, BackendError> {
        match self.store.head(&self.chunk_key(digest)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err("stat", format!("chunk {digest}"))(e)),
        }
    }

    async fn list(&self) -> Result<Vec<Digest>, BackendError> {
        let mut out: Vec<Digest> = self
            .list_under("chunks")
            .await?
            .iter()
            .filter_map(|k| k.rsplit('/').next().and_then(|h| Digest::from_hex(h).ok()))
            .collect();
        out.sort();
        Ok(out)
    }

    async fn delete(&self, digest: &Digest) -> Result<(), BackendError> {
        match self.store.delete(&self.chunk_key(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", format!("chunk {digest}"))(e)),
        }
    }

    async fn modified(&self, digest: &Digest) -> Result<Option<SystemTime>, BackendError> {
        match self.store.head(&self.chunk_key(digest)).await {
            Ok(m) => Ok(Some(SystemTime::from(m.last_modified))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("stat", format!("chunk {digest}"))(e)),
        }
    }

    async fn put_manifest(&self, name: &str, data: Bytes) -> Result<(), BackendError> {
        let key = self.manifest_key(name)?;
        self.store
            .put(&key, PutPayload::from(data))
            .await
            .map_err(self.err("put", format!("manifest '{name}'")))?;
        Ok(())
    }

    async fn get_manifest(&self, name: &str) -> Result<Bytes, BackendError> {
        let key = self.manifest_key(name)?;
        let what = format!("manifest '{name}'");
        let r = self
            .store
            .get(&key)
            .await
            .map_err(self.err("get", what.clone()))?;
        r.bytes().await.map_err(self.err("read", what))
    }

    async fn list_manifests(&self) -> Result<Vec<String>, BackendError> {
        let mut out: Vec<String> = self
            .list_under("manifests")
            .await?
            .into_iter()
            .filter(|n| validate_name(n).is_ok())
            .collect();
        out.sort();
        Ok(out)
    }

    async fn delete_manifest(&self, name: &str) -> Result<(), BackendError> {
        let key = self.manifest_key(name)?;
        match self.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", format!("manifest '{name}'"))(e)),
        }
    }

    fn describe(&self) -> String {
        let ep = self.cfg.endpoint.as_deref().unwrap_or("AWS");
        if self.cfg.prefix.is_empty() {
            format!("s3://{} at {ep}", self.cfg.bucket)
        } else {
            format!("s3://{}/{} at {ep}", self.cfg.bucket, self.cfg.prefix)
        }
    }
}
