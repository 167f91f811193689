//! DDM (Gama et al., "Learning with Drift Detection", SBIA 2004) and EDDM
//! (Baena-García et al., "Early Drift Detection Method", 2006), both over a
//! 0/1 error stream (1 = the model was wrong).

use super::{check, DetectorError, DriftDetector, DriftState};

/// DDM: the error rate `p` and its deviation `s = sqrt(p(1-p)/n)`; warning when
/// `p + s >= p_min + warning * s_min`, drift at `drift * s_min`, after
/// `warm_start` values. Resets itself after a drift.
#[derive(Debug, Clone)]
pub struct Ddm {
    warm_start: u32,
    warning: f64,
    drift: f64,
    n: f64,
    p: f64,
    p_min: f64,
    s_min: f64,
}

impl Ddm {
    pub fn new(warm_start: u32, warning: f64, drift: f64) -> Result<Self, DetectorError> {
        check("warning", "> 0", warning, warning > 0.0)?;
        check("drift", "> warning", drift, drift > warning)?;
        Ok(Ddm {
            warm_start,
            warning,
            drift,
            n: 0.0,
            p: 0.0,
            p_min: f64::INFINITY,
            s_min: f64::INFINITY,
        })
    }
}

impl DriftDetector for Ddm {
    fn update(&mut self, x: f64) -> DriftState {
        self.n += 1.0;
        self.p += (x - self.p) / self.n;
        if self.n < self.warm_start as f64 {
            return DriftState::None;
        }
        let s = (self.p * (1.0 - self.p) / self.n).sqrt();
        if self.p + s <= self.p_min + self.s_min {
            self.p_min = self.p;
            self.s_min = s;
        }
        if self.p + s > self.p_min + self.drift * self.s_min {
            self.reset();
            DriftState::Drift
        } else if self.p + s > self.p_min + self.warning * self.s_min {
            DriftState::Warning
        } else {
            DriftState::None
        }
    }

    fn reset(&mut self) {
        *self = Ddm::new(self.warm_start, self.warning, self.drift).expect("checked");
    }
}

/// EDDM: the mean `p'` and deviation `s'` of the distance between errors; after
/// `warm_start` errors, warning when `(p' + 2s') / max(p' + 2s') < alpha`,
/// drift below `beta`. Resets itself after a drift.
#[derive(Debug, Clone)]
pub struct Eddm {
    warm_start: u32,
    alpha: f64,
    beta: f64,
    n: u64,
    last_error: u64,
    errors: f64,
    mean: f64,
    m2: f64,
    max_m2s: f64,
}

impl Eddm {
    pub fn new(warm_start: u32, alpha: f64, beta: f64) -> Result<Self, DetectorError> {
        check("alpha", "in (0, 1)", alpha, alpha > 0.0 && alpha < 1.0)?;
        check("beta", "in (0, alpha)", beta, beta > 0.0 && beta < alpha)?;
        Ok(Eddm {
            warm_start,
            alpha,
            beta,
            n: 0,
            last_error: 0,
            errors: 0.0,
            mean: 0.0,
            m2: 0.0,
            max_m2s: 0.0,
        })
    }
}

impl DriftDetector for Eddm {
    fn update(&mut self, x: f64) -> DriftState {
        self.n += 1;
        if x < 0.5 {
            return DriftState::None;
        }
        let dist = (self.n - self.last_error) as f64;
        self.last_error = self.n;
        self.errors += 1.0;
        let d = dist - self.mean;
        self.mean += d / self.errors;
        self.m2 += d * (dist - self.mean);
        // As river: the maximum is tracked once `warm_start` values were seen,
        // the ratio tested once `warm_start` errors were.
        if self.n <= u64::from(self.warm_start) {
            return DriftState::None;
        }
        let std = if self.errors > 1.0 {
            (self.m2 / (self.errors - 1.0)).sqrt()
        } else {
            0.0
        };
        let m2s = self.mean + 2.0 * std;
        if m2s > self.max_m2s {
            self.max_m2s = m2s;
            return DriftState::None;
        }
        if self.errors <= f64::from(self.warm_start) {
            return DriftState::None;
        }
        let ratio = m2s / self.max_m2s;
        if ratio < self.beta {
            self.reset();
            DriftState::Drift
        } else if ratio < self.alpha {
            DriftState::Warning
        } else {
            DriftState::None
        }
    }

    fn reset(&mut self) {
        *self = Eddm::new(self.warm_start, self.alpha, self.beta).expect("checked");
    }
}
