//! Nodes of the mounted tree and their inode numbers.
//!
//! An inode number is `serial << 5 | kind`. Groups and records have serials that are unique
//! across both and never reused, so an inode always names the same object, survives renames,
//! and can never be confused with a deleted one. Kind 0 is the object's directory, kind
//! `2 + i` the fixed file `FILES[i]`, kind 31 a record's `.by-tag` link. Serial 0 is never
//! handed out by the keystore and holds the root (inode 1, as FUSE requires), its files and
//! `.by-tag` (kind 31).

use std::collections::HashMap;
use std::sync::RwLock;

use super::table::{Dir, File, FileId, FILES, TAG_LINK};
use crate::keystore::{GroupTag, KeyTag};

/// The object a fixed file belongs to, by tag (never by name, so that a rename does not
/// invalidate it).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Of {
    Root,
    Group(GroupTag),
    Record(KeyTag),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    Root,
    ByTag,
    Group(GroupTag),
    Record(KeyTag),
    /// A fixed file of the root, a group or a record.
    File(FileId, Of),
    /// `.by-tag/TAG`, a symlink to the record.
    TagLink(KeyTag),
}

impl Node {
    /// The table entry of a file node; None for directories.
    pub fn file(&self) -> Option<&'static File> {
        match self {
            Node::File(id, _) => Some(id.file()),
            Node::TagLink(_) => Some(&TAG_LINK),
            _ => None,
        }
    }

    /// The object whose file this is (a tag link is its record's).
    pub fn of(&self) -> Option<Of> {
        match self {
            Node::File(_, of) => Some(of.clone()),
            Node::TagLink(k) => Some(Of::Record(k.clone())),
            _ => None,
        }
    }
}

const KIND_BITS: u32 = 5;
const KIND_MASK: u64 = (1 << KIND_BITS) - 1;
const DIR_KIND: u64 = 0;
const FIRST_FILE_KIND: u64 = 2;
const LINK_KIND: u64 = KIND_MASK;
pub const ROOT_INO: u64 = 1;
const BY_TAG_INO: u64 = LINK_KIND;

/// The table must fit in the kinds between the directory and the link.
const _: () = assert!(FILES.len() as u64 + FIRST_FILE_KIND < LINK_KIND);

/// What a serial stands for. Records remember their group, so that a `.by-tag` listing can
/// resume after a record even when that record has been deleted in between.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Object {
    Group(GroupTag),
    Record {
        tag: KeyTag,
        group: GroupTag,
        group_serial: u64,
    },
}

/// Serial to object, for every object whose inode the kernel has been given. The kernel only
/// ever asks about inodes it was given, so this is complete for its purposes. Entries stay
/// after deletion (a few dozen bytes each): a stale inode then resolves to a tag the keystore
/// no longer has, which is ENOENT.
#[derive(Default)]
pub struct InodeTable {
    objects: RwLock<HashMap<u64, Object>>,
}

impl InodeTable {
    pub fn remember(&self, serial: u64, object: Object) {
        let known = self
            .objects
            .read()
            .map(|m| m.contains_key(&serial))
            .unwrap_or(false);
        if !known {
            if let Ok(mut m) = self.objects.write() {
                m.insert(serial, object);
            }
        }
    }

    pub fn object(&self, serial: u64) -> Option<Object> {
        self.objects.read().ok()?.get(&serial).cloned()
    }

    /// The inode number of `node`, given the serial of its group or record (0 for the root's).
    pub fn ino(node: &Node, serial: u64) -> u64 {
        let kind = match node {
            Node::Root => return ROOT_INO,
            Node::ByTag => return BY_TAG_INO,
            Node::Group(_) | Node::Record(_) => DIR_KIND,
            Node::File(id, _) => FIRST_FILE_KIND + id.0 as u64,
            Node::TagLink(_) => LINK_KIND,
        };
        serial << KIND_BITS | kind
    }

    /// The inode of the directory of the group or record `serial`.
    pub fn dir_ino(serial: u64) -> u64 {
        serial << KIND_BITS | DIR_KIND
    }

    /// The inode of the fixed file `file` of the group or record `serial`.
    pub fn file_ino(serial: u64, file: FileId) -> u64 {
        serial << KIND_BITS | (FIRST_FILE_KIND + file.0 as u64)
    }

    /// The inode of the `.by-tag` link of the record `serial`.
    pub fn link_ino(serial: u64) -> u64 {
        serial << KIND_BITS | LINK_KIND
    }

    /// The node an inode number stands for, if its object was ever handed out.
    pub fn node(&self, ino: u64) -> Option<Node> {
        let (serial, kind) = (ino >> KIND_BITS, ino & KIND_MASK);
        let file = |dir: Dir| {
            let i = kind.checked_sub(FIRST_FILE_KIND)? as usize;
            (FILES.get(i)?.dir == dir).then_some(FileId(i as u8))
        };
        if serial == 0 {
            return match ino {
                ROOT_INO => Some(Node::Root),
                BY_TAG_INO => Some(Node::ByTag),
                _ => Some(Node::File(file(Dir::Root)?, Of::Root)),
            };
        }
        match self.object(serial)? {
            Object::Group(g) => match kind {
                DIR_KIND => Some(Node::Group(g)),
                _ => Some(Node::File(file(Dir::Group)?, Of::Group(g))),
            },
            Object::Record { tag, .. } => match kind {
                DIR_KIND => Some(Node::Record(tag)),
                LINK_KIND => Some(Node::TagLink(tag)),
                _ => Some(Node::File(file(Dir::Record)?, Of::Record(tag))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let table = InodeTable::default();
        let g = GroupTag::random();
        let k = KeyTag::random();
        table.remember(7, Object::Group(g.clone()));
        table.remember(
            9,
            Object::Record {
                tag: k.clone(),
                group: g.clone(),
                group_serial: 7,
            },
        );
        let mut nodes = vec![
            (Node::Root, 0),
            (Node::ByTag, 0),
            (Node::Group(g.clone()), 7),
            (Node::Record(k.clone()), 9),
            (Node::TagLink(k.clone()), 9),
        ];
        nodes.extend(FileId::all_in(Dir::Root).map(|f| (Node::File(f, Of::Root), 0)));
        nodes.extend(FileId::all_in(Dir::Group).map(|f| (Node::File(f, Of::Group(g.clone())), 7)));
        nodes
            .extend(FileId::all_in(Dir::Record).map(|f| (Node::File(f, Of::Record(k.clone())), 9)));
        let mut seen = std::collections::HashSet::new();
        for (node, serial) in nodes {
            let ino = InodeTable::ino(&node, serial);
            assert!(seen.insert(ino), "duplicate inode {ino}");
            assert_eq!(table.node(ino), Some(node));
        }
        assert_eq!(InodeTable::ino(&Node::Root, 0), 1);
        // A group's serial with a record file's kind is nothing, and so is an unknown serial.
        let state = FileId::find(Dir::Record, "state").unwrap();
        assert_eq!(
            table.node(7 << KIND_BITS | (FIRST_FILE_KIND + state.0 as u64)),
            None
        );
        assert_eq!(table.node(7 << KIND_BITS | LINK_KIND), None);
        assert_eq!(table.node(12345 << KIND_BITS), None);
        assert_eq!(table.node(0), None);
    }
}
