//! What a worker proves it holds the cluster token with, without storing
//! the token: a domain-separated SHA-256 of it, kept in etcd by the first
//! member to join (`stratus_state_etcd::join`). Tokens are 256-bit random
//! values (`Token::generate`), so the hash cannot be inverted by search.

use sha2::{Digest, Sha256};
use stratus_auth::Token;

/// The verifier of `token`: 64 hex digits.
pub fn verifier(token: &Token) -> String {
    let mut h = Sha256::new();
    h.update(b"stratus cluster token v1\0");
    h.update(token.expose().as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_token_same_verifier_and_never_the_token() {
        let a = Token::parse("a-cluster-token-of-enough-length-0001", "test").unwrap();
        let b = Token::parse("a-cluster-token-of-enough-length-0002", "test").unwrap();
        assert_eq!(verifier(&a), verifier(&a.clone()));
        assert_ne!(verifier(&a), verifier(&b));
        assert_eq!(verifier(&a).len(), 64);
        assert!(!verifier(&a).contains(a.expose()));
    }
}
