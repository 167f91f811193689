//! Tests of the eStargz reader, writer and TOC validation.

use super::*;
use flate2::Compression;

#[test]
fn footer_roundtrip_and_nasty_footers() {
    for off in [0u64, 1, 0x1234_5678_9abc, u64::MAX] {
        let f = footer(off);
        assert_eq!(parse_footer(&f).unwrap(), off);
        // A footer is a valid, empty gzip member.
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&f[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out.is_empty());
    }
    let f = footer(42);
    assert!(matches!(
        parse_footer(&f[..50]),
        Err(EstargzError::FooterSize(50))
    ));
    let mut bad = f;
    bad[33] = b'X';
    assert!(matches!(
        parse_footer(&bad),
        Err(EstargzError::FooterFormat(_))
    ));
    let mut bad = f;
    bad[20] = b'g';
    assert!(matches!(
        parse_footer(&bad),
        Err(EstargzError::FooterFormat(_))
    ));
    let mut bad = f;
    bad[50] = 1;
    assert!(matches!(
        parse_footer(&bad),
        Err(EstargzError::FooterFormat(_))
    ));
    let mut bad = f;
    bad[12] = b'X';
    assert!(matches!(
        parse_footer(&bad),
        Err(EstargzError::FooterFormat(_))
    ));
}

#[test]
fn times() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_566_297_043), "2019-08-20T10:30:43Z");
    for t in [
        0u64,
        951_782_400,
        1_566_297_043,
        4_102_444_800,
        253_402_300_799,
    ] {
        assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
    }
    assert_eq!(
        parse_rfc3339("2019-08-20T12:30:43+02:00"),
        Some(1_566_297_043)
    );
    assert_eq!(
        parse_rfc3339("2019-08-20T10:30:43.123Z"),
        Some(1_566_297_043)
    );
    for bad in [
        "",
        "2019-08-20",
        "2019-13-20T10:30:43Z",
        "2019-08-20T10:30:43",
        "1969-12-31T23:59:59Z",
        "2019-08-20T10:30:43Zx",
        "२०१९-08-20T10:30:43Z",
    ] {
        assert_eq!(parse_rfc3339(bad), None, "{bad}");
    }
}

fn blob(files: &[(&str, Vec<u8>)], chunk_size: u64, prio: bool) -> (Vec<u8>, BlobInfo) {
    let mut w = Writer::new(
        Vec::new(),
        WriteOptions {
            chunk_size,
            level: Compression::fast(),
        },
    );
    w.append(&EntryMeta::new("d", Kind::Dir), &mut io::empty())
        .unwrap();
    for (i, (name, data)) in files.iter().enumerate() {
        let mut m = EntryMeta::new(name, Kind::Reg);
        m.size = data.len() as u64;
        w.append(&m, &mut &data[..]).unwrap();
        if prio && i == 0 {
            w.append_landmark(true).unwrap();
        }
    }
    let (info, out) = w.finish().unwrap();
    (out, info)
}

fn toc_of(b: &[u8]) -> Result<(ParsedToc, String)> {
    read_toc(b.len() as u64, &TocLimits::default(), |off, len| {
        b.get(off as usize..(off + len) as usize)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
    })
}

fn file_bytes(b: &[u8], p: &ParsedToc, name: &str) -> Vec<u8> {
    let i = p
        .toc
        .entries
        .iter()
        .position(|e| e.name == name && e.kind == EntryType::Reg)
        .unwrap();
    let mut out = Vec::new();
    for s in &p.chunks[&i] {
        out.extend(decode_chunk(s, &b[s.blob_offset as usize..s.blob_end as usize]).unwrap());
    }
    out
}

#[test]
fn writes_a_valid_tar_gz_with_a_readable_toc() {
    let big: Vec<u8> = (0..10_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let files = vec![
        ("d/a", b"hello".to_vec()),
        ("d/big", big.clone()),
        ("d/empty", vec![]),
    ];
    let (b, info) = blob(&files, 4096, true);
    assert_eq!(info.digest, digest::sha256(&b));
    // An ordinary gzip reader sees one tar with every file.
    let mut tar = Vec::new();
    flate2::read::MultiGzDecoder::new(&b[..])
        .read_to_end(&mut tar)
        .unwrap();
    assert_eq!(digest::sha256(&tar), info.diff_id);
    let mut names = Vec::new();
    tarfmt::for_each_entry(&tar[..], tarfmt::TarLimits::default(), |m, r| {
        let mut d = Vec::new();
        r.read_to_end(&mut d).unwrap();
        if let Some((_, want)) = files.iter().find(|(n, _)| *n == m.name) {
            assert_eq!(&d, want, "{}", m.name);
        }
        names.push(m.name.clone());
        Ok(())
    })
    .unwrap();
    assert_eq!(
        names,
        ["d", "d/a", PREFETCH_LANDMARK, "d/big", "d/empty", TOC_NAME]
    );
    let (p, toc_digest) = toc_of(&b).unwrap();
    assert_eq!(toc_digest, info.toc_digest);
    assert_eq!(p.toc_offset, info.toc_offset);
    assert_eq!(file_bytes(&b, &p, "d/big"), big);
    assert_eq!(file_bytes(&b, &p, "d/a"), b"hello");
    let big_i = p
        .toc
        .entries
        .iter()
        .position(|e| e.name == "d/big")
        .unwrap();
    assert_eq!(p.chunks[&big_i].len(), 10);
    assert_eq!(p.toc.entries[big_i].digest, digest::sha256(&big));
    let range = p.prefetch_range().unwrap();
    let a = p.toc.entries.iter().find(|e| e.name == "d/a").unwrap();
    assert!(a.offset < range.end);
    assert!(p.toc.entries.iter().all(|e| e.name != NO_PREFETCH_LANDMARK));
    let (_, info2) = blob(&files, 4096, true);
    assert_eq!(info, info2, "output is deterministic");
    let (b3, _) = blob(&files, 4096, false);
    let (p3, _) = toc_of(&b3).unwrap();
    assert!(p3.prefetch_range().is_none());
    assert!(p3
        .toc
        .entries
        .iter()
        .any(|e| e.name == NO_PREFETCH_LANDMARK));
}

#[test]
fn rejects_corrupt_chunks() {
    let (b, _) = blob(&[("d/a", vec![7u8; 3000])], 1024, false);
    let (p, _) = toc_of(&b).unwrap();
    let i = p.toc.entries.iter().position(|e| e.name == "d/a").unwrap();
    let s = &p.chunks[&i][1];
    let mut member = b[s.blob_offset as usize..s.blob_end as usize].to_vec();
    let mut forged = s.clone();
    forged.digest = digest::sha256(b"other");
    assert!(matches!(
        decode_chunk(&forged, &member),
        Err(EstargzError::Digest(_))
    ));
    let mid = member.len() / 2;
    member[mid] ^= 0xff;
    assert!(decode_chunk(s, &member).is_err());
    assert!(decode_chunk(s, &member[..5]).is_err());
}

fn reparse(b: &[u8], edit: impl Fn(&mut Toc)) -> Result<ParsedToc> {
    let (p, _) = toc_of(b).unwrap();
    let mut toc = p.toc.clone();
    edit(&mut toc);
    parse_toc(
        &serde_json::to_vec(&toc).unwrap(),
        p.toc_offset,
        &TocLimits::default(),
    )
}

#[test]
fn rejects_forged_tocs() {
    let (b, _) = blob(
        &[("d/a", vec![1u8; 3000]), ("d/b", vec![2u8; 10])],
        1024,
        false,
    );
    let pos = |t: &Toc, n: &str| t.entries.iter().position(|e| e.name == n).unwrap();
    assert!(reparse(&b, |_| {}).is_ok());
    type Edit = Box<dyn Fn(&mut Toc)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("version", Box::new(|t| t.version = 2)),
        (
            "out of range",
            Box::new(move |t| {
                let i = pos(t, "d/b");
                t.entries[i].offset = 1 << 40
            }),
        ),
        (
            "contiguous",
            Box::new(move |t| {
                let i = pos(t, "d/a");
                t.entries[i + 1].chunk_offset = 7
            }),
        ),
        (
            "chunkDigest",
            Box::new(move |t| {
                let i = pos(t, "d/b");
                t.entries[i].chunk_digest = "sha256:zz".into()
            }),
        ),
        (
            "cover",
            Box::new(move |t| {
                let i = pos(t, "d/a");
                t.entries.remove(i + 2);
            }),
        ),
        (
            "out of range for file size",
            Box::new(move |t| {
                let i = pos(t, "d/a");
                t.entries[i].size = 1500
            }),
        ),
        (
            "out of range for file size",
            Box::new(move |t| {
                let i = pos(t, "d/a");
                t.entries[i].chunk_size = 5000
            }),
        ),
        (
            "without a preceding reg",
            Box::new(move |t| {
                let i = pos(t, "d/a");
                t.entries.remove(i);
            }),
        ),
        (
            "`..`",
            Box::new(move |t| {
                let i = pos(t, "d/b");
                t.entries[i].name = "../../etc/shadow".into()
            }),
        ),
        (
            "absolute",
            Box::new(move |t| {
                let i = pos(t, "d/b");
                t.entries[i].name = "/etc/shadow".into()
            }),
        ),
        (
            "escapes",
            Box::new(|t| {
                t.entries.push(TocEntry {
                    link_name: "../../..".into(),
                    ..TocEntry::from_meta(&EntryMeta::new("d/l", Kind::Symlink))
                })
            }),
        ),
        (
            "escapes",
            Box::new(|t| {
                t.entries.push(TocEntry {
                    link_name: "../x".into(),
                    ..TocEntry::from_meta(&EntryMeta::new("d/h", Kind::Hardlink))
                })
            }),
        ),
        (
            "over the limit",
            Box::new(move |t| {
                let i = pos(t, "d/b");
                t.entries[i].size = u64::MAX
            }),
        ),
    ];
    // A TOC offset far beyond the last member makes its range huge.
    let (p, _) = toc_of(&b).unwrap();
    let json = serde_json::to_vec(&p.toc).unwrap();
    let err = parse_toc(&json, p.toc_offset + (1 << 30), &TocLimits::default()).unwrap_err();
    assert!(err.to_string().contains("too large"), "{err}");
    for (want, edit) in cases {
        let err = crate::error_chain(&reparse(&b, edit).unwrap_err());
        assert!(err.contains(want), "{err} does not mention {want}");
    }
}

#[test]
fn rejects_truncated_and_forged_blobs() {
    let (b, _) = blob(&[("d/a", vec![1u8; 100])], 1024, false);
    // Truncated: the footer is gone.
    assert!(toc_of(&b[..b.len() - 10]).is_err());
    // Forged TOC offset pointing past the footer or into a file member.
    let n = b.len();
    for forged in [n as u64, (n - 51) as u64, 10] {
        let mut f = b.clone();
        f[n - 51..].copy_from_slice(&footer(forged));
        assert!(toc_of(&f).is_err(), "offset {forged}");
    }
    // A TOC member that is not gzip.
    let (p, _) = toc_of(&b).unwrap();
    let mut f = b.clone();
    f[p.toc_offset as usize] ^= 0xff;
    assert!(toc_of(&f).is_err());
    assert!(toc_of(&b[..40]).is_err());
    // TOC larger than the limit.
    let lim = TocLimits {
        max_toc_member: 10,
        ..TocLimits::default()
    };
    assert!(matches!(
        read_toc(b.len() as u64, &lim, |o, l| Ok(b
            [o as usize..(o + l) as usize]
            .to_vec())),
        Err(EstargzError::TocTooLarge { .. })
    ));
}

mod props {
    use super::super::*;
    use flate2::Compression;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Chunking then reassembly is the identity, for any sizes.
        #[test]
        fn chunks_reassemble(sizes in proptest::collection::vec(0usize..20_000, 1..6), chunk in 1u64..9000) {
            let mut w = Writer::new(Vec::new(), WriteOptions { chunk_size: chunk, level: Compression::fast() });
            let files: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| (0..n).map(|j| (j * 31 + i) as u8).collect()).collect();
            for (i, f) in files.iter().enumerate() {
                let mut m = EntryMeta::new(&format!("f{i}"), Kind::Reg);
                m.size = f.len() as u64;
                w.append(&m, &mut &f[..]).unwrap();
            }
            let (_, blob) = w.finish().unwrap();
            let (p, _) = read_toc(blob.len() as u64, &TocLimits::default(), |o, l| Ok(blob[o as usize..(o + l) as usize].to_vec())).unwrap();
            for (i, f) in files.iter().enumerate() {
                let idx = p.toc.entries.iter().position(|e| e.name == format!("f{i}")).unwrap();
                let mut got = Vec::new();
                for s in p.chunks.get(&idx).map(Vec::as_slice).unwrap_or(&[]) {
                    got.extend(decode_chunk(s, &blob[s.blob_offset as usize..s.blob_end as usize]).unwrap());
                }
                prop_assert_eq!(&got, f);
            }
        }
    }

    fn sample_blob() -> Vec<u8> {
        let mut w = Writer::new(
            Vec::new(),
            WriteOptions {
                chunk_size: 700,
                level: Compression::fast(),
            },
        );
        for (i, n) in [0usize, 5, 1500, 3000].iter().enumerate() {
            let mut m = EntryMeta::new(&format!("d/f{i}"), Kind::Reg);
            m.size = *n as u64;
            w.append(&m, &mut &vec![i as u8; *n][..]).unwrap();
        }
        let mut l = EntryMeta::new("d/l", Kind::Symlink);
        l.link = "f1".into();
        w.append(&l, &mut io::empty()).unwrap();
        w.finish().unwrap().1
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        /// Mutated blobs (bit flips, truncation) are errors or valid TOCs
        /// whose chunks lie inside the blob; never a panic.
        #[test]
        fn mutated_blobs_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8), cut in any::<prop::sample::Index>(), truncate in any::<bool>()) {
            let mut b = sample_blob();
            for (i, x) in flips {
                let i = i.index(b.len());
                b[i] ^= x;
            }
            if truncate {
                let n = cut.index(b.len());
                b.truncate(n);
            }
            if let Ok((p, _)) = read_toc(b.len() as u64, &TocLimits::default(), |o, l| {
                b.get(o as usize..(o + l) as usize).map(<[u8]>::to_vec).ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
            }) {
                for spans in p.chunks.values() {
                    for s in spans {
                        prop_assert!(s.blob_offset < s.blob_end && s.blob_end <= p.toc_offset);
                        let _ = decode_chunk(s, &b[s.blob_offset as usize..s.blob_end as usize]);
                    }
                }
            }
            let mut tar = Vec::new();
            let _ = flate2::read::MultiGzDecoder::new(&b[..]).read_to_end(&mut tar);
            let _ = tarfmt::for_each_entry(&tar[..], tarfmt::TarLimits::default(), |m, r| {
                assert!(!m.name.starts_with('/') && !m.name.split('/').any(|c| c == ".."));
                let _ = io::copy(r, &mut io::sink());
                Ok(())
            });
        }
    }
}
