//! `stratus data gen KIND --samples N --seed S [--drift-at P,...]
//! [--drift-width W] [--concepts C,...] [--noise X] [--class-weights W,...]
//! [generator flags]
//! -o OUT.csv`: plain arguments in, a one-line summary out. A flag that
//! does not apply to the generator is an error, and the file appears whole
//! or not at all (written to a temporary name, then renamed).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{to_csv, GenError, GenSpec, Kind};

/// The arguments, as the command line gives them.
#[derive(Debug, Clone, Default)]
pub struct GenArgs {
    /// sea | agrawal | hyperplane | rbf
    pub kind: String,
    pub samples: u64,
    pub seed: u64,
    pub drift_at: Vec<u64>,
    pub drift_width: u64,
    pub concepts: Option<Vec<usize>>,
    pub noise: Option<f64>,
    pub class_weights: Option<Vec<f64>>,
    pub perturbation: Option<f64>,
    pub features: Option<usize>,
    pub drift_features: Option<usize>,
    pub mag_change: Option<f64>,
    pub sigma: Option<f64>,
    pub classes: Option<u32>,
    pub centroids: Option<usize>,
    pub drift_centroids: Option<usize>,
    pub change_speed: Option<f64>,
    pub out: PathBuf,
}

/// A failed `data gen`.
#[derive(Debug, thiserror::Error)]
pub enum GenCliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Spec(#[from] GenError),
    #[error("write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl GenArgs {
    /// The stream these arguments describe.
    pub fn spec(&self) -> Result<GenSpec, GenCliError> {
        let a = self;
        let given: [(&str, bool); 9] = [
            ("perturbation", a.perturbation.is_some()),
            ("features", a.features.is_some()),
            ("drift-features", a.drift_features.is_some()),
            ("mag-change", a.mag_change.is_some()),
            ("sigma", a.sigma.is_some()),
            ("classes", a.classes.is_some()),
            ("centroids", a.centroids.is_some()),
            ("drift-centroids", a.drift_centroids.is_some()),
            ("change-speed", a.change_speed.is_some()),
        ];
        let (kind, allowed, noise): (Kind, &[&str], f64) = match a.kind.as_str() {
            "sea" => (Kind::Sea, &[], 0.0),
            "agrawal" => (
                Kind::Agrawal {
                    perturbation: a.perturbation.unwrap_or(0.0),
                },
                &["perturbation"],
                0.0,
            ),
            "hyperplane" => (
                Kind::Hyperplane {
                    features: a.features.unwrap_or(10),
                    drift_features: a.drift_features.unwrap_or(2),
                    mag_change: a.mag_change.unwrap_or(0.0),
                    sigma: a.sigma.unwrap_or(0.1),
                },
                &["features", "drift-features", "mag-change", "sigma"],
                0.05,
            ),
            "rbf" => (
                Kind::Rbf {
                    features: a.features.unwrap_or(10),
                    classes: a.classes.unwrap_or(2),
                    centroids: a.centroids.unwrap_or(50),
                    drift_centroids: a.drift_centroids.unwrap_or(50),
                    change_speed: a.change_speed.unwrap_or(0.0),
                },
                &[
                    "features",
                    "classes",
                    "centroids",
                    "drift-centroids",
                    "change-speed",
                ],
                0.0,
            ),
            other => {
                return Err(GenCliError::Usage(format!(
                    "unknown generator '{other}'; use sea, agrawal, hyperplane or rbf"
                )))
            }
        };
        if let Some((flag, _)) = given.iter().find(|(f, g)| *g && !allowed.contains(f)) {
            return Err(GenCliError::Usage(format!(
                "--{flag} does not apply to {}; its flags: {}",
                a.kind,
                if allowed.is_empty() {
                    "none beyond the common ones".to_string()
                } else {
                    allowed
                        .iter()
                        .map(|f| format!("--{f}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )));
        }
        let spec = GenSpec {
            kind,
            samples: a.samples,
            seed: a.seed,
            drift_at: a.drift_at.clone(),
            drift_width: a.drift_width,
            concepts: a.concepts.clone(),
            noise: a.noise.unwrap_or(noise),
            class_weights: a.class_weights.clone(),
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// Generates the stream into `args.out`; returns what was written.
pub fn gen(args: &GenArgs) -> Result<String, GenCliError> {
    let spec = args.spec()?;
    let text = to_csv(&spec)?;
    write_whole(&args.out, text.as_bytes())?;
    Ok(format!(
        "wrote {} samples of {} ({} features, concepts {:?}, drifts at {:?}) to {}\n",
        spec.samples,
        args.kind,
        spec.feature_names().len(),
        spec.concept_list()?,
        spec.drift_at,
        args.out.display()
    ))
}

/// Writes `bytes` to a temporary file beside `path`, then renames it.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), GenCliError> {
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let err = |p: &Path| {
        let path = p.to_path_buf();
        move |source| GenCliError::Write { path, source }
    };
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(&tmp)(e));
    }
    std::fs::rename(&tmp, path).map_err(err(path))
}
