//! The report directory: `config.json` (what ran: the command's settings,
//! seed, machine, git revision, start time) written first, then whatever
//! files the run produces, each written atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::ReportError;

/// Facts about the machine a report was measured on.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub hostname: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let memory_gib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / (1024.0 * 1024.0))
            .unwrap_or(0.0);
        Machine {
            cpu_model,
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            memory_gib: (memory_gib * 10.0).round() / 10.0,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} cores ({}), {:.1} GiB RAM, Linux {}",
            self.cores, self.cpu_model, self.memory_gib, self.kernel
        )
    }
}

/// The revision of the source this binary was built from: `git rev-parse
/// HEAD` plus `-dirty` when tracked files have changes, asked of the source
/// tree it was built from (not of the working directory, which may be any
/// other repository or none). Where that tree or git is gone, the revision
/// embedded at build time ([`build_revision`]) with ` (at build)`; without
/// either, "unknown".
pub fn git_revision() -> String {
    revision_in(Path::new(env!("CARGO_MANIFEST_DIR")))
        .or_else(|| {
            let b = build_revision();
            (!b.is_empty()).then(|| format!("{b} (at build)"))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The revision embedded by the build script: empty when the crate was
/// built outside a git checkout.
pub fn build_revision() -> &'static str {
    env!("STRATUS_BUILD_GIT_REVISION")
}

/// `git rev-parse HEAD` (plus `-dirty`) of the checkout holding `dir`.
fn revision_in(dir: &Path) -> Option<String> {
    let out = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let rev = out(&["rev-parse", "HEAD"])?;
    let dirty =
        out(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{rev}-dirty") } else { rev })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The revision is the source's (asked of the tree it was built from,
    /// so the working directory plays no part): a commit id, not "unknown".
    /// A directory outside any checkout has none.
    #[test]
    fn revision_is_the_sources() {
        let rev = git_revision();
        let id = rev.split(['-', ' ']).next().unwrap();
        assert!(
            id.len() == 40 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "{rev}"
        );
        // The build script ran in the same checkout: same commit.
        assert!(build_revision().starts_with(id), "{}", build_revision());
        let outside = std::env::temp_dir();
        assert_eq!(revision_in(&outside.join("no such dir")), None);
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ReportHeader {
    /// Which benchmark wrote it (e.g. `workflow-run`).
    pub kind: String,
    pub stratus_version: String,
    pub git_revision: String,
    pub started_unix_ms: u64,
    pub machine: Machine,
    /// The benchmark's own settings, seed included.
    pub config: serde_json::Value,
}

pub struct ReportDir {
    pub path: PathBuf,
}

impl ReportDir {
    /// Creates `path` (it must be empty or absent) and writes `config.json`.
    pub fn create(
        path: &Path,
        kind: &str,
        config: serde_json::Value,
    ) -> Result<ReportDir, ReportError> {
        if path.exists()
            && std::fs::read_dir(path)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
        {
            return Err(ReportError::NotEmpty(path.to_path_buf()));
        }
        std::fs::create_dir_all(path).map_err(ReportError::io("creating", path))?;
        let header = ReportHeader {
            kind: kind.into(),
            stratus_version: env!("CARGO_PKG_VERSION").into(),
            git_revision: git_revision(),
            started_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            machine: Machine::detect(),
            config,
        };
        let dir = ReportDir {
            path: path.to_path_buf(),
        };
        dir.write_json("config.json", &header)?;
        Ok(dir)
    }

    /// Writes a file atomically (temporary name, then rename).
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), ReportError> {
        let dst = self.path.join(name);
        let file = dst
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dst.with_file_name(format!(".{file}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        };
        write().map_err(ReportError::io("writing", &tmp))?;
        std::fs::rename(&tmp, &dst).map_err(ReportError::io("writing", &dst))
    }

    pub fn write_json(&self, name: &str, v: &impl Serialize) -> Result<(), ReportError> {
        let bytes = serde_json::to_vec_pretty(v).map_err(|source| ReportError::Json {
            path: self.path.join(name),
            source,
        })?;
        self.write(name, &bytes)
    }

    pub fn read_header(path: &Path) -> Result<ReportHeader, ReportError> {
        let p = path.join("config.json");
        let text =
            std::fs::read_to_string(&p).map_err(|_| ReportError::NotAReport(path.to_path_buf()))?;
        serde_json::from_str(&text).map_err(|source| ReportError::Json { path: p, source })
    }
}
