//! Training a [`Net`] on a weighted subset: mini-batch SGD (with momentum)
//! or Adam over a weighted cross-entropy.
//!
//! The loss of a batch `B` is `(1/|B|) Σ_{i∈B} w_i · ℓ_i`: the selection's
//! `1/(N·p_i)` weights make it an unbiased estimate of the mean loss over
//! every candidate (see `stratus_dyndata::select`).
//!
//! Each call to [`Trainer::train`] is one trigger:
//!
//! 1. the input standardisation is refitted on this trigger's training data
//!    (per feature; pooled over pixels for the CNN);
//! 2. the network is the previous one (`warm_start: true`) or a fresh one
//!    seeded with `seed + trigger`;
//! 3. the optimiser state starts fresh;
//! 4. `epochs_per_trigger` passes over the data in a seeded shuffled order.
//!
//! Everything random comes from `training.seed`, so a run is repeatable:
//! the same seed gives the same weights and the same accuracy numbers.

use candle_core::{DType, Device, Tensor, Var};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use stratus_dyndata::spec::{Model, Optimizer, Training};

use crate::model::{Arch, ModelError, Net, Norm, Prediction};

/// A training call with bad input.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("candle")]
    Candle(#[from] candle_core::Error),
    #[error("training set: {what} has {got} entries, expected {expected}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("training set: label {label} of sample {index} is not a class id in 0..{classes}")]
    Label {
        index: usize,
        label: i64,
        classes: usize,
    },
    #[error("training set: weight {weight} of sample {index} is not finite and ≥ 0")]
    Weight { index: usize, weight: f32 },
    #[error("training.{field}: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
}

/// What one [`Trainer::train`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TrainStats {
    /// Distinct samples trained on.
    pub samples: usize,
    /// Sample gradient evaluations (samples × epochs).
    pub sample_steps: usize,
    pub steps: usize,
    /// Weighted mean loss over the last epoch.
    pub last_epoch_loss: f64,
}

/// Optimiser state per variable.
enum OptState {
    Sgd {
        velocity: Vec<Tensor>,
    },
    Adam {
        m: Vec<Tensor>,
        v: Vec<Tensor>,
        t: i32,
    },
}

const ADAM_BETA1: f64 = 0.9;
const ADAM_BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;

/// A model that is retrained at every trigger.
pub struct Trainer {
    cfg: Training,
    arch: Arch,
    net: Option<Net>,
    triggers: u64,
    /// Overrides `warm_start` for the next [`Trainer::train`] only (a drift action).
    next_warm_start: Option<bool>,
}

impl Trainer {
    /// A trainer for `model` on `dim` features and `classes` classes. No
    /// network until the first [`Trainer::train`].
    pub fn new(
        model: &Model,
        cfg: &Training,
        dim: usize,
        classes: usize,
    ) -> Result<Trainer, TrainError> {
        if cfg.batch_size == 0 {
            return Err(TrainError::Config {
                field: "batch_size",
                message: "must be at least 1".into(),
            });
        }
        if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
            return Err(TrainError::Config {
                field: "lr",
                message: format!("must be a positive number, got {}", cfg.lr),
            });
        }
        Ok(Trainer {
            cfg: cfg.clone(),
            arch: Arch::new(model, dim, classes)?,
            net: None,
            triggers: 0,
            next_warm_start: None,
        })
    }

    /// The next training starts from the previous model (`true`) or a fresh
    /// one (`false`), whatever `training.warm_start` says; once.
    pub fn set_next_warm_start(&mut self, warm: bool) {
        self.next_warm_start = Some(warm);
    }

    pub fn arch(&self) -> &Arch {
        &self.arch
    }

    /// The current network, if trained at least once.
    pub fn net(&self) -> Option<&Net> {
        self.net.as_ref()
    }

    /// Predictions of the current model; `None` before the first training.
    pub fn predict(&self, x: &[f32]) -> Result<Option<Prediction>, TrainError> {
        match &self.net {
            Some(n) => Ok(Some(n.predict(x)?)),
            None => Ok(None),
        }
    }

    /// One trigger's training on rows `x` (`len × dim`), labels `y` and
    /// loss weights `w` (see the module docs).
    pub fn train(&mut self, x: &[f32], y: &[i64], w: &[f32]) -> Result<TrainStats, TrainError> {
        let dim = self.arch.dim;
        let n = y.len();
        if x.len() != n * dim {
            return Err(TrainError::Length {
                what: "features",
                expected: n * dim,
                got: x.len(),
            });
        }
        if w.len() != n {
            return Err(TrainError::Length {
                what: "weights",
                expected: n,
                got: w.len(),
            });
        }
        let classes = self.arch.classes;
        if let Some((index, &label)) = y
            .iter()
            .enumerate()
            .find(|(_, &l)| l < 0 || l as usize >= classes)
        {
            return Err(TrainError::Label {
                index,
                label,
                classes,
            });
        }
        if let Some((index, &weight)) = w
            .iter()
            .enumerate()
            .find(|(_, &v)| !(v.is_finite() && v >= 0.0))
        {
            return Err(TrainError::Weight { index, weight });
        }
        let trigger = self.triggers;
        self.triggers += 1;
        let seed = self.cfg.seed.wrapping_add(trigger);
        let warm = self.next_warm_start.take().unwrap_or(self.cfg.warm_start);
        let mut net = match self.net.take() {
            Some(prev) if warm => prev,
            _ => Net::new(self.arch.clone(), seed)?,
        };
        if n == 0 {
            self.net = Some(net);
            return Ok(TrainStats::default());
        }
        net.norm = Norm::fit(x, dim, self.arch.kind == "cnn");
        let xs = net.norm.apply(x, dim);
        let vars = net.vars();
        let mut state = match self.cfg.optimizer {
            Optimizer::Sgd => OptState::Sgd {
                velocity: zeros_like(&vars)?,
            },
            Optimizer::Adam => OptState::Adam {
                m: zeros_like(&vars)?,
                v: zeros_like(&vars)?,
                t: 0,
            },
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_7a1e);
        let mut order: Vec<usize> = (0..n).collect();
        let mut stats = TrainStats {
            samples: n,
            ..TrainStats::default()
        };
        let bs = self.cfg.batch_size;
        let (mut bx, mut by, mut bw) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..self.cfg.epochs_per_trigger {
            order.shuffle(&mut rng);
            let mut epoch_loss = 0.0;
            for batch in order.chunks(bs) {
                bx.clear();
                by.clear();
                bw.clear();
                for &i in batch {
                    bx.extend_from_slice(&xs[i * dim..(i + 1) * dim]);
                    by.push(y[i] as u32);
                    bw.push(w[i]);
                }
                let loss = weighted_loss(&net, &bx, &by, &bw)?;
                epoch_loss += loss.to_scalar::<f32>()? as f64 * batch.len() as f64;
                let grads = loss.backward()?;
                self.step(&vars, &grads, &mut state)?;
                stats.steps += 1;
                stats.sample_steps += batch.len();
            }
            stats.last_epoch_loss = epoch_loss / n as f64;
        }
        self.net = Some(net);
        Ok(stats)
    }

    fn step(
        &self,
        vars: &[Var],
        grads: &candle_core::backprop::GradStore,
        state: &mut OptState,
    ) -> Result<(), TrainError> {
        let lr = self.cfg.lr;
        let wd = self.cfg.weight_decay;
        if let OptState::Adam { t, .. } = state {
            *t += 1;
        }
        for (i, var) in vars.iter().enumerate() {
            let Some(g) = grads.get(var) else { continue };
            let g = if wd > 0.0 {
                (g + var.as_tensor().affine(wd, 0.0)?)?
            } else {
                g.clone()
            };
            match state {
                OptState::Sgd { velocity } => {
                    let v = if self.cfg.momentum > 0.0 {
                        let v = (velocity[i].affine(self.cfg.momentum, 0.0)? + &g)?;
                        velocity[i] = v.clone();
                        v
                    } else {
                        g
                    };
                    var.set(&(var.as_tensor() - v.affine(lr, 0.0)?)?)?;
                }
                OptState::Adam { m, v, t } => {
                    let mi =
                        ((m[i].affine(ADAM_BETA1, 0.0))? + g.affine(1.0 - ADAM_BETA1, 0.0)?)?;
                    let vi = (v[i].affine(ADAM_BETA2, 0.0)?
                        + g.sqr()?.affine(1.0 - ADAM_BETA2, 0.0)?)?;
                    let mhat = mi.affine(1.0 / (1.0 - ADAM_BETA1.powi(*t)), 0.0)?;
                    let vhat = vi.affine(1.0 / (1.0 - ADAM_BETA2.powi(*t)), 0.0)?;
                    let upd = (mhat / (vhat.sqrt()? + ADAM_EPS)?)?;
                    var.set(&(var.as_tensor() - upd.affine(lr, 0.0)?)?)?;
                    m[i] = mi;
                    v[i] = vi;
                }
            }
        }
        Ok(())
    }
}

fn zeros_like(vars: &[Var]) -> Result<Vec<Tensor>, TrainError> {
    Ok(vars
        .iter()
        .map(|v| v.as_tensor().zeros_like())
        .collect::<Result<_, _>>()?)
}

/// `(1/n) Σ w_i · (−ln softmax(f(x_i))_{y_i})` over standardised rows `x`.
pub fn weighted_loss(net: &Net, x: &[f32], y: &[u32], w: &[f32]) -> Result<Tensor, TrainError> {
    let n = y.len();
    let dim = net.arch.dim;
    let xt = Tensor::from_slice(x, (n, dim), &Device::Cpu)?;
    let (logits, _) = net.forward(&xt)?;
    let logp = candle_nn::ops::log_softmax(&logits, 1)?;
    let yt = Tensor::from_slice(y, (n, 1), &Device::Cpu)?;
    let nll = logp.gather(&yt, 1)?.squeeze(1)?.neg()?;
    let wt = Tensor::from_slice(w, n, &Device::Cpu)?.to_dtype(DType::F32)?;
    Ok((nll * wt)?.sum_all()?.affine(1.0 / n as f64, 0.0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_dyndata::select;
    use stratus_dyndata::spec::ModelId;

    fn cfg(opt: Optimizer, seed: u64) -> Training {
        Training {
            optimizer: opt,
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 0.0,
            batch_size: 16,
            epochs_per_trigger: 5,
            warm_start: true,
            seed,
        }
    }

    /// Two Gaussian blobs in 4 dimensions, seeded.
    fn blobs(n: usize, seed: u64) -> (Vec<f32>, Vec<i64>) {
        use rand::Rng;
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let c = (i % 2) as i64;
            for j in 0..4 {
                let centre = if c == 1 { 1.5 } else { -1.5 } * if j % 2 == 0 { 1.0 } else { -0.5 };
                x.push(centre + r.random_range(-1.0f32..1.0) * 1.5 + 10.0);
            }
            y.push(c);
        }
        (x, y)
    }

    fn mlp() -> Model {
        Model {
            id: ModelId::Mlp,
            hidden: vec![8],
            channels: vec![],
            learner: None,
        }
    }

    #[test]
    fn learns_blobs_with_both_optimisers() {
        let (x, y) = blobs(400, 1);
        let (tx, ty) = blobs(200, 2);
        for opt in [Optimizer::Sgd, Optimizer::Adam] {
            let mut t = Trainer::new(&mlp(), &cfg(opt, 0), 4, 2).unwrap();
            assert!(t.predict(&tx).unwrap().is_none());
            let w = vec![1.0; y.len()];
            let s = t.train(&x, &y, &w).unwrap();
            assert_eq!(s.samples, 400);
            assert_eq!(s.sample_steps, 2000);
            assert_eq!(s.steps, 5 * 25);
            let acc = t.predict(&tx).unwrap().unwrap().accuracy(&ty);
            assert!(acc > 0.9, "{opt:?}: accuracy {acc}");
        }
    }

    #[test]
    fn same_seed_same_numbers() {
        let (x, y) = blobs(300, 3);
        let (tx, _) = blobs(100, 4);
        let w: Vec<f32> = (0..300).map(|i| 0.5 + (i % 3) as f32 * 0.5).collect();
        let run = |seed| {
            let mut t = Trainer::new(&mlp(), &cfg(Optimizer::Adam, seed), 4, 2).unwrap();
            let s1 = t.train(&x, &y, &w).unwrap();
            let s2 = t.train(&x[..400], &y[..100], &w[..100]).unwrap();
            let p = t.predict(&tx).unwrap().unwrap();
            (s1.last_epoch_loss, s2.last_epoch_loss, p.probs)
        };
        let a = run(11);
        assert_eq!(a, run(11), "same seed, bit-identical results");
        assert_ne!(a.2, run(12).2, "another seed, other weights");
    }

    #[test]
    fn zero_weights_mean_no_learning_signal() {
        // All-zero weights: the loss is 0 and Adam's update is 0/(0+eps) = 0.
        let (x, y) = blobs(64, 5);
        let mut c = cfg(Optimizer::Sgd, 0);
        c.momentum = 0.0;
        let mut t = Trainer::new(&mlp(), &c, 4, 2).unwrap();
        t.train(&x, &y, &vec![1.0; 64]).unwrap();
        let before = t.predict(&x).unwrap().unwrap().probs;
        let s = t.train(&x, &y, &vec![0.0; 64]).unwrap();
        assert_eq!(s.last_epoch_loss, 0.0);
        assert_eq!(t.predict(&x).unwrap().unwrap().probs, before);
    }

    #[test]
    fn bad_training_input_is_named() {
        let mut t = Trainer::new(&mlp(), &cfg(Optimizer::Adam, 0), 4, 2).unwrap();
        let e = t.train(&[0.0; 8], &[0, 2], &[1.0, 1.0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "training set: label 2 of sample 1 is not a class id in 0..2"
        );
        let e = t.train(&[0.0; 8], &[0, 1], &[1.0, f32::NAN]).unwrap_err();
        assert!(matches!(e, TrainError::Weight { index: 1, .. }), "{e}");
        let e = t.train(&[0.0; 7], &[0, 1], &[1.0, 1.0]).unwrap_err();
        assert!(
            matches!(
                e,
                TrainError::Length {
                    what: "features",
                    ..
                }
            ),
            "{e}"
        );
        let mut c = cfg(Optimizer::Adam, 0);
        c.batch_size = 0;
        let e = Trainer::new(&mlp(), &c, 4, 2).err().unwrap();
        assert_eq!(e.to_string(), "training.batch_size: must be at least 1");
    }

    /// GradNorm's closed form ‖p − e_y‖·√(‖h‖² + 1) equals the norm of the
    /// autodiff gradient of one sample's cross-entropy with respect to the
    /// last layer's weights and bias.
    #[test]
    fn gradnorm_closed_form_matches_autodiff() {
        use rand::Rng;
        let mut r = ChaCha8Rng::seed_from_u64(9);
        for (model, dim, classes) in [
            (mlp(), 5, 3),
            (
                Model {
                    id: ModelId::LogReg,
                    hidden: vec![],
                    channels: vec![],
                    learner: None,
                },
                7,
                4,
            ),
            (
                Model {
                    id: ModelId::Cnn,
                    hidden: vec![6],
                    channels: vec![2, 3],
                    learner: None,
                },
                64,
                10,
            ),
        ] {
            let arch = Arch::new(&model, dim, classes).unwrap();
            let net = Net::new(arch, r.random()).unwrap();
            let n = 6;
            let x: Vec<f32> = (0..n * dim).map(|_| r.random_range(-2.0..2.0)).collect();
            let y: Vec<i64> = (0..n).map(|_| r.random_range(0..classes as i64)).collect();
            let p = net.predict(&x).unwrap();
            let mut closed = vec![0f32; n];
            select::gradnorm_scores(&p.probs, classes, &y, &p.emb, p.emb_dim, &mut closed).unwrap();
            for i in 0..n {
                let xi = net.norm.apply(&x[i * dim..(i + 1) * dim], dim);
                let loss = weighted_loss(&net, &xi, &[y[i] as u32], &[1.0]).unwrap();
                let g = loss.backward().unwrap();
                let sq = |name: &str| {
                    let t = g.get(net.var(name).unwrap()).unwrap();
                    t.sqr()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap()
                };
                let auto = (sq("out.weight") + sq("out.bias")).sqrt();
                let rel = (auto - closed[i]).abs() / auto.max(1e-6);
                assert!(
                    rel < 1e-4,
                    "{}: sample {i}: autodiff {auto}, closed form {}",
                    net.arch.kind,
                    closed[i]
                );
                assert!(auto > 0.0);
            }
        }
    }
}
