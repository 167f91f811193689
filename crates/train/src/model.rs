//! The networks: logistic regression, an MLP, and a small CNN for 8×8
//! images, on candle's CPU backend.
//!
//! Every network is `features → [hidden layers] → h → out = W h + b`: `h`
//! (the penultimate activations, "embedding") is what GradNorm's closed
//! form needs, so [`Net::forward`] returns it beside the logits. For
//! logistic regression `h` is the (standardised) input itself.
//!
//! Parameters are initialised from a seeded ChaCha8 stream (not candle's
//! own RNG, which cannot be seeded on the CPU), PyTorch-style uniform
//! `U(−1/√fan_in, 1/√fan_in)`, so the same seed gives the same network on
//! every machine.
//!
//! Inputs are standardised inside the network by a [`Norm`] that is part
//! of the model (saved with it): per feature for tabular models, one mean
//! and scale over all pixels for the CNN (so the image keeps its shape).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use stratus_dyndata::spec::{Model, ModelId};

/// Side of the square images the CNN takes.
pub const IMAGE_SIDE: usize = 8;
/// Standard deviations below this are treated as this (constant features).
const MIN_STD: f32 = 1e-3;

/// A model that cannot be built, run or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("candle")]
    Candle(#[from] candle_core::Error),
    #[error("model.id cnn takes 8×8 images (64 features); the dataset has {0} features")]
    NotAnImage(usize),
    #[error("model needs at least 2 classes, the data has {0}")]
    Classes(usize),
    #[error("model needs at least one feature")]
    NoFeatures,
    #[error("model.{field}: {message}")]
    Spec {
        field: &'static str,
        message: String,
    },
    #[error("input has {got} values, not a multiple of {dim} features")]
    Shape { got: usize, dim: usize },
    #[error("stored model is missing tensor '{0}'")]
    MissingTensor(String),
}

/// The shape of a network: what the model store records to rebuild it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arch {
    /// `logreg`, `mlp` or `cnn`.
    pub kind: String,
    pub dim: usize,
    pub classes: usize,
    pub hidden: Vec<usize>,
    pub channels: Vec<usize>,
}

impl Arch {
    /// The architecture a pipeline's `model` asks for, on `dim` features
    /// and `classes` classes.
    pub fn new(model: &Model, dim: usize, classes: usize) -> Result<Arch, ModelError> {
        if dim == 0 {
            return Err(ModelError::NoFeatures);
        }
        if classes < 2 {
            return Err(ModelError::Classes(classes));
        }
        let kind = match model.id {
            ModelId::LogReg => "logreg",
            ModelId::Mlp => "mlp",
            ModelId::Cnn => "cnn",
            ModelId::HoeffdingTree | ModelId::Hat | ModelId::Arf | ModelId::OnlineLogReg => {
                return Err(ModelError::Spec {
                    field: "id",
                    message: format!("{} is a stream learner, not a network", model.id.name()),
                })
            }
        };
        if model.id == ModelId::Cnn && dim != IMAGE_SIDE * IMAGE_SIDE {
            return Err(ModelError::NotAnImage(dim));
        }
        if model.hidden.contains(&0) {
            return Err(ModelError::Spec {
                field: "hidden",
                message: "layer widths must be positive".into(),
            });
        }
        if model.channels.contains(&0) {
            return Err(ModelError::Spec {
                field: "channels",
                message: "channel counts must be positive".into(),
            });
        }
        Ok(Arch {
            kind: kind.into(),
            dim,
            classes,
            hidden: if model.id == ModelId::LogReg {
                Vec::new()
            } else {
                model.hidden.clone()
            },
            channels: if model.id == ModelId::Cnn {
                if model.channels.is_empty() {
                    vec![8, 16]
                } else {
                    model.channels.clone()
                }
            } else {
                Vec::new()
            },
        })
    }

    fn is_cnn(&self) -> bool {
        self.kind == "cnn"
    }

    /// `(name, shape, fan_in)` of every parameter, in a fixed order.
    fn params(&self) -> Vec<(String, Vec<usize>, usize)> {
        let mut out = Vec::new();
        let mut width = self.dim;
        if self.is_cnn() {
            let (mut c_in, mut side) = (1, IMAGE_SIDE);
            for (i, &c) in self.channels.iter().enumerate() {
                out.push((format!("conv{i}.weight"), vec![c, c_in, 3, 3], c_in * 9));
                out.push((format!("conv{i}.bias"), vec![c], c_in * 9));
                c_in = c;
                if side >= 2 {
                    side /= 2;
                }
            }
            width = c_in * side * side;
        }
        for (i, &h) in self.hidden.iter().enumerate() {
            out.push((format!("fc{i}.weight"), vec![h, width], width));
            out.push((format!("fc{i}.bias"), vec![h], width));
            width = h;
        }
        out.push(("out.weight".into(), vec![self.classes, width], width));
        out.push(("out.bias".into(), vec![self.classes], width));
        out
    }

    /// Width of the penultimate activations `h`.
    pub fn emb_dim(&self) -> usize {
        self.params()
            .last()
            .map(|(_, _, fan_in)| *fan_in)
            .unwrap_or(self.dim)
    }
}

/// Input standardisation: `(x − mean) / std`, per feature (or one pair for
/// images).
#[derive(Debug, Clone, PartialEq)]
pub struct Norm {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Norm {
    /// The identity.
    pub fn identity(n: usize) -> Norm {
        Norm {
            mean: vec![0.0; n],
            std: vec![1.0; n],
        }
    }

    /// Fits mean and standard deviation on `x` (`len × dim`): per feature,
    /// or over all values when `pooled`.
    pub fn fit(x: &[f32], dim: usize, pooled: bool) -> Norm {
        let n = x.len() / dim.max(1);
        let groups = if pooled { 1 } else { dim };
        let mut sum = vec![0f64; groups];
        let mut sq = vec![0f64; groups];
        for row in x.chunks_exact(dim) {
            for (j, &v) in row.iter().enumerate() {
                let g = if pooled { 0 } else { j };
                sum[g] += v as f64;
                sq[g] += v as f64 * v as f64;
            }
        }
        let count = if pooled { n * dim } else { n }.max(1) as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / count) as f32).collect();
        let std = sq
            .iter()
            .zip(&sum)
            .map(|(q, s)| {
                let m = s / count;
                ((q / count - m * m).max(0.0).sqrt() as f32).max(MIN_STD)
            })
            .collect();
        Norm { mean, std }
    }

    /// Standardises `x` (`len × dim`) into a new vector.
    pub fn apply(&self, x: &[f32], dim: usize) -> Vec<f32> {
        let pooled = self.mean.len() == 1 && dim != 1;
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks_exact(dim) {
            for (j, &v) in row.iter().enumerate() {
                let g = if pooled { 0 } else { j };
                out.push((v - self.mean[g]) / self.std[g]);
            }
        }
        out
    }
}

/// A network with its parameters and input standardisation.
pub struct Net {
    pub arch: Arch,
    /// In [`Arch::params`] order.
    params: Vec<(String, Var)>,
    pub norm: Norm,
}

/// Forward pass output over a batch: row-major `n × classes` and
/// `n × emb_dim`.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub probs: Vec<f32>,
    pub emb: Vec<f32>,
    pub classes: usize,
    pub emb_dim: usize,
}

impl Prediction {
    /// The most probable class of sample `i`.
    pub fn argmax(&self, i: usize) -> i64 {
        let row = &self.probs[i * self.classes..(i + 1) * self.classes];
        let mut best = 0;
        for (j, &p) in row.iter().enumerate() {
            if p > row[best] {
                best = j;
            }
        }
        best as i64
    }

    /// Fraction of samples whose argmax is the label.
    pub fn accuracy(&self, labels: &[i64]) -> f64 {
        if labels.is_empty() {
            return 0.0;
        }
        let hits = (0..labels.len())
            .filter(|&i| self.argmax(i) == labels[i])
            .count();
        hits as f64 / labels.len() as f64
    }
}

/// Rows per forward pass when predicting (bounds memory).
const PREDICT_CHUNK: usize = 4096;

impl Net {
    /// A freshly initialised network (see the module docs for the seeding).
    pub fn new(arch: Arch, seed: u64) -> Result<Net, ModelError> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut params = Vec::new();
        for (name, shape, fan_in) in arch.params() {
            let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
            let t = Tensor::from_vec(v, shape, &Device::Cpu)?;
            params.push((name, Var::from_tensor(&t)?));
        }
        let groups = if arch.is_cnn() { 1 } else { arch.dim };
        Ok(Net {
            norm: Norm::identity(groups),
            arch,
            params,
        })
    }

    /// The trainable variables, in a fixed order.
    pub fn vars(&self) -> Vec<Var> {
        self.params.iter().map(|(_, v)| v.clone()).collect()
    }

    /// The variable called `name` (`out.weight`, `fc0.bias`, ...).
    pub fn var(&self, name: &str) -> Option<&Var> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Tensor `x` of standardised inputs (`n × dim`).
    pub fn input(&self, x: &[f32]) -> Result<Tensor, ModelError> {
        let dim = self.arch.dim;
        if x.len() % dim != 0 {
            return Err(ModelError::Shape { got: x.len(), dim });
        }
        let n = x.len() / dim;
        Ok(Tensor::from_vec(
            self.norm.apply(x, dim),
            (n, dim),
            &Device::Cpu,
        )?)
    }

    /// Logits `n × classes` and penultimate activations `n × emb_dim` of a
    /// standardised input tensor.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor), ModelError> {
        let p = |name: &str| -> Result<&Tensor, ModelError> {
            self.var(name)
                .map(|v| v.as_tensor())
                .ok_or_else(|| ModelError::MissingTensor(name.to_string()))
        };
        let mut h = x.clone();
        if self.arch.is_cnn() {
            let n = h.dim(0)?;
            h = h.reshape((n, 1, IMAGE_SIDE, IMAGE_SIDE))?;
            for i in 0..self.arch.channels.len() {
                let w = p(&format!("conv{i}.weight"))?;
                let b = p(&format!("conv{i}.bias"))?;
                h = h.conv2d(w, 1, 1, 1, 1)?;
                h = h.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?.relu()?;
                if h.dim(2)? >= 2 {
                    h = h.max_pool2d(2)?;
                }
            }
            h = h.flatten_from(1)?;
        }
        for i in 0..self.arch.hidden.len() {
            let w = p(&format!("fc{i}.weight"))?;
            let b = p(&format!("fc{i}.bias"))?;
            h = h.matmul(&w.t()?)?.broadcast_add(b)?.relu()?;
        }
        let logits = h
            .matmul(&p("out.weight")?.t()?)?
            .broadcast_add(p("out.bias")?)?;
        Ok((logits, h))
    }

    /// Class probabilities and embeddings of raw (unstandardised) rows.
    pub fn predict(&self, x: &[f32]) -> Result<Prediction, ModelError> {
        let dim = self.arch.dim;
        let mut probs = Vec::new();
        let mut emb = Vec::new();
        for chunk in x.chunks(PREDICT_CHUNK * dim) {
            let (logits, h) = self.forward(&self.input(chunk)?)?;
            let p = candle_nn::ops::softmax_last_dim(&logits)?;
            probs.extend(p.flatten_all()?.to_vec1::<f32>()?);
            emb.extend(h.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(Prediction {
            probs,
            emb,
            classes: self.arch.classes,
            emb_dim: self.arch.emb_dim(),
        })
    }

    /// Every tensor to save: the parameters plus `norm.mean` and `norm.std`.
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>, ModelError> {
        let mut out: HashMap<String, Tensor> = self
            .params
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let g = self.norm.mean.len();
        out.insert(
            "norm.mean".into(),
            Tensor::from_vec(self.norm.mean.clone(), g, &Device::Cpu)?,
        );
        out.insert(
            "norm.std".into(),
            Tensor::from_vec(self.norm.std.clone(), g, &Device::Cpu)?,
        );
        Ok(out)
    }

    /// Rebuilds a network from [`Net::tensors`]' output; shapes are checked.
    pub fn from_tensors(
        arch: Arch,
        mut tensors: HashMap<String, Tensor>,
    ) -> Result<Net, ModelError> {
        let mut take = |name: &str| {
            tensors
                .remove(name)
                .ok_or_else(|| ModelError::MissingTensor(name.to_string()))
        };
        let mut params = Vec::new();
        for (name, shape, _) in arch.params() {
            let t = take(&name)?.to_dtype(DType::F32)?;
            if t.dims() != shape.as_slice() {
                return Err(ModelError::Spec {
                    field: "tensors",
                    message: format!("'{name}' has shape {:?}, expected {shape:?}", t.dims()),
                });
            }
            params.push((name, Var::from_tensor(&t)?));
        }
        let mean = take("norm.mean")?.to_vec1::<f32>()?;
        let std = take("norm.std")?.to_vec1::<f32>()?;
        Ok(Net {
            arch,
            params,
            norm: Norm { mean, std },
        })
    }

    /// An independent copy (new variables).
    pub fn try_clone(&self) -> Result<Net, ModelError> {
        Net::from_tensors(self.arch.clone(), self.tensors()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(id: ModelId, hidden: &[usize], channels: &[usize]) -> Model {
        Model {
            id,
            hidden: hidden.to_vec(),
            channels: channels.to_vec(),
            learner: None,
        }
    }

    #[test]
    fn shapes_of_each_model() {
        let x: Vec<f32> = (0..3 * 64).map(|i| (i % 17) as f32).collect();
        for (m, emb) in [
            (model(ModelId::LogReg, &[], &[]), 64),
            (model(ModelId::Mlp, &[16, 8], &[]), 8),
            (model(ModelId::Cnn, &[32], &[4, 8]), 32),
            (model(ModelId::Cnn, &[], &[4, 8]), 8 * 2 * 2),
        ] {
            let arch = Arch::new(&m, 64, 10).unwrap();
            assert_eq!(arch.emb_dim(), emb, "{m:?}");
            let net = Net::new(arch, 3).unwrap();
            let p = net.predict(&x).unwrap();
            assert_eq!(p.probs.len(), 3 * 10);
            assert_eq!(p.emb.len(), 3 * emb);
            for row in p.probs.chunks(10) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn bad_architectures_are_rejected() {
        let cnn = model(ModelId::Cnn, &[8], &[4]);
        assert!(matches!(
            Arch::new(&cnn, 6, 2),
            Err(ModelError::NotAnImage(6))
        ));
        assert!(matches!(
            Arch::new(&model(ModelId::Mlp, &[8], &[]), 6, 1),
            Err(ModelError::Classes(1))
        ));
        let e = Arch::new(&model(ModelId::Mlp, &[0], &[]), 6, 2).unwrap_err();
        assert_eq!(e.to_string(), "model.hidden: layer widths must be positive");
        let net = Net::new(Arch::new(&model(ModelId::Mlp, &[4], &[]), 3, 2).unwrap(), 0).unwrap();
        assert!(matches!(
            net.predict(&[1.0, 2.0]),
            Err(ModelError::Shape { got: 2, dim: 3 })
        ));
    }

    #[test]
    fn same_seed_same_weights_other_seed_other_weights() {
        let arch = Arch::new(&model(ModelId::Mlp, &[8], &[]), 5, 3).unwrap();
        let a = Net::new(arch.clone(), 7).unwrap();
        let b = Net::new(arch.clone(), 7).unwrap();
        let c = Net::new(arch, 8).unwrap();
        let w = |n: &Net| {
            n.var("fc0.weight")
                .unwrap()
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(w(&a), w(&b));
        assert_ne!(w(&a), w(&c));
    }

    #[test]
    fn norm_fits_per_feature_and_pooled() {
        let x = [1.0, 10.0, 3.0, 30.0];
        let n = Norm::fit(&x, 2, false);
        assert_eq!(n.mean, vec![2.0, 20.0]);
        assert_eq!(n.std, vec![1.0, 10.0]);
        assert_eq!(n.apply(&x, 2), vec![-1.0, -1.0, 1.0, 1.0]);
        let p = Norm::fit(&x, 2, true);
        assert_eq!(p.mean, vec![11.0]);
        // A constant feature does not divide by zero.
        let c = Norm::fit(&[5.0, 5.0], 1, false);
        assert_eq!(c.std, vec![MIN_STD]);
        assert_eq!(c.apply(&[5.0], 1), vec![0.0]);
    }
}
