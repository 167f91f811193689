//! Who may call which route: one axum middleware in front of every route
//! (policy documented in `docs/openapi.yaml`, "Authentication").
//!
//! - Every request: `Host` must be an IP literal, `localhost` or an allowed
//!   name (DNS rebinding); an `Origin`, if any, must be an allowed origin
//!   (browsers). `/healthz` needs nothing more.
//! - `POST /v1/invoke/{name}`: open, unless an invoke token is configured;
//!   then the invoke token or the admin token. A function or workflow may
//!   say otherwise with its `stratus.dev/invoke` annotation: `open`, or
//!   `token` (the invoke token or the admin token; the admin token alone
//!   when no invoke token is configured). Its body is the function's
//!   input in any type, so no body-type check (browsers are kept out by the
//!   `Origin` check; a gateway that must refuse forms sets an invoke token).
//! - Every other route (deploy, delete, resources, logs, invocation records,
//!   metrics, and paths no route serves): the admin token, and for a `POST`
//!   a body type no HTML form can send.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use stratus_auth::{check_bearer, Denied, Guard, Token};
use stratus_spec::InvokePolicy;

use crate::Config;

/// The admin token's file in a state directory (`stratus up` creates it).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Which checks a route needs beyond `Host` and `Origin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Open,
    Invoke,
    Admin,
}

fn class(method: &Method, path: &str) -> Class {
    if path == "/healthz" {
        Class::Open
    } else if *method == Method::POST && path.starts_with("/v1/invoke/") {
        Class::Invoke
    } else {
        Class::Admin
    }
}

/// The gateway's request checks, built once from the [`Config`].
#[derive(Debug, Clone)]
pub(crate) struct Access {
    guard: Guard,
    /// No admin token configured: admin routes refuse everyone.
    closed: bool,
    invoke: Option<Token>,
}

impl Access {
    pub(crate) fn new(cfg: &Config) -> Access {
        let (token, closed) = match &cfg.admin_token {
            Some(t) => (t.clone(), false),
            // A stand-in that is never accepted (see `closed`).
            None => (
                Token::parse("admin-routes-closed", "the gateway").expect("a valid constant"),
                true,
            ),
        };
        Access {
            guard: Guard::new(token)
                .allow_hosts(cfg.allow_hosts.iter().cloned())
                .allow_origins(cfg.allow_origins.iter().cloned()),
            closed,
            invoke: cfg.invoke_token.clone(),
        }
    }

    /// Whether a request may reach its route. Pure over its parts;
    /// `policy` is the invoked target's own, if it has one.
    pub(crate) fn check(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        policy: Option<InvokePolicy>,
    ) -> Result<(), Denied> {
        match class(method, path) {
            Class::Open => self.guard.check_origin(headers),
            Class::Invoke => {
                self.guard.check_origin(headers)?;
                let needs_token = match policy {
                    Some(InvokePolicy::Open) => false,
                    Some(InvokePolicy::Token) => true,
                    None => self.invoke.is_some(),
                };
                match (&self.invoke, needs_token) {
                    (_, false) => Ok(()),
                    (None, true) => self.admin_token(headers),
                    (Some(t), true) => {
                        check_bearer(t, headers).or_else(|_| self.admin_token(headers))
                    }
                }
            }
            Class::Admin => {
                self.guard.check_admin(method, headers)?;
                if self.closed {
                    return Err(Denied::WrongToken);
                }
                Ok(())
            }
        }
    }

    fn admin_token(&self, headers: &HeaderMap) -> Result<(), Denied> {
        self.guard.check_token(headers)?;
        if self.closed {
            return Err(Denied::WrongToken);
        }
        Ok(())
    }
}

/// The middleware's state: the checks, and the platform to look up an
/// invoked target's own policy in.
pub(crate) struct Gate {
    pub(crate) access: Access,
    pub(crate) platform: std::sync::Weak<crate::Platform>,
}

/// The middleware: refused requests get the gateway's JSON error with the
/// status [`Denied::status`] gives (401s also say `WWW-Authenticate: Bearer`).
pub(crate) async fn layer(State(g): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let policy = match (
        req.method() == Method::POST,
        path.strip_prefix("/v1/invoke/"),
    ) {
        (true, Some(name)) => g.platform.upgrade().and_then(|p| p.invoke_policy(name)),
        _ => None,
    };
    match g.access.check(req.method(), path, req.headers(), policy) {
        Ok(()) => next.run(req).await,
        Err(d) => {
            tracing::debug!(method = %req.method(), path = req.uri().path(), "refused: {d}");
            let mut r = crate::api::error(d.status(), d.to_string());
            if d.status() == axum::http::StatusCode::UNAUTHORIZED {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"stratus\""),
                );
            }
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN};

    fn token(s: &str) -> Token {
        Token::parse(s, "test").unwrap()
    }

    fn access(invoke: bool, admin: bool) -> Access {
        Access::new(&Config {
            admin_token: admin.then(|| token("admin-token-0000000")),
            invoke_token: invoke.then(|| token("invoke-token-000000")),
            allow_hosts: vec!["stratus.test".into()],
            allow_origins: vec!["http://ui.test".into()],
            ..Config::default()
        })
    }

    fn h(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        m
    }

    /// One line per (method, path, headers): what the gateway answers.
    fn check(
        a: &Access,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, &str)],
    ) -> u16 {
        match a.check(&method, path, &h(headers), None) {
            Ok(()) => 200,
            Err(d) => d.status().as_u16(),
        }
    }

    const ADMIN: (header::HeaderName, &str) = (AUTHORIZATION, "Bearer admin-token-0000000");
    const INVOKE: (header::HeaderName, &str) = (AUTHORIZATION, "Bearer invoke-token-000000");
    const YAML: (header::HeaderName, &str) = (CONTENT_TYPE, "application/yaml");

    #[test]
    fn routes_and_tokens() {
        let a = access(false, true);
        let post = || Method::POST;
        assert_eq!(check(&a, Method::GET, "/healthz", &[]), 200);
        assert_eq!(
            check(&a, Method::GET, "/healthz", &[(HOST, "evil.test")]),
            403
        );
        assert_eq!(
            check(&a, Method::GET, "/healthz", &[(HOST, "stratus.test:80")]),
            200
        );
        assert_eq!(
            check(&a, post(), "/v1/invoke/f", &[]),
            200,
            "invoke is open by default"
        );
        assert_eq!(
            check(&a, post(), "/v1/invoke/f", &[(ORIGIN, "http://evil.test")]),
            403
        );
        assert_eq!(
            check(&a, post(), "/v1/invoke/f", &[(ORIGIN, "http://ui.test")]),
            200
        );
        assert_eq!(check(&a, post(), "/v1/deploy", &[YAML]), 401);
        assert_eq!(check(&a, post(), "/v1/deploy", &[INVOKE, YAML]), 401);
        assert_eq!(check(&a, post(), "/v1/deploy", &[ADMIN, YAML]), 200);
        assert_eq!(
            check(
                &a,
                post(),
                "/v1/deploy",
                &[ADMIN, (CONTENT_TYPE, "text/plain")]
            ),
            415
        );
        assert_eq!(check(&a, post(), "/v1/deploy", &[ADMIN]), 415);
        for path in [
            "/metrics",
            "/v1/resources",
            "/v1/resources/f",
            "/v1/functions/f/logs",
            "/v1/invocations",
            "/v1/invocations/x",
            "/v1/runs",
            "/v1/runs/x",
            "/v1/runs/x/result",
            "/no/such/route",
            "/v1/invoke/f",
        ] {
            assert_eq!(check(&a, Method::GET, path, &[]), 401, "{path}");
            assert_eq!(check(&a, Method::GET, path, &[ADMIN]), 200, "{path}");
        }
        assert_eq!(check(&a, Method::DELETE, "/v1/resources/f", &[]), 401);
        assert_eq!(check(&a, Method::DELETE, "/v1/resources/f", &[ADMIN]), 200);
        // Only a POST to an invoke path is an invocation.
        assert_eq!(check(&a, Method::PUT, "/v1/invoke/f", &[]), 401);
    }

    #[test]
    fn invoke_token_when_configured() {
        let a = access(true, true);
        assert_eq!(check(&a, Method::POST, "/v1/invoke/f", &[]), 401);
        assert_eq!(check(&a, Method::POST, "/v1/invoke/f", &[INVOKE]), 200);
        assert_eq!(check(&a, Method::POST, "/v1/invoke/f", &[ADMIN]), 200);
        assert_eq!(
            check(
                &a,
                Method::POST,
                "/v1/invoke/f",
                &[(AUTHORIZATION, "Bearer nope-nope-nope-nope")]
            ),
            401
        );
        // The invoke token opens nothing else.
        assert_eq!(check(&a, Method::GET, "/v1/invocations", &[INVOKE]), 401);
    }

    #[test]
    fn no_admin_token_closes_admin_routes() {
        let a = access(true, false);
        let stand_in = (AUTHORIZATION, "Bearer admin-routes-closed");
        assert_eq!(
            check(
                &a,
                Method::GET,
                "/v1/resources",
                std::slice::from_ref(&stand_in)
            ),
            401
        );
        assert_eq!(check(&a, Method::POST, "/v1/invoke/f", &[stand_in]), 401);
        assert_eq!(check(&a, Method::POST, "/v1/invoke/f", &[INVOKE]), 200);
        assert_eq!(check(&a, Method::GET, "/healthz", &[]), 200);
    }

    /// A target's own `stratus.dev/invoke` wins over the platform default,
    /// both ways; `token` without an invoke token means the admin token.
    #[test]
    fn a_targets_policy_overrides_the_default() {
        let status = |a: &Access, policy, headers: &[(header::HeaderName, &str)]| match a.check(
            &Method::POST,
            "/v1/invoke/f",
            &h(headers),
            policy,
        ) {
            Ok(()) => 200,
            Err(d) => d.status().as_u16(),
        };
        let (open, token) = (Some(InvokePolicy::Open), Some(InvokePolicy::Token));
        let with_invoke = access(true, true);
        assert_eq!(status(&with_invoke, None, &[]), 401);
        assert_eq!(status(&with_invoke, open, &[]), 200);
        assert_eq!(
            status(&with_invoke, open, &[(ORIGIN, "http://evil.test")]),
            403,
            "open still checks Origin"
        );
        assert_eq!(status(&with_invoke, token, &[INVOKE]), 200);
        assert_eq!(status(&with_invoke, token, &[ADMIN]), 200);
        let without = access(false, true);
        assert_eq!(status(&without, None, &[]), 200);
        assert_eq!(status(&without, token, &[]), 401);
        assert_eq!(status(&without, token, &[INVOKE]), 401);
        assert_eq!(status(&without, token, &[ADMIN]), 200);
    }
}
