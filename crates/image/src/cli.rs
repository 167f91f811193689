//! `stratus image …`: argument types and the glue behind them.

use crate::build::{self, BuildOptions, ImageSummary};
use crate::convert::{self, ConvertOptions};
use crate::estargz::WriteOptions;
use crate::extract::{self, ExtractOptions};
use crate::lazyfs::{self, MountOptions};
use crate::oci::{Layout, ProcessConfig};
use crate::source::DirBlobSource;
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::signal::unix::{signal, Signal, SignalKind};

#[derive(clap::Subcommand, Debug)]
pub enum ImageCmd {
    /// Import an OCI image layout directory or a `docker save` tarball.
    Import {
        path: PathBuf,
        /// Output OCI layout directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Build an image from a directory (no Docker needed).
    Build {
        dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Put the new layer on top of this image (an OCI layout).
        #[arg(long)]
        base: Option<PathBuf>,
        /// Entrypoint, as a JSON array or a single word.
        #[arg(long)]
        entrypoint: Option<String>,
        /// Cmd, as a JSON array or a single word.
        #[arg(long)]
        cmd: Option<String>,
        /// KEY=VALUE; repeatable.
        #[arg(long = "env")]
        env: Vec<String>,
        #[arg(long)]
        workdir: Option<String>,
        /// Clamp file mtimes to this many seconds since the epoch
        /// (deterministic output).
        #[arg(long)]
        mtime: Option<u64>,
        /// Record files as owned by root.
        #[arg(long)]
        root_owned: bool,
    },
    /// Convert an image's layers to eStargz.
    Convert {
        layout: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// A file listing paths to prioritise, one per line (as written by
        /// `stratus image mount --record`).
        #[arg(long)]
        prioritize: Option<PathBuf>,
        /// Chunk size in bytes.
        #[arg(long, default_value_t = crate::estargz::DEFAULT_CHUNK_SIZE)]
        chunk_size: u64,
    },
    /// Full pull baseline: extract all layers into a directory.
    Extract { layout: PathBuf, dest: PathBuf },
    /// Mount an eStargz image lazily (debug aid); unmounts on Ctrl-C.
    Mount {
        layout: PathBuf,
        mountpoint: PathBuf,
        /// On exit, write the files opened, in order, here.
        #[arg(long)]
        record: Option<PathBuf>,
        #[arg(long)]
        no_prefetch: bool,
    },
}

fn json_or_word(s: &str) -> Result<Vec<String>> {
    if s.trim_start().starts_with('[') {
        serde_json::from_str(s).with_context(|| format!("{s:?} is not a JSON array of strings"))
    } else {
        Ok(vec![s.to_string()])
    }
}

fn summary(what: &str, s: &ImageSummary) -> String {
    let mut out = format!(
        "{what}: manifest {} ({} layers)\n",
        s.manifest.digest,
        s.layers.len()
    );
    for (l, d) in s.layers.iter().zip(&s.diff_ids) {
        let _ = writeln!(out, "  layer {} {} bytes (diff {d})", l.digest, l.size);
    }
    out
}

/// SIGINT and SIGTERM, caught from [`StopSignals::install`] on: either one
/// ends [`StopSignals::wait`] instead of the process, so a mount is
/// unmounted on Ctrl-C or `kill`. A signal that arrives before `wait` is
/// kept, not lost.
struct StopSignals {
    rt: tokio::runtime::Runtime,
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    fn install() -> Result<StopSignals> {
        // Its own small runtime: `run` is synchronous (the CLI calls it on a
        // blocking thread).
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .context("starting the signal runtime")?;
        let (interrupt, terminate) = {
            let _in_rt = rt.enter();
            (
                signal(SignalKind::interrupt()).context("catching SIGINT")?,
                signal(SignalKind::terminate()).context("catching SIGTERM")?,
            )
        };
        Ok(StopSignals {
            rt,
            interrupt,
            terminate,
        })
    }

    /// Blocks until SIGINT or SIGTERM.
    fn wait(mut self) {
        self.rt.block_on(async {
            tokio::select! {
                _ = self.interrupt.recv() => {}
                _ = self.terminate.recv() => {}
            }
        });
    }
}

/// Runs a command; returns what to print.
pub fn run(cmd: ImageCmd) -> Result<String> {
    match cmd {
        ImageCmd::Import { path, out } => {
            let s = build::import(&path, &out)
                .with_context(|| format!("importing {}", path.display()))?;
            Ok(summary("imported", &s))
        }
        ImageCmd::Build {
            dir,
            out,
            base,
            entrypoint,
            cmd,
            env,
            workdir,
            mtime,
            root_owned,
        } => {
            let opts = BuildOptions {
                base,
                process: ProcessConfig {
                    entrypoint: entrypoint.as_deref().map(json_or_word).transpose()?,
                    cmd: cmd.as_deref().map(json_or_word).transpose()?,
                    env,
                    working_dir: workdir,
                    user: None,
                },
                mtime,
                root_owned,
            };
            let s = build::build(&dir, &out, &opts)
                .with_context(|| format!("building {}", dir.display()))?;
            Ok(summary("built", &s))
        }
        ImageCmd::Convert {
            layout,
            out,
            prioritize,
            chunk_size,
        } => {
            let prioritized = match &prioritize {
                Some(p) => convert::read_priority_list(
                    &std::fs::read_to_string(p)
                        .with_context(|| format!("reading {}", p.display()))?,
                ),
                None => Vec::new(),
            };
            let opts = ConvertOptions {
                write: WriteOptions {
                    chunk_size: chunk_size.max(4096),
                    ..Default::default()
                },
                prioritized,
                ..Default::default()
            };
            let s = convert::convert(&layout, &out, &opts)
                .with_context(|| format!("converting {}", layout.display()))?;
            Ok(summary("converted", &s))
        }
        ImageCmd::Extract { layout, dest } => {
            let l = Layout::open(&layout)?;
            let st = extract::extract_image(&l, &dest, &ExtractOptions::default())
                .with_context(|| format!("extracting {}", layout.display()))?;
            Ok(format!(
                "extracted {} layers, {} entries, {} bytes, {} whiteouts into {}\n",
                st.layers,
                st.entries,
                st.bytes,
                st.whiteouts,
                dest.display()
            ))
        }
        ImageCmd::Mount {
            layout,
            mountpoint,
            record,
            no_prefetch,
        } => {
            let l = Layout::open(&layout)?;
            let src = Arc::new(DirBlobSource::for_layout(&l));
            let opts = MountOptions {
                prefetch: !no_prefetch,
                ..Default::default()
            };
            let stop = StopSignals::install()?;
            let h = lazyfs::mount_layout(&l, src, &mountpoint, &opts)
                .with_context(|| format!("mounting {}", layout.display()))?;
            eprintln!(
                "mounted {} at {}; Ctrl-C to unmount",
                layout.display(),
                mountpoint.display()
            );
            stop.wait();
            if let Some(r) = &record {
                h.write_access_list(r)
                    .with_context(|| format!("writing {}", r.display()))?;
            }
            let stats = h.stats();
            h.unmount().context("unmounting")?;
            Ok(format!("{}\n", serde_json::to_string(&stats)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StopSignals;
    use rustix::process::{getpid, kill_process, Signal};
    use std::time::Duration;

    #[test]
    fn sigint_and_sigterm_end_the_wait_not_the_process() {
        // Where `stratus image mount` runs it: on a blocking thread of the
        // CLI's runtime.
        let rt = tokio::runtime::Runtime::new().unwrap();
        for sig in [Signal::INT, Signal::TERM] {
            let waited = rt.block_on(async move {
                let wait = tokio::task::spawn_blocking(move || {
                    let stop = StopSignals::install().unwrap();
                    // Sent before the wait starts: kept, not lost.
                    kill_process(getpid(), sig).unwrap();
                    stop.wait();
                });
                tokio::time::timeout(Duration::from_secs(60), wait).await
            });
            assert!(
                matches!(waited, Ok(Ok(()))),
                "{sig:?} did not end the wait: {waited:?}"
            );
        }
    }
}
