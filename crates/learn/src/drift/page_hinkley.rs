//! The Page-Hinkley test (Page, "Continuous Inspection Schemes", 1954), with
//! river's fading factor `alpha` on the cumulative sum.

use super::{check, DetectorError, DriftDetector, DriftState};

/// Which change the test looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhMode {
    /// An increase of the mean (a rising error rate).
    Up,
    /// A decrease.
    Down,
    Both,
}

/// `m_T = alpha * m_{T-1} + (x_T - mean_T - delta)`; drift when
/// `m_T - min m > threshold` (up) after `min_instances` values.
#[derive(Debug, Clone)]
pub struct PageHinkley {
    min_instances: u32,
    delta: f64,
    threshold: f64,
    alpha: f64,
    mode: PhMode,
    n: f64,
    mean: f64,
    sum_up: f64,
    sum_down: f64,
    min_up: f64,
    max_down: f64,
}

impl PageHinkley {
    pub fn new(
        min_instances: u32,
        delta: f64,
        threshold: f64,
        alpha: f64,
        mode: PhMode,
    ) -> Result<Self, DetectorError> {
        check("delta", ">= 0", delta, delta >= 0.0)?;
        check("threshold", "> 0", threshold, threshold > 0.0)?;
        check("alpha", "in (0, 1]", alpha, alpha > 0.0 && alpha <= 1.0)?;
        Ok(PageHinkley {
            min_instances,
            delta,
            threshold,
            alpha,
            mode,
            n: 0.0,
            mean: 0.0,
            sum_up: 0.0,
            sum_down: 0.0,
            min_up: 0.0,
            max_down: 0.0,
        })
    }
}

impl DriftDetector for PageHinkley {
    fn update(&mut self, x: f64) -> DriftState {
        self.n += 1.0;
        self.mean += (x - self.mean) / self.n;
        self.sum_up = self.alpha * self.sum_up + (x - self.mean - self.delta);
        self.sum_down = self.alpha * self.sum_down + (x - self.mean + self.delta);
        self.min_up = self.min_up.min(self.sum_up);
        self.max_down = self.max_down.max(self.sum_down);
        if self.n < self.min_instances as f64 {
            return DriftState::None;
        }
        let up = self.sum_up - self.min_up > self.threshold;
        let down = self.max_down - self.sum_down > self.threshold;
        let hit = match self.mode {
            PhMode::Up => up,
            PhMode::Down => down,
            PhMode::Both => up || down,
        };
        if hit {
            self.reset();
            DriftState::Drift
        } else {
            DriftState::None
        }
    }

    fn reset(&mut self) {
        *self = PageHinkley::new(
            self.min_instances,
            self.delta,
            self.threshold,
            self.alpha,
            self.mode,
        )
        .expect("checked");
    }
}
