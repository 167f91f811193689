//! A keep-alive policy applied to one function's [`PoolState`]: the part
//! of a driver that both the gateway's activator and the simulator need,
//! so they apply a policy the same way.
//!
//! ```text
//! arrival ──► idle time observed (if the function was idle); a pending
//!             pre-warm or expiry is called off; min-scale back to its base
//! idle    ──► policy.windows():
//!               pre-warm 0: the idle window = keep-alive (the pool's own ticks reap)
//!               pre-warm p: unload now (idle window 0), pre-warm due at +p
//! wake    ──► pre-warm due: min-scale ≥ 1, idle window = keep-alive,
//!               expiry due at +start allowance + keep-alive
//!             expiry due: min-scale back to its base, idle window 0
//! ```
//!
//! Pure: time is an argument. The driver calls [`Lifecycle::wake`] at
//! [`Lifecycle::next_wake`] (the simulator exactly, the gateway at its
//! next scaling tick).

use crate::policy::{KeepAlive, Windows};
use crate::pool::{Action, Micros, PoolState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Prewarm { keep_alive: Micros },
    Expire,
}

/// One function's keep-alive policy and where it stands.
#[derive(Debug)]
pub struct Lifecycle {
    policy: Box<dyn KeepAlive>,
    /// The function's own min-scale (a pre-warm raises it to at least 1).
    base_min_scale: u32,
    /// When the function last went idle (no request in flight or waiting).
    idle_since: Option<Micros>,
    /// Whether a request has come: idle times run from one request's end
    /// to the next one's arrival, so the time before the first is none.
    requested: bool,
    pending: Option<(Micros, Timer)>,
    prewarms: u64,
}

impl Lifecycle {
    /// `policy` for a function whose own min-scale is `base_min_scale`.
    pub fn new(policy: Box<dyn KeepAlive>, base_min_scale: u32) -> Lifecycle {
        Lifecycle {
            policy,
            base_min_scale,
            idle_since: None,
            requested: false,
            pending: None,
            prewarms: 0,
        }
    }

    /// Whether the function is idle (since [`Lifecycle::idle`], until the
    /// next arrival).
    pub fn is_idle(&self) -> bool {
        self.idle_since.is_some()
    }

    /// Pre-warms done so far.
    pub fn prewarms(&self) -> u64 {
        self.prewarms
    }

    /// A request arrives at `now` (call before [`PoolState::request`]):
    /// an idle period ends.
    pub fn arrival(&mut self, pool: &mut PoolState, now: Micros) {
        self.requested = true;
        if let Some(since) = self.idle_since.take() {
            self.policy.observe(now.saturating_sub(since));
            self.pending = None;
            pool.set_min_scale(self.base_min_scale);
        }
    }

    /// The function has no request in flight or waiting as of `now`: the
    /// policy's windows apply. Returns them and the pool's actions (the
    /// instance unloaded at once when the policy pre-warms later). Before
    /// the first request nothing changes: no idle time starts (the pool
    /// keeps the policy's initial window).
    pub fn idle(&mut self, pool: &mut PoolState, now: Micros) -> (Windows, Vec<Action>) {
        if self.idle_since.is_some() || !self.requested {
            return (self.policy.windows(), Vec::new());
        }
        self.idle_since = Some(now);
        let w = self.policy.windows();
        if w.prewarm == 0 {
            pool.set_idle(w.keep_alive);
            return (w, Vec::new());
        }
        pool.set_idle(0);
        self.pending = Some((
            now.saturating_add(w.prewarm),
            Timer::Prewarm {
                keep_alive: w.keep_alive,
            },
        ));
        (w, pool.tick(now))
    }

    /// When [`Lifecycle::wake`] has something to do.
    pub fn next_wake(&self) -> Option<Micros> {
        self.pending.map(|(at, _)| at)
    }

    /// Carries out what is due at `now`. A pre-warmed instance is kept for
    /// `start_allowance` (its start) plus the keep-alive window.
    pub fn wake(
        &mut self,
        pool: &mut PoolState,
        now: Micros,
        start_allowance: Micros,
    ) -> Vec<Action> {
        let Some((at, timer)) = self.pending else {
            return Vec::new();
        };
        if at > now {
            return Vec::new();
        }
        match timer {
            Timer::Prewarm { keep_alive } => {
                self.prewarms += 1;
                pool.set_min_scale(self.base_min_scale.max(1));
                pool.set_idle(keep_alive);
                self.pending = Some((
                    now.saturating_add(start_allowance)
                        .saturating_add(keep_alive),
                    Timer::Expire,
                ));
            }
            Timer::Expire => {
                pool.set_min_scale(self.base_min_scale);
                pool.set_idle(0);
                self.pending = None;
            }
        }
        pool.tick(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Fixed, Hybrid, HybridConfig};
    use crate::pool::Scaling;

    const S: Micros = 1_000_000;

    fn pool(min_scale: u32) -> PoolState {
        PoolState::new(Scaling {
            container_concurrency: 1,
            target: 1.0,
            min_scale,
            max_scale: 0,
            idle: 60 * S,
            max_queue: 100,
        })
    }

    fn starts(a: &[Action]) -> usize {
        a.iter().filter(|a| matches!(a, Action::Start(_))).count()
    }

    fn stops(a: &[Action]) -> usize {
        a.iter().filter(|a| matches!(a, Action::Stop(_))).count()
    }

    /// One request served at `t` (on a new instance if need be), done at `t`.
    fn serve(life: &mut Lifecycle, p: &mut PoolState, t: Micros) -> Vec<Action> {
        life.arrival(p, t);
        let (req, mut a) = p.request(t, t + 10 * S);
        for id in p.starting_ids().to_vec() {
            a.extend(p.instance_ready(id, t));
        }
        let id = a
            .iter()
            .find_map(|x| match x {
                Action::Grant {
                    request, instance, ..
                } if *request == req => Some(*instance),
                _ => None,
            })
            .expect("granted");
        p.release(id, t);
        life.idle(p, t).1
    }

    #[test]
    fn a_fixed_keep_alive_sets_the_idle_window_and_never_wakes() {
        let mut p = pool(0);
        let mut life = Lifecycle::new(Box::new(Fixed { keep_alive: 5 * S }), 0);
        assert!(serve(&mut life, &mut p, 0).is_empty());
        assert!(life.is_idle());
        assert_eq!(p.scaling().idle, 5 * S);
        assert_eq!(life.next_wake(), None);
        assert!(p.tick(5 * S - 1).is_empty());
        assert_eq!(stops(&p.tick(5 * S)), 1);
    }

    /// A hybrid policy that has learnt idle times of 10-11 s (1 s bins).
    fn trained_hybrid() -> Hybrid {
        let mut h = Hybrid::new(HybridConfig {
            bin: S,
            range: 240 * S,
            ..HybridConfig::default()
        });
        for i in 0..20 {
            h.observe(10 * S + (i % 2) * S);
        }
        h
    }

    #[test]
    fn a_prewarming_policy_unloads_then_loads_then_expires() {
        let mut p = pool(0);
        let mut life = Lifecycle::new(Box::new(trained_hybrid()), 0);
        let a = serve(&mut life, &mut p, 0);
        assert_eq!(stops(&a), 1, "unloaded at once: {a:?}");
        let at = life.next_wake().expect("a pre-warm is due");
        assert!(at > 0 && at < 10 * S, "{at}");
        assert!(
            life.wake(&mut p, at - 1, 0).is_empty(),
            "not before its time"
        );
        assert_eq!(starts(&life.wake(&mut p, at, S)), 1, "pre-warmed");
        assert_eq!(life.prewarms(), 1);
        assert_eq!(p.scaling().min_scale, 1);
        let id = p.starting_ids()[0];
        p.instance_ready(id, at + S);
        let expire = life.next_wake().expect("an expiry is due");
        assert!(expire > at + S, "kept past its start");
        assert_eq!(stops(&life.wake(&mut p, expire, S)), 1, "expired");
        assert_eq!(p.scaling().min_scale, 0);
        assert_eq!(life.next_wake(), None);
    }

    #[test]
    fn an_arrival_calls_off_the_pending_prewarm_and_keeps_the_base_min_scale() {
        let mut p = pool(2);
        let mut life = Lifecycle::new(Box::new(trained_hybrid()), 2);
        serve(&mut life, &mut p, 0);
        let at = life.next_wake().unwrap();
        life.arrival(&mut p, at / 2);
        assert!(!life.is_idle());
        assert_eq!(life.next_wake(), None);
        assert_eq!(p.scaling().min_scale, 2);
        assert!(life.wake(&mut p, at, 0).is_empty(), "nothing pending");
        assert_eq!(life.prewarms(), 0);
    }

    #[test]
    fn no_idle_time_starts_before_the_first_request() {
        // Ten idle times of 10 s: the pre-warm's head is the lowest one.
        let trained = || {
            let mut h = Hybrid::new(HybridConfig {
                bin: S,
                range: 240 * S,
                ..HybridConfig::default()
            });
            for _ in 0..10 {
                h.observe(10 * S);
            }
            h
        };
        let mut p = pool(0);
        let mut life = Lifecycle::new(Box::new(trained()), 0);
        // A driver that checks for idleness on every tick, from the start.
        assert!(life.idle(&mut p, 0).1.is_empty());
        assert!(!life.is_idle());
        assert_eq!(life.next_wake(), None);
        // Had the 2 s before the first request counted, the head would
        // be 2 s and the pre-warm due at 3.8 s.
        serve(&mut life, &mut p, 2 * S);
        assert_eq!(life.next_wake(), Some(2 * S + trained().windows().prewarm));
        assert_eq!(trained().windows().prewarm, 9 * S);
    }

    #[test]
    fn idle_twice_applies_the_windows_once() {
        let mut p = pool(0);
        let mut life = Lifecycle::new(Box::new(trained_hybrid()), 0);
        serve(&mut life, &mut p, 0);
        let at = life.next_wake();
        assert!(life.idle(&mut p, 3 * S).1.is_empty());
        assert_eq!(life.next_wake(), at);
    }
}
