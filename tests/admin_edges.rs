//! Edges an administrator hit, each answered by a clear one-line refusal before anything is
//! created or mounted: a mount point that is, holds or sits in the data directory; a dead
//! mount left by a crash; a live mount, a file or a non-empty directory as the mount point; a
//! shared data directory such as /tmp; `--threads 0`; a missing data directory; a non-root
//! user without fusermount3; short passphrases; `examples/rotate.sh` while frozen; and no
//! ioctl warning in the log for `jq ... > .create`.

mod support;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::cli::{errno, kmsfs, ok, on_a_terminal, text, BIN};
use support::daemon::Daemon;
use support::scratch::Scratch;

/// A refusal comes before anything is mounted, so at once; a `kmsfs` still running after
/// this was not refused.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(10);

/// The uid and gid of the unprivileged user (`nobody`).
const NOBODY: u32 = 65534;

/// A scratch directory whose path is canonical (so that it can be compared with
/// /proc/self/mountinfo), and that path.
fn scratch() -> (Scratch, PathBuf) {
    let s = Scratch::new();
    let root = s.dir.path().canonicalize().expect("canonical scratch path");
    (s, root)
}

/// `kmsfs init --data-dir DIR`: a keystore with random keys.
fn init(dir: &Path) {
    ok(
        "kmsfs init",
        kmsfs([
            OsStr::new("init"),
            OsStr::new("--data-dir"),
            dir.as_os_str(),
        ]),
    );
}

/// Every entry below `dir` (not following symlinks), with its type, mode, size, mtime and,
/// for files, a digest of the content: equal before and after means nothing was touched.
fn listing(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, p: &Path, out: &mut BTreeMap<String, String>) {
        let meta = match fs::symlink_metadata(p) {
            Ok(m) => m,
            Err(e) => {
                out.insert(rel(base, p), format!("error {}", e.kind()));
                return;
            }
        };
        let mut line = format!(
            "mode {:o} uid {} size {} mtime {}.{}",
            meta.mode(),
            meta.uid(),
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec()
        );
        if meta.is_file() {
            let bytes = fs::read(p).unwrap_or_default();
            line.push_str(&format!(" sha256 {}", hex::encode(Sha256::digest(&bytes))));
        }
        out.insert(rel(base, p), line);
        if meta.is_dir() {
            for e in fs::read_dir(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())) {
                walk(base, &e.unwrap().path(), out);
            }
        }
    }
    fn rel(base: &Path, p: &Path) -> String {
        p.strip_prefix(base).unwrap().display().to_string()
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// How many mounts /proc/self/mountinfo lists at `mnt` (a canonical path without spaces).
fn mounts_at(mnt: &Path) -> usize {
    let want = mnt.as_os_str().as_bytes();
    fs::read("/proc/self/mountinfo")
        .expect("read /proc/self/mountinfo")
        .split(|&b| b == b'\n')
        .filter(|l| l.split(|&b| b == b' ').nth(4) == Some(want))
        .count()
}

/// `umount -l`, as many times as it takes to get back to `keep` mounts at `mnt`.
fn detach_down_to(mnt: &Path, keep: usize) {
    let c = std::ffi::CString::new(mnt.as_os_str().as_bytes()).unwrap();
    for _ in 0..8 {
        if mounts_at(mnt) <= keep {
            return;
        }
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// `kmsfs ARGS`, stdin closed, the log at `info`, no helper override from the environment.
fn kmsfs_cmd<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(BIN);
    c.args(args)
        .env("RUST_LOG", "info")
        .env_remove("FUSERMOUNT_PATH");
    c
}

/// Runs `cmd`, which must be refused at once: a non-zero exit and exactly one line on stderr,
/// starting `kmsfs: `; returns that line. A `kmsfs` that serves instead is stopped (SIGTERM,
/// then SIGKILL) and any mount it added at `mnt` detached, so that a failing test leaves
/// nothing behind.
#[track_caller]
fn refused(what: &str, mut cmd: Command, mnt: &Path) -> String {
    let logs = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let before = mounts_at(mnt);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let until = Instant::now() + REFUSAL_DEADLINE;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() >= until {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if status.is_none() {
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let until = Instant::now() + REFUSAL_DEADLINE;
        while child.try_wait().unwrap().is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    detach_down_to(mnt, before);
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    let shown = format!("--- stdout\n{stdout}--- stderr\n{stderr}");
    let status = status.unwrap_or_else(|| {
        panic!("{what}: was not refused (still running after {REFUSAL_DEADLINE:?}):\n{shown}")
    });
    assert!(!status.success(), "{what}: should have failed:\n{shown}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("kmsfs: "),
        "{what}: the refusal must be one line on stderr starting `kmsfs: `:\n{shown}"
    );
    lines[0].to_string()
}

/// `kmsfs mount [EXTRA] --data-dir DATA MNT`, which must be refused.
#[track_caller]
fn mount_refused(data: &Path, mnt: &Path, extra: &[&str]) -> String {
    let mut args: Vec<&OsStr> = vec![OsStr::new("mount")];
    args.extend(extra.iter().map(OsStr::new));
    args.extend([OsStr::new("--data-dir"), data.as_os_str(), mnt.as_os_str()]);
    refused(
        &format!(
            "kmsfs mount {extra:?} --data-dir {} {}",
            data.display(),
            mnt.display()
        ),
        kmsfs_cmd(args),
        mnt,
    )
}

#[track_caller]
fn assert_contains(text: &str, want: &str) {
    assert!(text.contains(want), "expected {want:?} in:\n{text}");
}

// ---- 1. the mount point and the data directory ------------------------------------------------

#[test]
fn the_mount_point_and_the_data_directory_must_not_overlap() {
    let (_s, root) = scratch();
    let outer = root.join("outer");
    let data = outer.join("data");
    fs::create_dir_all(&data).unwrap();
    fs::set_permissions(&outer, fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).unwrap();
    init(&data);
    let link = root.join("link-to-data");
    std::os::unix::fs::symlink(&data, &link).unwrap();
    let before = listing(&root);

    let cases: [(PathBuf, &str); 5] = [
        // The administrator's `kmsfs mount --data-dir D D`.
        (data.clone(), "is the data directory"),
        // The same directory under another name.
        (link.clone(), "is the data directory"),
        (root.join("outer/./data/"), "is the data directory"),
        // Inside it, not there yet (kmsfs mount would create it): its nearest existing
        // ancestor is the data directory.
        (data.join("mnt/deeper"), "is inside the data directory"),
        // The data directory inside the mount point.
        (outer.clone(), "is inside the mount point"),
    ];
    for (mnt, want) in &cases {
        let msg = mount_refused(&data, mnt, &[]);
        assert_contains(&msg, want);
        assert_eq!(listing(&root), before, "something changed after {msg}");
    }
    // Also through a path that climbs out and back in, with --init.
    let msg = mount_refused(
        &data,
        &root.join("elsewhere/../outer/data/mnt"),
        &["--init"],
    );
    assert_contains(&msg, "is inside the data directory");
    // --init with neither directory there yet: nothing is created.
    let msg = mount_refused(&root.join("new/data"), &root.join("new"), &["--init"]);
    assert_contains(&msg, "is inside the mount point");
    assert_eq!(listing(&root), before);

    // Apart, the same keystore mounts.
    let d = Daemon::start(&data, &root.join("mnt"));
    assert_eq!(d.json(".status")["data_dir"], data.display().to_string());
    d.stop();
}

// ---- 2. a dead mount left by a crash --------------------------------------------------------

#[test]
fn a_dead_mount_left_by_a_crash_is_named_with_what_to_do() {
    let (_s, root) = scratch();
    let data = root.join("data");
    let mnt = root.join("mnt");
    let mut d = Daemon::start_init(&data, &mnt);
    d.crash();
    // What the administrator saw: `ls M` says "Transport endpoint is not connected" (a
    // plain stat may still be answered from the kernel's attribute cache for a moment).
    assert_eq!(errno(fs::read_dir(&mnt)), libc::ENOTCONN);
    let before = listing(&data);

    let msg = mount_refused(&data, &mnt, &[]);
    let m = mnt.display();
    assert_eq!(
        msg,
        format!("kmsfs: {m} is a dead kmsfs mount (the daemon died): run `umount {m}` (or `umount -l {m}`) first")
    );
    let msg = mount_refused(&data, &mnt, &["--init"]);
    assert_contains(&msg, "is a dead kmsfs mount");
    assert_eq!(listing(&data), before);
    assert_eq!(
        mounts_at(&mnt),
        1,
        "the dead mount is still there, untouched"
    );

    // The advice works: after `umount M` the same command serves again.
    ok(
        "umount",
        Command::new("umount")
            .arg(&mnt)
            .output()
            .expect("run umount"),
    );
    let d2 = Daemon::start(&data, &mnt);
    d2.stop();
    drop(d);
}

// ---- 5. the mount point must be an empty directory that is not a mount point ------------------

#[test]
fn a_live_kmsfs_mount_is_not_mounted_over() {
    let (_s, root) = scratch();
    let first = root.join("first");
    let second = root.join("second");
    let mnt = root.join("mnt");
    let d = Daemon::start_init(&first, &mnt);
    d.sh_ok("mkdir pool");
    init(&second);
    let before = listing(&second);

    let msg = mount_refused(&second, &mnt, &[]);
    let m = mnt.display();
    assert_contains(
        &msg,
        &format!(
            "{m} is already a mount point (kmsfs serving {})",
            first.display()
        ),
    );
    assert_eq!(listing(&second), before);
    // The first mount still serves, and is the only one there.
    assert_eq!(mounts_at(&mnt), 1);
    assert_eq!(d.json(".status")["data_dir"], first.display().to_string());
    assert!(d.p("pool").is_dir());
    d.stop();
}

#[test]
fn a_regular_file_is_not_a_mount_point() {
    let (s, root) = scratch();
    let data = root.join("data");
    init(&data);
    let file = s.file("mnt", "notes\n");
    let before = listing(&root);

    let msg = mount_refused(&data, &file, &[]);
    assert_contains(&msg, &format!("{} is not a directory", file.display()));
    assert_eq!(listing(&root), before);
    assert_eq!(fs::read_to_string(&file).unwrap(), "notes\n");
}

#[test]
fn a_non_empty_mount_point_is_not_hidden() {
    let (s, root) = scratch();
    let data = root.join("data");
    init(&data);
    let mnt = s.mkdir("mnt");
    s.file("mnt/notes.txt", "keep me visible\n");
    let before = listing(&root);

    let msg = mount_refused(&data, &mnt, &[]);
    assert_contains(&msg, &format!("{} is not empty", mnt.display()));
    assert_eq!(listing(&root), before);
    assert_eq!(mounts_at(&mnt), 0);
}

// ---- 7. a shared data directory such as /tmp ------------------------------------------------

#[test]
fn a_shared_data_directory_gets_no_chmod_advice() {
    let (s, root) = scratch();
    // Like /tmp: writable by everyone, sticky.
    let shared = s.mkdir("shared");
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    let before = listing(&root);

    let msgs = [
        refused(
            "kmsfs init on a sticky directory",
            kmsfs_cmd([
                OsStr::new("init"),
                OsStr::new("--data-dir"),
                shared.as_os_str(),
            ]),
            &root.join("none"),
        ),
        mount_refused(&shared, &root.join("mnt"), &[]),
        mount_refused(&shared, &root.join("mnt"), &["--init"]),
    ];
    for msg in &msgs {
        assert!(
            !msg.contains("chmod"),
            "advises chmod on a shared directory: {msg}"
        );
        assert_contains(msg, "private directory");
        assert_contains(msg, "mkdir -m 700 /var/lib/kmsfs");
        assert_eq!(listing(&root), before, "something changed after {msg}");
    }

    // A directory of one's own that others can write: chmod is still the right advice.
    let own = s.mkdir("own");
    fs::set_permissions(&own, fs::Permissions::from_mode(0o770)).unwrap();
    let msg = refused(
        "kmsfs init on a group-writable directory",
        kmsfs_cmd([
            OsStr::new("init"),
            OsStr::new("--data-dir"),
            own.as_os_str(),
        ]),
        &root.join("none"),
    );
    assert_contains(&msg, &format!("run `chmod go-w {}` first", own.display()));
}

// ---- 10. (a) threads, (b) a missing data directory, (c) a non-root user ---------------------

#[test]
fn threads_must_be_from_1_to_64() {
    let (_s, root) = scratch();
    let data = root.join("data");
    init(&data);
    let mnt = root.join("mnt");
    let before = listing(&root);
    for n in ["0", "65", "1000"] {
        let msg = mount_refused(&data, &mnt, &["--threads", n]);
        assert_contains(&msg, "--threads");
        assert_contains(&msg, "1 to 64");
        assert_eq!(listing(&root), before, "--threads {n} changed something");
    }
    let d = Daemon::start_with(&data, &mnt, &["--threads", "64"]);
    d.stop();
}

#[test]
fn a_missing_data_directory_is_named_as_such() {
    let (_s, root) = scratch();
    let data = root.join("nonexistent");
    let mnt = root.join("mnt");
    let before = listing(&root);
    let msg = mount_refused(&data, &mnt, &[]);
    let d = data.display();
    assert_eq!(
        msg,
        format!("kmsfs: data directory {d} does not exist; create a keystore with `kmsfs init --data-dir {d}` or `kmsfs mount --init`")
    );
    assert_eq!(listing(&root), before, "the mount point was created");
}

/// `name` on this process's PATH.
fn on_path(name: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not on PATH (this test needs it)"))
}

#[test]
fn a_non_root_user_without_fusermount3_is_told_before_init_creates_anything() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs as root (like the whole suite) to act as an unprivileged user"
    );
    let (s, root) = scratch();
    // The user can reach the scratch directory and owns the data directory and mount point.
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    let data = s.mkdir("data");
    let mnt = s.mkdir("mnt");
    let bin = s.mkdir("bin"); // PATH: no fusermount3, no fusermount.
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    for p in [&data, &mnt] {
        std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let before = listing(&root);

    let mut cmd = Command::new(on_path("setpriv"));
    cmd.args([
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".into(),
    ])
    .arg(BIN)
    .args(["mount", "--init", "--data-dir"])
    .arg(&data)
    .arg(&mnt)
    .env("PATH", &bin)
    .env("RUST_LOG", "info")
    .env_remove("FUSERMOUNT_PATH");
    let msg = refused("kmsfs mount --init as uid 65534", cmd, &mnt);
    assert_contains(&msg, "fusermount3");
    assert_contains(&msg, "`fuse3`");
    assert_eq!(listing(&root), before, "--init created a keystore anyway");
}

// ---- 10. (d) short passphrases ----------------------------------------------------------------

#[test]
fn passphrases_shorter_than_12_characters_are_refused() {
    let (s, root) = scratch();
    let data = root.join("data");
    let short_files = [
        s.file("one-char", "x\n"),
        s.file("eleven", "eleven char\n"),
        // Eleven characters in 22 bytes: characters count, not bytes.
        s.file("accents", "ééééééééééé\n"),
    ];
    let twelve = s.file("twelve", "twelve chars\n");
    let before = listing(&root);

    for f in &short_files {
        for flag in ["--hmk-passphrase-file", "--kpk-passphrase-file"] {
            let msg = refused(
                &format!("kmsfs init {flag} {}", f.display()),
                kmsfs_cmd([
                    OsStr::new("init"),
                    OsStr::new("--data-dir"),
                    data.as_os_str(),
                    OsStr::new(flag),
                    f.as_os_str(),
                ]),
                &root.join("none"),
            );
            let which = if flag.contains("hmk") { "HMK" } else { "KPK" };
            assert_contains(&msg, &format!("the {which} passphrase in {}", f.display()));
            assert_contains(&msg, "too short");
            assert_contains(&msg, "at least 12 characters");
            assert!(!msg.contains("eleven char") && !msg.contains('é'), "{msg}");
            assert_eq!(listing(&root), before);
        }
    }

    // At the terminal prompt: refused at the first answer, nothing created.
    let out = on_a_terminal(
        &[
            OsStr::new("init"),
            OsStr::new("--data-dir"),
            data.as_os_str(),
        ],
        "x\n",
    );
    let shown = text(&out.stdout);
    assert!(!out.status.success(), "{shown}");
    assert_contains(&shown, "kmsfs: the HMK passphrase is too short");
    assert!(
        !shown.contains("again"),
        "asked twice for a refused passphrase: {shown}"
    );
    assert_eq!(listing(&root), before);

    // Twelve characters are enough.
    ok(
        "kmsfs init with a 12-character passphrase",
        kmsfs([
            OsStr::new("init"),
            OsStr::new("--data-dir"),
            data.as_os_str(),
            OsStr::new("--hmk-passphrase-file"),
            twelve.as_os_str(),
        ]),
    );

    // Export and import.
    let out = root.join("out.kmsfs");
    for f in &short_files {
        let msg = refused(
            "kmsfs export with a short passphrase",
            kmsfs_cmd([
                OsStr::new("export"),
                OsStr::new("--data-dir"),
                data.as_os_str(),
                OsStr::new("--out"),
                out.as_os_str(),
                OsStr::new("--passphrase-file"),
                f.as_os_str(),
            ]),
            &root.join("none"),
        );
        assert_contains(&msg, &format!("the passphrase in {}", f.display()));
        assert_contains(&msg, "at least 12 characters");
        assert!(!out.exists(), "export wrote {} anyway", out.display());
    }
    ok(
        "kmsfs export with a 12-character passphrase",
        kmsfs([
            OsStr::new("export"),
            OsStr::new("--data-dir"),
            data.as_os_str(),
            OsStr::new("--out"),
            out.as_os_str(),
            OsStr::new("--passphrase-file"),
            twelve.as_os_str(),
        ]),
    );
    let data_before = listing(&data);
    for f in &short_files {
        let msg = refused(
            "kmsfs import with a short passphrase",
            kmsfs_cmd([
                OsStr::new("import"),
                OsStr::new("--data-dir"),
                data.as_os_str(),
                OsStr::new("--passphrase-file"),
                f.as_os_str(),
                out.as_os_str(),
            ]),
            &root.join("none"),
        );
        assert_contains(&msg, &format!("the passphrase in {}", f.display()));
        assert_contains(&msg, "at least 12 characters");
        assert_eq!(listing(&data), data_before);
    }
}

// ---- 10. (e) examples/rotate.sh on a frozen keystore ----------------------------------------

#[test]
fn rotate_sh_on_a_quiesced_keystore_says_it_is_frozen_and_changes_nothing() {
    let (_s, root) = scratch();
    let d = Daemon::start_init(&root.join("data"), &root.join("mnt"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/rotate.sh");
    d.sh_ok(r#"mkdir pool && echo '{"name": "k1", "state": "active"}' > pool/.create"#);
    d.sh_ok("echo quiesce > .quiesce");
    let q = d.quiesce();
    let since = q["since"].as_str().expect("since").to_string();

    let err = d.sh_err(&format!("{script} \"$M\" pool"));
    assert_contains(
        &err,
        &format!("the keystore is quiesced for a backup (1 hold(s) since {since}); try again after it is released"),
    );
    assert!(!err.contains("Read-only file system"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    d.sh_ok("echo quiesce > .quiesce");
    let err = d.sh_err(&format!("{script} \"$M\" pool"));
    assert_contains(&err, &format!("(2 hold(s) since {since})"));

    d.sh_ok("echo unquiesce > .quiesce; echo unquiesce > .quiesce");
    assert_eq!(
        d.json("pool/.group.json")["records"],
        1,
        "rotate.sh created a record"
    );
    assert_eq!(fs::read_link(d.p("pool/.active")).unwrap(), Path::new("k1"));
    // Released: the rotation goes through.
    let out = d.sh_ok(&format!("{script} \"$M\" pool"));
    assert_contains(&out, "pool/k1 is now inactive");
    d.stop();
}

// ---- 9. no ioctl warning for `jq ... > .create` ---------------------------------------------

#[test]
fn jq_into_create_logs_no_ioctl_warning() {
    let (_s, root) = scratch();
    let d = Daemon::start_init(&root.join("data"), &root.join("mnt"));
    d.sh_ok(r#"mkdir pool && jq -n '{name:"k"}' > pool/.create"#);
    assert_eq!(d.read("pool/k/state"), "prelive\n");
    let log = d.log_text();
    assert!(!log.contains("Not Implemented"), "{log}");
    assert!(!log.contains("ioctl"), "{log}");
    assert!(!log.contains("WARN"), "{log}");
    d.stop();
}

/// `systemctl stop` while a shell sits in the mount: SIGTERM detaches the busy mount, waits
/// `--stop-grace` for it to be let go, then stops anyway, exit 0, with everything kept.
#[test]
fn sigterm_stops_a_busy_mount_after_the_grace() {
    let (_s, root) = scratch();
    let (data, mnt) = (root.join("data"), root.join("mnt"));
    let d = Daemon::start_with(&data, &mnt, &["--init", "--stop-grace", "1"]);
    d.sh_ok("mkdir pool pool/k1 && echo active > pool/k1/state");
    // A process whose working directory is in the mount: umount(2) says EBUSY.
    let mut sitter = Command::new("sleep")
        .arg("120")
        .current_dir(mnt.join("pool"))
        .spawn()
        .unwrap();
    let t = Instant::now();
    d.stop();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "stopped before the grace: {took:?}"
    );
    // The sitter's directory is now on a connection that is gone.
    let e = fs::read_dir(format!("/proc/{}/cwd", sitter.id())).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");
    let _ = sitter.kill();
    let _ = sitter.wait();
    let d = Daemon::start(&data, &mnt);
    assert_eq!(d.read("pool/k1/state"), "active\n");
    d.stop();
    let out = kmsfs([
        "mount".as_ref(),
        "--stop-grace".as_ref(),
        "0".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        mnt.as_os_str(),
    ] as [&OsStr; 6]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--stop-grace must be 1 to 3600"),
        "{}",
        text(&out.stderr)
    );
}
