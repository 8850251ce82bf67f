//! The kernel's caches of the mount, kept exact: names and attributes of groups, records and
//! their files are cached (long TTLs) until a change touches their object
//! (`keystore::touched`), whoever made it (this mount, the rotation timer, another front end).
//!
//! - **Attributes** are forgotten (`inval_inode` with a negative offset: attributes only)
//!   before the call that made the change returns, so `stat`, `ls -l` and `tar` see the new
//!   size and times at once. That notification waits for nothing (no directory lock, no page
//!   lock), so it is safe from any thread, a FUSE request's included (docs/fuse-notes.md).
//! - **Pages** of changing files are never cached: they are read with direct I/O (see
//!   `ops/files.rs` for the race that rules the page cache out).
//! - **Names** that a change takes away (`.active`, a deleted record's `.by-tag` link, a name
//!   another front end renamed) are forgotten by a thread of their own after the change:
//!   `inval_entry` takes the directory's lock, which the request that made the change may
//!   hold (`rename`, `rmdir`), so it must never run in, or be waited for by, a request. Until
//!   it has run, the stale name's attributes are already forgotten and the node answers
//!   ENOENT, so a vanished name looks vanished from the start.

use std::ffi::{OsStr, OsString};
use std::sync::{mpsc, Arc, Mutex, OnceLock};

use super::inode::{InodeTable, Node};
use super::table::{Dir, FileId};
use crate::keystore::touched::{Gone, Touched};
use crate::service::Observer;

/// What the kernel is told. fuser's `Notifier` in a mount; a recorder in tests.
pub trait Kernel: Send + Sync {
    /// Forgets the attributes of `ino` (never its pages: see the module's comment).
    fn forget_attrs(&self, ino: u64);
    /// Forgets the name `name` in the directory `parent`.
    fn forget_entry(&self, parent: u64, name: &OsStr);
}

impl Kernel for fuser::Notifier {
    fn forget_attrs(&self, ino: u64) {
        // ENOENT (the kernel has forgotten the inode itself) is Ok from fuser.
        if let Err(e) = self.inval_inode(fuser::INodeNo(ino), -1, 0) {
            log::debug!("cannot invalidate the attributes of inode {ino}: {e}");
        }
    }

    fn forget_entry(&self, parent: u64, name: &OsStr) {
        if let Err(e) = self.inval_entry(fuser::INodeNo(parent), name) {
            log::debug!("cannot invalidate {name:?} in inode {parent}: {e}");
        }
    }
}

/// The mount's side of the kernel's caches; observes the service.
pub struct KernelCache {
    inodes: Arc<InodeTable>,
    kernel: OnceLock<Arc<dyn Kernel>>,
    /// Names to forget, for the thread that forgets them.
    names: Mutex<Option<mpsc::Sender<(u64, OsString)>>>,
}

impl KernelCache {
    pub fn new(inodes: Arc<InodeTable>) -> KernelCache {
        KernelCache {
            inodes,
            kernel: OnceLock::new(),
            names: Mutex::new(None),
        }
    }

    /// From now on the kernel is told; before, nothing was cached that needs it.
    pub fn connect(&self, kernel: Arc<dyn Kernel>) {
        let (tx, rx) = mpsc::channel::<(u64, OsString)>();
        let k = kernel.clone();
        let spawned = std::thread::Builder::new()
            .name("kmsfs-names".into())
            .spawn(move || {
                for (parent, name) in rx {
                    k.forget_entry(parent, &name);
                }
            });
        match spawned {
            Ok(_) => *self.names.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx),
            Err(e) => log::error!("cannot start the thread that forgets names: {e}"),
        }
        let _ = self.kernel.set(kernel);
    }

    /// Stops telling the kernel (it is gone): the names thread ends.
    pub fn disconnect(&self) {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// The inodes of an object's directory, files and link, if the kernel was given them.
    fn inodes_of(&self, serial: u64, dir: Dir) -> Vec<u64> {
        if self.inodes.object(serial).is_none() {
            return Vec::new();
        }
        let mut inos = vec![InodeTable::dir_ino(serial)];
        inos.extend(FileId::all_in(dir).map(|f| InodeTable::file_ino(serial, f)));
        if dir == Dir::Record {
            inos.push(InodeTable::link_ino(serial));
        }
        inos
    }

    fn gone_entry(&self, gone: &Gone) -> Option<(u64, OsString)> {
        let dir_of = |serial: u64| {
            self.inodes
                .object(serial)
                .map(|_| InodeTable::dir_ino(serial))
        };
        Some(match gone {
            Gone::Group(name) => (
                InodeTable::ino(&Node::Root, 0),
                OsString::from(name.as_str()),
            ),
            Gone::Record { group, name } => (dir_of(*group)?, OsString::from(name.as_str())),
            Gone::Tag(tag) => (
                InodeTable::ino(&Node::ByTag, 0),
                OsString::from(tag.as_str()),
            ),
            Gone::Active { group } => (dir_of(*group)?, OsString::from(".active")),
        })
    }
}

impl Observer for KernelCache {
    fn published(&self, touched: &Touched) {
        let Some(kernel) = self.kernel.get() else {
            return;
        };
        if touched.groups_listing {
            kernel.forget_attrs(InodeTable::ino(&Node::Root, 0));
        }
        for g in &touched.groups {
            for ino in self.inodes_of(g.serial, Dir::Group) {
                kernel.forget_attrs(ino);
            }
        }
        for r in &touched.records {
            for ino in self.inodes_of(r.serial, Dir::Record) {
                kernel.forget_attrs(ino);
            }
        }
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = names.as_ref() {
            for entry in touched.gone.iter().filter_map(|g| self.gone_entry(g)) {
                let _ = tx.send(entry);
            }
        }
    }
}
