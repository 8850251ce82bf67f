//! Directories: groups at the top, records in a group. `mkdir`, `rmdir` and `mv` are the
//! keystore's create, delete and rename; everything else that would add or remove a name is
//! refused.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use super::{Entry, Operations};
use crate::fs::error::{FsError, Shape};
use crate::fs::inode::Node;
use crate::fs::ring::Caller;
use crate::fs::tree;
use crate::keystore::Name;
use crate::service::NewRecord;

/// How `rename` may be asked to behave (the kernel's RENAME_* flags).
#[derive(Clone, Copy, Debug, Default)]
pub struct RenameMode {
    pub noreplace: bool,
    pub exchange_or_whiteout: bool,
}

impl Operations {
    fn lookup_name(&self, parent: &Node, name: &OsStr) -> Result<Node, FsError> {
        let name = name.to_str().ok_or(FsError::NotFound)?;
        self.view(|v| tree::lookup(v, parent, name))
            .ok_or(FsError::NotFound)
    }

    pub fn mkdir(&self, caller: Caller, parent: u64, name: &OsStr) -> Result<Entry, FsError> {
        let _acting = caller.acting();
        let parent = self.node(parent)?;
        let made = (|| {
            let name = Name::parse_bytes(name.as_bytes())?;
            let node = match &parent {
                Node::Root => Node::Group(self.kms.create_group(name)?),
                Node::Group(g) => {
                    Node::Record(self.kms.create_record(g, NewRecord::prelive(name))?)
                }
                _ => return Err(Shape::NoDirectoryHere.into()),
            };
            self.entry(&node)
        })();
        made.map_err(|e| self.refused(caller, &self.child_path(&parent, name), "mkdir", e))
    }

    pub fn rmdir(&self, caller: Caller, parent: u64, name: &OsStr) -> Result<(), FsError> {
        let _acting = caller.acting();
        let parent = self.node(parent)?;
        // The path is taken before the change: afterwards the name resolves no more.
        let path = self.child_path(&parent, name);
        let removed = (|| match self.lookup_name(&parent, name)? {
            Node::Group(g) => Ok(self.kms.delete_group(&g)?),
            Node::Record(k) => Ok(self.kms.delete_record(&k)?),
            Node::ByTag => Err(Shape::FixedDirectory.into()),
            _ => Err(FsError::NotADirectory(name.to_string_lossy().into_owned())),
        })();
        removed.map_err(|e| self.refused(caller, &path, "rmdir", e))
    }

    pub fn unlink(&self, caller: Caller, parent: u64, name: &OsStr) -> Result<(), FsError> {
        let parent = self.node(parent)?;
        let refusal = match self.lookup_name(&parent, name) {
            Ok(_) => Shape::FileRemoval.into(),
            Err(e) => e,
        };
        Err(self.refused(caller, &self.child_path(&parent, name), "unlink", refusal))
    }

    pub fn rename(
        &self,
        caller: Caller,
        (parent, name): (u64, &OsStr),
        (new_parent, new_name): (u64, &OsStr),
        mode: RenameMode,
    ) -> Result<(), FsError> {
        let _acting = caller.acting();
        let (parent, new_parent) = (self.node(parent)?, self.node(new_parent)?);
        let renamed = (|| {
            if mode.exchange_or_whiteout {
                return Err(FsError::UnsupportedRename);
            }
            let new = Name::parse_bytes(new_name.as_bytes())?;
            let node = self.lookup_name(&parent, name)?;
            let target = self.view(|v| tree::lookup(v, &new_parent, new.as_str()));
            if mode.noreplace && target.is_some() && target.as_ref() != Some(&node) {
                return Err(FsError::Exists(new.to_string()));
            }
            match (&node, &new_parent) {
                (Node::Group(g), Node::Root) => Ok(self.kms.rename_group(g, new)?),
                (Node::Record(k), Node::Group(to)) => Ok(self.kms.rename_record(k, to, new)?),
                (Node::Record(_), _) => Err(Shape::RecordOutsideGroup.into()),
                (Node::Group(_), _) => Err(Shape::GroupOutsideRoot.into()),
                _ => Err(Shape::NotRenamable.into()),
            }
        })();
        renamed.map_err(|e| {
            let op = format!("rename to {}", self.child_path(&new_parent, new_name));
            self.refused(caller, &self.child_path(&parent, name), &op, e)
        })
    }

    /// Stray files (create, mknod, symlink, link): the mount holds only its own entries.
    pub fn refuse_stray(&self, caller: Caller, parent: u64, name: &OsStr, op: &str) -> FsError {
        let path = match self.node(parent) {
            Ok(p) => self.child_path(&p, name),
            Err(_) => name.to_string_lossy().into_owned(),
        };
        let e = Shape::StrayFile(String::from_utf8_lossy(name.as_bytes()).into_owned()).into();
        self.refused(caller, &path, op, e)
    }
}
