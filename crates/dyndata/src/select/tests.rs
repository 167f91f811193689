use super::*;

fn rng_vec(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(lo..hi)).collect()
}

#[test]
fn budget_sizes() {
    assert_eq!(budget_size(1000, 0.25), Ok(250));
    assert_eq!(budget_size(3, 0.01), Ok(1));
    assert_eq!(budget_size(0, 0.5), Ok(0));
    assert_eq!(budget_size(10, 1.0), Ok(10));
    assert_eq!(budget_size(10, 0.0), Err(SelectError::Budget(0.0)));
    assert_eq!(budget_size(10, 1.5), Err(SelectError::Budget(1.5)));
}

#[test]
fn inclusion_probabilities_sum_to_m_and_cap_at_one() {
    let scores = [100.0, 1.0, 1.0, 1.0, 1.0, 0.0];
    let pi = inclusion_probabilities(&scores, 3).unwrap();
    assert!((pi.iter().sum::<f64>() - 3.0).abs() < 1e-9);
    assert_eq!(pi[0], 1.0);
    assert!(pi[5] > 0.0, "floored: every item can be drawn");
    assert!((pi[1] - pi[4]).abs() < 1e-12);
    // Proportional below the cap.
    let pi = inclusion_probabilities(&[1.0, 2.0, 3.0, 4.0], 1).unwrap();
    for (p, s) in pi.iter().zip([1.0, 2.0, 3.0, 4.0]) {
        assert!((p - s / 10.0).abs() < 1e-3);
    }
    assert!(matches!(
        inclusion_probabilities(&[1.0, f32::NAN], 1),
        Err(SelectError::InvalidScore { index: 1, .. })
    ));
    assert!(inclusion_probabilities(&[-1.0], 1).is_err());
}

#[test]
fn sampling_is_without_replacement_and_of_size_m() {
    let scores = rng_vec(500, 1, 0.0, 5.0);
    for seed in 0..50 {
        let s = sample_proportional(&scores, 123, seed).unwrap();
        assert_eq!(s.len(), 123);
        assert!(s.windows(2).all(|w| w[0].index < w[1].index));
    }
}

/// Each item is drawn with its inclusion probability, in proportion to
/// its score, and the weighted sum of any vector is unbiased.
#[test]
fn sampling_is_proportional_and_unbiased() {
    let n = 200;
    let m = 40;
    let mut scores = rng_vec(n, 2, 0.0, 1.0);
    scores[0] = 50.0; // taken with certainty
    scores[1] = 0.0; // floored
    let x = rng_vec(n, 3, -10.0, 10.0);
    let total: f64 = x.iter().map(|&v| v as f64).sum();
    let pi = inclusion_probabilities(&scores, m).unwrap();
    let runs = 20_000;
    let mut hits = vec![0u32; n];
    let (mut sum, mut sum2, mut wsum) = (0.0f64, 0.0f64, 0.0f64);
    for seed in 0..runs {
        let sel = sample_proportional(&scores, m, seed).unwrap();
        // (N/m) Σ w_i x_i estimates Σ x_i.
        let est: f64 = sel
            .iter()
            .map(|s| s.weight as f64 * x[s.index] as f64)
            .sum::<f64>()
            * n as f64
            / m as f64;
        sum += est;
        sum2 += est * est;
        wsum += sel.iter().map(|s| s.weight as f64).sum::<f64>();
        for s in &sel {
            hits[s.index] += 1;
        }
    }
    let r = runs as f64;
    let mean = sum / r;
    let se = ((sum2 / r - mean * mean) / r).sqrt();
    assert!(
        (mean - total).abs() < 4.0 * se + 1e-6,
        "estimate {mean} vs total {total} (se {se})"
    );
    // E[Σ w] = m: weights average 1.
    assert!((wsum / r / m as f64 - 1.0).abs() < 0.02, "{}", wsum / r);
    // Empirical inclusion frequencies match π (binomial 5-sigma bounds).
    for i in 0..n {
        let f = hits[i] as f64 / r;
        let sd = (pi[i] * (1.0 - pi[i]) / r).sqrt();
        assert!(
            (f - pi[i]).abs() <= 5.0 * sd + 1e-9,
            "item {i}: {f} vs {}",
            pi[i]
        );
    }
    assert_eq!(hits[0], runs as u32);
    // Proportional to score where neither capped nor floored.
    let c = (2..n)
        .find(|&i| scores[i] > 0.01)
        .map(|i| pi[i] / scores[i] as f64)
        .unwrap();
    for i in 2..n {
        if scores[i] > 0.01 {
            assert!((pi[i] / scores[i] as f64 / c - 1.0).abs() < 1e-6);
        }
    }
}

#[test]
fn uniform_weights_are_one_and_unbiased() {
    let s = sample_proportional(&[2.0; 10], 5, 9).unwrap();
    assert!(s.iter().all(|x| (x.weight - 1.0).abs() < 1e-6));
    let u = uniform(10, 4, 1);
    assert_eq!(u.len(), 4);
    assert!(u.windows(2).all(|w| w[0].index < w[1].index));
    assert_eq!(uniform(10, 4, 1), u, "seeded");
}

/// The closed form equals the finite-difference norm of the gradient of
/// softmax cross-entropy with respect to a linear last layer's W and b.
#[test]
fn gradnorm_matches_finite_difference_gradient() {
    let (k, dim) = (4, 5);
    for case in 0..5u64 {
        let w = rng_vec(k * dim, 10 + case, -1.0, 1.0);
        let b = rng_vec(k, 20 + case, -0.5, 0.5);
        let h = rng_vec(dim, 30 + case, -2.0, 2.0);
        let y = (case % k as u64) as usize;
        let loss = |w: &[f64], b: &[f64]| -> f64 {
            let z: Vec<f64> = (0..k)
                .map(|c| b[c] + (0..dim).map(|j| w[c * dim + j] * h[j] as f64).sum::<f64>())
                .collect();
            let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            lse - z[y]
        };
        let w64: Vec<f64> = w.iter().map(|&v| v as f64).collect();
        let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
        let eps = 1e-6;
        let mut g2 = 0.0;
        for i in 0..w64.len() {
            let (mut p, mut m) = (w64.clone(), w64.clone());
            p[i] += eps;
            m[i] -= eps;
            g2 += ((loss(&p, &b64) - loss(&m, &b64)) / (2.0 * eps)).powi(2);
        }
        for i in 0..k {
            let (mut p, mut m) = (b64.clone(), b64.clone());
            p[i] += eps;
            m[i] -= eps;
            g2 += ((loss(&w64, &p) - loss(&w64, &m)) / (2.0 * eps)).powi(2);
        }
        let numeric = g2.sqrt();
        // Closed form from one forward pass.
        let mut logits: Vec<f32> = (0..k)
            .map(|c| b[c] + (0..dim).map(|j| w[c * dim + j] * h[j]).sum::<f32>())
            .collect();
        softmax_rows(&mut logits, k);
        let mut out = [0f32];
        gradnorm_scores(&logits, k, &[y as i64], &h, dim, &mut out).unwrap();
        assert!(
            (out[0] as f64 - numeric).abs() < 1e-3 * numeric.max(1.0),
            "case {case}: closed form {} vs numeric {numeric}",
            out[0]
        );
    }
}

#[test]
fn uncertainty_and_loss_scores() {
    let probs = [0.7, 0.2, 0.1, 0.34, 0.33, 0.33, 1.0, 0.0, 0.0];
    let mut m = [0.0; 3];
    margin_scores(&probs, 3, &mut m).unwrap();
    assert!((m[0] - 0.5).abs() < 1e-6 && (m[1] - 0.99).abs() < 1e-6 && m[2] == 0.0);
    let mut e = [0.0; 3];
    entropy_scores(&probs, 3, &mut e).unwrap();
    assert!(e[1] > e[0] && e[0] > e[2] && e[2] == 0.0);
    assert!((e[1] - 3f32.ln()).abs() < 1e-3);
    let mut l = [0.0; 3];
    loss_scores(&probs, 3, &[0, 2, 0], &mut l).unwrap();
    assert!((l[0] + 0.7f32.ln()).abs() < 1e-6 && l[2] == 0.0);
    assert!(matches!(
        loss_scores(&probs, 3, &[0, 3, 0], &mut l),
        Err(SelectError::Label {
            index: 1,
            label: 3,
            classes: 3
        })
    ));
    assert!(margin_scores(&[1.0], 1, &mut [0.0]).is_err());
}

#[test]
fn freshness_prefers_new_samples() {
    let ts: Vec<i64> = (0..8).collect();
    let mut s = vec![0.0; 8];
    freshness_scores(&ts, 2.0, &mut s).unwrap();
    assert_eq!(s[7], 1.0);
    assert!((s[5] - 0.5).abs() < 1e-6 && (s[3] - 0.25).abs() < 1e-6);
    let ts: Vec<i64> = (0..1000).collect();
    let mut newer = 0;
    for seed in 0..20 {
        let sel = freshness(&ts, 100, seed).unwrap();
        assert_eq!(sel.len(), 100);
        assert!(sel.iter().all(|x| x.weight == 1.0));
        newer += sel.iter().filter(|x| x.index >= 800).count();
    }
    // The newest 20% (two half-lives) hold 3/4 of the score mass; the
    // oldest half about 3%.
    assert!(newer > 20 * 65, "mostly from the newest 20%: {newer}");
    let old: usize = (0..20)
        .map(|seed| {
            freshness(&ts, 100, seed)
                .unwrap()
                .iter()
                .filter(|x| x.index < 500)
                .count()
        })
        .sum();
    assert!(old < 20 * 6, "rarely from the oldest half: {old}");
}

#[test]
fn new_data_and_all() {
    assert_eq!(
        new_data(3, 5).iter().map(|s| s.index).collect::<Vec<_>>(),
        [3, 4]
    );
    assert_eq!(new_data(7, 5), []);
    assert_eq!(all(2).len(), 2);
}

/// Two well-separated clusters: both coresets take a point from each,
/// CRAIG weights are the cluster sizes scaled to sum to m.
#[test]
fn coresets_cover_clusters() {
    let mut f = Vec::new();
    for i in 0..30 {
        f.extend_from_slice(&[i as f32 * 0.01, 0.0]);
    }
    for i in 0..10 {
        f.extend_from_slice(&[100.0 + i as f32 * 0.01, 5.0]);
    }
    let kc = kcenter_greedy(&f, 2, 2, 7).unwrap();
    assert_eq!(kc.len(), 2);
    assert!(kc[0].index < 30 && kc[1].index >= 30);
    let cr = craig(&f, 2, 2).unwrap();
    assert_eq!(cr.len(), 2);
    assert!(cr[0].0 < 30 && cr[1].0 >= 30);
    assert_eq!((cr[0].1, cr[1].1), (30, 10));
    // The chosen point of the big cluster is its medoid region.
    assert!((10..20).contains(&cr[0].0), "{:?}", cr);
    let co = coreset(Strategy::Craig, &f, 2, None, 2, 1024, 0).unwrap();
    assert_eq!(co.iter().map(|s| s.weight).sum::<f32>(), 2.0);
    assert!((co[0].weight - 1.5).abs() < 1e-6 && (co[1].weight - 0.5).abs() < 1e-6);
}

#[test]
fn coreset_apportions_budget_over_classes_and_chunks() {
    let f = rng_vec(2 * 300, 5, 0.0, 1.0);
    let labels: Vec<i64> = (0..300).map(|i| (i % 3 == 0) as i64).collect();
    for strat in [Strategy::KCenter, Strategy::Craig] {
        let s = coreset(strat, &f, 2, Some(&labels), 30, 64, 1).unwrap();
        assert_eq!(s.len(), 30, "{strat:?}");
        let ones = s.iter().filter(|x| labels[x.index] == 1).count();
        assert_eq!(ones, 10, "{strat:?}: class share kept");
        let mut idx: Vec<usize> = s.iter().map(|x| x.index).collect();
        idx.dedup();
        assert_eq!(idx.len(), 30);
    }
}

#[test]
fn select_dispatch() {
    let n = 50;
    let probs: Vec<f32> = (0..n)
        .flat_map(|i| [i as f32 / n as f32, 1.0 - i as f32 / n as f32])
        .collect();
    let labels: Vec<i64> = (0..n).map(|i| (i % 2) as i64).collect();
    let ts: Vec<i64> = (0..n as i64).collect();
    let feats = rng_vec(n * 3, 4, 0.0, 1.0);
    let emb = rng_vec(n * 4, 6, 0.0, 1.0);
    let c = Candidates {
        n,
        features: &feats,
        dim: 3,
        labels: &labels,
        timestamps: &ts,
        first_new: 40,
        probs: Some(&probs),
        classes: 2,
        embeddings: Some(&emb),
        emb_dim: 4,
    };
    for s in Strategy::ALL {
        let budget = if matches!(s, Strategy::All | Strategy::NewData) {
            1.0
        } else {
            0.2
        };
        let sel = select(s, budget, &c, 3).unwrap();
        let want = match s {
            Strategy::All => 50,
            Strategy::NewData => 10,
            _ => 10,
        };
        assert_eq!(sel.len(), want, "{s:?}");
    }
    let no_probs = Candidates { probs: None, ..c };
    assert_eq!(
        select(Strategy::Loss, 0.5, &no_probs, 0),
        Err(SelectError::Missing("loss", "probabilities"))
    );
}
