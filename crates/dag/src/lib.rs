//! The dataflow DAG engine: a pure state machine (no IO, no clocks, no threads).
//!
//! A [`Plan`] is compiled once from a validated [`stratus_spec::Workflow`]. Each
//! invocation is an [`Execution`]: the driver (the gateway) feeds it events, the
//! workflow input and finished runs, each stamped with a time the driver reads,
//! and gets back the runs to dispatch. A step fires the moment its trigger
//! condition holds; nothing waits for a "stage" to finish.
//!
//! # Data semantics
//! Payloads are [`bytes::Bytes`] and are never re-encoded.
//! - Every step's output is either a **single item** (`allOf`, `firstOf`) or a
//!   **list** (`map`, `batch`: one item per run, in run order).
//! - An input that is a single item contributes one item; a list contributes its
//!   items. `map` over a single item splits it as a JSON array; each element's JSON
//!   text is sliced out of the producer's buffer (zero copy), so `["a b", {"x":1}]`
//!   yields the items `"a b"` and `{"x":1}`.
//! - A run whose trigger statically admits exactly one item (`map`, `firstOf: 1`,
//!   `batch: 1`, or `allOf` over one single-item input) receives that item's bytes
//!   unchanged. Any other run receives its items framed by the step's
//!   `inputFormat`: `json` concatenates them verbatim as `[a,b,c]`; `multipart`
//!   sends `multipart/mixed`, one part per item.
//! - `allOf` orders items by input (as listed), then by item index. `firstOf`
//!   and `batch` order them by arrival.
//! - The workflow's result is its output step's output; a list is framed as JSON.
//!   If the output step is skipped, the result is JSON `null` and
//!   [`Execution::output_skipped`] names it.
//! - A step whose condition (`when:`) is false is skipped, and so is a step all
//!   of whose inputs were skipped; joins count the inputs that ran (the rules
//!   are in `exec/branch.rs`).
//! - A failed run of a step with `retry:` is dispatched again (same
//!   [`RunId`], next `attempt`, a `not_before_us` from the backoff) on
//!   retryable errors, until its attempts are spent. A run that fails for
//!   good on a step with `catch: h` fires a run of `h` whose input is the
//!   error as JSON; `h`'s output then stands in for the failed run's output:
//!   the failed step's consumers receive it exactly as they would have
//!   received the run's own output (same item index, same framing). The
//!   rules are in `exec/retry.rs`.

mod array_split;
mod exec;
mod part;
mod payload;
mod plan;
pub mod record;
pub mod spread;
pub mod whole;

pub use array_split::{ArrayElement, ArraySplitError, ArraySplitter};
pub use exec::{backoff_us, Dispatch, ExecStatus, Execution, RunError, RunId};
pub use part::PartStep;
pub use payload::{split_json_array, Payload};
pub use plan::{Plan, PlanError, StepIdx};
pub use record::{
    Attempt, Breakdown, InFlight, Interruption, InvocationKind, InvocationRecord, RunRecord,
    RunStatus,
};
