//! The CLI conveniences, called in-process.

use stratus_snapstore::cli::{run, SnapstoreCmd, StoreArgs};

use crate::support::noise;

fn store_args(root: &std::path::Path) -> StoreArgs {
    StoreArgs {
        root: Some(root.into()),
        s3: None,
        s3_endpoint: None,
        s3_region: "us-east-1".into(),
        s3_access_key: String::new(),
        s3_secret_key: String::new(),
    }
}

#[tokio::test]
async fn put_get_ls_gc_stats() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let input = dir.path().join("in.bin");
    let mut data = noise(1, 300_000);
    data.extend(vec![0u8; 200_000]);
    std::fs::write(&input, &data).unwrap();
    run(SnapstoreCmd::Put {
        store: store_args(&root),
        name: "files/in".into(),
        file: input.clone(),
        kind: "memory-snapshot".parse().unwrap(),
        chunk_size: 4096,
        annotations: vec!["fn=echo".into()],
    })
    .await
    .unwrap();
    let out = dir.path().join("out.bin");
    run(SnapstoreCmd::Get {
        store: store_args(&root),
        name: "files/in".into(),
        out: Some(out.clone()),
        remote: None,
        token_file: None,
    })
    .await
    .unwrap();
    crate::support::same(&std::fs::read(&out).unwrap(), &data);
    run(SnapstoreCmd::Ls {
        store: store_args(&root),
    })
    .await
    .unwrap();
    run(SnapstoreCmd::Stats {
        store: store_args(&root),
    })
    .await
    .unwrap();
    run(SnapstoreCmd::Gc {
        store: store_args(&root),
        grace_secs: 0,
        dry_run: false,
    })
    .await
    .unwrap();
    let e = run(SnapstoreCmd::Put {
        store: store_args(&root),
        name: "x".into(),
        file: input,
        kind: "blob".parse().unwrap(),
        chunk_size: 4096,
        annotations: vec!["novalue".into()],
    })
    .await
    .unwrap_err();
    assert!(e.to_string().contains("KEY=VALUE"), "{e}");
    let e = run(SnapstoreCmd::Get {
        store: store_args(&root),
        name: "nope".into(),
        out: Some(out),
        remote: None,
        token_file: None,
    })
    .await
    .unwrap_err();
    assert!(format!("{e:?}").contains("nope"), "{e:?}");
}
