//! Container images end to end: build an OCI image, convert it to eStargz,
//! publish it into a real snapshot-store server, and run it in runc
//! containers whose rootfs is pulled whole or mounted lazily over FUSE.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use stratus_embedded::Embedded;
use stratus_image::build::BuildOptions;
use stratus_image::convert::ConvertOptions;
use stratus_image::oci::ProcessConfig;
use stratus_rcss_image::{ImageRootfs, PullMode, RootfsConfig};
use stratus_sandbox::runc::{RuncConfig, RuncSandbox};
use stratus_snapstore::{
    CacheConfig, ChunkSource, ChunkStore, Chunking, LocalFsBackend, RemoteConfig, RemoteSource,
    ServeOptions, TieredCache,
};

use crate::runc::stratus_rootfs;
use crate::*;

const TOKEN: &str = "images-test-token";

fn fuse_runc_or_skip() -> bool {
    let ok = unsafe { libc::geteuid() } == 0
        && Path::new("/dev/fuse").exists()
        && RuncSandbox::available(Path::new("runc")).is_ok();
    if !ok {
        let why = "image tests need root, /dev/fuse and runc";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why}");
        }
        eprintln!("SKIPPED: {why}");
    }
    ok
}

/// Builds the `stratus fn echo` image and its eStargz conversion.
fn build_images(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let rootfs = dir.join("rootfs");
    stratus_rootfs(&rootfs);
    std::fs::write(rootfs.join("etc/greeting"), "hello from the image\n").unwrap();
    let plain = dir.join("plain");
    stratus_image::build::build(
        &rootfs,
        &plain,
        &BuildOptions {
            process: ProcessConfig {
                entrypoint: Some(vec!["/bin/stratus".into(), "fn".into()]),
                cmd: Some(vec!["echo".into()]),
                env: vec!["FROM_IMAGE=yes".into()],
                ..Default::default()
            },
            mtime: Some(0),
            root_owned: true,
            ..Default::default()
        },
    )
    .unwrap();
    let esgz = dir.join("estargz");
    stratus_image::convert::convert(
        &plain,
        &esgz,
        &ConvertOptions {
            prioritized: vec!["bin/stratus".into()],
            ..Default::default()
        },
    )
    .unwrap();
    (plain, esgz)
}

struct Remote {
    url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve_store(store: Arc<ChunkStore>) -> Remote {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(stratus_snapstore::server::serve(
        listener,
        store,
        ServeOptions::new(stratus_snapstore::Token::parse(TOKEN, "test").unwrap()),
        async {
            let _ = rx.await;
        },
    ));
    Remote { url, _stop: tx }
}

fn runc_with(
    state: &Path,
    mode: PullMode,
    source: Arc<dyn ChunkSource>,
) -> (Arc<RuncSandbox>, Arc<ImageRootfs>) {
    let images = Arc::new(ImageRootfs::new(
        source,
        RootfsConfig::new(state.join(format!("work-{}", mode.name())), mode),
    ));
    let sb = Arc::new(RuncSandbox::new(
        RuncConfig {
            runc: "runc".into(),
            state_root: state.join("runc"),
            bundle_dir: state.join("bundles"),
            stop_grace: Duration::from_millis(500),
        },
        images.clone(),
    ));
    (sb, images)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn published_image_runs_full_pulled_and_lazily_mounted() {
    if !fuse_runc_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (plain, esgz) = build_images(dir.path());
    let store = Arc::new(ChunkStore::new(Arc::new(
        LocalFsBackend::open(dir.path().join("store")).unwrap(),
    )));
    let chunking = Chunking::default();
    let a = stratus_rcss_image::publish(&store, &plain, "echo-plain", chunking)
        .await
        .unwrap();
    let b = stratus_rcss_image::publish(&store, &esgz, "echo", chunking)
        .await
        .unwrap();
    assert_eq!(a.blobs, 3);
    assert_eq!(b.blobs, 3);
    // Publishing again stores nothing new.
    let again = stratus_rcss_image::publish(&store, &esgz, "echo", chunking)
        .await
        .unwrap();
    assert_eq!(again.blobs_present, 3);
    let remote = serve_store(store.clone()).await;

    for (mode, image) in [
        (PullMode::Full, "echo-plain"),
        (PullMode::Full, "echo"),
        (PullMode::Lazy, "echo"),
        (PullMode::LazyPrefetch, "echo"),
    ] {
        let rs = Arc::new(RemoteSource::new(RemoteConfig::new(&remote.url, TOKEN)).unwrap());
        let cache = Arc::new(TieredCache::new(rs, CacheConfig::default()).unwrap());
        let state = dir.path().join(format!("state-{}-{image}", mode.name()));
        let (sb, images) = runc_with(&state, mode, cache.clone());
        let p = Embedded::start_with_sandboxes(config(), vec![sb])
            .await
            .unwrap();
        let yaml = format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: img\nspec:\n  template:\n    metadata:\n      annotations:\n        stratus.dev/runtime: runc\n    spec:\n      containers:\n        - image: rcss:{image}\n---\n"
        );
        deploy_ok(&p, &yaml).await;
        let r = invoke(&p, "img", &b"payload through an image"[..]).await;
        assert_eq!(
            r.status,
            200,
            "{} {image}: {}",
            mode.name(),
            r.error_message()
        );
        assert_eq!(r.text(), "payload through an image");
        let fetched = cache.stats().remote_bytes;
        assert!(fetched > 0, "{}: nothing fetched", mode.name());
        if mode != PullMode::Full {
            // The lazy mount recorded what the start read: the binary at least.
            let rec: Vec<String> = images
                .records()
                .into_iter()
                .flat_map(|(_, r)| r.files)
                .collect();
            assert!(
                rec.iter().any(|f| f == "bin/stratus"),
                "{}: recorded {rec:?}",
                mode.name()
            );
        }
        p.stop().await;
        // Stop released every mount and extraction.
        let work = state.join(format!("work-{}", mode.name()));
        let left: Vec<_> = std::fs::read_dir(&work).unwrap().flatten().collect();
        assert!(left.is_empty(), "{}: left {left:?}", mode.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_and_bad_images_fail_clearly() {
    if !fuse_runc_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ChunkStore::new(Arc::new(
        LocalFsBackend::open(dir.path().join("store")).unwrap(),
    )));
    let (sb, _) = runc_with(dir.path(), PullMode::Lazy, store);
    let p = Embedded::start_with_sandboxes(config(), vec![sb])
        .await
        .unwrap();
    for (image, want) in [
        ("rcss:nope", "image 'rcss:nope': not in the snapshot store"),
        ("docker.io/library/python", "takes 'rcss:NAME'"),
    ] {
        let yaml = format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: bad\nspec:\n  template:\n    metadata:\n      annotations:\n        stratus.dev/runtime: runc\n    spec:\n      containers:\n        - image: {image}\n---\n"
        );
        deploy_ok(&p, &yaml).await;
        let r = invoke(&p, "bad", &b"x"[..]).await;
        assert!(r.status >= 500);
        assert!(r.error_message().contains(want), "{}", r.error_message());
    }
    p.stop().await;
}
