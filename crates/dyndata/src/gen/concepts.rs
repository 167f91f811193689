//! The four generators' concepts, after their published definitions (this
//! is a reimplementation from the papers and MOA's and river's docs, not a
//! port): each draws one sample's features and labels it.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// One concept of a stream: draws a labelled sample.
pub trait Concept {
    /// Features and class of the next sample.
    fn sample(&mut self, rng: &mut ChaCha8Rng) -> (Vec<f64>, u32);
}

/// SEA (Street & Kim, KDD 2001): three features uniform in [0, 10]; the
/// class is 0 when `x0 + x1 <= θ`, else 1 (`x2` is irrelevant). The four
/// concepts have θ = 8, 9, 7 and 9.5.
pub struct Sea {
    pub threshold: f64,
}

/// θ of SEA's four concepts.
pub const SEA_THRESHOLDS: [f64; 4] = [8.0, 9.0, 7.0, 9.5];

impl Sea {
    pub fn label(&self, x: &[f64]) -> u32 {
        u32::from(x[0] + x[1] > self.threshold)
    }
}

impl Concept for Sea {
    fn sample(&mut self, rng: &mut ChaCha8Rng) -> (Vec<f64>, u32) {
        let x: Vec<f64> = (0..3).map(|_| rng.random::<f64>() * 10.0).collect();
        let y = self.label(&x);
        (x, y)
    }
}

/// Agrawal et al. (IEEE TKDE 1993): nine attributes of a loan applicant
/// and ten classification functions (0-based here: function `k` is the
/// paper's F(k+1)). Class 0 is the paper's group A (as in MOA).
///
/// Attributes: salary U[20k, 150k]; commission 0 when salary >= 75k, else
/// U[10k, 85k); age 20..=80; elevel 0..=4; car 1..=20; zipcode 0..=8;
/// hvalue (9 - zipcode) · 100k · U[0.5, 1.5); hyears 1..=30; loan U[0, 500k).
/// With `perturbation` p > 0 (MOA's and river's extension), salary,
/// commission (when not 0), age, hvalue, hyears and loan move by up to
/// p times their range, clamped to it, after the label is decided.
///
/// river differs: it labels functions 0 to 5 with the opposite polarity,
/// and its function 4 compares salary where the paper compares the loan.
pub struct Agrawal {
    pub function: usize,
    pub perturbation: f64,
}

/// Agrawal's attribute names, in feature order.
pub const AGRAWAL_FEATURES: [&str; 9] = [
    "salary",
    "commission",
    "age",
    "elevel",
    "car",
    "zipcode",
    "hvalue",
    "hyears",
    "loan",
];

impl Agrawal {
    /// Whether the applicant is in group A under function `f` (0..=9).
    pub fn group_a(f: usize, x: &[f64]) -> bool {
        let [salary, commission, age, elevel, _car, _zip, hvalue, hyears, loan] =
            <[f64; 9]>::try_from(x).expect("nine attributes");
        let within = |v: f64, lo: f64, hi: f64| (lo..=hi).contains(&v);
        let by_age = |young: bool, mid: bool, old: bool| {
            if age < 40.0 {
                young
            } else if age < 60.0 {
                mid
            } else {
                old
            }
        };
        let el = |levels: &[f64]| levels.contains(&elevel);
        let total = salary + commission;
        match f {
            0 => !(40.0..60.0).contains(&age),
            1 => by_age(
                within(salary, 50e3, 100e3),
                within(salary, 75e3, 125e3),
                within(salary, 25e3, 75e3),
            ),
            2 => by_age(el(&[0.0, 1.0]), el(&[1.0, 2.0, 3.0]), el(&[2.0, 3.0, 4.0])),
            3 => by_age(
                if el(&[0.0, 1.0]) {
                    within(salary, 25e3, 75e3)
                } else {
                    within(salary, 50e3, 100e3)
                },
                if el(&[1.0, 2.0, 3.0]) {
                    within(salary, 50e3, 100e3)
                } else {
                    within(salary, 75e3, 125e3)
                },
                if el(&[2.0, 3.0, 4.0]) {
                    within(salary, 50e3, 100e3)
                } else {
                    within(salary, 25e3, 75e3)
                },
            ),
            4 => by_age(
                if within(salary, 50e3, 100e3) {
                    within(loan, 100e3, 300e3)
                } else {
                    within(loan, 200e3, 400e3)
                },
                if within(salary, 75e3, 125e3) {
                    within(loan, 200e3, 400e3)
                } else {
                    within(loan, 300e3, 500e3)
                },
                if within(salary, 25e3, 75e3) {
                    within(loan, 300e3, 500e3)
                } else {
                    within(loan, 100e3, 300e3)
                },
            ),
            5 => by_age(
                within(total, 50e3, 100e3),
                within(total, 75e3, 125e3),
                within(total, 25e3, 75e3),
            ),
            6 => 2.0 * total / 3.0 - loan / 5.0 - 20e3 > 0.0,
            7 => 2.0 * total / 3.0 - 5000.0 * elevel - 20e3 > 0.0,
            8 => 2.0 * total / 3.0 - 5000.0 * elevel - loan / 5.0 - 10e3 > 0.0,
            _ => {
                let equity = if hyears >= 20.0 {
                    hvalue * (hyears - 20.0) / 10.0
                } else {
                    0.0
                };
                2.0 * total / 3.0 - 5000.0 * elevel + equity / 5.0 - 10e3 > 0.0
            }
        }
    }
}

impl Concept for Agrawal {
    fn sample(&mut self, rng: &mut ChaCha8Rng) -> (Vec<f64>, u32) {
        let salary = 20e3 + 130e3 * rng.random::<f64>();
        let commission = if salary >= 75e3 {
            0.0
        } else {
            10e3 + 75e3 * rng.random::<f64>()
        };
        let age = f64::from(rng.random_range(20..=80u32));
        let elevel = f64::from(rng.random_range(0..=4u32));
        let car = f64::from(rng.random_range(1..=20u32));
        let zip = f64::from(rng.random_range(0..=8u32));
        let hbase = (9.0 - zip) * 100e3;
        let hvalue = hbase * (0.5 + rng.random::<f64>());
        let hyears = f64::from(rng.random_range(1..=30u32));
        let loan = 500e3 * rng.random::<f64>();
        let mut x = vec![
            salary, commission, age, elevel, car, zip, hvalue, hyears, loan,
        ];
        let y = u32::from(!Agrawal::group_a(self.function, &x));
        let p = self.perturbation;
        if p > 0.0 {
            let mut perturb = |v: f64, lo: f64, hi: f64| {
                (v + (hi - lo) * p * (2.0 * rng.random::<f64>() - 1.0)).clamp(lo, hi)
            };
            x[0] = perturb(x[0], 20e3, 150e3);
            if x[1] > 0.0 {
                x[1] = perturb(x[1], 10e3, 85e3);
            }
            x[2] = perturb(x[2], 20.0, 80.0).round();
            x[6] = perturb(x[6], hbase * 0.5, hbase * 1.5);
            x[7] = perturb(x[7], 1.0, 30.0).round();
            x[8] = perturb(x[8], 0.0, 500e3);
        }
        (x, y)
    }
}

/// Rotating hyperplane (Hulten, Spencer & Domingos, KDD 2001; as MOA's
/// HyperplaneGenerator): `d` features uniform in [0, 1] and weights
/// uniform in [0, 1); class 1 when `Σ wᵢxᵢ >= ½ Σ wᵢ`. After each sample
/// the first `drift_features` weights move by `mag_change` in their
/// direction, which reverses with probability `sigma`.
pub struct Hyperplane {
    pub weights: Vec<f64>,
    pub direction: Vec<f64>,
    pub drift_features: usize,
    pub mag_change: f64,
    pub sigma: f64,
}

impl Hyperplane {
    pub fn new(
        rng: &mut ChaCha8Rng,
        d: usize,
        drift_features: usize,
        mag_change: f64,
        sigma: f64,
    ) -> Self {
        Hyperplane {
            weights: (0..d).map(|_| rng.random::<f64>()).collect(),
            direction: vec![1.0; d],
            drift_features: drift_features.min(d),
            mag_change,
            sigma,
        }
    }

    pub fn label(&self, x: &[f64]) -> u32 {
        let sum: f64 = self.weights.iter().zip(x).map(|(w, x)| w * x).sum();
        u32::from(sum >= 0.5 * self.weights.iter().sum::<f64>())
    }
}

impl Concept for Hyperplane {
    fn sample(&mut self, rng: &mut ChaCha8Rng) -> (Vec<f64>, u32) {
        let x: Vec<f64> = (0..self.weights.len())
            .map(|_| rng.random::<f64>())
            .collect();
        let y = self.label(&x);
        for i in 0..self.drift_features {
            self.weights[i] += self.direction[i] * self.mag_change;
            if rng.random::<f64>() < self.sigma {
                self.direction[i] = -self.direction[i];
            }
        }
        (x, y)
    }
}

/// One centroid of [`RandomRbf`].
pub struct Centroid {
    pub centre: Vec<f64>,
    pub class: u32,
    pub std_dev: f64,
    pub weight: f64,
    /// Per-sample movement (drifting centroids), else zeros.
    pub speed: Vec<f64>,
}

/// Random RBF with drift (as MOA's RandomRBFGeneratorDrift): centroids
/// with a random centre in [0, 1]^d, class, standard deviation U[0, 1) and
/// weight U[0, 1). A sample picks a centroid by weight and lies in a
/// uniformly random direction from its centre at a distance drawn from
/// N(0, std_dev). The first `drift_centroids` centroids move by
/// `change_speed` per sample in a random direction, bouncing off the
/// faces of the unit cube.
pub struct RandomRbf {
    pub centroids: Vec<Centroid>,
}

impl RandomRbf {
    pub fn new(
        rng: &mut ChaCha8Rng,
        d: usize,
        classes: u32,
        centroids: usize,
        drift_centroids: usize,
        change_speed: f64,
    ) -> Self {
        let centroids = (0..centroids)
            .map(|i| {
                let centre: Vec<f64> = (0..d).map(|_| rng.random::<f64>()).collect();
                let class = rng.random_range(0..classes);
                let std_dev = rng.random::<f64>();
                let weight = rng.random::<f64>();
                let speed = if i < drift_centroids {
                    let v = unit_vector(rng, d);
                    v.into_iter().map(|x| x * change_speed).collect()
                } else {
                    vec![0.0; d]
                };
                Centroid {
                    centre,
                    class,
                    std_dev,
                    weight,
                    speed,
                }
            })
            .collect();
        RandomRbf { centroids }
    }
}

impl Concept for RandomRbf {
    fn sample(&mut self, rng: &mut ChaCha8Rng) -> (Vec<f64>, u32) {
        let total: f64 = self.centroids.iter().map(|c| c.weight).sum();
        let mut pick = rng.random::<f64>() * total;
        let mut chosen = self.centroids.len() - 1;
        for (i, c) in self.centroids.iter().enumerate() {
            if pick < c.weight {
                chosen = i;
                break;
            }
            pick -= c.weight;
        }
        let c = &self.centroids[chosen];
        let dir = unit_vector(rng, c.centre.len());
        let dist = gaussian(rng) * c.std_dev;
        let x = c
            .centre
            .iter()
            .zip(&dir)
            .map(|(m, u)| m + u * dist)
            .collect();
        let y = c.class;
        for c in &mut self.centroids {
            for (m, s) in c.centre.iter_mut().zip(c.speed.iter_mut()) {
                *m += *s;
                if *m > 1.0 || *m < 0.0 {
                    *m = m.clamp(0.0, 1.0);
                    *s = -*s;
                }
            }
        }
        (x, y)
    }
}

/// A direction: coordinates uniform in [-1, 1], normalised.
fn unit_vector(rng: &mut ChaCha8Rng, d: usize) -> Vec<f64> {
    loop {
        let v: Vec<f64> = (0..d).map(|_| 2.0 * rng.random::<f64>() - 1.0).collect();
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if n > 1e-12 {
            return v.into_iter().map(|x| x / n).collect();
        }
    }
}

/// A standard normal draw (Box–Muller).
fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}
