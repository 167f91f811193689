//! [`Service`] → Knative `serving.knative.dev/v1` YAML, for applying the
//! functions deployed on Stratus to a real Knative cluster (`stratus export
//! knative`).
//!
//! Every field Stratus honours is written back where Knative reads it, and
//! every annotation of the revision template is kept verbatim (Stratus's
//! own `stratus.dev/*` annotations included: Knative ignores them, and they
//! let the file come back to Stratus unchanged). Reading the export back
//! with [`crate::parse`] gives the same [`Service`] (apart from positions);
//! the crate's tests check that, and check the output against Knative
//! Serving's published `Service` schema.
//!
//! Strings are written as YAML double-quoted scalars, with every character
//! that YAML does not allow raw (controls, line separators, BOM) escaped, so
//! no value can change meaning: `"on"`, `"0x10"`, `"#"`, leading spaces and
//! newlines all survive.

use std::fmt::Write as _;

use crate::model::Service;
use crate::SERVICE_API_VERSION;

/// What an export produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnativeExport {
    /// One YAML document per Service, separated by `---`.
    pub yaml: String,
    /// What a Knative cluster will not run as Stratus does, one line each
    /// (a Service with no image, a runtime Knative does not have).
    pub warnings: Vec<String>,
}

/// Writes `services` as Knative Services, in the order given.
pub fn export_knative(services: &[Service]) -> KnativeExport {
    let mut yaml = String::new();
    let mut warnings = Vec::new();
    for (i, s) in services.iter().enumerate() {
        if i > 0 {
            yaml.push_str("---\n");
        }
        write_service(&mut yaml, s);
        if s.image.is_empty() {
            warnings.push(format!(
                "{}: no containers[0].image; Knative requires one (Stratus's {} runtime ran `{}`)",
                s.name,
                s.runtime,
                s.command.join(" ")
            ));
        }
        if s.runtime != "process" && s.runtime != "runc" {
            warnings.push(format!(
                "{}: runtime '{}' has no Knative equivalent; Knative runs the image as a container",
                s.name, s.runtime
            ));
        }
    }
    KnativeExport { yaml, warnings }
}

fn write_service(out: &mut String, s: &Service) {
    let q = quote;
    let _ = writeln!(out, "apiVersion: {SERVICE_API_VERSION}");
    out.push_str("kind: Service\nmetadata:\n");
    let _ = writeln!(out, "  name: {}", q(&s.name));
    out.push_str("spec:\n  template:\n");
    if !s.annotations.is_empty() {
        out.push_str("    metadata:\n      annotations:\n");
        for (k, v) in &s.annotations {
            let _ = writeln!(out, "        {}: {}", q(k), q(v));
        }
    }
    out.push_str("    spec:\n");
    let _ = writeln!(
        out,
        "      containerConcurrency: {}",
        s.container_concurrency
    );
    let _ = writeln!(out, "      timeoutSeconds: {}", s.timeout_seconds);
    out.push_str("      containers:\n");
    let _ = writeln!(out, "        - image: {}", q(&s.image));
    for (key, list) in [("command", &s.command), ("args", &s.args)] {
        if !list.is_empty() {
            let items: Vec<String> = list.iter().map(|a| q(a)).collect();
            let _ = writeln!(out, "          {key}: [{}]", items.join(", "));
        }
    }
    if !s.env.is_empty() {
        out.push_str("          env:\n");
        for (name, value) in &s.env {
            let _ = writeln!(out, "            - name: {}", q(name));
            let _ = writeln!(out, "              value: {}", q(value));
        }
    }
    out.push_str("          ports:\n");
    let _ = writeln!(out, "            - containerPort: {}", s.container_port);
    if !s.resources.is_unset() {
        out.push_str("          resources:\n            requests:\n");
        if let Some(m) = s.resources.millicores {
            let _ = writeln!(out, "              cpu: {m}m");
        }
        if let Some(b) = s.resources.memory_bytes {
            let _ = writeln!(out, "              memory: \"{b}\"");
        }
    }
}

/// A YAML double-quoted scalar that reads back as exactly `s`.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => {
                let _ = if (c as u32) <= 0xFFFF {
                    write!(out, "\\u{:04X}", c as u32)
                } else {
                    write!(out, "\\U{:08X}", c as u32)
                };
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Not printable in a YAML stream, or a line break in YAML 1.1.
fn needs_escape(c: char) -> bool {
    c < ' '
        || ('\u{7f}'..='\u{9f}').contains(&c)
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
        )
}
