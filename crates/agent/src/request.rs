//! What the agent API speaks: the start request (parsed and checked here,
//! pure: bytes in, a [`StartRequest`] or a [`RequestError`] naming the field
//! out) and the replies (`InstanceInfo`, `Health`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The largest control request (start) body.
pub const MAX_CONTROL_BYTES: usize = 1 << 20;
/// Longest instance id and function name.
pub const MAX_ID_LEN: usize = 128;
/// Most command words + args, env entries, annotations.
pub const MAX_LIST: usize = 256;
/// Longest command word, env value or annotation value.
pub const MAX_STRING: usize = 16 << 10;
/// Longest startup timeout a start request may ask for.
pub const MAX_STARTUP_MS: u64 = 600_000;

/// Why a start request was refused; the message says which field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("malformed start request at {path}: {message}")]
    Malformed { path: String, message: String },
    #[error("start request field {field}: {why}")]
    Invalid { field: String, why: String },
    #[error("start request body is {bytes} bytes; the limit is {limit}")]
    TooLarge { bytes: usize, limit: usize },
}

fn invalid(field: impl Into<String>, why: impl Into<String>) -> RequestError {
    RequestError::Invalid {
        field: field.into(),
        why: why.into(),
    }
}

/// One environment variable, as Knative writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// What an instance reserves of its node's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Thousandths of a core (1000 = one core).
    #[serde(default = "default_millicores")]
    pub millicores: u32,
    #[serde(default = "default_memory")]
    pub memory_bytes: u64,
}

fn default_millicores() -> u32 {
    100
}

fn default_memory() -> u64 {
    64 << 20
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            millicores: default_millicores(),
            memory_bytes: default_memory(),
        }
    }
}

/// `POST /v1/agent/instances`: start one instance of a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// Chosen by the control plane, unique on this node while it runs.
    pub id: String,
    pub function: String,
    #[serde(default)]
    pub revision: u64,
    /// Sandbox backend: `process`, `runc` or `microvm`.
    #[serde(default = "default_runtime")]
    pub runtime: String,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    #[serde(default = "default_port")]
    pub container_port: u16,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default = "default_startup_ms")]
    pub startup_timeout_ms: u64,
}

fn default_runtime() -> String {
    "process".into()
}

fn default_port() -> u16 {
    8080
}

fn default_startup_ms() -> u64 {
    30_000
}

/// Parses and checks a start request body.
pub fn parse_start(body: &[u8]) -> Result<StartRequest, RequestError> {
    if body.len() > MAX_CONTROL_BYTES {
        return Err(RequestError::TooLarge {
            bytes: body.len(),
            limit: MAX_CONTROL_BYTES,
        });
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let req: StartRequest = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        RequestError::Malformed {
            path: if path == "." || path == "?" {
                "the body".into()
            } else {
                path
            },
            message: e.into_inner().to_string(),
        }
    })?;
    req.validate()?;
    Ok(req)
}

/// Letters, digits, `-`, `_`, `.`; 1 to [`MAX_ID_LEN`] of them, not
/// starting with `.` or `-`: ids, function and node names.
pub fn valid_name(v: &str) -> Result<(), String> {
    if v.is_empty() || v.len() > MAX_ID_LEN {
        return Err(format!(
            "must be 1 to {MAX_ID_LEN} characters (got {})",
            v.len()
        ));
    }
    if v.starts_with(['.', '-']) {
        return Err(format!("{v:?} must not start with '.' or '-'"));
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{v:?} has {c:?}; use letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

fn check_name(field: &str, v: &str) -> Result<(), RequestError> {
    valid_name(v).map_err(|why| invalid(field, why))
}

/// A string handed to a process: no NUL (exec cannot pass it), bounded.
fn check_text(field: impl Fn() -> String, v: &str) -> Result<(), RequestError> {
    if v.contains('\0') {
        return Err(invalid(field(), "contains a NUL byte"));
    }
    if v.len() > MAX_STRING {
        return Err(invalid(
            field(),
            format!("is {} bytes; the limit is {MAX_STRING}", v.len()),
        ));
    }
    Ok(())
}

fn check_len<T>(field: &str, v: &[T]) -> Result<(), RequestError> {
    if v.len() > MAX_LIST {
        return Err(invalid(
            field,
            format!("has {} entries; the limit is {MAX_LIST}", v.len()),
        ));
    }
    Ok(())
}

impl StartRequest {
    /// The checks beyond types: names, sizes, NUL bytes, limits.
    pub fn validate(&self) -> Result<(), RequestError> {
        check_name("id", &self.id)?;
        check_name("function", &self.function)?;
        check_name("runtime", &self.runtime)?;
        check_text(|| "image".into(), &self.image)?;
        check_len("command", &self.command)?;
        check_len("args", &self.args)?;
        check_len("env", &self.env)?;
        check_len("annotations", &self.annotations.iter().collect::<Vec<_>>())?;
        if self.runtime == "process" && self.command.is_empty() {
            return Err(invalid(
                "command",
                "the process runtime needs a command (containers[0].command)",
            ));
        }
        if self.command.first().is_some_and(|c| c.is_empty()) {
            return Err(invalid("command[0]", "the program name is empty"));
        }
        for (i, c) in self.command.iter().enumerate() {
            check_text(|| format!("command[{i}]"), c)?;
        }
        for (i, a) in self.args.iter().enumerate() {
            check_text(|| format!("args[{i}]"), a)?;
        }
        for (i, e) in self.env.iter().enumerate() {
            if e.name.is_empty() || e.name.contains('=') {
                return Err(invalid(
                    format!("env[{i}].name"),
                    format!("{:?} must be non-empty and without '='", e.name),
                ));
            }
            if e.name == "PORT" {
                return Err(invalid(
                    format!("env[{i}].name"),
                    "PORT is set by the sandbox (the port the instance must listen on)",
                ));
            }
            check_text(|| format!("env[{i}].name"), &e.name)?;
            check_text(|| format!("env[{i}].value"), &e.value)?;
        }
        for (k, v) in &self.annotations {
            check_text(|| "annotations (a key)".into(), k)?;
            check_text(|| format!("annotations.{k}"), v)?;
        }
        if self.container_port == 0 {
            return Err(invalid("container_port", "must be 1 to 65535"));
        }
        if self.limits.millicores == 0 {
            return Err(invalid("limits.millicores", "must be at least 1"));
        }
        if self.limits.memory_bytes < 1 << 20 {
            return Err(invalid(
                "limits.memory_bytes",
                format!("{} is below 1 MiB", self.limits.memory_bytes),
            ));
        }
        if self.startup_timeout_ms == 0 || self.startup_timeout_ms > MAX_STARTUP_MS {
            return Err(invalid(
                "startup_timeout_ms",
                format!("{} must be 1 to {MAX_STARTUP_MS}", self.startup_timeout_ms),
            ));
        }
        Ok(())
    }
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    Starting,
    Ready,
    Exited,
}

/// One instance as the agent lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub id: String,
    pub function: String,
    pub revision: u64,
    pub runtime: String,
    pub state: InstanceState,
    /// How it ended, once `exited`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
    /// Where it serves on this node (often loopback only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Its port on the worker's advertised host, for callers on other hosts
    /// when the instance listens on all interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// The agent route that proxies to it (always reachable where the agent is).
    pub invoke_path: String,
    pub limits: Limits,
    /// Milliseconds its start took (spawn to ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<u64>,
}

/// What this node has and what it uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub instances: usize,
    pub millicores: u64,
    pub memory_bytes: u64,
}

/// `GET /v1/agent/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub name: String,
    pub cores: u32,
    pub memory_bytes: u64,
    pub max_instances: usize,
    pub used: Usage,
    /// Sandbox backends this node runs.
    pub runtimes: Vec<String>,
    /// Backends it lacks, with why.
    #[serde(default)]
    pub unavailable_runtimes: Vec<(String, String)>,
    /// Images and snapshots its node caches were filled with.
    pub images: Vec<String>,
    pub snapshots: Vec<String>,
    /// Workflow items kept here (`stratus up --workflow-data workers`):
    /// how many, and their bytes in memory and on disk.
    #[serde(default)]
    pub kept_items: KeptItems,
}

/// What the node data store holds for workflows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptItems {
    pub count: usize,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    /// Replies over the body limit split for a map as they arrived, and
    /// split from the whole reply because that failed.
    #[serde(default)]
    pub split_on_arrival: u64,
    #[serde(default)]
    pub split_from_whole: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_body() -> serde_json::Value {
        serde_json::json!({"id": "f-r1-0", "function": "f", "command": ["stratus", "fn", "echo"]})
    }

    fn err(body: &[u8]) -> String {
        parse_start(body).unwrap_err().to_string()
    }

    #[test]
    fn a_minimal_request_gets_defaults() {
        let r = parse_start(ok_body().to_string().as_bytes()).unwrap();
        assert_eq!(r.runtime, "process");
        assert_eq!(r.container_port, 8080);
        assert_eq!(r.limits, Limits::default());
        assert_eq!(r.startup_timeout_ms, 30_000);
    }

    #[test]
    fn type_errors_name_the_field_path() {
        let mut b = ok_body();
        b["limits"] = serde_json::json!({"millicores": "lots"});
        let e = err(b.to_string().as_bytes());
        assert!(e.contains("at limits.millicores"), "{e}");
        let mut b = ok_body();
        b["env"] = serde_json::json!([{"name": "A", "value": 3}]);
        let e = err(b.to_string().as_bytes());
        assert!(e.contains("at env[0].value"), "{e}");
        let mut b = ok_body();
        b["colour"] = serde_json::json!("red");
        let e = err(b.to_string().as_bytes());
        assert!(e.contains("unknown field `colour`"), "{e}");
    }

    #[test]
    fn nasty_bodies_are_refused_clearly() {
        for (body, want) in [
            (&b""[..], "at the body"),
            (b"{", "at the body"),
            (b"[]", "at the body"),
            (b"null", "at the body"),
            (b"{\"id\": \"x\"}", "missing field `function`"),
            (b"\xff\xfe", "at the body"),
            (
                b"{\"id\":\"a\",\"function\":\"f\",\"command\":[\"x\"],\"container_port\":70000}",
                "at container_port",
            ),
        ] {
            let e = err(body);
            assert!(e.contains(want), "{body:?}: {e}");
        }
        let big = vec![b' '; MAX_CONTROL_BYTES + 1];
        assert!(err(&big).contains("limit is"));
    }

    #[test]
    fn values_are_checked_beyond_types() {
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (serde_json::json!({"id": ""}), "field id"),
            (serde_json::json!({"id": "../etc"}), "field id"),
            (serde_json::json!({"id": "a/b"}), "'/'"),
            (serde_json::json!({"function": "-x"}), "field function"),
            (serde_json::json!({"command": []}), "needs a command"),
            (serde_json::json!({"command": [""]}), "command[0]"),
            (serde_json::json!({"command": ["a\u{0}b"]}), "NUL"),
            (serde_json::json!({"env": [{"name": "A=B"}]}), "env[0].name"),
            (
                serde_json::json!({"env": [{"name": "PORT"}]}),
                "set by the sandbox",
            ),
            (serde_json::json!({"container_port": 0}), "container_port"),
            (
                serde_json::json!({"limits": {"millicores": 0}}),
                "limits.millicores",
            ),
            (
                serde_json::json!({"limits": {"memory_bytes": 5}}),
                "below 1 MiB",
            ),
            (
                serde_json::json!({"startup_timeout_ms": 0}),
                "startup_timeout_ms",
            ),
            (
                serde_json::json!({"args": vec!["a"; MAX_LIST + 1]}),
                "args: has 257 entries",
            ),
        ];
        for (patch, want) in cases {
            let mut b = ok_body();
            for (k, v) in patch.as_object().unwrap() {
                b[k] = v.clone();
            }
            let e = err(b.to_string().as_bytes());
            assert!(e.contains(want), "{patch}: {e}");
        }
    }

    #[test]
    fn a_full_request_round_trips() {
        let b = serde_json::json!({
            "id": "wc-r2-7", "function": "wc", "revision": 2, "runtime": "process",
            "image": "stratus.dev/x", "command": ["python3", "wc.py"], "args": ["-v"],
            "env": [{"name": "A", "value": "é\n"}], "container_port": 9000,
            "annotations": {"stratus.dev/restore-policy": "lazy"},
            "limits": {"millicores": 250, "memory_bytes": 1048576},
            "startup_timeout_ms": 5000
        });
        let r = parse_start(b.to_string().as_bytes()).unwrap();
        assert_eq!(r.env[0].value, "é\n");
        let again = parse_start(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(again, r);
        // Each byte dropped or flipped: refused with a message, or a valid request.
        let text = b.to_string().into_bytes();
        for i in 0..text.len() {
            let mut cut = text.clone();
            cut.remove(i);
            if let Ok(r) = parse_start(&cut) {
                r.validate().unwrap();
            }
            let mut flip = text.clone();
            flip[i] ^= 0x20;
            if let Ok(r) = parse_start(&flip) {
                r.validate().unwrap();
            }
        }
    }

    #[test]
    fn other_runtimes_need_no_command() {
        let b =
            serde_json::json!({"id": "a", "function": "f", "runtime": "runc", "image": "rcss:x"});
        assert_eq!(
            parse_start(b.to_string().as_bytes()).unwrap().runtime,
            "runc"
        );
    }
}
