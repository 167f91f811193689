//! Path rules for names found in layer tars and eStargz TOCs (pure).
//!
//! Every name is normalised to a relative, `/`-separated path with no `.`,
//! `..` or empty components; the root is the empty string. Absolute names,
//! names that climb out of the root, NUL bytes and over-long names are
//! rejected, as are link targets that escape the root.

/// Longest accepted name in bytes (Linux `PATH_MAX`).
pub const MAX_NAME_LEN: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("entry name {0:?} is absolute; layer paths must be relative to the root")]
    Absolute(String),
    #[error("entry name {0:?} contains `..`, which could escape the root")]
    DotDot(String),
    #[error("entry name {0:?} contains a NUL byte")]
    Nul(String),
    #[error("entry name is {0} bytes long, over the limit of {MAX_NAME_LEN}")]
    TooLong(usize),
    #[error("entry name {0:?} is not valid UTF-8")]
    NotUtf8(String),
    #[error("link {name:?} -> {target:?} escapes the root")]
    LinkEscapes { name: String, target: String },
    #[error("link {0:?} has an empty target")]
    EmptyTarget(String),
}

/// Normalises a tar or TOC entry name: strips `./` and trailing `/`,
/// collapses `//` and `.`; rejects absolute paths and `..`.
pub fn normalize(name: &str) -> Result<String, PathError> {
    if name.len() > MAX_NAME_LEN {
        return Err(PathError::TooLong(name.len()));
    }
    if name.contains('\0') {
        return Err(PathError::Nul(name.to_string()));
    }
    if name.starts_with('/') {
        return Err(PathError::Absolute(name.to_string()));
    }
    let mut out = String::with_capacity(name.len());
    for comp in name.split('/') {
        match comp {
            "" | "." => {}
            ".." => return Err(PathError::DotDot(name.to_string())),
            c => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(c);
            }
        }
    }
    Ok(out)
}

/// Normalises raw name bytes (from a tar header) as [`normalize`] does.
pub fn normalize_bytes(name: &[u8]) -> Result<String, PathError> {
    let s = std::str::from_utf8(name)
        .map_err(|_| PathError::NotUtf8(String::from_utf8_lossy(name).into_owned()))?;
    normalize(s)
}

/// The parent directory of a normalised name (`""` for top-level names).
pub fn parent(name: &str) -> &str {
    name.rfind('/').map_or("", |i| &name[..i])
}

/// The last component of a normalised name.
pub fn base(name: &str) -> &str {
    name.rfind('/').map_or(name, |i| &name[i + 1..])
}

/// Joins a normalised directory and a component.
pub fn join(dir: &str, comp: &str) -> String {
    if dir.is_empty() {
        comp.to_string()
    } else {
        format!("{dir}/{comp}")
    }
}

/// Checks a symlink target. Absolute targets are resolved against the
/// container root at run time, so they cannot escape it; a relative target
/// must not climb above the root from the link's directory.
pub fn check_symlink(name: &str, target: &str) -> Result<(), PathError> {
    if target.is_empty() {
        return Err(PathError::EmptyTarget(name.to_string()));
    }
    if target.len() > MAX_NAME_LEN {
        return Err(PathError::TooLong(target.len()));
    }
    if target.contains('\0') {
        return Err(PathError::Nul(target.to_string()));
    }
    if target.starts_with('/') {
        return Ok(());
    }
    let mut depth: usize = parent(name).split('/').filter(|c| !c.is_empty()).count();
    for comp in target.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                depth = depth.checked_sub(1).ok_or_else(|| PathError::LinkEscapes {
                    name: name.to_string(),
                    target: target.to_string(),
                })?;
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

/// Normalises a hardlink target, which names another entry of the archive
/// relative to the root (a leading `/` is tolerated, `..` is not).
pub fn hardlink_target(name: &str, target: &str) -> Result<String, PathError> {
    let t = normalize(target.trim_start_matches('/')).map_err(|_| PathError::LinkEscapes {
        name: name.to_string(),
        target: target.to_string(),
    })?;
    if t.is_empty() {
        return Err(PathError::EmptyTarget(name.to_string()));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_names() {
        let ok = [
            ("./a/b", "a/b"),
            ("a//b/", "a/b"),
            ("./", ""),
            ("a/./b/.", "a/b"),
            ("bin/", "bin"),
        ];
        for (input, want) in ok {
            assert_eq!(normalize(input).as_deref(), Ok(want), "{input}");
        }
        assert!(matches!(
            normalize("/etc/passwd"),
            Err(PathError::Absolute(_))
        ));
        assert!(matches!(normalize("a/../../b"), Err(PathError::DotDot(_))));
        assert!(matches!(normalize("a/../b"), Err(PathError::DotDot(_))));
        assert!(matches!(normalize("a\0b"), Err(PathError::Nul(_))));
        assert!(matches!(
            normalize(&"a".repeat(5000)),
            Err(PathError::TooLong(5000))
        ));
        assert!(matches!(
            normalize_bytes(b"a\xffb"),
            Err(PathError::NotUtf8(_))
        ));
    }

    #[test]
    fn symlink_escapes() {
        assert!(check_symlink("a/b/l", "../x").is_ok());
        assert!(check_symlink("a/b/l", "../../x").is_ok());
        assert!(check_symlink("a/b/l", "../../../x").is_err());
        assert!(check_symlink("l", "..").is_err());
        assert!(check_symlink("l", "/etc/passwd").is_ok());
        assert!(check_symlink("a/l", "x/../../..").is_err());
        assert!(check_symlink("l", "").is_err());
    }

    #[test]
    fn hardlink_targets() {
        assert_eq!(hardlink_target("b", "./a/x").as_deref(), Ok("a/x"));
        assert_eq!(hardlink_target("b", "/a/x").as_deref(), Ok("a/x"));
        assert!(hardlink_target("b", "../x").is_err());
        assert!(hardlink_target("b", "./").is_err());
    }

    #[test]
    fn parents_and_bases() {
        assert_eq!(parent("a/b/c"), "a/b");
        assert_eq!(parent("a"), "");
        assert_eq!(base("a/b/c"), "c");
        assert_eq!(join("", "x"), "x");
        assert_eq!(join("a", "x"), "a/x");
    }
}
