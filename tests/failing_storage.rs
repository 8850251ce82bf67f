//! Reliability drills, "Full disk and failing storage", through a real `kmsfs mount`:
//!
//! - the data directory on a small file system that fills up (an ext4 image on a loop device,
//!   and a size-limited tmpfs): every kind of change fails with ENOSPC from the system call
//!   itself and says why in `.errors`, nothing stored changes, reads go on, a master key change
//!   (a rewrite of KMS_DATA) and an offline import that cannot complete leave the old
//!   KMS_DATA and keys in place, and once there is room again changes succeed without a
//!   restart; with the audit log in the data directory (the default) the full disk stops the
//!   log first, and key reads and changes fail closed with EIO; the daemon's own compaction on
//!   a nearly full disk fails without losing the change that triggered it, and is retried;
//! - EIO from the disk, injected by strace into the running daemon: KMS_DATA's fdatasync (a
//!   change), the fsync of the rewrite's temporary file and the directory's fsync after the
//!   rename (a master key change), the audit log's write and fdatasync; while injected,
//!   changes are refused with EIO and `.errors` names the file, reads go on, nothing
//!   acknowledged is lost; afterwards changes succeed, and after a remount everything
//!   acknowledged is there and `kmsfs verify` passes; a failed directory fsync after a KPK
//!   change's commit point must not leave the daemon wrapping new keys under the old KPK;
//! - found on the way: a FLUSH sent by a child in the middle of its exec must not deadlock the
//!   daemon.
//!
//! What `tests/store_defects.rs` (init on a full tmpfs), `tests/mount_control.rs` (a
//! description's close on a full tmpfs, in-process, without an audit log) and
//! `tests/mount_audit.rs` (the audit log on a full tmpfs of its own) cover is not repeated.
//! Every mount is undone by a guard (`umount -l`), whatever happens; strace is always
//! stopped before the daemon (it holds back the daemon's signals).

mod support;

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::cli::{describe, kmsfs, ok, text, verify};
use support::daemon::Daemon;
use support::scratch::Scratch;
use support::snapshot::snapshot;

const EXPORT_PASS: &str = "export passphrase, kept apart\n";

// ---- small file systems ----------------------------------------------------------------------

/// A small file system mounted for one test, unmounted lazily however the test ends (a loop
/// device goes with its mount: `mount -o loop` sets it to clear itself).
struct SmallFs {
    root: PathBuf,
    what: String,
}

fn run(what: &str, c: &mut Command) -> Output {
    let o = c
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(o.status.success(), "{}", describe(what, &o));
    o
}

impl SmallFs {
    /// An 8 MiB ext4 image made here (1 KiB blocks), on a loop device.
    fn ext4(s: &Scratch) -> SmallFs {
        let img = s.path("ext4.img");
        let root = s.mkdir("ext4");
        run(
            "truncate",
            Command::new("truncate").args(["-s", "8M"]).arg(&img),
        );
        run(
            "mkfs.ext4 (Debian package e2fsprogs)",
            Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img),
        );
        run(
            "mount -o loop",
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(&img)
                .arg(&root),
        );
        SmallFs {
            root,
            what: "ext4 (8 MiB image, loop device)".into(),
        }
    }

    fn tmpfs(s: &Scratch, size: &str) -> SmallFs {
        let root = s.mkdir("tmpfs");
        run(
            "mount -t tmpfs",
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0700"),
                    "tmpfs",
                ])
                .arg(&root),
        );
        SmallFs {
            root,
            what: format!("tmpfs (size={size})"),
        }
    }

    /// Free bytes, root's reserve included (the daemon runs as root).
    fn free_bytes(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(&self.root).expect("statvfs");
        st.blocks_free() as u64 * st.fragment_size() as u64
    }

    fn filler(&self) -> PathBuf {
        self.root.join("filler")
    }

    /// Fills the file system with `dd` into a filler file until the disk says no; then again,
    /// a block at a time, until nothing more fits (ext4 gives back, once the data is written
    /// out, the room it held for the metadata of delayed allocations).
    fn fill(&self) {
        let len = || fs::metadata(self.filler()).map_or(0, |m| m.len());
        for (pass, bs) in ["bs=64k", "bs=1k", "bs=1k", "bs=1k", "bs=1k"]
            .into_iter()
            .enumerate()
        {
            let before = len();
            let _ = Command::new("dd")
                .args(["if=/dev/zero", bs, "oflag=append", "conv=notrunc,fsync"])
                .arg("status=none")
                .arg(format!("of={}", self.filler().display()))
                .output()
                .expect("run dd");
            let _ = Command::new("sync").arg("-f").arg(&self.root).status();
            if pass > 0 && len() == before {
                break;
            }
        }
        eprintln!(
            "  filled {}: filler {} bytes, statvfs f_bfree {} bytes",
            self.what,
            len(),
            self.free_bytes()
        );
    }

    /// Frees about `bytes` of the filler.
    fn free(&self, bytes: u64) {
        let f = OpenOptions::new().write(true).open(self.filler()).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(bytes)).unwrap();
        f.sync_all().unwrap();
        eprintln!(
            "  freed {bytes} bytes of the filler: statvfs f_bfree {} bytes",
            self.free_bytes()
        );
    }

    fn unfill(&self) {
        fs::remove_file(self.filler()).unwrap();
        eprintln!(
            "  removed the filler: statvfs f_bfree {} bytes",
            self.free_bytes()
        );
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.root).status();
    }
}

// ---- strace fault injection ------------------------------------------------------------------

/// strace attached to every thread of the daemon, making the listed calls on descriptors of
/// `path` (only those: `-P`) fail with `error`, from the `when`-th such call on (per thread).
/// Detached when stopped or dropped.
struct Inject {
    child: Option<Child>,
    out: PathBuf,
    what: String,
}

impl Inject {
    fn attach(
        s: &Scratch,
        pid: &str,
        path: &Path,
        calls: &str,
        error: &str,
        when: Option<&str>,
    ) -> Inject {
        let out = s.path(&format!("strace.{}", rand_suffix()));
        let when = when.map(|w| format!(":when={w}")).unwrap_or_default();
        let inject = format!("inject={calls}:error={error}{when}");
        let what = format!("strace -P {} -e {inject}", path.display());
        let mut child = Command::new("strace")
            .args(["-f", "-qq", "-e", "signal=none", "-e"])
            .arg(format!("trace={calls}"))
            .args(["-e", &inject, "-P"])
            .arg(path)
            .arg("-o")
            .arg(&out)
            .args(["-p", pid])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("strace (Debian package strace) is needed by this test");
        // Attached once every thread of the daemon has strace as its tracer.
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let tasks = fs::read_dir(format!("/proc/{pid}/task")).unwrap();
            let all_traced = tasks.flatten().all(|t| {
                fs::read_to_string(t.path().join("status"))
                    .map(|s| !s.contains("TracerPid:\t0\n"))
                    .unwrap_or(true)
            });
            if all_traced {
                break;
            }
            if let Some(st) = child.try_wait().unwrap() {
                let mut err = String::new();
                let _ = io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
                panic!("{what} exited with {st} before attaching: {err}");
            }
            assert!(Instant::now() < until, "{what} did not attach in 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("  attached: {what}");
        Inject {
            child: Some(child),
            out,
            what,
        }
    }

    /// Detaches; returns the calls it made fail.
    fn stop(mut self) -> Vec<String> {
        self.detach();
        let injected: Vec<String> = fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("(INJECTED)"))
            .map(String::from)
            .collect();
        eprintln!(
            "  detached: {} ({} call(s) failed by injection)",
            self.what,
            injected.len()
        );
        injected
    }

    fn detach(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let until = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > until {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.wait();
    }
}

impl Drop for Inject {
    fn drop(&mut self) {
        self.detach();
    }
}

fn rand_suffix() -> String {
    hex::encode(rand::random::<[u8; 4]>())
}

fn daemon_pid(data: &Path) -> String {
    fs::read_to_string(data.join("kmsfs.lock"))
        .unwrap()
        .trim()
        .to_string()
}

// ---- what is stored ---------------------------------------------------------------------------

/// SHA-256 of each backing file's bytes (not its mtime: a failed append that is cut back
/// touches the file but changes none of its bytes).
fn hashes(data: &Path) -> Vec<String> {
    kmsfs::store::BACKUP_SET
        .iter()
        .map(|f| {
            let bytes = fs::read(data.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            format!(
                "{f} {} bytes {}",
                bytes.len(),
                hex::encode(Sha256::digest(&bytes))
            )
        })
        .collect()
}

/// Names in the data directory that are neither the keystore's files nor the lock nor a
/// kept copy of an old key file: what a failed write would leave behind.
fn leftovers(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            ![
                "KMS_DATA",
                "KMS_HMKF",
                "KMS_KPKF",
                "kmsfs.lock",
                "audit.log",
            ]
            .contains(&n.as_str())
        })
        .collect();
    names.sort();
    names
}

/// The leftovers that matter: temporary files and pending key files (kept copies of old key
/// files, `KMS_HMKF.<id>`, are for backups and harmless).
fn stray(data: &Path) -> Vec<String> {
    leftovers(data)
        .into_iter()
        .filter(|n| n.ends_with(".tmp") || n.contains(".next."))
        .collect()
}

fn verify_live(data: &Path) -> Output {
    kmsfs([
        OsStr::new("verify"),
        OsStr::new("--allow-torn-tail"),
        OsStr::new("--data-dir"),
        data.as_os_str(),
    ])
}

fn audit_verify(data: &Path, log: &Path) -> String {
    ok(
        "kmsfs audit verify",
        kmsfs([
            OsStr::new("audit"),
            OsStr::new("verify"),
            OsStr::new("--data-dir"),
            data.as_os_str(),
            log.as_os_str(),
        ]),
    )
}

fn last_error(d: &Daemon) -> serde_json::Value {
    let text = d.read(".errors");
    let line = text.lines().last().expect(".errors is empty");
    serde_json::from_str(line).expect(".errors line is JSON")
}

fn errno_of(r: &io::Result<()>) -> Option<i32> {
    r.as_ref().err().and_then(|e| e.raw_os_error())
}

// ---- the changes ------------------------------------------------------------------------------

/// The keystore every drill starts from: `pool` with k1 active (described), k3 and k4
/// prelive, `other` with k2 prelive, the empty groups `empty`, `spare` and `doomed`; `bulk`
/// records with long descriptions make KMS_DATA larger than the room a nearly full disk
/// leaves.
fn populate(d: &Daemon, bulk: usize) {
    d.sh_ok(
        "mkdir pool other empty spare doomed pool/k1 pool/k3 pool/k4 other/k2 \
         && echo active > pool/k1/state && echo 'first key' > pool/k1/description",
    );
    d.sh_ok(&format!(
        "for i in $(seq {bulk}); do mkdir pool/bulk$i \
         && head -c 3000 /dev/urandom | base64 -w0 > pool/bulk$i/description; done"
    ));
}

/// One kind of change, as an administrator's tool makes it: `tag` makes its new names fresh.
#[derive(Clone, Copy, Debug)]
enum Op {
    MkdirGroup,
    MkdirRecord,
    State,
    Create,
    DescriptionFsync,
    DescriptionClose,
    RenameRecord,
    RenameGroup,
    RmdirRecord,
    Cipher,
    RmdirGroup,
}

const OPS: [Op; 11] = [
    Op::MkdirGroup,
    Op::MkdirRecord,
    Op::State,
    Op::Create,
    Op::DescriptionFsync,
    Op::DescriptionClose,
    Op::RenameRecord,
    Op::RenameGroup,
    Op::RmdirRecord,
    Op::Cipher,
    Op::RmdirGroup,
];

/// `write()` of the whole text to an existing file of the mount, in one call, as `echo` does.
fn write_to(path: &Path, text: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).truncate(true).open(path)?;
    f.write_all(text.as_bytes())
}

/// Opens a description, writes `text` in one `write()` and closes it, returning what
/// `close()` returned (the commit happens there).
fn describe_closed(path: &Path, text: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).truncate(true).open(path)?;
    f.write_all(text.as_bytes())?;
    let fd = f.into_raw_fd();
    // SAFETY: fd was just released by the File, and is closed exactly once.
    match unsafe { libc::close(fd) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

impl Op {
    /// The path `.errors` names for the refusal, relative to the mount.
    fn path(self, tag: &str) -> String {
        match self {
            Op::MkdirGroup => format!("g-{tag}"),
            Op::MkdirRecord => format!("pool/r-{tag}"),
            Op::State => "other/k2/state".into(),
            Op::Create => "pool/.create".into(),
            Op::DescriptionFsync => "pool/k1/description".into(),
            Op::DescriptionClose => "pool/.description".into(),
            Op::RenameRecord => "pool/k3".into(),
            Op::RenameGroup => "spare".into(),
            Op::RmdirRecord => "pool/k4".into(),
            Op::Cipher => "empty/.cipher".into(),
            Op::RmdirGroup => "doomed".into(),
        }
    }

    fn run(self, d: &Daemon, tag: &str) -> io::Result<()> {
        match self {
            Op::MkdirGroup => fs::create_dir(d.p(&format!("g-{tag}"))),
            Op::MkdirRecord => fs::create_dir(d.p(&format!("pool/r-{tag}"))),
            Op::State => write_to(&d.p("other/k2/state"), "active\n"),
            Op::Create => write_to(
                &d.p("pool/.create"),
                &format!(r#"{{"name": "c-{tag}", "state": "prelive"}}"#),
            ),
            Op::DescriptionFsync => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(d.p("pool/k1/description"))?;
                f.write_all(format!("fsync {tag}\n").as_bytes())?;
                f.sync_all()
            }
            Op::DescriptionClose => {
                describe_closed(&d.p("pool/.description"), &format!("close {tag}\n"))
            }
            Op::RenameRecord => fs::rename(d.p("pool/k3"), d.p("pool/k3-moved")),
            Op::RenameGroup => fs::rename(d.p("spare"), d.p("spare-moved")),
            Op::RmdirRecord => fs::remove_dir(d.p("pool/k4")),
            Op::Cipher => write_to(&d.p("empty/.cipher"), "AES_128\n"),
            Op::RmdirGroup => fs::remove_dir(d.p("doomed")),
        }
    }
}

/// How a change may be refused: errno, its name in `.errors`, and what the reason holds.
type Refusal<'a> = (i32, &'a str, &'a [&'a str]);

/// Every kind of change must fail from its own system call as one of `ways`, and `.errors`
/// must say so, with the path and the reason. Returns how many failed each way.
fn every_change_refused_as(d: &Daemon, ways: &[Refusal]) -> Vec<usize> {
    let mut tally = vec![0; ways.len()];
    for op in OPS {
        let r = op.run(d, "refused");
        let got = errno_of(&r);
        let Some(i) = ways.iter().position(|w| Some(w.0) == got) else {
            let names: Vec<&str> = ways.iter().map(|w| w.1).collect();
            panic!(
                "{op:?} should fail with {names:?}, got {r:?}\n{}",
                d.log_text()
            );
        };
        let (_, name, reason) = ways[i];
        tally[i] += 1;
        let line = last_error(d);
        assert_eq!(line["errno"], name, "{op:?}: {line}");
        let path = d.p(&op.path("refused"));
        assert_eq!(line["path"], path.to_str().unwrap(), "{op:?}: {line}");
        let why = line["reason"].as_str().unwrap();
        for part in reason {
            assert!(
                why.contains(part),
                "{op:?}: the reason lacks {part:?}: {line}"
            );
        }
    }
    tally
}

/// Every kind of change must fail with `errno` (see `every_change_refused_as`).
fn every_change_refused(d: &Daemon, errno: i32, name: &str, reason: &[&str]) {
    every_change_refused_as(d, &[(errno, name, reason)]);
    eprintln!(
        "  every kind of change ({}) refused with {name}; .errors: {}",
        OPS.len(),
        last_error(d)["reason"]
    );
}

fn every_change_succeeds(d: &Daemon, tag: &str) {
    for op in OPS {
        op.run(d, tag)
            .unwrap_or_else(|e| panic!("{op:?} after the fault: {e}\n{}", d.log_text()));
    }
    assert_eq!(d.read("pool/k1/description"), format!("fsync {tag}\n"));
    assert_eq!(d.read("pool/.description"), format!("close {tag}\n"));
    assert_eq!(d.read("other/k2/state"), "active\n");
    assert_eq!(d.read("empty/.cipher"), "AES_128\n");
    for p in [
        format!("g-{tag}"),
        format!("pool/r-{tag}"),
        format!("pool/c-{tag}"),
        "pool/k3-moved".into(),
        "spare-moved".into(),
    ] {
        assert!(d.p(&p).is_dir(), "{p} missing after its change succeeded");
    }
    assert!(!d.p("pool/k4").exists() && !d.p("doomed").exists());
    eprintln!("  every kind of change ({}) succeeds again", OPS.len());
}

/// Reads that must keep working whatever the disk does.
fn reads_work(d: &Daemon, key: &[u8]) {
    assert_eq!(d.json("pool/k1/record.json")["state"], "active");
    assert_eq!(d.read("pool/k1/state"), "active\n");
    assert_eq!(fs::read(d.p("pool/k1/key")).unwrap(), key, "pool/k1/key");
    d.sh_ok("ls -lR . > /dev/null && cat .status pool/.group.json pool/k1/description > /dev/null");
}

/// Changes until one fails, to use up the room left in the last blocks of KMS_DATA (a file
/// system takes an append into a partly used block when it has no free block left). Returns
/// how many fitted.
fn use_up_slack(d: &Daemon, errno: i32) -> usize {
    let run = rand_suffix();
    for i in 0..200 {
        let r = fs::create_dir(d.p(&format!("slack-{run}-{i}")));
        match r {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(errno), "slack{i}: {e}");
                eprintln!("  {i} change(s) still fitted in the last blocks, then {e}");
                return i;
            }
        }
    }
    panic!("200 changes fitted on a full file system");
}

// ---- 1: a full data directory ------------------------------------------------------------------

fn full_data_directory(fs: SmallFs, s: &Scratch) {
    let t0 = Instant::now();
    let data = fs.root.join("data");
    // The audit log elsewhere, so that it is the data directory alone that fills up (with the
    // log in it, the log fails first: see the test below).
    let audit = s.path("audit.log");
    let mnt = s.path("mnt");
    let audit_arg = ["--audit-log", audit.to_str().unwrap()];
    let d = Daemon::start_with(&data, &mnt, &["--init", audit_arg[0], audit_arg[1]]);
    populate(&d, 12);
    let key = fs::read(d.p("pool/k1/key")).unwrap();
    let pass = s.file("pass", EXPORT_PASS);
    let export = s.path("all.kmsx");
    ok(
        "kmsfs export",
        kmsfs([
            OsStr::new("export"),
            OsStr::new("--data-dir"),
            data.as_os_str(),
            OsStr::new("--out"),
            export.as_os_str(),
            OsStr::new("--passphrase-file"),
            pass.as_os_str(),
        ]),
    );
    eprintln!(
        "  keystore on {}: KMS_DATA {} bytes",
        fs.what,
        fs::metadata(data.join("KMS_DATA")).unwrap().len()
    );

    fs.fill();
    use_up_slack(&d, libc::ENOSPC);
    let before = (snapshot(&d), hashes(&data));
    every_change_refused(
        &d,
        libc::ENOSPC,
        "ENOSPC",
        &["KMS_DATA", "No space left on device"],
    );
    reads_work(&d, &key);
    assert!(snapshot(&d) == before.0, "the mount shows another keystore");
    assert_eq!(hashes(&data), before.1, "the backing files changed");
    let o = verify_live(&data);
    assert!(
        o.status.success(),
        "{}",
        describe("verify --allow-torn-tail", &o)
    );
    assert!(stray(&data).is_empty(), "{:?}", leftovers(&data));

    // A master key change rewrites KMS_DATA: with room for the small key files but not for
    // the rewrite, it fails at the rewrite and leaves the old KMS_DATA and keys.
    fs.free(16 * 1024);
    let ids = |d: &Daemon| {
        let st = d.json(".status");
        (st["hmk_id"].clone(), st["kpk_id"].clone())
    };
    let old_ids = ids(&d);
    for kind in ["hmk", "kpk"] {
        let r = write_to(&d.p(".change-key"), &format!("{kind}\n"));
        assert_eq!(errno_of(&r), Some(libc::ENOSPC), "change {kind}: {r:?}");
        let line = last_error(&d);
        let why = line["reason"].as_str().unwrap();
        assert!(
            why.contains("cannot rewrite KMS_DATA") && why.contains("No space left"),
            "change {kind} should fail at the rewrite of KMS_DATA ({} bytes free, KMS_DATA {} bytes): {line}",
            fs.free_bytes(),
            fs::metadata(data.join("KMS_DATA")).unwrap().len()
        );
        assert_eq!(ids(&d), old_ids, "change {kind}");
        assert_eq!(
            hashes(&data),
            before.1,
            "change {kind}: the backing files changed"
        );
        assert!(
            stray(&data).is_empty(),
            "change {kind}: {:?}",
            leftovers(&data)
        );
        eprintln!("  .change-key {kind}: ENOSPC at the rewrite ({why})");
    }
    eprintln!("  left in the data directory: {:?}", leftovers(&data));
    reads_work(&d, &key);
    let o = verify_live(&data);
    assert!(
        o.status.success(),
        "{}",
        describe("verify --allow-torn-tail", &o)
    );

    // Room again: service resumes without a restart.
    fs.unfill();
    every_change_succeeds(&d, "after");
    write_to(&d.p(".change-key"), "hmk\n").expect("change hmk with room");
    assert_ne!(ids(&d).0, old_ids.0, "the HMK changed");
    assert_eq!(fs::read(d.p("pool/k1/key")).unwrap(), key);
    let acknowledged = snapshot(&d);
    d.stop();
    let o = verify(&data);
    assert!(o.status.success(), "{}", describe("verify", &o));

    // Offline: an import is one rewrite of KMS_DATA; on a full disk nothing is imported.
    fs.fill();
    let stored = hashes(&data);
    let import = || {
        kmsfs([
            OsStr::new("import"),
            OsStr::new("--data-dir"),
            data.as_os_str(),
            OsStr::new("--passphrase-file"),
            pass.as_os_str(),
            export.as_os_str(),
        ])
    };
    let o = import();
    let err = text(&o.stderr);
    assert!(
        !o.status.success(),
        "{}",
        describe("import on a full disk", &o)
    );
    assert!(
        err.contains("nothing was imported")
            && err.contains("KMS_DATA")
            && err.contains("No space left"),
        "{}",
        describe("import on a full disk", &o)
    );
    eprintln!("  kmsfs import on a full disk: {}", err.trim());
    assert_eq!(
        hashes(&data),
        stored,
        "a failed import changed the backing files"
    );
    assert!(stray(&data).is_empty(), "{:?}", leftovers(&data));
    let o = verify(&data);
    assert!(o.status.success(), "{}", describe("verify", &o));

    // Everything acknowledged is there, with the same keys, after a remount, even on a
    // full disk; changes wait for room.
    let d = Daemon::start_with(&data, &mnt, &audit_arg);
    assert!(
        snapshot(&d) == acknowledged,
        "the keystore remounted on a full disk differs from what was acknowledged"
    );
    eprintln!("  remounted on the full disk: everything acknowledged is there");
    use_up_slack(&d, libc::ENOSPC);
    fs.unfill();
    fs::create_dir(d.p("after-remount")).expect("mkdir once there is room");
    d.stop();
    let o = import();
    assert!(o.status.success(), "{}", describe("import with room", &o));
    let o = verify(&data);
    assert!(o.status.success(), "{}", describe("verify", &o));
    audit_verify(&data, &audit);
    eprintln!("  done on {} in {:.1?}", fs.what, t0.elapsed());
}

#[test]
fn a_full_ext4_data_directory_refuses_every_change_with_enospc_and_resumes_when_freed() {
    let s = Scratch::new();
    eprintln!("full data directory, ext4:");
    full_data_directory(SmallFs::ext4(&s), &s);
}

#[test]
fn a_full_tmpfs_data_directory_refuses_every_change_with_enospc_and_resumes_when_freed() {
    let s = Scratch::new();
    eprintln!("full data directory, tmpfs:");
    full_data_directory(SmallFs::tmpfs(&s, "2m"), &s);
}

/// The default: the audit log is `DATA/audit.log`, on the same full file system. Both rules
/// then apply to every change, in turn: its audit line first (docs/audit.md, "Fail-closed":
/// EIO, `.errors` naming the log), then its frame in KMS_DATA (docs/errors.md: ENOSPC). Which
/// one refuses depends on whether the line still fits in the log's last block, so a change
/// fails with either errno, both for the full disk; a key read is refused (EIO) unless its
/// line fits. Metadata reads go on, nothing stored changes, and service resumes once there is
/// room.
#[test]
fn a_full_data_directory_holding_the_audit_log_refuses_changes_with_eio_or_enospc() {
    let s = Scratch::new();
    eprintln!("full data directory holding the audit log, ext4:");
    let fs = SmallFs::ext4(&s);
    let data = fs.root.join("data");
    let d = Daemon::start_init(&data, &s.path("mnt"));
    populate(&d, 0);
    let key = fs::read(d.p("pool/k1/key")).unwrap();
    let before = snapshot(&d);
    fs.fill();
    // Changes fail, with ENOSPC while only KMS_DATA is full, until the log is full too.
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(attempts < 200, "the audit log never filled up");
        match fs::create_dir(d.p(&format!("slack{attempts}"))) {
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}"),
            Ok(()) => {}
        }
    }
    eprintln!("  {attempts} change(s) until the audit log was full");
    let stored = hashes(&data);
    let tally = every_change_refused_as(
        &d,
        &[
            (
                libc::EIO,
                "EIO",
                &["audit log", "audit.log", "No space left on device"],
            ),
            (
                libc::ENOSPC,
                "ENOSPC",
                &["cannot append to KMS_DATA", "No space left on device"],
            ),
        ],
    );
    eprintln!(
        "  every kind of change ({}) refused: {} with EIO (the audit log), {} with ENOSPC (KMS_DATA)",
        OPS.len(),
        tally[0],
        tally[1]
    );
    match fs::read(d.p("pool/k1/key")) {
        Ok(k) => {
            assert_eq!(k, key);
            let log = fs::read_to_string(data.join("audit.log")).unwrap();
            let last = log.lines().last().unwrap();
            assert!(last.contains("\"open key\""), "{last}");
            eprintln!("  a key read: allowed (its line still fitted)");
        }
        Err(e) => {
            assert_eq!(e.raw_os_error(), Some(libc::EIO), "a key read: {e}");
            eprintln!("  a key read: refused with EIO");
        }
    }
    assert_eq!(d.read("pool/k1/state"), "active\n");
    assert_eq!(d.json("pool/k1/record.json")["state"], "active");
    assert_eq!(hashes(&data), stored, "the backing files changed");
    let o = verify_live(&data);
    assert!(
        o.status.success(),
        "{}",
        describe("verify --allow-torn-tail", &o)
    );
    fs.unfill();
    assert_eq!(fs::read(d.p("pool/k1/key")).unwrap(), key);
    assert_eq!(d.json(".status")["audit"]["writable"], true);
    every_change_succeeds(&d, "after");
    assert!(snapshot(&d) != before);
    d.stop();
    let o = verify(&data);
    assert!(o.status.success(), "{}", describe("verify", &o));
    audit_verify(&data, &data.join("audit.log"));
}

/// (frames in KMS_DATA, live objects): the daemon compacts once an append makes the first
/// exceed the second by more than 4096.
fn frames_and_live(data: &Path) -> (u64, u64) {
    let (_, ks, _, report) = kmsfs::store::Store::open(data, kmsfs::store::Access::ReadOnly)
        .unwrap_or_else(|e| panic!("open {} read-only: {e}", data.display()));
    (report.frames, (ks.group_count() + ks.record_count()) as u64)
}

/// The daemon's own compaction (every `records + 4096` changes) on a nearly full disk: the
/// change that triggers it is acknowledged and kept, the rewrite fails (logged, retried at
/// every change), the old KMS_DATA is left as it was with the changes appended, and the next
/// change once there is room compacts.
#[test]
fn an_automatic_compaction_on_a_nearly_full_disk_keeps_the_log_and_retries() {
    let t0 = Instant::now();
    eprintln!("automatic compaction on a nearly full tmpfs:");
    let s = Scratch::new();
    let fs = SmallFs::tmpfs(&s, "8m");
    let data = fs.root.join("data");
    let mnt = s.path("mnt");
    let audit = s.path("audit.log");
    let audit_arg = ["--audit-log", audit.to_str().unwrap()];
    let d = Daemon::start_with(&data, &mnt, &["--init", audit_arg[0], audit_arg[1]]);
    populate(&d, 12);
    let (frames, live) = frames_and_live(&data);
    let due = live + 4097 - frames;
    let text = d.p("pool/.description");
    let early = 10;
    for i in 0..due - early {
        describe_closed(&text, &format!("{i}\n")).unwrap_or_else(|e| panic!("change {i}: {e}"));
    }
    let len = fs::metadata(data.join("KMS_DATA")).unwrap().len();
    eprintln!(
        "  {} changes made ({frames} frames, {live} live objects at the start): KMS_DATA {len} bytes, {:.1?}",
        due - early,
        t0.elapsed()
    );
    let old = fs::read(data.join("KMS_DATA")).unwrap();
    fs.fill();
    fs.free(40 * 1024);
    for i in 0..2 * early {
        describe_closed(&text, &format!("near full {i}\n"))
            .unwrap_or_else(|e| panic!("change {i} on a nearly full disk: {e}"));
    }
    assert_eq!(
        d.read("pool/.description"),
        format!("near full {}\n", 2 * early - 1)
    );
    let failed = d.log_text().matches("compaction of").count();
    assert!(
        failed >= early as usize,
        "{failed} failed compaction(s) logged for {early} changes past due:\n{}",
        d.log_text()
    );
    let now = fs::read(data.join("KMS_DATA")).unwrap();
    assert!(
        now.len() > old.len() && now.starts_with(&old),
        "KMS_DATA must be the old log with the changes appended ({} -> {} bytes)",
        old.len(),
        now.len()
    );
    assert!(stray(&data).is_empty(), "{:?}", leftovers(&data));
    let o = verify_live(&data);
    assert!(
        o.status.success(),
        "{}",
        describe("verify --allow-torn-tail", &o)
    );
    let last = d
        .log_text()
        .lines()
        .rfind(|l| l.contains("compaction of"))
        .unwrap()
        .to_string();
    eprintln!(
        "  {} changes past due acknowledged, {failed} compactions failed, KMS_DATA {} bytes: {last}",
        early,
        now.len()
    );

    fs.unfill();
    describe_closed(&text, "with room\n").expect("a change with room");
    let (frames, _) = frames_and_live(&data);
    let compacted = fs::metadata(data.join("KMS_DATA")).unwrap().len();
    assert!(
        frames <= 2 && compacted < old.len() as u64 / 4,
        "no compaction once there was room: {frames} frames, {compacted} bytes"
    );
    eprintln!("  room again: compacted to {compacted} bytes, {frames} frame(s)");
    let acknowledged = snapshot(&d);
    d.stop();
    let o = verify(&data);
    assert!(o.status.success(), "{}", describe("verify", &o));
    let d = Daemon::start_with(&data, &mnt, &audit_arg);
    assert!(
        snapshot(&d) == acknowledged,
        "the remounted keystore differs"
    );
    assert_eq!(d.read("pool/.description"), "with room\n");
    d.stop();
    audit_verify(&data, &audit);
    eprintln!("  done in {:.1?}", t0.elapsed());
}

// ---- 2: EIO from the disk ----------------------------------------------------------------------

#[test]
fn eio_from_the_disk_refuses_changes_keeps_reads_and_loses_nothing_acknowledged() {
    let t0 = Instant::now();
    eprintln!("EIO injected by strace:");
    let s = Scratch::new();
    let data = s.path("data");
    let mnt = s.path("mnt");
    let d = Daemon::start_init(&data, &mnt);
    let data = data.canonicalize().unwrap();
    populate(&d, 2);
    let key = fs::read(d.p("pool/k1/key")).unwrap();
    let pid = daemon_pid(&data);
    let before = (snapshot(&d), hashes(&data));

    // KMS_DATA's fdatasync fails: every change is refused, nothing is kept of it.
    let strace = Inject::attach(&s, &pid, &data.join("KMS_DATA"), "fdatasync", "EIO", None);
    every_change_refused(
        &d,
        libc::EIO,
        "EIO",
        &["cannot append to KMS_DATA", "Input/output error"],
    );
    reads_work(&d, &key);
    assert!(snapshot(&d) == before.0, "the mount shows another keystore");
    assert_eq!(hashes(&data), before.1, "the backing files changed");
    let o = verify_live(&data);
    assert!(
        o.status.success(),
        "{}",
        describe("verify --allow-torn-tail", &o)
    );
    let injected = strace.stop();
    assert!(
        injected.len() >= OPS.len(),
        "{} injected fdatasync(s) for {} refused changes",
        injected.len(),
        OPS.len()
    );
    every_change_succeeds(&d, "after-fdatasync");

    // A master key change whose rewrite cannot be synced: nothing changes.
    let ids = |d: &Daemon| {
        let st = d.json(".status");
        (
            st["hmk_id"].as_str().unwrap().to_string(),
            st["kpk_id"].as_str().unwrap().to_string(),
        )
    };
    let old_ids = ids(&d);
    let stored = hashes(&data);
    let strace = Inject::attach(&s, &pid, &data.join(".KMS_DATA.tmp"), "fsync", "EIO", None);
    for kind in ["hmk", "kpk"] {
        let r = write_to(&d.p(".change-key"), &format!("{kind}\n"));
        assert_eq!(errno_of(&r), Some(libc::EIO), "change {kind}: {r:?}");
        let line = last_error(&d);
        let why = line["reason"].as_str().unwrap();
        assert!(
            why.contains("cannot rewrite KMS_DATA") && why.contains("Input/output error"),
            "change {kind}: {line}"
        );
        assert_eq!(ids(&d), old_ids, "change {kind}");
        assert_eq!(
            hashes(&data),
            stored,
            "change {kind}: the backing files changed"
        );
        assert!(
            stray(&data).is_empty(),
            "change {kind}: {:?}",
            leftovers(&data)
        );
        eprintln!("  .change-key {kind}: EIO ({why})");
    }
    assert!(strace.stop().len() >= 2);
    reads_work(&d, &key);

    // The directory's fsync after the new KMS_DATA was renamed into place fails (the 3rd
    // fsync of the directory a key change makes: the old key's copy, the new key file, then
    // KMS_DATA). The change is made on disk, so memory must follow it: a record created next
    // is wrapped under the KPK that KMS_DATA names, and its key survives a restart.
    let strace = Inject::attach(&s, &pid, &data, "fsync", "EIO", Some("3"));
    let r = write_to(&d.p(".change-key"), "kpk\n");
    assert!(strace.stop().len() == 1, "one directory fsync failed");
    assert_eq!(errno_of(&r), Some(libc::EIO), "change kpk: {r:?}");
    let line = last_error(&d);
    assert!(
        line["reason"]
            .as_str()
            .unwrap()
            .contains("cannot sync the data directory"),
        "{line}"
    );
    let on_disk = kmsfs::store::read_header(&data).unwrap();
    assert_ne!(
        on_disk.kpk_id.to_string(),
        old_ids.1,
        "KMS_DATA names the new KPK"
    );
    assert_eq!(
        ids(&d).1,
        on_disk.kpk_id.to_string(),
        ".status must name the KPK that KMS_DATA names"
    );
    eprintln!(
        "  .change-key kpk with the directory's fsync failing: EIO, KMS_DATA names the new KPK {}",
        on_disk.kpk_id
    );
    write_to(
        &d.p("pool/.create"),
        r#"{"name": "after-kpk", "state": "active"}"#,
    )
    .expect(".create after the failed sync");
    let new_key = fs::read(d.p("pool/after-kpk/key")).unwrap();

    // The audit log's write and fdatasync fail: key reads and changes fail closed (EIO, the
    // log named), metadata reads go on.
    let log = data.join("audit.log");
    let strace = Inject::attach(&s, &pid, &log, "write,fdatasync", "EIO", None);
    let r = fs::create_dir(d.p("g-audit"));
    assert_eq!(errno_of(&r), Some(libc::EIO), "mkdir: {r:?}");
    let why = last_error(&d)["reason"].as_str().unwrap().to_string();
    assert!(
        why.contains("audit log") && why.contains("Input/output error"),
        "{why}"
    );
    let e = fs::read(d.p("pool/after-kpk/key")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "key read: {e}");
    let r = write_to(&d.p(".quiesce"), "quiesce\n");
    assert_eq!(errno_of(&r), Some(libc::EIO), "quiesce: {r:?}");
    assert_eq!(d.read("pool/after-kpk/state"), "active\n");
    assert_eq!(d.json("pool/after-kpk/record.json")["state"], "active");
    assert_eq!(d.json(".status")["audit"]["writable"], false);
    eprintln!("  audit log write/fdatasync failing: changes, key reads, quiesce EIO ({why})");
    strace.stop();
    fs::create_dir(d.p("g-audit")).expect("mkdir once the log can be written");
    assert_eq!(fs::read(d.p("pool/after-kpk/key")).unwrap(), new_key);

    // Everything acknowledged is there after a remount, with the same keys.
    let acknowledged = snapshot(&d);
    d.stop();
    let o = verify(&data);
    assert!(o.status.success(), "{}", describe("verify", &o));
    let d = Daemon::start(&data, &mnt);
    assert_eq!(
        fs::read(d.p("pool/after-kpk/key")).ok(),
        Some(new_key),
        "the key of the record created after the failed directory sync"
    );
    assert!(
        snapshot(&d) == acknowledged,
        "the remounted keystore differs from what was acknowledged"
    );
    d.stop();
    audit_verify(&data, &log);
    eprintln!("  done in {:.1?}", t0.elapsed());
}

// ---- found on the way: a FLUSH from a process in the middle of execve ---------------------

/// Found by these drills running side by side in one test binary: a program holds a
/// description open with text not yet committed while it spawns a child (as Rust's `Command`
/// does, and `posix_spawn`): the child inherits the descriptor and its exec closes it
/// (close-on-exec), which sends a FLUSH from the child in the middle of its exec. Answering
/// it, the daemon read the child's `/proc/PID/exe`, which on current kernels waits for the
/// exec to end: the child and a daemon thread hung for good (unkillable), and the program's
/// own `close()` behind them.
#[test]
fn a_child_spawned_while_a_description_is_open_does_not_hang_the_daemon() {
    let s = Scratch::new();
    let data = s.path("data");
    let d = Daemon::start_init(&data, &s.path("mnt"));
    d.sh_ok("mkdir pool pool/k1");
    let pid = daemon_pid(&data);
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(d.p("pool/k1/description"))
        .unwrap();
    f.write_all(b"written before the spawn\n").unwrap();
    let t = Instant::now();
    let mut child = Command::new("true").spawn().expect("spawn true");
    let exited = loop {
        if child.try_wait().unwrap().is_some() {
            break true;
        }
        if t.elapsed() > Duration::from_secs(10) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if !exited {
        // Only the daemon's death (the connection aborted) lets the child's exec go on; by
        // kill(2), not by a `kill` child, whose exec would close the same descriptor.
        let pid = nix::unistd::Pid::from_raw(pid.parse().unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
        panic!(
            "a child spawned while a description was open did not get through its exec in 10 s: the daemon deadlocked answering the child's FLUSH"
        );
    }
    eprintln!(
        "a child spawned with a description open ran in {:.1?}",
        t.elapsed()
    );
    drop(f);
    assert_eq!(d.read("pool/k1/description"), "written before the spawn\n");
    d.stop();
}

// ---- 4: EIO while changes share an fdatasync (group commit) -----------------------------------

/// Eight writers change their own records while KMS_DATA's fdatasync fails for a while: every
/// change written while it fails is refused with EIO (however many shared the failed sync),
/// none of them shows, and every change acknowledged before, during or after is there, through
/// the mount and after a kill -9 and a restart.
#[test]
fn a_failed_shared_fdatasync_refuses_every_change_it_covered() {
    let s = Scratch::new();
    let data = s.path("data");
    let mnt = s.path("mnt");
    let d = Daemon::start_init(&data, &mnt);
    let data = data.canonicalize().unwrap();
    d.sh_ok("mkdir pool && for i in 0 1 2 3 4 5 6 7; do mkdir pool/r$i; done");
    let pid = daemon_pid(&data);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (acked, refused) = std::thread::scope(|sc| {
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let (d, stop) = (&d, &stop);
                sc.spawn(move || {
                    let path = d.p(&format!("pool/r{i}/description"));
                    let (mut last_ok, mut refused) = (None, 0u32);
                    for n in 0.. {
                        if stop.load(std::sync::atomic::Ordering::SeqCst) {
                            break;
                        }
                        let text = format!("writer {i} change {n}");
                        match describe_closed(&path, &text) {
                            Ok(()) => last_ok = Some(text),
                            Err(e) => {
                                assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
                                refused += 1;
                                // A refused change never shows, even for a moment.
                                let shown = fs::read_to_string(&path).unwrap();
                                assert_ne!(shown, text, "a refused change shows");
                                // And what shows is the last change acknowledged: no `close()`
                                // said 0 for a refused change (a child of another test that
                                // inherited this open file may have flushed it first).
                                if Some(&shown) != last_ok.as_ref() {
                                    let log = d.log_text();
                                    let tail: Vec<&str> = log.lines().rev().take(20).collect();
                                    panic!(
                                        "{path:?} shows {shown:?} after {text:?} was refused; the last change acknowledged was {last_ok:?}; the daemon's log ends:\n{}",
                                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                                    );
                                }
                            }
                        }
                    }
                    (last_ok, refused)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let strace = Inject::attach(&s, &pid, &data.join("KMS_DATA"), "fdatasync", "EIO", None);
        std::thread::sleep(Duration::from_millis(500));
        let failed = strace.stop();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let results: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        eprintln!(
            "  {} fdatasync(s) failed by injection; {} change(s) refused",
            failed.len(),
            results.iter().map(|r| r.1).sum::<u32>()
        );
        assert!(!failed.is_empty(), "no fdatasync was failed");
        let acked: Vec<Option<String>> = results.iter().map(|r| r.0.clone()).collect();
        (acked, results.iter().map(|r| r.1).sum::<u32>())
    });
    assert!(refused > 0, "no change was refused while fdatasync failed");
    let check = |d: &Daemon, when: &str| {
        for (i, last) in acked.iter().enumerate() {
            let shown = d.read(&format!("pool/r{i}/description"));
            assert_eq!(Some(&shown), last.as_ref(), "r{i} {when}");
        }
    };
    check(&d, "through the mount");
    d.kill();
    let d = Daemon::start(&data, &mnt);
    check(&d, "after kill -9 and a restart");
    let o = verify_live(&data);
    assert!(o.status.success(), "{}", describe("verify", &o));
    d.stop();
}
