//! `stratus bench engine`: the pure DAG engine alone, with no IO, to show
//! what dataflow bookkeeping costs per step (the floor under the HTTP-level
//! figures of `bench overhead`).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use bytes::Bytes;
use stratus_dag::{Execution, Plan};
use stratus_spec::{InputFormat, InputRef, Pos, Step, Trigger, Workflow};

use stratus_report::table;

#[derive(clap::Args, Debug)]
pub struct EngineArgs {
    /// Executions per shape.
    #[arg(long, default_value_t = 200_000)]
    pub iterations: usize,
}

fn step(name: &str, inputs: &[String], map: Option<&str>) -> Step {
    Step {
        name: name.into(),
        function: "f".into(),
        inputs: inputs.iter().map(|i| InputRef::Step(i.clone())).collect(),
        map: map.map(|m| InputRef::Step(m.into())),
        trigger: Trigger::AllOf,
        input_format: InputFormat::Json,
        when: None,
        retry: None,
        catch: None,
        pos: Pos::default(),
    }
}

fn shapes() -> Vec<(&'static str, Workflow, Bytes)> {
    let wf = |name: &str, steps| Workflow {
        name: name.into(),
        steps,
        output: None,
        max_concurrency: None,
        durability: Default::default(),
        invoke: None,
        timeout_seconds: None,
        placement: None,
        worker_parts: None,
        keep_inline_below: None,
        pos: Pos::default(),
    };
    let chain: Vec<Step> = (0..10)
        .map(|i| {
            step(
                &format!("s{i}"),
                &if i > 0 {
                    vec![format!("s{}", i - 1)]
                } else {
                    vec![]
                },
                None,
            )
        })
        .collect();
    let mut fan = vec![step("src", &[], None)];
    fan.extend((0..16).map(|i| step(&format!("b{i}"), &["src".to_string()], None)));
    fan.push(step(
        "join",
        &(0..16).map(|i| format!("b{i}")).collect::<Vec<_>>(),
        None,
    ));
    let map = vec![
        step("split", &[], None),
        step("m", &[], Some("split")),
        step("reduce", &["m".to_string()], None),
    ];
    let list: Bytes = Bytes::from(format!("[{}]", vec!["1"; 16].join(",")));
    vec![
        ("chain10", wf("chain10", chain), Bytes::from_static(b"0")),
        ("fan16", wf("fan16", fan), Bytes::from_static(b"0")),
        ("map16", wf("map16", map), list),
    ]
}

/// Runs one execution to completion, answering every run at once with `out`.
fn drive(plan: &Arc<Plan>, input: &Bytes, out: &Bytes) -> usize {
    let mut e = Execution::new(plan.clone());
    let mut ready = e.start(input.clone(), 0);
    let mut runs = 0;
    while let Some(d) = ready.pop() {
        runs += 1;
        e.started(d.run, 1, 0, "i");
        ready.extend(e.finish(d.run, Ok(out.clone()), 2));
    }
    runs
}

pub fn run(a: EngineArgs) -> Result<()> {
    let mut rows = Vec::new();
    for (name, wf, input) in shapes() {
        let plan = Arc::new(Plan::compile(&wf)?);
        // `split` answers with the 16-element list; other steps echo it.
        let out = input.clone();
        let runs = drive(&plan, &input, &out);
        for _ in 0..a.iterations / 10 {
            drive(&plan, &input, &out);
        }
        let t = Instant::now();
        for _ in 0..a.iterations {
            drive(&plan, &input, &out);
        }
        let per_exec = t.elapsed().as_secs_f64() / a.iterations as f64;
        rows.push(vec![
            name.to_string(),
            runs.to_string(),
            format!("{:.2} µs", per_exec * 1e6),
            format!("{:.0} ns", per_exec * 1e9 / runs as f64),
        ]);
    }
    println!(
        "DAG engine alone (no IO, every run answered at once), {} executions per shape\n",
        a.iterations
    );
    print!(
        "{}",
        table(&["SHAPE", "RUNS", "PER INVOCATION", "PER RUN"], &rows)
    );
    Ok(())
}
