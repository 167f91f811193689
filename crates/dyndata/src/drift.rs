//! Synthetic drift for datasets without a time order of their own. Pure.
//!
//! The 8×8 digits become a Rotated-MNIST-style stream: [`rotated_stream`]
//! replays the dataset `passes` times, each pass in a fresh seeded order,
//! and rotates the sample at stream position `p` (of `L = passes × N`) by
//!
//! ```text
//! angle(p) = from_degrees + (to_degrees − from_degrees) · p / (L − 1)
//! ```
//!
//! a gradual drift: the angle grows linearly with stream time, so
//! neighbouring windows differ a little and distant ones a lot. The
//! timestamp of a sample is its stream position.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::Sample;

/// Side of the square images rotated here.
pub const SIDE: usize = 8;

/// A bad drift input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriftError {
    #[error("sample {key} has {got} features; rotation needs 8×8 = 64 pixels")]
    NotAnImage { key: u64, got: usize },
}

/// `data.drift.rotate` of a pipeline: the rotation schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RotationDrift {
    pub from_degrees: f32,
    pub to_degrees: f32,
    /// Times the dataset is replayed (≥ 1).
    pub passes: usize,
    /// Seeds the order of each pass.
    pub seed: u64,
}

impl RotationDrift {
    /// The angle at stream position `pos` of a stream of `len` samples.
    pub fn angle_at(&self, pos: usize, len: usize) -> f32 {
        if len <= 1 {
            return self.from_degrees;
        }
        let t = pos as f64 / (len - 1) as f64;
        (self.from_degrees as f64 + (self.to_degrees - self.from_degrees) as f64 * t) as f32
    }
}

/// Rotates an 8×8 image (row-major, row 0 at the top) counter-clockwise as
/// displayed by `degrees` about its centre, with bilinear interpolation;
/// pixels that come from outside the image are 0.
pub fn rotate8x8(pixels: &[f32; 64], degrees: f32) -> [f32; 64] {
    let c = (SIDE as f32 - 1.0) / 2.0;
    let (sin, cos) = (degrees.to_radians() as f64).sin_cos();
    let (sin, cos) = (sin as f32, cos as f32);
    let at = |r: isize, col: isize| -> f32 {
        if (0..SIDE as isize).contains(&r) && (0..SIDE as isize).contains(&col) {
            pixels[r as usize * SIDE + col as usize]
        } else {
            0.0
        }
    };
    let mut out = [0f32; 64];
    for r in 0..SIDE {
        for col in 0..SIDE {
            let (dx, dy) = (col as f32 - c, r as f32 - c);
            // Inverse rotation (y grows downwards): where this pixel comes from.
            let sx = c + cos * dx - sin * dy;
            let sy = c + sin * dx + cos * dy;
            // Snap values within rounding of a pixel centre, so exact
            // quarter turns are exact permutations.
            let snap = |v: f32| {
                if (v - v.round()).abs() < 1e-4 {
                    v.round()
                } else {
                    v
                }
            };
            let (sx, sy) = (snap(sx), snap(sy));
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as isize, y0 as isize);
            out[r * SIDE + col] = at(y0, x0) * (1.0 - fx) * (1.0 - fy)
                + at(y0, x0 + 1) * fx * (1.0 - fy)
                + at(y0 + 1, x0) * (1.0 - fx) * fy
                + at(y0 + 1, x0 + 1) * fx * fy;
        }
    }
    out
}

/// The rotated stream of `samples` under `drift` (see the module docs).
/// Keys and timestamps are the stream positions; labels are kept.
pub fn rotated_stream(
    samples: &[Sample],
    drift: &RotationDrift,
) -> Result<Vec<Sample>, DriftError> {
    if let Some(s) = samples.iter().find(|s| s.features.len() != SIDE * SIDE) {
        return Err(DriftError::NotAnImage {
            key: s.key,
            got: s.features.len(),
        });
    }
    let n = samples.len();
    let len = n * drift.passes.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(drift.seed);
    let mut out = Vec::with_capacity(len);
    let mut order: Vec<usize> = (0..n).collect();
    for _ in 0..drift.passes.max(1) {
        for i in (1..n).rev() {
            let j = rng.random_range(0..=i);
            order.swap(i, j);
        }
        for &i in &order {
            let pos = out.len();
            let s = &samples[i];
            let mut img = [0f32; 64];
            img.copy_from_slice(&s.features);
            out.push(Sample {
                key: pos as u64,
                timestamp: pos as i64,
                label: s.label,
                features: rotate8x8(&img, drift.angle_at(pos, len)).to_vec(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> [f32; 64] {
        let mut p = [0f32; 64];
        for (i, v) in p.iter_mut().enumerate() {
            *v = i as f32;
        }
        p
    }

    #[test]
    fn quarter_turns_are_exact() {
        let p = image();
        assert_eq!(rotate8x8(&p, 0.0), p);
        let q = rotate8x8(&p, 90.0);
        for r in 0..8 {
            for c in 0..8 {
                // Counter-clockwise: the right column becomes the top row.
                assert_eq!(q[r * 8 + c], p[c * 8 + (7 - r)], "({r},{c})");
            }
        }
        let h = rotate8x8(&p, 180.0);
        for i in 0..64 {
            assert_eq!(h[i], p[63 - i]);
        }
        assert_eq!(rotate8x8(&rotate8x8(&q, 90.0), 180.0), p);
    }

    #[test]
    fn bilinear_at_45_degrees() {
        // A centred 2×2 block stays centred and keeps its mass approximately.
        let mut p = [0f32; 64];
        for (r, c) in [(3, 3), (3, 4), (4, 3), (4, 4)] {
            p[r * 8 + c] = 1.0;
        }
        let q = rotate8x8(&p, 45.0);
        let mass: f32 = q.iter().sum();
        assert!((mass - 4.0).abs() < 1.0, "{mass}");
        // Symmetric under the rotation's own symmetry: a 90° turn of q is q.
        let q90 = rotate8x8(&q, 90.0);
        for i in 0..64 {
            assert!((q[i] - q90[i]).abs() < 1e-5);
        }
        // A pixel between four source pixels averages them.
        let mut g = [0f32; 64];
        for (i, v) in g.iter_mut().enumerate() {
            *v = (i % 8) as f32; // a horizontal ramp
        }
        let small = rotate8x8(&g, 1.0);
        assert!((small[3 * 8 + 3] - 3.0).abs() < 0.1);
    }

    #[test]
    fn stream_schedule() {
        let samples: Vec<Sample> = (0..10)
            .map(|i| Sample {
                key: 100 + i,
                timestamp: 0,
                label: i as i64 % 3,
                features: image().to_vec(),
            })
            .collect();
        let d = RotationDrift {
            from_degrees: 0.0,
            to_degrees: 90.0,
            passes: 3,
            seed: 4,
        };
        let s = rotated_stream(&samples, &d).unwrap();
        assert_eq!(s.len(), 30);
        assert_eq!(s[0].features, image().to_vec(), "angle 0 at the start");
        assert_eq!(
            s[29].features,
            rotate8x8(&image(), 90.0).to_vec(),
            "90 at the end"
        );
        assert_eq!(d.angle_at(0, 30), 0.0);
        assert!((d.angle_at(29, 30) - 90.0).abs() < 1e-5);
        assert!((d.angle_at(10, 21) - 45.0).abs() < 1e-5);
        assert!(s.iter().enumerate().all(|(i, x)| x.timestamp == i as i64));
        // Each pass holds every label the dataset has, the right number of times.
        for pass in s.chunks(10) {
            let mut labels: Vec<i64> = pass.iter().map(|x| x.label).collect();
            labels.sort();
            assert_eq!(labels, vec![0, 0, 0, 0, 1, 1, 1, 2, 2, 2]);
        }
        assert_eq!(rotated_stream(&samples, &d).unwrap(), s, "seeded");
        let bad = [Sample {
            key: 1,
            timestamp: 0,
            label: 0,
            features: vec![0.0; 3],
        }];
        assert_eq!(
            rotated_stream(&bad, &d),
            Err(DriftError::NotAnImage { key: 1, got: 3 })
        );
    }
}
