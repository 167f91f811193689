//! Prequential accuracy and learn speed of the stream learners on a
//! data/drift stream (default Elec2). Run on one core in release:
//!
//!     cargo build --release -p stratus-learn --example elec2_bench
//!     taskset -c 0 target/release/examples/elec2_bench [data/drift/elec2.csv] [reps]
//!
//! Prints one line per model: prequential accuracy, and the median over `reps`
//! runs of samples/s for the prequential loop (predict then learn) and for
//! learning alone, by wall time and by this thread's CPU time (Linux
//! `/proc/thread-self/stat`, 10 ms ticks; robust to other load on the core).

use std::time::Instant;

use stratus_learn::{
    prequential, AdaptiveRandomForest, ArfConfig, HatConfig, HoeffdingAdaptiveTree, HoeffdingTree,
    Learner, MaxFeatures, TreeConfig,
};

/// A row with a non-numeric cell is the header (digits8x8.csv has none).
fn is_header(line: &str) -> bool {
    line.split(',').any(|c| c.trim().parse::<f64>().is_err())
}

fn load(path: &str) -> (Vec<f32>, Vec<usize>, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (mut xs, mut ys, mut d) = (Vec::new(), Vec::new(), 0);
    for line in text.lines().filter(|l| !l.is_empty() && !is_header(l)) {
        let cells: Vec<f64> = line
            .split(',')
            .map(|c| c.parse().unwrap_or_else(|e| panic!("{path}: {line}: {e}")))
            .collect();
        d = cells.len() - 1;
        xs.extend(cells[..d].iter().map(|&v| v as f32));
        ys.push(cells[d] as usize);
    }
    (xs, ys, d)
}

/// This thread's user + system CPU seconds.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat: 11 and 12 after the name.
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    tick(11)
        .zip(tick(12))
        .map_or(f64::NAN, |(u, s)| (u + s) / 100.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

type Make = Box<dyn Fn(usize, usize) -> Box<dyn Learner>>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("data/drift/elec2.csv");
    let reps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let (xs, ys, d) = load(path);
    let nc = ys.iter().max().unwrap() + 1;
    let models: Vec<(&str, Make)> = vec![
        (
            "hoeffding_tree",
            Box::new(|d, nc| Box::new(HoeffdingTree::new(TreeConfig::default(), d, nc).unwrap())),
        ),
        (
            "hat",
            Box::new(|d, nc| {
                Box::new(
                    HoeffdingAdaptiveTree::new(
                        HatConfig {
                            seed: 42,
                            ..HatConfig::default()
                        },
                        d,
                        nc,
                    )
                    .unwrap(),
                )
            }),
        ),
        (
            "arf10",
            Box::new(|d, nc| {
                Box::new(AdaptiveRandomForest::new(ArfConfig::default(), d, nc).unwrap())
            }),
        ),
        (
            "arf10_river_subspace",
            Box::new(|d, nc| {
                Box::new(
                    AdaptiveRandomForest::new(
                        ArfConfig {
                            max_features: MaxFeatures::Sqrt,
                            ..ArfConfig::default()
                        },
                        d,
                        nc,
                    )
                    .unwrap(),
                )
            }),
        ),
    ];
    println!(
        "stream {path}: {} samples, {d} features, {nc} classes, {reps} reps",
        ys.len()
    );
    println!("model,prequential_accuracy,prequential_samples_per_s_median,learn_samples_per_s_median,prequential_samples_per_cpu_s_median,learn_samples_per_cpu_s_median");
    for (name, make) in models {
        let (mut acc, mut pq, mut lr, mut pqc, mut lrc) =
            (0.0, Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..reps {
            let mut m = make(d, nc);
            let (t, c) = (Instant::now(), cpu_s());
            let p = prequential(m.as_mut(), &xs, d, &ys, 0);
            pq.push(ys.len() as f64 / t.elapsed().as_secs_f64());
            pqc.push(ys.len() as f64 / (cpu_s() - c));
            acc = p.accuracy();
            let mut m = make(d, nc);
            let (t, c) = (Instant::now(), cpu_s());
            m.learn_many(&xs, &ys);
            lr.push(ys.len() as f64 / t.elapsed().as_secs_f64());
            lrc.push(ys.len() as f64 / (cpu_s() - c));
        }
        println!(
            "{name},{acc:.5},{:.0},{:.0},{:.0},{:.0}",
            median(pq),
            median(lr),
            median(pqc),
            median(lrc)
        );
    }
}
