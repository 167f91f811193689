//! Rendered YAML is accepted by the platform's spec parser with no errors
//! and no warnings; the JSON has the documented fields.

use expect_test::expect;
use stratus_synth::{
    render_json, render_services, render_workflow, synthesize, Inputs, NodeCost, PayloadDist,
    Shape, SynthConfig, SynthDag,
};

use crate::{azure_shapes, profiles};

/// Parses the Services and the Workflow (separately and as one file) and
/// checks what the platform sees against the DAG.
pub fn check_with_spec_parser(dag: &SynthDag) {
    let services = render_services(dag);
    let workflow = render_workflow(dag);
    let sb = stratus_spec::parse("services.yaml", &services)
        .unwrap_or_else(|e| panic!("{e}\n{services}"));
    assert!(sb.warnings.is_empty(), "{:?}", sb.warnings);
    assert_eq!(sb.services.len(), dag.nodes.len());
    for (svc, node) in sb.services.iter().zip(&dag.nodes) {
        assert_eq!(svc.name, dag.function_name(node));
        assert!(svc.name.len() <= 63);
        assert_eq!(svc.command, ["stratus", "fn", "bench"]);
        let env: Vec<(&str, &str)> = svc
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(env[0], ("BENCH_MS", node.duration_ms.to_string().as_str()));
        assert_eq!(env[1].1.parse::<u64>().unwrap(), node.memory_mb);
        assert_eq!(env[2].1.parse::<u64>().unwrap(), node.output_bytes);
        assert_eq!(svc.container_concurrency, 1);
    }
    let wb = stratus_spec::parse("workflow.yaml", &workflow)
        .unwrap_or_else(|e| panic!("{e}\n{workflow}"));
    assert!(wb.warnings.is_empty(), "{:?}", wb.warnings);
    let wf = &wb.workflows[0];
    assert_eq!(wf.name, dag.name);
    assert_eq!(wf.steps.len(), dag.nodes.len());
    assert_eq!(wf.output.as_deref(), Some(dag.output().name.as_str()));

    let both = format!("{services}---\n{workflow}");
    let bundle = stratus_spec::parse("all.yaml", &both).unwrap_or_else(|e| panic!("{e}"));
    assert!(bundle.warnings.is_empty());
    stratus_spec::validate_refs(&bundle, &|_| false).unwrap();
}

#[test]
fn every_shape_renders_valid_specs() {
    let profiles = profiles();
    let shapes = azure_shapes();
    let inputs = Inputs {
        profiles: &profiles,
        azure: Some(&shapes),
    };
    let all_shapes = [
        Shape::Azure,
        Shape::cycles(),
        Shape::epigenomics(),
        Shape::genome(),
        Shape::soykb(),
        Shape::Cycles { size: 18 },
        Shape::Epigenomics { size: 14 },
        Shape::Genome { size: 18 },
        Shape::SoyKb { size: 6 },
        Shape::Chain(1),
        Shape::Chain(5),
        Shape::FanOut(4),
        Shape::MapReduce {
            mappers: 3,
            reducers: 2,
        },
    ];
    for shape in all_shapes {
        let config = SynthConfig {
            count: if shape == Shape::Azure { 60 } else { 1 },
            shape,
            max_nodes: 200,
            ..SynthConfig::default()
        };
        for dag in synthesize(&config, inputs).unwrap() {
            check_with_spec_parser(&dag);
        }
    }
}

#[test]
fn service_and_workflow_format() {
    let config = SynthConfig {
        shape: Shape::FanOut(2),
        cost: NodeCost::Fixed {
            duration_ms: 12.5,
            memory_mb: 64,
        },
        payload: PayloadDist::Fixed(1024),
        ..SynthConfig::default()
    };
    let dags = synthesize(&config, Inputs::default()).unwrap();
    let services = render_services(&dags[0]);
    let first = services.split("---\n").next().unwrap();
    expect![[r#"
        apiVersion: serving.knative.dev/v1
        kind: Service
        metadata:
          name: fanout-0000-source
        spec:
          template:
            metadata:
              annotations:
                autoscaling.knative.dev/min-scale: "0"
                autoscaling.knative.dev/max-scale: "4"
            spec:
              containerConcurrency: 1
              timeoutSeconds: 300
              containers:
                - image: stratus.dev/bench/bench
                  command: ["stratus", "fn", "bench"]
                  env:
                    - name: BENCH_MS
                      value: "12.5"
                    - name: BENCH_MEMORY_MB
                      value: "64"
                    - name: BENCH_OUTPUT_BYTES
                      value: "1024"
    "#]]
    .assert_eq(first);
    expect![[r#"
        apiVersion: stratus.dev/v1alpha1
        kind: Workflow
        metadata:
          name: fanout-0000
        spec:
          steps:
            - name: source
              function: fanout-0000-source
            - name: p1
              function: fanout-0000-p1
              inputs: [source]
            - name: p2
              function: fanout-0000-p2
              inputs: [source]
            - name: join
              function: fanout-0000-join
              inputs: [p1, p2]
          output: join
    "#]]
    .assert_eq(&render_workflow(&dags[0]));
    expect![[r#"
        {
          "seed": 0,
          "config": {
            "seed": 0,
            "count": 1,
            "name": null,
            "shape": {
              "fanout": 2
            },
            "payload": {
              "fixed": 1024
            },
            "cost": {
              "fixed": {
                "duration_ms": 12.5,
                "memory_mb": 64
              }
            },
            "duration_scale": 1.0,
            "max_duration_ms": 60000.0,
            "max_nodes": 100
          },
          "dags": [
            {
              "name": "fanout-0000",
              "output": "join",
              "nodes": [
                {
                  "name": "source",
                  "function": "fanout-0000-source",
                  "duration_ms": 12.5,
                  "memory_mb": 64,
                  "output_bytes": 1024,
                  "inputs": [],
                  "profile": "micro"
                },
                {
                  "name": "p1",
                  "function": "fanout-0000-p1",
                  "duration_ms": 12.5,
                  "memory_mb": 64,
                  "output_bytes": 1024,
                  "inputs": [
                    "source"
                  ],
                  "profile": "micro"
                },
                {
                  "name": "p2",
                  "function": "fanout-0000-p2",
                  "duration_ms": 12.5,
                  "memory_mb": 64,
                  "output_bytes": 1024,
                  "inputs": [
                    "source"
                  ],
                  "profile": "micro"
                },
                {
                  "name": "join",
                  "function": "fanout-0000-join",
                  "duration_ms": 12.5,
                  "memory_mb": 64,
                  "output_bytes": 1024,
                  "inputs": [
                    "p1",
                    "p2"
                  ],
                  "profile": "micro"
                }
              ]
            }
          ]
        }
    "#]]
    .assert_eq(&render_json(&dags, &config));
}

#[test]
fn long_nodes_get_longer_timeouts() {
    let config = SynthConfig {
        shape: Shape::Chain(1),
        cost: NodeCost::Fixed {
            duration_ms: 400_000.0,
            memory_mb: 64,
        },
        max_duration_ms: 3_600_000.0,
        ..SynthConfig::default()
    };
    let dags = synthesize(&config, Inputs::default()).unwrap();
    let yaml = render_services(&dags[0]);
    assert!(yaml.contains("timeoutSeconds: 460\n"), "{yaml}");
    let svc = &stratus_spec::parse("s.yaml", &yaml).unwrap().services[0];
    assert_eq!(svc.timeout_seconds, 460);
}
