//! Small helpers that make writes durable: nothing is acknowledged before it is on disk. Every
//! name is reached through the data directory's descriptor (see `dir`), never followed.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use super::dir::DataDir;

/// Replaces (or creates) `name` in `dir` with `bytes` so that a crash leaves either the old
/// file or the new one, never a mixture: write a temporary file, fsync it, rename it over,
/// fsync the directory so the rename itself survives.
pub fn write_atomically(dir: &DataDir, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let (_file, renamed) = replace_file(dir, name, bytes, mode)?;
    renamed
}

/// Like `write_atomically`, but hands back the new file, open for reading and writing, as soon
/// as it has replaced the old one, so the caller never writes to a file that is no longer
/// there. The second result is the directory's fsync: on its failure the new file is in place
/// but its name may not survive a crash.
pub fn replace_file(
    dir: &DataDir,
    name: &str,
    bytes: &[u8],
    mode: u32,
) -> std::io::Result<(File, std::io::Result<()>)> {
    let tmp = temp_name(name);
    // The remains of an interrupted write (or anything planted there: a link is removed, not
    // followed; the create below refuses whatever is still in the way).
    let _ = dir.remove(&tmp);
    let mut f = dir.create_new(&tmp, mode)?;
    let written = f
        .write_all(bytes)
        .and_then(|_| f.sync_all())
        .and_then(|_| dir.rename(&tmp, name));
    if let Err(e) = written {
        let _ = dir.remove(&tmp);
        return Err(e);
    }
    Ok((f, dir.sync()))
}

/// The temporary name under which `name` is written before it is renamed into place.
pub fn temp_name(name: &str) -> String {
    format!(".{name}.tmp")
}

/// Writes `bytes` to `name`'s temporary name (see `temp_name`) and fsyncs it, for the caller
/// to rename into place once everything it writes is durable. On failure nothing is left.
pub fn write_temp(dir: &DataDir, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<String> {
    let tmp = temp_name(name);
    let _ = dir.remove(&tmp);
    let mut f = dir.create_new(&tmp, mode)?;
    if let Err(e) = f.write_all(bytes).and_then(|_| f.sync_all()) {
        drop(f);
        let _ = dir.remove(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// Sets an open file's mode and makes the change durable (a frozen backup set must stay
/// read-only even if the machine crashes right after the freeze).
pub fn set_mode(file: &File, mode: u32) -> std::io::Result<()> {
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.sync_all()
}
