//! Container images served from the RCSS chunk store. It ties three crates
//! together without them knowing each other:
//!
//! ```text
//!  stratus-image (OCI layout, eStargz, lazyfs) ──BlobSource──► RcssBlobSource ──► ChunkSource
//!                                                               (this crate)      (snapstore: TieredCache → RemoteSource)
//!  stratus-sandbox::runc ──RootfsProvider──► ImageRootfs: full pull + extract | lazy FUSE mount
//! ```
//!
//! - [`publish`] puts every blob of an OCI image layout into the chunk store
//!   as a blob named `blobs/sha256:<hex>`, then an image manifest
//!   `images/<name>` (kind `oci-image`) pointing at the OCI manifest.
//! - [`RcssBlobSource`] serves `stratus-image`'s synchronous `BlobSource`
//!   from any `ChunkSource` (verified chunks, tiered cache).
//! - [`ImageRootfs`] prepares a container rootfs for `image: rcss:NAME`
//!   (and `dir:/path`) in one of three [`PullMode`]s.
//! - [`runc_backend`] builds the node's runc sandbox over all of that.

mod publish;
mod rootfs;
mod runc_backend;
mod source;

pub use publish::{blob_name, image_manifest_name, publish, PublishStats};
pub use rootfs::{ImageRootfs, PullMode, RootfsConfig, StartRecord};
pub use runc_backend::{runc_backend, RuncBackendOptions};
pub use source::RcssBlobSource;

/// A boxed error from another crate, kept as this error's source.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image layout {path}: {message}")]
    Layout { path: String, message: String },
    #[error("image layout {path}")]
    LayoutRead {
        path: String,
        #[source]
        source: BoxError,
    },
    #[error("snapshot store: {what}")]
    Store {
        what: String,
        #[source]
        source: BoxError,
    },
    #[error("image '{image}': {message}")]
    Image { image: String, message: String },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    fn store(what: impl Into<String>, e: impl Into<BoxError>) -> ImageError {
        ImageError::Store {
            what: what.into(),
            source: e.into(),
        }
    }
}
