//! Determinism, each concept's label function on known points, and drift
//! at the given positions.

use super::concepts::{Agrawal, Hyperplane, Sea};
use super::*;
use crate::csv::{parse, CsvOptions, LabelMap};

fn sea(drift_at: Vec<u64>, width: u64, concepts: Option<Vec<usize>>) -> GenSpec {
    GenSpec {
        kind: Kind::Sea,
        samples: 2000,
        seed: 7,
        drift_at,
        drift_width: width,
        concepts,
        noise: 0.0,
        class_weights: None,
    }
}

fn all_kinds() -> Vec<GenSpec> {
    let base = sea(vec![300], 100, None);
    [
        Kind::Sea,
        Kind::Agrawal { perturbation: 0.05 },
        Kind::Hyperplane {
            features: 5,
            drift_features: 2,
            mag_change: 0.001,
            sigma: 0.1,
        },
        Kind::Rbf {
            features: 4,
            classes: 3,
            centroids: 10,
            drift_centroids: 5,
            change_speed: 0.001,
        },
    ]
    .into_iter()
    .map(|kind| GenSpec {
        kind,
        noise: 0.05,
        samples: 600,
        ..base.clone()
    })
    .collect()
}

#[test]
fn same_seed_same_stream_other_seed_other_stream() {
    for spec in all_kinds() {
        let a: Vec<_> = spec.stream().unwrap().collect();
        let b: Vec<_> = spec.stream().unwrap().collect();
        assert_eq!(a, b, "{:?}", spec.kind);
        assert_eq!(a.len(), 600);
        assert!(a.iter().all(|(x, _)| x.len() == spec.feature_names().len()));
        let other: Vec<_> = GenSpec {
            seed: 8,
            ..spec.clone()
        }
        .stream()
        .unwrap()
        .collect();
        assert_ne!(a, other, "{:?}", spec.kind);
    }
}

#[test]
fn sea_labels_known_points() {
    for (c, theta) in SEA_THRESHOLDS.iter().enumerate() {
        let s = Sea { threshold: *theta };
        assert_eq!(s.label(&[theta / 2.0, theta / 2.0, 9.0]), 0, "concept {c}");
        assert_eq!(
            s.label(&[theta / 2.0, theta / 2.0 + 0.01, 0.0]),
            1,
            "concept {c}"
        );
    }
    assert_eq!(SEA_THRESHOLDS, [8.0, 9.0, 7.0, 9.5]);
}

#[test]
fn agrawal_functions_on_known_points() {
    // salary, commission, age, elevel, car, zipcode, hvalue, hyears, loan
    let p = |salary: f64,
             commission: f64,
             age: f64,
             elevel: f64,
             hvalue: f64,
             hyears: f64,
             loan: f64| {
        [
            salary, commission, age, elevel, 1.0, 0.0, hvalue, hyears, loan,
        ]
    };
    let a = Agrawal::group_a;
    assert!(a(0, &p(50e3, 20e3, 30.0, 0.0, 1e5, 1.0, 0.0)));
    assert!(!a(0, &p(50e3, 20e3, 45.0, 0.0, 1e5, 1.0, 0.0)));
    assert!(a(0, &p(50e3, 20e3, 60.0, 0.0, 1e5, 1.0, 0.0)));
    assert!(a(1, &p(60e3, 0.0, 30.0, 0.0, 1e5, 1.0, 0.0)));
    assert!(!a(1, &p(60e3, 0.0, 45.0, 0.0, 1e5, 1.0, 0.0)));
    assert!(a(2, &p(60e3, 0.0, 45.0, 3.0, 1e5, 1.0, 0.0)));
    assert!(!a(2, &p(60e3, 0.0, 45.0, 4.0, 1e5, 1.0, 0.0)));
    assert!(a(3, &p(30e3, 0.0, 30.0, 1.0, 1e5, 1.0, 0.0)));
    assert!(!a(3, &p(30e3, 0.0, 30.0, 2.0, 1e5, 1.0, 0.0)));
    // F5 compares the loan (river compares the salary here).
    assert!(a(4, &p(60e3, 0.0, 30.0, 0.0, 1e5, 1.0, 150e3)));
    assert!(!a(4, &p(60e3, 0.0, 30.0, 0.0, 1e5, 1.0, 350e3)));
    assert!(a(4, &p(150e3, 0.0, 65.0, 0.0, 1e5, 1.0, 200e3)));
    assert!(a(5, &p(40e3, 20e3, 30.0, 0.0, 1e5, 1.0, 0.0)));
    assert!(!a(5, &p(40e3, 0.0, 30.0, 0.0, 1e5, 1.0, 0.0)));
    // 2/3 · 90k − 100k/5 − 20k = 20k > 0.
    assert!(a(6, &p(90e3, 0.0, 30.0, 0.0, 1e5, 1.0, 100e3)));
    assert!(!a(6, &p(90e3, 0.0, 30.0, 0.0, 1e5, 1.0, 300e3)));
    // 2/3 · 45k − 5000 · 2 − 20k = 0: not > 0.
    assert!(!a(7, &p(45e3, 0.0, 30.0, 2.0, 1e5, 1.0, 0.0)));
    assert!(a(7, &p(46e3, 0.0, 30.0, 2.0, 1e5, 1.0, 0.0)));
    assert!(a(8, &p(60e3, 0.0, 30.0, 1.0, 1e5, 1.0, 100e3)));
    assert!(!a(8, &p(60e3, 0.0, 30.0, 1.0, 1e5, 1.0, 200e3)));
    // Equity counts from 20 years in the house on.
    let poor = p(30e3, 0.0, 30.0, 2.0, 400e3, 19.0, 0.0);
    assert!(!a(9, &poor)); // 20k − 10k − 10k = 0
    let owner = p(30e3, 0.0, 30.0, 2.0, 400e3, 25.0, 0.0);
    assert!(a(9, &owner)); // + 400k · 5 / 10 / 5 = 40k
                           // Class 0 is group A.
    let spec = GenSpec {
        kind: Kind::Agrawal { perturbation: 0.0 },
        concepts: Some(vec![0]),
        drift_at: vec![],
        ..sea(vec![], 0, None)
    };
    for (x, y) in spec.stream().unwrap().take(200) {
        assert_eq!(y == 0, a(0, &x), "{x:?}");
        assert!((20.0..=80.0).contains(&x[2]) && (1.0..=20.0).contains(&x[4]));
    }
}

#[test]
fn hyperplane_label_and_rotation() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut h = Hyperplane::new(&mut rng, 2, 1, 0.1, 0.0);
    h.weights = vec![1.0, 1.0];
    assert_eq!(h.label(&[0.6, 0.5]), 1);
    assert_eq!(h.label(&[0.4, 0.5]), 0);
    h.sample(&mut rng);
    assert!((h.weights[0] - 1.1).abs() < 1e-12 && h.weights[1] == 1.0);
}

#[test]
fn abrupt_drift_switches_the_concept_at_its_position() {
    // θ 8, then θ 7 from sample 1000 on.
    let spec = sea(vec![1000], 0, Some(vec![0, 2]));
    let s: Vec<_> = spec.stream().unwrap().collect();
    let (before, after) = (Sea { threshold: 8.0 }, Sea { threshold: 7.0 });
    assert!(s[..1000].iter().all(|(x, y)| *y == before.label(x)));
    assert!(s[1000..].iter().all(|(x, y)| *y == after.label(x)));
    // And the change shows: points between the two lines change class.
    assert!(s[1000..].iter().any(|(x, y)| *y != before.label(x)));
}

#[test]
fn gradual_drift_mixes_around_its_position() {
    let spec = sea(vec![1000], 200, Some(vec![0, 2]));
    let s: Vec<_> = spec.stream().unwrap().collect();
    let old = Sea { threshold: 8.0 };
    let new = Sea { threshold: 7.0 };
    // Points whose class tells the concepts apart.
    let telling = |r: std::ops::Range<usize>| {
        let pts: Vec<_> = s[r]
            .iter()
            .filter(|(x, _)| old.label(x) != new.label(x))
            .collect();
        let newer = pts.iter().filter(|(x, y)| *y == new.label(x)).count();
        (newer, pts.len())
    };
    let (n, of) = telling(0..500);
    assert_eq!(n, 0, "well before: old concept only ({n} of {of})");
    let (n, of) = telling(1500..2000);
    assert_eq!(n, of, "well after: new concept only");
    let (n, of) = telling(900..1100);
    assert!(n > 0 && n < of, "around the drift: both ({n} of {of})");
}

#[test]
fn noise_flips_about_its_share_of_labels() {
    let spec = GenSpec {
        noise: 0.1,
        samples: 20_000,
        ..sea(vec![], 0, None)
    };
    let t = Sea { threshold: 8.0 };
    let flipped = spec
        .stream()
        .unwrap()
        .filter(|(x, y)| *y != t.label(x))
        .count();
    assert!((1700..2300).contains(&flipped), "{flipped}");
}

#[test]
fn class_weights_thin_a_class_and_keep_labels_and_drift_positions() {
    // SEA concept 0 (threshold 8) draws class 1 68% of the time.
    let base = GenSpec {
        samples: 20_000,
        drift_at: vec![10_000],
        ..sea(vec![], 0, None)
    };
    let spec = GenSpec {
        class_weights: Some(vec![1.0, 0.1]),
        ..base.clone()
    };
    let s: Vec<_> = spec.stream().unwrap().collect();
    assert_eq!(s.len(), 20_000);
    let ones = |r: &[(Vec<f64>, u32)]| r.iter().filter(|(_, y)| *y == 1).count();
    // Expected share of class 1: 0.068 / (0.32 + 0.068) ≈ 17.5%.
    let before = ones(&s[..10_000]);
    assert!((1600..1900).contains(&before), "{before}");
    let plain = ones(&base.stream().unwrap().take(10_000).collect::<Vec<_>>());
    assert!((6600..7000).contains(&plain), "{plain}");
    // Every kept sample still carries its concept's label, on each side of
    // the drift at the given position (concept 1: threshold 9).
    let (t0, t1) = (Sea { threshold: 8.0 }, Sea { threshold: 9.0 });
    assert!(s[..10_000].iter().all(|(x, y)| *y == t0.label(x)));
    assert!(s[10_000..].iter().all(|(x, y)| *y == t1.label(x)));
    // Deterministic.
    assert_eq!(s, spec.stream().unwrap().collect::<Vec<_>>());
}

#[test]
fn bad_specs_name_the_parameter() {
    let e = |s: GenSpec| s.validate().unwrap_err().to_string();
    assert_eq!(
        e(sea(vec![10, 5], 0, None)),
        "drift_at: positions must be increasing"
    );
    assert_eq!(
        e(sea(vec![10], 0, Some(vec![0]))),
        "concepts: 1 drifts need 2 concepts (one before each drift and one after the last), found 1"
    );
    assert_eq!(
        e(sea(vec![], 0, Some(vec![4]))),
        "concepts: concept 4 does not exist; this generator has concepts 0..=3"
    );
    assert_eq!(
        e(GenSpec {
            samples: 0,
            ..sea(vec![], 0, None)
        }),
        format!("samples: use 1..={MAX_SAMPLES}")
    );
    let w = |w: Vec<f64>| {
        e(GenSpec {
            class_weights: Some(w),
            ..sea(vec![], 0, None)
        })
    };
    assert_eq!(
        w(vec![1.0]),
        "class_weights: give one weight per class: 2, found 1"
    );
    for bad in [
        vec![1.0, 0.0],
        vec![1.0, -1.0],
        vec![1.0, f64::NAN],
        vec![1.0, 1e-4],
    ] {
        assert_eq!(
            w(bad),
            "class_weights: use finite weights > 0, each at least 1/1000 of the largest"
        );
    }
}

#[test]
fn csv_output_ingests_as_written() {
    for spec in all_kinds() {
        let text = to_csv(&spec).unwrap();
        let p = parse(
            "g.csv",
            &text,
            &CsvOptions::default(),
            &mut LabelMap::default(),
        )
        .unwrap();
        assert_eq!(p.rows.len(), 600);
        assert_eq!(p.feature_columns, spec.feature_names());
        let s: Vec<_> = spec.stream().unwrap().collect();
        for (r, (x, y)) in p.rows.iter().zip(&s) {
            assert_eq!(r.label, i64::from(*y));
            for (a, b) in r.features.iter().zip(x) {
                assert!(
                    (f64::from(*a) - b).abs() <= 1e-6 * b.abs().max(1.0),
                    "{a} {b}"
                );
            }
        }
    }
}

#[test]
fn cli_refuses_flags_of_other_generators_and_writes_whole_files() {
    use super::cli::{gen, GenArgs};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sea.csv");
    let args = GenArgs {
        kind: "sea".into(),
        samples: 50,
        seed: 3,
        drift_at: vec![20],
        out: out.clone(),
        ..GenArgs::default()
    };
    let msg = gen(&args).unwrap();
    assert!(msg.starts_with("wrote 50 samples of sea"), "{msg}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count(), 51);
    assert_eq!(text, to_csv(&args.spec().unwrap()).unwrap());
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["sea.csv"], "no temporary file left");
    let e = gen(&GenArgs {
        sigma: Some(0.2),
        ..args.clone()
    })
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "--sigma does not apply to sea; its flags: none beyond the common ones"
    );
    let e = gen(&GenArgs {
        kind: "sine".into(),
        ..args.clone()
    })
    .unwrap_err();
    assert!(e.to_string().starts_with("unknown generator 'sine'"), "{e}");
    // A bad spec writes nothing.
    let bad = dir.path().join("bad.csv");
    assert!(gen(&GenArgs {
        drift_at: vec![5, 5],
        out: bad.clone(),
        ..args
    })
    .is_err());
    assert!(!bad.exists());
}
