//! The fs operation layer: what each request of the kernel means for the keystore, in plain
//! types (inode numbers, names, bytes in; attributes, entries and `FsError` out). `fuse.rs`
//! calls one method per request and turns the result into the reply; nothing here knows about
//! replies, so all of it is tested without a mount (`tests.rs`).
//!
//! Every refusal of a call that changes something, or opens a file, is logged and kept in
//! `.errors` here, with the caller.
//!
//! Lock discipline: the service's read guard (inside a `View`) is held only around pure
//! queries and renders, never while calling a service method, which takes locks of its own.

mod dirs;
mod files;
#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fuser::{FileAttr, FileType};

use super::attr::{self, Owner};
use super::cache::KernelCache;
use super::error::FsError;
use super::handles::Handles;
use super::inode::{InodeTable, Node};
use super::render::View;
use super::ring::{Caller, ErrorRing};
use super::tree;
use crate::service::Kms;

pub use dirs::RenameMode;
pub use files::SetAttr;

/// An entry for the kernel's dentry cache: the attributes and how long each may be kept.
#[derive(Clone, Debug)]
pub struct Entry {
    pub attr: FileAttr,
    pub attr_ttl: Duration,
    pub entry_ttl: Duration,
}

impl Entry {
    /// READDIRPLUS has one TTL for both: the shorter.
    pub fn ttl(&self) -> Duration {
        self.attr_ttl.min(self.entry_ttl)
    }
}

/// Attributes and how long the kernel may keep them.
#[derive(Clone, Debug)]
pub struct Attr {
    pub attr: FileAttr,
    pub ttl: Duration,
}

/// One name in a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub cookie: u64,
    pub kind: FileType,
    pub name: String,
}

/// What `statfs` reports: the file system holds no blocks of its own.
#[derive(Clone, Copy, Debug)]
pub struct Statfs {
    pub files: u64,
}

/// The audit log's name for a refused request (its operation names are fixed strings).
fn audit_operation(operation: &str) -> &'static str {
    const NAMES: [&str; 13] = [
        "mkdir", "rmdir", "unlink", "rename", "open", "write", "flush", "fsync", "close",
        "setattr", "mknod", "symlink", "link",
    ];
    NAMES
        .iter()
        .find(|n| operation.starts_with(*n))
        .copied()
        .unwrap_or(if operation == "create" {
            "create"
        } else {
            "request"
        })
}

pub struct Operations {
    kms: Arc<Kms>,
    inodes: Arc<InodeTable>,
    /// The kernel's caches, kept exact; observes the service.
    cache: Arc<KernelCache>,
    handles: Handles,
    errors: ErrorRing,
    owner: Owner,
    mountpoint: PathBuf,
    key_policy: Option<Arc<crate::fs::policy::KeyPolicy>>,
}

impl Operations {
    /// `owner` owns every entry: the mounting user, and the group that may read (see
    /// `table.rs` for the modes).
    pub fn new(kms: Arc<Kms>, mountpoint: PathBuf, owner: Owner) -> Operations {
        let inodes = Arc::new(InodeTable::default());
        let cache = Arc::new(KernelCache::new(inodes.clone()));
        kms.observe(cache.clone());
        Operations {
            kms,
            inodes,
            cache,
            handles: Handles::default(),
            errors: ErrorRing::default(),
            owner,
            mountpoint,
            key_policy: None,
        }
    }

    /// What tells the kernel to forget what a change touched (`cache.rs`).
    pub fn kernel_cache(&self) -> Arc<KernelCache> {
        self.cache.clone()
    }

    /// Only the executables of `policy` may open `key` files.
    pub fn with_key_policy(mut self, policy: Option<Arc<crate::fs::policy::KeyPolicy>>) -> Self {
        self.key_policy = policy;
        self
    }

    /// Runs `f` with one consistent view of the service.
    fn view<T>(&self, f: impl FnOnce(&View<'_>) -> T) -> T {
        let ks = self.kms.read();
        f(&View {
            ks: &ks,
            errors: &self.errors,
            kms: &self.kms,
        })
    }

    fn node(&self, ino: u64) -> Result<Node, FsError> {
        self.inodes.node(ino).ok_or(FsError::NotFound)
    }

    /// The absolute path of a node for logs and `.errors` (best effort: `?` once it is gone).
    fn path(&self, node: &Node) -> String {
        let rel = tree::path(&self.kms.read(), node).unwrap_or_else(|| "/?".into());
        format!("{}{}", self.mountpoint.display(), rel)
    }

    fn child_path(&self, parent: &Node, name: &OsStr) -> String {
        let dir = self.path(parent);
        let sep = if dir.ends_with('/') { "" } else { "/" };
        format!("{dir}{sep}{}", name.to_string_lossy())
    }

    /// Records a refusal (log line + `.errors`, and the audit log for refusals the service
    /// never saw: it logs its own) and hands it back.
    fn refused(&self, caller: Caller, path: &str, operation: &str, e: FsError) -> FsError {
        self.errors.record(caller, path, operation, &e);
        if !matches!(
            e,
            FsError::Service(_) | FsError::ExecutableNotAllowed { .. }
        ) {
            let _acting = caller.acting();
            self.kms
                .audit_refusal(audit_operation(operation), path, &e.to_string());
        }
        e
    }

    /// A failed query changes nothing and is not recorded, but a daemon failure is never
    /// silent.
    fn quiet<T>(r: Result<T, FsError>) -> Result<T, FsError> {
        if let Err(e) = &r {
            if e.is_internal() {
                log::error!("{e}");
            }
        }
        r
    }

    fn entry_of(&self, v: &View<'_>, node: &Node) -> Option<Entry> {
        let attr = attr::of_node(v, &self.inodes, node, &self.owner)?;
        let (attr_ttl, entry_ttl) = attr::cache(node).ttls();
        Some(Entry {
            attr,
            attr_ttl,
            entry_ttl,
        })
    }

    fn entry(&self, node: &Node) -> Result<Entry, FsError> {
        self.view(|v| self.entry_of(v, node))
            .ok_or(FsError::NotFound)
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Entry, FsError> {
        Self::quiet((|| {
            let parent = self.node(parent)?;
            // Not UTF-8 (or too long): no such entry; mkdir then says why.
            let name = name.to_str().ok_or(FsError::NotFound)?;
            self.view(|v| {
                let node = tree::lookup(v, &parent, name)?;
                self.entry_of(v, &node)
            })
            .ok_or(FsError::NotFound)
        })())
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        Self::quiet((|| {
            let e = self.entry(&self.node(ino)?)?;
            Ok(Attr {
                attr: e.attr,
                ttl: e.attr_ttl,
            })
        })())
    }

    pub fn opendir(&self, ino: u64) -> Result<(), FsError> {
        let node = self.node(ino)?;
        match attr::kind(&node) {
            FileType::Directory => Ok(()),
            _ => Err(FsError::NotADirectory(self.path(&node))),
        }
    }

    /// The entries of a directory after `cookie`, until `add` says the reply is full.
    pub fn readdir(
        &self,
        ino: u64,
        cookie: u64,
        mut add: impl FnMut(DirEntry) -> bool,
    ) -> Result<(), FsError> {
        let dir = self.node(ino)?;
        self.view(|v| {
            tree::list(v, &self.inodes, &dir, cookie, |e| {
                add(DirEntry {
                    ino: e.ino,
                    cookie: e.cookie,
                    kind: attr::kind(&e.node),
                    name: e.name,
                })
            })
        });
        Ok(())
    }

    /// Like `readdir`, with each entry's attributes (one READDIRPLUS instead of a LOOKUP per
    /// name).
    pub fn readdirplus(
        &self,
        ino: u64,
        cookie: u64,
        mut add: impl FnMut(DirEntry, &Entry) -> bool,
    ) -> Result<(), FsError> {
        let dir = self.node(ino)?;
        self.view(|v| {
            tree::list(v, &self.inodes, &dir, cookie, |e| {
                let Some(entry) = self.entry_of(v, &e.node) else {
                    return false;
                };
                let d = DirEntry {
                    ino: e.ino,
                    cookie: e.cookie,
                    kind: attr::kind(&e.node),
                    name: e.name,
                };
                add(d, &entry)
            })
        });
        Ok(())
    }

    /// Extended attributes: only `system.posix_acl_access`, with `--admins` (`acl.rs`).
    pub fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>, FsError> {
        let node = self.node(ino)?;
        let admins = self.owner.admins.ok_or(FsError::NoAttribute)?;
        if name != "system.posix_acl_access" || attr::kind(&node) == FileType::Symlink {
            return Err(FsError::NoAttribute);
        }
        self.entry(&node)?;
        Ok(crate::fs::acl::access_acl(
            attr::perm(&node),
            admins,
            crate::fs::acl::admin_bits(&node),
        ))
    }

    pub fn statfs(&self) -> Statfs {
        let ks = self.kms.read();
        Statfs {
            files: (ks.group_count() + ks.record_count()) as u64,
        }
    }
}
