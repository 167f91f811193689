//! The benchmark's set-up and its measured phases: each function's first
//! start, the baselines, and the rounds of concurrent restores per link ×
//! function × concurrency × run × policy.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use stratus_microvm::snapshot::RestorePolicy;
use stratus_microvm::{MicrovmConfig, MicrovmSandbox};
use stratus_rcss_vm::snapcache::SnapshotCacheConfig;
use stratus_report::fmt_us;
use stratus_sandbox::process::{ProcessConfig, ProcessSandbox};
use stratus_sandbox::{InstanceSpec, LogBuffer, Sandbox};
use stratus_snapstore::RemoteSource;

use super::harness::{
    moved_delta, node, remote, sandbox, serve, spec, start_many, start_one, Ids, LazyKnobs,
    LinkSource, Node, Server,
};
use super::model::{Baseline, FirstStart, FnDef, Round, Sample, Scenario};
use super::SnapshotsArgs;
use crate::shaper::{LinkSpec, Shaper};

/// What every phase shares: the server, the node and one sandbox per
/// function over it. Fields drop in declaration order: the sandboxes
/// before the node, the node before the server.
pub(super) struct Bench<'a> {
    pub sandboxes: Vec<Arc<MicrovmSandbox>>,
    pub node: Node,
    /// The node's reads go through this: to the current link's shaper
    /// while a link is measured, else straight to the server.
    pub link_src: Arc<LinkSource>,
    /// Unshaped client of the server: uploads, and reads between links.
    pub direct: Arc<RemoteSource>,
    pub server: Server,
    pub logs: Arc<LogBuffer>,
    pub base: MicrovmConfig,
    pub work: PathBuf,
    pub fns: Vec<FnDef>,
    pub a: &'a SnapshotsArgs,
    /// Instance ids, unique over all phases.
    pub ids: Ids,
}

/// One measured round: `concurrency` starts of `fns[fi]` by `policy`.
struct RoundAt<'a> {
    link: &'a str,
    fi: usize,
    concurrency: usize,
    run: usize,
    policy: RestorePolicy,
}

impl<'a> Bench<'a> {
    /// Starts the server over `work/store` and a node over it (through a
    /// [`LinkSource`], unshaped for now), with one sandbox per function.
    pub async fn set_up(
        a: &'a SnapshotsArgs,
        fns: Vec<FnDef>,
        work: PathBuf,
        base: MicrovmConfig,
    ) -> Result<Bench<'a>> {
        let logs = Arc::new(LogBuffer::new(1 << 20));
        let server = serve(&work.join("store")).await?;
        let direct = remote(&format!("http://{}", server.addr))?;
        let link_src = Arc::new(LinkSource::new(direct.clone()));
        let node = node(
            &work.join("node"),
            link_src.clone(),
            direct.clone(),
            SnapshotCacheConfig::new(work.join("node/snapshot-cache"), 64 << 30),
            None,
            LazyKnobs {
                fetch_ahead: a.fetch_ahead_kib << 10,
                resume_during_prefetch: !a.wait_for_prefetch,
                exact_faults: !a.block_faults,
            },
        )?;
        let sandboxes = fns
            .iter()
            .map(|f| {
                sandbox(
                    &base,
                    &work.join(format!("vm-{}", f.name)),
                    f,
                    Some(node.snaps.clone()),
                )
                .map(Arc::new)
            })
            .collect::<Result<_>>()?;
        Ok(Bench {
            sandboxes,
            node,
            link_src,
            direct,
            server,
            logs,
            base,
            work,
            fns,
            a,
            ids: Ids::default(),
        })
    }

    /// Per function: boot, warm up, snapshot and upload, then a
    /// working-set restore that records the working set.
    pub async fn first_starts(&self) -> Result<Vec<FirstStart>> {
        let n = &self.node;
        let mut firsts = Vec::new();
        for (f, sb) in self.fns.iter().zip(&self.sandboxes) {
            eprintln!(
                "{}: first start (boot, warm-up, snapshot, upload) ...",
                f.name
            );
            let before = n.snaps.uploads().len();
            let id = self.ids.next("first");
            let (inst, rec) = start_one(
                sb,
                &spec(f, &id, Some(RestorePolicy::WorkingSet), &self.logs),
            )
            .await?;
            inst.stop().await;
            // The working set is published after the first response.
            n.snaps.settled().await;
            if !rec.made_snapshot {
                bail!("{}: the first start did not make the snapshot", f.name);
            }
            let (key, upload) = match n.snaps.uploads().get(before) {
                Some((k, u)) => (Some(k.clone()), Some(*u)),
                None => (None, None),
            };
            eprintln!(
                "{}: snapshot in {}, working set {} chunks, upload {:?}",
                f.name,
                fmt_us(rec.fetch_us),
                rec.stats.recorded_chunks,
                upload
            );
            firsts.push(FirstStart {
                function: f.name.clone(),
                guest_mib: f.guest_mib,
                snapshot_us: rec.fetch_us,
                restore_us: rec.restore_us,
                first_response_us: rec.first_response_us,
                upload,
                working_set_chunks: rec.stats.recorded_chunks,
                key,
            });
        }
        Ok(firsts)
    }

    /// Per function and run: a microVM booted without snapshots, and the
    /// same function in a process sandbox.
    pub async fn baselines(&self) -> Result<Vec<Baseline>> {
        let mut baselines = Vec::new();
        let process = ProcessSandbox::new(ProcessConfig {
            // The directory of this binary, as for the guests.
            extra_path: self.base.extra_path.clone(),
            workdir: self.work.clone(),
            pid_dir: Some(self.work.join("process-pids")),
            stop_grace: Duration::from_secs(1),
            user: None,
            cgroups: None,
        });
        for f in &self.fns {
            eprintln!("{}: baselines (full boot, process) ...", f.name);
            let boot = sandbox(
                &self.base,
                &self.work.join(format!("boot-{}", f.name)),
                f,
                None,
            )?;
            for run in 0..self.a.runs {
                let id = self.ids.next("boot");
                let (inst, rec) = start_one(&boot, &spec(f, &id, None, &self.logs)).await?;
                inst.stop().await;
                baselines.push(Baseline {
                    function: f.name.clone(),
                    guest_mib: f.guest_mib,
                    kind: "full-boot",
                    run,
                    total_us: rec.fetch_us + rec.restore_us + rec.first_response_us,
                });
                let id = self.ids.next("proc");
                let s = spec(f, &id, None, &self.logs);
                let t = Instant::now();
                let (inst, timing) = process
                    .start(&s)
                    .await
                    .map_err(|e| anyhow::anyhow!("process start of {}: {e}", f.name))?;
                let wall = t.elapsed().as_micros() as u64;
                inst.stop().await;
                let total = timing.fetch_us + timing.mount_us + timing.spawn_us + timing.ready_us;
                baselines.push(Baseline {
                    function: f.name.clone(),
                    guest_mib: f.guest_mib,
                    kind: "process",
                    run,
                    total_us: if total > 0 { total } else { wall },
                });
            }
        }
        Ok(baselines)
    }

    /// The measured rounds, per link × function × concurrency × run ×
    /// policy (policies take turns within a run, so that drift hits all
    /// alike). A round that fails is recorded in `failures` and skipped.
    pub async fn measured_rounds(
        &self,
        links: &[(String, LinkSpec)],
        failures: &mut Vec<String>,
    ) -> Result<(Vec<Sample>, Vec<Round>)> {
        let a = self.a;
        let total_rounds = links.len() * self.fns.len() * a.concurrency.len() * a.runs * 4;
        let bar = indicatif::ProgressBar::new(total_rounds as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let mut samples: Vec<Sample> = Vec::new();
        let mut rounds: Vec<Round> = Vec::new();
        for (lname, link) in links {
            let shaper = Shaper::start(self.server.addr, *link).await?;
            let shaped = remote(&format!("http://{}", shaper.addr))?;
            self.link_src.set(shaped.clone());
            for (fi, f) in self.fns.iter().enumerate() {
                for &k in &a.concurrency {
                    for run in 0..a.runs {
                        for policy in RestorePolicy::ALL {
                            bar.set_message(format!("{lname} {} {policy} x{k}", f.name));
                            let at = RoundAt {
                                link: lname,
                                fi,
                                concurrency: k,
                                run,
                                policy,
                            };
                            match self.round(&shaped, &at).await {
                                Ok((s, r)) => {
                                    samples.extend(s);
                                    rounds.push(r);
                                }
                                Err(msg) => {
                                    eprintln!("FAILED: {msg}");
                                    failures.push(msg);
                                }
                            }
                            bar.inc(1);
                        }
                    }
                }
            }
            self.link_src.set(self.direct.clone());
        }
        bar.finish_and_clear();
        Ok((samples, rounds))
    }

    /// One round: the node made cold (a warm-local round then fills the
    /// snapshot cache with one unmeasured eager start), a pause, then N
    /// concurrent starts. The error is the failure's line for the report.
    async fn round(
        &self,
        shaped: &RemoteSource,
        at: &RoundAt<'_>,
    ) -> std::result::Result<(Vec<Sample>, Round), String> {
        let (f, sb) = (&self.fns[at.fi], &self.sandboxes[at.fi]);
        let (lname, k, run, policy) = (at.link, at.concurrency, at.run, at.policy);
        let n = &self.node;
        n.chunks.clear_memory();
        n.snaps.cache().clear();
        if policy == RestorePolicy::WarmLocal {
            let id = self.ids.next("fill");
            match start_one(sb, &spec(f, &id, Some(RestorePolicy::Eager), &self.logs)).await {
                Ok((inst, _)) => inst.stop().await,
                Err(e) => {
                    return Err(format!(
                        "{lname} {} warm-local fill x{k} run {run}: {e:#}",
                        f.name
                    ))
                }
            }
        }
        n.snaps.settled().await;
        tokio::time::sleep(Duration::from_millis(self.a.pause_ms)).await;
        let (m0, r0) = (n.snaps.moved(), shaped.stats());
        let specs: Vec<InstanceSpec> = (0..k)
            .map(|_| spec(f, &self.ids.next(policy.as_str()), Some(policy), &self.logs))
            .collect();
        let recs = start_many(sb, specs)
            .await
            .map_err(|e| format!("{lname} {} {policy} x{k} run {run}: {e:#}", f.name))?;
        let (m1, r1) = (n.snaps.moved(), shaped.stats());
        // A refined working set is published after the restores
        // answered: not part of this round.
        n.snaps.settled().await;
        let sc = Scenario {
            link: lname,
            function: &f.name,
            guest_mib: f.guest_mib,
            concurrency: k,
        };
        let samples = recs
            .iter()
            .map(|(id, rec)| Sample::new(&sc, run, id.clone(), rec))
            .collect();
        let round = Round {
            link: lname.to_string(),
            function: f.name.clone(),
            policy: policy.to_string(),
            concurrency: k,
            run,
            link_bytes: r1.bytes_fetched - r0.bytes_fetched,
            link_requests: r1.requests - r0.requests,
            moved: moved_delta(m0, m1),
        };
        Ok((samples, round))
    }
}
