//! Parsing and validation of Stratus YAML specs. Pure: no file or network IO.
//!
//! A file holds one or more YAML documents (separated by `---`); each is a
//! Knative `Service` (`apiVersion: serving.knative.dev/v1`, a function) or a
//! Stratus `Workflow` (`apiVersion: stratus.dev/v1alpha1`). [`parse`] reads
//! and validates one file, collecting every error it can find, each with
//! `file:line:column`; [`validate_refs`] then checks that workflow steps call
//! functions that exist. The positioned YAML loader underneath is the
//! `stratus-yaml` crate, which other parsers (e.g. `dyndata`'s pipelines) use too.
//!
//! # Workflow format
//!
//! ```yaml
//! apiVersion: stratus.dev/v1alpha1
//! kind: Workflow
//! metadata:
//!   name: wordcount
//! spec:
//!   steps:
//!     - name: split
//!       function: wc-split          # no inputs/map: reads the workflow input ($input)
//!     - name: count
//!       function: wc-map
//!       map: split                  # one run per item of split's output
//!     - name: reduce
//!       function: wc-reduce
//!       inputs: [count]             # step names or "$input"; a single string is fine
//!       trigger: allOf              # or {firstOf: k} or {batch: n}; default allOf
//!       inputFormat: json           # or multipart; default json
//!       when: $input.lang == "en"   # optional: skipped unless it holds
//!   output: reduce                  # optional when there is exactly one final step
//! ```
//!
//! A `spec.steps` item may instead be a `switch:` (a list of `{when, step}`
//! cases and an optional last `{default: step}`): the first case that holds
//! runs its step, the others' are skipped. Conditions are the [`predicate`]
//! language; `when:`, `switch:` and the skip and join rules are described in
//! the `branch` module and the README.
//!
//! - `name`: a DNS-1123 label (lowercase letters, digits, `-`; starts with a
//!   letter; at most 63 characters), unique within the workflow. Services and
//!   workflows share one namespace of names.
//! - `function`: the name of a `Service`.
//! - `inputs` and `map` are exclusive; `map` takes no `trigger`.
//! - Steps must form a DAG (no cycles, no self references).
//!
//! # Data semantics
//!
//! - A step's output is a **single item** (`allOf`, `firstOf`) or a **list**
//!   (`map`, `batch`: one item per run). An input that is a list contributes
//!   each of its items; `map` over a single item splits it as a JSON array.
//! - `allOf` fires once when every input is complete; `{firstOf: k}` fires once
//!   when k items have arrived (later ones are dropped); `{batch: n}` fires
//!   once per n items, plus a final partial batch.
//! - Several items are framed into one request body by `inputFormat`: `json`
//!   concatenates the items verbatim as `[a,b,...]` (items must be JSON texts;
//!   nothing is re-encoded); `multipart` sends `multipart/mixed`, one part per
//!   item (binary safe).
//!
//! # Knative Services
//!
//! Services are accepted as written for Knative; the fields Stratus honours
//! are listed on [`Service`]. Fields Knative knows but Stratus ignores are
//! accepted (some with a warning); unknown fields give warnings, never errors.

mod branch;
mod convert;
pub mod external;
mod graph;
mod knative;
mod model;
pub mod predicate;
pub mod resources;
mod retry;
mod service;
mod workflow;

use stratus_yaml as yaml;

#[cfg(test)]
mod tests;

pub use knative::{export_knative, KnativeExport};
pub use model::*;
pub use retry::{MAX_ATTEMPTS, MAX_BACKOFF_MS, MAX_TIMEOUT_SECONDS};

use std::collections::{HashMap, HashSet};
use std::fmt;

use convert::{suggest, Ctx, MapView, SUGGESTION_BUDGET};

/// `apiVersion` of Knative Services.
pub const SERVICE_API_VERSION: &str = "serving.knative.dev/v1";
/// `apiVersion` of Stratus Workflows.
pub const WORKFLOW_API_VERSION: &str = "stratus.dev/v1alpha1";

/// One problem found in a spec file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub file: String,
    pub pos: Pos,
    pub workflow: Option<String>,
    pub step: Option<String>,
    pub message: String,
}

impl fmt::Display for SpecError {
    /// `file:line:col: workflow 'w' step 's': message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.pos.line, self.pos.col)?;
        match (&self.workflow, &self.step) {
            (Some(w), Some(s)) => write!(f, "workflow '{w}' step '{s}': ")?,
            (Some(w), None) => write!(f, "workflow '{w}': ")?,
            (None, Some(s)) => write!(f, "step '{s}': ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for SpecError {}

/// All problems found, in file order. Displays one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", display_lines(.0))]
pub struct SpecErrors(pub Vec<SpecError>);

fn display_lines(errors: &[SpecError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl SpecErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, SpecError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl IntoIterator for SpecErrors {
    type Item = SpecError;
    type IntoIter = std::vec::IntoIter<SpecError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Parses and validates every document of one file (`file` is only used in
/// messages). Empty documents are skipped. Returns all errors found, sorted by
/// position; warnings are returned in the [`Bundle`] on success.
pub fn parse(file: &str, text: &str) -> Result<Bundle, SpecErrors> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let loaded = yaml::load(text);
    let sources = yaml::source_slices(text, &loaded.docs);
    let mut ctx = Ctx::new(file);
    for (pos, msg) in &loaded.errors {
        ctx.error(*pos, msg.clone());
    }

    let mut bundle = Bundle {
        file: file.to_string(),
        ..Bundle::default()
    };
    // Every valid name seen, for the shared namespace check: name -> (kind, pos).
    let mut names: HashMap<String, (&'static str, Pos)> = HashMap::new();
    for (doc, source) in loaded.docs.iter().zip(sources) {
        if doc.root.is_null() {
            continue;
        }
        let Some(mut root) = MapView::new(&mut ctx, &doc.root, "") else {
            continue;
        };
        let Some(kind) = document_kind(&mut ctx, &mut root) else {
            continue;
        };
        let (name, resource) = match kind {
            "Service" => {
                let (name, svc) = service::convert(&mut ctx, root);
                (name, svc.map(Resource::Service))
            }
            _ => {
                let (name, wf) = workflow::convert(&mut ctx, root);
                (name, wf.map(Resource::Workflow))
            }
        };
        if let Some((name, pos)) = name {
            check_unique(&mut ctx, &mut names, kind, &name, pos);
            if resource.is_some() {
                bundle.sources.push((kind.to_string(), name, source));
            }
        }
        match resource {
            Some(Resource::Service(s)) => bundle.services.push(s),
            Some(Resource::Workflow(w)) => bundle.workflows.push(w),
            None => {}
        }
    }

    if ctx.errors.is_empty() {
        bundle.warnings = ctx.warnings;
        bundle.warnings.sort_by_key(|w| (w.pos.line, w.pos.col));
        Ok(bundle)
    } else {
        let mut errors = ctx.errors;
        errors.sort_by_key(|e| (e.pos.line, e.pos.col));
        Err(SpecErrors(errors))
    }
}

/// Reads `apiVersion` and `kind`; returns `"Service"` or `"Workflow"`.
fn document_kind(ctx: &mut Ctx<'_>, root: &mut MapView<'_>) -> Option<&'static str> {
    const SUPPORTED: &str = "supported: kind Service with apiVersion serving.knative.dev/v1, \
                             kind Workflow with apiVersion stratus.dev/v1alpha1";
    let kind_node = root.get("kind");
    let api_node = root.get("apiVersion");
    let Some(kind_node) = kind_node else {
        ctx.error(
            root.pos,
            format!("missing required field kind ({SUPPORTED})"),
        );
        return None;
    };
    let kind = ctx.string(kind_node, "kind")?;
    let (kind, want_api) = match kind.as_str() {
        "Service" => ("Service", SERVICE_API_VERSION),
        "Workflow" => ("Workflow", WORKFLOW_API_VERSION),
        other => {
            let hint = ctx
                .suggest(other, ["Service", "Workflow"])
                .map(|s| format!("did you mean '{s}'? "))
                .unwrap_or_default();
            ctx.error(
                kind_node.pos,
                format!("unsupported kind '{other}' ({hint}{SUPPORTED})"),
            );
            return None;
        }
    };
    let Some(api_node) = api_node else {
        ctx.error(
            root.pos,
            format!("missing required field apiVersion (use {want_api} for kind {kind})"),
        );
        return None;
    };
    let api = ctx.string(api_node, "apiVersion")?;
    if api != want_api {
        ctx.error(
            api_node.pos,
            format!("unsupported apiVersion '{api}' for kind {kind} (use {want_api}; {SUPPORTED})"),
        );
        return None;
    }
    Some(kind)
}

/// Services and Workflows share one namespace of names.
fn check_unique(
    ctx: &mut Ctx<'_>,
    names: &mut HashMap<String, (&'static str, Pos)>,
    kind: &'static str,
    name: &str,
    pos: Pos,
) {
    match names.get(name) {
        Some(&(first_kind, first)) if first_kind == kind => ctx.error(
            pos,
            format!(
                "duplicate {kind} name '{name}' (first defined at line {}); rename one of them",
                first.line
            ),
        ),
        Some(&(first_kind, first)) => ctx.error(
            pos,
            format!(
                "{kind} '{name}' has the same name as the {first_kind} at line {} \
                 (Services and Workflows share one namespace); rename one of them",
                first.line
            ),
        ),
        None => {
            names.insert(name.to_string(), (kind, pos));
        }
    }
}

/// Cross-file check: every step's function must be a Service in `bundle` or
/// one `known_functions` accepts (e.g. already deployed).
pub fn validate_refs(
    bundle: &Bundle,
    known_functions: &dyn Fn(&str) -> bool,
) -> Result<(), SpecErrors> {
    let services: HashSet<&str> = bundle.services.iter().map(|s| s.name.as_str()).collect();
    let mut suggestions_left = SUGGESTION_BUDGET;
    let mut errors = Vec::new();
    for wf in &bundle.workflows {
        for step in &wf.steps {
            let f = step.function.as_str();
            if services.contains(f) || known_functions(f) {
                continue;
            }
            let mut hint = String::new();
            if let Some(left) = suggestions_left.checked_sub(1) {
                suggestions_left = left;
                if let Some(s) = suggest(f, bundle.services.iter().map(|s| s.name.as_str())) {
                    hint = format!("did you mean '{s}'? ");
                }
            }
            errors.push(SpecError {
                file: bundle.file.clone(),
                pos: step.pos,
                workflow: Some(wf.name.clone()),
                step: Some(step.name.clone()),
                message: format!(
                    "unknown function '{f}' ({hint}deploy a Service named '{f}' or fix the name)"
                ),
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(SpecErrors(errors))
    }
}
