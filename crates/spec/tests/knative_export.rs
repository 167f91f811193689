//! `export_knative`: what it writes reads back as the same Services, and
//! Knative Serving's published `Service` schema accepts it.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use stratus_spec::{export_knative, parse, Pos, Service};
use stratus_yaml::{Kind, Node};

fn examples() -> Vec<Service> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/functions");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let b = parse(&f.display().to_string(), &text).unwrap();
        out.extend(b.services);
    }
    assert!(out.len() >= 5, "the examples hold Services");
    out
}

fn without_pos(mut v: Vec<Service>) -> Vec<Service> {
    for s in &mut v {
        s.pos = Pos::default();
    }
    v
}

/// Exports, parses back, and checks nothing changed and nothing was warned.
fn round_trip(services: &[Service]) -> String {
    let e = export_knative(services);
    let back = parse("export.yaml", &e.yaml).unwrap_or_else(|err| panic!("{err}\n{}", e.yaml));
    assert!(back.warnings.is_empty(), "{:?}\n{}", back.warnings, e.yaml);
    assert_eq!(
        without_pos(back.services),
        without_pos(services.to_vec()),
        "\n{}",
        e.yaml
    );
    e.yaml
}

#[test]
fn the_examples_read_back_unchanged() {
    let services = examples();
    let yaml = round_trip(&services);
    assert_eq!(yaml.matches("kind: Service").count(), services.len());
    // Every honoured annotation is carried, e.g. the scale bounds.
    assert!(
        yaml.contains("\"autoscaling.knative.dev/max-scale\": \"4\""),
        "{yaml}"
    );
}

#[test]
fn a_service_without_an_image_is_exported_with_a_warning() {
    let mut s = examples().remove(0);
    s.image.clear();
    let e = export_knative(&[s.clone()]);
    assert_eq!(e.warnings.len(), 1, "{:?}", e.warnings);
    assert!(e.warnings[0].contains(&s.name), "{:?}", e.warnings);
    assert!(e.warnings[0].contains("image"), "{:?}", e.warnings);
}

// ---- Knative's schema ----------------------------------------------------

fn crd_schema() -> Node {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/knative-service-crd.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let loaded = stratus_yaml::load(&text);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let root = loaded.docs[0].root.clone();
    let version = &seq(&get(&get(&root, "spec").unwrap(), "versions").unwrap())[0];
    let schema = get(&get(version, "schema").unwrap(), "openAPIV3Schema").unwrap();
    assert_eq!(scalar(&get(&schema, "type").unwrap()), Some("object"));
    schema
}

fn get(n: &Node, key: &str) -> Option<Node> {
    match &*n.kind {
        Kind::Map(items) => items
            .iter()
            .find(|(k, _)| k.as_scalar() == Some(key))
            .map(|(_, v)| v.clone()),
        _ => None,
    }
}

fn seq(n: &Node) -> Vec<Node> {
    match &*n.kind {
        Kind::Seq(items) => items.clone(),
        _ => Vec::new(),
    }
}

fn scalar(n: &Node) -> Option<&str> {
    n.as_scalar()
}

fn flag(schema: &Node, key: &str) -> bool {
    get(schema, key).and_then(|v| v.as_scalar().map(|s| s == "true")) == Some(true)
}

/// The structural-schema subset Kubernetes applies to a custom resource:
/// types, properties (unknown fields are an error unless the schema keeps
/// them), additionalProperties, items, required, int-or-string.
fn check(schema: &Node, v: &Node, path: &str, errs: &mut Vec<String>) {
    let plain = |v: &Node| matches!(&*v.kind, Kind::Scalar { plain: true, .. });
    let is_int = |v: &Node| plain(v) && v.as_scalar().and_then(stratus_yaml::parse_int).is_some();
    if flag(schema, "x-kubernetes-int-or-string") {
        if !(is_int(v) || matches!(&*v.kind, Kind::Scalar { plain: false, .. })) {
            errs.push(format!("{path}: expected an integer or a string"));
        }
        return;
    }
    let ty = get(schema, "type");
    match ty.as_ref().and_then(scalar) {
        Some("object") => {
            let Kind::Map(items) = &*v.kind else {
                errs.push(format!(
                    "{path}: expected an object, found {}",
                    v.describe()
                ));
                return;
            };
            let props = get(schema, "properties");
            let extra = get(schema, "additionalProperties");
            let keep = flag(schema, "x-kubernetes-preserve-unknown-fields");
            for (k, val) in items {
                let key = k.as_scalar().unwrap_or_default();
                let sub = format!("{path}.{key}");
                match (props.as_ref().and_then(|p| get(p, key)), &extra) {
                    (Some(s), _) => check(&s, val, &sub, errs),
                    (None, Some(s)) => check(s, val, &sub, errs),
                    // `metadata` is `type: object` with nothing else: the
                    // API server checks ObjectMeta itself.
                    (None, None) if keep || props.is_none() => {}
                    (None, None) => errs.push(format!("{sub}: not in Knative's schema")),
                }
            }
            for r in get(schema, "required").map(|r| seq(&r)).unwrap_or_default() {
                let r = r.as_scalar().unwrap_or_default();
                if !items.iter().any(|(k, _)| k.as_scalar() == Some(r)) {
                    errs.push(format!("{path}: missing required field '{r}'"));
                }
            }
        }
        Some("array") => match &*v.kind {
            Kind::Seq(items) => {
                if let Some(item) = get(schema, "items") {
                    for (i, x) in items.iter().enumerate() {
                        check(&item, x, &format!("{path}[{i}]"), errs);
                    }
                }
            }
            _ => errs.push(format!("{path}: expected an array, found {}", v.describe())),
        },
        Some("string") => {
            // A plain scalar is a string only if YAML does not read it as
            // a number, a boolean or null.
            let other = plain(v)
                && (v.is_null()
                    || v.as_scalar().is_some_and(|t| {
                        stratus_yaml::parse_int(t).is_some()
                            || t.parse::<f64>().is_ok()
                            || matches!(t, "true" | "false" | "True" | "False")
                    }));
            if other || !matches!(&*v.kind, Kind::Scalar { .. }) {
                errs.push(format!("{path}: expected a string, found {}", v.describe()));
            }
        }
        Some("integer") if !is_int(v) => {
            errs.push(format!(
                "{path}: expected an integer, found {}",
                v.describe()
            ));
        }
        Some("boolean") if !(plain(v) && matches!(v.as_scalar(), Some("true" | "false"))) => {
            errs.push(format!(
                "{path}: expected a boolean, found {}",
                v.describe()
            ));
        }
        _ => {}
    }
}

fn schema_errors(schema: &Node, yaml: &str) -> Vec<String> {
    let loaded = stratus_yaml::load(yaml);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let mut errs = Vec::new();
    for d in &loaded.docs {
        check(schema, &d.root, "", &mut errs);
    }
    errs
}

#[test]
fn knatives_published_schema_accepts_the_export() {
    let schema = crd_schema();
    let yaml = export_knative(&examples()).yaml;
    assert_eq!(
        schema_errors(&schema, &yaml),
        Vec::<String>::new(),
        "\n{yaml}"
    );
}

#[test]
fn the_schema_check_rejects_what_knative_would() {
    // The check above could pass vacuously; these must fail.
    let schema = crd_schema();
    let good = export_knative(&examples()[..1]).yaml;
    for (from, to, want) in [
        (
            "containerConcurrency: 0",
            "containerConcurrency: \"x\"",
            "expected an integer",
        ),
        (
            "timeoutSeconds:",
            "timeoutSecond:",
            "not in Knative's schema",
        ),
        ("- image: \"", "- image: 12 #\"", "expected a string"),
        ("- image:", "- imag:", "not in Knative's schema"),
        (
            "      containers:",
            "      containerz:",
            "missing required field 'containers'",
        ),
    ] {
        assert!(good.contains(from), "{from}\n{good}");
        let bad = good.replacen(from, to, 1);
        let errs = schema_errors(&schema, &bad);
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{from} → {to}: {errs:?}"
        );
    }
}

// ---- any string survives -------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,12}",
        Just("on".to_string()),
        Just("0x10".to_string()),
        Just("  lead\ttrail \n".to_string()),
        Just("# not a comment: {a: [b]}".to_string()),
        Just("\u{85}\u{2028}\u{feff}\u{7f}\u{1F600}".to_string()),
        Just("'\"\\".to_string()),
    ]
}

fn service() -> impl Strategy<Value = Service> {
    (
        "[a-z][a-z0-9]{0,10}",
        (0u32..=1000, 1u64..=3600, 1u16..=65535),
        text(),
        proptest::collection::vec(text(), 1..4),
        proptest::collection::vec(text(), 0..4),
        proptest::collection::vec(("[A-Z_][A-Z0-9_]{0,8}", text()), 0..4),
        proptest::collection::btree_map("example\\.com/[a-z]{1,8}", text(), 0..4),
        (
            proptest::option::of(1u32..=u32::MAX),
            proptest::option::of(1u64..=1 << 60),
        ),
    )
        .prop_map(
            |(name, (cc, timeout, port), image, command, args, env, ann, (cpu, mem))| Service {
                name,
                min_scale: 0,
                max_scale: 0,
                target: None,
                container_concurrency: cc,
                timeout_seconds: timeout,
                image,
                command,
                args,
                env,
                container_port: port,
                runtime: "process".into(),
                annotations: ann.into_iter().collect::<BTreeMap<_, _>>(),
                resources: stratus_spec::Resources {
                    millicores: cpu,
                    memory_bytes: mem,
                },
                pos: Pos::default(),
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn any_service_reads_back_unchanged(s in service()) {
        let e = export_knative(std::slice::from_ref(&s));
        let back = parse("export.yaml", &e.yaml).map_err(|err| TestCaseError::fail(format!("{err}\n{}", e.yaml)))?;
        prop_assert_eq!(without_pos(back.services), vec![s], "\n{}", e.yaml);
    }
}
