//! The drills' knobs (`KMSFS_DRILL_SEED`, `KMSFS_DRILL_ROUNDS`, ...): read from the
//! environment, one parse for all, so that a bad value fails the same way in every drill.

use std::time::{SystemTime, UNIX_EPOCH};

/// `name` parsed, or `default` when unset; a value that does not parse fails the test.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

/// `KMSFS_DRILL_SEED`, else one from the clock (printed by each drill, to repeat a run).
pub fn seed() -> u64 {
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    env_or("KMSFS_DRILL_SEED", clock % 1_000_000)
}
