//! What each file-system operation means for the keystore, in plain types: nodes in, results
//! or `FsError` out. `fuse.rs` turns these into replies and records the refusals.
//!
//! Lock discipline: the keystore's read guard (`kms.read()`) is held only around pure
//! queries and is never held while calling a service method, which takes locks of its own.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use fuser::FileAttr;

use super::attr::{self, Owner};
use super::errors::{ErrorRing, FsError};
use super::handles::Handles;
use super::inode::{InodeTable, Node};
use super::tree;
use crate::keystore::{Keystore, KeystoreError, MAX_NAME_BYTES};
use crate::service::{Kms, KmsError, NewRecord};

pub struct Core {
    pub kms: Arc<Kms>,
    pub inodes: InodeTable,
    pub handles: Handles,
    pub errors: ErrorRing,
    pub owner: Owner,
    pub mountpoint: PathBuf,
}

/// Sizes of the root's files whose content comes from the service, taken before the
/// keystore's guard so that no service call happens under it.
#[derive(Clone, Copy, Default)]
pub struct RootSizes {
    quiesce: u64,
    status: u64,
    errors: u64,
}

/// How `rename` may be asked to behave (the kernel's RENAME_* flags).
#[derive(Clone, Copy, Debug, Default)]
pub struct RenameMode {
    pub noreplace: bool,
    pub exchange_or_whiteout: bool,
}

pub(super) fn read_only(what: &str) -> FsError {
    FsError::new(libc::EACCES, format!("{what} is read-only"))
}

fn utf8_name(name: &OsStr) -> Result<&str, FsError> {
    if name.len() > MAX_NAME_BYTES {
        return Err(FsError::new(
            libc::ENAMETOOLONG,
            format!("name too long ({} bytes; at most 255)", name.len()),
        ));
    }
    name.to_str()
        .ok_or_else(|| FsError::new(libc::EINVAL, "names must be UTF-8"))
}

impl Core {
    pub fn new(kms: Arc<Kms>, mountpoint: PathBuf) -> Core {
        Core {
            kms,
            inodes: InodeTable::default(),
            handles: Handles::default(),
            errors: ErrorRing::default(),
            owner: Owner::current(),
            mountpoint,
        }
    }

    pub fn node(&self, ino: u64) -> Result<Node, FsError> {
        self.inodes.node(ino).ok_or_else(FsError::not_found)
    }

    /// The absolute path of a node for logs and `.errors` (best effort: `?` once it is gone).
    pub fn path(&self, node: &Node) -> String {
        let rel = tree::path(&self.kms.read(), node).unwrap_or_else(|| "/?".into());
        format!("{}{}", self.mountpoint.display(), rel)
    }

    pub fn child_path(&self, parent: &Node, name: &OsStr) -> String {
        let dir = self.path(parent);
        let sep = if dir.ends_with('/') { "" } else { "/" };
        format!("{dir}{sep}{}", name.to_string_lossy())
    }

    pub fn root_sizes(&self) -> RootSizes {
        RootSizes {
            quiesce: self.kms.quiesce_status_json().len() as u64,
            status: self.kms.status_json().len() as u64,
            errors: self.errors.len_bytes() as u64,
        }
    }

    /// Attributes of a node under an already-held guard; the root's service-backed files
    /// take their sizes from `sizes`.
    pub fn attr_locked(&self, ks: &Keystore, node: &Node, sizes: &RootSizes) -> Option<FileAttr> {
        let serial = tree::serial(ks, &self.inodes, node)?;
        let ino = InodeTable::ino(node, serial);
        let size = match node {
            Node::Quiesce => sizes.quiesce,
            Node::Status => sizes.status,
            Node::Errors => sizes.errors,
            _ => return attr::from_keystore(ks, node, ino, &self.owner),
        };
        let t = (self.owner.mounted, self.owner.mounted);
        Some(attr::make(node, ino, size, 1, t, &self.owner))
    }

    pub fn attr(&self, node: &Node) -> Result<FileAttr, FsError> {
        let sizes = match node {
            Node::Quiesce | Node::Status | Node::Errors => self.root_sizes(),
            _ => RootSizes::default(),
        };
        let ks = self.kms.read();
        self.attr_locked(&ks, node, &sizes)
            .ok_or_else(FsError::not_found)
    }

    pub fn lookup(&self, parent: &Node, name: &OsStr) -> Result<(Node, FileAttr), FsError> {
        // Too long or not UTF-8: no such entry; mkdir then says why.
        let name = name.to_str().ok_or_else(FsError::not_found)?;
        let node = tree::lookup(&self.kms.read(), parent, name).ok_or_else(FsError::not_found)?;
        let attr = self.attr(&node)?;
        Ok((node, attr))
    }

    // ---- directories ------------------------------------------------------------------

    pub fn mkdir(&self, parent: &Node, name: &OsStr) -> Result<(Node, FileAttr), FsError> {
        let name = utf8_name(name)?;
        let node = match parent {
            Node::Root => Node::Group(self.kms.create_group(name)?),
            Node::Group(g) => Node::Record(self.kms.create_record(g, NewRecord::prelive(name))?),
            _ => {
                return Err(FsError::new(
                    libc::EPERM,
                    "directories are groups (at the top) or records (in a group); none can be made here",
                ))
            }
        };
        let attr = self.attr(&node)?;
        Ok((node, attr))
    }

    pub fn rmdir(&self, parent: &Node, name: &OsStr) -> Result<(), FsError> {
        let name = name.to_str().ok_or_else(FsError::not_found)?;
        let node = tree::lookup(&self.kms.read(), parent, name).ok_or_else(FsError::not_found)?;
        match node {
            Node::Group(g) => Ok(self.kms.delete_group(&g)?),
            Node::Record(k) => Ok(self.kms.delete_record(&k)?),
            Node::ByTag => Err(FsError::new(libc::EPERM, ".by-tag is part of the mount")),
            _ => Err(FsError::new(
                libc::ENOTDIR,
                format!("{name} is not a directory"),
            )),
        }
    }

    pub fn unlink(&self, parent: &Node, name: &OsStr) -> Result<(), FsError> {
        let name = name.to_str().ok_or_else(FsError::not_found)?;
        tree::lookup(&self.kms.read(), parent, name).ok_or_else(FsError::not_found)?;
        Err(FsError::new(
            libc::EPERM,
            "files of the mount cannot be removed; rmdir a record (prelive or terminated) to delete it",
        ))
    }

    pub fn rename(
        &self,
        parent: &Node,
        name: &OsStr,
        new_parent: &Node,
        new_name: &OsStr,
        mode: RenameMode,
    ) -> Result<(), FsError> {
        if mode.exchange_or_whiteout {
            return Err(FsError::new(
                libc::EINVAL,
                "rename: exchanging or whiteouts are not supported",
            ));
        }
        let new_name = utf8_name(new_name)?;
        let (node, target) = {
            let ks = self.kms.read();
            let name = name.to_str().ok_or_else(FsError::not_found)?;
            let node = tree::lookup(&ks, parent, name).ok_or_else(FsError::not_found)?;
            (node, tree::lookup(&ks, new_parent, new_name))
        };
        if mode.noreplace && target.is_some() && target.as_ref() != Some(&node) {
            return Err(FsError::new(
                libc::EEXIST,
                format!("{new_name} already exists"),
            ));
        }
        match (&node, new_parent) {
            (Node::Group(g), Node::Root) => Ok(self.kms.rename_group(g, new_name)?),
            (Node::Record(k), Node::Group(to)) => {
                let from = self.kms.read().record(k).map(|r| r.group.clone());
                if from.as_ref() != Some(to) {
                    return Err(cross_group_move());
                }
                Ok(self.kms.rename_record(k, new_name)?)
            }
            (Node::Record(_), _) => Err(cross_group_move()),
            (Node::Group(_), _) => Err(FsError::new(
                libc::EPERM,
                "a group stays at the top of the mount; it can only be renamed there",
            )),
            _ => Err(FsError::new(
                libc::EPERM,
                "only groups and records can be renamed",
            )),
        }
    }

    /// Stray files: the mount holds only its own entries.
    pub fn refuse_stray(&self, name: &OsStr) -> FsError {
        FsError::new(
            libc::EPERM,
            format!(
                "cannot create {:?}: the mount holds only groups, records and their files",
                String::from_utf8_lossy(name.as_bytes())
            ),
        )
    }
}

pub(super) fn bad_handle() -> FsError {
    FsError::new(libc::EBADF, "unknown file handle")
}

/// EPERM, never EXDEV: `mv` would answer EXDEV by copying the key into a new record.
fn cross_group_move() -> FsError {
    KmsError::Keystore(KeystoreError::CrossGroupMove).into()
}
