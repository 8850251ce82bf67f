use std::path::{Path, PathBuf};

/// Why the backing files could not be read or written. Every variant names the file at fault,
/// so that `kmsfs verify` can print one line an administrator can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{file}: {reason}")]
    Corrupt { file: &'static str, reason: String },
    #[error("{file} does not belong to this keystore: {reason}")]
    KeyMismatch { file: &'static str, reason: String },
    #[error("{file} is missing from {dir}: restore it from a backup, or run `kmsfs regenerate` if it was derived from a passphrase")]
    MissingKeyFile { file: &'static str, dir: PathBuf },
    #[error("no keystore in {0} (KMS_DATA is missing): run `kmsfs init --data-dir {0}` first")]
    NoKeystore(PathBuf),
    #[error("{dir} already holds a keystore file ({file}); refusing to overwrite it")]
    AlreadyExists { dir: PathBuf, file: &'static str },
    #[error("{}", unsafe_directory(dir, *mode))]
    UnsafeDirectory { dir: PathBuf, mode: u32 },
    #[error("{dir} is in use by another kmsfs process{}", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked { dir: PathBuf, pid: Option<u32> },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// `chmod go-w` is the fix for a directory of one's own, never for a shared one (sticky like
/// /tmp, or a setgid group directory): that would break it for everyone else.
fn unsafe_directory(dir: &Path, mode: u32) -> String {
    let d = dir.display();
    let shared = if mode & 0o1000 != 0 {
        Some("sticky, like /tmp")
    } else if mode & 0o2020 == 0o2020 {
        Some("a setgid group directory")
    } else {
        None
    };
    match shared {
        Some(what) => format!(
            "{d} is writable by group or others (mode {mode:04o}) and shared ({what}): keep the keystore in a private directory instead, e.g. `mkdir -m 700 /var/lib/kmsfs`"
        ),
        None => format!(
            "{d} is writable by group or others (mode {mode:04o}); run `chmod go-w {d}` first"
        ),
    }
}

impl StoreError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
        let what = what.into();
        move |source| StoreError::Io { what, source }
    }
}
