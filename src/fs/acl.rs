//! `--admins GROUP`: a second group that may make changes, next to the group that reads
//! (`--key-readers`). A file has one group, so the admins are given their rights by a POSIX
//! ACL that the kernel itself enforces (`FUSE_POSIX_ACL` with `default_permissions`): every
//! entry answers `system.posix_acl_access` with a named-group entry for the admins.
//!
//! The admins list every directory and make and remove groups and records in it, read all
//! metadata, write every control file, and never read a `key` or `.audit`: lifecycle managers
//! need not see key material.

use super::inode::Node;
use super::table::{Content, Write};

/// The admins' rights on `node` (rwx bits, 0 to 7).
pub fn admin_bits(node: &Node) -> u16 {
    let Some(file) = node.file() else {
        return 0o7; // directories: list, enter, and mkdir, rmdir, mv in them
    };
    if matches!(file.content, Content::Secret { .. }) || file.name == ".audit" {
        return 0;
    }
    let read = if file.perm & 0o400 != 0 { 0o4 } else { 0 };
    let write = match file.write {
        Write::ReadOnly => 0,
        _ => 0o2,
    };
    read | write
}

const ACL_XATTR_VERSION: u32 = 2;
const ACL_USER_OBJ: u16 = 0x01;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const ACL_UNDEFINED_ID: u32 = u32::MAX;

/// The value of `system.posix_acl_access` (the kernel's `posix_acl_xattr` layout: a version,
/// then tag, permissions and id per entry, little-endian). `perm` is the entry's mode without
/// the admins, who appear as a named group; the mask covers both groups.
pub fn access_acl(perm: u16, admins: u32, admin: u16) -> Vec<u8> {
    let owner = (perm >> 6) & 0o7;
    let group = (perm >> 3) & 0o7;
    let other = perm & 0o7;
    let entries = [
        (ACL_USER_OBJ, owner, ACL_UNDEFINED_ID),
        (ACL_GROUP_OBJ, group, ACL_UNDEFINED_ID),
        (ACL_GROUP, admin, admins),
        (ACL_MASK, group | admin, ACL_UNDEFINED_ID),
        (ACL_OTHER, other, ACL_UNDEFINED_ID),
    ];
    let mut out = ACL_XATTR_VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::inode::Of;
    use crate::fs::table::{Dir, FileId};
    use crate::keystore::KeyTag;

    #[test]
    fn admins_change_and_read_metadata_but_never_keys() {
        let k = KeyTag::random();
        let file = |name| {
            Node::File(
                FileId::find(Dir::Record, name).unwrap(),
                Of::Record(k.clone()),
            )
        };
        assert_eq!(admin_bits(&file("state")), 0o6);
        assert_eq!(admin_bits(&file("record.json")), 0o4);
        assert_eq!(admin_bits(&file("key")), 0);
        assert_eq!(admin_bits(&Node::Record(k.clone())), 0o7);
        let audit = Node::File(FileId::find(Dir::Root, ".audit").unwrap(), Of::Root);
        assert_eq!(admin_bits(&audit), 0);
        let acl = access_acl(0o640, 1234, 0o6);
        assert_eq!(acl.len(), 4 + 5 * 8);
        assert_eq!(&acl[..4], &2u32.to_le_bytes());
        // The named group entry: tag 8, rw-, gid 1234.
        assert_eq!(&acl[20..28], &[8, 0, 6, 0, 0xd2, 0x04, 0, 0]);
        // The mask covers the readers' r-- and the admins' rw-.
        assert_eq!(&acl[28..32], &[0x10, 0, 6, 0]);
    }
}
