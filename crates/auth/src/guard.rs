//! Request checks: bearer token, `Host` (DNS rebinding), `Origin` and body
//! type (cross-site requests from browsers). Pure over headers.
//!
//! Policy, documented in docs/openapi.yaml:
//! - `Host` must be an IP literal, `localhost`, or a configured name. A DNS
//!   rebinding attack needs a host *name* that resolves to this server, so IP
//!   literals are safe whatever address the server is bound to.
//! - A request carrying an `Origin` is from a browser; it is refused unless
//!   that origin is configured. Command-line clients send no `Origin`.
//! - A `POST` to a route that changes state must not have a body type that an
//!   HTML form or a CORS "simple request" can send (form-urlencoded,
//!   multipart/form-data, text/plain), nor no type at all.

use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN};
use http::{HeaderMap, StatusCode};

use crate::Token;

/// Why a request was refused; `Display` is the message for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("missing bearer token: send `Authorization: Bearer TOKEN` (the token is in the server's state directory, or pass --token-file)")]
    MissingToken,
    #[error("wrong bearer token")]
    WrongToken,
    #[error("Host {0:?} is neither an IP address, localhost, nor a name this server was told to accept (--allow-host)")]
    ForeignHost(String),
    #[error("cross-origin request from Origin {0:?} refused; allow it with --allow-origin")]
    ForeignOrigin(String),
    #[error("Content-Type {0:?} is one a browser form can send, so it is refused on this route; send application/json, application/yaml or application/octet-stream")]
    FormBody(String),
}

impl Denied {
    /// 401 for token problems, 403 for foreign hosts and origins, 415 for
    /// form body types.
    pub fn status(&self) -> StatusCode {
        match self {
            Denied::MissingToken | Denied::WrongToken => StatusCode::UNAUTHORIZED,
            Denied::ForeignHost(_) | Denied::ForeignOrigin(_) => StatusCode::FORBIDDEN,
            Denied::FormBody(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }
}

/// Which `Host` values a server answers to.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    names: Vec<String>,
}

impl HostPolicy {
    /// IP literals and `localhost`, plus `names` (host names without port,
    /// matched case-insensitively).
    pub fn new(names: impl IntoIterator<Item = String>) -> HostPolicy {
        HostPolicy {
            names: names
                .into_iter()
                .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether a `Host` header value names this server.
    pub fn allows(&self, host: &str) -> bool {
        let Some(name) = host_name(host) else {
            return false;
        };
        if name.starts_with('[') {
            return name[1..name.len() - 1]
                .parse::<std::net::Ipv6Addr>()
                .is_ok();
        }
        if name.parse::<std::net::Ipv4Addr>().is_ok() {
            return true;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        name == "localhost" || self.names.contains(&name)
    }
}

/// The host part of a `Host` value (`[v6]` keeps its brackets), or `None`
/// when the value is malformed (bad port, stray brackets, empty).
fn host_name(host: &str) -> Option<&str> {
    let (name, port) = if host.starts_with('[') {
        let end = host.find(']')?;
        let rest = &host[end + 1..];
        match rest.strip_prefix(':') {
            Some(p) => (&host[..=end], Some(p)),
            None if rest.is_empty() => (&host[..=end], None),
            None => return None,
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    let ok = !name.is_empty()
        && (name.starts_with('[')
            || name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'));
    ok.then_some(name)
}

/// The checks one server applies. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Guard {
    token: Token,
    hosts: HostPolicy,
    origins: Vec<String>,
}

impl Guard {
    /// Requires `token`; accepts IP-literal and `localhost` hosts; no origins.
    pub fn new(token: Token) -> Guard {
        Guard {
            token,
            hosts: HostPolicy::default(),
            origins: Vec::new(),
        }
    }

    /// Also accept these host names (e.g. the name a load balancer uses).
    pub fn allow_hosts(mut self, names: impl IntoIterator<Item = String>) -> Guard {
        self.hosts = HostPolicy::new(self.hosts.names.into_iter().chain(names));
        self
    }

    /// Accept browser requests from these origins (`scheme://host[:port]`).
    pub fn allow_origins(mut self, origins: impl IntoIterator<Item = String>) -> Guard {
        self.origins.extend(
            origins
                .into_iter()
                .map(|o| o.trim_end_matches('/').to_string()),
        );
        self
    }

    pub fn token(&self) -> &Token {
        &self.token
    }

    /// `Host` and `Origin`: applied to every request, open routes included.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), Denied> {
        if let Some(h) = headers.get(HOST) {
            let text = String::from_utf8_lossy(h.as_bytes());
            if !self.hosts.allows(&text) {
                return Err(Denied::ForeignHost(text.into_owned()));
            }
        }
        for o in headers.get_all(ORIGIN) {
            let text = String::from_utf8_lossy(o.as_bytes());
            if !self.origins.iter().any(|a| *a == text) {
                return Err(Denied::ForeignOrigin(text.into_owned()));
            }
        }
        Ok(())
    }

    /// The bearer token.
    pub fn check_token(&self, headers: &HeaderMap) -> Result<(), Denied> {
        check_bearer(&self.token, headers)
    }

    /// Everything a state-changing or private route needs: origin, token,
    /// and for `POST`s a body type no form can send.
    pub fn check_admin(&self, method: &http::Method, headers: &HeaderMap) -> Result<(), Denied> {
        self.check_origin(headers)?;
        self.check_token(headers)?;
        if method == http::Method::POST {
            check_body_type(headers)?;
        }
        Ok(())
    }
}

/// The request's bearer token against `token`.
pub fn check_bearer(token: &Token, headers: &HeaderMap) -> Result<(), Denied> {
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| bearer(v.as_bytes()))
        .ok_or(Denied::MissingToken)?;
    if token.verify(presented) {
        Ok(())
    } else {
        Err(Denied::WrongToken)
    }
}

/// The credentials of an `Authorization: Bearer X` value (scheme matched
/// case-insensitively, as RFC 9110 says).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let start = rest.iter().position(|b| *b != b' ')?;
    Some(rest[start..].trim_ascii_end())
}

/// Refuses the body types a form or a CORS simple request can send.
pub fn check_body_type(headers: &HeaderMap) -> Result<(), Denied> {
    let Some(ct) = headers.get(CONTENT_TYPE) else {
        return Err(Denied::FormBody(String::new()));
    };
    let text = String::from_utf8_lossy(ct.as_bytes());
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "" | "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain" => {
            Err(Denied::FormBody(text.into_owned()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn token() -> Token {
        Token::parse("s3cret-token-for-tests", "test").unwrap()
    }

    fn headers(pairs: &[(http::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn hosts() {
        let p = HostPolicy::new(["Stratus.Example.".to_string()]);
        for ok in [
            "127.0.0.1:8080",
            "10.0.0.7",
            "[::1]:80",
            "[fe80::1]",
            "localhost:1",
            "LOCALHOST.",
            "stratus.example:443",
            "stratus.example",
        ] {
            assert!(p.allows(ok), "{ok}");
        }
        for bad in [
            "evil.com:8080",
            "127.0.0.1.evil.com",
            "localhost.evil.com",
            "",
            ":80",
            "127.0.0.1:",
            "127.0.0.1:8o",
            "127.0.0.1:123456",
            "[::1",
            "[::1]x",
            "[evil.com]",
            "a b",
            "stratus.example@evil.com",
        ] {
            assert!(!p.allows(bad), "{bad}");
        }
    }

    #[test]
    fn token_checks() {
        let t = token();
        let check = |v: &str| check_bearer(&t, &headers(&[(AUTHORIZATION, v)]));
        assert_eq!(check("Bearer s3cret-token-for-tests"), Ok(()));
        assert_eq!(check("bearer   s3cret-token-for-tests  "), Ok(()));
        assert_eq!(
            check("Bearer s3cret-token-for-test"),
            Err(Denied::WrongToken)
        );
        assert_eq!(
            check("Basic s3cret-token-for-tests"),
            Err(Denied::MissingToken)
        );
        assert_eq!(check("Bearer"), Err(Denied::MissingToken));
        assert_eq!(check("Bearer "), Err(Denied::MissingToken));
        assert_eq!(
            check_bearer(&t, &HeaderMap::new()),
            Err(Denied::MissingToken)
        );
        assert_eq!(Denied::WrongToken.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn admin_requests() {
        let g = Guard::new(token()).allow_origins(["https://ui.example/".to_string()]);
        let auth = (AUTHORIZATION, "Bearer s3cret-token-for-tests");
        let yaml = (CONTENT_TYPE, "application/yaml");
        let post = http::Method::POST;
        assert_eq!(
            g.check_admin(&post, &headers(&[auth.clone(), yaml.clone()])),
            Ok(())
        );
        let foreign = headers(&[auth.clone(), yaml.clone(), (HOST, "rebind.evil:8080")]);
        assert_eq!(
            g.check_admin(&post, &foreign),
            Err(Denied::ForeignHost("rebind.evil:8080".into()))
        );
        let cross = headers(&[auth.clone(), yaml.clone(), (ORIGIN, "https://evil.example")]);
        let e = g.check_admin(&post, &cross).unwrap_err();
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        let allowed = headers(&[auth.clone(), yaml.clone(), (ORIGIN, "https://ui.example")]);
        assert_eq!(g.check_admin(&post, &allowed), Ok(()));
        for ct in [
            "text/plain;charset=UTF-8",
            "Application/X-WWW-Form-Urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            let e = g.check_admin(&post, &headers(&[auth.clone(), (CONTENT_TYPE, ct)]));
            assert_eq!(e, Err(Denied::FormBody(ct.into())));
        }
        assert!(g
            .check_admin(&post, &headers(std::slice::from_ref(&auth)))
            .is_err());
        // A DELETE carries no body; only origin and token matter.
        assert_eq!(
            g.check_admin(&http::Method::DELETE, &headers(&[auth])),
            Ok(())
        );
        // Host and origin are checked before the token, so a browser learns nothing.
        assert_eq!(
            g.check_admin(&post, &headers(&[(ORIGIN, "null")])),
            Err(Denied::ForeignOrigin("null".into()))
        );
    }

    proptest! {
        #[test]
        fn host_checks_never_panic_and_names_need_configuring(s in "\\PC{0,40}") {
            let p = HostPolicy::default();
            let allowed = p.allows(&s);
            if allowed {
                let name = host_name(&s).unwrap();
                let lower = name.trim_end_matches('.').to_ascii_lowercase();
                prop_assert!(name.starts_with('[') || name.parse::<std::net::Ipv4Addr>().is_ok() || lower == "localhost", "{}", s);
            }
        }

        #[test]
        fn bearer_never_panics(v in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = bearer(&v);
        }
    }
}
