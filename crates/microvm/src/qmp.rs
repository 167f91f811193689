//! A small QMP (QEMU Machine Protocol) client: JSON lines over a unix socket.
//!
//! ```text
//!  connect ─► greeting {"QMP":…} ─► qmp_capabilities ─► command mode
//!  execute(cmd) ─► write {"execute":cmd,"arguments":…}\n
//!               ─► read lines: events skipped, then {"return":…} | {"error":…}
//! ```
//!
//! Replies come from a QEMU process, so [`parse_message`] treats them as
//! untrusted: the line length is checked before decoding ([`MAX_LINE`]) and
//! anything that is not one of the four message shapes is an error. Every
//! read has a timeout, and every error names the command it belongs to.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// Longest reply line accepted (QEMU's replies to our commands are < 4 KiB).
pub const MAX_LINE: usize = 1 << 20;

/// One decoded QMP message.
#[derive(Debug, Clone, PartialEq)]
pub enum QmpMessage {
    /// The greeting sent on connect (`{"QMP": {"version": …}}`).
    Greeting { version: String },
    /// A successful reply.
    Return(Value),
    /// A failed command.
    Error { class: String, desc: String },
    /// An asynchronous event (skipped by the client).
    Event { name: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QmpParseError {
    #[error("reply line of {0} bytes exceeds the limit of {MAX_LINE} bytes")]
    TooLong(usize),
    #[error("reply is not JSON: {0}")]
    NotJson(String),
    #[error("reply is not a JSON object")]
    NotObject,
    #[error("error reply without string 'class' and 'desc'")]
    BadError,
    #[error("event without a string 'event' name")]
    BadEvent,
    #[error("reply has none of 'return', 'error', 'event', 'QMP' (keys: {0})")]
    Unknown(String),
}

/// Decodes one reply line (with or without its trailing newline).
pub fn parse_message(line: &[u8]) -> Result<QmpMessage, QmpParseError> {
    if line.len() > MAX_LINE {
        return Err(QmpParseError::TooLong(line.len()));
    }
    let v: Value =
        serde_json::from_slice(line).map_err(|e| QmpParseError::NotJson(e.to_string()))?;
    let Value::Object(mut obj) = v else {
        return Err(QmpParseError::NotObject);
    };
    if let Some(r) = obj.remove("return") {
        return Ok(QmpMessage::Return(r));
    }
    if let Some(e) = obj.get("error") {
        let class = e.get("class").and_then(Value::as_str);
        let desc = e.get("desc").and_then(Value::as_str);
        return match (class, desc) {
            (Some(c), Some(d)) => Ok(QmpMessage::Error {
                class: c.to_string(),
                desc: d.to_string(),
            }),
            _ => Err(QmpParseError::BadError),
        };
    }
    if let Some(ev) = obj.get("event") {
        return match ev.as_str() {
            Some(name) => Ok(QmpMessage::Event {
                name: name.to_string(),
            }),
            None => Err(QmpParseError::BadEvent),
        };
    }
    if let Some(g) = obj.get("QMP") {
        let q = &g["version"]["qemu"];
        let version = match (
            q["major"].as_u64(),
            q["minor"].as_u64(),
            q["micro"].as_u64(),
        ) {
            (Some(a), Some(b), Some(c)) => format!("{a}.{b}.{c}"),
            _ => "unknown".to_string(),
        };
        return Ok(QmpMessage::Greeting { version });
    }
    let keys: Vec<&str> = obj.keys().map(String::as_str).take(8).collect();
    Err(QmpParseError::Unknown(keys.join(",")))
}

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP socket {path}: cannot connect within {timeout:?}")]
    Connect {
        path: PathBuf,
        timeout: Duration,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP '{command}'")]
    Io {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP '{command}': no reply within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    #[error("QMP '{command}': QEMU closed the connection")]
    Closed { command: String },
    #[error("QMP '{command}': bad reply")]
    Parse {
        command: String,
        #[source]
        source: QmpParseError,
    },
    #[error("QMP '{command}' failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("QMP '{command}': unexpected reply {reply}")]
    Unexpected { command: String, reply: String },
    #[error("migration {status}: {detail}")]
    Migration { status: String, detail: String },
}

/// A connected QMP session in command mode.
pub struct QmpClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    timeout: Duration,
    line: Vec<u8>,
}

impl std::fmt::Debug for QmpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QmpClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl QmpClient {
    /// Connects to `path` (retrying while QEMU has not created it yet, up
    /// to `connect_timeout`), reads the greeting and enters command mode.
    /// `timeout` bounds every later reply.
    pub async fn connect(
        path: &Path,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<QmpClient, QmpError> {
        let deadline = Instant::now() + connect_timeout;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(QmpError::Connect {
                        path: path.to_path_buf(),
                        timeout: connect_timeout,
                        source: e,
                    })
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        };
        let (r, w) = stream.into_split();
        let mut c = QmpClient {
            reader: BufReader::new(r),
            writer: w,
            timeout,
            line: Vec::new(),
        };
        match c.read_message("greeting").await? {
            QmpMessage::Greeting { .. } => {}
            other => {
                return Err(QmpError::Unexpected {
                    command: "greeting".into(),
                    reply: format!("{other:?}"),
                })
            }
        }
        c.execute("qmp_capabilities", None).await?;
        Ok(c)
    }

    async fn read_message(&mut self, command: &str) -> Result<QmpMessage, QmpError> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.read_line(command)).await {
            Ok(r) => r,
            Err(_) => Err(QmpError::Timeout {
                command: command.to_string(),
                timeout,
            }),
        }
    }

    /// Reads one line, refusing lines longer than [`MAX_LINE`] before
    /// buffering them whole.
    async fn read_line(&mut self, command: &str) -> Result<QmpMessage, QmpError> {
        self.line.clear();
        loop {
            let buf = self
                .reader
                .fill_buf()
                .await
                .map_err(|source| QmpError::Io {
                    command: command.to_string(),
                    source,
                })?;
            if buf.is_empty() {
                return Err(QmpError::Closed {
                    command: command.to_string(),
                });
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            self.line.extend_from_slice(&buf[..take]);
            self.reader.consume(take);
            if self.line.len() > MAX_LINE + 1 {
                return Err(QmpError::Parse {
                    command: command.to_string(),
                    source: QmpParseError::TooLong(self.line.len()),
                });
            }
            if done {
                return parse_message(&self.line).map_err(|source| QmpError::Parse {
                    command: command.to_string(),
                    source,
                });
            }
        }
    }

    /// Runs one command and returns its `return` value (events are skipped).
    pub async fn execute(&mut self, command: &str, args: Option<Value>) -> Result<Value, QmpError> {
        let mut msg = serde_json::json!({ "execute": command });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let mut text = msg.to_string();
        text.push('\n');
        let io = |source| QmpError::Io {
            command: command.to_string(),
            source,
        };
        self.writer.write_all(text.as_bytes()).await.map_err(io)?;
        loop {
            match self.read_message(command).await? {
                QmpMessage::Return(v) => return Ok(v),
                QmpMessage::Error { class, desc } => {
                    return Err(QmpError::Command {
                        command: command.to_string(),
                        class,
                        desc,
                    })
                }
                QmpMessage::Event { .. } => continue,
                QmpMessage::Greeting { .. } => {
                    return Err(QmpError::Unexpected {
                        command: command.to_string(),
                        reply: "a second greeting".into(),
                    })
                }
            }
        }
    }

    pub async fn stop(&mut self) -> Result<(), QmpError> {
        self.execute("stop", None).await.map(drop)
    }

    pub async fn cont(&mut self) -> Result<(), QmpError> {
        self.execute("cont", None).await.map(drop)
    }

    /// `x-ignore-shared`: RAM blocks backed by shared memory are not sent in
    /// the migration stream (the memory file is the snapshot's RAM).
    pub async fn set_ignore_shared(&mut self) -> Result<(), QmpError> {
        self.execute(
            "migrate-set-capabilities",
            Some(serde_json::json!({
                "capabilities": [{"capability": "x-ignore-shared", "state": true}]
            })),
        )
        .await
        .map(drop)
    }

    pub async fn migrate(&mut self, uri: &str) -> Result<(), QmpError> {
        self.execute("migrate", Some(serde_json::json!({ "uri": uri })))
            .await
            .map(drop)
    }

    pub async fn migrate_incoming(&mut self, uri: &str) -> Result<(), QmpError> {
        self.execute("migrate-incoming", Some(serde_json::json!({ "uri": uri })))
            .await
            .map(drop)
    }

    /// `query-migrate`: the status and, when it failed, QEMU's reason.
    pub async fn query_migrate(&mut self) -> Result<(String, Option<String>), QmpError> {
        let v = self.execute("query-migrate", None).await?;
        let status = v["status"].as_str().unwrap_or("none").to_string();
        let err = v["error-desc"].as_str().map(str::to_string);
        Ok((status, err))
    }

    /// `query-status`: the run state (`running`, `paused`, `inmigrate`, …).
    pub async fn query_status(&mut self) -> Result<String, QmpError> {
        let v = self.execute("query-status", None).await?;
        v["status"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| QmpError::Unexpected {
                command: "query-status".into(),
                reply: v.to_string(),
            })
    }

    /// Polls `query-migrate` until it completes, fails or `limit` passes.
    pub async fn wait_migration(&mut self, limit: Duration) -> Result<(), QmpError> {
        let deadline = Instant::now() + limit;
        loop {
            let (status, err) = self.query_migrate().await?;
            match status.as_str() {
                "completed" => return Ok(()),
                "failed" | "cancelled" => {
                    return Err(QmpError::Migration {
                        status,
                        detail: err.unwrap_or_else(|| "no reason given".into()),
                    })
                }
                _ if Instant::now() >= deadline => {
                    return Err(QmpError::Migration {
                        status,
                        detail: format!("not completed within {limit:?}"),
                    })
                }
                _ => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
    }

    /// Polls `query-status` until the VM has left `state`.
    pub async fn wait_leave(&mut self, state: &str, limit: Duration) -> Result<String, QmpError> {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.query_status().await?;
            if s != state {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(QmpError::Migration {
                    status: s,
                    detail: format!("still '{state}' after {limit:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// `quit`. QEMU may close the socket before replying; that is success.
    pub async fn quit(&mut self) -> Result<(), QmpError> {
        match self.execute("quit", None).await {
            Ok(_) | Err(QmpError::Closed { .. }) => Ok(()),
            Err(QmpError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::BrokenPipe
                    || source.kind() == std::io::ErrorKind::ConnectionReset =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, expect: Result<QmpMessage, QmpParseError>) {
        assert_eq!(parse_message(line.as_bytes()), expect, "line: {line:?}");
    }

    #[test]
    fn parses_the_four_message_shapes() {
        check(
            r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian"}, "capabilities": ["oob"]}}"#,
            Ok(QmpMessage::Greeting {
                version: "7.2.22".into(),
            }),
        );
        check(
            r#"{"return": {}}"#,
            Ok(QmpMessage::Return(serde_json::json!({}))),
        );
        check(
            "{\"return\": {\"status\": \"paused\", \"running\": false}}\r\n",
            Ok(QmpMessage::Return(
                serde_json::json!({"status": "paused", "running": false}),
            )),
        );
        check(
            r#"{"error": {"class": "GenericError", "desc": "bad uri"}}"#,
            Ok(QmpMessage::Error {
                class: "GenericError".into(),
                desc: "bad uri".into(),
            }),
        );
        check(
            r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}"#,
            Ok(QmpMessage::Event {
                name: "STOP".into(),
            }),
        );
        // A greeting without a well-formed version still is a greeting.
        check(
            r#"{"QMP": {"version": 3}}"#,
            Ok(QmpMessage::Greeting {
                version: "unknown".into(),
            }),
        );
    }

    #[test]
    fn rejects_nasty_replies() {
        check(
            "",
            Err(QmpParseError::NotJson(
                "EOF while parsing a value at line 1 column 0".into(),
            )),
        );
        assert!(matches!(
            parse_message(b"{\"return\": {"),
            Err(QmpParseError::NotJson(_))
        ));
        assert!(matches!(
            parse_message(b"{\"return\": 1} {\"return\": 2}"),
            Err(QmpParseError::NotJson(_))
        ));
        assert!(matches!(
            parse_message(b"\xff\xfe{}"),
            Err(QmpParseError::NotJson(_))
        ));
        check("[1,2,3]", Err(QmpParseError::NotObject));
        check("\"return\"", Err(QmpParseError::NotObject));
        check("null", Err(QmpParseError::NotObject));
        check(r#"{"error": "boom"}"#, Err(QmpParseError::BadError));
        check(
            r#"{"error": {"class": 7, "desc": "x"}}"#,
            Err(QmpParseError::BadError),
        );
        check(r#"{"event": 42}"#, Err(QmpParseError::BadEvent));
        check(
            r#"{"id": 1, "foo": 2}"#,
            Err(QmpParseError::Unknown("foo,id".into())),
        );
        check("{}", Err(QmpParseError::Unknown(String::new())));
        // Deep nesting is refused by the JSON decoder's recursion limit, not a stack overflow.
        let deep = format!(
            "{{\"return\": {}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(matches!(
            parse_message(deep.as_bytes()),
            Err(QmpParseError::NotJson(_))
        ));
        // Oversized lines are refused before decoding.
        let big = format!("{{\"return\": \"{}\"}}", "a".repeat(MAX_LINE));
        assert_eq!(
            parse_message(big.as_bytes()),
            Err(QmpParseError::TooLong(big.len()))
        );
    }

    /// A fake QEMU speaking QMP over a real unix socket: replies with the
    /// given lines, one batch per command received.
    async fn serve(path: &Path, greeting: &str, batches: Vec<Vec<String>>) {
        let l = tokio::net::UnixListener::bind(path).unwrap();
        let greeting = greeting.to_string();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            w.write_all(format!("{greeting}\n").as_bytes())
                .await
                .unwrap();
            for batch in batches {
                if lines.next_line().await.ok().flatten().is_none() {
                    return;
                }
                for l in batch {
                    if w.write_all(l.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
            // Keep the connection open (silent) until the client goes.
            let _ = lines.next_line().await;
        });
    }

    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}"#;

    #[tokio::test]
    async fn client_skips_events_names_commands_and_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        serve(
            &sock,
            GREETING,
            vec![
                vec!["{\"return\": {}}\n".into()],
                vec![
                    "{\"event\": \"STOP\", \"timestamp\": {}}\n".into(),
                    "{\"return\": {\"status\": \"paused\"}}\n".into(),
                ],
                vec![
                    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no such file\"}}\n"
                        .into(),
                ],
                vec!["not json\n".into()],
                vec![], // no reply at all
            ],
        )
        .await;
        let mut c = QmpClient::connect(&sock, Duration::from_secs(2), Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(c.query_status().await.unwrap(), "paused");
        let e = c.migrate_incoming("exec:cat /nope").await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "QMP 'migrate-incoming' failed: GenericError: no such file"
        );
        let e = c.cont().await.unwrap_err();
        assert!(e.to_string().starts_with("QMP 'cont': bad reply"), "{e}");
        let e = c.stop().await.unwrap_err();
        assert_eq!(e.to_string(), "QMP 'stop': no reply within 300ms");
    }

    #[tokio::test]
    async fn client_reports_missing_socket_and_closed_connection() {
        let dir = tempfile::tempdir().unwrap();
        let e = QmpClient::connect(
            &dir.path().join("none.sock"),
            Duration::from_millis(50),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("none.sock: cannot connect"), "{e}");
        // Greeting, capabilities reply, then the peer hangs up on `quit`.
        let sock = dir.path().join("q.sock");
        serve(&sock, GREETING, vec![vec!["{\"return\": {}}\n".into()]]).await;
        let mut c = QmpClient::connect(&sock, Duration::from_secs(2), Duration::from_secs(2))
            .await
            .unwrap();
        // The fake server reads one more line then exits: the connection closes.
        assert!(c.quit().await.is_ok());
        // Not a greeting first: refused.
        let sock = dir.path().join("g.sock");
        serve(&sock, "{\"return\": {}}", vec![]).await;
        let e = QmpClient::connect(&sock, Duration::from_secs(2), Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("'greeting': unexpected reply"),
            "{e}"
        );
    }
}
