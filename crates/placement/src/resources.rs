//! CPU and memory, the two dimensions an instance needs room in.

/// Most CPU one node may declare, in thousandths of a core (4,096 cores).
pub const MAX_NODE_CORES_MILLI: u32 = 4096 * 1000;
/// Most memory one node may declare (64 TiB).
pub const MAX_NODE_MEMORY_BYTES: u64 = 64 << 40;

/// An amount of CPU (thousandths of a core) and memory (bytes): a node's
/// capacity, its free room, or what one instance needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Resources {
    /// CPU in thousandths of a core (`1500` is 1.5 cores).
    pub cores_milli: u32,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

impl Resources {
    /// `cores_milli` thousandths of a core and `memory_bytes` bytes.
    pub const fn new(cores_milli: u32, memory_bytes: u64) -> Resources {
        Resources {
            cores_milli,
            memory_bytes,
        }
    }

    /// Whether `need` fits in `self` in both dimensions.
    pub fn fits(&self, need: Resources) -> bool {
        need.cores_milli <= self.cores_milli && need.memory_bytes <= self.memory_bytes
    }

    /// `self - other`, or `None` where `other` does not fit in `self`.
    pub fn checked_sub(self, other: Resources) -> Option<Resources> {
        Some(Resources {
            cores_milli: self.cores_milli.checked_sub(other.cores_milli)?,
            memory_bytes: self.memory_bytes.checked_sub(other.memory_bytes)?,
        })
    }

    /// `self + other`, stopping at the largest value instead of wrapping.
    pub fn saturating_add(self, other: Resources) -> Resources {
        Resources {
            cores_milli: self.cores_milli.saturating_add(other.cores_milli),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }

    /// `count` times `self`, stopping at the largest value instead of wrapping.
    pub fn saturating_mul(self, count: u32) -> Resources {
        Resources {
            cores_milli: self.cores_milli.saturating_mul(count),
            memory_bytes: self.memory_bytes.saturating_mul(u64::from(count)),
        }
    }

    /// Whether either dimension is zero.
    pub fn any_zero(&self) -> bool {
        self.cores_milli == 0 || self.memory_bytes == 0
    }

    /// Whether either dimension is above what one node may declare.
    pub fn beyond_node_limits(&self) -> bool {
        self.cores_milli > MAX_NODE_CORES_MILLI || self.memory_bytes > MAX_NODE_MEMORY_BYTES
    }
}

impl std::fmt::Display for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}m cores, {} MiB",
            self.cores_milli,
            self.memory_bytes as f64 / (1u64 << 20) as f64
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_needs_both_dimensions() {
        let room = Resources::new(1000, 100);
        assert!(room.fits(Resources::new(1000, 100)));
        assert!(!room.fits(Resources::new(1001, 1)));
        assert!(!room.fits(Resources::new(1, 101)));
    }

    #[test]
    fn arithmetic_does_not_wrap() {
        assert_eq!(Resources::new(1, 5).checked_sub(Resources::new(2, 1)), None);
        assert_eq!(
            Resources::new(3, 5).checked_sub(Resources::new(2, 1)),
            Some(Resources::new(1, 4))
        );
        let big = Resources::new(u32::MAX / 2, u64::MAX / 2);
        assert_eq!(big.saturating_mul(3), Resources::new(u32::MAX, u64::MAX));
        assert_eq!(
            big.saturating_add(big).saturating_add(big),
            Resources::new(u32::MAX, u64::MAX)
        );
    }

    #[test]
    fn display_names_both() {
        assert_eq!(
            Resources::new(1500, 3 << 19).to_string(),
            "1500m cores, 1.5 MiB"
        );
    }
}
