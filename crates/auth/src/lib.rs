//! Authentication for Stratus's servers: the gateway, `data serve` and the
//! snapstore server share one notion of a token and one set of request checks.
//!
//! - [`Token`]: a bearer secret. Servers create one at random in a 0600 file
//!   (or take it from a file or the environment, never from an argument,
//!   where `ps` shows it); clients find it the way `kubectl` finds its config
//!   ([`Token::discover`]). Comparison is constant time in the token's content.
//! - [`Guard`]: the checks a request passes before a handler sees it — its
//!   bearer token, its `Host` (against DNS rebinding) and, for browsers, its
//!   `Origin` and body type (against cross-site requests). Pure: it reads
//!   headers and returns a [`Denied`] that says what was wrong.
//! - [`BoundedListener`]: a listener for `axum::serve` that caps open
//!   connections and closes a connection idle (no byte moved) too long.

mod guard;
mod listener;
mod token;

pub use guard::{check_bearer, check_body_type, Denied, Guard, HostPolicy};
pub use listener::{serve_bounded, BoundedListener, ConnBusy, ConnLimits, IdleIo};
pub use token::{Token, TokenSource, TOKEN_ENV};

/// Why a token could not be made, read or found.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the token file {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the token file {path}")]
    Create {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token from {origin} is not usable: {why}")]
    Invalid { origin: String, why: &'static str },
    #[error("the system's random source failed: {0}")]
    Random(String),
    #[error(
        "no token found: pass --token-file, set {TOKEN_ENV}, or run where the server's \
         state directory holds {path}"
    )]
    NotFound { path: std::path::PathBuf },
}
