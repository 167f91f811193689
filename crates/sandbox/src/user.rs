//! Who function processes run as (`stratus up --run-as`).
//!
//! A platform started as root runs functions as an unprivileged user:
//! `nobody` unless told otherwise, never root by default. A platform that
//! is not root cannot switch users, so its functions run as its own user
//! (it says so in its log). A `--run-as` user that does not exist is an
//! error at startup, not at a function's first start.

use std::path::PathBuf;

/// The user functions run as when `--run-as` is not given: Debian's (and
/// most systems') unprivileged `nobody`. A dedicated user would need
/// creating first; `--run-as` names one where it exists.
pub const DEFAULT_RUN_AS: &str = "nobody";

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error(
        "--run-as '{0}': no such user in /etc/passwd (give a user name, or a numeric uid[:gid])"
    )]
    NotFound(String),
    #[error("--run-as '{0}': not a user name or uid[:gid]")]
    Invalid(String),
    #[error("the platform runs as root and its default function user '{DEFAULT_RUN_AS}' does not exist; create it or pass --run-as USER")]
    NoDefault,
    #[error("cannot read /etc/passwd")]
    Passwd(#[source] std::io::Error),
}

/// A user function processes switch to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Its home directory (`$HOME` of its processes).
    pub home: PathBuf,
}

impl User {
    /// "nobody (uid 65534, gid 65534)".
    pub fn describe(&self) -> String {
        format!("{} (uid {}, gid {})", self.name, self.uid, self.gid)
    }
}

/// `who` in `passwd` (the text of `/etc/passwd`): a user name, a numeric
/// uid, or `uid:gid`. A numeric uid absent from `passwd` is taken as is
/// (its gid the same number unless given, its home `/`).
pub fn lookup(passwd: &str, who: &str) -> Result<User, UserError> {
    let entries = passwd.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 || l.starts_with('#') {
            return None;
        }
        Some(User {
            name: f[0].to_string(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: PathBuf::from(f[5]),
        })
    });
    let invalid = || UserError::Invalid(who.to_string());
    let (uid_part, gid_part) = match who.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (who, None),
    };
    if who.is_empty() || uid_part.is_empty() {
        return Err(invalid());
    }
    let numeric = uid_part.bytes().all(|b| b.is_ascii_digit());
    let gid = match gid_part {
        Some(g) if numeric => Some(g.parse::<u32>().map_err(|_| invalid())?),
        Some(_) => return Err(invalid()),
        None => None,
    };
    let mut entries = entries;
    if numeric {
        let uid: u32 = uid_part.parse().map_err(|_| invalid())?;
        let mut u = entries.find(|u| u.uid == uid).unwrap_or_else(|| User {
            name: uid.to_string(),
            uid,
            gid: uid,
            home: PathBuf::from("/"),
        });
        if let Some(g) = gid {
            u.gid = g;
        }
        return Ok(u);
    }
    entries
        .find(|u| u.name == who)
        .ok_or_else(|| UserError::NotFound(who.to_string()))
}

/// The user the platform's function processes switch to: `requested`
/// (`--run-as`), else [`DEFAULT_RUN_AS`], when the platform runs as root;
/// `None` (they run as the platform's own user) when it is not root, or
/// when `requested` is root itself. Logs which.
pub fn resolve(requested: Option<&str>) -> Result<Option<User>, UserError> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(UserError::Passwd)?;
    let euid = rustix::process::geteuid().as_raw();
    resolve_in(&passwd, euid, requested)
}

/// [`resolve`] with the password file and the platform's euid given.
pub fn resolve_in(
    passwd: &str,
    euid: u32,
    requested: Option<&str>,
) -> Result<Option<User>, UserError> {
    let user = match requested {
        Some(who) => lookup(passwd, who)?,
        None => match lookup(passwd, DEFAULT_RUN_AS) {
            Ok(u) => u,
            Err(_) if euid != 0 => {
                tracing::info!(
                    euid,
                    "the platform is not root: functions run as its own user"
                );
                return Ok(None);
            }
            Err(_) => return Err(UserError::NoDefault),
        },
    };
    if euid != 0 {
        if user.uid != euid {
            tracing::warn!(
                euid,
                run_as = %user.describe(),
                "the platform is not root and cannot switch users: functions run as its own user"
            );
        } else {
            tracing::info!(euid, "functions run as the platform's own user");
        }
        return Ok(None);
    }
    if user.uid == 0 {
        tracing::warn!("--run-as root: functions run as root, with the platform's privileges");
        return Ok(None);
    }
    tracing::info!(run_as = %user.describe(), "functions run as an unprivileged user");
    Ok(Some(user))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        # a comment:x:1:1:c:/c:/bin/sh\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        broken:x:notanumber:1::/:/bin/sh\n\
        short:x:5\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";

    #[test]
    fn looks_up_names_uids_and_uid_gid_pairs() {
        let nobody = lookup(PASSWD, "nobody").unwrap();
        assert_eq!((nobody.uid, nobody.gid), (65534, 65534));
        assert_eq!(nobody.home, PathBuf::from("/nonexistent"));
        assert_eq!(lookup(PASSWD, "65534").unwrap(), nobody);
        assert_eq!(lookup(PASSWD, "1").unwrap().name, "daemon");
        let pair = lookup(PASSWD, "1:7").unwrap();
        assert_eq!((pair.name.as_str(), pair.uid, pair.gid), ("daemon", 1, 7));
        let bare = lookup(PASSWD, "4242").unwrap();
        assert_eq!(
            (bare.uid, bare.gid, bare.home),
            (4242, 4242, PathBuf::from("/"))
        );
    }

    #[test]
    fn nasty_names_are_clear_errors() {
        for who in ["", ":", ":5", "1:", "1:x", "nobody:1", "99999999999"] {
            assert!(
                matches!(lookup(PASSWD, who), Err(UserError::Invalid(_))),
                "{who:?}: {:?}",
                lookup(PASSWD, who)
            );
        }
        for who in ["no-such-user", "broken", "short", "# a comment", "NOBODY"] {
            let e = lookup(PASSWD, who).unwrap_err();
            assert!(matches!(e, UserError::NotFound(_)), "{who:?}: {e}");
            assert!(e.to_string().contains("no such user"), "{e}");
        }
    }

    #[test]
    fn root_switches_to_nobody_by_default_and_others_never_switch() {
        let u = resolve_in(PASSWD, 0, None).unwrap().unwrap();
        assert_eq!(u.name, "nobody");
        assert_eq!(
            resolve_in(PASSWD, 0, Some("daemon")).unwrap().unwrap().uid,
            1
        );
        assert_eq!(resolve_in(PASSWD, 0, Some("root")).unwrap(), None);
        // Not root: run as the platform's user, whatever was asked…
        assert_eq!(resolve_in(PASSWD, 1000, None).unwrap(), None);
        assert_eq!(resolve_in(PASSWD, 1000, Some("daemon")).unwrap(), None);
        // …but a user that does not exist is still an error.
        assert!(matches!(
            resolve_in(PASSWD, 1000, Some("ghost")),
            Err(UserError::NotFound(_))
        ));
        let no_nobody = "root:x:0:0:root:/root:/bin/bash\n";
        assert!(matches!(
            resolve_in(no_nobody, 0, None),
            Err(UserError::NoDefault)
        ));
        assert_eq!(resolve_in(no_nobody, 1000, None).unwrap(), None);
    }
}
