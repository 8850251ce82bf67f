//! What `kmsfs mount` checks before it creates or mounts anything, so that a mount that cannot
//! work, or would do harm, is refused in one line that says what to do:
//!
//! - the mount point and the data directory must not overlap (the daemon would reach its own
//!   files through its own mount: the first freeze deadlocks it);
//! - the mount point must not be a dead FUSE mount (a crashed daemon's), nor a live mount
//!   (mounting on top would hide it), and must be an empty directory, or not exist yet;
//! - a non-root user needs the `fusermount3` helper and access to `/dev/fuse`.
//!
//! The parsing of `/proc/self/mountinfo` and the comparison of paths are pure functions with
//! unit tests; the rest reads the system.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

use super::CliError;

/// One line of `/proc/self/mountinfo`: the fields these checks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted (unescaped).
    pub mount_point: PathBuf,
    /// `fuse.kmsfs`, `ext4`, `tmpfs`...
    pub fstype: String,
    /// The mount source (`kmsfs` for a kmsfs mount, a device, ...).
    pub source: String,
}

impl MountEntry {
    /// kmsfs mounts with fsname and subtype `kmsfs`: `fuse kmsfs` when it mounts by itself
    /// (root), `fuse.kmsfs kmsfs` through fusermount3.
    fn is_kmsfs(&self) -> bool {
        self.fstype == "fuse.kmsfs" || (self.is_fuse() && self.source == "kmsfs")
    }

    fn is_fuse(&self) -> bool {
        self.fstype == "fuse" || self.fstype.starts_with("fuse.") || self.fstype == "fuseblk"
    }
}

/// Parses one line of `/proc/self/mountinfo` (see proc(5)):
/// `ID PARENT MAJ:MIN ROOT MOUNT-POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER-OPTIONS`.
/// Paths have space, tab, newline and backslash escaped as `\ooo`. None if malformed.
pub fn parse_mountinfo_line(line: &[u8]) -> Option<MountEntry> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    if fields.len() < 6 {
        return None;
    }
    let sep = fields.iter().skip(6).position(|f| *f == b"-")? + 6;
    let fstype = fields.get(sep + 1)?;
    let source = fields.get(sep + 2)?;
    Some(MountEntry {
        mount_point: PathBuf::from(OsString::from_vec(unescape(fields[4]))),
        fstype: String::from_utf8_lossy(&unescape(fstype)).into_owned(),
        source: String::from_utf8_lossy(&unescape(source)).into_owned(),
    })
}

/// Undoes the kernel's `\ooo` (octal) escapes.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field.get(i + 1..i + 4).filter(|d| {
            field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) && d[0] <= b'3'
        });
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

/// The topmost mount at `path` (canonical) in this mount table: the last one listed.
pub fn mount_at(table: &[u8], path: &Path) -> Option<MountEntry> {
    table
        .split(|&b| b == b'\n')
        .rev()
        .filter_map(parse_mountinfo_line)
        .find(|m| m.mount_point == path)
}

/// The topmost mount that `path` (canonical) is on: at `path` itself or its nearest ancestor.
pub fn mount_under(table: &[u8], path: &Path) -> Option<MountEntry> {
    path.ancestors().find_map(|p| mount_at(table, p))
}

/// `path` made absolute and free of symlinks as far as it exists; the components that do not
/// exist yet (which `kmsfs mount` or `--init` would create as plain directories) are appended
/// to the nearest existing ancestor, `.` and `..` taken lexically.
pub fn resolve(path: &Path) -> io::Result<PathBuf> {
    let abs = std::path::absolute(path)?;
    let comps: Vec<Component<'_>> = abs.components().collect();
    for i in (1..=comps.len()).rev() {
        let prefix: PathBuf = comps[..i].iter().collect();
        if let Ok(mut p) = prefix.canonicalize() {
            for c in &comps[i..] {
                match c {
                    Component::Normal(n) => p.push(n),
                    Component::ParentDir => {
                        p.pop();
                    }
                    _ => {}
                }
            }
            return Ok(p);
        }
    }
    Ok(abs)
}

/// How the mount point and the data directory (both resolved) overlap, if they do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    Same,
    MountPointInDataDir,
    DataDirInMountPoint,
}

pub fn overlap(data_dir: &Path, mountpoint: &Path) -> Option<Overlap> {
    if data_dir == mountpoint {
        Some(Overlap::Same)
    } else if mountpoint.starts_with(data_dir) {
        Some(Overlap::MountPointInDataDir)
    } else if data_dir.starts_with(mountpoint) {
        Some(Overlap::DataDirInMountPoint)
    } else {
        None
    }
}

/// Refuses a mount point that is, or is inside, the data directory, or holds it.
pub fn check_apart(data_dir: &Path, mountpoint: &Path) -> Result<(), CliError> {
    let (d, m) = (data_dir.display(), mountpoint.display());
    let resolved =
        |p: &Path| resolve(p).map_err(|e| CliError(format!("cannot resolve {}: {e}", p.display())));
    let why = "the daemon would reach its own files through its own mount and hang";
    match overlap(&resolved(data_dir)?, &resolved(mountpoint)?) {
        None => Ok(()),
        Some(Overlap::Same) => Err(CliError(format!(
            "the mount point {m} is the data directory {d}: {why}; mount it elsewhere (e.g. /mnt/kms)"
        ))),
        Some(Overlap::MountPointInDataDir) => Err(CliError(format!(
            "the mount point {m} is inside the data directory {d}: {why}; mount it elsewhere (e.g. /mnt/kms)"
        ))),
        Some(Overlap::DataDirInMountPoint) => Err(CliError(format!(
            "the data directory {d} is inside the mount point {m}: {why}; mount it elsewhere (e.g. /mnt/kms)"
        ))),
    }
}

/// The data directory must exist unless `--init` creates it, and be private (the check the
/// store makes again when it opens it; made first here, as the most basic refusal).
pub fn check_data_dir(data_dir: &Path, init: bool) -> Result<(), CliError> {
    let d = data_dir.display();
    match std::fs::metadata(data_dir) {
        Ok(meta) if meta.is_dir() => Ok(crate::store::check_directory(data_dir)?),
        Ok(_) => Err(CliError(format!("data directory {d} is not a directory"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound && init => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(CliError(format!(
            "data directory {d} does not exist; create a keystore with `kmsfs init --data-dir {d}` or `kmsfs mount --init`"
        ))),
        Err(e) => Err(CliError(format!("cannot use data directory {d}: {e}"))),
    }
}

/// `m` is, or is below, a FUSE mount whose daemon is gone; `entry` is that mount if
/// mountinfo lists it (the advice then names its mount point).
fn dead_mount(m: &Path, entry: Option<&MountEntry>) -> CliError {
    let what = match entry {
        Some(e) if e.is_kmsfs() => "a dead kmsfs mount (the daemon died)".to_string(),
        Some(e) => format!("a dead FUSE mount ({}: its daemon died)", e.fstype),
        None => "a dead FUSE mount (its daemon died)".to_string(),
    };
    match entry {
        Some(e) if resolve(m).is_ok_and(|r| r != e.mount_point) => {
            let at = e.mount_point.display();
            CliError(format!(
                "{} is below {at}, {what}: run `umount {at}` (or `umount -l {at}`) first",
                m.display()
            ))
        }
        _ => {
            let m = m.display();
            CliError(format!(
                "{m} is {what}: run `umount {m}` (or `umount -l {m}`) first"
            ))
        }
    }
}

fn is_disconnected(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)
    )
}

/// What a live kmsfs mount at `m` serves (its `.status`), if it can be read.
fn served_by(m: &Path) -> Option<String> {
    let text = std::fs::read_to_string(m.join(".status")).ok()?;
    let status: serde_json::Value = serde_json::from_str(&text).ok()?;
    status["data_dir"].as_str().map(str::to_string)
}

/// `m` is a live mount point, `e` the topmost mount there.
fn already_mounted(m: &Path, e: &MountEntry) -> CliError {
    let what = if e.is_kmsfs() {
        match served_by(m) {
            Some(dir) => format!("kmsfs serving {dir}"),
            None => "kmsfs".to_string(),
        }
    } else if e.source == e.fstype {
        e.fstype.clone()
    } else {
        format!("{} from {}", e.fstype, e.source)
    };
    CliError(format!(
        "{} is already a mount point ({what}): mounting on it would hide it; unmount it first or choose another mount point",
        m.display()
    ))
}

/// The mount point must be an empty directory that is not a mount point, or not exist yet.
pub fn check_mount_point(mountpoint: &Path) -> Result<(), CliError> {
    let m = mountpoint.display();
    let table = std::fs::read("/proc/self/mountinfo").unwrap_or_default();
    let resolved = resolve(mountpoint).ok();
    let entry = resolved.as_ref().and_then(|p| mount_at(&table, p));
    let meta = match (std::fs::metadata(mountpoint), &entry) {
        (Ok(meta), _) => meta,
        (Err(e), _) if is_disconnected(&e) => {
            let under = resolved.as_ref().and_then(|p| mount_under(&table, p));
            return Err(dead_mount(
                mountpoint,
                under.filter(MountEntry::is_fuse).as_ref(),
            ));
        }
        // Alive but closed to us (another user's FUSE mount answers EACCES, even to root).
        (Err(e), Some(live)) => {
            log::debug!("stat {m}: {e}");
            return Err(already_mounted(mountpoint, live));
        }
        (Err(e), None) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        (Err(e), None) => return Err(CliError(format!("cannot use {m} as a mount point: {e}"))),
    };
    if let Some(e) = &entry {
        // A stat may still be answered from the kernel's cache: a dead FUSE mount shows
        // itself at the first request that reaches the daemon.
        if e.is_fuse() {
            if let Err(err) = std::fs::read_dir(mountpoint) {
                if is_disconnected(&err) {
                    return Err(dead_mount(mountpoint, Some(e)));
                }
            }
        }
        return Err(already_mounted(mountpoint, e));
    }
    if !meta.is_dir() {
        return Err(CliError(format!(
            "{m} is not a directory: the mount point must be an empty directory"
        )));
    }
    let mut entries = std::fs::read_dir(mountpoint)
        .map_err(|e| CliError(format!("cannot list the mount point {m}: {e}")))?;
    if entries.next().is_some() {
        return Err(CliError(format!(
            "{m} is not empty: mounting on it would hide what it holds; use an empty directory"
        )));
    }
    Ok(())
}

/// The helper a non-root mount goes through, as fuser looks for it: `$FUSERMOUNT_PATH` if
/// set, else `fusermount3` or `fusermount` on `path` (a PATH value).
pub fn find_fusermount(path: Option<&OsStr>, fusermount_path: Option<&OsStr>) -> Option<PathBuf> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(p) = fusermount_path {
        let p = PathBuf::from(p);
        return executable(&p).then_some(p);
    }
    let dirs: Vec<PathBuf> = std::env::split_paths(path.unwrap_or_default()).collect();
    ["fusermount3", "fusermount"]
        .iter()
        .find_map(|name| dirs.iter().map(|d| d.join(name)).find(|p| executable(p)))
}

const FUSE_DEVICE: &str = "/dev/fuse";

/// Mounting can work: `/dev/fuse` exists and, for a non-root user, the `fusermount3` helper is
/// on PATH and `/dev/fuse` can be opened (fuser opens it as the user before it runs the
/// helper).
pub fn check_can_mount() -> Result<(), CliError> {
    if !Path::new(FUSE_DEVICE).exists() {
        return Err(CliError(format!(
            "{FUSE_DEVICE} does not exist: load the fuse module (`modprobe fuse`), or give the container the device"
        )));
    }
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return Ok(());
    }
    let path = std::env::var_os("PATH");
    let helper = std::env::var_os("FUSERMOUNT_PATH");
    if find_fusermount(path.as_deref(), helper.as_deref()).is_none() {
        let missing = match &helper {
            Some(h) => format!(
                "but FUSERMOUNT_PATH={} is not an executable",
                Path::new(h).display()
            ),
            None => "which is not on PATH".to_string(),
        };
        return Err(CliError(format!(
            "a mount by a non-root user (uid {uid}) needs the setuid helper fusermount3, {missing}: install Debian's `fuse3` package, or mount as root"
        )));
    }
    use nix::unistd::{access, AccessFlags};
    if let Err(e) = access(FUSE_DEVICE, AccessFlags::R_OK | AccessFlags::W_OK) {
        return Err(CliError(format!(
            "a mount by a non-root user (uid {uid}) must open {FUSE_DEVICE} for reading and writing ({}): it is normally mode 0666 (in a container, pass it in with that mode), or mount as root",
            e.desc()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    /// Escapes a path as the kernel does in mountinfo.
    fn escape(p: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &b in p {
            if matches!(b, b' ' | b'\t' | b'\n' | b'\\') {
                out.extend(format!("\\{b:03o}").bytes());
            } else {
                out.push(b);
            }
        }
        out
    }

    const KMSFS_LINE: &[u8] = b"712 29 0:71 / /mnt/kms rw,nosuid,nodev,noexec,relatime shared:391 - fuse.kmsfs kmsfs rw,user_id=0,group_id=0,default_permissions";

    #[test]
    fn parses_a_kmsfs_line() {
        let e = parse_mountinfo_line(KMSFS_LINE).unwrap();
        assert_eq!(e.mount_point, Path::new("/mnt/kms"));
        assert_eq!(e.fstype, "fuse.kmsfs");
        assert_eq!(e.source, "kmsfs");
        assert!(e.is_kmsfs() && e.is_fuse());
        // Mounted by root without fusermount3: the type is plain `fuse`.
        let direct =
            b"45 27 0:40 / /mnt/kms rw,nosuid,nodev,noexec,relatime - fuse kmsfs rw,user_id=0";
        let e = parse_mountinfo_line(direct).unwrap();
        assert_eq!((&*e.fstype, &*e.source), ("fuse", "kmsfs"));
        assert!(e.is_kmsfs());
        let sshfs = b"46 27 0:41 / /mnt/s rw - fuse.sshfs me@host:/ rw";
        assert!(!parse_mountinfo_line(sshfs).unwrap().is_kmsfs());
    }

    #[test]
    fn parses_lines_with_no_or_several_optional_fields() {
        let none = b"36 35 98:0 /mnt1 /mnt2 rw,noatime - ext3 /dev/root rw,errors=continue";
        let e = parse_mountinfo_line(none).unwrap();
        assert_eq!(
            (e.mount_point.as_path(), &*e.fstype),
            (Path::new("/mnt2"), "ext3")
        );
        let several = b"36 35 98:0 / /srv rw master:1 shared:2 propagate_from:3 - tmpfs tmpfs rw";
        let e = parse_mountinfo_line(several).unwrap();
        assert_eq!(
            (e.mount_point.as_path(), &*e.fstype),
            (Path::new("/srv"), "tmpfs")
        );
        assert!(!e.is_fuse());
    }

    #[test]
    fn unescapes_the_mount_point() {
        let line = b"40 29 0:50 / /mnt/my\\040keys\\011x\\134y rw - fuse.kmsfs kmsfs rw";
        let e = parse_mountinfo_line(line).unwrap();
        assert_eq!(e.mount_point, Path::new("/mnt/my keys\tx\\y"));
        // A round trip through the kernel's escaping, newline included.
        let name: &[u8] = b"/tmp/a b\nc\\d\te";
        let mut line = b"1 2 0:1 / ".to_vec();
        line.extend(escape(name));
        line.extend(b" rw - fuse.kmsfs kmsfs rw");
        let e = parse_mountinfo_line(&line).unwrap();
        assert_eq!(e.mount_point.as_os_str().as_bytes(), name);
        // A backslash not followed by three octal digits is kept.
        assert_eq!(unescape(b"a\\9bc\\04"), b"a\\9bc\\04");
    }

    #[test]
    fn refuses_malformed_lines() {
        assert_eq!(parse_mountinfo_line(b""), None);
        assert_eq!(parse_mountinfo_line(b"36 35 98:0 / /mnt rw"), None);
        assert_eq!(
            parse_mountinfo_line(b"36 35 98:0 / /mnt rw shared:1 ext4"),
            None
        );
        assert_eq!(parse_mountinfo_line(b"36 35 98:0 / /mnt rw -"), None);
    }

    #[test]
    fn the_topmost_mount_is_the_last_listed() {
        let table = [
            &b"22 1 8:1 / / rw - ext4 /dev/sda1 rw"[..],
            b"30 22 0:40 / /mnt/kms rw - tmpfs tmpfs rw",
            b"31 30 0:41 / /mnt/kms rw - fuse.kmsfs kmsfs rw",
            b"32 22 0:42 / /mnt/kms2 rw - fuse.kmsfs kmsfs rw",
            b"",
        ]
        .join(&b'\n');
        assert_eq!(
            mount_at(&table, Path::new("/mnt/kms")).unwrap().fstype,
            "fuse.kmsfs"
        );
        assert_eq!(
            mount_at(&table, Path::new("/mnt/kms2")).unwrap().fstype,
            "fuse.kmsfs"
        );
        assert_eq!(mount_at(&table, Path::new("/mnt")), None);
        assert_eq!(
            mount_at(&table, Path::new("/")).unwrap().source,
            "/dev/sda1"
        );
    }

    #[test]
    fn overlap_compares_whole_components() {
        let p = Path::new;
        assert_eq!(
            overlap(p("/var/lib/kms"), p("/var/lib/kms")),
            Some(Overlap::Same)
        );
        assert_eq!(
            overlap(p("/var/lib/kms"), p("/var/lib/kms/mnt")),
            Some(Overlap::MountPointInDataDir)
        );
        assert_eq!(
            overlap(p("/srv/kms/data"), p("/srv")),
            Some(Overlap::DataDirInMountPoint)
        );
        assert_eq!(overlap(p("/var/lib/kms"), p("/var/lib/kms2")), None);
        assert_eq!(overlap(p("/var/lib/kms2"), p("/var/lib/kms")), None);
        assert_eq!(overlap(p("/var/lib/kms"), p("/mnt/kms")), None);
    }

    #[test]
    fn resolve_follows_what_exists_and_appends_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("data")).unwrap();
        std::os::unix::fs::symlink(root.join("data"), root.join("link")).unwrap();
        assert_eq!(resolve(&root.join("link")).unwrap(), root.join("data"));
        assert_eq!(
            resolve(&root.join("link/mnt/deeper")).unwrap(),
            root.join("data/mnt/deeper")
        );
        assert_eq!(
            resolve(&root.join("missing/../data/./mnt")).unwrap(),
            root.join("data/mnt")
        );
        assert_eq!(resolve(&root.join("a/b/..")).unwrap(), root.join("a"));
        // Relative paths are taken from the working directory.
        let cwd = std::env::current_dir().unwrap().canonicalize().unwrap();
        assert_eq!(
            resolve(Path::new("no-such-dir-here")).unwrap(),
            cwd.join("no-such-dir-here")
        );
    }

    #[test]
    fn check_apart_names_the_overlap() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let err = |m: &Path| check_apart(&data, m).unwrap_err().0;
        assert!(err(&data).contains("is the data directory"));
        assert!(err(&data.join("x/y")).contains("is inside the data directory"));
        assert!(err(tmp.path()).contains("is inside the mount point"));
        assert!(check_apart(&data, &tmp.path().join("data2")).is_ok());
        assert!(check_apart(&data, &tmp.path().join("mnt")).is_ok());
    }

    #[test]
    fn fusermount_is_looked_for_as_fuser_does() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let path = std::env::join_paths([&a, &b]).unwrap();
        assert_eq!(find_fusermount(Some(&path), None), None);
        assert_eq!(find_fusermount(None, None), None);
        // Not executable: not a helper.
        let f3 = b.join("fusermount3");
        std::fs::write(&f3, "#!/bin/sh\n").unwrap();
        assert_eq!(find_fusermount(Some(&path), None), None);
        std::fs::set_permissions(&f3, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_fusermount(Some(&path), None), Some(f3.clone()));
        // fusermount3 first, wherever it is on PATH; fusermount (FUSE 2) otherwise.
        let f2 = a.join("fusermount");
        std::fs::write(&f2, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&f2, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_fusermount(Some(&path), None), Some(f3.clone()));
        std::fs::remove_file(&f3).unwrap();
        assert_eq!(find_fusermount(Some(&path), None), Some(f2.clone()));
        // FUSERMOUNT_PATH overrides PATH.
        assert_eq!(
            find_fusermount(Some(&path), Some(f2.as_os_str())),
            Some(f2.clone())
        );
        assert_eq!(
            find_fusermount(Some(&path), Some(OsStr::new("/no/such/fusermount3"))),
            None
        );
    }
}
