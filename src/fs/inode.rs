//! Inode numbers and the nodes of the mounted tree.
//!
//! An inode number is `serial << 4 | kind`: groups and records have serials that are unique
//! across both and never reused, so an inode always names the same object, survives renames,
//! and can never be confused with a deleted one. Serial 0 is never handed out by the keystore
//! and holds the fixed files of the root (the root itself is inode 1, as FUSE requires).

use std::collections::HashMap;
use std::sync::RwLock;

use crate::keystore::{GroupTag, KeyTag};

/// A node of the mounted tree, as the keystore sees it (by tag, never by name, so that a
/// rename does not invalidate it).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    Root,
    Quiesce,
    Status,
    Errors,
    ByTag,
    Group(GroupTag),
    GroupFile(GroupTag, GroupFile),
    Record(KeyTag),
    RecordFile(KeyTag, RecordFile),
    /// `.by-tag/TAG`, a symlink to the record.
    TagLink(KeyTag),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupFile {
    Json,
    Description,
    Cipher,
    Create,
    Active,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordFile {
    Json,
    State,
    Description,
    Key,
}

impl GroupFile {
    pub const ALL: [GroupFile; 5] = [
        GroupFile::Json,
        GroupFile::Description,
        GroupFile::Cipher,
        GroupFile::Create,
        GroupFile::Active,
    ];

    pub fn name(self) -> &'static str {
        match self {
            GroupFile::Json => ".group.json",
            GroupFile::Description => ".description",
            GroupFile::Cipher => ".cipher",
            GroupFile::Create => ".create",
            GroupFile::Active => ".active",
        }
    }

    pub fn from_name(name: &str) -> Option<GroupFile> {
        GroupFile::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl RecordFile {
    pub const ALL: [RecordFile; 4] = [
        RecordFile::Json,
        RecordFile::State,
        RecordFile::Description,
        RecordFile::Key,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RecordFile::Json => "record.json",
            RecordFile::State => "state",
            RecordFile::Description => "description",
            RecordFile::Key => "key",
        }
    }

    pub fn from_name(name: &str) -> Option<RecordFile> {
        RecordFile::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// The fixed files of the root, with their names.
pub const ROOT_FILES: [(Node, &str); 4] = [
    (Node::Quiesce, ".quiesce"),
    (Node::Status, ".status"),
    (Node::Errors, ".errors"),
    (Node::ByTag, ".by-tag"),
];

// Kinds (the low four bits). 0..=7 belong to a group's serial, 8..=15 to a record's.
// Kind 6 of a group is reserved for `.rotation` (a later issue).
const G_DIR: u64 = 0;
const G_JSON: u64 = 1;
const G_DESCRIPTION: u64 = 2;
const G_CIPHER: u64 = 3;
const G_CREATE: u64 = 4;
const G_ACTIVE: u64 = 5;
const R_DIR: u64 = 8;
const R_JSON: u64 = 9;
const R_STATE: u64 = 10;
const R_DESCRIPTION: u64 = 11;
const R_KEY: u64 = 12;
const R_TAG_LINK: u64 = 13;

pub const ROOT_INO: u64 = 1;
const QUIESCE_INO: u64 = 2;
const STATUS_INO: u64 = 3;
const ERRORS_INO: u64 = 4;
const BY_TAG_INO: u64 = 5;

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

    /// The inode number of `node`, given the serial of its group or record.
    pub fn ino(node: &Node, serial: u64) -> u64 {
        let kind = match node {
            Node::Root => return ROOT_INO,
            Node::Quiesce => return QUIESCE_INO,
            Node::Status => return STATUS_INO,
            Node::Errors => return ERRORS_INO,
            Node::ByTag => return BY_TAG_INO,
            Node::Group(_) => G_DIR,
            Node::GroupFile(_, f) => match f {
                GroupFile::Json => G_JSON,
                GroupFile::Description => G_DESCRIPTION,
                GroupFile::Cipher => G_CIPHER,
                GroupFile::Create => G_CREATE,
                GroupFile::Active => G_ACTIVE,
            },
            Node::Record(_) => R_DIR,
            Node::RecordFile(_, f) => match f {
                RecordFile::Json => R_JSON,
                RecordFile::State => R_STATE,
                RecordFile::Description => R_DESCRIPTION,
                RecordFile::Key => R_KEY,
            },
            Node::TagLink(_) => R_TAG_LINK,
        };
        serial << 4 | kind
    }

    /// The node an inode number stands for, if its object was ever handed out.
    pub fn node(&self, ino: u64) -> Option<Node> {
        let (serial, kind) = (ino >> 4, ino & 0xf);
        if serial == 0 {
            return match ino {
                ROOT_INO => Some(Node::Root),
                QUIESCE_INO => Some(Node::Quiesce),
                STATUS_INO => Some(Node::Status),
                ERRORS_INO => Some(Node::Errors),
                BY_TAG_INO => Some(Node::ByTag),
                _ => None,
            };
        }
        match (self.object(serial)?, kind) {
            (Object::Group(g), G_DIR) => Some(Node::Group(g)),
            (Object::Group(g), G_JSON) => Some(Node::GroupFile(g, GroupFile::Json)),
            (Object::Group(g), G_DESCRIPTION) => Some(Node::GroupFile(g, GroupFile::Description)),
            (Object::Group(g), G_CIPHER) => Some(Node::GroupFile(g, GroupFile::Cipher)),
            (Object::Group(g), G_CREATE) => Some(Node::GroupFile(g, GroupFile::Create)),
            (Object::Group(g), G_ACTIVE) => Some(Node::GroupFile(g, GroupFile::Active)),
            (Object::Record { tag, .. }, R_DIR) => Some(Node::Record(tag)),
            (Object::Record { tag, .. }, R_JSON) => Some(Node::RecordFile(tag, RecordFile::Json)),
            (Object::Record { tag, .. }, R_STATE) => Some(Node::RecordFile(tag, RecordFile::State)),
            (Object::Record { tag, .. }, R_DESCRIPTION) => {
                Some(Node::RecordFile(tag, RecordFile::Description))
            }
            (Object::Record { tag, .. }, R_KEY) => Some(Node::RecordFile(tag, RecordFile::Key)),
            (Object::Record { tag, .. }, R_TAG_LINK) => Some(Node::TagLink(tag)),
            _ => None,
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
            (Node::Group(g.clone()), 7),
            (Node::Record(k.clone()), 9),
            (Node::TagLink(k.clone()), 9),
        ];
        nodes.extend(GroupFile::ALL.map(|f| (Node::GroupFile(g.clone(), f), 7)));
        nodes.extend(RecordFile::ALL.map(|f| (Node::RecordFile(k.clone(), f), 9)));
        nodes.extend(ROOT_FILES.map(|(n, _)| (n, 0)));
        nodes.push((Node::Root, 0));
        let mut seen = std::collections::HashSet::new();
        for (node, serial) in nodes {
            let ino = InodeTable::ino(&node, serial);
            assert!(seen.insert(ino), "duplicate inode {ino}");
            assert_eq!(table.node(ino), Some(node));
        }
        assert_eq!(InodeTable::ino(&Node::Root, 0), 1);
        // A group's serial with a record's kind is nothing.
        assert_eq!(table.node(7 << 4 | R_DIR), None);
        assert_eq!(table.node(12345 << 4), None);
    }

    #[test]
    fn names() {
        for f in GroupFile::ALL {
            assert_eq!(GroupFile::from_name(f.name()), Some(f));
        }
        for f in RecordFile::ALL {
            assert_eq!(RecordFile::from_name(f.name()), Some(f));
        }
        assert_eq!(RecordFile::from_name(".active"), None);
    }
}
