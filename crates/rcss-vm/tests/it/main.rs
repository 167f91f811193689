//! Integration tests: real files, real FUSE mounts, and QEMU where it is
//! installed.

mod memfs;
mod snapcache;

use std::time::{Duration, Instant};

/// Polls `cond` until it holds; panics with `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
