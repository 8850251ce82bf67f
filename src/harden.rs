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

/// What the process's protection is now, for `.status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hardening {
    pub dumpable: bool,
    pub core_limit: u64,
}

pub fn current() -> Hardening {
    Hardening {
        dumpable: nix::sys::prctl::get_dumpable().unwrap_or(true),
        core_limit: getrlimit(Resource::RLIMIT_CORE).map_or(u64::MAX, |(soft, _)| soft),
    }
}
