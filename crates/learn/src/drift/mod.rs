//! Concept-drift detectors over a stream of numbers (usually a model's
//! 0/1 error stream): ADWIN, DDM, EDDM and Page-Hinkley behind one trait.

mod adwin;
mod ddm;
mod page_hinkley;

pub use adwin::Adwin;
pub use ddm::{Ddm, Eddm};
pub use page_hinkley::{PageHinkley, PhMode};

/// What a detector concluded after one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftState {
    /// In control.
    None,
    /// A change may be starting (DDM/EDDM only).
    Warning,
    /// A change was detected; the detector has already reset what it must.
    Drift,
}

/// A drift detector fed one value at a time.
pub trait DriftDetector: Send {
    /// Adds one value and reports the state after it.
    fn update(&mut self, x: f64) -> DriftState;
    /// Forgets everything (back to the state after construction).
    fn reset(&mut self);
}

/// A detector's parameters were out of range.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DetectorError {
    #[error("{name} must be {want}, got {got}")]
    OutOfRange {
        name: &'static str,
        want: &'static str,
        got: f64,
    },
}

/// A detector named with its parameters; `build` checks them.
#[derive(Debug, Clone, PartialEq)]
pub enum DetectorSpec {
    Adwin {
        delta: f64,
    },
    Ddm {
        warm_start: u32,
        warning: f64,
        drift: f64,
    },
    Eddm {
        warm_start: u32,
        alpha: f64,
        beta: f64,
    },
    PageHinkley {
        min_instances: u32,
        delta: f64,
        threshold: f64,
        alpha: f64,
    },
}

impl DetectorSpec {
    /// river's and MOA's defaults for each detector.
    pub fn adwin() -> Self {
        DetectorSpec::Adwin { delta: 0.002 }
    }
    pub fn ddm() -> Self {
        DetectorSpec::Ddm {
            warm_start: 30,
            warning: 2.0,
            drift: 3.0,
        }
    }
    pub fn eddm() -> Self {
        DetectorSpec::Eddm {
            warm_start: 30,
            alpha: 0.95,
            beta: 0.9,
        }
    }
    pub fn page_hinkley() -> Self {
        DetectorSpec::PageHinkley {
            min_instances: 30,
            delta: 0.005,
            threshold: 50.0,
            alpha: 1.0 - 1e-4,
        }
    }

    pub fn build(&self) -> Result<Detector, DetectorError> {
        Ok(match *self {
            DetectorSpec::Adwin { delta } => Detector::Adwin(Adwin::new(delta)?),
            DetectorSpec::Ddm {
                warm_start,
                warning,
                drift,
            } => Detector::Ddm(Ddm::new(warm_start, warning, drift)?),
            DetectorSpec::Eddm {
                warm_start,
                alpha,
                beta,
            } => Detector::Eddm(Eddm::new(warm_start, alpha, beta)?),
            DetectorSpec::PageHinkley {
                min_instances,
                delta,
                threshold,
                alpha,
            } => Detector::PageHinkley(PageHinkley::new(
                min_instances,
                delta,
                threshold,
                alpha,
                PhMode::Up,
            )?),
        })
    }

    /// The detector's name in pipeline files.
    pub fn name(&self) -> &'static str {
        match self {
            DetectorSpec::Adwin { .. } => "adwin",
            DetectorSpec::Ddm { .. } => "ddm",
            DetectorSpec::Eddm { .. } => "eddm",
            DetectorSpec::PageHinkley { .. } => "page_hinkley",
        }
    }
}

/// Any of the detectors, by value (cloneable, printable).
#[derive(Debug, Clone)]
pub enum Detector {
    Adwin(Adwin),
    Ddm(Ddm),
    Eddm(Eddm),
    PageHinkley(PageHinkley),
}

impl DriftDetector for Detector {
    fn update(&mut self, x: f64) -> DriftState {
        match self {
            Detector::Adwin(d) => d.update(x),
            Detector::Ddm(d) => d.update(x),
            Detector::Eddm(d) => d.update(x),
            Detector::PageHinkley(d) => d.update(x),
        }
    }

    fn reset(&mut self) {
        match self {
            Detector::Adwin(d) => d.reset(),
            Detector::Ddm(d) => d.reset(),
            Detector::Eddm(d) => d.reset(),
            Detector::PageHinkley(d) => d.reset(),
        }
    }
}

pub(crate) fn check(
    name: &'static str,
    want: &'static str,
    got: f64,
    ok: bool,
) -> Result<(), DetectorError> {
    if ok && got.is_finite() {
        Ok(())
    } else {
        Err(DetectorError::OutOfRange { name, want, got })
    }
}

#[cfg(test)]
mod tests;
