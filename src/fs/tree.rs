//! The shape of the mounted tree: which name in which directory is which node, and the
//! listing of a directory from a readdir cookie. Pure functions of the keystore: each costs
//! O(1) or O(log n) keystore queries, never a walk over the whole keystore.

use super::inode::{GroupFile, InodeTable, Node, Object, RecordFile, ROOT_FILES};
use crate::keystore::Keystore;

/// Readdir cookies: fixed entries ("." first) get 1, 2, ...; groups and records get
/// `DYNAMIC_BASE + serial`. Serials are never reused, so a cookie stays valid while the
/// directory changes: nothing is skipped or repeated.
pub const DYNAMIC_BASE: u64 = 16;

/// A directory entry handed to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub node: Node,
    pub name: String,
    pub ino: u64,
    pub cookie: u64,
}

/// The serial of the group or record a node belongs to (0 for the root's own files), and
/// whether the node exists right now. Registers the object in the inode table.
pub fn serial(ks: &Keystore, table: &InodeTable, node: &Node) -> Option<u64> {
    match node {
        Node::Root | Node::Quiesce | Node::Status | Node::Errors | Node::ByTag => Some(0),
        Node::Group(g) | Node::GroupFile(g, _) => {
            let group = ks.group(g)?;
            if matches!(node, Node::GroupFile(_, GroupFile::Active)) && group.active().is_none() {
                return None;
            }
            table.remember(group.serial, Object::Group(g.clone()));
            Some(group.serial)
        }
        Node::Record(k) | Node::RecordFile(k, _) | Node::TagLink(k) => {
            let r = ks.record(k)?;
            let group_serial = ks.group(&r.group)?.serial;
            table.remember(
                r.serial,
                Object::Record {
                    tag: k.clone(),
                    group: r.group.clone(),
                    group_serial,
                },
            );
            Some(r.serial)
        }
    }
}

/// The node called `name` in directory `parent`.
pub fn lookup(ks: &Keystore, parent: &Node, name: &str) -> Option<Node> {
    let node = match parent {
        Node::Root => match ROOT_FILES.iter().find(|(_, n)| *n == name) {
            Some((node, _)) => node.clone(),
            None => Node::Group(ks.group_by_name(name)?.tag.clone()),
        },
        Node::Group(g) => match GroupFile::from_name(name) {
            Some(f) => Node::GroupFile(g.clone(), f),
            None => Node::Record(ks.record_in(g, name)?.tag.clone()),
        },
        Node::Record(k) => Node::RecordFile(k.clone(), RecordFile::from_name(name)?),
        Node::ByTag => {
            let tag = crate::keystore::KeyTag::parse(name).ok()?;
            ks.record(&tag)?;
            Node::TagLink(tag)
        }
        _ => return None,
    };
    exists(ks, &node).then_some(node)
}

fn exists(ks: &Keystore, node: &Node) -> bool {
    match node {
        Node::Root | Node::Quiesce | Node::Status | Node::Errors | Node::ByTag => true,
        Node::GroupFile(g, GroupFile::Active) => ks.group(g).is_some_and(|g| g.active().is_some()),
        Node::Group(g) | Node::GroupFile(g, _) => ks.group(g).is_some(),
        Node::Record(k) | Node::RecordFile(k, _) | Node::TagLink(k) => ks.record(k).is_some(),
    }
}

/// The directory holding `node` (the root is its own parent).
pub fn parent(ks: &Keystore, node: &Node) -> Option<Node> {
    Some(match node {
        Node::Root | Node::Quiesce | Node::Status | Node::Errors | Node::ByTag => Node::Root,
        Node::Group(_) => Node::Root,
        Node::GroupFile(g, _) => Node::Group(g.clone()),
        Node::Record(k) => Node::Group(ks.record(k)?.group.clone()),
        Node::RecordFile(k, _) => Node::Record(k.clone()),
        Node::TagLink(_) => Node::ByTag,
    })
}

/// The path of `node` inside the mount, with a leading `/` (`/` for the root itself).
pub fn path(ks: &Keystore, node: &Node) -> Option<String> {
    let own = match node {
        Node::Root => return Some("/".into()),
        Node::Quiesce | Node::Status | Node::Errors | Node::ByTag => ROOT_FILES
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, name)| (*name).to_string())?,
        Node::Group(g) => ks.group(g)?.name.to_string(),
        Node::GroupFile(_, f) => f.name().to_string(),
        Node::Record(k) => ks.record(k)?.name.to_string(),
        Node::RecordFile(_, f) => f.name().to_string(),
        Node::TagLink(k) => k.to_string(),
    };
    let dir = parent(ks, node)?;
    match dir {
        Node::Root => Some(format!("/{own}")),
        _ => Some(format!("{}/{own}", path(ks, &dir)?)),
    }
}

/// The entries of `dir` after `cookie` (0: from the start), in a stable order, until `add`
/// says the reply is full. Calls `add` with each entry; "." and ".." come first.
pub fn list(
    ks: &Keystore,
    table: &InodeTable,
    dir: &Node,
    cookie: u64,
    mut add: impl FnMut(Entry) -> bool,
) {
    let Some(dir_serial) = serial(ks, table, dir) else {
        return;
    };
    let Some(up) = parent(ks, dir) else { return };
    let Some(up_serial) = serial(ks, table, &up) else {
        return;
    };
    let mut fixed: Vec<(Node, u64, String)> = vec![
        (dir.clone(), dir_serial, ".".into()),
        (up, up_serial, "..".into()),
    ];
    match dir {
        Node::Root => fixed.extend(
            ROOT_FILES
                .iter()
                .map(|(n, s)| (n.clone(), 0, s.to_string())),
        ),
        Node::Group(g) => fixed.extend(GroupFile::ALL.iter().map(|f| {
            (
                Node::GroupFile(g.clone(), *f),
                dir_serial,
                f.name().to_string(),
            )
        })),
        Node::Record(k) => fixed.extend(RecordFile::ALL.iter().map(|f| {
            (
                Node::RecordFile(k.clone(), *f),
                dir_serial,
                f.name().to_string(),
            )
        })),
        Node::ByTag => {}
        _ => return,
    }
    for (i, (node, serial, name)) in fixed.into_iter().enumerate() {
        let c = i as u64 + 1;
        if c <= cookie || !exists(ks, &node) {
            continue;
        }
        let ino = InodeTable::ino(&node, serial);
        if add(Entry {
            node,
            name,
            ino,
            cookie: c,
        }) {
            return;
        }
    }
    let after = cookie.saturating_sub(DYNAMIC_BASE);
    match dir {
        Node::Root => {
            for g in ks.groups_after(after) {
                let node = Node::Group(g.tag.clone());
                table.remember(g.serial, Object::Group(g.tag.clone()));
                let entry = Entry {
                    ino: InodeTable::ino(&node, g.serial),
                    node,
                    name: g.name.to_string(),
                    cookie: DYNAMIC_BASE + g.serial,
                };
                if add(entry) {
                    return;
                }
            }
        }
        Node::Group(g) => {
            for r in ks.records_of(g, after) {
                if add(record_entry(
                    table,
                    Node::Record(r.tag.clone()),
                    r,
                    dir_serial,
                    None,
                )) {
                    return;
                }
            }
        }
        Node::ByTag => list_tags(ks, table, after, add),
        _ => {}
    }
}

fn record_entry(
    table: &InodeTable,
    node: Node,
    r: &crate::keystore::KeyRecord,
    group_serial: u64,
    name: Option<String>,
) -> Entry {
    table.remember(
        r.serial,
        Object::Record {
            tag: r.tag.clone(),
            group: r.group.clone(),
            group_serial,
        },
    );
    Entry {
        ino: InodeTable::ino(&node, r.serial),
        node,
        name: name.unwrap_or_else(|| r.name.to_string()),
        cookie: DYNAMIC_BASE + r.serial,
    }
}

/// `.by-tag` lists records group by group, each group's in serial order. To resume after a
/// record, the inode table says which group it was in (even if it was deleted since).
fn list_tags(ks: &Keystore, table: &InodeTable, after: u64, mut add: impl FnMut(Entry) -> bool) {
    let (first_group, after_record, groups_after) = match after {
        0 => (None, 0, 0),
        _ => match table.object(after) {
            Some(Object::Record {
                group,
                group_serial,
                ..
            }) => (Some(group), after, group_serial),
            _ => return,
        },
    };
    let mut emit = |g: &crate::keystore::KeyGroup, after_record: u64| -> bool {
        for r in ks.records_of(&g.tag, after_record) {
            let node = Node::TagLink(r.tag.clone());
            if add(record_entry(
                table,
                node,
                r,
                g.serial,
                Some(r.tag.to_string()),
            )) {
                return true;
            }
        }
        false
    };
    if let Some(g) = first_group.as_ref().and_then(|t| ks.group(t)) {
        if emit(g, after_record) {
            return;
        }
    }
    for g in ks.groups_after(groups_after) {
        if emit(g, 0) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::{Change, Cipher, GroupTag, KeyTag, Name, State, Timestamp, WrappedKey};

    fn add_group(ks: &mut Keystore, name: &str) -> GroupTag {
        let tag = GroupTag::random();
        ks.apply(&Change::CreateGroup {
            tag: tag.clone(),
            name: Name::parse(name).unwrap(),
            cipher: Cipher::Aes256,
            description: String::new(),
            at: Timestamp::now(),
        })
        .unwrap();
        tag
    }

    fn add_record(ks: &mut Keystore, g: &GroupTag, name: &str, state: State) -> KeyTag {
        let tag = KeyTag::random();
        ks.apply(&Change::CreateRecord {
            tag: tag.clone(),
            group: g.clone(),
            name: Name::parse(name).unwrap(),
            state,
            description: String::new(),
            wrapped_key: WrappedKey(vec![0; 60]),
            key_len: 32,
            derivation: None,
            at: Timestamp::now(),
        })
        .unwrap();
        tag
    }

    fn names(ks: &Keystore, table: &InodeTable, dir: &Node, cookie: u64, max: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        list(ks, table, dir, cookie, |e| {
            if out.len() == max {
                return true;
            }
            out.push(e);
            false
        });
        out
    }

    #[test]
    fn lookup_and_path() {
        let mut ks = Keystore::new();
        let table = InodeTable::default();
        let g = add_group(&mut ks, "pool");
        let k = add_record(&mut ks, &g, "k1", State::Prelive);
        let group = lookup(&ks, &Node::Root, "pool").unwrap();
        assert_eq!(group, Node::Group(g.clone()));
        assert_eq!(lookup(&ks, &group, ".active"), None, "no active record yet");
        let rec = lookup(&ks, &group, "k1").unwrap();
        let state = lookup(&ks, &rec, "state").unwrap();
        assert_eq!(path(&ks, &state).unwrap(), "/pool/k1/state");
        assert_eq!(path(&ks, &Node::Status).unwrap(), "/.status");
        assert_eq!(
            lookup(&ks, &Node::ByTag, k.as_str()),
            Some(Node::TagLink(k.clone()))
        );
        assert_eq!(lookup(&ks, &Node::ByTag, "00"), None);
        assert_eq!(lookup(&ks, &rec, "nope"), None);
        assert_eq!(lookup(&ks, &state, "x"), None);
        // Inode numbers resolve back once handed out.
        let s = serial(&ks, &table, &state).unwrap();
        assert_eq!(table.node(InodeTable::ino(&state, s)), Some(state));
    }

    #[test]
    fn cookies_survive_changes() {
        let mut ks = Keystore::new();
        let table = InodeTable::default();
        let g = add_group(&mut ks, "pool");
        let tags: Vec<KeyTag> = (0..10)
            .map(|i| add_record(&mut ks, &g, &format!("k{i}"), State::Prelive))
            .collect();
        let dir = Node::Group(g.clone());
        let first = names(&ks, &table, &dir, 0, 9);
        // ".", "..", 5 group files minus the absent .active, then the first 3 records.
        let shown: Vec<&str> = first.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            shown,
            [
                ".",
                "..",
                ".group.json",
                ".description",
                ".cipher",
                ".create",
                "k0",
                "k1",
                "k2"
            ]
        );
        // Delete a listed and an unlisted record between two readdir calls.
        ks.apply(&Change::DeleteRecord {
            tag: tags[1].clone(),
        })
        .unwrap();
        ks.apply(&Change::DeleteRecord {
            tag: tags[5].clone(),
        })
        .unwrap();
        let rest = names(&ks, &table, &dir, first.last().unwrap().cookie, 100);
        let shown: Vec<&str> = rest.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(shown, ["k3", "k4", "k6", "k7", "k8", "k9"]);
    }

    #[test]
    fn by_tag_resumes_across_groups() {
        let mut ks = Keystore::new();
        let table = InodeTable::default();
        let g1 = add_group(&mut ks, "a");
        let g2 = add_group(&mut ks, "b");
        let mut all = Vec::new();
        for i in 0..3 {
            all.push(add_record(&mut ks, &g1, &format!("x{i}"), State::Prelive));
            all.push(add_record(&mut ks, &g2, &format!("y{i}"), State::Prelive));
        }
        let mut seen = Vec::new();
        let mut cookie = 0;
        loop {
            let page = names(&ks, &table, &Node::ByTag, cookie, 2);
            if page.is_empty() {
                break;
            }
            cookie = page.last().unwrap().cookie;
            seen.extend(page.into_iter().map(|e| e.name));
            if seen.len() == 4 {
                // The record we resume after disappears.
                let last = KeyTag::parse(&seen[3]).unwrap();
                ks.apply(&Change::DeleteRecord { tag: last }).unwrap();
            }
        }
        assert_eq!(seen[..2], [".", ".."]);
        let mut tags: Vec<String> = seen[2..].to_vec();
        tags.sort();
        let mut want: Vec<String> = all.iter().map(|t| t.to_string()).collect();
        want.sort();
        assert_eq!(tags, want);
    }
}
