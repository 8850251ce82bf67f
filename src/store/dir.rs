//! The data directory, opened safely: one `O_DIRECTORY` descriptor, and every file in it
//! reached through that descriptor (`openat`, `renameat`, `unlinkat`, `fstatat`), never by a
//! path that could be re-resolved in between. No call here follows a symbolic link in the
//! directory: a planted `kmsfs.lock -> /etc/shadow` or `KMS_DATA -> elsewhere` is refused by
//! name, never truncated, read or chmod'd. Only regular files are opened: the type is checked
//! before the open (opening a device can act on it) and again on the opened descriptor, and
//! the open itself is non-blocking, so a FIFO swapped in between cannot hang it either.
//!
//! The directory's own path may be a symbolic link (`/var/lib/kmsfs -> /srv/kms` is the
//! administrator's choice); what is inside it is not trusted that far.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{fcntl, openat, renameat, AtFlags, FcntlArg, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, FileStat, Mode, SFlag};
use nix::unistd::{fsync, geteuid, unlinkat, UnlinkatFlags};

use super::StoreError;

/// How an existing file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    Read,
    ReadWrite,
}

/// An open data directory. Names given to its methods are single path components.
#[derive(Debug)]
pub struct DataDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// Flags on every open of a file in the directory.
fn always() -> OFlag {
    OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY
}

/// What a file that is not a regular file is, in words.
fn kind(st: &FileStat) -> Option<&'static str> {
    let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    match fmt {
        SFlag::S_IFREG => None,
        SFlag::S_IFDIR => Some("a directory"),
        SFlag::S_IFIFO => Some("a FIFO (named pipe)"),
        SFlag::S_IFCHR => Some("a character device"),
        SFlag::S_IFBLK => Some("a block device"),
        SFlag::S_IFSOCK => Some("a socket"),
        SFlag::S_IFLNK => Some("a symbolic link"),
        _ => Some("not a regular file"),
    }
}

fn is_symlink(st: &FileStat) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFLNK.bits()
}

/// A single component: no `/`, not empty, not `.` or `..` (the directory is the boundary).
fn component(name: &str) -> io::Result<&str> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a file name in the data directory"),
        ));
    }
    Ok(name)
}

impl DataDir {
    /// Opens the directory (`O_RDONLY | O_DIRECTORY | O_CLOEXEC`).
    pub fn open(path: &Path) -> io::Result<DataDir> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::open(path, flags, Mode::empty())?;
        Ok(DataDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Refuses a directory the daemon must not trust with its files: one owned by another
    /// user (whatever its mode, the owner can replace its entries), or one that group or
    /// others can write.
    pub fn check_private(&self) -> Result<(), StoreError> {
        let st = fstat(&self.fd).map_err(|e| self.io_error("cannot stat", e))?;
        let euid = geteuid().as_raw();
        if st.st_uid != euid {
            return Err(StoreError::NotOwned {
                dir: self.path.clone(),
                file: None,
                owner: st.st_uid,
                euid,
            });
        }
        let mode = st.st_mode & 0o7777;
        if mode & 0o022 != 0 {
            return Err(StoreError::UnsafeDirectory {
                dir: self.path.clone(),
                mode,
            });
        }
        Ok(())
    }

    /// Refuses a file (opened from this directory) that another user owns.
    pub fn check_owned(&self, name: &str, file: &File) -> Result<(), StoreError> {
        let meta = file
            .metadata()
            .map_err(StoreError::io(format!("cannot stat {name}")))?;
        let euid = geteuid().as_raw();
        if meta.uid() != euid {
            return Err(StoreError::NotOwned {
                dir: self.path.clone(),
                file: Some(name.to_string()),
                owner: meta.uid(),
                euid,
            });
        }
        Ok(())
    }

    /// What `name` is, the link itself if it is a symbolic link; None if there is nothing.
    pub fn metadata(&self, name: &str) -> io::Result<Option<FileStat>> {
        match fstatat(&self.fd, component(name)?, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens the regular file `name`; None if there is nothing by that name. A symbolic link,
    /// a FIFO, a device, a directory or a socket is refused, naming the file.
    pub fn open_file(&self, name: &str, how: How) -> Result<Option<File>, StoreError> {
        let access = match how {
            How::Read => OFlag::O_RDONLY,
            How::ReadWrite => OFlag::O_RDWR,
        };
        self.open_regular(name, access, Mode::empty())
    }

    /// Opens the regular file `name` for reading and writing, creating it with `mode` if it
    /// is missing (the lock file); refuses what `open_file` refuses.
    pub fn open_or_create(&self, name: &str, mode: u32) -> Result<File, StoreError> {
        let file = self.open_regular(
            name,
            OFlag::O_RDWR | OFlag::O_CREAT,
            Mode::from_bits_truncate(mode),
        )?;
        Ok(file.expect("O_CREAT makes the file"))
    }

    fn open_regular(
        &self,
        name: &str,
        access: OFlag,
        mode: Mode,
    ) -> Result<Option<File>, StoreError> {
        let cannot = |e: io::Error| StoreError::io(format!("cannot open {name}"))(e);
        // A first look: never open what is not a regular file (opening a device can act on
        // it; opening a FIFO can block).
        match self.metadata(name).map_err(cannot)? {
            Some(st) => self.refuse_unless_regular(name, &st)?,
            None if !access.contains(OFlag::O_CREAT) => return Ok(None),
            None => {}
        }
        // O_NONBLOCK: should a FIFO replace the file after that look, the open cannot block.
        let flags = access | always() | OFlag::O_NONBLOCK;
        let fd = match openat(&self.fd, name, flags, mode) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if !access.contains(OFlag::O_CREAT) => return Ok(None),
            Err(Errno::ELOOP) => return Err(self.symlink(name)),
            Err(e) => return Err(cannot(e.into())),
        };
        // And on what was opened, whatever the name points to by now.
        let st = fstat(&fd).map_err(|e| cannot(e.into()))?;
        self.refuse_unless_regular(name, &st)?;
        let flags = fcntl(&fd, FcntlArg::F_GETFL).map_err(|e| cannot(e.into()))?;
        let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
        fcntl(&fd, FcntlArg::F_SETFL(flags)).map_err(|e| cannot(e.into()))?;
        Ok(Some(File::from(fd)))
    }

    fn refuse_unless_regular(&self, name: &str, st: &FileStat) -> Result<(), StoreError> {
        if is_symlink(st) {
            return Err(self.symlink(name));
        }
        match kind(st) {
            None => Ok(()),
            Some(kind) => Err(StoreError::NotRegular {
                dir: self.path.clone(),
                file: name.to_string(),
                kind,
            }),
        }
    }

    fn symlink(&self, name: &str) -> StoreError {
        StoreError::Symlink {
            dir: self.path.clone(),
            file: name.to_string(),
        }
    }

    fn io_error(&self, what: &str, e: Errno) -> StoreError {
        StoreError::io(format!("{what} {}", self.path.display()))(e.into())
    }

    /// Creates `name`, which must not exist (not even as a dangling link), for reading and
    /// writing with `mode` (less the umask).
    pub fn create_new(&self, name: &str, mode: u32) -> io::Result<File> {
        let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | always();
        let fd = openat(
            &self.fd,
            component(name)?,
            flags,
            Mode::from_bits_truncate(mode),
        )?;
        Ok(File::from(fd))
    }

    /// Renames `from` to `to` within the directory; a link at `to` is replaced, not followed.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        renameat(&self.fd, component(from)?, &self.fd, component(to)?)?;
        Ok(())
    }

    /// Removes the entry `name` (a link itself, never its target).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        unlinkat(&self.fd, component(name)?, UnlinkatFlags::NoRemoveDir)?;
        Ok(())
    }

    /// The names in the directory that start with `prefix`, sorted (read through the
    /// descriptor: `/proc/self/fd/N` is the directory opened, whatever its path names now).
    pub fn names_with_prefix(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        use std::os::fd::AsRawFd;
        let here = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
        let entries = std::fs::read_dir(&here).map_err(StoreError::io(format!(
            "cannot list {}",
            self.path.display()
        )))?;
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Makes the directory's entries durable (after a rename).
    pub fn sync(&self) -> io::Result<()> {
        fsync(&self.fd)?;
        Ok(())
    }

    /// Sets the directory's own mode (a directory `init` has just created).
    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        fchmod(&self.fd, Mode::from_bits_truncate(mode))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::time::{Duration, Instant};

    fn scratch() -> (tempfile::TempDir, DataDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(tmp.path()).unwrap();
        (tmp, dir)
    }

    fn message(e: StoreError) -> String {
        e.to_string()
    }

    #[test]
    fn opens_creates_renames_and_removes_regular_files_by_name() {
        let (tmp, dir) = scratch();
        assert!(dir.open_file("KMS_DATA", How::Read).unwrap().is_none());
        assert!(dir.metadata("KMS_DATA").unwrap().is_none());
        let mut f = dir.create_new(".KMS_DATA.tmp", 0o600).unwrap();
        f.write_all(b"bytes").unwrap();
        assert_eq!(
            dir.create_new(".KMS_DATA.tmp", 0o600).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        dir.rename(".KMS_DATA.tmp", "KMS_DATA").unwrap();
        dir.sync().unwrap();
        let mode = std::fs::metadata(tmp.path().join("KMS_DATA"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut text = String::new();
        let mut f = dir.open_file("KMS_DATA", How::ReadWrite).unwrap().unwrap();
        f.read_to_string(&mut text).unwrap();
        assert_eq!(text, "bytes");
        // Blocking again: O_NONBLOCK only guarded the open.
        let flags = OFlag::from_bits_truncate(fcntl(&f, FcntlArg::F_GETFL).unwrap());
        assert!(!flags.contains(OFlag::O_NONBLOCK));
        assert!(flags.contains(OFlag::O_RDWR));
        let cloexec = fcntl(&f, FcntlArg::F_GETFD).unwrap();
        assert_ne!(cloexec & libc::FD_CLOEXEC, 0, "O_CLOEXEC");
        dir.remove("KMS_DATA").unwrap();
        assert!(dir.metadata("KMS_DATA").unwrap().is_none());
        let lock = dir.open_or_create("kmsfs.lock", 0o600).unwrap();
        assert!(lock.metadata().unwrap().is_file());
    }

    #[test]
    fn names_are_single_components() {
        let (_tmp, dir) = scratch();
        for bad in ["", ".", "..", "../KMS_DATA", "sub/KMS_DATA", "/etc/passwd"] {
            assert_eq!(
                dir.create_new(bad, 0o600).unwrap_err().kind(),
                io::ErrorKind::InvalidInput,
                "{bad:?}"
            );
            assert!(dir.metadata(bad).is_err(), "{bad:?}");
            assert!(dir.open_file(bad, How::Read).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn symbolic_links_are_never_followed() {
        let (tmp, dir) = scratch();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("target");
        std::fs::write(&target, "root's own").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        symlink(&target, tmp.path().join("KMS_DATA")).unwrap();
        symlink(&target, tmp.path().join("kmsfs.lock")).unwrap();
        symlink(outside.path().join("none"), tmp.path().join(".tmp")).unwrap();

        let st = dir.metadata("KMS_DATA").unwrap().unwrap();
        assert!(is_symlink(&st), "metadata describes the link itself");
        for how in [How::Read, How::ReadWrite] {
            let msg = message(dir.open_file("KMS_DATA", how).unwrap_err());
            assert!(
                msg.starts_with(
                    "KMS_DATA is a symbolic link: kmsfs never follows links in its data directory"
                ),
                "{msg}"
            );
        }
        let msg = message(dir.open_or_create("kmsfs.lock", 0o600).unwrap_err());
        assert!(msg.starts_with("kmsfs.lock is a symbolic link"), "{msg}");
        // A dangling link is not created through either.
        assert_eq!(
            dir.create_new(".tmp", 0o600).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert!(!outside.path().join("none").exists());
        // Renaming over a link replaces the link; removing one removes the link.
        dir.create_new("new", 0o600).unwrap();
        dir.rename("new", "KMS_DATA").unwrap();
        dir.remove("kmsfs.lock").unwrap();
        assert!(std::fs::symlink_metadata(tmp.path().join("KMS_DATA"))
            .unwrap()
            .is_file());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "root's own");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn a_fifo_a_directory_or_a_device_is_refused_without_blocking() {
        let (tmp, dir) = scratch();
        nix::unistd::mkfifo(
            &tmp.path().join("KMS_HMKF"),
            Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        std::fs::create_dir(tmp.path().join("KMS_KPKF")).unwrap();
        let started = Instant::now();
        for how in [How::Read, How::ReadWrite] {
            let msg = message(dir.open_file("KMS_HMKF", how).unwrap_err());
            assert!(
                msg.starts_with("KMS_HMKF is a FIFO (named pipe), not a regular file"),
                "{msg}"
            );
            let msg = message(dir.open_file("KMS_KPKF", how).unwrap_err());
            assert!(
                msg.starts_with("KMS_KPKF is a directory, not a regular file"),
                "{msg}"
            );
        }
        let msg = message(dir.open_or_create("KMS_HMKF", 0o600).unwrap_err());
        assert!(msg.starts_with("KMS_HMKF is a FIFO"), "{msg}");
        assert!(started.elapsed() < Duration::from_secs(2));
        // A device node needs root to make (the suite runs as root, as CI does).
        if geteuid().is_root() {
            nix::sys::stat::mknod(
                &tmp.path().join("KMS_DATA"),
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o600),
                nix::sys::stat::makedev(1, 5),
            )
            .unwrap();
            let msg = message(dir.open_file("KMS_DATA", How::Read).unwrap_err());
            assert!(
                msg.starts_with("KMS_DATA is a character device, not a regular file"),
                "{msg}"
            );
        }
    }

    #[test]
    fn a_directory_or_file_of_another_user_is_refused() {
        let (tmp, dir) = scratch();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        dir.check_private().unwrap();
        std::fs::write(tmp.path().join("KMS_DATA"), "x").unwrap();
        let f = dir.open_file("KMS_DATA", How::Read).unwrap().unwrap();
        dir.check_owned("KMS_DATA", &f).unwrap();

        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o770)).unwrap();
        assert!(matches!(
            dir.check_private(),
            Err(StoreError::UnsafeDirectory { mode: 0o770, .. })
        ));
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        if !geteuid().is_root() {
            return; // chown to another user needs root
        }
        std::os::unix::fs::chown(tmp.path().join("KMS_DATA"), Some(65534), Some(65534)).unwrap();
        let msg = message(dir.check_owned("KMS_DATA", &f).unwrap_err());
        let d = tmp.path().display();
        assert!(
            msg.starts_with(&format!(
                "KMS_DATA in {d} is owned by uid 65534 (nobody), not by uid 0 (root)"
            )),
            "{msg}"
        );
        // Whatever the mode: the owner can always replace the directory's entries.
        std::os::unix::fs::chown(tmp.path(), Some(65534), Some(65534)).unwrap();
        for mode in [0o700, 0o755] {
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            let msg = message(dir.check_private().unwrap_err());
            assert!(
                msg.starts_with(&format!(
                    "{d} is owned by uid 65534 (nobody), not by uid 0 (root), who runs kmsfs"
                )),
                "{msg}"
            );
        }
        std::os::unix::fs::chown(tmp.path(), Some(0), Some(0)).unwrap();
    }
}
