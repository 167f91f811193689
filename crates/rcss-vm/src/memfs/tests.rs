use super::*;
use stratus_snapstore::manifest::MANIFEST_VERSION;
use stratus_snapstore::Digest;

fn chunk(i: u64, zero: bool) -> ChunkRef {
    ChunkRef {
        offset: i * 4096,
        len: 4096,
        digest: (!zero).then(|| Digest::of(&i.to_le_bytes())),
    }
}

#[test]
fn runs_join_adjacent_chunks_up_to_the_piece_limit() {
    let chunks: Vec<ChunkRef> = (0..600).map(|i| chunk(i, false)).collect();
    assert_eq!(runs(&chunks, &[]), Vec::<Range<u64>>::new());
    assert_eq!(runs(&chunks, &[3]), vec![3 * 4096..4 * 4096]);
    assert_eq!(
        runs(&chunks, &[0, 1, 2, 5, 7, 8]),
        vec![0..3 * 4096, 5 * 4096..6 * 4096, 7 * 4096..9 * 4096]
    );
    // 300 adjacent pages split at 1 MiB (256 pages).
    let all: Vec<usize> = (0..300).collect();
    assert_eq!(
        runs(&chunks, &all),
        vec![0..256 * 4096, 256 * 4096..300 * 4096]
    );
}

fn manifest(kind: ManifestKind, size: u64, chunks: Vec<ChunkRef>) -> Manifest {
    Manifest {
        version: MANIFEST_VERSION,
        kind,
        name: "x".into(),
        size,
        chunks,
        annotations: Default::default(),
    }
}

#[test]
fn working_sets_must_name_chunks_of_the_snapshot() {
    let mem = manifest(
        ManifestKind::MemorySnapshot,
        8 * 4096,
        (0..8).map(|i| chunk(i, i % 3 == 0)).collect(),
    );
    mem.validate().unwrap();
    let ws = |chunks: Vec<ChunkRef>| manifest(ManifestKind::WorkingSet, 8 * 4096, chunks);
    let check =
        |w: &Manifest, want: Result<Vec<usize>, &str>| match (working_set_chunks(&mem, w), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{e}"),
            (got, want) => panic!("{got:?} != {want:?}"),
        };
    check(&ws(vec![]), Ok(vec![]));
    check(
        &ws(vec![chunk(5, false), chunk(1, false), chunk(5, false)]),
        Ok(vec![5, 1, 5]),
    );
    // Zero chunks must be zero in the snapshot too.
    check(&ws(vec![chunk(3, true), chunk(2, false)]), Ok(vec![3, 2]));
    check(&ws(vec![chunk(2, true)]), Err("chunk 8192+4096 is not"));
    // Another page's digest, a shifted offset, a short length, past the end.
    check(
        &ws(vec![ChunkRef {
            digest: chunk(2, false).digest,
            ..chunk(1, false)
        }]),
        Err("chunk 4096+4096 is not"),
    );
    check(
        &ws(vec![ChunkRef {
            offset: 4097,
            ..chunk(1, false)
        }]),
        Err("chunk 4097+4096 is not"),
    );
    check(
        &ws(vec![ChunkRef {
            len: 100,
            ..chunk(1, false)
        }]),
        Err("chunk 4096+100 is not"),
    );
    check(&ws(vec![chunk(9, false)]), Err("is not a chunk"));
    // A stored zero page claimed as data.
    check(&ws(vec![chunk(3, false)]), Err("is not a chunk"));
    check(
        &manifest(ManifestKind::WorkingSet, 4096, vec![]),
        Err("4096 bytes of memory, the snapshot has 32768"),
    );
    check(
        &manifest(ManifestKind::Blob, 8 * 4096, vec![]),
        Err("it is a blob manifest"),
    );
}

#[test]
fn bits() {
    let mut b = Bits::new(130);
    assert!(b.insert(0));
    assert!(b.insert(129));
    assert!(!b.insert(129));
    assert!(b.get(0) && b.get(129) && !b.get(64));
}
