//! The operation layer without FUSE: the exact call sequences the kernel sends for what the
//! shell and the usual tools do (`docs/fuse-notes.md`), replayed against a real keystore in
//! a temporary directory. No mount, no root, no `/dev/fuse`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::Duration;

use fuser::{FileType, FopenFlags};

use super::{DirEntry, Operations, RenameMode, SetAttr};
use crate::fs::errno::errno_of;
use crate::fs::error::FsError;
use crate::fs::inode::ROOT_INO;
use crate::fs::ring::Caller;
use crate::fs::table::{Dir, FileId, CACHED_TTL, FILES};
use crate::fs::tree::DYNAMIC_BASE;
use crate::service::Kms;

const ME: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 0,
};

struct Fixture {
    _dir: tempfile::TempDir,
    kms: Arc<Kms>,
    ops: Operations,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    crate::store::init(&data, Default::default()).unwrap();
    let kms = Kms::open(&data).unwrap();
    let ops = Operations::new(kms.clone(), "/m".into(), crate::fs::attr::Owner::current());
    Fixture {
        _dir: dir,
        kms,
        ops,
    }
}

fn errno<T: std::fmt::Debug>(r: Result<T, FsError>) -> i32 {
    errno_of(&r.expect_err("expected a refusal"))
}

impl Fixture {
    /// The inode of a path below the mount (`""` is the root), as LOOKUPs find it.
    fn ino(&self, path: &str) -> u64 {
        self.try_ino(path)
            .unwrap_or_else(|e| panic!("lookup {path}: {e}"))
    }

    fn try_ino(&self, path: &str) -> Result<u64, FsError> {
        let mut ino = ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = self.ops.lookup(ino, OsStr::new(part))?.attr.ino.0;
        }
        Ok(ino)
    }

    fn split(path: &str) -> (&str, &str) {
        path.rsplit_once('/').unwrap_or(("", path))
    }

    fn mkdir(&self, path: &str) -> Result<u64, FsError> {
        let (dir, name) = Self::split(path);
        let parent = self.ino(dir);
        self.ops
            .mkdir(ME, parent, OsStr::new(name))
            .map(|e| e.attr.ino.0)
    }

    /// `cat`: OPEN, READ until short, FLUSH, RELEASE.
    fn cat(&self, path: &str) -> Result<Vec<u8>, FsError> {
        let o = self.ops.open(ME, self.ino(path), libc::O_RDONLY)?;
        let mut out = Vec::new();
        loop {
            let chunk = self.ops.read(o.fh, out.len() as u64, 4096)?.bytes;
            out.extend_from_slice(&chunk);
            if chunk.len() < 4096 {
                break;
            }
        }
        self.ops.flush(ME, o.fh)?;
        self.ops.release(ME, o.fh);
        Ok(out)
    }

    fn text(&self, path: &str) -> String {
        String::from_utf8(self.cat(path).unwrap()).unwrap()
    }

    fn size(&self, path: &str) -> u64 {
        self.ops.getattr(self.ino(path)).unwrap().attr.size
    }

    /// The shell's `echo TEXT > path` (no ATOMIC_O_TRUNC): OPEN without O_TRUNC, SETATTR
    /// size 0 without a handle, FLUSH (the shell dups the descriptor and closes the
    /// original), WRITE at 0, FLUSH and RELEASE at close. Returns the write's result; the
    /// shell sees nothing of what flush and release say.
    fn echo_over(&self, path: &str, text: &str) -> Result<(), FsError> {
        let ino = self.ino(path);
        let o = self.ops.open(ME, ino, libc::O_WRONLY | libc::O_TRUNC)?;
        let set = SetAttr {
            size: Some(0),
            ..Default::default()
        };
        let truncated = self.ops.setattr(ME, ino, set, None).map(drop);
        let _ = self.ops.flush(ME, o.fh);
        let written = truncated.and_then(|()| self.ops.write(ME, o.fh, 0, text.as_bytes(), false));
        let _ = self.ops.flush(ME, o.fh);
        self.ops.release(ME, o.fh);
        written.map(drop)
    }

    /// `echo TEXT >> path`: OPEN with O_APPEND, WRITE at the current size.
    fn echo_append(&self, path: &str, text: &str) -> Result<(), FsError> {
        let ino = self.ino(path);
        let size = self.size(path);
        let o = self.ops.open(ME, ino, libc::O_WRONLY | libc::O_APPEND)?;
        let _ = self.ops.flush(ME, o.fh);
        let written = self.ops.write(ME, o.fh, size, text.as_bytes(), true);
        let _ = self.ops.flush(ME, o.fh);
        self.ops.release(ME, o.fh);
        written.map(drop)
    }

    /// `: > path`: open and truncate, nothing written.
    fn colon_over(&self, path: &str) -> Result<(), FsError> {
        let ino = self.ino(path);
        let o = self.ops.open(ME, ino, libc::O_WRONLY | libc::O_TRUNC)?;
        let set = SetAttr {
            size: Some(0),
            ..Default::default()
        };
        let r = self.ops.setattr(ME, ino, set, None).map(drop);
        let _ = self.ops.flush(ME, o.fh);
        self.ops.release(ME, o.fh);
        r
    }

    /// `truncate -s N path`: OPEN, SETATTR size with the handle (ftruncate), RELEASE.
    fn truncate_to(&self, path: &str, size: u64) -> Result<(), FsError> {
        let ino = self.ino(path);
        let o = self.ops.open(ME, ino, libc::O_WRONLY)?;
        let set = SetAttr {
            size: Some(size),
            ..Default::default()
        };
        let r = self.ops.setattr(ME, ino, set, Some(o.fh)).map(drop);
        let _ = self.ops.flush(ME, o.fh);
        self.ops.release(ME, o.fh);
        r
    }

    /// `jq ... > path` or `cp FILE path`: OPEN, SETATTR size 0, WRITEs of these pieces at
    /// increasing offsets, FLUSH, RELEASE. Returns each write's result (the errno if refused).
    fn write_pieces(&self, path: &str, pieces: &[&[u8]]) -> Vec<Result<u32, i32>> {
        let ino = self.ino(path);
        let o = self
            .ops
            .open(ME, ino, libc::O_WRONLY | libc::O_TRUNC)
            .unwrap();
        let set = SetAttr {
            size: Some(0),
            ..Default::default()
        };
        self.ops.setattr(ME, ino, set, None).unwrap();
        let mut offset = 0;
        let mut results = Vec::new();
        for p in pieces {
            results.push(
                self.ops
                    .write(ME, o.fh, offset, p, false)
                    .map_err(|e| errno_of(&e)),
            );
            offset += p.len() as u64;
        }
        let _ = self.ops.flush(ME, o.fh);
        self.ops.release(ME, o.fh);
        results
    }

    /// Everything the keystore holds, to show that a refusal changed nothing.
    fn snapshot(&self) -> String {
        serde_json::to_string(&self.kms.read().to_snapshot()).unwrap()
    }

    fn errors(&self) -> Vec<serde_json::Value> {
        self.text(".errors")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn list(&self, path: &str) -> Vec<DirEntry> {
        let mut out = Vec::new();
        self.ops
            .readdir(self.ino(path), 0, |e| {
                out.push(e);
                false
            })
            .unwrap();
        out
    }

    fn names(&self, path: &str) -> Vec<String> {
        self.list(path).into_iter().map(|e| e.name).collect()
    }

    fn pool_with_record(&self) {
        self.mkdir("pool").unwrap();
        self.mkdir("pool/k1").unwrap();
    }
}

#[test]
fn echo_moves_a_record_in_every_way_the_shell_writes() {
    let f = fixture();
    f.pool_with_record();
    assert_eq!(f.text("pool/k1/state"), "prelive\n");
    f.echo_over("pool/k1/state", "active\n").unwrap();
    assert_eq!(f.text("pool/k1/state"), "active\n");
    // printf without a newline, odd case, and `>>` at a non-zero offset.
    f.echo_over("pool/k1/state", "Inactive").unwrap();
    f.echo_append("pool/k1/state", "  DEPRECATED\n").unwrap();
    assert_eq!(f.text("pool/k1/state"), "deprecated\n");
    // Repeating the state one has changes nothing and succeeds.
    let before = f.snapshot();
    f.echo_over("pool/k1/state", "deprecated").unwrap();
    assert_eq!(f.snapshot(), before);
    // The size is the rendering's length, whatever the state.
    assert_eq!(
        f.size("pool/k1/state"),
        f.cat("pool/k1/state").unwrap().len() as u64
    );
}

#[test]
fn refused_writes_change_nothing_and_explain_themselves() {
    let f = fixture();
    f.pool_with_record();
    let before = f.snapshot();
    let cases: &[(&str, &str, i32)] = &[
        ("pool/k1/state", "activ", libc::EINVAL),
        ("pool/k1/state", "terminated", libc::EPERM),
        ("pool/k1/state", "", libc::EINVAL),
        ("pool/.cipher", "AES_512", libc::EINVAL),
        (".quiesce", "freeze", libc::EINVAL),
        (".quiesce", "quiesce 0", libc::EINVAL),
        (".quiesce", "quiesce 99999999999", libc::EINVAL),
        (".quiesce", "unquiesce", libc::EINVAL),
    ];
    for (path, text, want) in cases {
        assert_eq!(errno(f.echo_over(path, text)), *want, "{path} <- {text:?}");
        assert_eq!(f.snapshot(), before, "{path} <- {text:?}");
        let last = f.errors().pop().unwrap();
        assert_eq!(last["operation"], "write", "{path}");
        assert_eq!(last["path"], format!("/m/{path}"));
    }
    // A mis-pasted secret is never echoed: megabytes into `state` give a short reason.
    let secret = "s3cr3t".repeat(700_000);
    assert_eq!(errno(f.echo_over("pool/k1/state", &secret)), libc::EINVAL);
    let last = f.errors().pop().unwrap();
    assert!(
        !last["reason"].as_str().unwrap().contains("s3cr3t"),
        "{last}"
    );
    assert_eq!(
        errno(f.echo_over("pool/k1/state", "bad\u{0}\u{7f}")),
        libc::EINVAL
    );
    let bytes = f
        .ops
        .open(ME, f.ino("pool/k1/state"), libc::O_WRONLY)
        .unwrap();
    assert_eq!(
        errno(f.ops.write(ME, bytes.fh, 0, b"\xff\xfe", false)),
        libc::EINVAL
    );
    f.ops.release(ME, bytes.fh);
    assert_eq!(f.snapshot(), before);
}

#[test]
fn quiesce_refuses_changes_but_never_its_own_release() {
    let f = fixture();
    f.pool_with_record();
    f.echo_over(".quiesce", "quiesce\n").unwrap();
    let q: serde_json::Value = serde_json::from_str(&f.text(".quiesce")).unwrap();
    assert_eq!(q["holds"], 1);
    assert_eq!(q["quiesced"], true);
    let before = f.snapshot();
    assert_eq!(errno(f.echo_over("pool/k1/state", "active")), libc::EROFS);
    assert_eq!(errno(f.mkdir("pool/k2")), libc::EROFS);
    assert_eq!(errno(f.echo_over("pool/.description", "x")), libc::EROFS);
    assert_eq!(errno(f.truncate_to("pool/.description", 0)), libc::EROFS);
    // A write that changes nothing may succeed.
    f.echo_over("pool/k1/state", "prelive").unwrap();
    assert_eq!(f.snapshot(), before);
    // `echo unquiesce > .quiesce` truncates first: that is never refused.
    f.echo_over(".quiesce", "unquiesce").unwrap();
    f.echo_over("pool/k1/state", "active").unwrap();
    assert_eq!(errno(f.echo_over(".quiesce", "0")), libc::EINVAL);
}

#[test]
fn descriptions_behave_like_small_files() {
    let f = fixture();
    f.pool_with_record();
    let d = "pool/k1/description";
    f.echo_over(d, "first\n").unwrap();
    assert_eq!(f.text(d), "first\n");
    f.echo_append(d, "second\n").unwrap();
    assert_eq!(f.text(d), "first\nsecond\n");
    assert_eq!(f.size(d), 13);
    // `jq` or `cp` in several writes.
    let r = f.write_pieces(d, &[b"one ", b"two ", b"three"]);
    assert!(r.iter().all(|r| r.is_ok()));
    assert_eq!(f.text(d), "one two three");
    // Too long: EFBIG from the write itself, and the old text stays.
    let big = "x".repeat(5000);
    assert_eq!(errno(f.echo_over(d, &big)), libc::EFBIG);
    assert_eq!(f.text(d), "one two three");
    // Not UTF-8: EINVAL from the write itself, text unchanged.
    assert_eq!(f.write_pieces(d, &[b"bad\xff"]), [Err(libc::EINVAL)]);
    assert_eq!(f.text(d), "one two three");
    assert_eq!(f.errors().pop().unwrap()["operation"], "write");
    // `: > f` empties at close; `truncate -s 3` keeps a prefix.
    f.echo_over(d, "abcdef").unwrap();
    f.truncate_to(d, 3).unwrap();
    assert_eq!(f.text(d), "abc");
    f.colon_over(d).unwrap();
    assert_eq!(f.text(d), "");
    // The group's description is the same kind of file.
    f.echo_over("pool/.description", "nightly").unwrap();
    let g: serde_json::Value = serde_json::from_str(&f.text("pool/.group.json")).unwrap();
    assert_eq!(g["description"], "nightly");
}

#[test]
fn a_truncate_without_a_handle_applies_to_the_open_edit() {
    // The kernel sends `>`'s truncate without the file handle; the caller's open edit takes it.
    let f = fixture();
    f.pool_with_record();
    let d = "pool/k1/description";
    f.echo_over(d, "old text").unwrap();
    let ino = f.ino(d);
    let o = f.ops.open(ME, ino, libc::O_WRONLY).unwrap();
    let set = SetAttr {
        size: Some(0),
        ..Default::default()
    };
    f.ops.setattr(ME, ino, set, None).unwrap();
    assert_eq!(
        f.text(d),
        "old text",
        "nothing is committed before the close"
    );
    f.ops.write(ME, o.fh, 0, b"new", false).unwrap();
    f.ops.flush(ME, o.fh).unwrap();
    assert_eq!(f.text(d), "new");
    f.ops.release(ME, o.fh);
    assert_eq!(f.text(d), "new");
}

/// Another caller, by its pid: the kernel gives the caller's pid in every request.
fn pid(pid: u32) -> Caller {
    Caller { pid, ..ME }
}

const TRUNCATE: SetAttr = SetAttr {
    mode: None,
    uid: None,
    gid: None,
    size: Some(0),
    times: false,
};

#[test]
fn a_truncate_without_a_handle_is_only_its_own_callers() {
    // A holds the description open for writing (`exec 3>>description`) and writes nothing;
    // B runs `echo from-B > description`: OPEN, SETATTR size 0 without a handle, WRITE.
    let f = fixture();
    f.pool_with_record();
    let d = "pool/k1/description";
    f.echo_over(d, "old text").unwrap();
    let ino = f.ino(d);
    let (a, b) = (pid(4001), pid(4002));
    let ha = f.ops.open(a, ino, libc::O_WRONLY | libc::O_APPEND).unwrap();
    let hb = f.ops.open(b, ino, libc::O_WRONLY | libc::O_TRUNC).unwrap();
    f.ops.setattr(b, ino, TRUNCATE, None).unwrap();
    f.ops.write(b, hb.fh, 0, b"from-B\n", false).unwrap();
    f.ops.flush(b, hb.fh).unwrap();
    f.ops.release(b, hb.fh);
    assert_eq!(f.text(d), "from-B\n");
    // A's edit was never written nor truncated: its close commits nothing.
    f.ops.flush(a, ha.fh).unwrap();
    f.ops.release(a, ha.fh);
    assert_eq!(f.text(d), "from-B\n", "A's close emptied B's text");
}

#[test]
fn a_truncate_without_a_handle_takes_the_callers_newest_unwritten_edit() {
    let f = fixture();
    f.pool_with_record();
    let d = "pool/k1/description";
    f.echo_over(d, "old").unwrap();
    let ino = f.ino(d);
    let (a, b) = (pid(4001), pid(4002));
    // B has an edit in progress (written), and A has one open, unwritten.
    let hb1 = f.ops.open(b, ino, libc::O_WRONLY).unwrap();
    f.ops.write(b, hb1.fh, 0, b"OLD", false).unwrap();
    let ha = f.ops.open(a, ino, libc::O_WRONLY).unwrap();
    // B opens again and truncates: only its newest handle, the unwritten one, is cut.
    let hb2 = f.ops.open(b, ino, libc::O_WRONLY | libc::O_TRUNC).unwrap();
    f.ops.setattr(b, ino, TRUNCATE, None).unwrap();
    assert_eq!(f.ops.read(hb1.fh, 0, 100).unwrap().bytes.as_slice(), b"OLD");
    assert_eq!(f.ops.read(ha.fh, 0, 100).unwrap().bytes.as_slice(), b"old");
    assert_eq!(f.ops.read(hb2.fh, 0, 100).unwrap().bytes.as_slice(), b"");
    f.ops.release(b, hb1.fh);
    assert_eq!(f.text(d), "OLD");
    f.ops.write(b, hb2.fh, 0, b"new", false).unwrap();
    f.ops.release(b, hb2.fh);
    f.ops.release(a, ha.fh);
    assert_eq!(f.text(d), "new");
    // A caller with no edit open truncates the path: a change of its own, now; the edits
    // other callers have open are left alone.
    let ha = f.ops.open(a, ino, libc::O_WRONLY).unwrap();
    f.ops.setattr(b, ino, TRUNCATE, None).unwrap();
    assert_eq!(f.text(d), "");
    assert_eq!(f.ops.read(ha.fh, 0, 100).unwrap().bytes.as_slice(), b"new");
    f.ops.release(a, ha.fh);
    assert_eq!(f.text(d), "");
    // A caller whose edits are all written: its newest one takes the truncation (as its own
    // open file would on any file system), to be committed with it.
    let hb = f.ops.open(b, ino, libc::O_WRONLY).unwrap();
    f.ops.write(b, hb.fh, 0, b"newer", false).unwrap();
    let to_2 = SetAttr {
        size: Some(2),
        ..TRUNCATE
    };
    f.ops.setattr(b, ino, to_2, None).unwrap();
    assert_eq!(f.ops.read(hb.fh, 0, 100).unwrap().bytes.as_slice(), b"ne");
    assert_eq!(f.text(d), "", "not a change of its own");
    f.ops.release(b, hb.fh);
    assert_eq!(f.text(d), "ne");
}

#[test]
fn description_writes_refuse_what_is_not_utf8_at_once() {
    let f = fixture();
    f.pool_with_record();
    let d = "pool/k1/description";
    f.echo_over(d, "kept\n").unwrap();
    // `printf 'bad\xff\n' > description`: EINVAL from the write, the old text stays.
    let r = f.write_pieces(d, &[b"bad\xff\n"]);
    assert_eq!(r, [Err(libc::EINVAL)]);
    assert_eq!(f.text(d), "kept\n");
    let last = f.errors().pop().unwrap();
    assert_eq!(
        (last["operation"].as_str(), last["errno"].as_str()),
        (Some("write"), Some("EINVAL"))
    );
    // A character split over writes (jq, cp in chunks) is accepted, up to 4 bytes of it.
    let r = f.write_pieces(d, &[b"caf\xc3", b"\xa9 \xf0\x9f", b"\x94", b"\x91\n"]);
    assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
    assert_eq!(f.text(d), "café 🔑\n");
    // An incomplete character that the next write does not complete: EINVAL from that write.
    let r = f.write_pieces(d, &[b"ab\xc3", b"x"]);
    assert_eq!(r, [Ok(3), Err(libc::EINVAL)]);
    assert_eq!(f.text(d), "café 🔑\n");
    // A write that breaks a character of the text in the middle.
    let ino = f.ino(d);
    let o = f.ops.open(ME, ino, libc::O_WRONLY).unwrap();
    assert_eq!(errno(f.ops.write(ME, o.fh, 4, b"x", false)), libc::EINVAL);
    f.ops.release(ME, o.fh);
    assert_eq!(f.text(d), "café 🔑\n");
    // A tail left incomplete at the end: accepted by the write, EINVAL at the commit.
    let r = f.write_pieces(d, &[b"caf\xc3"]);
    assert_eq!(r, [Ok(4)]);
    assert_eq!(f.text(d), "café 🔑\n");
    let last = f.errors().pop().unwrap();
    assert_eq!(
        (last["operation"].as_str(), last["errno"].as_str()),
        (Some("flush"), Some("EINVAL"))
    );
}
#[test]
fn create_takes_one_object_over_split_writes() {
    let f = fixture();
    f.mkdir("pool").unwrap();
    let r = f.write_pieces(
        "pool/.create",
        &[
            b"{\"name\": \"k",
            b"2\", \"state\": \"ac",
            b"tive\"}",
            b"\n",
        ],
    );
    assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
    assert_eq!(f.text("pool/k2/state"), "active\n");
    assert_eq!(
        f.cat("pool/.create").unwrap(),
        b"",
        "write-only: reads back empty"
    );
    // Refused on the write that completes the object: a second active record demotes the
    // first, but a bad state is EINVAL and creates nothing.
    let before = f.snapshot();
    let r = f.write_pieces(
        "pool/.create",
        &[b"{\"name\": \"k3\", ", b"\"state\": \"terminated\"}"],
    );
    assert!(r[0].is_ok());
    assert_eq!(r[1], Err(libc::EINVAL));
    assert_eq!(f.snapshot(), before);
    // Left incomplete at close: nothing created, reported as `close`.
    let r = f.write_pieces("pool/.create", &[b"{\"name\": \"k4\""]);
    assert!(r[0].is_ok());
    assert_eq!(f.snapshot(), before);
    let last = f.errors().pop().unwrap();
    assert_eq!(last["operation"], "close");
    assert_eq!(last["errno"], "EINVAL");
    // An existing name.
    let r = f.write_pieces("pool/.create", &[b"{\"name\": \"k2\"}"]);
    assert_eq!(r[0], Err(libc::EEXIST));
}

#[test]
fn keys_open_only_while_usable_and_stay_in_the_page_cache() {
    let f = fixture();
    f.pool_with_record();
    let key = f.ino("pool/k1/key");
    assert_eq!(f.size("pool/k1/key"), 0, "ls -l shows what cat would give");
    assert_eq!(errno(f.ops.open(ME, key, libc::O_RDONLY)), libc::EACCES);
    assert_eq!(f.errors().pop().unwrap()["operation"], "open");
    f.echo_over("pool/k1/state", "active").unwrap();
    let o = f.ops.open(ME, key, libc::O_RDONLY).unwrap();
    assert_eq!(o.flags, FopenFlags::FOPEN_KEEP_CACHE);
    assert_eq!(f.ops.read(o.fh, 0, 4096).unwrap().bytes.len(), 32);
    f.ops.release(ME, o.fh);
    assert_eq!(f.size("pool/k1/key"), 32);
    assert_eq!(errno(f.ops.open(ME, key, libc::O_RDWR)), libc::EACCES);
    for ro in [
        ".status",
        ".errors",
        "pool/.group.json",
        "pool/k1/record.json",
    ] {
        assert_eq!(
            errno(f.ops.open(ME, f.ino(ro), libc::O_WRONLY)),
            libc::EACCES,
            "{ro}"
        );
    }
    let state = f
        .ops
        .open(ME, f.ino("pool/k1/state"), libc::O_RDONLY)
        .unwrap();
    // Content that changes is read with direct I/O, and a read-only open needs no FLUSH.
    assert_eq!(
        state.flags,
        FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH
    );
    f.ops.release(ME, state.fh);
}

#[test]
fn every_file_reads_exactly_the_size_it_reports() {
    // `tar` and `cp` trust st_size: for every file of the table, stat and cat agree.
    let f = fixture();
    f.pool_with_record();
    f.echo_over("pool/k1/state", "active").unwrap();
    f.echo_over("pool/.description", "desc").unwrap();
    for file in FILES.iter() {
        let path = match file.dir {
            Dir::Root => file.name.to_string(),
            Dir::Group => format!("pool/{}", file.name),
            Dir::Record => format!("pool/k1/{}", file.name),
            Dir::ByTag => unreachable!(),
        };
        let size = f.size(&path);
        match file.kind {
            FileType::Symlink => {
                let target = f.ops.readlink(f.ino(&path)).unwrap();
                assert_eq!(size, target.len() as u64, "{path}");
            }
            _ if !file.writable() || file.perm & 0o400 != 0 => {
                assert_eq!(size, f.cat(&path).unwrap().len() as u64, "{path}");
            }
            _ => assert_eq!(size, 0, "{path} is write-only and reads back empty"),
        }
    }
}

#[test]
fn listings_come_from_the_table() {
    let f = fixture();
    f.pool_with_record();
    let fixed = |dir: Dir| -> Vec<String> {
        FileId::all_in(dir)
            .map(|f| f.file().name.to_string())
            .collect()
    };
    let mut want = vec![".".to_string(), "..".to_string()];
    want.extend(fixed(Dir::Root));
    want.push(".by-tag".into());
    want.push("pool".into());
    assert_eq!(f.names(""), want);
    // `.active` is listed only while a record is active.
    let mut want = vec![".".to_string(), "..".to_string()];
    want.extend(fixed(Dir::Group).into_iter().filter(|n| n != ".active"));
    want.push("k1".into());
    assert_eq!(f.names("pool"), want);
    assert_eq!(errno(f.try_ino("pool/.active")), libc::ENOENT);
    f.echo_over("pool/k1/state", "active").unwrap();
    assert!(f.names("pool").contains(&".active".to_string()));
    assert_eq!(f.ops.readlink(f.ino("pool/.active")).unwrap(), b"k1");
    let mut want = vec![".".to_string(), "..".to_string()];
    want.extend(fixed(Dir::Record));
    assert_eq!(f.names("pool/k1"), want);
    let tags = f.names(".by-tag");
    assert_eq!(tags.len(), 3);
    let link = f.ino(&format!(".by-tag/{}", tags[2]));
    assert_eq!(f.ops.readlink(link).unwrap(), b"../pool/k1");
    // Kinds as `ls -F` shows them.
    let kinds: Vec<FileType> = f.list("pool").into_iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&FileType::Symlink));
    // Fixed entries never reach the cookies of groups and records.
    assert!(
        f.list("pool")
            .iter()
            .filter(|e| e.cookie < DYNAMIC_BASE)
            .count()
            < DYNAMIC_BASE as usize
    );
}

#[test]
fn readdir_cookies_survive_changes_between_pages() {
    let f = fixture();
    f.mkdir("pool").unwrap();
    for i in 0..10 {
        f.mkdir(&format!("pool/k{i}")).unwrap();
    }
    let dir = f.ino("pool");
    // The first page ends with k1: the reply is "full" when k2 is offered.
    let mut first: Vec<DirEntry> = Vec::new();
    f.ops
        .readdir(dir, 0, |e| {
            if e.name == "k2" {
                return true;
            }
            first.push(e);
            false
        })
        .unwrap();
    let names: Vec<&str> = first.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names[names.len() - 2..], ["k0", "k1"]);
    for gone in ["k1", "k5"] {
        f.ops.rmdir(ME, dir, OsStr::new(gone)).unwrap();
    }
    let mut rest = Vec::new();
    f.ops
        .readdir(dir, first.last().unwrap().cookie, |e| {
            rest.push(e.name);
            false
        })
        .unwrap();
    assert_eq!(rest, ["k2", "k3", "k4", "k6", "k7", "k8", "k9"]);
}

#[test]
fn by_tag_listing_resumes_across_groups_and_deletions() {
    let f = fixture();
    f.mkdir("a").unwrap();
    f.mkdir("b").unwrap();
    for i in 0..3 {
        f.mkdir(&format!("a/x{i}")).unwrap();
        f.mkdir(&format!("b/y{i}")).unwrap();
    }
    let by_tag = f.ino(".by-tag");
    let mut seen: Vec<String> = Vec::new();
    let mut cookie = 0;
    loop {
        let mut page = Vec::new();
        f.ops
            .readdir(by_tag, cookie, |e| {
                if page.len() == 2 {
                    return true;
                }
                page.push(e);
                false
            })
            .unwrap();
        let Some(last) = page.last() else { break };
        cookie = last.cookie;
        seen.extend(page.into_iter().map(|e| e.name));
        if seen.len() == 4 {
            // The record we resume after disappears.
            let path = String::from_utf8(
                f.ops
                    .readlink(f.ino(&format!(".by-tag/{}", seen[3])))
                    .unwrap(),
            )
            .unwrap();
            let (group, record) = path.trim_start_matches("../").split_once('/').unwrap();
            f.ops.rmdir(ME, f.ino(group), OsStr::new(record)).unwrap();
        }
    }
    assert_eq!(seen[..2], [".", ".."]);
    assert_eq!(seen.len(), 2 + 6, "every tag once: {seen:?}");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len());
}

#[test]
fn directories_are_groups_and_records_only() {
    let f = fixture();
    f.pool_with_record();
    f.mkdir("other").unwrap();
    let before = f.snapshot();
    let root = ROOT_INO;
    let pool = f.ino("pool");
    let long = "n".repeat(256);
    assert_eq!(errno(f.mkdir(&long)), libc::ENAMETOOLONG);
    assert_eq!(
        errno(f.ops.mkdir(ME, root, OsStr::from_bytes(&[0xff; 256]))),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        errno(f.ops.mkdir(ME, root, OsStr::from_bytes(b"bad\xff"))),
        libc::EINVAL
    );
    assert_eq!(errno(f.mkdir("pool/.hidden")), libc::EINVAL);
    assert_eq!(errno(f.mkdir("pool/k1/deeper")), libc::EPERM);
    assert_eq!(errno(f.mkdir(".by-tag/x")), libc::EPERM);
    assert_eq!(
        errno(f.ops.rmdir(ME, root, OsStr::new("pool"))),
        libc::ENOTEMPTY
    );
    assert_eq!(
        errno(f.ops.rmdir(ME, root, OsStr::new(".by-tag"))),
        libc::EPERM
    );
    assert_eq!(
        errno(f.ops.rmdir(ME, pool, OsStr::new(".cipher"))),
        libc::ENOTDIR
    );
    assert_eq!(
        errno(f.ops.unlink(ME, pool, OsStr::new(".cipher"))),
        libc::EPERM
    );
    assert_eq!(
        errno(f.ops.unlink(ME, pool, OsStr::new("nope"))),
        libc::ENOENT
    );
    let stray = f
        .ops
        .refuse_stray(ME, pool, OsStr::new("notes.txt"), "create");
    assert_eq!(errno_of(&stray), libc::EPERM);
    let plain = RenameMode::default();
    // A record stays in its group: EPERM, never EXDEV (mv would copy the key).
    let moved = f.ops.rename(
        ME,
        (pool, OsStr::new("k1")),
        (f.ino("other"), OsStr::new("k1")),
        plain,
    );
    assert_eq!(errno(moved), libc::EPERM);
    let moved = f.ops.rename(
        ME,
        (pool, OsStr::new("k1")),
        (root, OsStr::new("k1")),
        plain,
    );
    assert_eq!(errno(moved), libc::EPERM);
    let moved = f.ops.rename(
        ME,
        (root, OsStr::new("pool")),
        (f.ino("other"), OsStr::new("p")),
        plain,
    );
    assert_eq!(errno(moved), libc::EPERM);
    let exchange = RenameMode {
        exchange_or_whiteout: true,
        ..plain
    };
    let moved = f.ops.rename(
        ME,
        (root, OsStr::new("pool")),
        (root, OsStr::new("other")),
        exchange,
    );
    assert_eq!(errno(moved), libc::EINVAL);
    let noreplace = RenameMode {
        noreplace: true,
        ..plain
    };
    let moved = f.ops.rename(
        ME,
        (root, OsStr::new("pool")),
        (root, OsStr::new("other")),
        noreplace,
    );
    assert_eq!(errno(moved), libc::EEXIST);
    let moved = f.ops.rename(
        ME,
        (root, OsStr::new("pool")),
        (root, OsStr::new("other")),
        plain,
    );
    assert_eq!(errno(moved), libc::EEXIST);
    assert_eq!(f.snapshot(), before);
    // What is allowed: renames in place keep the tag (and the inode).
    let k1 = f.ino("pool/k1");
    f.ops
        .rename(
            ME,
            (pool, OsStr::new("k1")),
            (pool, OsStr::new("k9")),
            plain,
        )
        .unwrap();
    assert_eq!(f.ino("pool/k9"), k1);
    f.ops
        .rename(
            ME,
            (root, OsStr::new("pool")),
            (root, OsStr::new("pool2")),
            plain,
        )
        .unwrap();
    assert_eq!(f.ino("pool2"), pool);
    f.ops.rmdir(ME, f.ino("pool2"), OsStr::new("k9")).unwrap();
    f.ops.rmdir(ME, root, OsStr::new("pool2")).unwrap();
    assert_eq!(
        errno(f.ops.getattr(pool)),
        libc::ENOENT,
        "a deleted group's inode is stale"
    );
}

#[test]
fn modes_owners_and_times_follow_the_keystore() {
    let f = fixture();
    f.pool_with_record();
    let state = f.ino("pool/k1/state");
    let attr = f.ops.getattr(state).unwrap().attr;
    assert_eq!(attr.perm, 0o640);
    let chmod = SetAttr {
        mode: Some(0o644),
        ..Default::default()
    };
    assert_eq!(errno(f.ops.setattr(ME, state, chmod, None)), libc::EPERM);
    assert_eq!(f.errors().pop().unwrap()["operation"], "setattr");
    // Setting what is already there (`cp -p`, `tar` restoring) is fine.
    let same = SetAttr {
        mode: Some(0o100640),
        uid: Some(attr.uid),
        gid: Some(attr.gid),
        ..Default::default()
    };
    f.ops.setattr(ME, state, same, None).unwrap();
    let touch = SetAttr {
        times: true,
        ..Default::default()
    };
    assert_eq!(errno(f.ops.setattr(ME, state, touch, None)), libc::EPERM);
    let chown = SetAttr {
        uid: Some(attr.uid + 1),
        ..Default::default()
    };
    assert_eq!(errno(f.ops.setattr(ME, state, chown, None)), libc::EPERM);
    let status = f.ino(".status");
    let trunc = SetAttr {
        size: Some(0),
        ..Default::default()
    };
    assert_eq!(errno(f.ops.setattr(ME, status, trunc, None)), libc::EACCES);
}

#[test]
fn cache_lifetimes_come_from_the_table() {
    let f = fixture();
    f.pool_with_record();
    f.echo_over("pool/k1/state", "active").unwrap();
    let entry = |parent: &str, name: &str| f.ops.lookup(f.ino(parent), OsStr::new(name)).unwrap();
    // What shows only the keystore is cached until a change touches it (`cache.rs`): names
    // that come and go, a record's files, its key (whose size the state decides), directories.
    for (parent, name) in [
        ("pool", ".active"),
        ("pool", ".group.json"),
        ("pool/k1", "state"),
        ("pool/k1", "key"),
        ("", "pool"),
        (
            ".by-tag",
            f.text("pool/k1/record.json").split('"').nth(7).unwrap(),
        ),
    ] {
        let e = entry(parent, name);
        assert_eq!(
            (e.attr_ttl, e.entry_ttl),
            (CACHED_TTL, CACHED_TTL),
            "{name}"
        );
    }
    // The root's files show more than the keystore: attributes never cached, names stable.
    let status = entry("", ".status");
    assert_eq!(
        (status.attr_ttl, status.entry_ttl),
        (Duration::ZERO, CACHED_TTL)
    );
    assert_eq!(status.ttl(), Duration::ZERO);
    // READDIRPLUS gives the same entries, with the shorter TTL.
    let mut plus = Vec::new();
    f.ops
        .readdirplus(f.ino("pool/k1"), 0, |d, e| {
            plus.push((d.name, e.ttl(), e.attr.size));
            false
        })
        .unwrap();
    let state = plus.iter().find(|(n, ..)| n == "state").unwrap();
    assert_eq!((state.1, state.2), (CACHED_TTL, 7));
}

#[test]
fn json_renders_in_the_contract_order_and_never_shows_the_key() {
    let f = fixture();
    f.pool_with_record();
    f.echo_over("pool/.cipher", "aes_128").unwrap_err();
    f.echo_over("pool/k1/state", "active").unwrap();
    let text = f.text("pool/.group.json");
    assert!(text.ends_with("}\n"));
    let keys: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"')?.split('"').next())
        .collect();
    assert_eq!(
        keys,
        [
            "name",
            "tag",
            "cipher",
            "description",
            "created",
            "modified",
            "records",
            "active",
            "rotation",
            "next_rotation",
            "retire_after",
            "pending"
        ]
    );

    let g: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (g["active"].as_str(), g["records"].as_u64()),
        (Some("k1"), Some(1))
    );
    let r: serde_json::Value = serde_json::from_str(&f.text("pool/k1/record.json")).unwrap();
    assert_eq!(r["group"], "pool");
    assert_eq!(r["cipher"], "AES_256");
    assert_eq!(r["state"], "active");
    assert_eq!(r["passphrase_derived"], false);
    assert!(r.get("salt").is_none());
    assert!(r.get("wrapped_key").is_none());
    let s: serde_json::Value = serde_json::from_str(&f.text(".status")).unwrap();
    assert_eq!(
        (s["groups"].as_u64(), s["records"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(s["quiesced"], false);
    // The cipher of an empty group can change.
    f.mkdir("empty").unwrap();
    f.echo_over("empty/.cipher", "aes_128\n").unwrap();
    assert_eq!(f.text("empty/.cipher"), "AES_128\n");
}

#[test]
fn rotation_shows_in_the_group_json_and_the_rotation_file() {
    let f = fixture();
    f.pool_with_record();
    f.echo_over("pool/k1/state", "active").unwrap();
    let text = f.text("pool/.group.json");
    // Rotation through `.rotation`: the period shows in both files, and the next time.
    let g: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (g["rotation"].as_str(), g["retire_after"].as_str()),
        (Some("off"), Some("off"))
    );
    assert!(g["next_rotation"].is_null());
    f.echo_over("pool/.rotation", "90d\n").unwrap();
    f.echo_over("pool/.rotation", "retire 36h").unwrap();
    let g: serde_json::Value = serde_json::from_str(&f.text("pool/.group.json")).unwrap();
    assert_eq!(
        (g["rotation"].as_str(), g["retire_after"].as_str()),
        (Some("90d"), Some("36h"))
    );
    let r: serde_json::Value = serde_json::from_str(&f.text("pool/k1/record.json")).unwrap();
    let since = time::OffsetDateTime::parse(
        r["state_since"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let next = since + time::Duration::days(90);
    let next = next
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert_eq!(g["next_rotation"].as_str(), Some(next.as_str()));
    assert_eq!(
        f.text("pool/.rotation"),
        format!("period 90d\nnext {next}\nretire 36h\n")
    );
    assert_eq!(
        f.size("pool/.rotation"),
        f.cat("pool/.rotation").unwrap().len() as u64
    );
    assert_eq!(errno(f.echo_over("pool/.rotation", "90")), libc::EINVAL);
    assert_eq!(errno(f.echo_over("pool/.rotation", "0d")), libc::EINVAL);
    // `rotate` replaces the active record now, in one step.
    f.echo_over("pool/.rotation", "rotate").unwrap();
    assert_eq!(f.text("pool/k1/state"), "inactive\n");
    let active = String::from_utf8(f.ops.readlink(f.ino("pool/.active")).unwrap()).unwrap();
    assert!(active.starts_with("rot-"), "{active}");
    f.echo_over("pool/.rotation", "off").unwrap();
    assert_eq!(f.text("pool/.rotation"), "period off\nnext -\nretire 36h\n");
}

// ---- the kernel's caches: told exactly what a change touched ------------------------------

#[derive(Default)]
struct KernelRecorder {
    attrs: std::sync::Mutex<Vec<u64>>,
    names: std::sync::Mutex<Vec<(u64, String)>>,
}

impl crate::fs::cache::Kernel for KernelRecorder {
    fn forget_attrs(&self, ino: u64) {
        self.attrs.lock().unwrap().push(ino);
    }
    fn forget_entry(&self, parent: u64, name: &OsStr) {
        let name = name.to_string_lossy().into_owned();
        self.names.lock().unwrap().push((parent, name));
    }
}

impl KernelRecorder {
    fn take_attrs(&self) -> std::collections::HashSet<u64> {
        self.attrs.lock().unwrap().drain(..).collect()
    }

    /// Names are forgotten by a thread of their own: waits for `n` of them.
    fn take_names(&self, n: usize) -> Vec<(u64, String)> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.names.lock().unwrap().len() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "names never forgotten"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        self.names.lock().unwrap().drain(..).collect()
    }
}

fn connected() -> (Fixture, Arc<KernelRecorder>) {
    let f = fixture();
    let kernel = Arc::new(KernelRecorder::default());
    f.ops.kernel_cache().connect(kernel.clone());
    (f, kernel)
}

#[test]
fn an_activation_forgets_exactly_what_it_touched() {
    let (f, kernel) = connected();
    f.pool_with_record();
    f.mkdir("pool/k2").unwrap();
    f.echo_over("pool/k1/state", "active").unwrap();
    let files = |dir: &str| -> Vec<u64> {
        let mut inos = vec![f.ino(dir)];
        inos.extend(
            ["record.json", "state", "description", "key"]
                .iter()
                .map(|n| f.ino(&format!("{dir}/{n}"))),
        );
        inos
    };
    let (k1, k2) = (files("pool/k1"), files("pool/k2"));
    let group = [
        f.ino("pool"),
        f.ino("pool/.group.json"),
        f.ino("pool/.active"),
    ];
    let status = f.ino(".status");
    kernel.take_attrs();
    // k2's activation demotes k1: both records' files and the group's, nothing else.
    f.echo_over("pool/k2/state", "active").unwrap();
    let forgot = kernel.take_attrs();
    for ino in k1.iter().chain(&k2).chain(&group) {
        assert!(
            forgot.contains(ino),
            "inode {ino} not forgotten: {forgot:?}"
        );
    }
    assert!(!forgot.contains(&status), ".status is never cached");
    // A description touches its record alone.
    f.echo_over("pool/k2/description", "d").unwrap();
    let forgot = kernel.take_attrs();
    assert!(forgot.contains(&f.ino("pool/k2/description")));
    assert!(
        !forgot.contains(&k1[0]) && !forgot.contains(&group[1]),
        "{forgot:?}"
    );
    // A refused change touches nothing.
    assert!(f.echo_over("pool/k1/state", "prelive").is_err());
    assert!(kernel.take_attrs().is_empty());
    // Deactivating takes `.active` away: its name is forgotten (after the change).
    f.echo_over("pool/k2/state", "inactive").unwrap();
    assert_eq!(
        kernel.take_names(1),
        vec![(f.ino("pool"), ".active".to_string())]
    );
}

/// A child that inherited an open description flushes first (at its exec), and that commit
/// is refused: the writer's own close must say so, once, rather than return 0 for a change
/// that was never made.
#[test]
fn a_refused_commit_by_another_holder_reaches_the_writer() {
    let f = fixture();
    f.pool_with_record();
    let child = Caller { pid: 4242, ..ME };
    let ino = f.ino("pool/k1/description");
    let o = f.ops.open(ME, ino, libc::O_WRONLY).unwrap();
    f.ops.write(ME, o.fh, 0, b"new text", false).unwrap();
    f.kms.quiesce(None).unwrap();
    assert_eq!(errno(f.ops.flush(child, o.fh)), libc::EROFS);
    assert_eq!(
        errno(f.ops.flush(ME, o.fh)),
        libc::EROFS,
        "the writer's close"
    );
    f.ops.flush(ME, o.fh).unwrap();
    f.ops.release(ME, o.fh);
    f.kms.unquiesce().unwrap();
    assert_eq!(f.text("pool/k1/description"), "");
    // A commit the child makes that succeeds is the writer's success too.
    let o = f.ops.open(ME, ino, libc::O_WRONLY).unwrap();
    f.ops.write(ME, o.fh, 0, b"kept", false).unwrap();
    f.ops.flush(child, o.fh).unwrap();
    f.ops.flush(ME, o.fh).unwrap();
    f.ops.release(ME, o.fh);
    assert_eq!(f.text("pool/k1/description"), "kept");
}
