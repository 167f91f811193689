//! Retry delays for the RCSS client (pure): exponential backoff with full
//! jitter.
//!
//! Retry `n` (from 0) waits a uniformly random time in `[0, min(max,
//! base·2ⁿ)]`. Without the jitter, every node that failed at the same
//! moment (a server restart, an S3 outage behind it) would retry at the same
//! moments too and meet the server as one burst each time. The randomness
//! comes from the caller, so tests can seed it.

use std::time::Duration;

use rand::Rng;

/// The delays of one request's retries.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    retries: u32,
}

impl Backoff {
    /// `base`: the first retry's ceiling, doubled per retry up to `max`.
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            retries: 0,
        }
    }

    /// The longest the next delay can be.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.retries).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.max)
    }

    /// The delay before the next retry, drawn from `rng`.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.retries = self.retries.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceilings_double_up_to_the_maximum() {
        let mut b = Backoff::new(50 * MS, 2000 * MS);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            ceilings.push(b.ceiling().as_millis());
            b.next_delay(&mut rng);
        }
        assert_eq!(ceilings, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
        // No overflow however long it retries.
        for _ in 0..100 {
            assert!(b.next_delay(&mut rng) <= 2000 * MS);
        }
        let mut huge = Backoff::new(Duration::MAX, Duration::MAX);
        huge.next_delay(&mut rng);
        assert_eq!(huge.ceiling(), Duration::MAX);
    }

    #[test]
    fn delays_stay_within_their_ceiling_and_vary() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        // The first retry of many requests: the spread that keeps clients
        // that failed together from retrying together.
        let first: Vec<Duration> = (0..64)
            .map(|_| Backoff::new(50 * MS, 2000 * MS).next_delay(&mut rng))
            .collect();
        assert!(first.iter().all(|d| *d <= 50 * MS), "{first:?}");
        assert!(first.iter().any(|d| *d != first[0]), "{first:?}");
        assert!(first.iter().any(|d| *d < 25 * MS), "{first:?}");
        assert!(first.iter().any(|d| *d > 25 * MS), "{first:?}");

        let mut b = Backoff::new(50 * MS, 2000 * MS);
        for _ in 0..10 {
            let ceiling = b.ceiling();
            let d = b.next_delay(&mut rng);
            assert!(d <= ceiling, "{d:?} over {ceiling:?}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let delays = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut b = Backoff::new(50 * MS, 2000 * MS);
            (0..6).map(|_| b.next_delay(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(delays(3), delays(3));
        assert_ne!(delays(3), delays(4));
    }
}
