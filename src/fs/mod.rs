//! The keystore as a file system (`kmsfs mount`): the tree of `docs/tree.md`, served with
//! `fuser`.
//!
//! - `table`: what each mounted file is (name, mode, cache policy, content, what a write means).
//! - `fuse`: the one `fuser::Filesystem`, a thin adapter calling `ops` once per request.
//! - `ops`: the operation layer, in plain types, tested without a mount.
//! - `tree`, `inode`, `attr`: names, nodes, inode numbers, readdir cookies, attributes.
//! - `render`, `commands`, `parse`: what files show, what writes do, and the text they take.
//! - `input`, `handles`: per-open-file buffers of `.create` and descriptions.
//! - `error`, `errno`, `ring`: refusals, their errno, and `.errors`.
//! - `serve`: serving until unmounted, and the signals that end it.

mod acl;
mod attr;
mod cache;
mod commands;
mod counts;
mod errno;
mod error;
mod fuse;
mod handles;
mod inode;
pub(crate) mod input;
mod ops;
pub(crate) mod parse;
mod policy;
mod render;
mod ring;
mod serve;
mod table;
mod tree;

pub use counts::RequestCounts;
pub use errno::{errno_name, errno_of};
pub use error::{FsError, InputError, Shape};
pub use policy::KeyPolicy;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// Let every user in; the kernel then applies the modes (no entry grants anything to
    /// "others", so only the owner and the group get further).
    pub allow_other: bool,
    /// The group of every entry (`--key-readers`): its members read keys (in a usable state)
    /// and all metadata; changes stay with the owner. Implies `allow_other`, so that the
    /// kernel lets them in and checks the modes.
    pub key_readers: Option<u32>,
    /// `--key-policy`: only these executables may open `key` files.
    pub key_policy: Option<Arc<KeyPolicy>>,
    /// `--admins`: a group that may make changes (never read keys), by a POSIX ACL the kernel
    /// enforces. Implies letting other users in, as `key_readers` does.
    pub admins: Option<u32>,
    /// `--two-person`: destructive moves wait this long for a second administrator.
    pub two_person: Option<std::time::Duration>,
    /// Counts the kernel's requests by kind (benchmarks, tests).
    pub request_counts: Option<Arc<RequestCounts>>,
    /// `--stop-grace`: how long a SIGTERM waits for a busy mount's open files to close
    /// before the daemon stops anyway (`serve.rs`).
    pub stop_grace: std::time::Duration,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            threads: 4,
            allow_root: false,
            allow_other: false,
            key_readers: None,
            key_policy: None,
            admins: None,
            two_person: None,
            request_counts: None,
            stop_grace: std::time::Duration::from_secs(10),
        }
    }
}

fn config(opts: &MountOptions) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("kmsfs".into()),
        MountOption::Subtype("kmsfs".into()),
        // The kernel enforces the modes we report (root still bypasses them: the operation
        // layer's `open` refuses what root must not do).
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoExec,
    ];
    // No AutoUnmount: it needs the `fusermount` helper (docs/fuse-notes.md); `mount`
    // unmounts on SIGINT/SIGTERM itself.
    config.acl = if opts.allow_other || opts.key_readers.is_some() || opts.admins.is_some() {
        SessionACL::All
    } else if opts.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(opts.threads.max(1));
    config
}

fn filesystem(
    kms: Arc<Kms>,
    mountpoint: &Path,
    opts: &MountOptions,
) -> io::Result<(fuse::KmsFs, PathBuf)> {
    let mountpoint = mountpoint.canonicalize()?;
    if let Some(window) = opts.two_person {
        kms.require_two_persons(window);
    }
    let mut owner = attr::Owner::current();
    if let Some(gid) = opts.key_readers {
        owner.gid = gid;
    }
    owner.admins = opts.admins;
    let ops = ops::Operations::new(kms, mountpoint.clone(), owner)
        .with_key_policy(opts.key_policy.clone());
    let fs = fuse::KmsFs::new(ops, opts.admins.is_some(), opts.request_counts.clone());
    Ok((fs, mountpoint))
}

/// Mounts and starts serving on a thread of fuser's; the kernel's caches are told of every
/// change from the first request on.
fn start(
    kms: Arc<Kms>,
    mountpoint: &Path,
    opts: &MountOptions,
) -> io::Result<(BackgroundSession, PathBuf)> {
    let (fs, mountpoint) = filesystem(kms, mountpoint, opts)?;
    let cache = fs.kernel_cache();
    let session = fuser::Session::new(fs, &mountpoint, &config(opts))?;
    cache.connect(Arc::new(session.notifier()));
    Ok((session.spawn()?, mountpoint))
}

/// Mounts in the background and returns at once (for tests and embedding). The caller ends
/// it with `BackgroundSession::umount_and_join`.
pub fn spawn(
    kms: Arc<Kms>,
    mountpoint: &Path,
    opts: &MountOptions,
) -> io::Result<BackgroundSession> {
    start(kms, mountpoint, opts).map(|(session, _)| session)
}

/// Serves the keystore at `mountpoint` until it is unmounted (`umount MOUNTPOINT`) or the
/// process gets SIGINT or SIGTERM, which unmount it. Returns Ok after a clean unmount.
pub fn mount(kms: Arc<Kms>, mountpoint: &Path, opts: &MountOptions) -> io::Result<()> {
    let data_dir = kms.data_dir().to_path_buf();
    let kms_for_hup = kms.clone();
    let (session, mountpoint) = start(kms, mountpoint, opts)?;
    log::info!(
        "serving the keystore of {} at {}",
        data_dir.display(),
        mountpoint.display()
    );
    let hup = Arc::downgrade(&kms_for_hup);
    drop(kms_for_hup);
    let result = serve::until_unmounted(session, &mountpoint, opts.stop_grace, move || {
        match hup.upgrade() {
            Some(kms) => kms.reopen_audit(),
            None => log::info!("SIGHUP: still serving"),
        }
    });
    log::info!("unmounted {}", mountpoint.display());
    result
}
