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
    /// The data directory (`file` None) or a backing file in it belongs to another user, who
    /// could replace or change what the daemon trusts.
    #[error("{}", not_owned(dir, file.as_deref(), *owner, *euid))]
    NotOwned {
        dir: PathBuf,
        file: Option<String>,
        owner: u32,
        euid: u32,
    },
    #[error("{file} is a symbolic link: kmsfs never follows links in its data directory ({}); {}", dir.display(), symlink_advice(file))]
    Symlink { dir: PathBuf, file: String },
    /// A FIFO (which would block a reader), a device, a directory, a socket.
    #[error("{file} is {kind}, not a regular file: kmsfs reads only regular files in its data directory ({})", dir.display())]
    NotRegular {
        dir: PathBuf,
        file: String,
        kind: &'static str,
    },
    /// The key is derived from a passphrase and has no key file: the passphrase must be given.
    #[error("{file} is absent and the {key} is derived from a passphrase: give the passphrase (--{} FILE, an inherited descriptor /dev/fd/N, or at the terminal prompt), or rebuild {file} with `kmsfs regenerate`", passphrase_option(key))]
    NeedPassphrase {
        key: &'static str,
        file: &'static str,
    },
    #[error("wrong {key} passphrase: it gives the key id {got}, KMS_DATA expects {want}; nothing was changed")]
    WrongPassphrase {
        key: &'static str,
        got: crate::crypto::KeyId,
        want: crate::crypto::KeyId,
    },
    /// A master key change that cannot be made as asked (nothing was changed).
    #[error("cannot change the key: {0}")]
    KeyChangeRefused(String),
    /// A sealed key file whose TPM or token did not give the key back.
    #[error("{file}: {reason}")]
    Unseal { file: &'static str, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn passphrase_option(key: &str) -> &'static str {
    if key == "KPK" {
        "kpk-passphrase-file"
    } else {
        "hmk-passphrase-file"
    }
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

/// A backing file belongs in the directory itself; the lock file is kmsfs's own to create.
fn symlink_advice(file: &str) -> &'static str {
    if file == super::LOCK_FILE {
        "remove the link: kmsfs creates its lock file itself"
    } else {
        "put the file itself in its place"
    }
}

/// `uid 65534 (nobody)`, or the bare number if the user database does not know it.
fn user(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("uid {uid} ({})", u.name),
        _ => format!("uid {uid}"),
    }
}

/// Whoever owns the directory can swap the files in it (or plant links there) whatever its
/// mode; whoever owns a file can change it. The advice names a check before the `chown`: the
/// other user may have left something behind.
fn not_owned(dir: &Path, file: Option<&str>, owner: u32, euid: u32) -> String {
    let (d, who, me) = (dir.display(), user(owner), user(euid));
    let me_name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(euid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| euid.to_string());
    match file {
        None => format!(
            "{d} is owned by {who}, not by {me}, who runs kmsfs: its owner could replace the keystore's files; run `chown {me_name} {d}` once you trust what is in it, or keep the keystore elsewhere"
        ),
        Some(f) => format!(
            "{f} in {d} is owned by {who}, not by {me}, who runs kmsfs: its owner could change it; `chown {me_name} {d}/{f}` once `kmsfs verify --data-dir {d}` trusts it"
        ),
    }
}

impl StoreError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
        let what = what.into();
        move |source| StoreError::Io { what, source }
    }
}
