//! ADWIN (Bifet & Gavaldà, "Learning from Time-Changing Data with Adaptive
//! Windowing", SDM 2007): the ADWIN2 exponential histogram. Row `i` holds up
//! to `M + 1` buckets of `2^i` values (total and variance); every `clock`
//! values the window is cut at each bucket boundary whose two sides' means
//! differ by more than the bound, dropping the oldest buckets.

use super::{check, DetectorError, DriftDetector, DriftState};

const MAX_BUCKETS: usize = 5;
const CLOCK: u64 = 32;
const MIN_WINDOW: f64 = 5.0;
const GRACE: f64 = 10.0;

#[derive(Debug, Clone, Default)]
struct Row {
    // Oldest first.
    total: Vec<f64>,
    var: Vec<f64>,
}

/// ADWIN with confidence `delta` (river: 0.002; ARF uses 0.01 and 0.001).
#[derive(Debug, Clone)]
pub struct Adwin {
    delta: f64,
    rows: Vec<Row>,
    total: f64,
    variance: f64,
    width: f64,
    tick: u64,
}

impl Adwin {
    pub fn new(delta: f64) -> Result<Self, DetectorError> {
        check("delta", "in (0, 1)", delta, delta > 0.0 && delta < 1.0)?;
        Ok(Adwin {
            delta,
            rows: Vec::new(),
            total: 0.0,
            variance: 0.0,
            width: 0.0,
            tick: 0,
        })
    }

    /// The mean of the current window (0 when empty).
    pub fn estimation(&self) -> f64 {
        if self.width > 0.0 {
            self.total / self.width
        } else {
            0.0
        }
    }

    /// How many values the window holds.
    pub fn width(&self) -> f64 {
        self.width
    }

    fn insert(&mut self, x: f64) {
        self.width += 1.0;
        if self.width > 1.0 {
            let prev_mean = self.total / (self.width - 1.0);
            self.variance += (self.width - 1.0) * (x - prev_mean) * (x - prev_mean) / self.width;
        }
        self.total += x;
        if self.rows.is_empty() {
            self.rows.push(Row::default());
        }
        self.rows[0].total.push(x);
        self.rows[0].var.push(0.0);
        // Compress: a row over capacity merges its two oldest buckets upward.
        let mut i = 0;
        while i < self.rows.len() && self.rows[i].total.len() > MAX_BUCKETS {
            let n = (1u64 << i) as f64;
            let (t1, t2) = (self.rows[i].total[0], self.rows[i].total[1]);
            let (v1, v2) = (self.rows[i].var[0], self.rows[i].var[1]);
            let d = t1 / n - t2 / n;
            let v = v1 + v2 + n * n * d * d / (2.0 * n);
            self.rows[i].total.drain(..2);
            self.rows[i].var.drain(..2);
            if i + 1 == self.rows.len() {
                self.rows.push(Row::default());
            }
            self.rows[i + 1].total.push(t1 + t2);
            self.rows[i + 1].var.push(v);
            i += 1;
        }
    }

    fn delete_oldest(&mut self) {
        let last = self.rows.len() - 1;
        let n = (1u64 << last) as f64;
        let t = self.rows[last].total.remove(0);
        let v = self.rows[last].var.remove(0);
        self.width -= n;
        self.total -= t;
        if self.width > 0.0 {
            let u = t / n;
            let m = self.total / self.width;
            self.variance -= v + n * self.width * (u - m) * (u - m) / (n + self.width);
            self.variance = self.variance.max(0.0);
        } else {
            self.variance = 0.0;
        }
        if self.rows[last].total.is_empty() {
            self.rows.pop();
        }
    }

    fn cut(&self, n0: f64, n1: f64, diff: f64) -> bool {
        let dd = (2.0 * self.width.ln() / self.delta).ln();
        let m = 1.0 / (n0 - MIN_WINDOW + 1.0) + 1.0 / (n1 - MIN_WINDOW + 1.0);
        let v = self.variance / self.width;
        let eps = (2.0 * m * v * dd).sqrt() + 2.0 / 3.0 * dd * m;
        diff.abs() > eps
    }

    fn detect(&mut self) -> bool {
        let mut changed = false;
        loop {
            let mut cut = false;
            let (mut n0, mut n1, mut u0, mut u1) = (0.0, self.width, 0.0, self.total);
            'scan: for i in (0..self.rows.len()).rev() {
                let n = (1u64 << i) as f64;
                let len = self.rows[i].total.len();
                for k in 0..len {
                    if i == 0 && k + 1 == len {
                        break 'scan; // no cut after the newest bucket
                    }
                    let t = self.rows[i].total[k];
                    n0 += n;
                    n1 -= n;
                    u0 += t;
                    u1 -= t;
                    if n0 >= MIN_WINDOW && n1 >= MIN_WINDOW && self.cut(n0, n1, u0 / n0 - u1 / n1) {
                        cut = true;
                        break 'scan;
                    }
                }
            }
            if !cut {
                return changed;
            }
            changed = true;
            self.delete_oldest();
        }
    }
}

impl DriftDetector for Adwin {
    fn update(&mut self, x: f64) -> DriftState {
        self.insert(x);
        self.tick += 1;
        if self.tick % CLOCK == 0 && self.width > GRACE && self.detect() {
            DriftState::Drift
        } else {
            DriftState::None
        }
    }

    fn reset(&mut self) {
        *self = Adwin::new(self.delta).expect("delta was checked");
    }
}
