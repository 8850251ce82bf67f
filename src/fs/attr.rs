//! File attributes, derived from the table (`table.rs`) and the keystore: the size of a file
//! is the length of what it renders.

use std::time::SystemTime;

use fuser::{FileAttr, FileType, INodeNo};

use super::inode::{InodeTable, Node, Of};
use super::render::View;
use super::table::{Cache, Content, DIR_PERM};
use super::tree;
use crate::keystore::Timestamp;

/// Who owns everything in the mount (the mounting user), and when it was mounted (the times
/// of the root's own files).
#[derive(Clone, Copy, Debug)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// `--admins`: the group given change rights by an ACL (see `acl.rs`).
    pub admins: Option<u32>,
    pub mounted: SystemTime,
}

impl Owner {
    pub fn current() -> Owner {
        Owner {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            admins: None,
            mounted: SystemTime::now(),
        }
    }
}

pub fn kind(node: &Node) -> FileType {
    node.file().map_or(FileType::Directory, |f| f.kind)
}

pub fn perm(node: &Node) -> u16 {
    node.file().map_or(DIR_PERM, |f| f.perm)
}

/// The mode `stat` shows: with an ACL, the group bits are its mask (POSIX), which covers
/// the admins too.
pub fn shown_perm(node: &Node, owner: &Owner) -> u16 {
    let p = perm(node);
    match owner.admins {
        Some(_) if kind(node) != FileType::Symlink => p | super::acl::admin_bits(node) << 3,
        _ => p,
    }
}

pub fn cache(node: &Node) -> Cache {
    node.file().map_or(Cache::Stable, |f| f.cache)
}

fn times(created: Timestamp, modified: Timestamp) -> (SystemTime, SystemTime) {
    (created.to_system_time(), modified.to_system_time())
}

/// The times of the object a file belongs to (the mount's own for the root's files).
fn object_times(v: &View<'_>, of: &Of, owner: &Owner) -> Option<(SystemTime, SystemTime)> {
    match of {
        Of::Root => Some((owner.mounted, owner.mounted)),
        Of::Group(g) => v.keystore().group(g).map(|g| times(g.created, g.modified)),
        Of::Record(k) => v.keystore().record(k).map(|r| times(r.created, r.modified)),
    }
}

/// The attributes of `node`, or None when it does not exist right now. Registers its object
/// in the inode table (the kernel may ask about it by number from now on).
pub fn of_node(v: &View<'_>, inodes: &InodeTable, node: &Node, owner: &Owner) -> Option<FileAttr> {
    let ks = v.keystore();
    let serial = tree::serial(ks, inodes, node)?;
    let mounted = (owner.mounted, owner.mounted);
    let (size, nlink, t) = match node {
        // ".", "..", ".by-tag" and one link per group.
        Node::Root => (0, 3 + ks.group_count() as u32, mounted),
        Node::ByTag => (0, 2, mounted),
        Node::Group(g) => {
            let g = ks.group(g)?;
            (0, 2 + g.record_count() as u32, times(g.created, g.modified))
        }
        Node::Record(k) => {
            let r = ks.record(k)?;
            (0, 2, times(r.created, r.modified))
        }
        Node::File(..) | Node::TagLink(_) => {
            let (file, of) = (node.file()?, node.of()?);
            let size = match &file.content {
                Content::Rendered(render) => render(v, &of)?.len() as u64,
                Content::Secret { len, .. } => len(v, &of)?,
            };
            (size, 1, object_times(v, &of, owner)?)
        }
    };
    let (created, modified) = t;
    Some(FileAttr {
        ino: INodeNo(InodeTable::ino(node, serial)),
        size,
        blocks: size.div_ceil(512),
        atime: modified,
        mtime: modified,
        ctime: modified,
        crtime: created,
        kind: kind(node),
        perm: shown_perm(node, owner),
        nlink,
        uid: owner.uid,
        gid: owner.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    })
}
