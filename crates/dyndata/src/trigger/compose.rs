//! Composed triggers. `any_of` fires whenever one of its triggers fires;
//! `all_of` fires once every one of its triggers has fired since its own
//! last fire. Either drops a fire that comes less than `min_gap` samples
//! after its previous one (or after the start of the stream). Every child
//! sees every sample.

use super::{Observation, Trigger, TriggerError};
use crate::spec::TriggerSpec;

#[derive(Debug, Clone)]
pub(super) struct Compose {
    all: bool,
    min_gap: u64,
    children: Vec<Trigger>,
    /// `all_of`: which children fired since the last fire.
    fired: Vec<bool>,
    /// Samples since the last fire (or the start).
    since: u64,
}

impl Compose {
    pub(super) fn new(all: bool, specs: &[TriggerSpec], min_gap: u64) -> Compose {
        Compose {
            all,
            min_gap,
            children: specs.iter().map(Trigger::new).collect(),
            fired: vec![false; specs.len()],
            since: 0,
        }
    }

    /// The cuts, and those of them a drift detector caused.
    pub(super) fn observe(
        &mut self,
        obs: &Observation<'_>,
    ) -> Result<(Vec<usize>, Vec<usize>), TriggerError> {
        let n = obs.timestamps.len();
        let mut per_child = Vec::with_capacity(self.children.len());
        for c in &mut self.children {
            let cuts = c.observe(obs)?;
            per_child.push((cuts, c.drift_cuts().to_vec()));
        }
        let mut points: Vec<usize> = per_child
            .iter()
            .flat_map(|(c, _)| c.iter().copied())
            .collect();
        points.sort_unstable();
        points.dedup();
        let (mut cuts, mut drift) = (Vec::new(), Vec::new());
        let mut last = 0usize; // position in this batch of the last fire
        let mut since_start = self.since; // samples since the last fire, at `last`
        for p in points {
            let mut any = false;
            let mut by_drift = false;
            for (j, (c, d)) in per_child.iter().enumerate() {
                if c.binary_search(&p).is_ok() {
                    any = true;
                    self.fired[j] = true;
                    by_drift |= d.binary_search(&p).is_ok();
                }
            }
            let go = if self.all {
                self.fired.iter().all(|&f| f)
            } else {
                any
            };
            let gap = since_start + (p - last) as u64;
            if go && gap >= self.min_gap {
                cuts.push(p);
                if by_drift {
                    drift.push(p);
                }
                self.fired.iter_mut().for_each(|f| *f = false);
                last = p;
                since_start = 0;
            }
        }
        self.since = since_start + (n - last) as u64;
        Ok((cuts, drift))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Observation, Trigger, TriggerError};
    use crate::spec::{DriftAction, TriggerSpec};
    use stratus_learn::DetectorSpec;

    /// Feeds `correct` in batches of `batch`; returns (stream positions of cuts, of drift cuts).
    fn run(spec: &TriggerSpec, correct: &[bool], batch: usize) -> (Vec<usize>, Vec<usize>) {
        let mut t = Trigger::new(spec);
        let (mut cuts, mut drift) = (Vec::new(), Vec::new());
        for (b, c) in correct.chunks(batch).enumerate() {
            let ts: Vec<i64> = (0..c.len() as i64).collect();
            let f = vec![0f32; c.len()];
            let got = t
                .observe(&Observation {
                    timestamps: &ts,
                    features: &f,
                    dim: 1,
                    correct: Some(c),
                })
                .unwrap();
            cuts.extend(got.iter().map(|x| b * batch + x));
            drift.extend(t.drift_cuts().iter().map(|x| b * batch + x));
        }
        (cuts, drift)
    }

    /// Correct at first, then wrong from `change` on.
    fn errors(n: usize, change: usize) -> Vec<bool> {
        (0..n)
            .map(|i| if i < change { i % 10 != 0 } else { i % 10 == 0 })
            .collect()
    }

    fn ddm() -> TriggerSpec {
        TriggerSpec::Detector {
            detector: DetectorSpec::ddm(),
            feature: None,
            action: DriftAction::Scratch,
        }
    }

    #[test]
    fn a_detector_fires_after_the_error_rises_and_needs_correctness() {
        let (cuts, drift) = run(&ddm(), &errors(2000, 1000), 100);
        assert!(
            !cuts.is_empty() && cuts[0] > 1000 && cuts[0] < 1100,
            "{cuts:?}"
        );
        assert_eq!(cuts, drift);
        let mut t = Trigger::new(&ddm());
        let e = t.observe(&Observation {
            timestamps: &[0],
            features: &[0.0],
            dim: 1,
            correct: None,
        });
        assert_eq!(e.unwrap_err(), TriggerError::NeedsCorrectness);
    }

    #[test]
    fn any_of_merges_and_min_gap_drops_close_fires() {
        let spec = TriggerSpec::Compose {
            all: false,
            triggers: vec![TriggerSpec::EverySamples(500), ddm()],
            min_gap: 0,
        };
        let (cuts, drift) = run(&spec, &errors(2000, 1000), 100);
        assert_eq!(&cuts[..2], &[500, 1000]);
        assert!(
            cuts.iter()
                .any(|&c| c > 1000 && c < 1100 && drift.contains(&c)),
            "{cuts:?} {drift:?}"
        );
        assert!(cuts.contains(&1500) && !drift.contains(&1500));
        // With a gap of 400 the detector's fire soon after 1000 is dropped.
        let gap = TriggerSpec::Compose {
            all: false,
            triggers: vec![TriggerSpec::EverySamples(500), ddm()],
            min_gap: 400,
        };
        let (cuts, _) = run(&gap, &errors(2000, 1000), 100);
        assert!(cuts.windows(2).all(|w| w[1] - w[0] >= 400), "{cuts:?}");
        assert!(cuts.starts_with(&[500, 1000]), "{cuts:?}");
        // The first fire is measured from the start of the stream too.
        let first = TriggerSpec::Compose {
            all: false,
            triggers: vec![
                TriggerSpec::EverySamples(100),
                TriggerSpec::EverySamples(1000),
            ],
            min_gap: 250,
        };
        let (cuts, _) = run(&first, &[true; 1000], 64);
        assert_eq!(cuts, vec![300, 600, 900]);
    }

    #[test]
    fn all_of_waits_for_every_child() {
        let spec = TriggerSpec::Compose {
            all: true,
            triggers: vec![
                TriggerSpec::EverySamples(300),
                TriggerSpec::EverySamples(500),
            ],
            min_gap: 0,
        };
        let (cuts, drift) = run(&spec, &[true; 2000], 128);
        // 300 (a), 500 (b) -> fire at 500; 600, 900 (a), 1000 (b) -> 1000;
        // 1200 (a), 1500 (both) -> 1500; 1800 (a), 2000 (b) -> 2000.
        assert_eq!(cuts, vec![500, 1000, 1500, 2000]);
        assert!(drift.is_empty());
    }

    #[test]
    fn a_feature_detector_needs_no_model_and_checks_the_index() {
        let spec = TriggerSpec::Detector {
            detector: DetectorSpec::adwin(),
            action: DriftAction::Retrain,
            feature: Some(1),
        };
        assert!(!spec.needs_correct());
        let mut t = Trigger::new(&spec);
        // Feature 1 steps from 0.2 to 0.8 at sample 1000; feature 0 is noise.
        let (mut cuts, mut seen) = (Vec::new(), 0);
        for b in 0..20 {
            let ts: Vec<i64> = (0..100).collect();
            let f: Vec<f32> = (0..100)
                .flat_map(|i| {
                    [
                        (i % 7) as f32,
                        if b < 10 { 0.2 } else { 0.8 } + (i % 3) as f32 * 0.01,
                    ]
                })
                .collect();
            let got = t
                .observe(&Observation {
                    timestamps: &ts,
                    features: &f,
                    dim: 2,
                    correct: None,
                })
                .unwrap();
            cuts.extend(got.iter().map(|c| seen + c));
            seen += 100;
        }
        assert!(
            !cuts.is_empty() && cuts[0] > 1000 && cuts[0] <= 1100,
            "{cuts:?}"
        );
        let e = t
            .observe(&Observation {
                timestamps: &[0],
                features: &[0.0],
                dim: 1,
                correct: None,
            })
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "trigger.drift.feature: 1 is out of range; the data has 1 features (0-based)"
        );
    }
}
