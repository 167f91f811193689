//! Arrival schedules for the load generator: pure functions of their inputs
//! and a seed, so a run's offered load is reproducible.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Poisson arrivals at `rate` per second for `duration_s`: exponential
/// inter-arrival times. Offsets in µs from the start, ascending.
pub fn poisson(rate: f64, duration_s: f64, seed: u64) -> Vec<u64> {
    assert!(rate > 0.0 && duration_s >= 0.0, "validated by the caller");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut t = 0.0;
    let mut out = Vec::new();
    loop {
        let u: f64 = rng.random::<f64>();
        t += -(1.0 - u).ln() / rate;
        if t >= duration_s {
            return out;
        }
        out.push((t * 1e6) as u64);
    }
}

/// Arrivals that reproduce per-minute invocation counts (as the vHive loader
/// does): minute `i` becomes the window `[i·m, (i+1)·m)` of `minute_s`
/// seconds, holding `round(count·scale)` arrivals at uniformly random times.
/// Stops at `duration_s`. Offsets in µs, ascending.
pub fn from_minute_counts(
    counts: &[u64],
    minute_s: f64,
    scale: f64,
    duration_s: f64,
    seed: u64,
) -> Vec<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for (i, &c) in counts.iter().enumerate() {
        let start = i as f64 * minute_s;
        if start >= duration_s {
            break;
        }
        let n = (c as f64 * scale).round() as u64;
        let mut minute: Vec<u64> = (0..n)
            .map(|_| ((start + rng.random::<f64>() * minute_s) * 1e6) as u64)
            .filter(|&t| (t as f64) < duration_s * 1e6)
            .collect();
        minute.sort_unstable();
        out.extend(minute);
    }
    out
}

/// Picks which target each arrival invokes: uniformly at random, seeded.
pub fn assign(arrivals: usize, targets: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x005e_ed7a_26e7);
    (0..arrivals)
        .map(|_| rng.random_range(0..targets.max(1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_matches_its_rate_and_is_reproducible() {
        let a = poisson(200.0, 50.0, 7);
        assert_eq!(a, poisson(200.0, 50.0, 7));
        assert_ne!(a, poisson(200.0, 50.0, 8));
        // 10,000 expected; Poisson sd = 100, allow 4 sd.
        assert!((a.len() as i64 - 10_000).abs() < 400, "{}", a.len());
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
        // Exponential gaps: their coefficient of variation is ~1.
        let gaps: Vec<f64> = a.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let sd = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt();
        assert!((sd / mean - 1.0).abs() < 0.05, "cv {}", sd / mean);
    }

    #[test]
    fn minute_counts_are_reproduced_per_window() {
        let counts = [3, 0, 10, 7];
        let a = from_minute_counts(&counts, 2.0, 1.0, 100.0, 1);
        assert_eq!(a.len(), 20);
        let per: Vec<usize> = (0..4)
            .map(|i| a.iter().filter(|&&t| t / 2_000_000 == i).count())
            .collect();
        assert_eq!(per, [3, 0, 10, 7]);
        // Scaling and the duration cut.
        assert_eq!(
            from_minute_counts(&counts, 2.0, 0.5, 100.0, 1).len(),
            2 + 5 + 4
        );
        assert_eq!(from_minute_counts(&counts, 2.0, 1.0, 4.0, 1).len(), 3);
    }

    #[test]
    fn assignment_uses_every_target() {
        let a = assign(1000, 3, 1);
        assert!((0..3).all(|t| a.iter().filter(|&&x| x == t).count() > 250));
        assert_eq!(a, assign(1000, 3, 1));
    }
}
