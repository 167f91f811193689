//! A node's capacity: what the host has, what a worker may advertise (never
//! more than the host has, never an impossible value), and whether one more
//! instance fits.

use crate::request::{Limits, Usage};

/// The fewest and most a node may advertise.
pub const MIN_MEMORY_BYTES: u64 = 64 << 20;
pub const MAX_MEMORY_BYTES: u64 = 64 << 40;
pub const MAX_CORES: u32 = 4096;

/// Cores and memory of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub cores: u32,
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapacityError {
    #[error("impossible capacity: {what} {value} (it must be {range})")]
    Impossible {
        what: &'static str,
        value: u64,
        range: String,
    },
    #[error("cannot advertise {what} {value}: this host has {host}")]
    MoreThanHost {
        what: &'static str,
        value: u64,
        host: u64,
    },
    #[error("cannot read this host's {what}: {why}")]
    Host { what: &'static str, why: String },
}

impl Capacity {
    /// What this host has: its usable cores and `MemTotal`.
    pub fn of_host() -> Result<Capacity, CapacityError> {
        let cores = std::thread::available_parallelism()
            .map_err(|e| CapacityError::Host {
                what: "core count",
                why: e.to_string(),
            })?
            .get() as u32;
        let meminfo =
            std::fs::read_to_string("/proc/meminfo").map_err(|e| CapacityError::Host {
                what: "memory size",
                why: format!("/proc/meminfo: {e}"),
            })?;
        let memory_bytes = mem_total(&meminfo).ok_or_else(|| CapacityError::Host {
            what: "memory size",
            why: "/proc/meminfo has no MemTotal line".into(),
        })?;
        Ok(Capacity {
            cores,
            memory_bytes,
        })
    }

    /// Refuses values no node can have: 0 or more than [`MAX_CORES`]
    /// cores, memory outside [`MIN_MEMORY_BYTES`]..=[`MAX_MEMORY_BYTES`].
    pub fn check(&self) -> Result<(), CapacityError> {
        if self.cores == 0 || self.cores > MAX_CORES {
            return Err(CapacityError::Impossible {
                what: "cores",
                value: self.cores.into(),
                range: format!("1 to {MAX_CORES}"),
            });
        }
        if !(MIN_MEMORY_BYTES..=MAX_MEMORY_BYTES).contains(&self.memory_bytes) {
            return Err(CapacityError::Impossible {
                what: "memory_bytes",
                value: self.memory_bytes,
                range: format!("{MIN_MEMORY_BYTES} to {MAX_MEMORY_BYTES}"),
            });
        }
        Ok(())
    }

    /// What a worker advertises: the host's, or less where asked; refuses
    /// more than the host has and impossible values.
    pub fn advertised(
        host: Capacity,
        cores: Option<u32>,
        memory_bytes: Option<u64>,
    ) -> Result<Capacity, CapacityError> {
        let c = Capacity {
            cores: cores.unwrap_or(host.cores),
            memory_bytes: memory_bytes.unwrap_or(host.memory_bytes),
        };
        c.check()?;
        if c.cores > host.cores {
            return Err(CapacityError::MoreThanHost {
                what: "cores",
                value: c.cores.into(),
                host: host.cores.into(),
            });
        }
        if c.memory_bytes > host.memory_bytes {
            return Err(CapacityError::MoreThanHost {
                what: "memory_bytes",
                value: c.memory_bytes,
                host: host.memory_bytes,
            });
        }
        Ok(c)
    }

    /// Why `want` does not fit beside `used` (at most `max_instances`), or
    /// `None` when it fits.
    pub fn refuses(&self, max_instances: usize, used: &Usage, want: &Limits) -> Option<String> {
        if used.instances >= max_instances {
            return Some(format!(
                "this node runs {} instances, its limit (--max-instances)",
                used.instances
            ));
        }
        let cores_m = u64::from(self.cores) * 1000;
        if used.millicores + u64::from(want.millicores) > cores_m {
            return Some(format!(
                "{} millicores asked, {} of {cores_m} free",
                want.millicores,
                cores_m.saturating_sub(used.millicores)
            ));
        }
        if used.memory_bytes + want.memory_bytes > self.memory_bytes {
            return Some(format!(
                "{} bytes of memory asked, {} of {} free",
                want.memory_bytes,
                self.memory_bytes.saturating_sub(used.memory_bytes),
                self.memory_bytes
            ));
        }
        None
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut it = line["MemTotal:".len()..].split_whitespace();
    let n: u64 = it.next()?.parse().ok()?;
    match it.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: Capacity = Capacity {
        cores: 2,
        memory_bytes: 8 << 30,
    };

    #[test]
    fn meminfo_is_read_in_kib() {
        assert_eq!(
            mem_total("MemFree: 1 kB\nMemTotal:       24000 kB\n"),
            Some(24000 * 1024)
        );
        assert_eq!(mem_total("MemTotal: x kB"), None);
        assert_eq!(mem_total("MemTotal: 1 MB"), None);
        assert_eq!(mem_total(""), None);
        let h = Capacity::of_host().unwrap();
        h.check().unwrap();
    }

    #[test]
    fn impossible_or_inflated_capacity_is_refused() {
        let e = Capacity::advertised(HOST, Some(0), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "impossible capacity: cores 0 (it must be 1 to 4096)"
        );
        let e = Capacity::advertised(HOST, Some(3), None).unwrap_err();
        assert_eq!(e.to_string(), "cannot advertise cores 3: this host has 2");
        let e = Capacity::advertised(HOST, None, Some(1)).unwrap_err();
        assert!(e.to_string().contains("memory_bytes 1"), "{e}");
        let e = Capacity::advertised(HOST, None, Some(u64::MAX)).unwrap_err();
        assert!(e.to_string().contains("impossible"), "{e}");
        assert_eq!(
            Capacity::advertised(HOST, Some(1), Some(1 << 30)).unwrap(),
            Capacity {
                cores: 1,
                memory_bytes: 1 << 30
            }
        );
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let used = |instances, millicores, memory_bytes| Usage {
            instances,
            millicores,
            memory_bytes,
        };
        let l = |millicores, memory_bytes| Limits {
            millicores,
            memory_bytes,
        };
        assert_eq!(
            HOST.refuses(4, &used(1, 1000, 1 << 30), &l(1000, 1 << 30)),
            None
        );
        assert!(HOST
            .refuses(4, &used(1, 1500, 0), &l(600, 1))
            .unwrap()
            .contains("600 millicores asked, 500 of 2000 free"));
        assert!(HOST
            .refuses(4, &used(1, 0, 8 << 30), &l(1, 1))
            .unwrap()
            .contains("memory"));
        assert!(HOST
            .refuses(1, &used(1, 0, 0), &l(1, 1))
            .unwrap()
            .contains("--max-instances"));
    }
}
