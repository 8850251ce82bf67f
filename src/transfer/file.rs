//! Writing the container: a new file only, private from its first byte, and on disk before
//! the command says it is done.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::TransferError;

const MODE: u32 = 0o600;

/// Creates `path` (never replacing anything), writes `bytes` and fsyncs the file and its
/// directory. On failure the partial file is removed.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<(), TransferError> {
    let io = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |source| TransferError::Io { what, source }
    };
    let mut f = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(MODE)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(TransferError::OutputExists(path.to_path_buf()))
        }
        Err(e) => return Err(io("cannot create")(e)),
    };
    // The umask only narrows the mode at creation; set it exactly, whatever the umask.
    let written = f
        .set_permissions(std::fs::Permissions::from_mode(MODE))
        .and_then(|_| f.write_all(bytes))
        .and_then(|_| f.sync_all());
    if let Err(e) = written {
        drop(f);
        let _ = std::fs::remove_file(path);
        return Err(io("cannot write")(e));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("cannot sync the directory of"))
}
