//! Knative `serving.knative.dev/v1` `Service` → [`Service`].

use std::collections::BTreeMap;

use crate::convert::{check_name, Ctx, MapView};
use crate::model::{
    InvokePolicy, Pos, Service, INVOKE_ANNOTATION, RESTORE_POLICIES, RESTORE_POLICY_ANNOTATION,
    RUNTIME_ANNOTATION,
};
use stratus_yaml::Node;

const AUTOSCALING: &str = "autoscaling.knative.dev/";
const MIN_SCALE: [&str; 2] = [
    "autoscaling.knative.dev/min-scale",
    "autoscaling.knative.dev/minScale",
];
const MAX_SCALE: [&str; 2] = [
    "autoscaling.knative.dev/max-scale",
    "autoscaling.knative.dev/maxScale",
];
const TARGET: &str = "autoscaling.knative.dev/target";

/// Kubernetes object metadata fields accepted without comment.
const META_SILENT: &[&str] = &[
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
    "finalizers",
    "managedFields",
    "generateName",
    "selfLink",
];

const POD_SPEC_SILENT: &[&str] = &[
    "serviceAccountName",
    "automountServiceAccountToken",
    "imagePullSecrets",
    "enableServiceLinks",
    "responseStartTimeoutSeconds",
    "idleTimeoutSeconds",
    "affinity",
    "nodeSelector",
    "tolerations",
    "topologySpreadConstraints",
    "runtimeClassName",
    "priorityClassName",
    "schedulerName",
    "securityContext",
    "dnsPolicy",
    "dnsConfig",
    "hostAliases",
];

const POD_SPEC_NOTED: &[(&str, &str)] = &[
    ("volumes", "volumes are not supported by Stratus (ignored)"),
    (
        "initContainers",
        "init containers are not supported by Stratus (ignored)",
    ),
];

const CONTAINER_SILENT: &[&str] = &[
    "name",
    "readinessProbe",
    "livenessProbe",
    "startupProbe",
    "imagePullPolicy",
    "securityContext",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "lifecycle",
];

const CONTAINER_NOTED: &[(&str, &str)] = &[
    (
        "envFrom",
        "envFrom is not supported by Stratus (ignored); list variables under env",
    ),
    (
        "volumeMounts",
        "volume mounts are not supported by Stratus (ignored)",
    ),
    (
        "workingDir",
        "workingDir is not supported by Stratus (ignored)",
    ),
];

/// Converts a Service document whose `apiVersion`/`kind` were already read.
/// Returns the name (with its position) whenever it is valid, and the Service
/// when the document had no errors.
pub(crate) fn convert(
    ctx: &mut Ctx<'_>,
    mut root: MapView<'_>,
) -> (Option<(String, Pos)>, Option<Service>) {
    let errors_before = ctx.errors.len();
    let doc_pos = root.pos;

    // metadata
    let mut name = None;
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
            if let Some(ns) = meta.get("namespace") {
                if let Some(s) = ctx.string(ns, "metadata.namespace") {
                    if s != "default" {
                        ctx.warn(
                            ns.pos,
                            format!("metadata.namespace '{s}' is ignored (Stratus has a single namespace)"),
                        );
                    }
                }
            }
            if let Some(a) = meta.get("annotations") {
                if let Some(mut ann) = MapView::new(ctx, a, "metadata.annotations") {
                    for (k, kpos, _) in ann.all(ctx) {
                        if k.starts_with(AUTOSCALING)
                            || k == RUNTIME_ANNOTATION
                            || k == INVOKE_ANNOTATION
                        {
                            ctx.warn(
                                kpos,
                                format!(
                                    "annotation '{k}' has no effect on the Service's metadata; \
                                     move it to spec.template.metadata.annotations"
                                ),
                            );
                        }
                    }
                }
            }
            meta.finish(ctx, META_SILENT, &[]);
        }
    }

    let mut svc = Service {
        name: String::new(),
        min_scale: 0,
        max_scale: 0,
        target: None,
        container_concurrency: 0,
        timeout_seconds: 300,
        image: String::new(),
        command: Vec::new(),
        args: Vec::new(),
        env: Vec::new(),
        container_port: 8080,
        runtime: "process".to_string(),
        annotations: BTreeMap::new(),
        resources: Default::default(),
        pos: doc_pos,
    };

    // spec.template.{metadata,spec}
    const CONTAINERS: &str = "spec.template.spec.containers";
    let missing = |ctx: &mut Ctx<'_>, pos: Pos| {
        ctx.error(pos, format!("missing required field {CONTAINERS}"))
    };
    let mut tspec_node = None;
    let mut scale_pos = None;
    match root.get("spec") {
        None => missing(ctx, root.pos),
        Some(s) => {
            if let Some(mut spec) = MapView::new(ctx, s, "spec") {
                match spec.get("template") {
                    None => missing(ctx, spec.pos),
                    Some(t) => {
                        if let Some(mut template) = MapView::new(ctx, t, "spec.template") {
                            if let Some(tm) = template.get("metadata") {
                                scale_pos = template_metadata(ctx, tm, &mut svc);
                            }
                            match template.get("spec") {
                                None => missing(ctx, template.pos),
                                Some(ts) => tspec_node = Some(ts),
                            }
                            template.finish(ctx, &[], &[]);
                        }
                    }
                }
                spec.finish(
                    ctx,
                    &[],
                    &[(
                        "traffic",
                        "traffic splitting is ignored (Stratus always routes to the current spec)",
                    )],
                );
            }
        }
    }
    if let Some(ts) = tspec_node {
        pod_spec(ctx, ts, &mut svc);
    }
    root.finish(ctx, &["status"], &[]);

    // An external Service needs its URL; a URL without it does nothing.
    let url = crate::external::URL_ANNOTATION;
    let has_url = svc.annotations.contains_key(url);
    if svc.runtime == crate::external::EXTERNAL_RUNTIME && !has_url {
        ctx.error(
            doc_pos,
            format!(
                "runtime 'external' needs the function's URL in the template annotation '{url}' \
                 (e.g. http://NAME.NAMESPACE.svc.cluster.local)"
            ),
        );
    } else if has_url && svc.runtime != crate::external::EXTERNAL_RUNTIME {
        ctx.warn(
            doc_pos,
            format!(
                "annotation '{url}' has no effect unless '{RUNTIME_ANNOTATION}' is 'external' (it is '{}')",
                svc.runtime
            ),
        );
    }

    if svc.max_scale > 0 && svc.min_scale > svc.max_scale {
        let pos = scale_pos.unwrap_or(doc_pos);
        ctx.error(
            pos,
            format!(
                "min-scale ({}) is greater than max-scale ({}); lower min-scale or raise max-scale",
                svc.min_scale, svc.max_scale
            ),
        );
    }

    if let Some((n, _)) = &name {
        svc.name = n.clone();
    }
    let ok = ctx.errors.len() == errors_before;
    (name, ok.then_some(svc))
}

/// Reads the revision template's metadata; returns where min-scale was set
/// (to point at it if it conflicts with max-scale).
fn template_metadata(ctx: &mut Ctx<'_>, node: &Node, svc: &mut Service) -> Option<Pos> {
    let mut meta = MapView::new(ctx, node, "spec.template.metadata")?;
    let pos = meta
        .get("annotations")
        .and_then(|a| annotations(ctx, a, svc));
    meta.finish(ctx, &["name", "labels", "namespace", "generateName"], &[]);
    pos
}

fn annotations(ctx: &mut Ctx<'_>, node: &Node, svc: &mut Service) -> Option<Pos> {
    const PATH: &str = "spec.template.metadata.annotations";
    let mut ann = MapView::new(ctx, node, PATH)?;
    let mut min_pos = None;
    let mut min_seen: Option<String> = None;
    let mut max_seen: Option<String> = None;
    for (key, kpos, v) in ann.all(ctx) {
        // Knative annotation values are strings; numbers are accepted too.
        let Some(value) = v.as_scalar().map(str::to_string) else {
            ctx.type_error(v, &format!("annotation '{key}'"), "a string");
            continue;
        };
        svc.annotations.insert(key.to_string(), value.clone());
        let scale = |seen: &mut Option<String>, ctx: &mut Ctx<'_>| -> Option<u32> {
            if let Some(first) = seen.replace(key.to_string()) {
                ctx.error(
                    kpos,
                    format!("both '{first}' and '{key}' are set; keep only one"),
                );
            }
            let parsed = value.trim().parse::<u32>().ok();
            if parsed.is_none() {
                ctx.error(
                    v.pos,
                    format!("annotation '{key}': expected a non-negative integer, found {value:?}"),
                );
            }
            parsed
        };
        if MIN_SCALE.contains(&key) {
            if let Some(n) = scale(&mut min_seen, ctx) {
                svc.min_scale = n;
                min_pos = Some(v.pos);
            }
        } else if MAX_SCALE.contains(&key) {
            if let Some(n) = scale(&mut max_seen, ctx) {
                svc.max_scale = n;
            }
        } else if key == TARGET {
            match value.trim().parse::<f64>() {
                Ok(t) if t.is_finite() && t > 0.0 => svc.target = Some(t),
                _ => ctx.error(
                    v.pos,
                    format!(
                        "annotation '{key}': expected a number greater than 0, found {value:?}"
                    ),
                ),
            }
        } else if key == RUNTIME_ANNOTATION {
            if value.trim().is_empty() {
                ctx.error(
                    v.pos,
                    format!("annotation '{key}' is empty; name a runtime such as 'process'"),
                );
            } else {
                svc.runtime = value.trim().to_string();
            }
        } else if key == crate::external::URL_ANNOTATION {
            if let Err(why) = crate::external::check_url(value.trim()) {
                ctx.error(v.pos, format!("annotation '{key}': {why}"));
            }
        } else if key == crate::model::DATA_ANNOTATION {
            if !matches!(value.trim(), "file" | "http") {
                ctx.error(
                    v.pos,
                    format!("annotation '{key}': expected file or http, found {value:?}"),
                );
            }
        } else if key == INVOKE_ANNOTATION {
            if InvokePolicy::parse(&value).is_none() {
                ctx.error(
                    v.pos,
                    format!("annotation '{key}': expected open or token, found {value:?}"),
                );
            }
        } else if key == RESTORE_POLICY_ANNOTATION {
            if !RESTORE_POLICIES.contains(&value.trim()) {
                ctx.error(
                    v.pos,
                    format!(
                        "annotation '{key}': expected one of {}, found {value:?}",
                        RESTORE_POLICIES.join(", ")
                    ),
                );
            }
        } else if let Some(rest) = key.strip_prefix(AUTOSCALING) {
            let harmless = matches!(
                (rest, value.as_str()),
                ("class", "kpa.autoscaling.knative.dev") | ("metric", "concurrency")
            );
            if !harmless {
                ctx.warn(
                    kpos,
                    format!("annotation '{key}' is not supported by Stratus (ignored)"),
                );
            }
        }
    }
    min_pos
}

fn pod_spec(ctx: &mut Ctx<'_>, node: &Node, svc: &mut Service) {
    let Some(mut spec) = MapView::new(ctx, node, "spec.template.spec") else {
        return;
    };
    if let Some(n) = spec.get("containerConcurrency") {
        if let Some(v) = ctx.int(n, "spec.template.spec.containerConcurrency", 0, 1000) {
            svc.container_concurrency = v as u32;
        }
    }
    if let Some(n) = spec.get("timeoutSeconds") {
        if let Some(v) = ctx.int(n, "spec.template.spec.timeoutSeconds", 1, 3600) {
            svc.timeout_seconds = v as u64;
        }
    }
    const PATH: &str = "spec.template.spec.containers";
    match spec.get("containers") {
        None => ctx.error(spec.pos, format!("missing required field {PATH}")),
        Some(c) => {
            if let Some(items) = ctx.seq(c, PATH) {
                match items {
                    [] => ctx.error(
                        c.pos,
                        format!("{PATH} is empty; define exactly one container"),
                    ),
                    [first, rest @ ..] => {
                        if let Some(second) = rest.first() {
                            ctx.error(
                                second.pos,
                                format!(
                                    "only one container per Service is supported, found {}; \
                                     remove the extra containers (sidecars are not supported)",
                                    items.len()
                                ),
                            );
                        }
                        container(ctx, first, svc);
                    }
                }
            }
        }
    }
    spec.finish(ctx, POD_SPEC_SILENT, POD_SPEC_NOTED);
}

fn container(ctx: &mut Ctx<'_>, node: &Node, svc: &mut Service) {
    const PATH: &str = "spec.template.spec.containers[0]";
    let Some(mut c) = MapView::new(ctx, node, PATH) else {
        return;
    };
    match c.get("image") {
        Some(n) => {
            if let Some(s) = ctx.string(n, &format!("{PATH}.image")) {
                svc.image = s;
            }
        }
        None => ctx.warn(
            c.pos,
            format!("{PATH}.image is missing (Knative requires it; Stratus's process runtime ignores it)"),
        ),
    }
    let mut command_ok = true;
    if let Some(n) = c.get("command") {
        match ctx.string_list(n, &format!("{PATH}.command")) {
            Some(v) => svc.command = v,
            None => command_ok = false,
        }
    }
    if let Some(n) = c.get("args") {
        if let Some(v) = ctx.string_list(n, &format!("{PATH}.args")) {
            svc.args = v;
        }
    }
    if let Some(n) = c.get("env") {
        env(ctx, n, &format!("{PATH}.env"), svc);
    }
    if let Some(n) = c.get("ports") {
        ports(ctx, n, &format!("{PATH}.ports"), svc);
    }
    if let Some(n) = c.get("resources") {
        crate::resources::read(ctx, n, &format!("{PATH}.resources"), &mut svc.resources);
    }
    if svc.runtime == "process" && svc.command.is_empty() && command_ok {
        ctx.error(
            c.pos,
            "process runtime needs containers[0].command (the program to run, \
             e.g. command: [\"stratus\", \"fn\", \"echo\"])",
        );
    }
    c.finish(ctx, CONTAINER_SILENT, CONTAINER_NOTED);
}

fn env(ctx: &mut Ctx<'_>, node: &Node, path: &str, svc: &mut Service) {
    let Some(items) = ctx.seq(node, path) else {
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let Some(mut e) = MapView::new(ctx, item, &p) else {
            continue;
        };
        let name = e
            .require(ctx, "name")
            .and_then(|n| ctx.string(n, &format!("{p}.name")));
        if let Some((kpos, _)) = e.get_with_key("valueFrom") {
            let n = name.as_deref().unwrap_or("?");
            ctx.warn(
                kpos,
                format!("{p}: valueFrom is not supported by Stratus; variable '{n}' is skipped"),
            );
            e.get("value");
            e.finish(ctx, &[], &[]);
            continue;
        }
        let value = match e.get("value") {
            Some(v) => ctx.string(v, &format!("{p}.value")),
            None => Some(String::new()),
        };
        if let (Some(n), Some(v)) = (name, value) {
            svc.env.push((n, v));
        }
        e.finish(ctx, &[], &[]);
    }
}

fn ports(ctx: &mut Ctx<'_>, node: &Node, path: &str, svc: &mut Service) {
    let Some(items) = ctx.seq(node, path) else {
        return;
    };
    if let Some(second) = items.get(1) {
        ctx.error(
            second.pos,
            format!("{path}: only one port is supported, found {}", items.len()),
        );
    }
    let Some(first) = items.first() else { return };
    let p = format!("{path}[0]");
    let Some(mut port) = MapView::new(ctx, first, &p) else {
        return;
    };
    if let Some(n) = port.require(ctx, "containerPort") {
        if let Some(v) = ctx.int(n, &format!("{p}.containerPort"), 1, 65535) {
            svc.container_port = v as u16;
        }
    }
    port.finish(ctx, &["name", "protocol", "hostPort", "hostIP"], &[]);
}
