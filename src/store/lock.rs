//! One daemon per data directory: an advisory lock held for the life of the process.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

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
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(StoreError::io(format!("cannot open {}", path.display())))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(StoreError::Locked {
                    dir: dir.to_path_buf(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err((_, errno)) => {
                return Err(StoreError::io(format!("cannot lock {}", path.display()))(
                    errno.into(),
                ))
            }
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
