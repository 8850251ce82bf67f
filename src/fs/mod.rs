//! The keystore as a file system (`kmsfs mount`): the tree of `interface.md`, "The mounted
//! tree", served with `fuser`.
//!
//! - `fuse`: the one `fuser::Filesystem`, a thin adapter over `core`.
//! - `core`, `files`: what each operation means for the keystore, in plain types.
//! - `tree`, `inode`: names, nodes, inode numbers and readdir cookies.
//! - `attr`, `content`: attributes (and cache lifetimes) and file contents.
//! - `control`, `handles`: per-open-file input of control files.
//! - `errors`, `errno`: refusals, their errno and `.errors`.

mod attr;
mod content;
mod control;
mod core;
mod errno;
mod errors;
mod files;
mod fuse;
mod handles;
mod inode;
mod signals;
mod tree;

pub use errno::{errno_name, errno_of};

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{BackgroundSession, Config, MountOption, SessionACL};

use crate::service::Kms;

/// How the mount is served.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Threads answering requests, so that a slow one (a passphrase KDF in `.create`, about
    /// 0.2 s) does not stall the others.
    pub threads: usize,
    /// Let root in besides the mounting user.
    pub allow_root: bool,
    /// Let every user in (the file modes still apply: `key` is 0400).
    pub allow_other: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            threads: 4,
            allow_root: false,
            allow_other: false,
        }
    }
}

fn config(opts: &MountOptions) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("kmsfs".into()),
        MountOption::Subtype("kmsfs".into()),
        // The kernel enforces the modes we report (root still bypasses them: `Core::open`
        // refuses what root must not do).
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoExec,
    ];
    // No AutoUnmount: it needs the `fusermount` helper (see fuse-notes.md); `mount` unmounts
    // on SIGINT/SIGTERM itself.
    config.acl = if opts.allow_other {
        SessionACL::All
    } else if opts.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(opts.threads.max(1));
    config
}

fn filesystem(kms: Arc<Kms>, mountpoint: &Path) -> io::Result<(fuse::KmsFs, PathBuf)> {
    let mountpoint = mountpoint.canonicalize()?;
    let core = core::Core::new(kms, mountpoint.clone());
    Ok((fuse::KmsFs::new(core), mountpoint))
}

/// Mounts in the background and returns at once (for tests and embedding). The caller ends
/// it with `BackgroundSession::umount_and_join`.
pub fn spawn(
    kms: Arc<Kms>,
    mountpoint: &Path,
    opts: &MountOptions,
) -> io::Result<BackgroundSession> {
    let (fs, mountpoint) = filesystem(kms, mountpoint)?;
    fuser::spawn_mount(fs, &mountpoint, &config(opts))
}

/// Serves the keystore at `mountpoint` until it is unmounted (`umount MOUNTPOINT`) or the
/// process gets SIGINT or SIGTERM, which unmount it. Returns Ok after a clean unmount.
pub fn mount(kms: Arc<Kms>, mountpoint: &Path, opts: &MountOptions) -> io::Result<()> {
    let signals = signals::SignalGuard::install()?;
    let data_dir = kms.data_dir().to_path_buf();
    let (fs, mountpoint) = filesystem(kms, mountpoint)?;
    let mut session = fuser::spawn_mount(fs, &mountpoint, &config(opts))?;
    log::info!(
        "serving the keystore of {} at {}",
        data_dir.display(),
        mountpoint.display()
    );
    let mut unmount_requested = false;
    while !session.guard.is_finished() {
        if let (Some(sig), false) = (signals.received(), unmount_requested) {
            log::info!("signal {sig}: unmounting {}", mountpoint.display());
            unmount(&mountpoint);
            unmount_requested = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The serving threads have ended: the file system is unmounted. Dropping the session
    // would try to unmount again and could take down a new mount at the same path (see
    // "double unmount" in fuse-notes.md): take its thread's result and forget the rest.
    let finished = std::thread::spawn(|| Ok(()));
    let guard = std::mem::replace(&mut session.guard, finished);
    std::mem::forget(session);
    let result = guard
        .join()
        .map_err(|_| io::Error::other("the file system's serving thread panicked"))?;
    log::info!("unmounted {}", mountpoint.display());
    result
}

/// Unmounts `path`; if something keeps it busy (a shell's working directory), detaches it so
/// that the daemon can still exit and the mount goes away once it is no longer used.
fn unmount(path: &Path) {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return;
    };
    // SAFETY: c_path is a valid NUL-terminated string for the duration of the calls.
    let rc = unsafe { libc::umount2(c_path.as_ptr(), 0) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        log::warn!("unmounting {}: {err}; detaching it instead", path.display());
        // SAFETY: as above.
        if unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) } != 0 {
            log::error!(
                "cannot unmount {}: {}",
                path.display(),
                io::Error::last_os_error()
            );
        }
    }
}
