//! Prometheus metrics, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub target: String,
    pub kind: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabels {
    pub function: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub invocations: Family<TargetLabels, Counter>,
    pub latency: Family<TargetLabels, Histogram>,
    pub instances: Family<FunctionLabels, Gauge>,
    pub cold_starts: Family<FunctionLabels, Counter>,
    /// Instances loaded ahead of a request by the keep-alive policy.
    pub prewarms: Family<FunctionLabels, Counter>,
    pub start_failures: Family<FunctionLabels, Counter>,
    pub function_requests: Family<FunctionLabels, Counter>,
    /// Calls tried again on another instance after its host was lost.
    pub host_loss_retries: Family<FunctionLabels, Counter>,
    pub queued: Family<FunctionLabels, Gauge>,
    /// Payload bytes the engine sent to instances in request bodies.
    pub payload_sent: Counter,
    /// Payload bytes the engine received from instances in reply bodies.
    pub payload_received: Counter,
    /// Steps run again because an item they had produced was lost with its worker.
    pub lineage_reruns: Counter,
    /// Runs a worker ran as part of a chain, without a request of their own.
    pub chained_runs: Counter,
    pub mapped_runs: Counter,
    /// Invocations a worker ran whole (`engine::whole`), and those it was
    /// sent but that the control plane then ran itself.
    pub whole_runs: Counter,
    pub whole_fallbacks: Counter,
    pub spread_runs: Counter,
    pub spread_fallbacks: Counter,
    pub records_dropped: Counter,
    pub records_pruned: Counter,
    /// Invocations found in flight from a previous run of the platform.
    pub invocations_lost: Counter,
    pub state_write_errors: Counter,
    /// 1 while the last write of invocation records failed (disk full…).
    pub state_write_failing: Gauge,
    /// Client connections open on the API.
    pub connections: Gauge,
    pub accept_paused: AcceptPaused,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// Times the API stopped accepting connections, by reason.
#[derive(Clone)]
pub struct AcceptPaused {
    /// At the connection limit.
    pub connections: Counter,
    /// File descriptors running low.
    pub fds: Counter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("stratus");
        let invocations = Family::<TargetLabels, Counter>::default();
        let latency = Family::<TargetLabels, Histogram>::new_with_constructor(|| {
            // 20 µs .. ~84 s
            Histogram::new(exponential_buckets(20e-6, 2.0, 23))
        });
        let instances = Family::<FunctionLabels, Gauge>::default();
        let cold_starts = Family::<FunctionLabels, Counter>::default();
        let prewarms = Family::<FunctionLabels, Counter>::default();
        let start_failures = Family::<FunctionLabels, Counter>::default();
        let function_requests = Family::<FunctionLabels, Counter>::default();
        let queued = Family::<FunctionLabels, Gauge>::default();
        let records_dropped = Counter::default();
        registry.register(
            "invocations",
            "Invocations of functions and workflows",
            invocations.clone(),
        );
        registry.register(
            "invocation_duration_seconds",
            "End-to-end invocation latency",
            latency.clone(),
        );
        registry.register(
            "instances",
            "Ready instances per function",
            instances.clone(),
        );
        registry.register("cold_starts", "Instances started", cold_starts.clone());
        registry.register(
            "prewarms",
            "Pre-warms of the keep-alive policy (an instance loaded before a request is due)",
            prewarms.clone(),
        );
        registry.register(
            "start_failures",
            "Instance starts that failed",
            start_failures.clone(),
        );
        registry.register(
            "function_requests",
            "Requests sent to function instances",
            function_requests.clone(),
        );
        let host_loss_retries = Family::<FunctionLabels, Counter>::default();
        registry.register(
            "host_loss_retries",
            "Calls tried again on another instance because the connection to the worker running theirs broke before an answer",
            host_loss_retries.clone(),
        );
        let payload_sent = Counter::default();
        registry.register(
            "engine_payload_sent_bytes",
            "Payload bytes the engine sent to function instances in request bodies (items kept on workers and files passed by reference not counted)",
            payload_sent.clone(),
        );
        let payload_received = Counter::default();
        registry.register(
            "engine_payload_received_bytes",
            "Payload bytes the engine received from function instances in reply bodies (replies kept on workers not counted)",
            payload_received.clone(),
        );
        let lineage_reruns = Counter::default();
        registry.register(
            "engine_lineage_reruns",
            "Steps run again because an output item of theirs that a later step needed was lost with the worker keeping it (--workflow-data workers)",
            lineage_reruns.clone(),
        );
        let chained_runs = Counter::default();
        registry.register(
            "engine_chained_runs",
            "Workflow runs a worker ran in a part after another step, passing outputs on itself (--worker-chains): no request of their own from the engine",
            chained_runs.clone(),
        );
        let mapped_runs = Counter::default();
        registry.register(
            "engine_mapped_runs",
            "Map runs a worker ran on its elements as their source's reply arrived (--worker-chains): no request of their own from the engine; also counted in engine_chained_runs",
            mapped_runs.clone(),
        );
        let whole_runs = Counter::default();
        registry.register(
            "engine_whole_runs",
            "Workflow invocations placed whole on one worker and run there by its agent (the control plane sent one request); their runs count in engine_chained_runs",
            whole_runs.clone(),
        );
        let whole_fallbacks = Counter::default();
        registry.register(
            "engine_whole_fallbacks",
            "Invocations to run whole on a worker that the control plane ran itself instead (no instance there in time, the worker gone or refusing)",
            whole_fallbacks.clone(),
        );
        let spread_runs = Counter::default();
        registry.register(
            "engine_spread_runs",
            "Workflow invocations placed over several workers and run by them, each worker calling its own steps and telling the others worker to worker; their runs count in engine_chained_runs",
            spread_runs.clone(),
        );
        let spread_fallbacks = Counter::default();
        registry.register(
            "engine_spread_fallbacks",
            "Invocations to run spread over workers that the control plane ran itself instead (an instance not had in time on its host, a worker gone or refusing, peers' events not come in time)",
            spread_fallbacks.clone(),
        );
        registry.register(
            "queued_requests",
            "Requests buffered waiting for an instance slot",
            queued.clone(),
        );
        registry.register(
            "records_dropped",
            "Invocation records lost: the writer's backlog was full, or the state store failed the write (disk full...)",
            records_dropped.clone(),
        );
        let records_pruned = Counter::default();
        registry.register(
            "records_pruned",
            "Invocation records deleted by retention (stratus up --record-max-*)",
            records_pruned.clone(),
        );
        let invocations_lost = Counter::default();
        registry.register(
            "invocations_lost",
            "Invocations in flight when the platform last stopped (crash, kill -9), recorded as lost at start",
            invocations_lost.clone(),
        );
        let state_write_errors = Counter::default();
        registry.register(
            "state_write_errors",
            "Failed writes of invocation records to the state store",
            state_write_errors.clone(),
        );
        let state_write_failing = Gauge::default();
        registry.register(
            "state_write_failing",
            "1 while writing invocation records to the state store fails (disk full...), else 0",
            state_write_failing.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Client connections open on the API",
            connections.clone(),
        );
        let paused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "accept_paused",
            "Times the API paused accepting connections (reason: connections = at --max-connections, fds = file descriptors low)",
            paused.clone(),
        );
        let reason = |r: &str| ReasonLabels { reason: r.into() };
        // One statement each: a `get_or_create` guard must be dropped before the next call.
        let paused_connections = paused.get_or_create(&reason("connections")).clone();
        let paused_fds = paused.get_or_create(&reason("fds")).clone();
        Metrics {
            registry,
            connections,
            accept_paused: AcceptPaused {
                connections: paused_connections,
                fds: paused_fds,
            },
            invocations,
            latency,
            instances,
            cold_starts,
            prewarms,
            start_failures,
            function_requests,
            host_loss_retries,
            queued,
            payload_sent,
            payload_received,
            lineage_reruns,
            chained_runs,
            mapped_runs,
            whole_runs,
            whole_fallbacks,
            spread_runs,
            spread_fallbacks,
            records_dropped,
            records_pruned,
            invocations_lost,
            state_write_errors,
            state_write_failing,
        }
    }

    pub fn encode(&self) -> String {
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Per-function handles, resolved once so the hot path does no label lookups.
#[derive(Clone)]
pub struct FunctionMetrics {
    pub instances: Gauge,
    pub cold_starts: Counter,
    pub prewarms: Counter,
    pub start_failures: Counter,
    pub requests: Counter,
    pub host_loss_retries: Counter,
    pub queued: Gauge,
}

impl FunctionMetrics {
    pub fn new(m: &Metrics, function: &str) -> FunctionMetrics {
        let l = FunctionLabels {
            function: function.to_string(),
        };
        // One statement each: a `get_or_create` guard must be dropped before the next call.
        let instances = m.instances.get_or_create(&l).clone();
        let cold_starts = m.cold_starts.get_or_create(&l).clone();
        let prewarms = m.prewarms.get_or_create(&l).clone();
        let start_failures = m.start_failures.get_or_create(&l).clone();
        let requests = m.function_requests.get_or_create(&l).clone();
        let host_loss_retries = m.host_loss_retries.get_or_create(&l).clone();
        let queued = m.queued.get_or_create(&l).clone();
        FunctionMetrics {
            instances,
            cold_starts,
            prewarms,
            start_failures,
            requests,
            host_loss_retries,
            queued,
        }
    }
}

/// Per-target handles for invocation counters and latency.
#[derive(Clone)]
pub struct TargetMetrics {
    pub ok: Counter,
    pub failed: Counter,
    pub latency: Histogram,
}

impl TargetMetrics {
    pub fn new(m: &Metrics, target: &str, kind: &str) -> TargetMetrics {
        let l = |outcome: &str| TargetLabels {
            target: target.into(),
            kind: kind.into(),
            outcome: outcome.into(),
        };
        // One statement each: a `get_or_create` guard must be dropped before the next call.
        let ok = m.invocations.get_or_create(&l("ok")).clone();
        let failed = m.invocations.get_or_create(&l("error")).clone();
        let latency = m.latency.get_or_create(&l("all")).clone();
        TargetMetrics {
            ok,
            failed,
            latency,
        }
    }
}
