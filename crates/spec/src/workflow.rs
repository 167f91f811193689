//! `stratus.dev/v1alpha1` `Workflow` → [`Workflow`], with DAG validation.

use std::collections::{HashMap, HashSet};

use crate::branch::{self, Cond, Switch};
use crate::convert::{check_name, list_names, Ctx, MapView};
use crate::graph::cycles;
use crate::model::{
    Durability, InputFormat, InputRef, InvokePolicy, Pos, Step, Trigger, Workflow,
    INVOKE_ANNOTATION,
};
use crate::retry::{self, CatchInfo};
use stratus_yaml::{Kind, Node};

/// Largest `spec.maxConcurrency`.
const MAX_CONCURRENCY: i64 = 100_000;

/// A step as read, with the positions validation needs.
struct Parsed {
    step: Step,
    /// Every reference (from `map` or `inputs`) with its position.
    refs: Vec<(InputRef, Pos)>,
    /// Its `when:`, then (once switches are applied) its switch case's.
    conds: Vec<Cond>,
    /// `catch:` with its position.
    catch: Option<(String, Pos)>,
}

/// Converts a Workflow document whose `apiVersion`/`kind` were already read.
pub(crate) fn convert(
    ctx: &mut Ctx<'_>,
    mut root: MapView<'_>,
) -> (Option<(String, Pos)>, Option<Workflow>) {
    let errors_before = ctx.errors.len();
    let mut name = None;
    let mut invoke = None;
    if let Some(m) = root.require(ctx, "metadata") {
        if let Some(mut meta) = MapView::new(ctx, m, "metadata") {
            if let Some(n) = meta.require(ctx, "name") {
                if let Some(s) = ctx.string(n, "metadata.name") {
                    match check_name(&s) {
                        Ok(()) => name = Some((s, n.pos)),
                        Err(e) => ctx.error(n.pos, format!("metadata.name: {e}")),
                    }
                }
            }
            if let Some(a) = meta.get("annotations") {
                invoke = invoke_annotation(ctx, a);
            }
            meta.finish(ctx, &["namespace", "labels"], &[]);
        }
    }
    ctx.workflow = name.as_ref().map(|(n, _)| n.clone());

    let mut steps = Vec::new();
    let mut switches: Vec<Switch> = Vec::new();
    let mut output = None;
    let mut max_concurrency = None;
    let mut durability = Durability::None;
    let mut timeout_seconds = None;
    let mut placement = None;
    let mut worker_parts = None;
    let mut keep_inline_below = None;
    // False when a step or the output could not be read: then "which step is
    // final" cannot be judged.
    let mut complete = true;
    let mut spec_pos = root.pos;
    if let Some(s) = root.require(ctx, "spec") {
        if let Some(mut spec) = MapView::new(ctx, s, "spec") {
            spec_pos = spec.pos;
            if let Some(list) = spec.require(ctx, "steps") {
                if let Some(items) = ctx.seq(list, "spec.steps") {
                    if items.is_empty() {
                        ctx.error(list.pos, "spec.steps is empty; add at least one step");
                    }
                    for (i, item) in items.iter().enumerate() {
                        if branch::is_switch(item) {
                            switches.extend(branch::switch(ctx, item, i));
                            continue;
                        }
                        match step(ctx, item, i) {
                            Some(p) => steps.push(p),
                            None => complete = false,
                        }
                        ctx.step = None;
                    }
                }
            }
            if let Some(o) = spec.get("output") {
                output = ctx.string(o, "spec.output").map(|s| (s, o.pos));
                complete &= output.is_some();
            }
            if let Some(n) = spec.get("maxConcurrency") {
                max_concurrency = ctx
                    .int(n, "spec.maxConcurrency", 1, MAX_CONCURRENCY)
                    .map(|v| v as u32);
            }
            if let Some(n) = spec.get("durability") {
                if let Some(s) = ctx.string(n, "spec.durability") {
                    match Durability::parse(&s) {
                        Some(d) => durability = d,
                        None => ctx.error(
                            n.pos,
                            format!("spec.durability: expected journal or none, found {s:?}"),
                        ),
                    }
                }
            }
            if let Some(n) = spec.get("timeoutSeconds") {
                timeout_seconds = retry::timeout_seconds(ctx, n);
            }
            if let Some(n) = spec.get("placement") {
                if let Some(s) = ctx.string(n, "spec.placement") {
                    match s.parse::<stratus_placement::workflow::WorkflowPolicy>() {
                        Ok(p) => placement = Some(p.to_string()),
                        Err(e) => ctx.error(n.pos, format!("spec.placement: {e}")),
                    }
                }
            }
            if let Some(n) = spec.get("workerParts") {
                worker_parts = ctx.boolean(n, "spec.workerParts");
            }
            if let Some(n) = spec.get("keepInlineBelow") {
                let max = crate::model::MAX_KEEP_INLINE_BELOW as i64;
                keep_inline_below = ctx.int(n, "spec.keepInlineBelow", 0, max).map(|v| v as u64);
            }
            spec.finish(ctx, &[], &[]);
        }
    }
    let wf_pos = root.pos;
    root.finish(ctx, &["status"], &[]);

    apply_switches(ctx, &mut steps, &switches);
    validate(ctx, &steps, output.as_ref(), complete, spec_pos);
    ctx.workflow = None;

    let ok = ctx.errors.len() == errors_before;
    let wf = name.as_ref().filter(|_| ok).map(|(n, _)| Workflow {
        name: n.clone(),
        steps: steps
            .into_iter()
            .map(|p| Step {
                when: branch::combine(p.conds),
                ..p.step
            })
            .collect(),
        output: output.map(|(o, _)| o),
        max_concurrency,
        invoke,
        durability,
        timeout_seconds,
        placement,
        worker_parts,
        keep_inline_below,
        pos: wf_pos,
    });
    (name, wf)
}

/// Adds each switch case's condition to its branch step.
fn apply_switches(ctx: &mut Ctx<'_>, steps: &mut [Parsed], switches: &[Switch]) {
    if switches.is_empty() {
        return;
    }
    let names: Vec<String> = steps.iter().map(|p| p.step.name.clone()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut conds: HashMap<String, Vec<Cond>> = HashMap::new();
    for p in steps.iter_mut() {
        if !conds.contains_key(&p.step.name) {
            conds.insert(p.step.name.clone(), std::mem::take(&mut p.conds));
        }
    }
    branch::apply_switches(ctx, switches, &mut conds, &names);
    for p in steps.iter_mut() {
        if let Some(c) = conds.remove(&p.step.name) {
            p.conds = c;
        }
    }
}

/// `metadata.annotations`: [`INVOKE_ANNOTATION`] is read; other keys are the
/// user's own (labels for tools) and pass silently.
fn invoke_annotation(ctx: &mut Ctx<'_>, node: &Node) -> Option<InvokePolicy> {
    let mut ann = MapView::new(ctx, node, "metadata.annotations")?;
    let mut out = None;
    for (k, _, v) in ann.all(ctx) {
        if k != INVOKE_ANNOTATION {
            continue;
        }
        let Some(value) = v.as_scalar() else {
            ctx.type_error(v, &format!("annotation '{k}'"), "a string");
            continue;
        };
        out = InvokePolicy::parse(value);
        if out.is_none() {
            ctx.error(
                v.pos,
                format!("annotation '{k}': expected open or token, found {value:?}"),
            );
        }
    }
    out
}

fn step(ctx: &mut Ctx<'_>, node: &Node, i: usize) -> Option<Parsed> {
    let path = format!("spec.steps[{i}]");
    let mut m = MapView::new(ctx, node, &path)?;
    let name = match m.require(ctx, "name") {
        Some(n) => ctx.string(n, &format!("{path}.name")).map(|s| (s, n.pos)),
        None => None,
    };
    if let Some((n, _)) = &name {
        ctx.step = Some(n.clone());
    }
    if let Some((n, pos)) = &name {
        if let Err(e) = check_name(n) {
            ctx.error(*pos, format!("step {e}"));
        }
    }
    let function = m
        .require(ctx, "function")
        .and_then(|f| ctx.string(f, &format!("{path}.function")));

    let mut refs = Vec::new();
    let map = m.get("map").and_then(|n| {
        let s = ctx.string(n, &format!("{path}.map"))?;
        let r = input_ref(ctx, &s, n.pos)?;
        refs.push((r.clone(), n.pos));
        Some(r)
    });
    let mut inputs = Vec::new();
    let mut seen = HashSet::new();
    if let Some(n) = m.get("inputs") {
        let list: Vec<&Node> = match &*n.kind {
            Kind::Seq(items) => items.iter().collect(),
            Kind::Scalar { .. } => vec![n],
            Kind::Map(_) => {
                ctx.type_error(
                    n,
                    &format!("{path}.inputs"),
                    "a step name or a list of step names",
                );
                Vec::new()
            }
        };
        for (j, item) in list.into_iter().enumerate() {
            let Some(s) = ctx.string(item, &format!("{path}.inputs[{j}]")) else {
                continue;
            };
            let Some(r) = input_ref(ctx, &s, item.pos) else {
                continue;
            };
            if !seen.insert(r.clone()) {
                ctx.error(
                    item.pos,
                    format!("input '{s}' is listed twice; list each input once"),
                );
                continue;
            }
            refs.push((r.clone(), item.pos));
            inputs.push(r);
        }
        if map.is_some() {
            ctx.error(
                n.pos,
                "a step cannot have both map and inputs; use map to run once per item of one \
                 source, or inputs to combine sources",
            );
        }
    }
    let trigger_node = m.get("trigger");
    let trigger = trigger_node.and_then(|n| trigger(ctx, n, &format!("{path}.trigger")));
    if let (Some(n), Some(_)) = (trigger_node, &map) {
        ctx.error(n.pos, "a step with map cannot have a trigger (map already runs once per item); remove trigger");
    }
    let input_format = match m.get("inputFormat") {
        None => InputFormat::Json,
        Some(n) => match ctx.string(n, &format!("{path}.inputFormat")).as_deref() {
            Some("json") => InputFormat::Json,
            Some("multipart") => InputFormat::Multipart,
            Some(other) => {
                ctx.error(
                    n.pos,
                    format!("unknown inputFormat '{other}' (use json or multipart)"),
                );
                InputFormat::Json
            }
            None => InputFormat::Json,
        },
    };
    let when = m
        .get("when")
        .and_then(|n| branch::condition(ctx, n, &format!("{path}.when")));
    let retry = m
        .get("retry")
        .and_then(|n| retry::retry(ctx, n, &format!("{path}.retry")));
    let catch = m
        .get("catch")
        .and_then(|n| ctx.string(n, &format!("{path}.catch")).map(|s| (s, n.pos)));
    m.finish(ctx, &[], &[]);

    let (name, _) = name?;
    Some(Parsed {
        step: Step {
            name,
            function: function.unwrap_or_default(),
            inputs,
            map,
            trigger: trigger.unwrap_or(Trigger::AllOf),
            input_format,
            when: None,
            retry,
            catch: catch.as_ref().map(|(c, _)| c.clone()),
            pos: node.pos,
        },
        refs,
        conds: when.into_iter().collect(),
        catch,
    })
}

fn input_ref(ctx: &mut Ctx<'_>, s: &str, pos: Pos) -> Option<InputRef> {
    if s == "$input" {
        Some(InputRef::WorkflowInput)
    } else if s.starts_with('$') {
        ctx.error(
            pos,
            format!("unknown reference '{s}' (the only special input is $input)"),
        );
        None
    } else {
        Some(InputRef::Step(s.to_string()))
    }
}

fn trigger(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Trigger> {
    const HELP: &str = "use allOf, {firstOf: k} or {batch: n}";
    match &*node.kind {
        Kind::Scalar { value, .. } => match value.as_str() {
            "allOf" => Some(Trigger::AllOf),
            "firstOf" | "batch" => {
                ctx.error(
                    node.pos,
                    format!("trigger {value} needs a count, e.g. {{{value}: 2}}"),
                );
                None
            }
            _ => {
                ctx.error(node.pos, format!("unknown trigger '{value}' ({HELP})"));
                None
            }
        },
        Kind::Map(entries) if entries.len() == 1 => {
            let (k, v) = &entries[0];
            let key = k.as_scalar().unwrap_or("");
            let make: fn(u32) -> Trigger = match key {
                "firstOf" => Trigger::FirstOf,
                "batch" => Trigger::Batch,
                "allOf" if v.is_null() => return Some(Trigger::AllOf),
                _ => {
                    ctx.error(k.pos, format!("unknown trigger '{key}' ({HELP})"));
                    return None;
                }
            };
            let n = ctx.int(v, &format!("{path}.{key}"), i64::MIN, i64::MAX)?;
            if n < 1 {
                ctx.error(v.pos, format!("{key} must be at least 1, found {n}"));
                return None;
            }
            match u32::try_from(n) {
                Ok(n) => Some(make(n)),
                Err(_) => {
                    ctx.error(v.pos, format!("{key} {n} is too large"));
                    None
                }
            }
        }
        Kind::Map(_) => {
            ctx.error(
                node.pos,
                format!("{path}: a trigger mapping must have exactly one key ({HELP})"),
            );
            None
        }
        Kind::Seq(_) => {
            ctx.error(
                node.pos,
                format!(
                    "{path}: expected a trigger, found {} ({HELP})",
                    node.describe()
                ),
            );
            None
        }
    }
}

/// Checks names, references, cycles, triggers and the output step.
fn validate(
    ctx: &mut Ctx<'_>,
    steps: &[Parsed],
    output: Option<&(String, Pos)>,
    complete: bool,
    spec_pos: Pos,
) {
    // Duplicate names: the first definition wins.
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, p) in steps.iter().enumerate() {
        let name = p.step.name.as_str();
        if let Some(&first) = index.get(name) {
            ctx.step = Some(name.to_string());
            ctx.error(
                p.step.pos,
                format!(
                    "duplicate step name '{name}' (first defined at line {}); rename one of them",
                    steps[first].step.pos.line
                ),
            );
        } else {
            index.insert(name, i);
        }
    }
    let names: Vec<&str> = steps.iter().map(|p| p.step.name.as_str()).collect();

    // References and edges (producer -> consumer).
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    let mut ref_problem = false;
    for (j, p) in steps.iter().enumerate() {
        if index.get(p.step.name.as_str()) != Some(&j) {
            continue; // a duplicate; already reported
        }
        ctx.step = Some(p.step.name.clone());
        for (r, pos) in &p.refs {
            let InputRef::Step(src) = r else { continue };
            match index.get(src.as_str()) {
                Some(&i) if i == j => {
                    ref_problem = true;
                    ctx.error(
                        *pos,
                        format!(
                            "step '{src}' reads its own output; remove '{src}' from its inputs"
                        ),
                    );
                }
                Some(&i) => edges[i].push(j),
                None => {
                    ref_problem = true;
                    let hint = match ctx.suggest(src, names.iter().copied()) {
                        Some(s) => format!("did you mean '{s}'?"),
                        None => format!("steps: {}", list_names(&names)),
                    };
                    ctx.error(*pos, format!("unknown step '{src}' ({hint})"));
                }
            }
        }
    }

    // firstOf k can be checked now when every input yields exactly one item.
    for p in steps {
        let Trigger::FirstOf(k) = p.step.trigger else {
            continue;
        };
        if p.step.map.is_some() {
            continue;
        }
        let sources = p.step.sources();
        let all_single = sources.iter().all(|r| match r {
            InputRef::WorkflowInput => false,
            InputRef::Step(s) => index.get(s.as_str()).is_some_and(|&i| {
                let st = &steps[i].step;
                st.map.is_none() && !matches!(st.trigger, Trigger::Batch(_))
            }),
        });
        if all_single && k as usize > sources.len() {
            ctx.step = Some(p.step.name.clone());
            ctx.error(
                p.step.pos,
                format!(
                    "firstOf: {k} can never fire: the step has only {} input(s), each producing one item; \
                     use at most {}",
                    sources.len(),
                    sources.len()
                ),
            );
        }
    }
    ctx.step = None;

    if !ref_problem {
        let conds: Vec<Vec<Cond>> = steps.iter().map(|p| p.conds.clone()).collect();
        for (p, c) in branch::check_refs(ctx, &conds, &names, &index) {
            if !edges[p].contains(&c) {
                edges[p].push(c);
            }
        }
    }

    let handlers = if ref_problem {
        Vec::new()
    } else {
        let info: Vec<CatchInfo<'_>> = steps
            .iter()
            .map(|p| CatchInfo {
                name: &p.step.name,
                pos: p.step.pos,
                catch: p.catch.as_ref(),
                reads: !p.refs.is_empty(),
                conditional: !p.conds.is_empty(),
            })
            .collect();
        retry::check_catches(ctx, &info, &index, &edges, output.map(|(o, _)| o.as_str()))
    };

    let cycles = cycles(&edges);
    for cycle in &cycles {
        let path: Vec<&str> = cycle.iter().map(|&i| names[i]).collect();
        ctx.error(
            steps[cycle[0]].step.pos,
            format!(
                "cycle: {} (each step reads the previous one's output, as an input or in its \
                 condition); remove one of these inputs",
                path.join(" -> ")
            ),
        );
    }

    match output {
        Some((o, pos)) if !index.contains_key(o.as_str()) => {
            let hint = match ctx.suggest(o, names.iter().copied()) {
                Some(s) => format!("did you mean '{s}'?"),
                None => format!("steps: {}", list_names(&names)),
            };
            ctx.error(
                *pos,
                format!("spec.output names unknown step '{o}' ({hint})"),
            );
        }
        Some(_) => {}
        None if complete && cycles.is_empty() && !ref_problem => {
            let sinks: Vec<&str> = index_order(&index, steps.len())
                .filter(|&i| edges[i].is_empty() && !handlers.contains(&i))
                .map(|i| names[i])
                .collect();
            if sinks.len() > 1 {
                ctx.error(
                    spec_pos,
                    format!(
                        "the workflow has {} final steps ({}); set spec.output to the step whose \
                         output is the result",
                        sinks.len(),
                        list_names(&sinks)
                    ),
                );
            }
        }
        None => {}
    }
}

/// Indices of first definitions, in order.
fn index_order<'a>(index: &'a HashMap<&str, usize>, n: usize) -> impl Iterator<Item = usize> + 'a {
    let mut firsts: Vec<bool> = vec![false; n];
    for &i in index.values() {
        firsts[i] = true;
    }
    (0..n).filter(move |&i| firsts[i])
}
