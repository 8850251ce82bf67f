//! The shape of the mounted tree: which name in which directory is which node, and the
//! listing of a directory from a readdir cookie. Pure functions of the keystore and the table:
//! each costs O(1) or O(log n) keystore queries, never a walk over the whole keystore.

use super::inode::{InodeTable, Node, Object, Of};
use super::render::View;
use super::table::{Cache, Content, Dir, FileId, BY_TAG};
use crate::keystore::{KeyGroup, KeyRecord, KeyTag, Keystore};

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

/// The serial of the group or record a node belongs to (0 for the root and its files), if
/// that object exists. Registers the object in the inode table.
pub fn serial(ks: &Keystore, table: &InodeTable, node: &Node) -> Option<u64> {
    let of = match node {
        Node::Root | Node::ByTag => return Some(0),
        Node::Group(g) => Of::Group(g.clone()),
        Node::Record(k) | Node::TagLink(k) => Of::Record(k.clone()),
        Node::File(_, of) => of.clone(),
    };
    match of {
        Of::Root => Some(0),
        Of::Group(g) => {
            let group = ks.group(&g)?;
            table.remember(group.serial, Object::Group(g));
            Some(group.serial)
        }
        Of::Record(k) => {
            let r = ks.record(&k)?;
            let group_serial = ks.group(&r.group)?.serial;
            table.remember(
                r.serial,
                Object::Record {
                    tag: k,
                    group: r.group.clone(),
                    group_serial,
                },
            );
            Some(r.serial)
        }
    }
}

/// The node called `name` in directory `parent`, if it exists right now.
pub fn lookup(v: &View<'_>, parent: &Node, name: &str) -> Option<Node> {
    let ks = v.keystore();
    let node = match parent {
        Node::Root if name == BY_TAG => Node::ByTag,
        Node::Root => match FileId::find(Dir::Root, name) {
            Some(f) => Node::File(f, Of::Root),
            None => Node::Group(ks.group_by_name(name)?.tag.clone()),
        },
        Node::Group(g) => match FileId::find(Dir::Group, name) {
            Some(f) => Node::File(f, Of::Group(g.clone())),
            None => Node::Record(ks.record_in(g, name)?.tag.clone()),
        },
        Node::Record(k) => Node::File(FileId::find(Dir::Record, name)?, Of::Record(k.clone())),
        Node::ByTag => Node::TagLink(KeyTag::parse(name).ok()?),
        _ => return None,
    };
    exists(v, &node).then_some(node)
}

/// Whether a node exists: its object does, and a file that comes and goes (`.active`) renders.
pub fn exists(v: &View<'_>, node: &Node) -> bool {
    let ks = v.keystore();
    let object = match node.of() {
        Some(Of::Root) | None => match node {
            Node::Group(g) => ks.group(g).is_some(),
            Node::Record(k) => ks.record(k).is_some(),
            _ => true,
        },
        Some(Of::Group(g)) => ks.group(&g).is_some(),
        Some(Of::Record(k)) => ks.record(&k).is_some(),
    };
    match (node.file(), node.of()) {
        (Some(f), Some(of)) if object && f.cache == Cache::Vanishing => match f.content {
            Content::Rendered(render) => render(v, &of).is_some(),
            Content::Secret { len, .. } => len(v, &of).is_some(),
        },
        _ => object,
    }
}

/// The directory holding `node` (the root is its own parent).
pub fn parent(ks: &Keystore, node: &Node) -> Option<Node> {
    Some(match node {
        Node::Root | Node::ByTag | Node::Group(_) | Node::File(_, Of::Root) => Node::Root,
        Node::File(_, Of::Group(g)) => Node::Group(g.clone()),
        Node::Record(k) => Node::Group(ks.record(k)?.group.clone()),
        Node::File(_, Of::Record(k)) => Node::Record(k.clone()),
        Node::TagLink(_) => Node::ByTag,
    })
}

/// The path of `node` inside the mount, with a leading `/` (`/` for the root itself).
pub fn path(ks: &Keystore, node: &Node) -> Option<String> {
    let own = match node {
        Node::Root => return Some("/".into()),
        Node::ByTag => BY_TAG.to_string(),
        Node::Group(g) => ks.group(g)?.name.to_string(),
        Node::Record(k) => ks.record(k)?.name.to_string(),
        Node::File(id, _) => id.file().name.to_string(),
        Node::TagLink(k) => k.to_string(),
    };
    let dir = parent(ks, node)?;
    match dir {
        Node::Root => Some(format!("/{own}")),
        _ => Some(format!("{}/{own}", path(ks, &dir)?)),
    }
}

/// The fixed entries of a directory after "." and "..", in listing order.
fn fixed_entries(dir: &Node) -> Vec<(Node, String)> {
    let files = |d: Dir, of: Of| {
        FileId::all_in(d)
            .map(move |f| (Node::File(f, of.clone()), f.file().name.to_string()))
            .collect::<Vec<_>>()
    };
    match dir {
        Node::Root => {
            let mut v = files(Dir::Root, Of::Root);
            v.push((Node::ByTag, BY_TAG.to_string()));
            v
        }
        Node::Group(g) => files(Dir::Group, Of::Group(g.clone())),
        Node::Record(k) => files(Dir::Record, Of::Record(k.clone())),
        _ => Vec::new(),
    }
}

/// The entries of `dir` after `cookie` (0: from the start), in a stable order, until `add`
/// says the reply is full. Calls `add` with each entry; "." and ".." come first.
pub fn list(
    v: &View<'_>,
    table: &InodeTable,
    dir: &Node,
    cookie: u64,
    mut add: impl FnMut(Entry) -> bool,
) {
    let ks = v.keystore();
    let Some(dir_serial) = serial(ks, table, dir) else {
        return;
    };
    let Some(up) = parent(ks, dir) else { return };
    let Some(up_serial) = serial(ks, table, &up) else {
        return;
    };
    if !matches!(
        dir,
        Node::Root | Node::ByTag | Node::Group(_) | Node::Record(_)
    ) {
        return;
    }
    let mut fixed: Vec<(Node, u64, String)> = vec![
        (dir.clone(), dir_serial, ".".into()),
        (up, up_serial, "..".into()),
    ];
    fixed.extend(
        fixed_entries(dir)
            .into_iter()
            .map(|(node, name)| (node, dir_serial, name)),
    );
    for (i, (node, serial, name)) in fixed.into_iter().enumerate() {
        let c = i as u64 + 1;
        if c <= cookie || !exists(v, &node) {
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
    r: &KeyRecord,
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
    let mut emit = |g: &KeyGroup, after_record: u64| -> bool {
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

// Tested through the operation layer (ops/tests.rs), against a real keystore.
