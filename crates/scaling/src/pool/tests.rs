//! Transcript tests: a script of timed events in, the actions and the state
//! after each event out.
//!
//! Script lines (`#` starts a comment):
//! - `config cc=N target=X min=N max=N idle=US queue=N` (first; defaults:
//!   cc=1 target=cc min=0 max=0 idle=1000 queue=100)
//! - `T request [deadline=US]` (deadline defaults to T + 1,000,000)
//! - `T ready iN`, `T fail iN`, `T exited iN`
//! - `T release rN` (the lease the request was granted), `T cancel rN`
//! - `T tick`, `T retire`, `T shutdown`, `T adopt` (a running instance
//!   joins)

use std::collections::HashMap;

use expect_test::{expect, Expect};
use proptest::prelude::*;

use super::*;

fn scaling(cc: u32) -> Scaling {
    Scaling {
        container_concurrency: cc,
        target: if cc == 0 { 100.0 } else { cc as f64 },
        min_scale: 0,
        max_scale: 0,
        idle: 1000,
        max_queue: 100,
    }
}

fn parse_config(line: &str) -> Scaling {
    let mut s = scaling(1);
    let mut target = None;
    for kv in line.split_whitespace().skip(1) {
        let (k, v) = kv.split_once('=').expect("key=value");
        match k {
            "cc" => s.container_concurrency = v.parse().unwrap(),
            "target" => target = Some(v.parse().unwrap()),
            "min" => s.min_scale = v.parse().unwrap(),
            "max" => s.max_scale = v.parse().unwrap(),
            "idle" => s.idle = v.parse().unwrap(),
            "queue" => s.max_queue = v.parse().unwrap(),
            _ => panic!("unknown setting {k}"),
        }
    }
    s.target = target.unwrap_or(match s.container_concurrency {
        0 => 100.0,
        cc => cc as f64,
    });
    s
}

fn id(word: &str, prefix: char) -> u64 {
    word.strip_prefix(prefix)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("expected {prefix}N, got {word}"))
}

fn summary(s: &PoolState) -> String {
    let join = |v: Vec<String>| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(" ")
        }
    };
    format!(
        "= ready {} | starting {} | waiting {} | desired {}",
        join(s.instances().map(|(i, n)| format!("{i}:{n}")).collect()),
        join(s.starting_ids().iter().map(|i| i.to_string()).collect()),
        join(s.waiting_ids().map(|r| r.to_string()).collect()),
        s.desired()
    )
}

/// Runs `script` and compares its transcript with `expect`.
fn check(script: &str, expect: Expect) {
    let mut lines = script
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .peekable();
    let cfg = match lines.peek() {
        Some(l) if l.starts_with("config") => parse_config(lines.next().unwrap()),
        _ => scaling(1),
    };
    let mut s = PoolState::new(cfg);
    let mut held: HashMap<RequestId, InstanceId> = HashMap::new();
    let mut out = String::new();
    for line in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        let now: Micros = words[0].parse().expect("a time first");
        let arg = |i: usize| *words.get(i).unwrap_or_else(|| panic!("{line}: argument"));
        out.push_str(line);
        out.push('\n');
        let actions = match words[1] {
            "request" => {
                let deadline = words
                    .get(2)
                    .and_then(|w| w.strip_prefix("deadline="))
                    .map_or(now + 1_000_000, |d| d.parse().unwrap());
                let (r, actions) = s.request(now, deadline);
                out.push_str(&format!("  -> {r}\n"));
                actions
            }
            "ready" => s.instance_ready(InstanceId(id(arg(2), 'i')), now),
            "fail" => s.start_failed(InstanceId(id(arg(2), 'i')), "boom"),
            "exited" => s.instance_exited(InstanceId(id(arg(2), 'i'))),
            "release" => {
                let r = RequestId(id(arg(2), 'r'));
                let i = held
                    .remove(&r)
                    .unwrap_or_else(|| panic!("{line}: {r} holds no lease"));
                s.release(i, now)
            }
            "cancel" => {
                let was = s.cancel(RequestId(id(arg(2), 'r')));
                out.push_str(&format!("  -> was waiting: {was}\n"));
                Vec::new()
            }
            "adopt" => match s.adopt(now) {
                Some((i, actions)) => {
                    out.push_str(&format!("  -> adopted as {i}\n"));
                    actions
                }
                None => {
                    out.push_str("  -> not adopted\n");
                    Vec::new()
                }
            },
            "tick" => s.tick(now),
            "retire" => s.retire(),
            "shutdown" => s.shutdown(),
            other => panic!("unknown event {other}"),
        };
        for a in &actions {
            if let Action::Grant {
                request, instance, ..
            } = a
            {
                held.insert(*request, *instance);
            }
            out.push_str(&format!("  {a}\n"));
        }
        out.push_str(&format!("  {}\n", summary(&s)));
    }
    expect.assert_eq(&out);
}

#[test]
fn cold_start_from_zero_buffers_waiters_and_serves_them_in_order() {
    check(
        "
        config cc=2 max=3
        0 request
        10 request
        20 request
        100 ready i1     # takes two, the third waits for i2
        150 ready i2
        ",
        expect![[r#"
            0 request
              -> r1
              start i1
              = ready - | starting i1 | waiting r1 | desired 1
            10 request
              -> r2
              = ready - | starting i1 | waiting r1 r2 | desired 1
            20 request
              -> r3
              start i2
              = ready - | starting i1 i2 | waiting r1 r2 r3 | desired 2
            100 ready i1
              grant r1 on i1 (cold 100us)
              grant r2 on i1 (cold 90us)
              = ready i1:2 | starting i2 | waiting r3 | desired 2
            150 ready i2
              grant r3 on i2 (cold 130us)
              = ready i1:2 i2:1 | starting - | waiting - | desired 2
        "#]],
    );
}

#[test]
fn a_released_slot_goes_to_the_oldest_waiter() {
    check(
        "
        config cc=1 max=1
        0 request
        5 ready i1
        6 request
        7 request
        8 request
        10 release r1
        11 release r2
        12 release r3
        13 release r4
        ",
        expect![[r#"
            0 request
              -> r1
              start i1
              = ready - | starting i1 | waiting r1 | desired 1
            5 ready i1
              grant r1 on i1 (cold 5us)
              = ready i1:1 | starting - | waiting - | desired 1
            6 request
              -> r2
              = ready i1:1 | starting - | waiting r2 | desired 1
            7 request
              -> r3
              = ready i1:1 | starting - | waiting r2 r3 | desired 1
            8 request
              -> r4
              = ready i1:1 | starting - | waiting r2 r3 r4 | desired 1
            10 release r1
              grant r2 on i1
              = ready i1:1 | starting - | waiting r3 r4 | desired 1
            11 release r2
              grant r3 on i1
              = ready i1:1 | starting - | waiting r4 | desired 1
            12 release r3
              grant r4 on i1
              = ready i1:1 | starting - | waiting - | desired 1
            13 release r4
              = ready i1:0 | starting - | waiting - | desired 0
        "#]],
    );
}

#[test]
fn requests_pack_onto_the_oldest_instance_up_to_the_target() {
    check(
        "
        config cc=4 target=2 min=2
        0 tick
        5 ready i1
        6 ready i2
        10 request     # i1 has room below the target
        11 request
        12 request     # i1 is at the target: i2
        13 request
        14 request     # both at the target: least loaded below cc, and scale up
        15 release r1
        15 release r5
        16 request     # i1 is below the target again
        ",
        expect![[r#"
            0 tick
              start i1
              start i2
              = ready - | starting i1 i2 | waiting - | desired 2
            5 ready i1
              = ready i1:0 | starting i2 | waiting - | desired 2
            6 ready i2
              = ready i1:0 i2:0 | starting - | waiting - | desired 2
            10 request
              -> r1
              grant r1 on i1
              = ready i1:1 i2:0 | starting - | waiting - | desired 2
            11 request
              -> r2
              grant r2 on i1
              = ready i1:2 i2:0 | starting - | waiting - | desired 2
            12 request
              -> r3
              grant r3 on i2
              = ready i1:2 i2:1 | starting - | waiting - | desired 2
            13 request
              -> r4
              grant r4 on i2
              = ready i1:2 i2:2 | starting - | waiting - | desired 2
            14 request
              -> r5
              grant r5 on i1
              start i3
              = ready i1:3 i2:2 | starting i3 | waiting - | desired 3
            15 release r1
              = ready i1:2 i2:2 | starting i3 | waiting - | desired 2
            15 release r5
              = ready i1:1 i2:2 | starting i3 | waiting - | desired 2
            16 request
              -> r6
              grant r6 on i1
              = ready i1:2 i2:2 | starting i3 | waiting - | desired 2
        "#]],
    );
}

#[test]
fn load_above_the_target_scales_up_to_max_scale() {
    check(
        "
        config cc=0 target=1 max=3
        0 request
        10 ready i1
        11 request     # above the target on i1: scale up
        12 request
        13 request     # max-scale 3: no fourth instance
        20 ready i2
        21 ready i3
        22 request     # all above the target: least loaded
        ",
        expect![[r#"
            0 request
              -> r1
              start i1
              = ready - | starting i1 | waiting r1 | desired 1
            10 ready i1
              grant r1 on i1 (cold 10us)
              = ready i1:1 | starting - | waiting - | desired 1
            11 request
              -> r2
              grant r2 on i1
              start i2
              = ready i1:2 | starting i2 | waiting - | desired 2
            12 request
              -> r3
              grant r3 on i1
              start i3
              = ready i1:3 | starting i2 i3 | waiting - | desired 3
            13 request
              -> r4
              grant r4 on i1
              = ready i1:4 | starting i2 i3 | waiting - | desired 3
            20 ready i2
              = ready i1:4 i2:0 | starting i3 | waiting - | desired 3
            21 ready i3
              = ready i1:4 i2:0 i3:0 | starting - | waiting - | desired 3
            22 request
              -> r5
              grant r5 on i2
              = ready i1:4 i2:1 i3:0 | starting - | waiting - | desired 3
        "#]],
    );
}

#[test]
fn idle_instances_are_reaped_down_to_demand_then_to_zero() {
    check(
        "
        config cc=1 idle=1000
        0 request
        0 request
        10 ready i1
        20 ready i2
        500 release r1
        900 tick        # i1 idle for 400us only
        1500 tick       # i1 idle for the window; i2 still busy
        2000 release r2
        2500 tick
        3000 tick       # idle for the window: scale to zero
        ",
        expect![[r#"
            0 request
              -> r1
              start i1
              = ready - | starting i1 | waiting r1 | desired 1
            0 request
              -> r2
              start i2
              = ready - | starting i1 i2 | waiting r1 r2 | desired 2
            10 ready i1
              grant r1 on i1 (cold 10us)
              = ready i1:1 | starting i2 | waiting r2 | desired 2
            20 ready i2
              grant r2 on i2 (cold 20us)
              = ready i1:1 i2:1 | starting - | waiting - | desired 2
            500 release r1
              = ready i1:0 i2:1 | starting - | waiting - | desired 1
            900 tick
              = ready i1:0 i2:1 | starting - | waiting - | desired 1
            1500 tick
              stop i1
              = ready i2:1 | starting - | waiting - | desired 1
            2000 release r2
              = ready i2:0 | starting - | waiting - | desired 0
            2500 tick
              = ready i2:0 | starting - | waiting - | desired 0
            3000 tick
              stop i2
              = ready - | starting - | waiting - | desired 0
        "#]],
    );
}

#[test]
fn min_scale_instances_start_without_traffic_and_are_kept() {
    check(
        "
        config cc=1 min=2 idle=10
        0 tick
        5 ready i1
        6 ready i2
        1000 tick
        ",
        expect![[r#"
            0 tick
              start i1
              start i2
              = ready - | starting i1 i2 | waiting - | desired 2
            5 ready i1
              = ready i1:0 | starting i2 | waiting - | desired 2
            6 ready i2
              = ready i1:0 i2:0 | starting - | waiting - | desired 2
            1000 tick
              = ready i1:0 i2:0 | starting - | waiting - | desired 2
        "#]],
    );
}

#[test]
fn waiters_past_their_deadline_are_refused_at_a_tick() {
    check(
        "
        config cc=1 max=1
        0 request deadline=100
        10 request deadline=50
        20 request deadline=1000
        50 tick           # r2's deadline
        60 cancel r3      # its caller gave up
        60 cancel r3
        100 tick          # r1's deadline; no one waits: no instance wanted
        120 ready i1
        ",
        expect![[r#"
            0 request deadline=100
              -> r1
              start i1
              = ready - | starting i1 | waiting r1 | desired 1
            10 request deadline=50
              -> r2
              = ready - | starting i1 | waiting r1 r2 | desired 1
            20 request deadline=1000
              -> r3
              = ready - | starting i1 | waiting r1 r2 r3 | desired 1
            50 tick
              refuse r2: TimedOut { waited_us: 40 }
              = ready - | starting i1 | waiting r1 r3 | desired 1
            60 cancel r3
              -> was waiting: true
              = ready - | starting i1 | waiting r1 | desired 1
            60 cancel r3
              -> was waiting: false
              = ready - | starting i1 | waiting r1 | desired 1
            100 tick
              refuse r1: TimedOut { waited_us: 100 }
              = ready - | starting i1 | waiting - | desired 0
            120 ready i1
              = ready i1:0 | starting - | waiting - | desired 0
        "#]],
    );
}

#[test]
fn the_queue_bound_refuses_requests_as_overloaded() {
    check(
        "
        config cc=1 max=1 queue=2
        0 request
        1 request
        2 request
        ",
        expect![[r#"
            0 request
              -> r1
              start i1
              = ready - | starting i1 | waiting r1 | desired 1
            1 request
              -> r2
              = ready - | starting i1 | waiting r1 r2 | desired 1
            2 request
              -> r3
              refuse r3: Overloaded { queued: 2 }
              = ready - | starting i1 | waiting r1 r2 | desired 1
        "#]],
    );
}

#[test]
fn an_instance_crashing_with_leases_is_replaced() {
    check(
        "
        config cc=2
        0 request
        10 ready i1
        11 request
        12 request     # waits: i1 is full
        20 exited i1   # its leases are void; r3 still waits, so a replacement starts
        25 release r1  # a lease on the dead instance: nothing to hand out
        30 ready i2
        40 release r2
        ",
        expect![[r#"
            0 request
              -> r1
              start i1
              = ready - | starting i1 | waiting r1 | desired 1
            10 ready i1
              grant r1 on i1 (cold 10us)
              = ready i1:1 | starting - | waiting - | desired 1
            11 request
              -> r2
              grant r2 on i1
              = ready i1:2 | starting - | waiting - | desired 1
            12 request
              -> r3
              start i2
              = ready i1:2 | starting i2 | waiting r3 | desired 2
            20 exited i1
              stop i1
              = ready - | starting i2 | waiting r3 | desired 1
            25 release r1
              = ready - | starting i2 | waiting r3 | desired 1
            30 ready i2
              grant r3 on i2 (cold 18us)
              = ready i2:1 | starting - | waiting - | desired 1
            40 release r2
              = ready i2:1 | starting - | waiting - | desired 1
        "#]],
    );
}

#[test]
fn a_start_failure_refuses_waiters_only_when_nothing_else_can_serve_them() {
    check(
        "
        config cc=1 max=2
        0 request
        1 request
        10 fail i1     # i2 is still starting
        20 fail i2     # nothing left: every waiter is refused
        30 request     # the next request tries again
        ",
        expect![[r#"
            0 request
              -> r1
              start i1
              = ready - | starting i1 | waiting r1 | desired 1
            1 request
              -> r2
              start i2
              = ready - | starting i1 i2 | waiting r1 r2 | desired 2
            10 fail i1
              = ready - | starting i2 | waiting r1 r2 | desired 2
            20 fail i2
              refuse r1: StartFailed { reason: "boom" }
              refuse r2: StartFailed { reason: "boom" }
              = ready - | starting - | waiting - | desired 0
            30 request
              -> r3
              start i3
              = ready - | starting i3 | waiting r3 | desired 1
        "#]],
    );
}

#[test]
fn a_tick_retries_a_failed_start_while_requests_wait() {
    check(
        "
        config cc=1 max=2
        0 request
        1 request
        10 fail i1
        15 tick        # r1 and r2 still wait on i2 alone: start another
        20 ready i2
        ",
        expect![[r#"
            0 request
              -> r1
              start i1
              = ready - | starting i1 | waiting r1 | desired 1
            1 request
              -> r2
              start i2
              = ready - | starting i1 i2 | waiting r1 r2 | desired 2
            10 fail i1
              = ready - | starting i2 | waiting r1 r2 | desired 2
            15 tick
              start i3
              = ready - | starting i2 i3 | waiting r1 r2 | desired 2
            20 ready i2
              grant r1 on i2 (cold 20us)
              = ready i2:1 | starting i3 | waiting r2 | desired 2
        "#]],
    );
}

#[test]
fn a_retired_pool_refuses_new_requests_and_stops_instances_once_idle() {
    check(
        "
        config cc=1
        0 request
        0 request
        5 ready i1
        6 ready i2
        10 release r1
        20 retire      # i1 is idle: stops now; i2 when its lease ends
        21 request
        30 release r2
        ",
        expect![[r#"
            0 request
              -> r1
              start i1
              = ready - | starting i1 | waiting r1 | desired 1
            0 request
              -> r2
              start i2
              = ready - | starting i1 i2 | waiting r1 r2 | desired 2
            5 ready i1
              grant r1 on i1 (cold 5us)
              = ready i1:1 | starting i2 | waiting r2 | desired 2
            6 ready i2
              grant r2 on i2 (cold 6us)
              = ready i1:1 i2:1 | starting - | waiting - | desired 2
            10 release r1
              = ready i1:0 i2:1 | starting - | waiting - | desired 1
            20 retire
              stop i1
              = ready i2:1 | starting - | waiting - | desired 1
            21 request
              -> r3
              refuse r3: Retired
              = ready i2:1 | starting - | waiting - | desired 1
            30 release r2
              stop i2
              = ready - | starting - | waiting - | desired 0
        "#]],
    );
}

#[test]
fn a_retired_pool_still_serves_its_waiters() {
    check(
        "
        config cc=1
        0 request
        1 retire
        5 ready i1     # r1 waited: it is served; then the instance stops
        6 release r1
        7 ready i9     # not started by this pool: ignored
        ",
        expect![[r#"
            0 request
              -> r1
              start i1
              = ready - | starting i1 | waiting r1 | desired 1
            1 retire
              = ready - | starting i1 | waiting r1 | desired 1
            5 ready i1
              grant r1 on i1 (cold 5us)
              = ready i1:1 | starting - | waiting - | desired 1
            6 release r1
              stop i1
              = ready - | starting - | waiting - | desired 0
            7 ready i9
              = ready - | starting - | waiting - | desired 0
        "#]],
    );
}

#[test]
fn shutdown_refuses_waiters_and_stops_every_instance() {
    check(
        "
        config cc=1 max=1
        0 request
        5 ready i1
        6 request
        10 shutdown
        11 release r1
        ",
        expect![[r#"
            0 request
              -> r1
              start i1
              = ready - | starting i1 | waiting r1 | desired 1
            5 ready i1
              grant r1 on i1 (cold 5us)
              = ready i1:1 | starting - | waiting - | desired 1
            6 request
              -> r2
              = ready i1:1 | starting - | waiting r2 | desired 1
            10 shutdown
              refuse r2: Retired
              stop i1
              = ready - | starting - | waiting - | desired 0
            11 release r1
              = ready - | starting - | waiting - | desired 0
        "#]],
    );
}

/// One step of a random run.
#[derive(Debug, Clone)]
enum Op {
    Request { deadline_in: Micros },
    Release(usize),
    Ready(usize),
    Fail(usize),
    Exited(usize),
    Cancel(usize),
    Tick,
    Retire,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..5_000).prop_map(|deadline_in| Op::Request { deadline_in }),
        4 => any::<usize>().prop_map(Op::Release),
        3 => any::<usize>().prop_map(Op::Ready),
        1 => any::<usize>().prop_map(Op::Fail),
        1 => any::<usize>().prop_map(Op::Exited),
        1 => any::<usize>().prop_map(Op::Cancel),
        2 => Just(Op::Tick),
        1 => Just(Op::Retire),
    ]
}

fn pick<T: Copy>(v: &[T], i: usize) -> Option<T> {
    (!v.is_empty()).then(|| v[i % v.len()])
}

proptest! {
    /// Whatever happens: no instance holds more than `containerConcurrency`
    /// leases, ready plus starting instances stay within max-scale, no
    /// request is granted while an older one waits, and each request is
    /// answered at most once.
    #[test]
    fn leases_scale_and_fifo_invariants_hold(
        cc in 0u32..4,
        target in 1u32..4,
        min in 0u32..3,
        max in 0u32..5,
        ops in proptest::collection::vec((0u64..300, op()), 1..200),
    ) {
        let mut s = PoolState::new(Scaling {
            container_concurrency: cc,
            target: target as f64,
            min_scale: min,
            max_scale: max,
            idle: 500,
            max_queue: 8,
        });
        let cap = if cc == 0 { u32::MAX } else { cc };
        let mut now = 0;
        let mut held: Vec<(RequestId, InstanceId)> = Vec::new();
        let mut answered = std::collections::HashSet::new();
        for (dt, op) in ops {
            now += dt;
            let waiting_before: Vec<RequestId> = s.waiting_ids().collect();
            let actions = match op {
                Op::Request { deadline_in } => s.request(now, now + deadline_in).1,
                Op::Release(i) => match (!held.is_empty()).then(|| held.remove(i % held.len())) {
                    Some((_, inst)) => s.release(inst, now),
                    None => continue,
                },
                Op::Ready(i) => match pick(s.starting_ids(), i) {
                    Some(inst) => s.instance_ready(inst, now),
                    None => continue,
                },
                Op::Fail(i) => match pick(s.starting_ids(), i) {
                    Some(inst) => s.start_failed(inst, "boom"),
                    None => continue,
                },
                Op::Exited(i) => {
                    let ready: Vec<InstanceId> = s.instances().map(|(id, _)| id).collect();
                    match pick(&ready, i) {
                        Some(inst) => s.instance_exited(inst),
                        None => continue,
                    }
                }
                Op::Cancel(i) => {
                    if let Some(r) = pick(&waiting_before, i) {
                        prop_assert!(s.cancel(r));
                    }
                    continue;
                }
                Op::Tick => s.tick(now),
                Op::Retire => s.retire(),
            };
            for a in &actions {
                match a {
                    Action::Grant { request, instance, .. } => {
                        prop_assert!(answered.insert(*request), "{request} answered twice");
                        // Everyone waiting before this event and still waiting is younger.
                        for w in s.waiting_ids() {
                            prop_assert!(w > *request, "{request} granted while older {w} waits");
                        }
                        held.push((*request, *instance));
                    }
                    Action::Refuse { request, .. } => {
                        prop_assert!(answered.insert(*request), "{request} answered twice");
                    }
                    _ => {}
                }
            }
            for (id, leases) in s.instances() {
                prop_assert!(leases <= cap, "{id} holds {leases} leases, cap {cap}");
            }
            if max > 0 {
                prop_assert!(s.ready() + s.starting() <= max as usize,
                    "{} ready + {} starting > max-scale {max}", s.ready(), s.starting());
            }
        }
    }

    /// Leases held per instance, as counted by the driver, are what the
    /// state counts.
    #[test]
    fn lease_counts_match_the_grants(
        cc in 1u32..4,
        ops in proptest::collection::vec((0u64..300, op()), 1..200),
    ) {
        let mut s = PoolState::new(scaling(cc));
        let mut now = 0;
        let mut held: Vec<(RequestId, InstanceId)> = Vec::new();
        for (dt, op) in ops {
            now += dt;
            let actions = match op {
                Op::Request { deadline_in } => s.request(now, now + deadline_in).1,
                Op::Release(i) if !held.is_empty() => {
                    let (_, inst) = held.remove(i % held.len());
                    s.release(inst, now)
                }
                Op::Ready(i) => match pick(s.starting_ids(), i) {
                    Some(inst) => s.instance_ready(inst, now),
                    None => continue,
                },
                Op::Tick => s.tick(now),
                _ => continue,
            };
            for a in actions {
                if let Action::Grant { request, instance, .. } = a {
                    held.push((request, instance));
                }
            }
            for (id, leases) in s.instances() {
                let counted = held.iter().filter(|(_, i)| *i == id).count();
                prop_assert_eq!(leases as usize, counted, "{}", id);
            }
        }
    }
}

#[test]
fn adopted_instances_serve_waiters_and_respect_max_scale() {
    check(
        "config cc=1 max=2
         0 request          # from zero: a start for it
         5 adopt            # a running instance joins: the waiter gets it at once
         6 adopt            # at max-scale (one ready, one starting): refused
         7 ready i1
         8 release r1
         2000 tick          # both idle past the window: reaped
         2001 retire
         2002 adopt         # retired: refused",
        expect![[r#"
            0 request
              -> r1
              start i1
              = ready - | starting i1 | waiting r1 | desired 1
            5 adopt
              -> adopted as i2
              grant r1 on i2
              = ready i2:1 | starting i1 | waiting - | desired 1
            6 adopt
              -> not adopted
              = ready i2:1 | starting i1 | waiting - | desired 1
            7 ready i1
              = ready i2:1 i1:0 | starting - | waiting - | desired 1
            8 release r1
              = ready i2:0 i1:0 | starting - | waiting - | desired 0
            2000 tick
              stop i2
              stop i1
              = ready - | starting - | waiting - | desired 0
            2001 retire
              = ready - | starting - | waiting - | desired 0
            2002 adopt
              -> not adopted
              = ready - | starting - | waiting - | desired 0
        "#]],
    );
}

/// Grants and starts of `actions`, as `(request, instance)` and instances.
fn grants_and_starts(actions: &[Action]) -> (Vec<(u64, u64)>, Vec<u64>) {
    let mut grants = Vec::new();
    let mut starts = Vec::new();
    for a in actions {
        match a {
            Action::Grant {
                request, instance, ..
            } => grants.push((request.0, instance.0)),
            Action::Start(i) => starts.push(i.0),
            _ => {}
        }
    }
    (grants, starts)
}

#[test]
fn a_request_near_a_host_prefers_its_instances_and_does_not_start_one_per_request() {
    let mut s = PoolState::new(scaling(2));
    // Two instances: i1 on host 7, i2 on host 9.
    let (_, a) = s.request(0, 1_000_000);
    let (_, b) = s.request(1, 1_000_000);
    let (_, starts_a) = grants_and_starts(&a);
    assert_eq!(
        starts_a,
        vec![1],
        "cc=2: one instance for the first request"
    );
    assert!(grants_and_starts(&b).1.is_empty(), "the second waits on it");
    assert_eq!(s.start_hint(InstanceId(1)), None, "no host was named");
    s.instance_ready(InstanceId(1), 10);
    s.set_host(InstanceId(1), 7);
    let (r3, a) = s.request_near(11, 1_000_000, Some(9));
    // i1 is full (2 leases): a start, hinted to the named host.
    assert_eq!(grants_and_starts(&a).1, vec![2]);
    assert_eq!(s.start_hint(InstanceId(2)), Some(9));
    let ready = s.instance_ready(InstanceId(2), 20);
    assert_eq!(grants_and_starts(&ready).0, vec![(r3.0, 2)]);
    assert_eq!(s.start_hint(InstanceId(2)), None, "hints end at ready");
    s.set_host(InstanceId(2), 9);
    s.release(InstanceId(1), 21);
    s.release(InstanceId(1), 22);
    // Packing alone would take i1 (oldest with room); host 9 takes i2.
    let (r4, a) = s.request_near(23, 1_000_000, Some(9));
    assert_eq!(grants_and_starts(&a), (vec![(r4.0, 2)], vec![]));
    // i2 is full (r3, r4): near host 9 falls back to i1, starting nothing.
    let (r5, a) = s.request_near(24, 1_000_000, Some(9));
    assert_eq!(grants_and_starts(&a), (vec![(r5.0, 1)], vec![]));
    // A host with no instance: any instance with room.
    let (r6, a) = s.request_near(25, 1_000_000, Some(3));
    assert_eq!(grants_and_starts(&a), (vec![(r6.0, 1)], vec![]));
    // Every slot taken: the waiter's start is hinted to its host.
    let (_, a) = s.request_near(26, 1_000_000, Some(3));
    assert_eq!(grants_and_starts(&a).1, vec![3]);
    assert_eq!(s.start_hint(InstanceId(3)), Some(3));
    s.start_failed(InstanceId(3), "no room");
    assert_eq!(s.start_hint(InstanceId(3)), None, "hints end at a failure");
}

/// Requests for host 9 (nothing runs there) served on i1 (host 7) at
/// `t`, `t + 1`, …; the starts they caused.
fn misses_for_9(s: &mut PoolState, t: Micros, n: u32) -> Vec<u64> {
    let mut starts = Vec::new();
    for k in 0..n as u64 {
        let (r, a) = s.request_near(t + k, t + 1_000_000, Some(9));
        let (grants, started) = grants_and_starts(&a);
        assert_eq!(grants, vec![(r.0, 1)], "served on i1 at once");
        starts.extend(started);
        s.release(InstanceId(1), t + k);
    }
    starts
}

#[test]
fn requests_for_a_host_served_elsewhere_start_one_instance_there_once_per_idle_window() {
    let mut s = PoolState::new(scaling(2));
    let (_, a) = s.request(0, 1_000_000);
    assert_eq!(grants_and_starts(&a).1, vec![1]);
    s.instance_ready(InstanceId(1), 10);
    s.set_host(InstanceId(1), 7);
    s.release(InstanceId(1), 11);
    assert!(misses_for_9(&mut s, 20, AFFINITY_MISSES - 1).is_empty());
    assert_eq!(
        misses_for_9(&mut s, 30, 1),
        vec![2],
        "the last miss starts one"
    );
    assert_eq!(s.start_hint(InstanceId(2)), Some(9));
    // Host 9 had no room after all: i2 runs on host 8. No new start for
    // host 9 within the idle window (1000 µs), however many misses.
    s.instance_ready(InstanceId(2), 40);
    s.set_host(InstanceId(2), 8);
    assert!(misses_for_9(&mut s, 50, 3 * AFFINITY_MISSES).is_empty());
    // Past it: another try. (i1 and i2 are both idle: the requests go to
    // i1, the oldest with room.)
    let later = 40 + s.scaling().idle;
    assert!(misses_for_9(&mut s, later, AFFINITY_MISSES - 1).is_empty());
    assert_eq!(misses_for_9(&mut s, later + 10, 1), vec![3]);
    // It lands on host 9: requests for it go there, and the instances
    // elsewhere idle out down to what demand needs.
    s.instance_ready(InstanceId(3), later + 20);
    s.set_host(InstanceId(3), 9);
    let (r, a) = s.request_near(later + 21, later + 1_000_000, Some(9));
    assert_eq!(grants_and_starts(&a), (vec![(r.0, 3)], vec![]));
    s.release(InstanceId(3), later + 22);
    let stopped: Vec<u64> = s
        .tick(later + 22 + s.scaling().idle)
        .iter()
        .filter_map(|a| match a {
            Action::Stop(i) => Some(i.0),
            _ => None,
        })
        .collect();
    assert_eq!(stopped.len(), 3, "all idle, none needed: {stopped:?}");
}

#[test]
fn affinity_starts_respect_max_scale() {
    let mut s = PoolState::new(Scaling {
        max_scale: 1,
        ..scaling(2)
    });
    let (_, a) = s.request(0, 1_000_000);
    assert_eq!(grants_and_starts(&a).1, vec![1]);
    s.instance_ready(InstanceId(1), 10);
    s.set_host(InstanceId(1), 7);
    s.release(InstanceId(1), 11);
    assert!(misses_for_9(&mut s, 20, 3 * AFFINITY_MISSES).is_empty());
}
