use stratus_synth::trace::DurationPercentiles;

use super::*;
use crate::config::SimConfig;

fn durations(ms: f64) -> DurationPercentiles {
    crate::workload::constant(ms)
}

fn function(name: &str, memory_mb: u64, ms: f64, per_minute: Vec<u32>) -> Function {
    Function {
        name: name.into(),
        memory_mb,
        duration: durations(ms),
        per_minute,
    }
}

fn small(nodes: u32, minutes: u32) -> SimConfig {
    SimConfig {
        nodes,
        node_cores: 4,
        node_memory_bytes: 4 << 30,
        minutes,
        ..SimConfig::default()
    }
}

fn run(cfg: SimConfig, fs: Vec<Function>) -> Report {
    Sim::new(cfg, fs, &NoClock).unwrap().run()
}

/// A mixed load: a steady function, a bursty one, a periodic one.
fn mixed() -> Vec<Function> {
    let steady = function("steady", 256, 800.0, vec![30; 60]);
    let bursty = function(
        "bursty",
        512,
        2_000.0,
        (0..60).map(|m| if m % 10 == 0 { 200 } else { 0 }).collect(),
    );
    let periodic = function(
        "periodic",
        128,
        50.0,
        (0..60).map(|m| u32::from(m % 7 == 0)).collect(),
    );
    vec![steady, bursty, periodic]
}

#[test]
fn the_same_seed_gives_the_same_report() {
    for policy in ["knative", "fixed:10m", "hybrid"] {
        let cfg = SimConfig {
            policy: policy.parse().unwrap(),
            ..small(10, 60)
        };
        let a = run(cfg.clone(), mixed());
        let b = run(cfg.clone(), mixed());
        assert_eq!(a, b, "{policy}");
        let c = run(SimConfig { seed: 2, ..cfg }, mixed());
        assert_ne!(
            a.minutes, c.minutes,
            "{policy}: another seed, other arrival times"
        );
    }
}

#[test]
fn every_arrival_is_served_or_dropped() {
    for policy in ["knative", "fixed:10m", "hybrid"] {
        let cfg = SimConfig {
            policy: policy.parse().unwrap(),
            ..small(10, 60)
        };
        let r = run(cfg, mixed());
        let want: u64 = mixed()
            .iter()
            .flat_map(|f| f.per_minute.clone())
            .map(u64::from)
            .sum();
        assert_eq!(r.arrivals, want, "{policy}");
        assert_eq!(r.served + r.dropped, r.arrivals, "{policy}");
        assert_eq!(r.in_flight_at_end, 0);
        assert_eq!(r.dropped, 0, "{policy}: room enough for everything");
        assert!(r.cold_starts > 0 && r.cold_starts <= r.served);
        assert!(r.sandbox_creations >= r.cold_starts.min(1));
    }
}

#[test]
fn a_full_cluster_drops_instead_of_overcommitting() {
    // 2 nodes of 4 cores hold 8 one-core instances; 200 two-second requests at once.
    let cfg = SimConfig {
        max_wait_us: 1_000_000,
        ..small(2, 2)
    };
    let f = function("burst", 256, 2_000.0, vec![200, 0]);
    let sim = Sim::new(cfg, vec![f], &NoClock).unwrap();
    let r = sim.run(); // check_capacity runs at the end, and asserts
    assert_eq!(r.served + r.dropped, 200);
    assert!(r.dropped > 0, "{r:?}");
    assert!(r.unplaced > 0);
    assert!(r.served >= 8);
}

#[test]
fn capacity_holds_at_every_step() {
    let cfg = small(3, 30);
    let mut sim = Sim::new(cfg, mixed(), &NoClock).unwrap();
    let mut steps = 0;
    while let Some(Reverse((t, _, ev))) = sim.queue.pop() {
        sim.advance(t);
        sim.step(ev);
        sim.check_capacity();
        steps += 1;
        if t > sim.end && sim.funcs.iter().all(|f| f.inflight == 0) {
            break;
        }
    }
    assert!(steps > 1000, "{steps}");
}

#[test]
fn keep_alive_policies_trade_cold_starts_for_idle_memory() {
    let fs = || {
        vec![function(
            "every-3-min",
            256,
            100.0,
            (0..120).map(|m| u32::from(m % 3 == 0)).collect(),
        )]
    };
    let with = |p: &str| {
        run(
            SimConfig {
                policy: p.parse().unwrap(),
                ..small(10, 120)
            },
            fs(),
        )
    };
    let knative = with("knative");
    let fixed = with("fixed:10m");
    let hybrid = with("hybrid");
    // Knative's 60 s window: every request is cold.
    assert_eq!(knative.cold_starts, knative.served);
    // A 10-minute keep-alive: only the first.
    assert_eq!(fixed.cold_starts, 1);
    assert!(fixed.idle_memory_gib_s > 2.0 * knative.idle_memory_gib_s);
    // The histogram learns the 3-minute period: pre-warmed, few cold starts,
    // far less idle memory than keeping the instance.
    assert!(hybrid.prewarms > 10, "{hybrid:?}");
    assert!(hybrid.cold_starts < knative.cold_starts / 2, "{hybrid:?}");
    assert!(
        hybrid.idle_memory_gib_s < fixed.idle_memory_gib_s,
        "{hybrid:?}"
    );
}

#[test]
fn impossible_inputs_are_rejected_before_running() {
    let e = Sim::new(small(0, 1), mixed(), &NoClock).err().unwrap();
    assert_eq!(e, ConfigError::Nodes(0));
    let huge = function("huge", 8 << 10, 1.0, vec![1]);
    let e = Sim::new(small(10, 1), vec![huge], &NoClock).err().unwrap();
    assert!(
        e.to_string()
            .contains("function huge needs 8192 MiB, more than a node's 4096 MiB"),
        "{e}"
    );
}

#[test]
fn a_saturated_cluster_retries_once_a_second_per_function() {
    // 8 slots, 40 requests a minute of 30 s each for 10 minutes: requests
    // wait for most of the run. Each failed start used to add its own
    // retry chain; one pending retry per function keeps the events
    // proportional to the arrivals plus one retry a second.
    let cfg = small(2, 10);
    let f = function("hot", 256, 30_000.0, vec![40; 10]);
    let r = run(cfg, vec![f]);
    assert_eq!(r.served + r.dropped, 400);
    assert!(r.dropped > 0, "{r:?}");
    let bound = 400 * 4 + 2 * 60 * 20;
    assert!(r.events < bound, "{} events, bound {bound}", r.events);
}

#[test]
fn random_placement_draws_anew_for_each_sandbox() {
    // 16 one-core sandboxes at once on 8 nodes of 4 cores: the same seed
    // for every decision would fill the nodes one after another.
    let mut cfg = small(8, 2);
    cfg.placement = "random:1".parse().unwrap();
    let burst = function("burst", 128, 60_000.0, vec![16, 0]);
    let mut sim = Sim::new(cfg, vec![burst], &NoClock).unwrap();
    while let Some(Reverse((t, _, ev))) = sim.queue.pop() {
        sim.advance(t);
        sim.step(ev);
        if sim.used.iter().map(|u| u.cores_milli).sum::<u32>() >= 16_000 {
            break;
        }
    }
    let busy = sim.used.iter().filter(|u| u.cores_milli > 0).count();
    assert!(
        busy >= 6,
        "16 sandboxes on only {busy} of 8 nodes: {:?}",
        sim.used
    );
}

#[test]
fn an_explicit_schedule_fixes_arrivals_and_execution_times() {
    use crate::workload::Request;
    let req = |at_ms: u64, exec_ms: u64| Request {
        at_us: at_ms * 1_000,
        function: 0,
        exec_us: exec_ms * 1_000,
    };
    // The trace's own counts and durations play no part.
    let fs = vec![function("f", 64, 60_000.0, vec![1_000; 2])];
    let cfg = SimConfig {
        policy: stratus_scaling::PolicySpec::Knative { idle: 10_000_000 },
        cold_start_us: 175_000,
        ..small(2, 2)
    };
    let schedule = [
        req(0, 100),      // cold: the first instance
        req(1_000, 100),  // warm: idle since 275 ms
        req(30_000, 100), // cold: the instance idled out at 11.1 s
        req(40_000, 1_000),
        req(40_050, 1_000), // cold: the one instance is busy (concurrency 1)
    ];
    let r = Sim::with_schedule(cfg.clone(), fs.clone(), &schedule, &NoClock)
        .unwrap()
        .run();
    assert_eq!(r.arrivals, 5);
    assert_eq!(r.served, 5);
    assert_eq!(r.sandbox_creations, 3, "{r:?}");
    assert_eq!(r.cold_starts, 3, "{r:?}");
    assert_eq!(
        r.per_function,
        [crate::FunctionCounts {
            creations: 3,
            cold: 3
        }]
    );

    // A longer first execution keeps the second request waiting for a
    // second instance: the schedule's execution times are used.
    let longer = [req(0, 5_000), req(1_000, 100)];
    let r = Sim::with_schedule(cfg.clone(), fs.clone(), &longer, &NoClock)
        .unwrap()
        .run();
    assert_eq!((r.sandbox_creations, r.cold_starts), (2, 2));

    let bad = [
        req(0, 1),
        Request {
            function: 1,
            ..req(0, 1)
        },
    ];
    let e = Sim::with_schedule(cfg.clone(), fs.clone(), &bad, &NoClock)
        .err()
        .unwrap();
    assert_eq!(e.to_string(), "schedule request 1: function 1 of 1");
    let late = [req(120_000, 1)];
    let e = Sim::with_schedule(cfg, fs, &late, &NoClock).err().unwrap();
    assert!(
        e.to_string().contains("after the 120000000 µs window"),
        "{e}"
    );
}
