//! Bearer tokens: generation, 0600 files, discovery, constant-time checks.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

use crate::AuthError;

/// The environment variable that carries a token's value.
pub const TOKEN_ENV: &str = "STRATUS_TOKEN";

/// Shortest token accepted from a file or the environment.
const MIN_LEN: usize = 16;
/// Longest token accepted (it travels in a header).
const MAX_LEN: usize = 512;

/// A bearer secret. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(…)")
    }
}

/// Where a token was found (for messages such as "using the token in …").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    File(PathBuf),
    Env,
    Created(PathBuf),
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::File(p) => write!(f, "the token file {}", p.display()),
            TokenSource::Env => write!(f, "${TOKEN_ENV}"),
            TokenSource::Created(p) => write!(f, "a new token in {}", p.display()),
        }
    }
}

impl Token {
    /// 32 random bytes from the OS, as 64 hex digits.
    pub fn generate() -> Result<Token, AuthError> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| AuthError::Random(e.to_string()))?;
        Ok(Token(raw.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// A token from text (a file's content or a variable's value); surrounding
    /// whitespace is dropped. `origin` names where it came from, for errors.
    pub fn parse(text: &str, origin: &str) -> Result<Token, AuthError> {
        let t = text.trim();
        let invalid = |why| AuthError::Invalid {
            origin: origin.to_string(),
            why,
        };
        if t.is_empty() {
            return Err(invalid("it is empty"));
        }
        if t.len() < MIN_LEN {
            return Err(invalid("it is shorter than 16 characters"));
        }
        if t.len() > MAX_LEN {
            return Err(invalid("it is longer than 512 characters"));
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid("it holds characters other than visible ASCII"));
        }
        Ok(Token(t.to_string()))
    }

    /// Reads a token file.
    pub fn read_file(path: &Path) -> Result<Token, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Token::parse(&text, &path.display().to_string())
    }

    /// The token in `path`, or a new random one written there with mode 0600
    /// (created exclusively, so two servers starting at once agree on one).
    pub fn load_or_create(path: &Path) -> Result<(Token, TokenSource), AuthError> {
        match Token::read_file(path) {
            Ok(t) => return Ok((t, TokenSource::File(path.to_path_buf()))),
            Err(AuthError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let create = |source| AuthError::Create {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(create)?;
        }
        let token = Token::generate()?;
        // Written under a temporary name and linked into place, so a reader
        // never sees an empty or half-written file.
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let written = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            writeln!(f, "{}", token.0)?;
            f.sync_all()?;
            std::fs::hard_link(&tmp, path)
        })();
        let _ = std::fs::remove_file(&tmp);
        match written {
            Ok(()) => Ok((token, TokenSource::Created(path.to_path_buf()))),
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((
                Token::read_file(path)?,
                TokenSource::File(path.to_path_buf()),
            )),
            Err(e) => Err(create(e)),
        }
    }

    /// A token named explicitly: the file `file`, else `env`, the value of
    /// `$STRATUS_TOKEN` (empty counts as unset); `None` when neither is
    /// given.
    pub fn explicit(
        file: Option<&Path>,
        env: Option<&str>,
    ) -> Result<Option<(Token, TokenSource)>, AuthError> {
        if let Some(p) = file {
            return Ok(Some((
                Token::read_file(p)?,
                TokenSource::File(p.to_path_buf()),
            )));
        }
        match env.filter(|v| !v.is_empty()) {
            Some(v) => Ok(Some((
                Token::parse(v, &format!("${TOKEN_ENV}"))?,
                TokenSource::Env,
            ))),
            None => Ok(None),
        }
    }

    /// A server's token: [`Token::explicit`], else the one in
    /// `default_file`, created at random when missing.
    pub fn for_server(
        file: Option<&Path>,
        env: Option<&str>,
        default_file: &Path,
    ) -> Result<(Token, TokenSource), AuthError> {
        match Token::explicit(file, env)? {
            Some(found) => Ok(found),
            None => Token::load_or_create(default_file),
        }
    }

    /// A client's token, found like kubectl's config: an explicit file first,
    /// then `$STRATUS_TOKEN`, then the default file (the server's state
    /// directory). `env` is the variable's value, passed in for testability.
    pub fn discover(
        explicit: Option<&Path>,
        env: Option<&str>,
        default_file: &Path,
    ) -> Result<(Token, TokenSource), AuthError> {
        if let Some(found) = Token::explicit(explicit, env)? {
            return Ok(found);
        }
        match Token::read_file(default_file) {
            Ok(t) => Ok((t, TokenSource::File(default_file.to_path_buf()))),
            Err(AuthError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Err(AuthError::NotFound {
                    path: default_file.to_path_buf(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The secret, for a client to send.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token. Constant time in the content; the
    /// length of the token is not secret.
    pub fn verify(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn generated_tokens_are_distinct_hex() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 64);
        assert!(a.expose().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(format!("{a:?}"), "Token(…)");
    }

    #[test]
    fn created_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/admin.token");
        let (t1, s1) = Token::load_or_create(&path).unwrap();
        assert_eq!(s1, TokenSource::Created(path.clone()));
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let (t2, s2) = Token::load_or_create(&path).unwrap();
        assert_eq!(t1, t2);
        assert_eq!(s2, TokenSource::File(path.clone()));
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("admin.token")]);
    }

    #[test]
    fn bad_token_files_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        for (text, why) in [
            ("", "it is empty"),
            ("  \n", "it is empty"),
            ("short", "shorter than 16"),
            ("0123456789abcdef\u{7}", "other than visible ASCII"),
            ("0123456789 abcdef", "other than visible ASCII"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = Token::read_file(&path).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("/t"), "{text:?}: {e}");
            // load_or_create never overwrites a bad file.
            assert!(Token::load_or_create(&path).is_err());
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        }
        std::fs::write(&path, "x".repeat(513)).unwrap();
        assert!(Token::read_file(&path).is_err());
    }

    #[test]
    fn discovery_order_is_file_then_env_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let explicit = dir.path().join("explicit");
        let default = dir.path().join("default");
        std::fs::write(&explicit, "explicit-token-0000\n").unwrap();
        std::fs::write(&default, "default-token-00000\n").unwrap();
        let env = Some("env-token-000000000");
        let got = |e: Option<&Path>, v| Token::discover(e, v, &default).unwrap();
        assert_eq!(got(Some(&explicit), env).0.expose(), "explicit-token-0000");
        assert_eq!(
            got(None, env),
            (Token("env-token-000000000".into()), TokenSource::Env)
        );
        assert_eq!(got(None, Some("")).0.expose(), "default-token-00000");
        assert_eq!(got(None, None).0.expose(), "default-token-00000");
        std::fs::remove_file(&default).unwrap();
        let e = Token::discover(None, None, &default).unwrap_err();
        assert!(matches!(e, AuthError::NotFound { .. }), "{e}");
        assert!(e.to_string().contains("--token-file"));
    }

    #[test]
    fn a_server_takes_a_named_token_or_creates_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let named = dir.path().join("named");
        let default = dir.path().join("state/server.token");
        std::fs::write(&named, "named-token-0000000\n").unwrap();
        let (t, s) =
            Token::for_server(Some(&named), Some("env-token-000000000"), &default).unwrap();
        assert_eq!(
            (t.expose(), s),
            ("named-token-0000000", TokenSource::File(named))
        );
        let (t, s) = Token::for_server(None, Some("env-token-000000000"), &default).unwrap();
        assert_eq!((t.expose(), s), ("env-token-000000000", TokenSource::Env));
        assert!(!default.exists(), "a named token writes nothing");
        let (t, s) = Token::for_server(None, Some(""), &default).unwrap();
        assert_eq!(s, TokenSource::Created(default.clone()));
        assert_eq!(Token::read_file(&default).unwrap(), t);
    }

    #[test]
    fn verify_accepts_only_the_exact_token() {
        let t = Token::parse("correct-horse-battery", "test").unwrap();
        assert!(t.verify(b"correct-horse-battery"));
        for bad in [
            &b""[..],
            b"correct-horse-batter",
            b"correct-horse-batteryy",
            b"Correct-horse-battery",
        ] {
            assert!(!t.verify(bad), "{bad:?}");
        }
    }
}
