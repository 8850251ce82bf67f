//! The audit log: one JSON line per security-relevant event, in a file that a holder of the
//! HMK can prove complete up to its last line, and unaltered. Format, guarantees, limits,
//! logrotate and the fail-closed rule: `docs/audit.md`.
//!
//! # Interface (for the operation layer)
//!
//! ```text
//! // Once, at mount: the key, then the log (DATA_DIR/audit.log), continuing its chain.
//! AuditKey::from_hmk(hmk: &crypto::Hmk) -> AuditKey            // what the daemon and the CLI use
//! AuditKey::derive(hmk_secret: &[u8; 32], context: &str) -> AuditKey
//! audit::default_path(data_dir: &Path) -> PathBuf
//! AuditLog::open(path: &Path, key: AuditKey) -> Result<AuditLog, AuditError>
//!
//! // Per request: who asked (from the FUSE request), then one event per decision.
//! Caller::lookup(uid: u32, gid: u32, pid: u32) -> Caller     // reads /proc/PID/{comm,exe}
//! Caller::daemon() -> Caller                                 // the daemon's own work (rotation)
//! Event::keystore(&caller, op, verdict)                      // quiesce, unquiesce, import
//! Event::group(&caller, op, group, verdict)                  // mkdir, rmdir, write .cipher ...
//! Event::record(&caller, op, group, record, key_tag, verdict) // open key, write state ...
//! Event::rename_group(&caller, from, to, verdict)
//! Event::rename_record(&caller, group, from, to, key_tag, verdict)
//!   where op: &'static str ("open key", "write state", "mkdir", "change-key", ...)
//!         verdict: Verdict::Allowed | Verdict::Refused(reason) | Verdict::Failed(reason)
//!
//! // All &self, from any thread (a Mutex inside serializes appends: chain order = file order).
//! AuditLog::append(&self, &Event<'_>) -> Result<(), AuditError> // one write(2), or nothing
//! AuditLog::sync(&self) -> Result<(), AuditError>              // fdatasync
//! AuditLog::health(&self) -> Result<(), String>                // Err(reason) while failing
//! AuditLog::reopen(&self) -> Result<(), AuditError>            // SIGHUP after logrotate
//!
//! // Offline (kmsfs audit verify): files oldest first; Ok only if every line verifies.
//! audit::verify(files: &[PathBuf], key: Option<&AuditKey>) -> Result<Report, VerifyError>
//! ```
//!
//! # What a caller cannot put in a line
//!
//! An [`Event`] holds the caller, an operation name that must be a `&'static str` (a string
//! literal, never text read at run time), the names of a group and a record, a key tag, a new
//! name for renames, the verdict and, for refusals and failures, a short reason (the same text
//! as `.errors` shows: never a passphrase, a key or a description). There is no free-form
//! payload and no field for key bytes, passphrases or descriptions, so none can be logged.
//! `seq`, `time`, `prev` and `mac` are set by the log itself.
//!
//! # Rules the log keeps
//!
//! - The file is opened with O_APPEND|O_CREAT|O_NOFOLLOW|O_CLOEXEC, created 0600; a symlink,
//!   a non-regular file, a file writable by group or others or owned by another user is refused.
//! - `open` continues the chain of the file's last line, read from the end of the file. If the
//!   file has no complete line (new, or just rotated by logrotate's `create`), it continues
//!   from the last line of `PATH.1` (logrotate's first rotated name) if that exists, else it
//!   starts a new chain at seq 1 from the genesis of the key's context. The line continued
//!   from must verify under the key: otherwise `open` fails (a forged or foreign tail is never
//!   silently extended).
//! - Torn tail: bytes after the last newline can only be an append cut short by a crash (an
//!   append that fails is cut back at once). `open` cuts them off, logs a warning and reports
//!   their size in [`AuditLog::torn_tail`]; `verify` notes them at the end of the last file
//!   (a live log may be mid-write) and rejects them anywhere else.
//! - `append` builds the whole line, writes it with one write(2), and on any failure (an
//!   error or a short write) truncates the file back to its length before the write; the error
//!   is returned, kept for `health()`, and the next append simply tries again. A failed
//!   append uses no sequence number.
//! - `reopen` opens whatever file is at the path now (creating it if missing); the chain
//!   continues into it: its first line has the `seq` and `prev` that follow the last line
//!   written to the old file. A file already at the path that holds lines must end with this
//!   log's last line, or `reopen` fails and the log keeps writing to the old file.

mod event;
mod key;
mod line;
mod verify;
mod writer;

#[cfg(test)]
mod tests;

pub use event::{exe_of, with_known_exe, Caller, Event, Verdict};
pub use key::AuditKey;
pub use line::MAX_LINE;
pub use verify::{verify, Report, VerifyError};
pub use writer::{AuditLog, SYNC_EVERY};

use std::path::{Path, PathBuf};

/// The log's file name in the data directory.
pub const AUDIT_FILE: &str = "audit.log";

/// `DATA_DIR/audit.log`.
pub fn default_path(data_dir: &Path) -> PathBuf {
    data_dir.join(AUDIT_FILE)
}

/// Why the log could not be opened or written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A symlink, a device, a file others can write: never written to.
    #[error("audit log {}: {reason}", path.display())]
    Unsafe { path: PathBuf, reason: String },
    /// The line to continue from does not verify, or a new file does not continue the chain.
    #[error("audit log {}: {reason}", path.display())]
    Chain { path: PathBuf, reason: String },
}

impl AuditError {
    /// The OS error behind an I/O failure (ENOSPC, EIO, ...), if that is what it was.
    pub fn os_error(&self) -> Option<i32> {
        match self {
            AuditError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    fn io(path: &Path, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AuditError {
        let path = path.to_path_buf();
        let what = what.into();
        move |source| AuditError::Io { path, what, source }
    }
}
