//! Hostile input through a real mount (`kmsfs mount` as a child process): megabytes into every
//! writable file, bytes that are not text in names and in text, names of 255 and 256 bytes,
//! writes at huge offsets, `.create` objects written in halves from two open files. Every call
//! must get the errno docs/errors.md gives for it (checked with `raw_os_error`), the daemon
//! must live (`.status` answers after every call), every JSON file must stay valid JSON, and
//! what is refused must leave the keystore as it was: the same snapshot of every group,
//! record, state, description and key (`support::snapshot`) and, for the refusals, the same
//! `KMS_DATA` byte for byte. Each test prints what it threw and what came back.
//!
//! Bounded for CI (a few seconds); harder by hand:
//!
//! ```text
//! KMSFS_DRILL_MEGABYTES=64 KMSFS_DRILL_SEED=7 cargo test --test hostile_input -- --nocapture
//! ```
//!
//! - `KMSFS_DRILL_MEGABYTES`: the size of the large writes (default 4);
//! - `KMSFS_DRILL_SEED`: the seed of the random bytes (default: the clock; printed).

mod support;

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use support::cli::{ok, verify};
use support::daemon::Daemon;
use support::knobs::{env_or, seed};
use support::scratch::Scratch;
use support::snapshot::{digests, snapshot};

fn megabytes() -> usize {
    env_or("KMSFS_DRILL_MEGABYTES", 4usize).max(1)
}

fn errno_name(e: i32) -> String {
    match e {
        libc::EINVAL => "EINVAL".into(),
        libc::EFBIG => "EFBIG".into(),
        libc::ENAMETOOLONG => "ENAMETOOLONG".into(),
        libc::EEXIST => "EEXIST".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::EACCES => "EACCES".into(),
        libc::EPERM => "EPERM".into(),
        libc::EROFS => "EROFS".into(),
        e => format!("errno {e}"),
    }
}

/// A fresh keystore, mounted, with records in every state and an empty group:
/// `pool/{pre,act,ina,dep,term}` and `empty`.
struct Drill {
    daemon: Daemon,
    scratch: Scratch,
    /// Refusals thrown, by errno, for the summary.
    thrown: BTreeMap<String, usize>,
    accepted: usize,
}

impl Drill {
    fn new() -> Drill {
        let scratch = Scratch::new();
        let daemon = Daemon::start_init(&scratch.path("data"), &scratch.path("mnt"));
        daemon.sh_ok(
            "set -e
             mkdir pool empty pool/pre pool/act pool/ina pool/dep pool/term
             echo 'the pool' > pool/.description
             echo 'prelive one' > pool/pre/description
             echo active > pool/ina/state; echo inactive > pool/ina/state
             echo active > pool/dep/state; echo inactive > pool/dep/state; echo deprecated > pool/dep/state
             echo active > pool/term/state; echo inactive > pool/term/state
             echo deprecated > pool/term/state; echo terminated > pool/term/state
             echo active > pool/act/state",
        );
        Drill {
            daemon,
            scratch,
            thrown: BTreeMap::new(),
            accepted: 0,
        }
    }

    fn p(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.daemon.mnt.join(rel)
    }

    /// What must not change: everything the mount shows, and the backing files.
    fn state(&self) -> (String, Vec<String>) {
        (snapshot(&self.daemon), digests(&self.daemon.data))
    }

    /// The daemon answers, and every JSON file of the mount parses.
    #[track_caller]
    fn alive_and_json(&self, after: &str) {
        let status = fs::read_to_string(self.p(".status"))
            .unwrap_or_else(|e| panic!("after {after}: .status does not answer: {e}"));
        serde_json::from_str::<serde_json::Value>(&status)
            .unwrap_or_else(|e| panic!("after {after}: .status is not JSON: {e}"));
    }

    /// Every JSON file of the mount, parsed: `.status`, `.quiesce`, every `.group.json` and
    /// `record.json`, and every line of `.errors`. Returns how many were parsed.
    #[track_caller]
    fn all_json_valid(&self, after: &str) -> usize {
        let parse = |p: &Path| {
            let text = fs::read_to_string(p)
                .unwrap_or_else(|e| panic!("after {after}: read {}: {e}", p.display()));
            serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|e| {
                panic!("after {after}: {} is not JSON ({e}): {text:?}", p.display())
            })
        };
        let mut n = 0;
        for f in [".status", ".quiesce"] {
            parse(&self.p(f));
            n += 1;
        }
        for g in fs::read_dir(self.daemon.mnt.as_path()).unwrap() {
            let g = g.unwrap();
            if g.file_name().as_bytes().starts_with(b".") {
                continue;
            }
            let gj = parse(&g.path().join(".group.json"));
            assert_eq!(
                gj["name"].as_str().map(str::as_bytes),
                Some(g.file_name().as_bytes())
            );
            n += 1;
            for r in fs::read_dir(g.path()).unwrap() {
                let r = r.unwrap();
                if r.file_name().as_bytes().starts_with(b".") {
                    continue;
                }
                let rj = parse(&r.path().join("record.json"));
                assert_eq!(
                    rj["name"].as_str().map(str::as_bytes),
                    Some(r.file_name().as_bytes())
                );
                n += 1;
            }
        }
        for line in fs::read_to_string(self.p(".errors")).unwrap().lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| {
                panic!("after {after}: a line of .errors is not JSON ({e}): {line:?}")
            });
            n += 1;
        }
        n
    }

    /// The call must fail with exactly `want`; the daemon must answer afterwards.
    #[track_caller]
    fn refused<T: std::fmt::Debug>(&mut self, what: &str, r: io::Result<T>, want: i32) {
        match r {
            Ok(v) => panic!("{what}: accepted ({v:?}), expected {}", errno_name(want)),
            Err(e) => assert_eq!(
                e.raw_os_error(),
                Some(want),
                "{what}: {e}, expected {}",
                errno_name(want)
            ),
        }
        *self.thrown.entry(errno_name(want)).or_default() += 1;
        self.alive_and_json(what);
    }

    #[track_caller]
    fn accepted<T>(&mut self, what: &str, r: io::Result<T>) -> T {
        let v = r.unwrap_or_else(|e| panic!("{what}: refused: {e}"));
        self.accepted += 1;
        self.alive_and_json(what);
        v
    }

    fn summary(&self) -> String {
        let refusals: Vec<String> = self
            .thrown
            .iter()
            .map(|(e, n)| format!("{n} {e}"))
            .collect();
        format!(
            "{} refused ({}), {} accepted",
            self.thrown.values().sum::<usize>(),
            refusals.join(", "),
            self.accepted
        )
    }

    fn finish(self) {
        let data = self.daemon.data.clone();
        self.daemon.stop();
        ok("kmsfs verify", verify(&data));
        drop(self.scratch);
    }
}

fn open_w(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).open(path)
}

/// One `write()` call of all of `bytes` on a fresh open, as one command (not `write_all`:
/// the errno of that one call is what is checked). A short count is an error here: a refused
/// write may not be half taken.
fn write_once(path: &Path, bytes: &[u8]) -> io::Result<usize> {
    let mut f = open_w(path)?;
    let n = f.write(bytes)?;
    if n != bytes.len() {
        return Err(io::Error::other(format!(
            "a short write: {n} of {} bytes taken",
            bytes.len()
        )));
    }
    Ok(n)
}

/// Each writable file, what it is, and a command it would take (and that would change
/// something) if the noise around it were allowed.
const WRITABLE: [(&str, Kind, &str); 8] = [
    ("pool/pre/state", Kind::Command, "active"),
    ("pool/pre/description", Kind::Text, "new text"),
    ("pool/.description", Kind::Text, "new text"),
    ("empty/.cipher", Kind::Command, "AES_128"),
    ("pool/.create", Kind::Object, r#"{"name": "big"}"#),
    (".quiesce", Kind::Command, "quiesce"),
    ("pool/.rotation", Kind::Command, "rotate"),
    (".change-key", Kind::Object, "hmk"),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// One command per write (`state`, `.cipher`, `.quiesce`, `.rotation`).
    Command,
    /// A description, at most 4096 bytes.
    Text,
    /// One JSON object (or, `.change-key`, one word), at most 64 KiB.
    Object,
}

impl Kind {
    /// The errno of a write larger than the file can take (docs/errors.md: EINVAL for a
    /// command that means nothing, EFBIG for a description over 4096 bytes or a `.create`
    /// object over 64 KiB). `.change-key` shares `.create`'s buffer and limit, so it is EFBIG
    /// too: docs/errors.md lists EFBIG for `.create` only and says EINVAL for anything
    /// `.change-key` does not take; the code is consistent with `.create`, the table is not.
    fn too_large(self) -> i32 {
        match self {
            Kind::Command => libc::EINVAL,
            Kind::Text | Kind::Object => libc::EFBIG,
        }
    }
}

// ---- megabytes ----------------------------------------------------------------------------------

#[test]
fn megabytes_into_every_writable_file_are_refused_and_change_nothing() {
    let (mb, seed) = (megabytes(), seed());
    let mut d = Drill::new();
    let before = d.state();
    let size = mb << 20;
    let mut random = vec![0u8; size];
    StdRng::seed_from_u64(seed).fill_bytes(&mut random);
    let letters = vec![b'a'; size];
    let mut chunks = 0;
    for (rel, kind, valid) in WRITABLE {
        let path = d.p(rel);
        // One write() of megabytes: the kernel cuts it into pieces; the first is refused, so
        // nothing at all is taken.
        d.refused(
            &format!("{mb} MiB of 'a' into {rel}"),
            write_once(&path, &letters),
            kind.too_large(),
        );
        d.refused(
            &format!("{mb} MiB of random bytes into {rel}"),
            write_once(&path, &random),
            kind.too_large(),
        );
        // A command the file takes, in megabytes of blanks: still one write() too large.
        let mut padded = valid.as_bytes().to_vec();
        padded.resize(size, b' ');
        d.refused(
            &format!("{valid:?} and {mb} MiB of blanks into {rel}"),
            write_once(&path, &padded),
            kind.too_large(),
        );
        // A megabyte in 4 KiB writes to one open file, going on after every refusal.
        let mut f = open_w(&path).unwrap();
        let mut results = Vec::new();
        let piece: Vec<u8> = match kind {
            Kind::Object => {
                let mut p = br#"{"name": ""#.to_vec();
                p.resize(4096, b'a');
                p
            }
            _ => vec![b'a'; 4096],
        };
        for i in 0..256 {
            let data = if i == 0 { &piece[..] } else { &letters[..4096] };
            results.push(f.write(data).map_err(|e| e.raw_os_error().unwrap_or(-1)));
        }
        chunks += results.len();
        let want: Vec<Result<usize, i32>> = (0..256)
            .map(|i| match kind {
                // Every write is a command of its own, and 4096 letters is none.
                Kind::Command => Err(libc::EINVAL),
                // The first 4096 bytes fit; every later write would make it longer.
                Kind::Text if i == 0 => Ok(4096),
                Kind::Text => Err(libc::EFBIG),
                // 16 writes fill the 64 KiB an object may have; the 17th is too many, and
                // after that refusal (which drops what was gathered) the rest is not an
                // object.
                Kind::Object if i < 16 => Ok(4096),
                Kind::Object if i == 16 => Err(libc::EFBIG),
                Kind::Object => Err(libc::EINVAL),
            })
            .collect();
        assert_eq!(results, want, "1 MiB in 4 KiB writes into {rel}");
        // The close commits nothing: a description's edit was refused, an object was dropped.
        drop(f);
        for r in &results {
            if let Err(e) = r {
                *d.thrown.entry(errno_name(*e)).or_default() += 1;
            }
        }
        d.alive_and_json(&format!("1 MiB in pieces into {rel}"));
    }
    // The same from the shell: `head -c` writes in pieces too, and fails.
    for (rel, _, _) in WRITABLE {
        let out = d.daemon.sh(&format!("head -c {mb}M /dev/urandom > {rel}"));
        assert!(
            !out.status.success(),
            "head -c {mb}M /dev/urandom > {rel} succeeded"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("Invalid argument") || err.contains("File too large"),
            "{rel}: {err}"
        );
        let out = d.daemon.sh(&format!("yes active | head -c {mb}M > {rel}"));
        assert!(
            !out.status.success(),
            "yes active | head -c {mb}M > {rel} succeeded"
        );
    }
    d.alive_and_json("the shell's megabytes");
    let json_files = d.all_json_valid("megabytes");
    let after = d.state();
    assert_eq!(after.0, before.0, "the keystore changed");
    assert_eq!(after.1, before.1, "the backing files changed");
    assert_eq!(d.daemon.quiesce()["holds"], 0, "a hold was taken");
    eprintln!(
        "megabytes (seed {seed}): {mb} MiB of letters, random bytes and a padded command in one write() into each of {} files, \
         {chunks} 4 KiB writes, `head -c {mb}M` from the shell: {}; {json_files} JSON files valid; keystore and KMS_DATA unchanged",
        WRITABLE.len(),
        d.summary()
    );
    d.finish();
}

// ---- bytes that are not text --------------------------------------------------------------------

#[test]
fn nul_control_and_non_utf8_bytes_in_names_and_text() {
    let mut d = Drill::new();
    let before = d.state();
    let os = |b: &[u8]| OsStr::from_bytes(b).to_os_string();
    // Names: not UTF-8 is EINVAL, for groups and records, by mkdir and by mv.
    for bad in [
        &b"bad\xff"[..],
        b"\xc3",
        b"\xed\xa0\x80surrogate",
        b"\xfe\xff",
    ] {
        let shown = String::from_utf8_lossy(bad).into_owned();
        d.refused(
            &format!("mkdir group {shown:?}"),
            fs::create_dir(d.p(os(bad))),
            libc::EINVAL,
        );
        d.refused(
            &format!("mkdir pool/{shown:?}"),
            fs::create_dir(d.p("pool").join(os(bad))),
            libc::EINVAL,
        );
        d.refused(
            &format!("mv pool/pre pool/{shown:?}"),
            fs::rename(d.p("pool/pre"), d.p("pool").join(os(bad))),
            libc::EINVAL,
        );
        d.refused(
            &format!("mv empty {shown:?}"),
            fs::rename(d.p("empty"), d.p(os(bad))),
            libc::EINVAL,
        );
        // A name that cannot exist is not found either.
        d.refused(
            &format!("mv pool/{shown:?} pool/x"),
            fs::rename(d.p("pool").join(os(bad)), d.p("pool/x")),
            libc::ENOENT,
        );
    }
    // Control characters in names: EINVAL.
    for bad in [
        "new\nline",
        "tab\there",
        "del\x7f",
        "bell\x07",
        "esc\x1b[31m",
    ] {
        d.refused(
            &format!("mkdir pool/{bad:?}"),
            fs::create_dir(d.p("pool").join(bad)),
            libc::EINVAL,
        );
        d.refused(
            &format!("mv pool/pre pool/{bad:?}"),
            fs::rename(d.p("pool/pre"), d.p("pool").join(bad)),
            libc::EINVAL,
        );
        let obj = serde_json::json!({ "name": bad }).to_string();
        d.refused(
            &format!(".create {obj}"),
            write_once(&d.p("pool/.create"), obj.as_bytes()),
            libc::EINVAL,
        );
    }
    // NUL: no system call can carry it in a path (it ends the C string), so std refuses
    // before the kernel is asked; in a `.create` name (escaped or raw) it is EINVAL.
    for path in [d.p("pool/a\0b"), d.p("a\0b")] {
        let e = fs::create_dir(&path).unwrap_err();
        assert_eq!(
            (e.kind(), e.raw_os_error()),
            (io::ErrorKind::InvalidInput, None),
            "{e}"
        );
        let e = fs::rename(d.p("pool/pre"), &path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }
    for obj in [
        &br#"{"name": "a\u0000b"}"#[..],
        b"{\"name\": \"a\0b\"}",
        b"{\"name\": \"ok\"}\0",
    ] {
        d.refused(
            &format!(".create {:?}", String::from_utf8_lossy(obj)),
            write_once(&d.p("pool/.create"), obj),
            libc::EINVAL,
        );
    }
    // Text that is not UTF-8, or with a NUL, in every file that takes commands or objects.
    for (rel, kind, valid) in WRITABLE {
        let mut with_nul = valid.as_bytes().to_vec();
        with_nul.insert(2, 0);
        let mut not_utf8 = valid.as_bytes().to_vec();
        not_utf8.insert(2, 0xff);
        let lone = b"\x80".to_vec();
        for (what, bytes) in [
            ("a NUL", &with_nul),
            ("0xff", &not_utf8),
            ("a lone continuation byte", &lone),
        ] {
            let label = format!("{valid:?} with {what} into {rel}");
            match kind {
                // A description holds any UTF-8, NUL included (below): only bytes that are
                // not UTF-8 are refused.
                Kind::Text if what == "a NUL" => continue,
                _ => d.refused(&label, write_once(&d.p(rel), bytes), libc::EINVAL),
            }
        }
        // A state name with a NUL after it, or an object followed by one.
        if kind != Kind::Text {
            let mut trailing = valid.as_bytes().to_vec();
            trailing.push(0);
            d.refused(
                &format!("{valid:?} then NUL into {rel}"),
                write_once(&d.p(rel), &trailing),
                libc::EINVAL,
            );
        }
    }
    // A description left ending inside a character is refused at the commit: close() and
    // fsync() say EINVAL.
    let mut f = open_w(&d.p("pool/pre/description")).unwrap();
    f.set_len(0).unwrap();
    f.write_all(b"caf\xc3").unwrap();
    d.refused(
        "a description ending inside a character, at fsync",
        f.sync_all(),
        libc::EINVAL,
    );
    drop(f);
    assert_eq!(d.daemon.read("pool/pre/description"), "prelive one\n");
    let json_files = d.all_json_valid("bad bytes");
    let after = d.state();
    assert_eq!(after.0, before.0, "the keystore changed");
    assert_eq!(after.1, before.1, "the backing files changed");
    // What a description may hold: NUL and every control character, round-tripped exactly
    // and escaped in record.json. In a group of its own, removed afterwards.
    let snap = d.state().0;
    d.accepted("mkdir scratch", fs::create_dir(d.p("scratch")));
    d.accepted("mkdir scratch/t", fs::create_dir(d.p("scratch/t")));
    let text = "nul\0 bell\x07 esc\x1b[0m del\x7f bidi\u{202e} crlf\r\n";
    let mut f = open_w(&d.p("scratch/t/description")).unwrap();
    f.set_len(0).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    d.accepted(
        "a description with NUL and control characters",
        f.sync_all(),
    );
    drop(f);
    assert_eq!(
        fs::read(d.p("scratch/t/description")).unwrap(),
        text.as_bytes()
    );
    let j = d.daemon.json("scratch/t/record.json");
    assert_eq!(j["description"], text);
    let raw = d.daemon.read("scratch/t/record.json");
    assert!(
        raw.contains(r"nul\u0000"),
        "NUL is escaped in record.json: {raw}"
    );
    d.all_json_valid("a description with NUL");
    d.accepted("rmdir scratch/t", fs::remove_dir(d.p("scratch/t")));
    d.accepted("rmdir scratch", fs::remove_dir(d.p("scratch")));
    assert_eq!(d.state().0, snap, "the scratch group left something behind");
    eprintln!(
        "bad bytes: non-UTF-8 and control characters in names (mkdir, mv, .create), NUL in paths and objects, \
         NUL, 0xff and lone continuation bytes in every command and object file: {}; {json_files} JSON files valid; \
         keystore and KMS_DATA unchanged; a description with NUL round-trips",
        d.summary()
    );
    d.finish();
}

// ---- name lengths ------------------------------------------------------------------------------------

#[test]
fn names_of_255_bytes_are_taken_and_of_256_refused_with_enametoolong() {
    let mut d = Drill::new();
    let before = d.state();
    let ascii = |c: char, n: usize| c.to_string().repeat(n);
    // 255 bytes of two-byte characters and one letter; 256 bytes of two-byte characters.
    let multi_255 = format!("{}x", "é".repeat(127));
    let multi_256 = "é".repeat(128);
    assert_eq!((multi_255.len(), multi_256.len()), (255, 256));
    for (what, long) in [
        ("256 letters", ascii('a', 256)),
        ("128 two-byte characters", multi_256.clone()),
        ("1025 letters", ascii('a', 1025)),
        ("5000 letters", ascii('a', 5000)),
    ] {
        d.refused(
            &format!("mkdir group of {what}"),
            fs::create_dir(d.p(&long)),
            libc::ENAMETOOLONG,
        );
        d.refused(
            &format!("mkdir record of {what}"),
            fs::create_dir(d.p("pool").join(&long)),
            libc::ENAMETOOLONG,
        );
        d.refused(
            &format!("mv record to {what}"),
            fs::rename(d.p("pool/pre"), d.p("pool").join(&long)),
            libc::ENAMETOOLONG,
        );
        d.refused(
            &format!("mv group to {what}"),
            fs::rename(d.p("empty"), d.p(&long)),
            libc::ENAMETOOLONG,
        );
        let obj = serde_json::json!({ "name": long }).to_string();
        d.refused(
            &format!(".create of {what}"),
            write_once(&d.p("pool/.create"), obj.as_bytes()),
            libc::ENAMETOOLONG,
        );
    }
    let json_files = d.all_json_valid("long names");
    let after = d.state();
    assert_eq!(after.0, before.0, "the keystore changed");
    assert_eq!(after.1, before.1, "the backing files changed");
    // 255 bytes: a group and records by mkdir, .create and mv, which work like any other.
    let snap = d.state().0;
    let g = ascii('g', 255);
    d.accepted("mkdir group of 255", fs::create_dir(d.p(&g)));
    let gp = d.p(&g);
    d.accepted(
        "mkdir record of 255",
        fs::create_dir(gp.join(ascii('r', 255))),
    );
    d.accepted(
        "mkdir record of 255 multi-byte",
        fs::create_dir(gp.join(&multi_255)),
    );
    let obj = serde_json::json!({ "name": ascii('c', 255), "state": "active" }).to_string();
    d.accepted(
        ".create of 255",
        write_once(&gp.join(".create"), obj.as_bytes()),
    );
    d.accepted(
        "mv 255 to 255",
        fs::rename(gp.join(ascii('r', 255)), gp.join(ascii('s', 255))),
    );
    d.refused(
        "mv onto a taken 255-byte name",
        fs::rename(gp.join(ascii('s', 255)), gp.join(&multi_255)),
        libc::EEXIST,
    );
    let mut names: Vec<String> = fs::read_dir(&gp)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    let mut want = vec![ascii('c', 255), ascii('s', 255), multi_255.clone()];
    want.sort();
    assert_eq!(names, want);
    for n in &names {
        let j = d.daemon.json(&format!("{g}/{n}/record.json"));
        assert_eq!(j["name"], n.as_str());
        assert_eq!(j["group"], g.as_str());
        let tag = j["tag"].as_str().unwrap();
        let link = fs::read_link(d.p(".by-tag").join(tag)).unwrap();
        assert_eq!(link, Path::new("..").join(&g).join(n));
    }
    assert_eq!(
        fs::read_link(gp.join(".active")).unwrap(),
        Path::new(&ascii('c', 255))
    );
    assert_eq!(
        fs::read(gp.join(ascii('c', 255)).join("key"))
            .unwrap()
            .len(),
        32
    );
    d.all_json_valid("255-byte names");
    // Remove them again: the active one is moved to terminated first.
    for s in ["inactive", "deprecated", "terminated"] {
        d.accepted(
            s,
            write_once(&gp.join(ascii('c', 255)).join("state"), s.as_bytes()),
        );
    }
    for n in &names {
        d.accepted("rmdir 255", fs::remove_dir(gp.join(n)));
    }
    d.accepted("rmdir group of 255", fs::remove_dir(&gp));
    assert_eq!(
        d.state().0,
        snap,
        "the 255-byte names left something behind"
    );
    eprintln!(
        "name lengths: 256, 1025 and 5000 bytes (letters and two-byte characters) by mkdir, mv and .create \
         for groups and records; 255 bytes by all three, listed, linked and removed: {}; {json_files} JSON files valid",
        d.summary()
    );
    d.finish();
}

// ---- huge offsets --------------------------------------------------------------------------------------

fn truncate_path(path: &Path, len: i64) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::truncate(c.as_ptr(), len) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[test]
fn writes_reads_and_truncations_at_huge_offsets() {
    let mut d = Drill::new();
    let before = d.state();
    let offsets: [u64; 3] = [4097, 1 << 40, 1 << 62];
    for (rel, kind, _) in WRITABLE {
        for off in offsets {
            let f = open_w(&d.p(rel)).unwrap();
            match kind {
                // A description is a small file: nothing may land beyond 4096 bytes.
                Kind::Text => d.refused(
                    &format!("pwrite at {off} into {rel}"),
                    f.write_at(b"x", off),
                    libc::EFBIG,
                ),
                // Commands ignore the offset: what is written decides.
                Kind::Command => d.refused(
                    &format!("pwrite of junk at {off} into {rel}"),
                    f.write_at(b"junk", off),
                    libc::EINVAL,
                ),
                Kind::Object => d.refused(
                    &format!("pwrite of junk at {off} into {rel}"),
                    f.write_at(b"junk", off),
                    libc::EINVAL,
                ),
            }
            // Past what the kernel takes (offset + length beyond i64): the kernel says EINVAL.
            d.refused(
                &format!("pwrite at i64::MAX into {rel}"),
                f.write_at(b"xx", i64::MAX as u64),
                libc::EINVAL,
            );
        }
        // ftruncate: a description cannot grow past 4096; elsewhere truncation means nothing
        // and is accepted (the shell's `>` sends one before every command).
        for len in [4097u64, 1 << 40] {
            let f = open_w(&d.p(rel)).unwrap();
            match kind {
                Kind::Text => {
                    d.refused(
                        &format!("ftruncate {rel} to {len}"),
                        f.set_len(len),
                        libc::EFBIG,
                    );
                    d.refused(
                        &format!("truncate {rel} to {len}"),
                        truncate_path(&d.p(rel), len as i64),
                        libc::EFBIG,
                    );
                }
                _ => {
                    d.accepted(&format!("ftruncate {rel} to {len}"), f.set_len(len));
                    d.accepted(
                        &format!("truncate {rel} to {len}"),
                        truncate_path(&d.p(rel), len as i64),
                    );
                }
            }
        }
    }
    // A command that changes nothing, far out: accepted, nothing changes (the offset is
    // ignored, docs/tree.md).
    let f = open_w(&d.p("pool/pre/state")).unwrap();
    d.accepted(
        "prelive at 1<<40 into a prelive state",
        f.write_at(b"prelive", 1 << 40),
    );
    drop(f);
    let f = open_w(&d.p("pool/.cipher")).unwrap();
    d.accepted(
        "the current cipher at 1<<62",
        f.write_at(b"AES_256", 1 << 62),
    );
    drop(f);
    // Read-only files stay read-only, far out too.
    for rel in ["pool/pre/record.json", ".status", "pool/act/key"] {
        d.refused(
            &format!("truncate {rel}"),
            truncate_path(&d.p(rel), 1 << 40),
            libc::EACCES,
        );
    }
    // Reads far out: nothing, from every file that reads.
    for rel in [
        ".status",
        ".quiesce",
        ".errors",
        "pool/.group.json",
        "pool/.description",
        "pool/.cipher",
        "pool/.rotation",
        "pool/pre/record.json",
        "pool/pre/state",
        "pool/pre/description",
        "pool/act/key",
    ] {
        let f = File::open(d.p(rel)).unwrap();
        let mut buf = [0u8; 64];
        for off in [1u64 << 40, 1 << 62] {
            assert_eq!(f.read_at(&mut buf, off).unwrap(), 0, "read {rel} at {off}");
        }
        d.refused(
            &format!("pread {rel} at a negative offset"),
            f.read_at(&mut buf, u64::MAX),
            libc::EINVAL,
        );
    }
    let json_files = d.all_json_valid("huge offsets");
    let after = d.state();
    assert_eq!(after.0, before.0, "the keystore changed");
    assert_eq!(after.1, before.1, "the backing files changed");
    // `.quiesce` ignores the offset too: a hold taken and released far out.
    let f = open_w(&d.p(".quiesce")).unwrap();
    d.accepted("quiesce at 1<<40", f.write_at(b"quiesce", 1 << 40));
    assert_eq!(d.daemon.quiesce()["holds"], 1);
    d.accepted("unquiesce at 1<<62", f.write_at(b"unquiesce", 1 << 62));
    drop(f); // an open file would keep the mount busy at the end
    assert_eq!(d.daemon.quiesce()["holds"], 0);
    assert_eq!(d.state().0, before.0, "the keystore changed");
    eprintln!(
        "huge offsets: pwrite at 4097, 1<<40, 1<<62 and i64::MAX into every writable file, ftruncate and truncate \
         to 4097 and 1<<40, pread far out of 11 files: {}; {json_files} JSON files valid; keystore and KMS_DATA unchanged",
        d.summary()
    );
    d.finish();
}

// ---- .create in halves ----------------------------------------------------------------------------------

/// A shell process holding `.create` open on fd 3, writing each line it is given in one
/// `printf` (one write), answering `ok` or `err`.
struct Writer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Writer {
    fn new(mnt: &Path, rel: &str) -> Writer {
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(
                r#"exec 3>"$F" || exit 1
                echo ready
                while IFS= read -r line; do
                  if printf '%s' "$line" >&3 2>/dev/null; then echo ok; else echo err; fi
                done"#,
            )
            .env("F", mnt.join(rel))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n", "the writer could not open {rel}");
        Writer {
            child,
            stdin,
            stdout,
        }
    }

    fn write(&mut self, text: &str) -> String {
        writeln!(self.stdin.as_mut().unwrap(), "{text}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    /// Closes its `.create` (the shell exits), and waits.
    fn close(mut self) {
        drop(self.stdin.take());
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn create_objects_in_halves_from_two_open_files_never_mix() {
    let mut d = Drill::new();
    let before = d.state();
    let create = d.p("pool/.create");
    // Refusals first: nothing of them may land.
    // A half, then the other file's second half (which starts no object): EINVAL for it,
    // and the first file's object is still its own.
    let (mut a, mut b) = (open_w(&create).unwrap(), open_w(&create).unwrap());
    d.accepted("A: first half", a.write(br#"{"name": "x", "descr"#));
    d.refused(
        "B: a second half alone",
        b.write(br#"iption": "B"}"#),
        libc::EINVAL,
    );
    d.refused(
        "A: a second half that makes it an unknown field",
        a.write(br#"iptionX": "A"}"#),
        libc::EINVAL,
    );
    // Halves that would make a bad object together: refused by the write that completes it.
    d.accepted("A: half of a bad name", a.write(br#"{"name": ".hid"#));
    d.accepted("B: half of a good name", b.write(br#"{"name": "fi"#));
    d.refused(
        "A: completes a bad name",
        a.write(br#"den"}"#),
        libc::EINVAL,
    );
    d.refused(
        "B: completes with an unknown field",
        b.write(br#"ne", "x": 1}"#),
        libc::EINVAL,
    );
    d.accepted("B: half of a taken name", b.write(br#"{"name": "p"#));
    d.refused(
        "B: completes a taken name",
        b.write(br#"re"}"#),
        libc::EEXIST,
    );
    // A half left when the file is closed: close() succeeds, nothing is created, and the
    // refusal is in .errors as `close`.
    d.accepted("A: a half, then close", a.write(br#"{"name": "never""#));
    drop(a);
    drop(b);
    // The kernel sends the release after close() has returned: give it a moment.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let last = d.daemon.read(".errors").lines().last().unwrap().to_string();
        let last: serde_json::Value = serde_json::from_str(&last).unwrap();
        if (last["operation"].as_str(), last["errno"].as_str()) == (Some("close"), Some("EINVAL")) {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "no close refusal in .errors: {last}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Two shell processes, each with its own open `.create`, their halves alternating.
    let mut pa = Writer::new(&d.daemon.mnt, "pool/.create");
    let mut pb = Writer::new(&d.daemon.mnt, "pool/.create");
    assert_eq!(pa.write(r#"{"name": "y", "descr"#), "ok");
    assert_eq!(pb.write(r#"iption": "from B"}"#), "err", "B's half alone");
    assert_eq!(pb.write(r#"{"name": "pre", "des"#), "ok");
    assert_eq!(pa.write(r#"X": 1}"#), "err", "A completes an unknown field");
    assert_eq!(
        pb.write(r#"cription": "taken"}"#),
        "err",
        "B completes a taken name"
    );
    pa.close();
    pb.close();
    let json_files = d.all_json_valid(".create refusals");
    let after = d.state();
    assert_eq!(after.0, before.0, "the keystore changed");
    assert_eq!(after.1, before.1, "the backing files changed");
    // Now objects that are good: halves alternating between two open files, in-process and
    // from two shells; each record gets its own fields, never the other's.
    let (mut a, mut b) = (open_w(&create).unwrap(), open_w(&create).unwrap());
    d.accepted(
        "A1",
        a.write(br#"{"name": "ha", "description": "from A", "st"#),
    );
    d.accepted("B1", b.write(br#"{"name": "hb", "description": "fr"#));
    d.accepted("A2 completes", a.write(br#"ate": "active"}"#));
    d.accepted("B2 completes", b.write(br#"om B"}"#));
    // The same open files take the next objects.
    d.accepted("B3", b.write(br#"{"name": "hb2"#));
    d.accepted(
        "A3",
        a.write(br#"{"name": "ha2", "description": "A again"}"#),
    );
    d.accepted("B4 completes", b.write(br#"", "description": "B again"}"#));
    drop(a);
    drop(b);
    let mut pa = Writer::new(&d.daemon.mnt, "pool/.create");
    let mut pb = Writer::new(&d.daemon.mnt, "pool/.create");
    assert_eq!(pa.write(r#"{"name": "sa", "description": "shell"#), "ok");
    assert_eq!(pb.write(r#"{"name": "sb", "description": "shell"#), "ok");
    assert_eq!(pb.write(r#" B", "state": "active"}"#), "ok");
    assert_eq!(pa.write(r#" A"}"#), "ok");
    pa.close();
    pb.close();
    for (name, desc, state) in [
        ("ha", "from A", "inactive"),
        ("hb", "from B", "prelive"),
        ("ha2", "A again", "prelive"),
        ("hb2", "B again", "prelive"),
        ("sa", "shell A", "prelive"),
        ("sb", "shell B", "active"),
    ] {
        let j = d.daemon.json(&format!("pool/{name}/record.json"));
        assert_eq!(
            (j["description"].as_str(), j["state"].as_str()),
            (Some(desc), Some(state)),
            "{name}"
        );
        d.accepted += 1;
    }
    for n in ["x", "y", "hidden", "never", "fine", "finex"] {
        assert!(!d.p("pool").join(n).exists(), "{n} was created");
    }
    let json_files = json_files.max(d.all_json_valid(".create in halves"));
    eprintln!(
        ".create in halves: two open files in-process and two shell processes, halves alternating, \
         broken, mismatched, taken and unfinished objects: {}; {json_files} JSON files valid; \
         the refusals left keystore and KMS_DATA unchanged; 6 good objects landed with their own fields",
        d.summary()
    );
    d.finish();
}
