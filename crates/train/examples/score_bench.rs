//! Selection scoring with a real forward pass, end to end: replay a dataset
//! store in windows, run an MLP(32) forward pass over each window (the
//! probabilities and penultimate activations), and GradNorm-score it.
//! A benchmark, never a test:
//!
//! ```sh
//! cargo run --release -- data ingest --store /tmp/elec2 data/drift/elec2.csv
//! cargo run --release -p stratus-train --example score_bench -- /tmp/elec2 [WINDOW] [REPEATS]
//! ```

use std::time::Instant;

use stratus_dyndata::spec::{Model, ModelId};
use stratus_dyndata::{select, Store, Window};
use stratus_train::model::{Arch, Net};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: score_bench STORE [WINDOW] [REPEATS]"))?;
    let window: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let repeats: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let store = Store::open(&dir)?;
    let dim = store
        .dim()
        .ok_or_else(|| anyhow::anyhow!("{dir} is empty"))?;
    let model = Model {
        id: ModelId::Mlp,
        hidden: vec![32],
        channels: vec![],
        learner: None,
    };
    let net = Net::new(Arch::new(&model, dim, 2)?, 1)?;
    let mut out = Vec::new();
    for r in 0..repeats {
        let (mut n, mut load, mut fwd, mut score) = (0usize, 0.0, 0.0, 0.0);
        let t0 = Instant::now();
        let mut last = Instant::now();
        for w in store.replay(Window::Samples(window))? {
            let w = w?;
            load += last.elapsed().as_secs_f64();
            let b = &w.batch;
            let t = Instant::now();
            let p = net.predict(&b.features)?;
            fwd += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let labels: Vec<i64> = b.labels.iter().map(|&l| l.clamp(0, 1)).collect();
            out.resize(b.len(), 0.0);
            select::gradnorm_scores(&p.probs, 2, &labels, &p.emb, p.emb_dim, &mut out)?;
            score += t.elapsed().as_secs_f64();
            n += b.len();
            last = Instant::now();
        }
        let total = t0.elapsed().as_secs_f64();
        println!(
            "run {r}: {n} samples in {:.1} ms (load {:.1}, forward {:.1}, GradNorm {:.1}): {:.2} M samples/s",
            total * 1e3,
            load * 1e3,
            fwd * 1e3,
            score * 1e3,
            n as f64 / total / 1e6
        );
    }
    Ok(())
}
