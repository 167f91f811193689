//! Integration tests: real files, real tar/gzip, real FUSE mounts.

mod fixtures;
mod images;
mod lazy;
