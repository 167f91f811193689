//! Authentication by default: `stratus up` as a real process, the real
//! `stratus` CLI against it, raw HTTP for what browsers and attackers send.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use bytes::Bytes;
use http::Method;
use stratus_auth::Token;
use stratus_gateway::client::{GatewayClient, Reply};

use crate::*;

/// A `stratus up` process with HOME in a temporary directory, so its state
/// (and admin token) is in the default place, `~/.local/state/stratus`.
struct Up {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Up {
    async fn start(args: &[&str], env: &[(&str, &str)]) -> Up {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(stratus_bin());
        cmd.args(["up", "--addr", &format!("127.0.0.1:{port}")])
            .args(args)
            .current_dir(repo_root())
            .env("HOME", dir.path().join("home"))
            .env_remove("STRATUS_STATE_DIR")
            .env_remove("STRATUS_TOKEN")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("up.log")).unwrap());
        let up = Up {
            child: cmd.spawn().unwrap(),
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        crate::lifecycle::wait_healthy(&GatewayClient::new(&up.url)).await;
        up
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("home/.local/state/stratus")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.log")).unwrap()
    }

    fn anon(&self) -> GatewayClient {
        GatewayClient::new(&self.url)
    }

    /// The real CLI, talking to this gateway, with the same HOME (so the
    /// same default state directory) and no token in its environment.
    fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(stratus_bin())
            .args(args)
            .current_dir(repo_root())
            .env("STRATUS_GATEWAY", &self.url)
            .env("HOME", self.dir.path().join("home"))
            .env_remove("STRATUS_STATE_DIR")
            .env_remove("STRATUS_TOKEN")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        // Its instances die with it (PR_SET_PDEATHSIG).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stratus failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "stratus succeeded: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn send(c: &GatewayClient, m: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
    let body = if m == Method::POST && path == "/v1/deploy" {
        Bytes::from(service("authfn", "echo", "", ""))
    } else {
        Bytes::from_static(b"{}")
    };
    c.request(m, path, headers, body).await.unwrap()
}

const YAML: (&str, &str) = ("content-type", "application/yaml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_refuses_unauthenticated_foreign_and_form_requests() {
    let up = Up::start(
        &[
            "--allow-host",
            "stratus.test",
            "--allow-origin",
            "http://ui.test",
        ],
        &[],
    )
    .await;
    let file = up.state_dir().join("admin.token");
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
    let token = Token::read_file(&file).unwrap();
    let log = up.log();
    assert!(log.contains("admin token: a new token in"), "{log}");
    assert!(!log.contains(token.expose()), "the token is never logged");

    let anon = up.anon();
    let admin = anon.clone().with_token(&token);
    let wrong = anon
        .clone()
        .with_token(&Token::parse("not-the-admin-token", "test").unwrap());

    // No token, or the wrong one: 401, and nothing is deployed.
    let r = send(&anon, Method::POST, "/v1/deploy", &[YAML]).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(
        r.error_message().contains("missing bearer token"),
        "{}",
        r.text()
    );
    let r = send(&wrong, Method::POST, "/v1/deploy", &[YAML]).await;
    assert_eq!(
        (r.status, r.error_message()),
        (401, "wrong bearer token".into())
    );
    // Bodies a form can send: 415, even with the token.
    for ct in [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let r = send(&admin, Method::POST, "/v1/deploy", &[("content-type", ct)]).await;
        assert_eq!(r.status, 415, "{ct}: {}", r.text());
        assert!(r.error_message().contains("form"), "{}", r.text());
    }
    assert_eq!(
        send(&admin, Method::POST, "/v1/deploy", &[]).await.status,
        415
    );
    // A foreign Host (DNS rebinding) or Origin (a web page): 403, token or not.
    for h in [
        ("host", "rebind.evil.test:8080"),
        ("origin", "http://evil.test"),
    ] {
        let r = send(&admin, Method::POST, "/v1/deploy", &[YAML, h]).await;
        assert_eq!(r.status, 403, "{h:?}: {}", r.text());
        let r = send(&anon, Method::GET, "/healthz", &[h]).await;
        assert_eq!(r.status, 403, "{h:?}: {}", r.text());
    }
    assert_eq!(
        send(&anon, Method::GET, "/v1/resources", &[]).await.status,
        401
    );
    // The configured name and origin pass.
    let host = format!("stratus.test:{}", up.url.rsplit(':').next().unwrap());
    let r = send(
        &admin,
        Method::POST,
        "/v1/deploy",
        &[YAML, ("host", &host), ("origin", "http://ui.test")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Invoking is open by default; everything that reads state is not.
    let r = anon
        .invoke("authfn", Bytes::from_static(b"{\"hi\":1}"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.invocation_id.clone().unwrap();
    // The record is written once the run has finished.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while send(&admin, Method::GET, &format!("/v1/invocations/{id}"), &[])
        .await
        .status
        != 200
    {
        assert!(std::time::Instant::now() < deadline, "no record for {id}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(send(&anon, Method::GET, "/healthz", &[]).await.status, 200);
    for path in [
        "/metrics".to_string(),
        "/v1/resources".into(),
        "/v1/resources/authfn".into(),
        "/v1/functions/authfn/logs".into(),
        "/v1/invocations".into(),
        format!("/v1/invocations/{id}"),
    ] {
        assert_eq!(
            send(&anon, Method::GET, &path, &[]).await.status,
            401,
            "{path}"
        );
        let r = send(&admin, Method::GET, &path, &[]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let del = "/v1/resources/authfn";
    assert_eq!(send(&anon, Method::DELETE, del, &[]).await.status, 401);
    assert_eq!(send(&admin, Method::DELETE, del, &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_finds_the_token_by_itself() {
    let up = Up::start(&[], &[]).await;
    let token = Token::read_file(&up.state_dir().join("admin.token")).unwrap();
    let yaml = up.write("fn.yaml", &service("authfn", "echo", "", ""));
    let yaml = yaml.to_str().unwrap();

    // From the default state directory, as in the README's quick start.
    let out = ok(&up.cli(&["deploy", "-f", yaml], &[]));
    assert!(out.contains("deployed service  authfn"), "{out}");
    assert!(ok(&up.cli(&["ls"], &[])).contains("authfn"));
    let out = ok(&up.cli(&["invoke", "authfn", "--data", "{\"x\":1}"], &[]));
    assert!(out.contains("\"x\":1") || out.contains("\"x\": 1"), "{out}");
    ok(&up.cli(&["logs", "authfn"], &[]));

    // From $STRATUS_STATE_DIR.
    let state = up.state_dir();
    let state = state.to_str().unwrap();
    let elsewhere = up.dir.path().join("elsewhere");
    let elsewhere = elsewhere.to_str().unwrap();
    let at = |env: &[(&str, &str)], args: &[&str]| {
        let mut e = vec![("HOME", elsewhere)];
        e.extend_from_slice(env);
        up.cli(args, &e)
    };
    ok(&at(&[("STRATUS_STATE_DIR", state)], &["ls"]));

    // Nowhere: the CLI says where it looked and what to do.
    let err = fails(&at(&[], &["ls"]));
    assert!(
        err.contains("no token found") && err.contains("--token-file") && err.contains(elsewhere),
        "{err}"
    );

    // From $STRATUS_TOKEN.
    ok(&at(&[("STRATUS_TOKEN", token.expose())], &["ls"]));
    let err = fails(&at(&[("STRATUS_TOKEN", "not-the-admin-token")], &["ls"]));
    assert!(err.contains("wrong bearer token"), "{err}");

    // From --token-file, which comes first.
    let copy = up.write("my.token", token.expose());
    let copy = copy.to_str().unwrap();
    let wrong_env = [("STRATUS_TOKEN", "not-the-admin-token")];
    ok(&at(&wrong_env, &["ls", "--token-file", copy]));
    let err = fails(&at(&[], &["ls", "--token-file", "/nonexistent/token"]));
    assert!(err.contains("/nonexistent/token"), "{err}");
    ok(&at(&[], &["delete", "authfn", "--token-file", copy]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoke_token_closes_invoking() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("invoke.token");
    std::fs::write(&inv, "invoke-token-for-the-test\n").unwrap();
    let admin_text = "admin-token-from-the-environment";
    let up = Up::start(
        &["--invoke-token-file", inv.to_str().unwrap()],
        &[("STRATUS_TOKEN", admin_text)],
    )
    .await;
    let log = up.log();
    assert!(
        log.contains("admin token: $STRATUS_TOKEN")
            && log.contains("invoking needs the invoke token"),
        "{log}"
    );
    assert!(
        !up.state_dir().join("admin.token").exists(),
        "a token from the environment is not written"
    );
    let admin = up
        .anon()
        .with_token(&Token::parse(admin_text, "test").unwrap());
    let invoker = up.anon().with_token(&Token::read_file(&inv).unwrap());
    let r = send(&admin, Method::POST, "/v1/deploy", &[YAML]).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let body = || Bytes::from_static(b"{}");
    assert_eq!(
        up.anon().invoke("authfn", body()).await.unwrap().status,
        401
    );
    assert_eq!(invoker.invoke("authfn", body()).await.unwrap().status, 200);
    assert_eq!(admin.invoke("authfn", body()).await.unwrap().status, 200);
    // The invoke token opens nothing else.
    assert_eq!(
        send(&invoker, Method::POST, "/v1/deploy", &[YAML])
            .await
            .status,
        401
    );
    assert_eq!(
        send(&invoker, Method::GET, "/v1/invocations", &[])
            .await
            .status,
        401
    );

    // The CLI: no token found → 401 from the gateway; --token-file → runs.
    let err = fails(&up.cli(&["invoke", "authfn"], &[]));
    assert!(
        err.contains("HTTP 401") && err.contains("missing bearer token"),
        "{err}"
    );
    ok(&up.cli(
        &["invoke", "authfn", "--token-file", inv.to_str().unwrap()],
        &[],
    ));
    ok(&up.cli(&["invoke", "authfn"], &[("STRATUS_TOKEN", admin_text)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_takes_its_admin_token_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin.token");
    std::fs::write(&file, "admin-token-from-a-file\n").unwrap();
    let path = file.to_str().unwrap();
    let up = Up::start(&["--token-file", path], &[]).await;
    assert!(up
        .log()
        .contains(&format!("admin token: the token file {path}")));
    assert!(!up.state_dir().join("admin.token").exists());
    let yaml = up.write("fn.yaml", &service("authfn", "echo", "", ""));
    let o = up.cli(
        &["deploy", "-f", yaml.to_str().unwrap(), "--token-file", path],
        &[],
    );
    assert!(ok(&o).contains("authfn"));

    // A bad token file stops `stratus up` before it listens, saying why.
    let short = up.write("short.token", "short");
    let o = Command::new(stratus_bin())
        .args(["up", "--addr", "127.0.0.1:0", "--token-file"])
        .arg(&short)
        .env("HOME", dir.path())
        .env_remove("STRATUS_TOKEN")
        .output()
        .unwrap();
    let err = fails(&o);
    assert!(
        err.contains("shorter than 16") && err.contains(short_name(&short)),
        "{err}"
    );
}

fn short_name(p: &Path) -> &str {
    p.file_name().unwrap().to_str().unwrap()
}

/// A function's or workflow's own `stratus.dev/invoke` wins over the
/// platform's default, both ways, and follows a redeploy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_targets_own_invoke_policy_wins() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("invoke.token");
    std::fs::write(&inv, "invoke-token-for-the-test\n").unwrap();
    let up = Up::start(&["--invoke-token-file", inv.to_str().unwrap()], &[]).await;
    let admin = up
        .anon()
        .with_token(&Token::read_file(&up.state_dir().join("admin.token")).unwrap());
    let annotated = |name: &str, policy: &str| {
        service(
            name,
            "echo",
            "",
            &format!("        stratus.dev/invoke: {policy}\n"),
        )
    };
    let workflow = "apiVersion: stratus.dev/v1alpha1\nkind: Workflow\nmetadata:\n  name: openwf\n  annotations: {stratus.dev/invoke: open}\nspec:\n  steps:\n    - {name: a, function: closedfn}\n";
    for yaml in [
        annotated("openfn", "open"),
        service("closedfn", "echo", "", ""),
        workflow.to_string(),
    ] {
        let r = admin.deploy("p.yaml", &yaml).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.error_message());
    }
    let anon = |name: &'static str| {
        let c = up.anon();
        async move { c.invoke(name, Bytes::from_static(b"{}")).await.unwrap() }
    };
    assert_eq!(anon("openfn").await.status, 200);
    assert_eq!(anon("closedfn").await.status, 401);
    let r = anon("openwf").await;
    assert_eq!(
        r.status,
        200,
        "an open workflow runs its steps: {}",
        r.text()
    );
    let r = admin
        .deploy("p.yaml", &annotated("openfn", "token"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert_eq!(anon("openfn").await.status, 401);
    let r = admin
        .deploy("p.yaml", &annotated("badfn", "maybe"))
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.error_message().contains("expected open or token"),
        "{}",
        r.error_message()
    );
}
