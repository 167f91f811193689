//! Branches in workflows: a step's `when:` condition and the `switch:`
//! shorthand, read from YAML and checked against the step graph.
//!
//! ```yaml
//! steps:
//!   - name: blur
//!     function: blur
//!     inputs: [check]
//!     when: $check.flagged == true      # skipped unless it holds
//!   - switch:                            # the first case that holds runs
//!       - when: $probe.duration > 600
//!         step: split-long
//!       - when: $probe.duration > 60
//!         step: split-medium
//!       - default: passthrough           # optional; runs when no case holds
//! ```
//!
//! A switch compiles to conditions on its branch steps: case i gets
//! `not c0 and ... not c(i-1) and ci`, the default `not c0 and ... not cn`.

use std::collections::HashMap;

use crate::convert::{list_names, Ctx, MapView};
use crate::model::Pos;
use crate::predicate::{self, Expr, Root};
use stratus_yaml::{Kind, Node};

/// One condition as written, with where it was written.
#[derive(Debug, Clone)]
pub(crate) struct Cond {
    pub expr: Expr,
    /// The condition's YAML node.
    pub pos: Pos,
    /// A plain scalar: character offsets map onto columns.
    pub plain: bool,
    /// Holds when `expr` does not (an earlier switch case).
    pub negate: bool,
}

impl Cond {
    /// Where character `offset` of the condition text is in the file.
    fn pos_at(&self, offset: usize) -> Pos {
        pos_at(self.pos, self.plain, offset)
    }
}

fn pos_at(pos: Pos, plain: bool, offset: usize) -> Pos {
    if plain {
        Pos {
            line: pos.line,
            col: pos
                .col
                .saturating_add(u32::try_from(offset).unwrap_or(u32::MAX)),
        }
    } else {
        pos
    }
}

/// A `switch:` item of `spec.steps`.
pub(crate) struct Switch {
    /// (condition, branch step, position of its name); the default has no condition.
    pub cases: Vec<(Option<Cond>, String, Pos)>,
}

/// True for a `spec.steps` item that is a switch rather than a step.
pub(crate) fn is_switch(node: &Node) -> bool {
    matches!(&*node.kind, Kind::Map(entries)
        if entries.iter().any(|(k, _)| k.as_scalar() == Some("switch")))
}

/// Parses a condition node (`when:`).
pub(crate) fn condition(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Cond> {
    let (text, plain) = match &*node.kind {
        Kind::Scalar { value, plain } if !node.is_null() => (value.as_str(), *plain),
        _ => {
            ctx.type_error(node, path, "a condition such as '$input.size > 10'");
            return None;
        }
    };
    match predicate::parse(text) {
        Ok(expr) => Some(Cond {
            expr,
            pos: node.pos,
            plain,
            negate: false,
        }),
        Err(e) => {
            let at = pos_at(node.pos, plain, e.offset);
            let col = if plain {
                String::new()
            } else {
                format!(" (at character {} of the condition)", e.offset + 1)
            };
            ctx.error(at, format!("{path}: {e}{col}"));
            None
        }
    }
}

/// Reads `- switch: [{when, step}..., {default}]`.
pub(crate) fn switch(ctx: &mut Ctx<'_>, node: &Node, i: usize) -> Option<Switch> {
    let path = format!("spec.steps[{i}].switch");
    let mut m = MapView::new(ctx, node, &format!("spec.steps[{i}]"))?;
    let list = m.require(ctx, "switch")?;
    m.finish(ctx, &[], &[]);
    let items = ctx.seq(list, &path)?;
    if items.is_empty() {
        ctx.error(
            list.pos,
            format!("{path} is empty; add cases {{when, step}}"),
        );
        return None;
    }
    let mut cases = Vec::new();
    let mut ok = true;
    for (j, item) in items.iter().enumerate() {
        let cpath = format!("{path}[{j}]");
        let Some(mut c) = MapView::new(ctx, item, &cpath) else {
            ok = false;
            continue;
        };
        if let Some(d) = c.get("default") {
            if j + 1 != items.len() {
                ctx.error(
                    item.pos,
                    format!("{cpath}: default must be the last case (later cases could never run)"),
                );
                ok = false;
            }
            if let Some(name) = ctx.string(d, &format!("{cpath}.default")) {
                cases.push((None, name, d.pos));
            } else {
                ok = false;
            }
            c.finish(ctx, &[], &[]);
            continue;
        }
        let cond = c
            .require(ctx, "when")
            .and_then(|w| condition(ctx, w, &format!("{cpath}.when")));
        let step = c
            .require(ctx, "step")
            .and_then(|s| Some((ctx.string(s, &format!("{cpath}.step"))?, s.pos)));
        c.finish(ctx, &[], &[]);
        match (cond, step) {
            (Some(cond), Some((name, pos))) => cases.push((Some(cond), name, pos)),
            _ => ok = false,
        }
    }
    ok.then_some(Switch { cases })
}

/// Gives each switch's branch steps their conditions. `conds` holds the
/// steps' own `when:` (at most one each), by step name.
pub(crate) fn apply_switches(
    ctx: &mut Ctx<'_>,
    switches: &[Switch],
    conds: &mut HashMap<String, Vec<Cond>>,
    names: &[&str],
) {
    let mut branch_of: HashMap<&str, Pos> = HashMap::new();
    for sw in switches {
        let mut earlier: Vec<Cond> = Vec::new();
        for (cond, name, pos) in &sw.cases {
            let Some(own) = conds.get_mut(name.as_str()) else {
                let hint = match ctx.suggest(name, names.iter().copied()) {
                    Some(s) => format!("did you mean '{s}'?"),
                    None => format!("steps: {}", list_names(names)),
                };
                ctx.error(*pos, format!("switch names unknown step '{name}' ({hint})"));
                continue;
            };
            if let Some(first) = branch_of.insert(name, *pos) {
                ctx.error(
                    *pos,
                    format!(
                        "step '{name}' is already a branch at line {}; a step can be one branch only",
                        first.line
                    ),
                );
                continue;
            }
            if !own.is_empty() {
                ctx.error(
                    *pos,
                    format!(
                        "step '{name}' has its own when: and is a switch branch; move its condition \
                         into the switch case"
                    ),
                );
                continue;
            }
            own.extend(earlier.iter().cloned());
            if let Some(c) = cond {
                own.push(c.clone());
                earlier.push(Cond {
                    negate: true,
                    ..c.clone()
                });
            }
        }
    }
}

/// Checks that every `$step` a condition reads exists and is not the step
/// itself. Returns the edges (read step -> guarded step) the conditions add:
/// a condition waits for the steps it reads, so the caller includes them in
/// the cycle check (a step cannot read one downstream of itself).
pub(crate) fn check_refs(
    ctx: &mut Ctx<'_>,
    conds: &[Vec<Cond>],
    names: &[&str],
    index: &HashMap<&str, usize>,
) -> Vec<(usize, usize)> {
    let mut edges = Vec::new();
    for (s, cs) in conds.iter().enumerate() {
        if cs.is_empty() || index.get(names[s]) != Some(&s) {
            continue; // no condition, or a duplicate step (already reported)
        }
        ctx.step = Some(names[s].to_string());
        for c in cs {
            for p in c.expr.paths() {
                let Root::Step(r) = &p.root else { continue };
                let at = c.pos_at(p.offset);
                match index.get(r.as_str()) {
                    None => {
                        let hint = match ctx.suggest(r, names.iter().copied()) {
                            Some(h) => format!("did you mean '${h}'?"),
                            None => format!("steps: {}; or $input", list_names(names)),
                        };
                        ctx.error(at, format!("condition reads unknown step '${r}' ({hint})"));
                    }
                    Some(&i) if i == s => ctx.error(
                        at,
                        format!("step '{r}' cannot read its own output in its condition"),
                    ),
                    Some(&i) => edges.push((i, s)),
                }
            }
        }
    }
    ctx.step = None;
    edges
}

/// The one condition a step's conditions amount to.
pub(crate) fn combine(conds: Vec<Cond>) -> Option<Expr> {
    let mut es: Vec<Expr> = conds
        .into_iter()
        .map(|c| {
            if c.negate {
                Expr::Not(Box::new(c.expr))
            } else {
                c.expr
            }
        })
        .collect();
    match es.len() {
        0 => None,
        1 => es.pop(),
        _ => Some(Expr::And(es)),
    }
}

#[cfg(test)]
mod tests;
