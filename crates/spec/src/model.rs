//! Typed specs produced by the parser. Plain data: no IO, no YAML types leak out.

use std::collections::BTreeMap;

pub use stratus_yaml::Pos;

/// Which sandbox backend runs a function's instances.
/// Chosen by the annotation `stratus.dev/runtime` (default `process`).
pub const RUNTIME_ANNOTATION: &str = "stratus.dev/runtime";
/// `file`: the function takes its inputs and may give its output as files
/// of the node data store, by reference (`http`, the default: bodies).
pub const DATA_ANNOTATION: &str = "stratus.dev/data";

/// How a `microvm` function's instances restore from its memory snapshot:
/// one of [`RESTORE_POLICIES`] (default: the node's configured policy).
pub const RESTORE_POLICY_ANNOTATION: &str = "stratus.dev/restore-policy";

/// Who may invoke a function or workflow, overriding the platform's
/// default (open, or the invoke token when `stratus up --invoke-token-file`
/// is given): `open` or `token`. On a Service it goes with the template's
/// annotations, on a Workflow with its metadata's.
pub const INVOKE_ANNOTATION: &str = "stratus.dev/invoke";

/// The values of [`INVOKE_ANNOTATION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvokePolicy {
    /// Anyone who can reach the gateway (the `Host`/`Origin` checks still apply).
    Open,
    /// The invoke token, or the admin token.
    Token,
}

impl InvokePolicy {
    pub fn parse(s: &str) -> Option<InvokePolicy> {
        match s.trim() {
            "open" => Some(InvokePolicy::Open),
            "token" => Some(InvokePolicy::Token),
            _ => None,
        }
    }
}

/// The values [`RESTORE_POLICY_ANNOTATION`] accepts.
pub const RESTORE_POLICIES: [&str; 4] = ["eager", "lazy", "working-set", "warm-local"];

/// A Knative `serving.knative.dev/v1` `Service`, reduced to what Stratus honours.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Service {
    /// `metadata.name`.
    pub name: String,
    /// `autoscaling.knative.dev/min-scale` (default 0).
    pub min_scale: u32,
    /// `autoscaling.knative.dev/max-scale` (default 0 = unlimited).
    pub max_scale: u32,
    /// `autoscaling.knative.dev/target`: desired in-flight requests per instance
    /// (default: `container_concurrency` if set, else 100, as in Knative).
    pub target: Option<f64>,
    /// `spec.template.spec.containerConcurrency` (0 = unlimited, Knative's default).
    pub container_concurrency: u32,
    /// `spec.template.spec.timeoutSeconds` (default 300, as in Knative).
    pub timeout_seconds: u64,
    /// `containers[0].image`.
    pub image: String,
    /// `containers[0].command`.
    pub command: Vec<String>,
    /// `containers[0].args`.
    pub args: Vec<String>,
    /// `containers[0].env`, in order (`name`/`value` pairs).
    pub env: Vec<(String, String)>,
    /// `containers[0].ports[0].containerPort` (default 8080).
    pub container_port: u16,
    /// Backend name from the `stratus.dev/runtime` annotation (default `process`).
    pub runtime: String,
    /// All of `spec.template.metadata.annotations`, verbatim.
    pub annotations: BTreeMap<String, String>,
    /// `containers[0].resources` (requests, else limits): what one instance
    /// reserves on a worker. Unset fields take the worker's default.
    #[serde(default, skip_serializing_if = "Resources::is_unset")]
    pub resources: Resources,
    /// Position of the document in its file.
    pub pos: Pos,
}

/// What one instance of a Service reserves (see `resources.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// CPU in millicores (`cpu: 500m` = 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub millicores: Option<u32>,
    /// Memory in bytes (`memory: 128Mi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

impl Resources {
    /// Neither CPU nor memory given.
    pub fn is_unset(&self) -> bool {
        self.millicores.is_none() && self.memory_bytes.is_none()
    }
}

impl Service {
    /// Whether it opted in to by-reference data ([`DATA_ANNOTATION`]: `file`).
    pub fn data_by_file(&self) -> bool {
        self.annotations
            .get(DATA_ANNOTATION)
            .is_some_and(|v| v.trim() == "file")
    }

    /// Its [`INVOKE_ANNOTATION`], if set (the parser checked its value).
    pub fn invoke_policy(&self) -> Option<InvokePolicy> {
        self.annotations
            .get(INVOKE_ANNOTATION)
            .and_then(|v| InvokePolicy::parse(v))
    }

    /// The concurrency target the autoscaler aims for per instance.
    pub fn effective_target(&self) -> f64 {
        let cc = self.container_concurrency as f64;
        match (self.target, self.container_concurrency) {
            (Some(t), 0) => t,
            (Some(t), _) => t.min(cc),
            (None, 0) => 100.0,
            (None, _) => cc,
        }
    }
}

/// Where a step's input comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum InputRef {
    /// `$input`: the bytes the workflow was invoked with.
    WorkflowInput,
    /// The output of another step, by name.
    Step(String),
}

/// When a step fires, given the items that have arrived from its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Trigger {
    /// `allOf` (default): once, when every input is complete.
    AllOf,
    /// `{firstOf: k}`: once, as soon as k items have arrived; later ones are dropped.
    FirstOf(u32),
    /// `{batch: n}`: once per n arrived items; a final partial batch when inputs end.
    Batch(u32),
}

/// How several input items are framed into one request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum InputFormat {
    /// `json` (default): items are concatenated verbatim as `[a,b,c]`.
    /// Items must themselves be JSON texts; the platform does not re-encode them.
    #[default]
    Json,
    /// `multipart`: a `multipart/mixed` body, one part per item (binary safe).
    Multipart,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Step {
    pub name: String,
    /// Name of the function (Knative Service) this step calls.
    pub function: String,
    /// `inputs:`; empty with no `map` means `[$input]`.
    pub inputs: Vec<InputRef>,
    /// `map: src`: one run per item of `src`'s list output (dynamic fan-out).
    pub map: Option<InputRef>,
    pub trigger: Trigger,
    pub input_format: InputFormat,
    /// `when:` (or a `switch:` case): the step runs only if this holds over
    /// the JSON of the values it reads; otherwise it is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<crate::predicate::Expr>,
    /// `retry:`: how often a failed run is tried again (see [`RetryPolicy`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// `catch: STEP`: the step that runs, with the error as JSON, when a run
    /// of this step fails for good; its output stands in for the failed run's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch: Option<String>,
    pub pos: Pos,
}

/// A step's `retry: {attempts, backoff, maxBackoff}`.
///
/// A run is tried at most `attempts` times in all. Before try n+1 the driver
/// waits a random time in `0..=min(max_backoff, backoff * 2^(n-1))` (full
/// jitter). Only function errors (5xx), crashes, connection errors and
/// timeouts are retried, never a 4xx answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RetryPolicy {
    /// Total tries, at least 1.
    pub attempts: u32,
    /// Base of the exponential backoff, in milliseconds.
    pub backoff_ms: u64,
    /// Cap of one backoff, in milliseconds (at least `backoff_ms`).
    pub max_backoff_ms: u64,
}

impl Step {
    /// The sources this step reads from, whether through `map` or `inputs`.
    pub fn sources(&self) -> Vec<InputRef> {
        match &self.map {
            Some(m) => vec![m.clone()],
            None if self.inputs.is_empty() => vec![InputRef::WorkflowInput],
            None => self.inputs.clone(),
        }
    }
}

/// The largest `spec.keepInlineBelow` (the agents' own bound on the
/// threshold, `stratus_nodestore::remote::MAX_INLINE_BELOW`).
pub const MAX_KEEP_INLINE_BELOW: u64 = 64 << 10;

/// A `stratus.dev/v1alpha1` `Workflow`: a DAG of steps that call functions.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Workflow {
    pub name: String,
    pub steps: Vec<Step>,
    /// The step whose output is the workflow's result (default: the only sink).
    pub output: Option<String>,
    /// `spec.maxConcurrency`: most runs of one invocation in flight at once
    /// (the platform's default when absent).
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// `metadata.annotations["stratus.dev/invoke"]` ([`INVOKE_ANNOTATION`]).
    #[serde(default)]
    pub invoke: Option<InvokePolicy>,
    /// `spec.durability`: whether runs are journaled (default `none`).
    #[serde(default, skip_serializing_if = "Durability::is_none")]
    pub durability: Durability,
    /// `spec.timeoutSeconds`: the whole run's deadline; what has not finished
    /// by then is cancelled and the caller gets 504 naming those steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// `spec.placement`: where a cluster runs this workflow's steps
    /// (`locality`, `centralised`, `round-robin`, `random:SEED`; checked,
    /// stored in its canonical spelling). Absent: the control plane's
    /// `--workflow-placement`. Ignored on one host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<String>,
    /// `spec.workerParts`: whether a cluster's workers may run parts of
    /// this workflow after a step, triggering its successors themselves
    /// (with `--workflow-data workers`). Absent: the control plane's
    /// `--worker-chains`. Ignored on one host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_parts: Option<bool>,
    /// `spec.keepInlineBelow`: with `--workflow-data workers`, a step
    /// output shorter than this many bytes comes back to the control
    /// plane instead of being kept on its worker (0 keeps all; at most
    /// [`MAX_KEEP_INLINE_BELOW`]). Absent: the control plane's
    /// `--keep-inline-below`. Ignored on one host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_inline_below: Option<u64>,
    pub pos: Pos,
}

/// `spec.durability` of a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Runs live in memory only; a crash loses them (reported `lost`).
    #[default]
    None,
    /// Run start, every step completion and run end are journaled durably
    /// before the run goes on; unfinished runs resume after a restart.
    Journal,
}

impl Durability {
    pub fn parse(s: &str) -> Option<Durability> {
        match s {
            "none" => Some(Durability::None),
            "journal" => Some(Durability::Journal),
            _ => None,
        }
    }

    pub fn is_none(&self) -> bool {
        *self == Durability::None
    }
}

/// One parsed YAML document.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Resource {
    Service(Service),
    Workflow(Workflow),
}

/// Everything parsed from one file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Bundle {
    /// The file name given to [`crate::parse`]; used in error positions.
    pub file: String,
    pub services: Vec<Service>,
    pub workflows: Vec<Workflow>,
    /// Non-fatal findings, e.g. unknown fields.
    pub warnings: Vec<Warning>,
    /// Each accepted document's original text, in file order, as
    /// `(kind, name, yaml)`: `kind` is `"Service"` or `"Workflow"`, `yaml` the
    /// exact slice of the file for that document (without its `---` line).
    pub sources: Vec<(String, String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    pub file: String,
    pub pos: Pos,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: warning: {}",
            self.file, self.pos.line, self.pos.col, self.message
        )
    }
}
