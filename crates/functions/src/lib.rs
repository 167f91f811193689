//! Built-in example functions for Stratus.
//!
//! Every function is an HTTP/1.1 server following the Knative runtime contract:
//! it listens on `$PORT` (default 8080), answers any method and path with the
//! function's result computed from the raw request body, and keeps connections
//! alive. The platform binary exposes them as `stratus fn <name>`, which calls
//! [`main_for`].
//!
//! Common behaviour of every function:
//! - `GET /stats` answers `{"inflight":n,"max_inflight":m,"requests":k,"pid":p,"function":"name"}`
//!   and is not itself counted.
//! - Bad input is answered with `400 Bad Request` and a plain-text message.
//! - An empty request body is valid input for every function (so a plain
//!   `GET /` works as a readiness probe).
//! - `SIGTERM`/`SIGINT` stop accepting connections, let in-flight requests
//!   finish (at most [`DRAIN_TIMEOUT`]) and exit with status 0.
//!
//! The pure logic of each handler lives in [`handlers`] as functions from
//! bytes to bytes, so it can be tested (and reused) without a server.

pub mod byref;
pub mod config;
pub mod handlers;
mod server;

use std::time::Duration;

pub use config::{Config, SplitMode};
pub use handlers::BadInput;
pub use server::{serve, serve_with, Stats, StatsSnapshot};

/// How long a stopping server waits for in-flight requests to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Every built-in function: `(name, one-line description)`, in [`Function`] order.
pub const FUNCTIONS: &[(&str, &str)] = &[
    (
        "echo",
        "returns the request body unchanged (Content-Type copied, default application/octet-stream)",
    ),
    ("noop", "returns an empty 200 response immediately (overhead benchmarks)"),
    (
        "spin",
        "burns CPU or sleeps: {\"ms\":10,\"mode\":\"busy\"|\"sleep\",\"memory_mb\":0,\"output_bytes\":null,\"crash\":false} -> JSON with pid and in-flight counts",
    ),
    (
        "split",
        "splits text (raw or a JSON string) at line boundaries into a JSON array of strings (env SPLIT_PARTS, default 4, or SPLIT_CHUNK_BYTES)",
    ),
    (
        "wc-map",
        "counts words of a text (JSON string, JSON array of strings, or raw text) -> JSON object word -> count",
    ),
    (
        "wc-merge",
        "sums word-count objects (one object or a possibly nested array of them) into one word -> count object",
    ),
    (
        "wc-reduce",
        "sums word-count objects -> {\"total_words\":N,\"unique_words\":U,\"top\":[[word,count],...]} (env TOP_N, default 10)",
    ),
    (
        "csv-parse",
        "parses CSV with a header row into a JSON array of batches of row objects (env CSV_BATCH_ROWS, default 50)",
    ),
    (
        "enrich",
        "adds derived fields (hour, price_spread, direction, peak) to row objects, keeping the input's shape",
    ),
    (
        "aggregate",
        "groups rows (env GROUP_BY) and computes count/sum/min/max/mean per numeric field; also merges partial aggregates",
    ),
    (
        "report",
        "renders an aggregate as a Markdown table of per-group means (env REPORT_FIELDS limits the columns)",
    ),
    (
        "bench",
        "one node of a benchmark DAG: reads the body, burns CPU for env BENCH_MS (BENCH_MODE busy|cpu|sleep), touches BENCH_MEMORY_MB MiB, answers BENCH_OUTPUT_BYTES bytes",
    ),
    (
        "memhog",
        "holds env MEMHOG_MIB MiB (default 16) of non-zero pseudo-random pages seeded by MEMHOG_SEED (default 1), filled before listening; each request touches MEMHOG_TOUCH_PCT% (default 100) of the pages -> {\"mib\":M,\"touched_pages\":N,\"checksum\":C}",
    ),
    (
        "flaky",
        "fails the first FLAKY_FAIL (default 1) calls of each x-stratus-idempotency-key, then answers {\"key\":K,\"calls\":n,\"input_bytes\":b}; FLAKY_MODE status (answer FLAKY_STATUS, default 500)|crash|hang; FLAKY_STATE_DIR keeps the counts in files (survives crashes)",
    ),
];

/// A built-in function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    Echo,
    Noop,
    Spin,
    Split,
    WcMap,
    WcMerge,
    WcReduce,
    CsvParse,
    Enrich,
    Aggregate,
    Report,
    Bench,
    Memhog,
    Flaky,
}

impl Function {
    /// All functions, in [`FUNCTIONS`] order.
    pub const ALL: [Function; 14] = [
        Function::Echo,
        Function::Noop,
        Function::Spin,
        Function::Split,
        Function::WcMap,
        Function::WcMerge,
        Function::WcReduce,
        Function::CsvParse,
        Function::Enrich,
        Function::Aggregate,
        Function::Report,
        Function::Bench,
        Function::Memhog,
        Function::Flaky,
    ];

    /// Looks a function up by its name (as in [`FUNCTIONS`]).
    pub fn from_name(name: &str) -> Option<Function> {
        Function::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The function's name, a DNS-1123 label.
    pub fn name(self) -> &'static str {
        FUNCTIONS[self as usize].0
    }

    /// One-line description.
    pub fn description(self) -> &'static str {
        FUNCTIONS[self as usize].1
    }
}

impl std::fmt::Display for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a function server could not start (or stopped abnormally).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown function {0:?}; known functions: {known}", known = known_names())]
    UnknownFunction(String),
    #[error("invalid environment variable {var}={value:?}: {reason}")]
    BadEnv {
        var: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid argument: {0} (usage: stratus fn <name> [--port N] [--host ADDR])")]
    BadArg(String),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn known_names() -> String {
    FUNCTIONS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs function `name` as a Knative-contract HTTP server until SIGTERM/SIGINT.
///
/// Listens on `$HOST:$PORT` (defaults `127.0.0.1` and `8080`); `args` may
/// override them with `--port N` / `--host ADDR` (also `--port=N`). All other
/// configuration comes from environment variables, see [`Config::from_env`].
/// Runs on a current-thread tokio runtime; CPU-heavy work (busy `spin`, large
/// bodies) is moved to tokio's blocking pool so connections stay responsive.
pub fn main_for(name: &str, args: &[String]) -> Result<(), Error> {
    let function = Function::from_name(name).ok_or_else(|| Error::UnknownFunction(name.into()))?;
    let config = Config::from_env()?;
    let mut host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let mut port = match std::env::var("PORT") {
        Ok(p) => parse_port("PORT", &p)?,
        Err(_) => 8080,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        let mut value = |flag: &str| {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| Error::BadArg(format!("{flag} needs a value")))
        };
        match flag {
            "--port" => {
                let v = value(flag)?;
                port = v
                    .parse()
                    .map_err(|_| Error::BadArg(format!("--port {v:?} is not a port number")))?;
            }
            "--host" => host = value(flag)?,
            other => return Err(Error::BadArg(format!("unexpected {other:?}"))),
        }
    }

    // Before listening: `memhog` fills its memory here, so it is ready once it accepts.
    let state = server::prepare(function, config);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let addr = format!("{host}:{port}");
        let listener = tokio::net::TcpListener::bind((host.as_str(), port))
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        server::serve_prepared(state, listener, shutdown_signal()).await
    });
    // Do not wait for blocking work (a busy `spin`) abandoned after the drain timeout.
    rt.shutdown_timeout(Duration::from_millis(100));
    result
}

fn parse_port(var: &'static str, value: &str) -> Result<u16, Error> {
    value.trim().parse().map_err(|_| Error::BadEnv {
        var,
        value: value.into(),
        reason: "not a port number (0-65535)".into(),
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            // Without signal handlers the default dispositions still stop the process.
            _ => std::future::pending::<()>().await,
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_dns1123_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    #[test]
    fn function_table_is_consistent() {
        assert_eq!(FUNCTIONS.len(), Function::ALL.len());
        for (i, f) in Function::ALL.into_iter().enumerate() {
            assert_eq!(f as usize, i);
            assert_eq!(Function::from_name(f.name()), Some(f));
            assert!(is_dns1123_label(f.name()), "{f} is not a DNS-1123 label");
            assert!(!f.description().is_empty());
        }
        assert_eq!(Function::from_name("nope"), None);
    }

    #[test]
    fn main_for_rejects_unknown_function_and_args() {
        let err = main_for("nope", &[]).unwrap_err();
        assert!(matches!(err, Error::UnknownFunction(_)));
        assert!(err.to_string().contains("wc-map"), "{err}");
        let err = main_for("echo", &["--bogus".into()]).unwrap_err();
        assert!(matches!(err, Error::BadArg(_)), "{err}");
        let err = main_for("echo", &["--port".into()]).unwrap_err();
        assert!(matches!(err, Error::BadArg(_)), "{err}");
        let err = main_for("echo", &["--port=abc".into()]).unwrap_err();
        assert!(matches!(err, Error::BadArg(_)), "{err}");
    }
}
