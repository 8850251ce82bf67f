//! What each mounted file is, said once: name, directory, type, mode, cache policy, what its
//! content is and what a write to it means. Lookup, readdir, getattr, open, read and write are
//! all derived from this table, and a file's size is always the length of what it renders, so
//! `stat` and `cat` cannot disagree.
//!
//! Adding a file is one entry here plus its behaviour: a render function (`render.rs`) and,
//! if it is writable, a write function (`commands.rs`).

use std::time::Duration;

use fuser::FileType;

use super::commands;
use super::error::FsError;
use super::inode::Of;
use super::render::{self, View};
use crate::crypto::KeyMaterial;
use crate::service::Kms;

/// The directory a fixed file lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    Root,
    Group,
    Record,
    ByTag,
}

/// How long the kernel may keep a node's attributes, its name, and its bytes. Everything but
/// the root's files is cached until a change touches its object, and then forgotten exactly
/// (`cache.rs`): the TTL is only a bound on a mistake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cache {
    /// Directories: their names change through this mount's own mkdir, rmdir and rename, for
    /// which the kernel updates its caches itself, or through another front end, whose
    /// vanished names are forgotten; their attributes (link count, times) are forgotten when
    /// a change touches the object.
    Stable,
    /// Bytes that never change (`key`): kept in the page cache across opens. Whether they can
    /// be read does change (the size shows 0 while the state forbids it): the attributes are
    /// forgotten with the record's, so `cat key` right after `echo active > state` reads the
    /// whole key.
    FixedBytes,
    /// A group's or a record's files, which show nothing but the keystore: attributes and
    /// pages cached until a change touches the object.
    Tracked,
    /// The root's files show more than the keystore (holds, refusals, the audit log), which
    /// changes without a change: attributes never cached, read with direct I/O.
    Volatile,
    /// Links that come and go (`.active`, `.by-tag/TAG`): cached like `Tracked`, and their
    /// names forgotten when they go.
    Vanishing,
}

/// Names, attributes and pages kept until a change touches them.
pub const CACHED_TTL: Duration = Duration::from_secs(600);
pub const NO_TTL: Duration = Duration::ZERO;

impl Cache {
    /// (attributes, directory entry).
    pub fn ttls(self) -> (Duration, Duration) {
        match self {
            Cache::Stable | Cache::FixedBytes | Cache::Tracked | Cache::Vanishing => {
                (CACHED_TTL, CACHED_TTL)
            }
            // The names of the root's files never change.
            Cache::Volatile => (NO_TTL, CACHED_TTL),
        }
    }
}

/// Renders a file from the keystore; None when the file does not exist right now.
pub type Render = fn(&View<'_>, &Of) -> Option<Vec<u8>>;

pub enum Content {
    /// Rendered on every open and stat.
    Rendered(Render),
    /// Bytes handed out only by `open`, after the service's checks; `len` gives the size
    /// without touching them.
    Secret {
        len: fn(&View<'_>, &Of) -> Option<u64>,
        open: fn(&Kms, &Of) -> Result<KeyMaterial, FsError>,
    },
}

/// A command or a commit, applied to the file's object.
pub type Apply = fn(&Kms, &Of, &str) -> Result<(), FsError>;

/// What writing a file means.
#[derive(Clone, Copy)]
pub enum Write {
    ReadOnly,
    /// One short command per `write()`, the offset ignored, applied in that `write()` so the
    /// caller gets the refusal; the shell's truncate is accepted and does nothing.
    Command(Apply),
    /// One JSON object, over as many writes of one open file as it takes; acted on by the
    /// write that completes it.
    Object(fn(&Kms, &Of, &[u8]) -> Result<(), FsError>),
    /// A small ordinary file, committed when flushed or closed.
    Text(Apply),
    /// Like `Object`, or one word in one `write()`: acted on by the write that completes it.
    Request(fn(&Kms, &Of, &[u8]) -> Result<(), FsError>),
}

pub struct File {
    pub dir: Dir,
    pub name: &'static str,
    pub kind: FileType,
    pub perm: u16,
    pub cache: Cache,
    pub content: Content,
    pub write: Write,
}

impl File {
    pub fn writable(&self) -> bool {
        !matches!(self.write, Write::ReadOnly)
    }
}

/// An index into `FILES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId(pub u8);

impl FileId {
    pub fn file(self) -> &'static File {
        &FILES[self.0 as usize]
    }

    /// The file called `name` in a directory of kind `dir`.
    pub fn find(dir: Dir, name: &str) -> Option<FileId> {
        FILES
            .iter()
            .position(|f| f.dir == dir && f.name == name)
            .map(|i| FileId(i as u8))
    }

    /// The fixed files of a directory of kind `dir`, in listing order.
    pub fn all_in(dir: Dir) -> impl Iterator<Item = FileId> {
        (0..FILES.len())
            .filter(move |&i| FILES[i].dir == dir)
            .map(|i| FileId(i as u8))
    }
}

/// Who sees what. The kernel enforces these modes (`default_permissions`); root passes them,
/// so the operation layer refuses what root must not do itself (writing read-only files,
/// reading a key whose state forbids it).
///
/// - The owner (the mounting user) reads and changes everything.
/// - The group (`--key-readers`, else the owner's own group) reads everything but `.create`
///   and `.audit` (every caller and every key read, for the owner alone):
///   keys (while their state allows), all metadata, `.status`, `.quiesce`, `.errors` (which
///   names callers: the group is a trusted backup account, not the world). It changes nothing.
/// - Others get nothing, not even the names: no entry has a bit for them.
///
/// So every mode is the owner's bits plus group read wherever the owner reads.
pub const DIR_PERM: u16 = 0o750;

const fn rendered(
    dir: Dir,
    name: &'static str,
    perm: u16,
    cache: Cache,
    render: Render,
    write: Write,
) -> File {
    File {
        dir,
        name,
        kind: FileType::RegularFile,
        perm,
        cache,
        content: Content::Rendered(render),
        write,
    }
}

const fn link(dir: Dir, name: &'static str, target: Render) -> File {
    File {
        dir,
        name,
        kind: FileType::Symlink,
        // Symlinks always show 0777; only their target's mode matters.
        perm: 0o777,
        cache: Cache::Vanishing,
        content: Content::Rendered(target),
        write: Write::ReadOnly,
    }
}

use Cache::{Tracked, Volatile};
use Dir::{Group, Record, Root};
use Write::ReadOnly;

/// The fixed files of the tree. Modes (see `DIR_PERM` for the model): control files are
/// writable by the owner, metadata is read-only, `.create` is write-only for the owner (it
/// reads back empty, so `cp -r` and `tar` pass over it), `key` is read-only.
pub static FILES: [File; 15] = [
    rendered(
        Root,
        ".quiesce",
        0o640,
        Volatile,
        render::quiesce,
        Write::Command(commands::quiesce),
    ),
    rendered(Root, ".status", 0o440, Volatile, render::status, ReadOnly),
    rendered(Root, ".errors", 0o440, Volatile, render::errors, ReadOnly),
    // Every caller and every key read: for the owner alone.
    rendered(Root, ".audit", 0o400, Volatile, render::audit, ReadOnly),
    // May carry a passphrase: write-only for the owner, like `.create`.
    rendered(
        Root,
        ".change-key",
        0o200,
        Volatile,
        render::nothing,
        Write::Request(commands::change_key),
    ),
    rendered(
        Group,
        ".group.json",
        0o440,
        Tracked,
        render::group_json,
        ReadOnly,
    ),
    rendered(
        Group,
        ".description",
        0o640,
        Tracked,
        render::group_description,
        Write::Text(commands::describe_group),
    ),
    rendered(
        Group,
        ".cipher",
        0o640,
        Tracked,
        render::cipher,
        Write::Command(commands::cipher),
    ),
    rendered(
        Group,
        ".create",
        0o200,
        Tracked,
        render::nothing,
        Write::Object(commands::create),
    ),
    link(Group, ".active", render::active_target),
    rendered(
        Group,
        ".rotation",
        0o640,
        Tracked,
        render::rotation,
        Write::Command(commands::rotation),
    ),
    rendered(
        Record,
        "record.json",
        0o440,
        Tracked,
        render::record_json,
        ReadOnly,
    ),
    rendered(
        Record,
        "state",
        0o640,
        Tracked,
        render::state,
        Write::Command(commands::state),
    ),
    rendered(
        Record,
        "description",
        0o640,
        Tracked,
        render::record_description,
        Write::Text(commands::describe_record),
    ),
    File {
        dir: Record,
        name: "key",
        kind: FileType::RegularFile,
        perm: 0o440,
        cache: Cache::FixedBytes,
        content: Content::Secret {
            len: render::key_len,
            open: commands::read_key,
        },
        write: ReadOnly,
    },
];

/// `.by-tag/TAG`: named by the record's tag, a symlink to `../GROUP/RECORD`.
pub static TAG_LINK: File = link(Dir::ByTag, "TAG", render::tag_target);

/// The root's fixed directory.
pub const BY_TAG: &str = ".by-tag";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_agree_with_what_a_write_means() {
        for f in FILES.iter().chain([&TAG_LINK]) {
            let owner_writes = f.perm & 0o200 != 0 && f.kind == FileType::RegularFile;
            assert_eq!(owner_writes, f.writable(), "{}", f.name);
            // Key material is kept in the page cache only for a file whose bytes never change.
            if matches!(f.content, Content::Secret { .. }) {
                assert_eq!(f.cache, Cache::FixedBytes, "{}", f.name);
                assert_eq!(f.perm & 0o222, 0, "{}", f.name);
            }
            // The model: nothing for others; the group reads exactly what the owner reads,
            // and never writes.
            if f.kind == FileType::RegularFile {
                assert_eq!(f.perm & 0o007, 0, "{}", f.name);
                assert_eq!(f.perm & 0o020, 0, "{}", f.name);
                if f.name != ".audit" {
                    assert_eq!(f.perm & 0o040 != 0, f.perm & 0o400 != 0, "{}", f.name);
                }
            }
            assert_eq!(f.kind == FileType::Symlink, f.cache == Cache::Vanishing);
        }
    }

    #[test]
    fn names_are_unique_per_directory() {
        for (i, a) in FILES.iter().enumerate() {
            assert!(
                a.name.starts_with('.') || a.dir == Dir::Record,
                "{}",
                a.name
            );
            for b in &FILES[i + 1..] {
                assert!(a.dir != b.dir || a.name != b.name, "{}", a.name);
            }
            assert_eq!(FileId::find(a.dir, a.name), Some(FileId(i as u8)));
        }
        assert_eq!(FileId::find(Dir::Record, ".active"), None);
    }
}
