//! The process holds the HMK, the KPK, passphrases and unwrapped keys: no core dump may carry
//! them away, and no other process of the same user may read its memory.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Not dumpable (`PR_SET_DUMPABLE` 0: no core, and `/proc/PID/mem`, ptrace and
/// `/proc/PID/environ` are closed to other processes of the same uid) and no core size
/// (`RLIMIT_CORE` 0, in case something makes it dumpable again). Called first by every
/// subcommand: they all handle key material.
pub fn harden() -> Result<(), String> {
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| format!("cannot make the process non-dumpable: {e}"))?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0)
        .map_err(|e| format!("cannot set the core size limit to 0: {e}"))?;
    Ok(())
}

/// Locks every page of the daemon, present and future, in memory, so that no key, passphrase
/// or master key is ever written to swap. Only where it cannot make a later allocation fail:
/// with an unlimited `RLIMIT_MEMLOCK` or the right to lock without limit (root's
/// CAP_IPC_LOCK); otherwise the daemon runs unlocked and says so (`.status`, the log). The
/// cost is the daemon's whole resident size kept in RAM (about 90 MiB at 100,000 records).
pub fn lock_memory() -> Result<(), String> {
    use nix::sys::mman::{mlockall, MlockAllFlags};
    let unlimited = getrlimit(Resource::RLIMIT_MEMLOCK)
        .is_ok_and(|(soft, _)| soft == nix::sys::resource::RLIM_INFINITY);
    // With a limit and no CAP_IPC_LOCK, MCL_FUTURE would make the first allocation past the
    // limit fail later, and the daemon with it: better not to lock at all.
    if !unlimited && !has_ipc_lock() {
        return Err("memory is not locked: RLIMIT_MEMLOCK is limited and CAP_IPC_LOCK is missing, so secrets may reach swap (give CAP_IPC_LOCK or LimitMEMLOCK=infinity, or use encrypted swap)".into());
    }
    mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE)
        .map_err(|e| format!("cannot lock the daemon's memory: {e}: secrets may reach swap"))
}

/// Whether CAP_IPC_LOCK (bit 14) is in the effective set (root without it, in a unit whose
/// bounding set leaves it out, is limited like anyone).
fn has_ipc_lock() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 14) != 0)
}

/// What the process's protection is now, for `.status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hardening {
    pub dumpable: bool,
    pub core_limit: u64,
    /// Bytes of memory locked (`VmLck` of /proc/self/status).
    pub locked_bytes: u64,
}

pub fn current() -> Hardening {
    let locked_bytes = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmLck:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    Hardening {
        dumpable: nix::sys::prctl::get_dumpable().unwrap_or(true),
        core_limit: getrlimit(Resource::RLIMIT_CORE).map_or(u64::MAX, |(soft, _)| soft),
        locked_bytes,
    }
}
