//! Request checks over arbitrary Host, Origin, Authorization and
//! Content-Type values: never panic, and a wrong token never passes.
#![no_main]
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN};
use http::{HeaderMap, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use stratus_auth::{Guard, Token};

fuzz_target!(|data: &[u8]| {
    let token = Token::parse("fuzz-token-0123456789", "fuzz").unwrap();
    let guard = Guard::new(token)
        .allow_hosts(["stratus.example".to_string()])
        .allow_origins(["https://ui.example".to_string()]);
    let mut parts = data.split(|b| *b == 0);
    let mut headers = HeaderMap::new();
    for name in [HOST, ORIGIN, AUTHORIZATION, CONTENT_TYPE] {
        if let Some(v) = parts.next().and_then(|p| HeaderValue::from_bytes(p).ok()) {
            headers.insert(name, v);
        }
    }
    if guard.check_admin(&Method::POST, &headers).is_ok() {
        let auth = headers.get(AUTHORIZATION).unwrap().as_bytes();
        assert!(auth.windows(21).any(|w| w == b"fuzz-token-0123456789"));
    }
});
