//! Pipeline files: one YAML document describing one training pipeline over
//! a dynamic dataset. Pure: [`parse`] takes the text and returns a typed
//! [`Pipeline`] or every error found, each with `file:line:column` and the
//! field path. Unknown fields are errors (a typo must not silently fall back
//! to a default).
//!
//! The shape follows Modyn's pipeline config where it fits (`pipeline`,
//! `model.id`, `training`, `trigger`, `selection`, `evaluation`):
//!
//! ```yaml
//! pipeline:
//!   name: elec2-loss            # required
//!   description: free text
//! data:
//!   dataset: ../../data/drift/elec2.csv  # relative to this file
//!   label_column: class         # header name or 0-based index; default last
//!   timestamp_column: null      # default: none (row number is time)
//!   header: true                # default: detect
//!   on_bad_row: fail            # or skip (skipped rows are counted)
//!   delimiter: ","              # categorical columns, missing cells: see input.rs
//!   window: {samples: 1000}     # or {time: T}; replay windows (required)
//!   drift:                      # optional synthetic drift (8x8 images only)
//!     rotate: {from_degrees: 0, to_degrees: 180, passes: 4, seed: 0}
//! model:
//!   id: mlp                     # logreg | mlp | cnn | hoeffding_tree | hat | arf (required;
//!                               #   the stream learners' fields: see `stream.rs`)
//!   hidden: [32]                # mlp/cnn dense layers
//!   channels: [8, 16]           # cnn only
//! training:
//!   optimizer: adam             # sgd | adam (default adam)
//!   lr: 0.01                    # default 0.01
//!   momentum: 0.0               # sgd only
//!   weight_decay: 0.0
//!   batch_size: 64
//!   epochs_per_trigger: 1
//!   warm_start: true            # start from the previous model (Modyn: use_previous_model)
//!   seed: 0
//! trigger:                      # exactly one (required)
//!   every_samples: 1000         # | every_time: T
//!                               # | drift: {metric: mmd|ks, window: 500, threshold: 0.05}
//!                               # | performance: {min_accuracy: 0.7, window: 500}
//!                               # | drift: {detector: adwin, delta: 0.002, action: scratch}
//!                               # | any_of/all_of: [TRIGGER, ...], min_gap: N  (see `detector.rs`)
//! selection:
//!   strategy: loss              # all | new_data | uniform | freshness | loss | gradnorm |
//!                               # uncertainty_margin | uncertainty_entropy | kcenter | craig
//!   budget: 0.25                # fraction in (0, 1]; default 1
//! evaluation: {next_windows: 1}
//! retention: {max_age: 17520, max_samples: 20000}
//! tiering:
//!   hot_fraction: 0.25          # share of samples kept hot; default 1
//!   policy: importance          # importance (highest latest score; unscored first) | recency
//!   rescore: all                # all | hot: what a scoring selection re-reads and re-scores
//!   cost_hot_per_gb_month: 0.08 # USD; defaults: SSD block storage,
//!   cost_cold_per_gb_month: 0.0125 #   infrequent-access object storage
//!   cost_cold_read_per_gb: 0.01 #   and its retrieval fee
//! cost: {watts_per_core: 10}
//! ```

mod detector;
mod input;
mod stream;
pub use stream::default_learner;
mod types;
mod yaml;

#[cfg(test)]
mod tests;

pub use stratus_yaml::Pos;
use stratus_yaml::{Kind, Node};

pub use types::DriftAction;
pub use types::{
    Cost, Data, Evaluation, Model, ModelId, Optimizer, Pipeline, Rescore, Selection, SpecError,
    SpecErrors, Tiering, Training, TriggerSpec,
};

use crate::csv::{ColumnRef, Header, OnBadRow};
use crate::drift::RotationDrift;
use crate::select::Strategy;
use crate::store::{RetentionPolicy, TierPolicy, Window};
use crate::trigger::DriftMetric;

struct Ctx<'f> {
    file: &'f str,
    errors: Vec<SpecError>,
}

impl Ctx<'_> {
    fn error(&mut self, pos: Pos, field: &str, message: impl Into<String>) {
        self.errors.push(SpecError {
            file: self.file.to_string(),
            pos,
            field: field.to_string(),
            message: message.into(),
        });
    }

    fn expected(&mut self, node: &Node, field: &str, what: &str) {
        self.error(
            node.pos,
            field,
            format!("expected {what}, found {}", node.describe()),
        );
    }

    fn string(&mut self, node: &Node, field: &str) -> Option<String> {
        match node.as_scalar() {
            Some(s) if !s.trim().is_empty() => Some(s.to_string()),
            _ => {
                self.expected(node, field, "a non-empty string");
                None
            }
        }
    }

    fn plain<'n>(&mut self, node: &'n Node, field: &str, what: &str) -> Option<&'n str> {
        match &*node.kind {
            Kind::Scalar { value, plain: true } if !node.is_null() => Some(value),
            Kind::Scalar {
                value,
                plain: false,
            } => {
                self.error(
                    node.pos,
                    field,
                    format!("expected {what}, found string {value:?} (remove the quotes)"),
                );
                None
            }
            _ => {
                self.expected(node, field, what);
                None
            }
        }
    }

    fn int(&mut self, node: &Node, field: &str, lo: i64, hi: i64) -> Option<i64> {
        let text = self.plain(node, field, "an integer")?;
        let Ok(v) = text.replace('_', "").parse::<i64>() else {
            self.expected(node, field, "an integer");
            return None;
        };
        if v < lo || v > hi {
            self.error(
                node.pos,
                field,
                format!("{v} is out of range; use a value in {lo}..={hi}"),
            );
            return None;
        }
        Some(v)
    }

    /// A finite number; `range` describes the accepted values.
    fn num(
        &mut self,
        node: &Node,
        field: &str,
        ok: impl Fn(f64) -> bool,
        range: &str,
    ) -> Option<f64> {
        let text = self.plain(node, field, "a number")?;
        let v = match text.parse::<f64>() {
            Ok(v) if v.is_finite() => v,
            _ => {
                self.expected(node, field, "a number");
                return None;
            }
        };
        if !ok(v) {
            self.error(node.pos, field, format!("{v} is out of range; {range}"));
            return None;
        }
        Some(v)
    }

    fn bool(&mut self, node: &Node, field: &str) -> Option<bool> {
        match self.plain(node, field, "true or false")? {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            _ => {
                self.expected(node, field, "true or false");
                None
            }
        }
    }

    /// One of `choices` (a plain or quoted string).
    fn choice<T: Copy>(&mut self, node: &Node, field: &str, choices: &[(&str, T)]) -> Option<T> {
        let names: Vec<&str> = choices.iter().map(|c| c.0).collect();
        let Some(s) = node.as_scalar() else {
            self.expected(node, field, &format!("one of {}", names.join(", ")));
            return None;
        };
        if let Some((_, v)) = choices.iter().find(|c| c.0 == s) {
            return Some(*v);
        }
        let hint = suggest(s, &names)
            .map(|n| format!(" (did you mean '{n}'?)"))
            .unwrap_or_default();
        self.error(
            node.pos,
            field,
            format!("unknown value '{s}'{hint}; use one of {}", names.join(", ")),
        );
        None
    }

    fn usize_list(&mut self, node: &Node, field: &str, lo: i64, hi: i64) -> Option<Vec<usize>> {
        let Kind::Seq(items) = &*node.kind else {
            self.expected(node, field, "a list of integers");
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.int(item, &format!("{field}[{i}]"), lo, hi) {
                Some(v) => out.push(v as usize),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

/// A mapping read field by field; [`MapView::finish`] reports the rest.
struct MapView<'n> {
    path: String,
    pos: Pos,
    entries: &'n [(Node, Node)],
    used: Vec<bool>,
    known: Vec<&'static str>,
}

impl<'n> MapView<'n> {
    fn new(ctx: &mut Ctx<'_>, node: &'n Node, path: &str) -> Option<Self> {
        match &*node.kind {
            Kind::Map(entries) => Some(MapView {
                path: path.to_string(),
                pos: node.pos,
                entries,
                used: vec![false; entries.len()],
                known: Vec::new(),
            }),
            _ => {
                ctx.expected(
                    node,
                    if path.is_empty() { "file" } else { path },
                    "a mapping",
                );
                None
            }
        }
    }

    fn sub(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key`; null counts as absent.
    fn get(&mut self, key: &'static str) -> Option<&'n Node> {
        self.known.push(key);
        let i = self
            .entries
            .iter()
            .position(|(k, _)| k.as_scalar() == Some(key))?;
        self.used[i] = true;
        let v = &self.entries[i].1;
        (!v.is_null()).then_some(v)
    }

    fn required(&mut self, ctx: &mut Ctx<'_>, key: &'static str) -> Option<&'n Node> {
        let v = self.get(key);
        if v.is_none() {
            ctx.error(self.pos, &self.sub(key), "missing (required)");
        }
        v
    }

    /// Reports every field never asked for.
    fn finish(self, ctx: &mut Ctx<'_>) {
        for ((k, _), used) in self.entries.iter().zip(&self.used) {
            if *used {
                continue;
            }
            let name = k.as_scalar().unwrap_or("");
            let hint = suggest(name, &self.known)
                .map(|n| format!("did you mean '{n}'? "))
                .unwrap_or_default();
            ctx.error(
                k.pos,
                &self.sub(name),
                format!(
                    "unknown field; {hint}known fields: {}",
                    self.known.join(", ")
                ),
            );
        }
    }
}

/// The closest name within edit distance 2 (and less than half the name),
/// if any.
fn suggest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    if name.len() > 64 {
        return None;
    }
    candidates
        .iter()
        .map(|c| (edit_distance(name, c), *c))
        .filter(|(d, _)| *d <= 2 && *d < name.chars().count() / 2 + 1)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

const STRATEGIES: &[(&str, Strategy)] = &[
    ("all", Strategy::All),
    ("new_data", Strategy::NewData),
    ("uniform", Strategy::Uniform),
    ("freshness", Strategy::Freshness),
    ("loss", Strategy::Loss),
    ("gradnorm", Strategy::GradNorm),
    ("uncertainty_margin", Strategy::UncertaintyMargin),
    ("uncertainty_entropy", Strategy::UncertaintyEntropy),
    ("kcenter", Strategy::KCenter),
    ("craig", Strategy::Craig),
];

const MAX_COUNT: i64 = 1 << 40;

/// Parses and validates one pipeline file (`file` names it in messages).
pub fn parse(file: &str, text: &str) -> Result<Pipeline, SpecErrors> {
    let mut ctx = Ctx {
        file,
        errors: Vec::new(),
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let root = match yaml::load(text) {
        Ok(Some(r)) => r,
        Ok(None) => {
            ctx.error(
                Pos { line: 1, col: 1 },
                "",
                "empty file; expected a pipeline",
            );
            return Err(SpecErrors(ctx.errors));
        }
        Err((pos, msg)) => {
            ctx.error(pos, "", msg);
            return Err(SpecErrors(ctx.errors));
        }
    };
    let pipeline = read_pipeline(&mut ctx, &root);
    match pipeline {
        Some(p) if ctx.errors.is_empty() => Ok(p),
        _ => {
            ctx.errors
                .sort_by_key(|e| (e.pos.line, e.pos.col, e.field.clone()));
            Err(SpecErrors(ctx.errors))
        }
    }
}

fn read_pipeline(ctx: &mut Ctx<'_>, root: &Node) -> Option<Pipeline> {
    let mut top = MapView::new(ctx, root, "")?;
    let head = top.required(ctx, "pipeline").and_then(|n| {
        let mut m = MapView::new(ctx, n, "pipeline")?;
        let name = m
            .required(ctx, "name")
            .and_then(|v| ctx.string(v, "pipeline.name"));
        let description = m
            .get("description")
            .and_then(|v| ctx.string(v, "pipeline.description"))
            .unwrap_or_default();
        m.finish(ctx);
        Some((name?, description))
    });
    let data = top.required(ctx, "data").and_then(|n| read_data(ctx, n));
    let model = top.required(ctx, "model").and_then(|n| read_model(ctx, n));
    let training = match top.get("training") {
        Some(n) => read_training(ctx, n),
        None => Some(default_training()),
    };
    let trigger = top
        .required(ctx, "trigger")
        .and_then(|n| read_trigger(ctx, n));
    let selection = top
        .required(ctx, "selection")
        .and_then(|n| read_selection(ctx, n));
    let evaluation = match top.get("evaluation") {
        Some(n) => (|| {
            let mut m = MapView::new(ctx, n, "evaluation")?;
            let k = match m.get("next_windows") {
                Some(v) => ctx.int(v, "evaluation.next_windows", 1, MAX_COUNT)? as usize,
                None => 1,
            };
            m.finish(ctx);
            Some(Evaluation { next_windows: k })
        })(),
        None => Some(Evaluation { next_windows: 1 }),
    };
    let retention = match top.get("retention") {
        Some(n) => (|| {
            let mut m = MapView::new(ctx, n, "retention")?;
            let max_age = m
                .get("max_age")
                .map(|v| ctx.int(v, "retention.max_age", 1, i64::MAX));
            let max_samples = m
                .get("max_samples")
                .map(|v| ctx.int(v, "retention.max_samples", 1, i64::MAX));
            m.finish(ctx);
            Some(RetentionPolicy {
                max_age: max_age.map(|v| v.ok_or(())).transpose().ok()?,
                max_samples: max_samples
                    .map(|v| v.map(|x| x as u64).ok_or(()))
                    .transpose()
                    .ok()?,
            })
        })(),
        None => Some(RetentionPolicy::default()),
    };
    let tiering = match top.get("tiering") {
        Some(n) => read_tiering(ctx, n),
        None => Some(Tiering::default()),
    };
    let cost = match top.get("cost") {
        Some(n) => (|| {
            let mut m = MapView::new(ctx, n, "cost")?;
            let w = match m.get("watts_per_core") {
                Some(v) => ctx.num(v, "cost.watts_per_core", |x| x > 0.0, "must be > 0")?,
                None => DEFAULT_WATTS_PER_CORE,
            };
            m.finish(ctx);
            Some(Cost { watts_per_core: w })
        })(),
        None => Some(Cost {
            watts_per_core: DEFAULT_WATTS_PER_CORE,
        }),
    };
    top.finish(ctx);
    let (name, description) = head?;
    Some(Pipeline {
        name,
        description,
        data: data?,
        model: model?,
        training: training?,
        trigger: trigger?,
        selection: selection?,
        evaluation: evaluation?,
        retention: retention?,
        tiering: tiering?,
        cost: cost?,
    })
}

/// A server core's share of power under load (an assumption; set
/// `cost.watts_per_core` for the machine at hand).
pub const DEFAULT_WATTS_PER_CORE: f64 = 10.0;

fn column(ctx: &mut Ctx<'_>, node: &Node, field: &str) -> Option<ColumnRef> {
    match &*node.kind {
        Kind::Scalar { value, plain: true } => Some(match value.parse::<i64>() {
            Ok(i) => ColumnRef::Index(i),
            Err(_) => ColumnRef::Name(value.clone()),
        }),
        Kind::Scalar { value, .. } if !value.is_empty() => Some(ColumnRef::Name(value.clone())),
        _ => {
            ctx.expected(node, field, "a column name or 0-based index");
            None
        }
    }
}

fn read_data(ctx: &mut Ctx<'_>, n: &Node) -> Option<Data> {
    let mut m = MapView::new(ctx, n, "data")?;
    let dataset = m
        .required(ctx, "dataset")
        .and_then(|v| ctx.string(v, "data.dataset"));
    let label_column = m
        .get("label_column")
        .map(|v| column(ctx, v, "data.label_column"));
    let timestamp_column = m
        .get("timestamp_column")
        .map(|v| column(ctx, v, "data.timestamp_column"));
    let header = match m.get("header") {
        Some(v) => ctx
            .bool(v, "data.header")
            .map(|b| if b { Header::Present } else { Header::Absent }),
        None => Some(Header::Auto),
    };
    let on_bad_row = match m.get("on_bad_row") {
        Some(v) => ctx.choice(
            v,
            "data.on_bad_row",
            &[("fail", OnBadRow::Fail), ("skip", OnBadRow::Skip)],
        ),
        None => Some(OnBadRow::Fail),
    };
    let window = m.required(ctx, "window").and_then(|v| {
        let mut w = MapView::new(ctx, v, "data.window")?;
        let samples = w.get("samples");
        let time = w.get("time");
        let out = match (samples, time) {
            (Some(s), None) => {
                Some(Window::Samples(
                    ctx.int(s, "data.window.samples", 1, MAX_COUNT)? as usize,
                ))
            }
            (None, Some(t)) => Some(Window::Time(ctx.int(t, "data.window.time", 1, i64::MAX)?)),
            _ => {
                ctx.error(
                    v.pos,
                    "data.window",
                    "give exactly one of samples: N or time: T",
                );
                None
            }
        };
        w.finish(ctx);
        out
    });
    let drift = match m.get("drift") {
        Some(v) => read_drift(ctx, v).map(Some),
        None => Some(None),
    };
    let table = input::read_table(ctx, &mut m);
    m.finish(ctx);
    Some(Data {
        dataset: dataset?,
        label_column: label_column.map(|c| c.ok_or(())).transpose().ok()?,
        timestamp_column: timestamp_column.map(|c| c.ok_or(())).transpose().ok()?,
        header: header?,
        on_bad_row: on_bad_row?,
        window: window?,
        drift: drift?,
        table: table?,
    })
}

fn read_drift(ctx: &mut Ctx<'_>, n: &Node) -> Option<RotationDrift> {
    let mut m = MapView::new(ctx, n, "data.drift")?;
    let out = m.required(ctx, "rotate").and_then(|v| {
        let mut r = MapView::new(ctx, v, "data.drift.rotate")?;
        let deg = |ctx: &mut Ctx<'_>, v: Option<&Node>, f: &str| match v {
            Some(v) => ctx.num(v, f, |x| x.abs() <= 3600.0, "use degrees in -3600..=3600"),
            None => Some(0.0),
        };
        let from = deg(ctx, r.get("from_degrees"), "data.drift.rotate.from_degrees");
        let to = deg(ctx, r.get("to_degrees"), "data.drift.rotate.to_degrees");
        let passes = match r.get("passes") {
            Some(v) => ctx.int(v, "data.drift.rotate.passes", 1, 1000),
            None => Some(1),
        };
        let seed = match r.get("seed") {
            Some(v) => ctx.int(v, "data.drift.rotate.seed", 0, i64::MAX),
            None => Some(0),
        };
        r.finish(ctx);
        Some(RotationDrift {
            from_degrees: from? as f32,
            to_degrees: to? as f32,
            passes: passes? as usize,
            seed: seed? as u64,
        })
    });
    m.finish(ctx);
    out
}

fn read_model(ctx: &mut Ctx<'_>, n: &Node) -> Option<Model> {
    let mut m = MapView::new(ctx, n, "model")?;
    let id = m.required(ctx, "id").and_then(|v| {
        ctx.choice(
            v,
            "model.id",
            &[
                ("logreg", ModelId::LogReg),
                ("mlp", ModelId::Mlp),
                ("cnn", ModelId::Cnn),
                ("hoeffding_tree", ModelId::HoeffdingTree),
                ("hat", ModelId::Hat),
                ("arf", ModelId::Arf),
                ("online_logreg", ModelId::OnlineLogReg),
            ],
        )
    });
    if let Some(sid) = id.filter(|i| i.is_stream()) {
        let learner = stream::read_learner(ctx, &mut m, sid);
        m.finish(ctx);
        return Some(Model {
            id: sid,
            hidden: Vec::new(),
            channels: Vec::new(),
            learner: Some(learner?),
        });
    }
    let hidden_node = m.get("hidden");
    let channels_node = m.get("channels");
    let hidden = hidden_node.map(|v| ctx.usize_list(v, "model.hidden", 1, 1 << 16));
    let channels = channels_node.map(|v| ctx.usize_list(v, "model.channels", 1, 1024));
    m.finish(ctx);
    let id = id?;
    if let (ModelId::LogReg, Some(v)) = (id, hidden_node) {
        ctx.error(
            v.pos,
            "model.hidden",
            "logreg has no hidden layers; remove it or use mlp",
        );
        return None;
    }
    if let (ModelId::LogReg | ModelId::Mlp, Some(v)) = (id, channels_node) {
        ctx.error(v.pos, "model.channels", "only cnn has convolution channels");
        return None;
    }
    let hidden = match hidden {
        Some(h) => h?,
        None if id == ModelId::LogReg => Vec::new(),
        None => vec![32],
    };
    let channels = match channels {
        Some(c) => c?,
        None if id == ModelId::Cnn => vec![8, 16],
        None => Vec::new(),
    };
    Some(Model {
        id,
        hidden,
        channels,
        learner: None,
    })
}

fn default_training() -> Training {
    Training {
        optimizer: Optimizer::Adam,
        lr: 0.01,
        momentum: 0.0,
        weight_decay: 0.0,
        batch_size: 64,
        epochs_per_trigger: 1,
        warm_start: true,
        seed: 0,
    }
}

fn read_training(ctx: &mut Ctx<'_>, n: &Node) -> Option<Training> {
    let mut m = MapView::new(ctx, n, "training")?;
    let d = default_training();
    let mut ok = true;
    let mut t = d.clone();
    let mut field = |v: Option<()>| ok &= v.is_some();
    if let Some(v) = m.get("optimizer") {
        field(
            ctx.choice(
                v,
                "training.optimizer",
                &[("sgd", Optimizer::Sgd), ("adam", Optimizer::Adam)],
            )
            .map(|o| t.optimizer = o),
        );
    }
    if let Some(v) = m.get("lr") {
        field(
            ctx.num(
                v,
                "training.lr",
                |x| x > 0.0 && x <= 10.0,
                "use 0 < lr <= 10",
            )
            .map(|x| t.lr = x),
        );
    }
    let momentum = m.get("momentum");
    if let Some(v) = momentum {
        field(
            ctx.num(
                v,
                "training.momentum",
                |x| (0.0..1.0).contains(&x),
                "use 0 <= momentum < 1",
            )
            .map(|x| t.momentum = x),
        );
    }
    if let Some(v) = m.get("weight_decay") {
        field(
            ctx.num(v, "training.weight_decay", |x| x >= 0.0, "must be >= 0")
                .map(|x| t.weight_decay = x),
        );
    }
    if let Some(v) = m.get("batch_size") {
        field(
            ctx.int(v, "training.batch_size", 1, 1 << 20)
                .map(|x| t.batch_size = x as usize),
        );
    }
    if let Some(v) = m.get("epochs_per_trigger") {
        field(
            ctx.int(v, "training.epochs_per_trigger", 1, 10_000)
                .map(|x| t.epochs_per_trigger = x as u32),
        );
    }
    if let Some(v) = m.get("warm_start") {
        field(ctx.bool(v, "training.warm_start").map(|b| t.warm_start = b));
    }
    if let Some(v) = m.get("seed") {
        field(
            ctx.int(v, "training.seed", 0, i64::MAX)
                .map(|x| t.seed = x as u64),
        );
    }
    m.finish(ctx);
    if let (Some(v), Optimizer::Adam) = (momentum, t.optimizer) {
        ctx.error(
            v.pos,
            "training.momentum",
            "momentum applies to sgd only (adam has its own moment estimates)",
        );
        return None;
    }
    ok.then_some(t)
}

fn read_trigger(ctx: &mut Ctx<'_>, n: &Node) -> Option<TriggerSpec> {
    let Kind::Map(entries) = &*n.kind else {
        ctx.expected(
            n,
            "trigger",
            "a mapping with one of every_samples, every_time, drift, performance",
        );
        return None;
    };
    if entries
        .iter()
        .any(|(k, _)| matches!(k.as_scalar(), Some("any_of" | "all_of")))
    {
        return detector::read_compose(ctx, n);
    }
    if entries.len() != 1 {
        ctx.error(
            n.pos,
            "trigger",
            format!(
                "give exactly one trigger (every_samples, every_time, drift or performance), found {}",
                entries.len()
            ),
        );
        return None;
    }
    let (k, v) = &entries[0];
    let kind = k.as_scalar().unwrap_or("");
    match kind {
        "drift" if detector::has_detector(v) => detector::read_detector(ctx, v),
        "every_samples" => {
            Some(TriggerSpec::EverySamples(
                ctx.int(v, "trigger.every_samples", 1, MAX_COUNT)? as u64,
            ))
        }
        "every_time" => Some(TriggerSpec::EveryTime(ctx.int(
            v,
            "trigger.every_time",
            1,
            i64::MAX,
        )?)),
        "drift" => {
            let mut m = MapView::new(ctx, v, "trigger.drift")?;
            let metric = m.required(ctx, "metric").and_then(|x| {
                ctx.choice(
                    x,
                    "trigger.drift.metric",
                    &[("mmd", DriftMetric::Mmd), ("ks", DriftMetric::Ks)],
                )
            });
            let window = m
                .required(ctx, "window")
                .and_then(|x| ctx.int(x, "trigger.drift.window", 2, 1 << 20));
            let threshold_node = m.required(ctx, "threshold");
            let threshold = threshold_node
                .and_then(|x| ctx.num(x, "trigger.drift.threshold", |t| t > 0.0, "must be > 0"));
            m.finish(ctx);
            let (metric, threshold) = (metric?, threshold?);
            if metric == DriftMetric::Ks && threshold > 1.0 {
                ctx.error(
                    threshold_node.map_or(v.pos, |x| x.pos),
                    "trigger.drift.threshold",
                    "the KS statistic is at most 1; use a threshold in (0, 1]",
                );
                return None;
            }
            Some(TriggerSpec::Drift {
                metric,
                window: window? as usize,
                threshold,
            })
        }
        "performance" => {
            let mut m = MapView::new(ctx, v, "trigger.performance")?;
            let acc = m.required(ctx, "min_accuracy").and_then(|x| {
                ctx.num(
                    x,
                    "trigger.performance.min_accuracy",
                    |a| a > 0.0 && a <= 1.0,
                    "use an accuracy in (0, 1]",
                )
            });
            let window = m
                .required(ctx, "window")
                .and_then(|x| ctx.int(x, "trigger.performance.window", 1, 1 << 30));
            m.finish(ctx);
            Some(TriggerSpec::Performance {
                min_accuracy: acc?,
                window: window? as usize,
            })
        }
        other => {
            let names = ["every_samples", "every_time", "drift", "performance"];
            let hint = suggest(other, &names)
                .map(|n| format!(" (did you mean '{n}'?)"))
                .unwrap_or_default();
            ctx.error(
                k.pos,
                &format!("trigger.{other}"),
                format!(
                    "unknown trigger{hint}; use every_samples, every_time, drift or performance"
                ),
            );
            None
        }
    }
}

fn read_selection(ctx: &mut Ctx<'_>, n: &Node) -> Option<Selection> {
    let mut m = MapView::new(ctx, n, "selection")?;
    let strategy = m
        .required(ctx, "strategy")
        .and_then(|v| ctx.choice(v, "selection.strategy", STRATEGIES));
    let budget_node = m.get("budget");
    let budget = match budget_node {
        Some(v) => ctx.num(
            v,
            "selection.budget",
            |b| b > 0.0 && b <= 1.0,
            "the budget is a fraction in (0, 1]",
        ),
        None => Some(1.0),
    };
    m.finish(ctx);
    let (strategy, budget) = (strategy?, budget?);
    if matches!(strategy, Strategy::All | Strategy::NewData) && budget != 1.0 {
        ctx.error(
            budget_node.map_or(n.pos, |b| b.pos),
            "selection.budget",
            format!(
                "{} keeps every candidate, so its budget is 1; use uniform (or another \
                 strategy) to train on a fraction",
                strategy.name()
            ),
        );
        return None;
    }
    Some(Selection { strategy, budget })
}

fn read_tiering(ctx: &mut Ctx<'_>, n: &Node) -> Option<Tiering> {
    let mut m = MapView::new(ctx, n, "tiering")?;
    let mut t = Tiering::default();
    let mut ok = true;
    if let Some(v) = m.get("hot_fraction") {
        match ctx.num(
            v,
            "tiering.hot_fraction",
            |x| (0.0..=1.0).contains(&x),
            "use a fraction in [0, 1]",
        ) {
            Some(x) => t.hot_fraction = x,
            None => ok = false,
        }
    }
    if let Some(v) = m.get("policy") {
        let policies = [
            (TierPolicy::Importance.name(), TierPolicy::Importance),
            (TierPolicy::Recency.name(), TierPolicy::Recency),
        ];
        match ctx.choice(v, "tiering.policy", &policies) {
            Some(x) => t.policy = x,
            None => ok = false,
        }
    }
    if let Some(v) = m.get("rescore") {
        let modes = [
            (Rescore::All.name(), Rescore::All),
            (Rescore::Hot.name(), Rescore::Hot),
        ];
        match ctx.choice(v, "tiering.rescore", &modes) {
            Some(x) => t.rescore = x,
            None => ok = false,
        }
    }
    for (key, slot) in [
        ("cost_hot_per_gb_month", &mut t.cost_hot_per_gb_month),
        ("cost_cold_per_gb_month", &mut t.cost_cold_per_gb_month),
        ("cost_cold_read_per_gb", &mut t.cost_cold_read_per_gb),
    ] {
        if let Some(v) = m.get(key) {
            match ctx.num(v, &format!("tiering.{key}"), |x| x >= 0.0, "must be >= 0") {
                Some(x) => *slot = x,
                None => ok = false,
            }
        }
    }
    m.finish(ctx);
    ok.then_some(t)
}
