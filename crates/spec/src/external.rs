//! Services that run elsewhere: `stratus.dev/runtime: external` with the
//! function's URL in `stratus.dev/url` (e.g. a Knative Service's
//! cluster-local address). Stratus starts no instance for them but still
//! applies `containerConcurrency`, timeouts and workflow retries. The URL
//! is checked here, at deploy: pure, no IO.

/// The runtime name of a Service that runs elsewhere.
pub const EXTERNAL_RUNTIME: &str = "external";

/// The annotation holding an external Service's URL.
pub const URL_ANNOTATION: &str = "stratus.dev/url";

/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Why `url` cannot be an external function's address, if it cannot: only
/// absolute `http://` URLs with a host, no credentials, no fragment, no
/// spaces or control characters.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!(
            "is {} bytes; the limit is {MAX_URL_LEN}",
            url.len()
        ));
    }
    if let Some(c) = url.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} contains {c:?}"));
    }
    let lower = url.to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &url["http://".len()..]
    } else if lower.starts_with("https://") {
        return Err(format!(
            "{url:?}: https is not supported yet (the gateway speaks plain HTTP to functions); \
             use the Service's cluster-local address (http://NAME.NAMESPACE.svc.cluster.local) \
             or an HTTP ingress"
        ));
    } else {
        return Err(format!("{url:?} is not an http:// URL"));
    };
    if url.contains('#') {
        return Err(format!("{url:?} has a fragment (#…); remove it"));
    }
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(format!(
            "{url:?} carries credentials (user@host); they would travel in clear text and end up in logs"
        ));
    }
    let (host, port) = split_host_port(authority).map_err(|why| format!("{url:?}: {why}"))?;
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => {}
            _ => return Err(format!("{url:?}: port {p:?} must be 1 to 65535")),
        }
    }
    let bracketed = host.starts_with('[');
    let ok = if bracketed {
        host.ends_with(']')
            && host[1..host.len() - 1]
                .parse::<std::net::Ipv6Addr>()
                .is_ok()
    } else {
        host.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            && !host.starts_with(['-', '.'])
            && !host.ends_with('-')
    };
    if !ok {
        return Err(format!(
            "{url:?}: {host:?} is not a host name or IP address"
        ));
    }
    Ok(())
}

/// `host[:port]`, with `[v6]` hosts kept in their brackets.
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), String> {
    if authority.starts_with('[') {
        let end = authority
            .find(']')
            .ok_or_else(|| "an IPv6 host without its closing ']'".to_string())?;
        let (host, after) = authority.split_at(end + 1);
        return match after.strip_prefix(':') {
            Some(p) => Ok((host, Some(p))),
            None if after.is_empty() => Ok((host, None)),
            None => Err(format!("unexpected {after:?} after the host")),
        };
    }
    Ok(match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_with_a_host_pass() {
        for ok in [
            "http://hello.default.svc.cluster.local",
            "http://hello.default.svc.cluster.local/",
            "http://10.0.0.7:8080/v1/run?x=1",
            "HTTP://Example.com",
            "http://[::1]:9000/",
            "http://localhost:1",
        ] {
            check_url(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn everything_else_is_refused_with_why() {
        for (bad, why) in [
            ("ftp://x", "not an http:// URL"),
            ("hello", "not an http:// URL"),
            ("", "not an http:// URL"),
            ("https://x.example", "https is not supported yet"),
            ("http://", "has no host"),
            ("http:///path", "has no host"),
            ("http://user:pw@host/", "credentials"),
            ("http://host:0/", "1 to 65535"),
            ("http://host:99999/", "1 to 65535"),
            ("http://host:x/", "1 to 65535"),
            ("http://ho st/", "contains ' '"),
            ("http://host/\u{0}", "contains"),
            ("http://host/#frag", "fragment"),
            ("http://-host/", "not a host name"),
            ("http://ho_st/", "not a host name"),
            ("http://[::1/", "closing ']'"),
            ("http://[nope]/", "not a host name"),
        ] {
            let e = check_url(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
        let long = format!("http://h/{}", "a".repeat(MAX_URL_LEN));
        assert!(check_url(&long).unwrap_err().contains("the limit is"));
    }
}
