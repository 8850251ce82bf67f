//! How many requests of each kind the kernel sent, for benchmarks and tests (the counts are
//! deterministic where timings are not). Off unless asked for: one relaxed atomic add per
//! request when on.

use std::sync::atomic::{AtomicU64, Ordering};

/// The requests kmsfs answers, by name (the kernel's opcode names).
pub const OPS: [&str; 22] = [
    "LOOKUP",
    "GETATTR",
    "SETATTR",
    "READLINK",
    "MKDIR",
    "UNLINK",
    "RMDIR",
    "RENAME",
    "OPEN",
    "CREATE",
    "READ",
    "WRITE",
    "FLUSH",
    "RELEASE",
    "FSYNC",
    "OPENDIR",
    "READDIR",
    "READDIRPLUS",
    "RELEASEDIR",
    "GETXATTR",
    "STATFS",
    "OTHER",
];

#[derive(Debug, Default)]
pub struct RequestCounts([AtomicU64; OPS.len()]);

impl RequestCounts {
    pub fn count(&self, op: &str) {
        let i = OPS.iter().position(|o| *o == op).unwrap_or(OPS.len() - 1);
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The count of `op`.
    pub fn get(&self, op: &str) -> u64 {
        OPS.iter()
            .position(|o| *o == op)
            .map_or(0, |i| self.0[i].load(Ordering::Relaxed))
    }

    /// Every count, by name; zeros left out.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        OPS.iter()
            .zip(&self.0)
            .map(|(op, n)| (*op, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Every file and directory opened has been released (RELEASE and RELEASEDIR reach the
    /// daemon after `close()` has returned).
    pub fn settled(&self) -> bool {
        self.get("OPEN") + self.get("OPENDIR") == self.get("RELEASE") + self.get("RELEASEDIR")
    }

    /// The sum of all counts.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }

    pub fn reset(&self) {
        for n in &self.0 {
            n.store(0, Ordering::Relaxed);
        }
    }
}
