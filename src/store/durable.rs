//! Small helpers that make writes durable: nothing is acknowledged before it is on disk.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Replaces (or creates) `dir/name` with `bytes` so that a crash leaves either the old file or
/// the new one, never a mixture: write a temporary file, fsync it, rename it over, fsync the
/// directory so the rename itself survives.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let (_file, renamed) = replace_file(dir, name, bytes, mode)?;
    renamed
}

/// Like `write_atomically`, but hands back the new file, open for reading and writing, as soon
/// as it has replaced the old one, so the caller never writes to a file that is no longer
/// there. The second result is the directory's fsync: on its failure the new file is in place
/// but its name may not survive a crash.
pub fn replace_file(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
) -> std::io::Result<(File, std::io::Result<()>)> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    let written = f
        .write_all(bytes)
        .and_then(|_| f.sync_all())
        .and_then(|_| fs::rename(&tmp, dir.join(name)));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok((f, sync_dir(dir)))
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Sets a file's mode and makes the change durable (a frozen backup set must stay read-only
/// even if the machine crashes right after the freeze).
pub fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    File::open(path)?.sync_all()
}
