//! File attributes and how long the kernel may cache them.

use std::time::{Duration, SystemTime};

use fuser::{FileAttr, FileType, INodeNo};

use super::content;
use super::inode::{GroupFile, Node, RecordFile};
use crate::keystore::{Keystore, Timestamp};

/// Names and attributes that change only through this mount's own mkdir, rmdir and rename
/// (the kernel updates its caches for those itself): directories, and `key`, whose bytes
/// never change. A short positive TTL lets `ls -l` of 10,000 records run on READDIRPLUS
/// alone, without one GETATTR per entry.
pub const STABLE_TTL: Duration = Duration::from_secs(1);

/// Anything whose size, content or existence changes as a side effect of another operation
/// (`state` of a record demoted by another's activation, `.active`, `.by-tag/*`, JSON, the
/// root's status files): never cached, so `cat` right after a change shows the new value.
/// These files are also read with direct I/O (see `Core::open`).
pub const VOLATILE_TTL: Duration = Duration::ZERO;

/// The cache lifetimes of a node: (attributes, directory entry).
pub fn ttls(node: &Node) -> (Duration, Duration) {
    match node {
        // Come and go with other operations: neither may be cached.
        Node::GroupFile(_, GroupFile::Active) | Node::TagLink(_) => (VOLATILE_TTL, VOLATILE_TTL),
        Node::Root | Node::ByTag | Node::Group(_) | Node::Record(_) => (STABLE_TTL, STABLE_TTL),
        Node::RecordFile(_, RecordFile::Key) => (STABLE_TTL, STABLE_TTL),
        // The name is stable, the size is not.
        _ => (VOLATILE_TTL, STABLE_TTL),
    }
}

/// Who owns everything in the mount (the mounting user), and when it was mounted (the times
/// of the root's own files).
#[derive(Clone, Copy, Debug)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub mounted: SystemTime,
}

impl Owner {
    pub fn current() -> Owner {
        // SAFETY: geteuid and getegid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Owner {
            uid,
            gid,
            mounted: SystemTime::now(),
        }
    }
}

/// Modes: directories are searchable; `key` is 0400 as the contract says; control files are
/// writable by the owner; `.create` is write-only; metadata is read-only.
pub fn perm(node: &Node) -> u16 {
    match node {
        Node::Root | Node::ByTag | Node::Group(_) | Node::Record(_) => 0o755,
        Node::Quiesce => 0o600,
        Node::Status | Node::Errors => 0o444,
        Node::GroupFile(_, f) => match f {
            GroupFile::Json => 0o444,
            GroupFile::Description | GroupFile::Cipher => 0o600,
            GroupFile::Create => 0o200,
            GroupFile::Active => 0o777,
        },
        Node::RecordFile(_, f) => match f {
            RecordFile::Json => 0o444,
            RecordFile::State | RecordFile::Description => 0o600,
            RecordFile::Key => 0o400,
        },
        Node::TagLink(_) => 0o777,
    }
}

pub fn kind(node: &Node) -> FileType {
    match node {
        Node::Root | Node::ByTag | Node::Group(_) | Node::Record(_) => FileType::Directory,
        Node::GroupFile(_, GroupFile::Active) | Node::TagLink(_) => FileType::Symlink,
        _ => FileType::RegularFile,
    }
}

/// Whether a node's content may be written through `write()` at all.
pub fn writable(node: &Node) -> bool {
    perm(node) & 0o200 != 0 && kind(node) == FileType::RegularFile
}

pub fn make(
    node: &Node,
    ino: u64,
    size: u64,
    nlink: u32,
    times: (SystemTime, SystemTime),
    owner: &Owner,
) -> FileAttr {
    let (created, modified) = times;
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: modified,
        mtime: modified,
        ctime: modified,
        crtime: created,
        kind: kind(node),
        perm: perm(node),
        nlink,
        uid: owner.uid,
        gid: owner.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn times(created: Timestamp, modified: Timestamp) -> (SystemTime, SystemTime) {
    (created.to_system_time(), modified.to_system_time())
}

/// The attributes of a node that the keystore alone describes (everything but the root's
/// `.quiesce`, `.status` and `.errors`, whose sizes come from the service). None when the
/// node no longer exists.
pub fn from_keystore(ks: &Keystore, node: &Node, ino: u64, owner: &Owner) -> Option<FileAttr> {
    let mounted = (owner.mounted, owner.mounted);
    let (size, nlink, t) = match node {
        // ".", "..", ".by-tag" and one link per group.
        Node::Root => (0, 3 + ks.group_count() as u32, mounted),
        Node::ByTag => (0, 2, mounted),
        Node::Quiesce | Node::Status | Node::Errors => return None,
        Node::Group(g) | Node::GroupFile(g, _) => {
            let g = ks.group(g)?;
            let t = times(g.created, g.modified);
            match node {
                Node::Group(_) => (0, 2 + g.record_count() as u32, t),
                Node::GroupFile(_, f) => {
                    let size = match f {
                        GroupFile::Json => content::group_json(ks, g).len(),
                        GroupFile::Description => g.description.len(),
                        GroupFile::Cipher => g.cipher.as_str().len() + 1,
                        GroupFile::Create => 0,
                        GroupFile::Active => content::active_target(ks, g)?.len(),
                    };
                    (size as u64, 1, t)
                }
                _ => return None,
            }
        }
        Node::Record(k) | Node::RecordFile(k, _) | Node::TagLink(k) => {
            let r = ks.record(k)?;
            let t = times(r.created, r.modified);
            match node {
                Node::Record(_) => (0, 2, t),
                Node::RecordFile(_, f) => {
                    let size = match f {
                        RecordFile::Json => content::record_json(ks, r).len(),
                        RecordFile::State => r.state.as_str().len() + 1,
                        RecordFile::Description => r.description.len(),
                        RecordFile::Key => ks.group(&r.group)?.cipher.key_len(),
                    };
                    (size as u64, 1, t)
                }
                Node::TagLink(_) => (content::tag_target(ks, r)?.len() as u64, 1, t),
                _ => return None,
            }
        }
    };
    Some(make(node, ino, size, nlink, t, owner))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::{GroupTag, KeyTag};

    #[test]
    fn modes() {
        let k = KeyTag::random();
        let g = GroupTag::random();
        assert_eq!(perm(&Node::RecordFile(k.clone(), RecordFile::Key)), 0o400);
        assert!(!writable(&Node::RecordFile(k.clone(), RecordFile::Key)));
        assert!(!writable(&Node::RecordFile(k.clone(), RecordFile::Json)));
        assert!(writable(&Node::RecordFile(k.clone(), RecordFile::State)));
        assert!(writable(&Node::GroupFile(g.clone(), GroupFile::Create)));
        assert!(!writable(&Node::GroupFile(g.clone(), GroupFile::Active)));
        assert!(!writable(&Node::Status));
        assert!(writable(&Node::Quiesce));
        assert_eq!(ttls(&Node::TagLink(k)).1, Duration::ZERO);
    }
}
