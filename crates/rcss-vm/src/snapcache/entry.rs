//! An entry on disk: its key (a directory name), `entry.json` (untrusted
//! on reading: size bounded before decoding, every field validated), and
//! the checks that decide whether a directory found on open is an entry.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{CachedSnapshot, ENTRY_FILE, MAX_ENTRY_JSON, MAX_KEY_LEN, MEMORY_FILE, VMSTATE_FILE};

pub(super) const ENTRY_VERSION: u32 = 1;

pub(super) const MAX_BOOT_ID_LEN: usize = 64;

/// Checks that `key` can name an entry directory: 1 to [`MAX_KEY_LEN`]
/// ASCII letters, digits, `-`, `_`, `.`, not starting with `.`.
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("empty".into());
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!("longer than {MAX_KEY_LEN} bytes"));
    }
    if key.starts_with('.') {
        return Err("starts with '.'".into());
    }
    if let Some(c) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "contains {c:?} (allowed: ASCII letters, digits, '-', '_', '.')"
        ));
    }
    Ok(())
}

/// The contents of `entry.json`. Untrusted on reading: [`EntryMeta::parse`]
/// bounds the size before decoding and validates every field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryMeta {
    pub version: u32,
    pub key: String,
    pub memory_bytes: u64,
    pub vmstate_bytes: u64,
    pub created_unix_ms: u64,
    /// `/proc/sys/kernel/random/boot_id` when written (empty if unknown).
    pub boot_id: String,
}

impl EntryMeta {
    pub fn parse(bytes: &[u8]) -> Result<EntryMeta, String> {
        if bytes.len() as u64 > MAX_ENTRY_JSON {
            return Err(format!(
                "{} bytes, more than the {MAX_ENTRY_JSON}-byte limit",
                bytes.len()
            ));
        }
        let m: EntryMeta =
            serde_json::from_slice(bytes).map_err(|e| format!("not a valid entry: {e}"))?;
        if m.version != ENTRY_VERSION {
            return Err(format!(
                "version {} (this build reads {ENTRY_VERSION})",
                m.version
            ));
        }
        validate_key(&m.key).map_err(|r| format!("key {:?}: {r}", m.key))?;
        if m.boot_id.len() > MAX_BOOT_ID_LEN {
            return Err(format!("boot_id longer than {MAX_BOOT_ID_LEN} bytes"));
        }
        Ok(m)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("entry metadata serializes")
    }
}

pub(super) fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().chars().take(MAX_BOOT_ID_LEN).collect())
        .unwrap_or_default()
}

pub(super) fn stored(m: &std::fs::Metadata) -> u64 {
    m.blocks().saturating_mul(512)
}

/// Validates one directory of the cache: `(snapshot, last use)` or why not.
pub(super) fn load_entry(
    dir: &Path,
    name: &str,
    boot: &str,
) -> Result<(CachedSnapshot, SystemTime), String> {
    validate_key(name).map_err(|r| format!("name is not a key: {r}"))?;
    let md = std::fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if !md.is_dir() {
        return Err("not a directory".into());
    }
    let entry = dir.join(ENTRY_FILE);
    let em = match std::fs::symlink_metadata(&entry) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Err(format!("{ENTRY_FILE} is not a regular file")),
        Err(_) => return Err(format!("no {ENTRY_FILE} (a partial fill)")),
    };
    if em.len() > MAX_ENTRY_JSON {
        return Err(format!(
            "{ENTRY_FILE} has {} bytes, more than the {MAX_ENTRY_JSON}-byte limit",
            em.len()
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(&entry)
        .and_then(|f| f.take(MAX_ENTRY_JSON + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("reading {ENTRY_FILE}: {e}"))?;
    let meta = EntryMeta::parse(&bytes).map_err(|e| format!("{ENTRY_FILE}: {e}"))?;
    if meta.key != name {
        return Err(format!(
            "{ENTRY_FILE} is for key {:?}, not this directory",
            meta.key
        ));
    }
    if meta.boot_id != boot {
        return Err(
            "written before the last reboot (its data may not have reached the disk)".into(),
        );
    }
    let check = |file: &str, want: u64| -> Result<std::fs::Metadata, String> {
        match std::fs::symlink_metadata(dir.join(file)) {
            Ok(m) if m.is_file() && m.len() == want => Ok(m),
            Ok(m) if m.is_file() => Err(format!(
                "{file} has {} bytes, {ENTRY_FILE} says {want}",
                m.len()
            )),
            Ok(_) => Err(format!("{file} is not a regular file")),
            Err(e) => Err(format!("{file}: {e}")),
        }
    };
    let m = check(MEMORY_FILE, meta.memory_bytes)?;
    let v = check(VMSTATE_FILE, meta.vmstate_bytes)?;
    let last_use = em.modified().unwrap_or(UNIX_EPOCH);
    Ok((
        CachedSnapshot {
            key: meta.key,
            memory: dir.join(MEMORY_FILE),
            vmstate: dir.join(VMSTATE_FILE),
            memory_bytes: meta.memory_bytes,
            vmstate_bytes: meta.vmstate_bytes,
            stored_bytes: stored(&m) + stored(&v),
        },
        last_use,
    ))
}

/// Deletes a file, symlink (not its target) or directory tree.
pub(super) fn remove_any(p: &Path) {
    let r = match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) => Err(e),
    };
    if let Err(e) = r {
        tracing::warn!(path = %p.display(), error = %e, "cannot delete from the snapshot cache");
    }
}

pub(super) fn move_file(from: &Path, to: &Path) -> Result<(), String> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
            std::fs::copy(from, to)
                .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))?;
            std::fs::remove_file(from)
                .map_err(|e| format!("deleting {} after copying it: {e}", from.display()))
        }
        Err(e) => Err(format!(
            "moving {} to {}: {e}",
            from.display(),
            to.display()
        )),
    }
}
