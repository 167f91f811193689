//! Integration tests: real files, real FUSE mounts, and QEMU where it is
//! installed.

mod memfs;
mod snapcache;
