//! Dataflow execution through the whole platform.

use std::collections::BTreeMap;

use crate::*;
use stratus_dag::RunStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_records_every_step_in_order() {
    let p = platform(config()).await;
    deploy_examples(&p).await;
    deploy_ok(
        &p,
        &std::fs::read_to_string(repo_root().join("examples/workflows/chain.yaml")).unwrap(),
    )
    .await;
    let r = invoke(&p, "chain", &b"{\"x\": [1, 2, 3]}"[..]).await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert_eq!(
        r.text(),
        "{\"x\": [1, 2, 3]}",
        "echo chain returns its input byte for byte"
    );
    let rec = record(&p, &r).await;
    assert!(rec.ok);
    assert_eq!(rec.runs.len(), 5);
    let mut prev_finish = 0;
    for run in &rec.runs {
        assert_eq!(run.status, RunStatus::Succeeded);
        let (s, f) = (run.started_us.unwrap(), run.finished_us.unwrap());
        assert!(
            run.queued_us >= prev_finish && s >= run.queued_us && f >= s,
            "{run:?}"
        );
        prev_finish = f;
    }
    let b = rec.breakdown;
    assert!(
        b.cold_start_us > 0,
        "first invocation starts instances from zero"
    );
    assert_eq!(
        b.total_us,
        b.queue_us + b.cold_start_us + b.exec_us + b.overhead_us
    );
    p.stop().await;
}

fn word_counts(text: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for w in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        *m.entry(w.to_lowercase()).or_insert(0) += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_reduce_width_is_decided_at_run_time() {
    let p = platform(config()).await;
    deploy_examples(&p).await;
    // A splitter whose fan-out depends on the size of the input.
    let yaml = format!(
        "{}apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: wc\nspec:\n  steps:\n    - name: split\n      function: split-by-size\n    - name: count\n      function: wc-map\n      map: split\n    - name: reduce\n      function: wc-reduce\n      inputs: [count]\n",
        service("split-by-size", "split", "", "").replace(
            "          command: [\"stratus\", \"fn\", \"split\"]\n",
            "          command: [\"stratus\", \"fn\", \"split\"]\n          env:\n            - name: SPLIT_CHUNK_BYTES\n              value: \"4000\"\n"
        )
    );
    deploy_ok(&p, &yaml).await;
    let text = std::fs::read_to_string(repo_root().join("examples/data/gpl-3.0.txt")).unwrap();
    let expected = word_counts(&text);
    let mut widths = Vec::new();
    for input in [&text[..], &text[..text.len() / 3]] {
        let r = invoke(&p, "wc", input.to_string()).await;
        assert_eq!(r.status, 200, "{}", r.error_message());
        let rec = record(&p, &r).await;
        let maps = rec.runs.iter().filter(|r| r.step == "count").count();
        let reduce = rec.runs.iter().find(|r| r.step == "reduce").unwrap();
        // The join starts only after every map branch finished.
        let last_map = rec
            .runs
            .iter()
            .filter(|r| r.step == "count")
            .map(|r| r.finished_us.unwrap())
            .max()
            .unwrap();
        assert!(reduce.queued_us >= last_map);
        widths.push(maps);
        if input.len() == text.len() {
            let out = r.json();
            assert_eq!(
                out["total_words"].as_u64().unwrap(),
                expected.values().sum::<u64>()
            );
            assert_eq!(out["unique_words"].as_u64().unwrap(), expected.len() as u64);
            let top = &out["top"][0];
            let (w, c) = expected
                .iter()
                .max_by_key(|(w, c)| (**c, std::cmp::Reverse((*w).clone())))
                .unwrap();
            assert_eq!(
                (top[0].as_str().unwrap(), top[1].as_u64().unwrap()),
                (w.as_str(), *c)
            );
        }
    }
    assert!(
        widths[0] > widths[1] && widths[1] > 1,
        "fan-out width follows the data: {widths:?}"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_map_gives_the_same_answer_as_rust() {
    let p = platform(config()).await;
    deploy_examples(&p).await;
    for f in ["wordcount", "wordcount-py"] {
        deploy_ok(
            &p,
            &std::fs::read_to_string(repo_root().join(format!("examples/workflows/{f}.yaml")))
                .unwrap(),
        )
        .await;
    }
    let text = std::fs::read(repo_root().join("examples/data/gpl-3.0.txt")).unwrap();
    let rust = invoke(&p, "wordcount", text.clone()).await;
    let py = invoke(&p, "wordcount-py", text).await;
    assert_eq!(
        (rust.status, py.status),
        (200, 200),
        "{} / {}",
        rust.error_message(),
        py.error_message()
    );
    assert_eq!(rust.json(), py.json());
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_k_of_n_fires_before_the_slowest_input() {
    let p = platform(config()).await;
    deploy_examples(&p).await;
    let yaml = "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: k-of-n\nspec:\n  steps:\n    - name: a\n      function: spin\n    - name: b\n      function: spin-fast\n    - name: slow\n      function: spin-slow\n    - name: two\n      function: echo\n      inputs: [a, b, slow]\n      trigger: {firstOf: 2}\n";
    deploy_ok(&p, yaml).await;
    // No "ms" in the body: spin sleeps 0 ms, spin-fast its SPIN_MS (20 ms), spin-slow 500 ms.
    let r = invoke(&p, "k-of-n", &br#"{"mode":"sleep"}"#[..]).await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    let out = r.json();
    let items = out.as_array().expect("two framed items");
    assert_eq!(items.len(), 2);
    let rec = record(&p, &r).await;
    let slow = rec.runs.iter().find(|r| r.step == "slow").unwrap();
    let two = rec.runs.iter().find(|r| r.step == "two").unwrap();
    assert!(
        two.finished_us.unwrap() < slow.finished_us.unwrap(),
        "k-of-n step finished before the slow input: {rec:#?}"
    );
    assert_eq!(
        rec.runs.iter().filter(|r| r.step == "two").count(),
        1,
        "fires once"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_all_run() {
    let p = platform(config()).await;
    deploy_examples(&p).await;
    let inputs = std::fs::read_to_string(repo_root().join("examples/demo-inputs.txt")).unwrap();
    for entry in std::fs::read_dir(repo_root().join("examples/workflows")).unwrap() {
        let path = entry.unwrap().path();
        deploy_ok(&p, &std::fs::read_to_string(&path).unwrap()).await;
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let line = inputs
            .lines()
            .find(|l| l.split('=').next().unwrap().trim() == name)
            .expect("demo input listed");
        let v = line.split_once('=').unwrap().1.trim();
        let body = match v.strip_prefix('@') {
            Some(f) => std::fs::read(repo_root().join(f)).unwrap(),
            None => v.as_bytes().to_vec(),
        };
        let r = invoke(&p, &name, body).await;
        assert_eq!(r.status, 200, "{name}: {}", r.error_message());
        assert!(!r.body.is_empty(), "{name}");
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_carry_64_mib_as_raw_bytes() {
    let mut cfg = config();
    cfg.max_body_bytes = 64 << 20;
    let p = platform(cfg).await;
    let yaml = format!(
        "{}apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: big\nspec:\n  steps:\n    - name: a\n      function: big-echo\n    - name: b\n      function: big-echo\n      inputs: [a]\n",
        service("big-echo", "echo", "", "")
    );
    deploy_ok(&p, &yaml).await;
    // Binary data, not valid UTF-8 or JSON: passed through untouched.
    let payload: Vec<u8> = (0..(64u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let r = invoke(&p, "big", payload.clone()).await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert_eq!(r.body.len(), payload.len());
    assert!(r.body[..] == payload[..]);
    let rec = record(&p, &r).await;
    assert!(rec
        .runs
        .iter()
        .all(|r| r.input_bytes == 64 << 20 && r.output_bytes == 64 << 20));
    p.stop().await;
}

/// `examples/workflows/wordcount-branch.yaml`: the switch picks a branch
/// from a real function's output; the other branch is skipped, never called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_branches_on_a_functions_output() {
    let p = platform(config()).await;
    deploy_examples(&p).await;
    let wf = std::fs::read_to_string(repo_root().join("examples/workflows/wordcount-branch.yaml"))
        .unwrap();
    deploy_ok(&p, &wf).await;
    let text = std::fs::read_to_string(repo_root().join("examples/data/gpl-3.0.txt")).unwrap();
    let total: u64 = word_counts(&text).values().sum();
    assert!(total >= 1000);

    // A long text: the summary, through the `long` branch.
    let r = invoke(&p, "wordcount-branch", text.clone()).await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert_eq!(r.json()["total_words"].as_u64(), Some(total));
    assert_eq!(r.output_skipped, None);
    let rec = record(&p, &r).await;
    let status = |step: &str| {
        rec.runs
            .iter()
            .filter(|run| run.step == step)
            .map(|run| run.status)
            .collect::<Vec<_>>()
    };
    assert_eq!(status("long"), [RunStatus::Succeeded]);
    assert_eq!(status("short"), [RunStatus::Skipped]);
    let short = rec.runs.iter().find(|run| run.step == "short").unwrap();
    assert_eq!(
        short.error.as_deref(),
        Some("skipped: its condition was false")
    );
    assert!(short.instance.is_none(), "a skipped step is never called");

    // A short text: every word's count, through the `short` branch.
    let r = invoke(&p, "wordcount-branch", "the cat and the dog").await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert_eq!(
        r.json(),
        serde_json::json!({"and": 1, "cat": 1, "dog": 1, "the": 2})
    );
    let rec = record(&p, &r).await;
    let long = rec.runs.iter().find(|run| run.step == "long").unwrap();
    assert_eq!(long.status, RunStatus::Skipped);
    p.stop().await;
}

/// A workflow whose output step is skipped answers `null` with a header
/// naming the step, instead of hanging or failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_output_step_answers_null() {
    let p = platform(config()).await;
    deploy_examples(&p).await;
    deploy_ok(
        &p,
        "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: flagged\nspec:\n  steps:\n    - name: check\n      function: echo\n    - name: blur\n      function: echo\n      inputs: [check]\n      when: $check.flagged == true\n",
    )
    .await;
    let r = invoke(&p, "flagged", "{\"flagged\": true, \"img\": 1}").await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert_eq!(r.json()["img"], 1);
    assert_eq!(r.output_skipped, None);

    let r = invoke(&p, "flagged", "{\"flagged\": false}").await;
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert_eq!(r.text(), "null");
    assert_eq!(r.output_skipped.as_deref(), Some("blur"));
    let rec = record(&p, &r).await;
    assert!(rec.ok);
    assert_eq!(
        rec.runs
            .iter()
            .map(|run| (run.step.as_str(), run.status))
            .collect::<Vec<_>>(),
        [
            ("check", RunStatus::Succeeded),
            ("blur", RunStatus::Skipped)
        ]
    );

    // A condition that does not parse is refused at deploy, with its place.
    let r = p
        .client
        .deploy(
            "bad.yaml",
            "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: bad\nspec:\n  steps:\n    - name: check\n      function: echo\n      when: $input.x = 1\n",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.error_message().contains("bad.yaml:9:22:") && r.error_message().contains("use =="),
        "{}",
        r.error_message()
    );
    p.stop().await;
}
