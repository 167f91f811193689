//! [`RemoteSource`]: the node-side HTTP client of the RCSS server.
//!
//! Every request has a timeout; failures that may pass (connection errors,
//! timeouts, 5xx) are retried with exponential backoff and full jitter
//! ([`crate::backoff`]) up to [`RemoteConfig::max_attempts`], then reported
//! with the chunk and the attempt count. Chunks are verified against their
//! digests here, whatever the server did.
//!
//! The client shares only [`crate::wire`] with the server. Its own failures
//! are [`RemoteError`]s, which convert into [`SourceError::Other`].

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::backoff::Backoff;
use crate::digest::Digest;
use crate::manifest::Manifest;
use crate::source::{verify_all, ChunkSource, SourceError};
use crate::wire::{self, BatchRequest, Status, BATCH_CONTENT_TYPE};

/// Why the last attempt of a request failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteCause {
    #[error("request failed")]
    Http(#[source] reqwest::Error),
    #[error("server answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("the server could not read chunk {digest}: {message}")]
    Chunk { digest: Digest, message: String },
}

/// A request to the RCSS server that failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{what} from {url} failed after {attempts} attempt(s)")]
    Failed {
        what: String,
        url: String,
        attempts: u32,
        #[source]
        cause: RemoteCause,
    },
    #[error("{url} refused the bearer token (401)")]
    Unauthorized { url: String },
    #[error("{what} from {url}: the server could not serve chunk {digest}: {message}")]
    Refused {
        what: String,
        url: String,
        digest: Digest,
        message: String,
    },
    #[error("{what} from {url}: malformed response: {detail}")]
    Protocol {
        what: String,
        url: String,
        detail: String,
    },
    #[error("building the HTTP client")]
    Client(#[source] reqwest::Error),
}

impl From<RemoteError> for SourceError {
    fn from(e: RemoteError) -> SourceError {
        SourceError::other(e)
    }
}

/// Where the server is and how hard to try.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub token: String,
    /// Per request, from sending to the whole body read.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Tries per request (1: no retry).
    pub max_attempts: u32,
    /// Ceiling of the first retry's delay; doubles per retry up to
    /// `max_backoff`. Each delay is drawn uniformly below its ceiling.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Seed of the retry jitter (`None`: from the clock, so that nodes
    /// differ). Tests set it to get the same delays every run.
    pub jitter_seed: Option<u64>,
    /// Digests per batch request.
    pub batch_size: usize,
    /// Batch requests in flight per `fetch`.
    pub parallel_batches: usize,
}

impl RemoteConfig {
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> RemoteConfig {
        RemoteConfig {
            url: url.into().trim_end_matches('/').to_string(),
            token: token.into(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(3),
            max_attempts: 4,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            jitter_seed: None,
            batch_size: 128,
            parallel_batches: 4,
        }
    }
}

/// Counters of what crossed the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RemoteStats {
    pub requests: u64,
    pub retries: u64,
    pub chunks_fetched: u64,
    pub bytes_fetched: u64,
}

/// The RCSS HTTP client.
pub struct RemoteSource {
    client: reqwest::Client,
    cfg: RemoteConfig,
    jitter: Mutex<ChaCha8Rng>,
    requests: AtomicU64,
    retries: AtomicU64,
    chunks: AtomicU64,
    bytes: AtomicU64,
}

enum Fail {
    Retry(RemoteCause),
    Fatal(SourceError),
}

impl RemoteSource {
    pub fn new(cfg: RemoteConfig) -> Result<RemoteSource, RemoteError> {
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(RemoteError::Client)?;
        let seed = cfg.jitter_seed.unwrap_or_else(clock_seed);
        Ok(RemoteSource {
            client,
            jitter: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            cfg,
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            chunks: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &RemoteConfig {
        &self.cfg
    }

    pub fn stats(&self) -> RemoteStats {
        RemoteStats {
            requests: self.requests.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            chunks_fetched: self.chunks.load(Ordering::Relaxed),
            bytes_fetched: self.bytes.load(Ordering::Relaxed),
        }
    }

    /// Runs `send` until it succeeds, fails for good, or attempts run out.
    async fn retrying<T, F, Fut>(&self, what: &str, send: F) -> Result<T, SourceError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, Fail>>,
    {
        let mut backoff = Backoff::new(self.cfg.backoff, self.cfg.max_backoff);
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.requests.fetch_add(1, Ordering::Relaxed);
            match send().await {
                Ok(v) => return Ok(v),
                Err(Fail::Fatal(e)) => return Err(e),
                Err(Fail::Retry(cause)) if attempt >= self.cfg.max_attempts.max(1) => {
                    return Err(RemoteError::Failed {
                        what: what.to_string(),
                        url: self.cfg.url.clone(),
                        attempts: attempt,
                        cause,
                    }
                    .into())
                }
                Err(Fail::Retry(cause)) => {
                    tracing::debug!(what, attempt, error = %cause, "retrying");
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    let delay = backoff.next_delay(&mut *self.jitter.lock());
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Sends a request and reads the body; classifies failures.
    async fn exchange(&self, req: reqwest::RequestBuilder) -> Result<(u16, Bytes), Fail> {
        let resp = req
            .bearer_auth(&self.cfg.token)
            .send()
            .await
            .map_err(|e| Fail::Retry(RemoteCause::Http(e)))?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| Fail::Retry(RemoteCause::Http(e)))?;
        if status == 401 {
            return Err(Fail::Fatal(
                RemoteError::Unauthorized {
                    url: self.cfg.url.clone(),
                }
                .into(),
            ));
        }
        if status >= 500 {
            return Err(Fail::Retry(RemoteCause::Status {
                status,
                message: message_of(&body),
            }));
        }
        Ok((status, body))
    }

    fn fatal_status(&self, what: &str, status: u16, body: &[u8]) -> Fail {
        if status == 404 {
            return Fail::Fatal(SourceError::NotFound {
                what: what.to_string(),
                origin: self.cfg.url.clone(),
            });
        }
        Fail::Fatal(
            RemoteError::Failed {
                what: what.to_string(),
                url: self.cfg.url.clone(),
                attempts: 1,
                cause: RemoteCause::Status {
                    status,
                    message: message_of(body),
                },
            }
            .into(),
        )
    }

    /// One batch request (`digests` distinct), verified.
    async fn fetch_batch(&self, digests: &[Digest]) -> Result<Vec<Bytes>, SourceError> {
        let what = match digests {
            [d] => format!("chunk {d}"),
            [d, ..] => format!("batch of {} chunks (first {d})", digests.len()),
            [] => return Ok(Vec::new()),
        };
        let url = format!("{}/v1/chunks/batch", self.cfg.url);
        let body = serde_json::to_vec(&BatchRequest {
            digests: digests.to_vec(),
        })
        .unwrap_or_default();
        let body = Bytes::from(body);
        let resp = self
            .retrying(&what, || async {
                let (status, b) = self
                    .exchange(
                        self.client
                            .post(&url)
                            .header("content-type", "application/json")
                            .header("accept", BATCH_CONTENT_TYPE)
                            .body(body.clone()),
                    )
                    .await?;
                if status != 200 {
                    return Err(self.fatal_status(&what, status, &b));
                }
                // A body cut short by a dying server is worth another try.
                match wire::decode(&b) {
                    Ok(recs) if recs.len() < digests.len() => {
                        Err(Fail::Retry(RemoteCause::Status {
                            status,
                            message: format!("{} of {} records", recs.len(), digests.len()),
                        }))
                    }
                    Err(wire::WireError::Truncated { .. }) => {
                        Err(Fail::Retry(RemoteCause::Status {
                            status,
                            message: "truncated batch body".into(),
                        }))
                    }
                    Ok(recs) => match recs.iter().find(|r| r.status == Status::Error) {
                        // The store behind the server failed (e.g. S3 down): may pass.
                        Some(r) => Err(Fail::Retry(RemoteCause::Chunk {
                            digest: r.digest,
                            message: String::from_utf8_lossy(&r.payload)
                                .chars()
                                .take(500)
                                .collect(),
                        })),
                        None => Ok(recs),
                    },
                    Err(e) => Err(Fail::Fatal(
                        RemoteError::Protocol {
                            what: what.clone(),
                            url: self.cfg.url.clone(),
                            detail: e.to_string(),
                        }
                        .into(),
                    )),
                }
            })
            .await?;
        if resp.len() != digests.len() {
            return Err(RemoteError::Protocol {
                what,
                url: self.cfg.url.clone(),
                detail: format!("{} records for {} digests", resp.len(), digests.len()),
            }
            .into());
        }
        let mut items = Vec::with_capacity(digests.len());
        for (want, rec) in digests.iter().zip(resp) {
            if rec.digest != *want {
                return Err(RemoteError::Protocol {
                    what,
                    url: self.cfg.url.clone(),
                    detail: format!("record for {} where {want} was expected", rec.digest),
                }
                .into());
            }
            match rec.status {
                Status::Ok => items.push((*want, rec.payload)),
                Status::NotFound => {
                    return Err(SourceError::NotFound {
                        what: format!("chunk {want}"),
                        origin: self.cfg.url.clone(),
                    })
                }
                Status::Corrupt | Status::Error => {
                    // Corrupt on the server: retrying cannot help.
                    return Err(RemoteError::Refused {
                        what,
                        url: self.cfg.url.clone(),
                        digest: *want,
                        message: String::from_utf8_lossy(&rec.payload)
                            .chars()
                            .take(500)
                            .collect(),
                    }
                    .into());
                }
            }
        }
        verify_all(&items, &self.cfg.url).await?;
        self.chunks.fetch_add(items.len() as u64, Ordering::Relaxed);
        self.bytes.fetch_add(
            items.iter().map(|(_, b)| b.len() as u64).sum(),
            Ordering::Relaxed,
        );
        Ok(items.into_iter().map(|(_, b)| b).collect())
    }

    /// Bytes `range` of a chunk (`GET` with `Range`). A partial chunk cannot
    /// be hashed here: this relies on the server's verification.
    pub async fn get_range(
        &self,
        digest: &Digest,
        range: Range<u64>,
    ) -> Result<Bytes, SourceError> {
        let what = format!("chunk {digest} bytes {}..{}", range.start, range.end);
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let url = format!("{}/v1/chunks/{digest}", self.cfg.url);
        let hdr = format!("bytes={}-{}", range.start, range.end - 1);
        let b = self
            .retrying(&what, || async {
                let (status, b) = self
                    .exchange(self.client.get(&url).header("range", &hdr))
                    .await?;
                match status {
                    206 => Ok(b),
                    _ => Err(self.fatal_status(&what, status, &b)),
                }
            })
            .await?;
        if b.len() as u64 != range.end - range.start {
            return Err(RemoteError::Protocol {
                what,
                url: self.cfg.url.clone(),
                detail: format!("{} bytes returned", b.len()),
            }
            .into());
        }
        self.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
        Ok(b)
    }

    /// Uploads a chunk (the server checks the digest); `true` if it was new.
    pub async fn put_chunk(&self, digest: &Digest, data: Bytes) -> Result<bool, SourceError> {
        let what = format!("upload of chunk {digest}");
        let url = format!("{}/v1/chunks/{digest}", self.cfg.url);
        self.retrying(&what, || async {
            let (status, b) = self
                .exchange(self.client.put(&url).body(data.clone()))
                .await?;
            match status {
                201 => Ok(true),
                200 => Ok(false),
                _ => Err(self.fatal_status(&what, status, &b)),
            }
        })
        .await
    }

    /// Uploads a manifest; every chunk it names must be on the server.
    pub async fn put_manifest(&self, m: &Manifest) -> Result<(), SourceError> {
        let what = format!("upload of manifest '{}'", m.name);
        let url = format!("{}/v1/manifests/{}", self.cfg.url, m.name);
        let body = Bytes::from(m.to_json());
        self.retrying(&what, || async {
            let (status, b) = self
                .exchange(self.client.put(&url).body(body.clone()))
                .await?;
            match status {
                200 | 201 => Ok(()),
                _ => Err(self.fatal_status(&what, status, &b)),
            }
        })
        .await
    }

    /// Names of the manifests on the server.
    pub async fn list_manifests(&self) -> Result<Vec<String>, SourceError> {
        let url = format!("{}/v1/manifests", self.cfg.url);
        let what = "manifest list";
        let b = self
            .retrying(what, || async {
                let (status, b) = self.exchange(self.client.get(&url)).await?;
                match status {
                    200 => Ok(b),
                    _ => Err(self.fatal_status(what, status, &b)),
                }
            })
            .await?;
        #[derive(serde::Deserialize)]
        struct L {
            manifests: Vec<String>,
        }
        serde_json::from_slice::<L>(&b)
            .map(|l| l.manifests)
            .map_err(|e| {
                RemoteError::Protocol {
                    what: what.into(),
                    url: self.cfg.url.clone(),
                    detail: e.to_string(),
                }
                .into()
            })
    }
}

/// A jitter seed that differs between processes and between clients.
fn clock_seed() -> u64 {
    static CLIENTS: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32) ^ CLIENTS.fetch_add(1, Ordering::Relaxed)
}

fn message_of(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct E {
        error: String,
    }
    match serde_json::from_slice::<E>(body) {
        Ok(e) => e.error,
        Err(_) => String::from_utf8_lossy(body).chars().take(500).collect(),
    }
}

#[async_trait]
impl ChunkSource for RemoteSource {
    async fn fetch(&self, digests: &[Digest]) -> Result<Vec<Bytes>, SourceError> {
        let mut distinct = digests.to_vec();
        distinct.sort();
        distinct.dedup();
        let groups: Vec<Vec<Digest>> = distinct
            .chunks(self.cfg.batch_size.max(1))
            .map(<[Digest]>::to_vec)
            .collect();
        let batches: Vec<Vec<Bytes>> = stream::iter(groups)
            .map(|b| async move { self.fetch_batch(&b).await })
            .buffered(self.cfg.parallel_batches.max(1))
            .try_collect()
            .await?;
        let got: Vec<Bytes> = batches.into_iter().flatten().collect();
        Ok(digests
            .iter()
            .map(|d| got[distinct.binary_search(d).unwrap_or_default()].clone())
            .collect())
    }

    async fn manifest(&self, name: &str) -> Result<Manifest, SourceError> {
        let what = format!("manifest '{name}'");
        let url = format!("{}/v1/manifests/{name}", self.cfg.url);
        let b = self
            .retrying(&what, || async {
                let (status, b) = self.exchange(self.client.get(&url)).await?;
                match status {
                    200 => Ok(b),
                    _ => Err(self.fatal_status(&what, status, &b)),
                }
            })
            .await?;
        let m = Manifest::from_json(&b).map_err(|source| SourceError::Manifest {
            name: name.into(),
            origin: self.cfg.url.clone(),
            source,
        })?;
        if m.name != name {
            return Err(RemoteError::Protocol {
                what,
                url: self.cfg.url.clone(),
                detail: format!("the server sent manifest '{}'", m.name),
            }
            .into());
        }
        Ok(m)
    }
}
