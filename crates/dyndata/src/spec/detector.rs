//! `trigger` fields of the drift detectors and of composed triggers:
//!
//! ```yaml
//! trigger:
//!   drift: {detector: adwin, delta: 0.002, action: scratch}
//!   # detector: adwin {delta} | ddm {warm_start, warning, drift}
//!   #   | eddm {warm_start, alpha, beta}
//!   #   | page_hinkley {min_instances, delta, threshold, alpha}
//!   #   (river's defaults for what is absent)
//!   # action: retrain (as `training` says; default) | scratch | warm_start | newest
//! trigger:
//!   any_of:                     # or all_of: every child has fired since the last fire
//!     - every_samples: 5000
//!     - drift: {detector: ddm}
//!   min_gap: 500                # samples between two fires (default 0); closer fires are dropped
//! ```
//!
//! A detector reads the model's 0/1 error stream: each sample is predicted by
//! the current model before it is trained on. With `feature: N` it reads the
//! values of feature N (0-based) instead, and needs no model.

use stratus_learn::DetectorSpec;
use stratus_yaml::{Kind, Node};

use super::types::DriftAction;
use super::{read_trigger, Ctx, MapView, TriggerSpec, MAX_COUNT};

/// Whether a `drift` trigger's mapping names a `detector` (else it is the
/// feature-distance drift trigger).
pub(super) fn has_detector(v: &Node) -> bool {
    matches!(&*v.kind, Kind::Map(e) if e.iter().any(|(k, _)| k.as_scalar() == Some("detector")))
}

pub(super) fn read_detector(ctx: &mut Ctx<'_>, v: &Node) -> Option<TriggerSpec> {
    let mut m = MapView::new(ctx, v, "trigger.drift")?;
    let names = [
        ("adwin", DetectorSpec::adwin()),
        ("ddm", DetectorSpec::ddm()),
        ("eddm", DetectorSpec::eddm()),
        ("page_hinkley", DetectorSpec::page_hinkley()),
    ];
    let choices: Vec<(&str, usize)> = names
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (*n, i))
        .collect();
    let which = m
        .required(ctx, "detector")
        .and_then(|x| ctx.choice(x, "trigger.drift.detector", &choices));
    let action = match m.get("action") {
        Some(x) => ctx.choice(
            x,
            "trigger.drift.action",
            &[
                ("retrain", DriftAction::Retrain),
                ("scratch", DriftAction::Scratch),
                ("warm_start", DriftAction::WarmStart),
                ("newest", DriftAction::Newest),
            ],
        ),
        None => Some(DriftAction::Retrain),
    };
    let feature = match m.get("feature") {
        Some(x) => ctx
            .int(x, "trigger.drift.feature", 0, 1 << 20)
            .map(|f| Some(f as usize)),
        None => Some(None),
    };
    let Some(which) = which else {
        // Unknown detector: its parameters cannot be judged; only the name is reported.
        return None;
    };
    let mut spec = names[which].1.clone();
    let mut pos = m.pos;
    let errors = ctx.errors.len();
    let mut num = |ctx: &mut Ctx<'_>, m: &mut MapView<'_>, key: &'static str, into: &mut f64| {
        if let Some(x) = m.get(key) {
            if let Some(val) = ctx.num(x, &format!("trigger.drift.{key}"), |_| true, "") {
                *into = val;
                pos = x.pos;
            }
        }
    };
    let count = |ctx: &mut Ctx<'_>, m: &mut MapView<'_>, key: &'static str, into: &mut u32| {
        if let Some(x) = m.get(key) {
            if let Some(val) = ctx.int(x, &format!("trigger.drift.{key}"), 1, 1 << 30) {
                *into = val as u32;
            }
        }
    };
    match &mut spec {
        DetectorSpec::Adwin { delta } => num(ctx, &mut m, "delta", delta),
        DetectorSpec::Ddm {
            warm_start,
            warning,
            drift,
        } => {
            count(ctx, &mut m, "warm_start", warm_start);
            num(ctx, &mut m, "warning", warning);
            num(ctx, &mut m, "drift", drift);
        }
        DetectorSpec::Eddm {
            warm_start,
            alpha,
            beta,
        } => {
            count(ctx, &mut m, "warm_start", warm_start);
            num(ctx, &mut m, "alpha", alpha);
            num(ctx, &mut m, "beta", beta);
        }
        DetectorSpec::PageHinkley {
            min_instances,
            delta,
            threshold,
            alpha,
        } => {
            count(ctx, &mut m, "min_instances", min_instances);
            num(ctx, &mut m, "delta", delta);
            num(ctx, &mut m, "threshold", threshold);
            num(ctx, &mut m, "alpha", alpha);
        }
    }
    m.finish(ctx);
    if ctx.errors.len() > errors {
        return None;
    }
    if let Err(e) = spec.build() {
        let stratus_learn::drift::DetectorError::OutOfRange { name, want, got } = e;
        let field = name;
        ctx.error(
            pos,
            &format!("trigger.drift.{field}"),
            format!("{got} is out of range; must be {want}"),
        );
        return None;
    }
    Some(TriggerSpec::Detector {
        detector: spec,
        action: action?,
        feature: feature?,
    })
}

/// `{any_of: [...], min_gap: N}` or `{all_of: [...], min_gap: N}`.
pub(super) fn read_compose(ctx: &mut Ctx<'_>, n: &Node) -> Option<TriggerSpec> {
    let mut m = MapView::new(ctx, n, "trigger")?;
    let any = m.get("any_of");
    let all = m.get("all_of");
    let min_gap = match m.get("min_gap") {
        Some(x) => ctx
            .int(x, "trigger.min_gap", 0, MAX_COUNT)
            .map(|g| g as u64),
        None => Some(0),
    };
    m.finish(ctx);
    let (list, is_all, field) = match (any, all) {
        (Some(_), Some(b)) => {
            ctx.error(b.pos, "trigger.all_of", "give any_of or all_of, not both");
            return None;
        }
        (Some(a), None) => (a, false, "trigger.any_of"),
        (None, Some(b)) => (b, true, "trigger.all_of"),
        (None, None) => return None,
    };
    let Kind::Seq(items) = &*list.kind else {
        ctx.expected(list, field, "a list of triggers");
        return None;
    };
    if items.len() < 2 {
        ctx.error(
            list.pos,
            field,
            format!("compose at least 2 triggers, found {}", items.len()),
        );
        return None;
    }
    let mut triggers = Vec::with_capacity(items.len());
    for item in items {
        triggers.push(read_trigger(ctx, item));
    }
    let triggers = triggers.into_iter().collect::<Option<Vec<_>>>()?;
    Some(TriggerSpec::Compose {
        all: is_all,
        triggers,
        min_gap: min_gap?,
    })
}

#[cfg(test)]
mod tests;
