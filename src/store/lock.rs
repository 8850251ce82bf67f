//! One daemon per data directory: an advisory lock held for the life of the process.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::dir::DataDir;
use super::StoreError;

pub const LOCK_FILE: &str = "kmsfs.lock";

/// Held while a process writes the keystore. A copied or restored lock file is harmless: the
/// lock lives in the kernel (flock), not in the file's contents.
#[derive(Debug)]
pub struct DirLock {
    _lock: Flock<File>,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        let d =
            DataDir::open(dir).map_err(StoreError::io(format!("cannot open {}", dir.display())))?;
        DirLock::acquire_in(&d)
    }

    /// Opens (or creates, mode 0600) the lock file through the directory's descriptor: a link
    /// planted as `kmsfs.lock` is refused, never followed, so the truncate and the pid written
    /// below can only ever reach a regular file in the directory.
    pub(super) fn acquire_in(dir: &DataDir) -> Result<DirLock, StoreError> {
        let file = dir.open_or_create(LOCK_FILE, 0o600)?;
        let what = || format!("cannot lock {}", dir.path().join(LOCK_FILE).display());
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = (&mut file).take(64).read_to_string(&mut text);
                return Err(StoreError::Locked {
                    dir: dir.path().to_path_buf(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err((_, errno)) => return Err(StoreError::io(what())(errno.into())),
        };
        let _ = lock.set_len(0);
        let _ = lock.rewind();
        let _ = writeln!(lock, "{}", std::process::id());
        Ok(DirLock { _lock: lock })
    }

    /// Whether some process holds the lock now (for commands that must not run beside a mount).
    pub fn is_held(dir: &Path) -> Result<bool, StoreError> {
        match DirLock::acquire(dir) {
            Ok(_) => Ok(false),
            Err(StoreError::Locked { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join(LOCK_FILE)
    }
}
