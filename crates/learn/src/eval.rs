//! Prequential (test-then-train) evaluation: every sample is first predicted,
//! then learned. Accuracy overall and per consecutive window.

use crate::Learner;

/// What a prequential pass measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Prequential {
    pub n: usize,
    pub correct: usize,
    /// Accuracy of each consecutive window of `window` samples (the last may be shorter).
    pub windows: Vec<f64>,
}

impl Prequential {
    pub fn accuracy(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.correct as f64 / self.n as f64
        }
    }
}

/// Runs `model` test-then-train over the rows of `xs` (`d` features each) and
/// their labels `ys`. A `None` prediction counts as wrong. `window == 0`
/// records no windows.
pub fn prequential(
    model: &mut dyn Learner,
    xs: &[f32],
    d: usize,
    ys: &[usize],
    window: usize,
) -> Prequential {
    let mut p = Prequential {
        n: 0,
        correct: 0,
        windows: Vec::new(),
    };
    let mut in_window = (0usize, 0usize);
    for (x, &y) in xs.chunks_exact(d).zip(ys) {
        let hit = model.predict_learn(x, y) == Some(y);
        p.n += 1;
        p.correct += usize::from(hit);
        if window > 0 {
            in_window.0 += 1;
            in_window.1 += usize::from(hit);
            if in_window.0 == window {
                p.windows.push(in_window.1 as f64 / window as f64);
                in_window = (0, 0);
            }
        }
    }
    if in_window.0 > 0 {
        p.windows.push(in_window.1 as f64 / in_window.0 as f64);
    }
    p
}
