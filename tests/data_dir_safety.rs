//! The data directory is never trusted further than it should be: `kmsfs mount` (root here, as
//! in CI) refuses a directory or a backing file owned by another user, never follows a
//! symbolic link in the directory (the lock file included), and refuses a FIFO, a device, a
//! directory or a file of an impossible size in place of a backing file, as does
//! `kmsfs verify`, which checks backup copies from untrusted media. Each refusal is one line,
//! comes at once (a FIFO must not hang it, a huge file must not be read), and changes nothing
//! outside the data directory.

mod support;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::cli::{kmsfs, ok, verify, BIN};
use support::daemon::is_mounted;
use support::scratch::Scratch;

/// A refusal comes before anything is read or mounted, so at once; a `kmsfs` still running
/// after this hangs (a FIFO) or serves (it was not refused).
const DEADLINE: Duration = Duration::from_secs(10);

/// `nobody` / `nogroup`: another user.
const NOBODY: u32 = 65534;

/// Every `kmsfs` here runs with this much address space: a regression that reads a huge or
/// endless file whole fails (an allocation failure) instead of exhausting the machine.
const ADDRESS_SPACE: u64 = 2 << 30;

/// A keystore with random keys in `s/data` (mode 0700, root's), made by `kmsfs init`.
fn keystore(s: &Scratch) -> PathBuf {
    let data = s.path("data");
    ok(
        "kmsfs init",
        kmsfs([
            OsStr::new("init"),
            OsStr::new("--data-dir"),
            data.as_os_str(),
        ]),
    );
    data
}

/// Every entry below `dir` but those named in `skip` (not following symlinks), with its type,
/// mode, owner, size, mtime and, for regular files, a digest: equal before and after means
/// nothing was touched.
fn listing(dir: &Path, skip: &[&Path]) -> BTreeMap<PathBuf, String> {
    fn walk(p: &Path, skip: &[&Path], out: &mut BTreeMap<PathBuf, String>) {
        if skip.contains(&p) {
            return;
        }
        let meta = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let mut line = format!(
            "mode {:o} uid {} gid {} size {} mtime {}.{}",
            meta.mode(),
            meta.uid(),
            meta.gid(),
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec()
        );
        // Sparse giants are compared by their metadata alone.
        if meta.is_file() && meta.len() < 1 << 20 {
            let bytes = fs::read(p).unwrap();
            line.push_str(&format!(" sha256 {}", hex::encode(Sha256::digest(&bytes))));
        }
        if meta.file_type().is_symlink() {
            line.push_str(&format!(" -> {}", fs::read_link(p).unwrap().display()));
        }
        out.insert(p.to_path_buf(), line);
        if meta.is_dir() {
            for e in fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path(), skip, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, skip, &mut out);
    out
}

/// A root-owned file outside the data directory, mode 0644, that nothing may change.
fn victim(s: &Scratch, rel: &str) -> PathBuf {
    let p = s.path(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, "precious: root's own file, not kmsfs's\n").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    p
}

/// Bytes, mode, owner and length of a file (or device), to compare before and after.
fn fingerprint(p: &Path) -> String {
    let meta = fs::metadata(p).unwrap();
    let content = if meta.is_file() {
        hex::encode(Sha256::digest(fs::read(p).unwrap()))
    } else {
        "-".into()
    };
    format!(
        "mode {:o} uid {} len {} {content}",
        meta.mode(),
        meta.uid(),
        meta.len()
    )
}

/// Runs `kmsfs ARGS`, which must be refused within `DEADLINE`: a non-zero exit and exactly
/// one line on stderr, starting `kmsfs: `; returns that line. A `kmsfs` that hangs or serves
/// is stopped (SIGTERM, then SIGKILL) and any mount it made at `mnt` detached, so that a
/// failing test leaves nothing behind.
#[track_caller]
fn refused(args: &[&OsStr], mnt: Option<&Path>) -> String {
    let what = format!("kmsfs {args:?}");
    let logs = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap());
    // SAFETY: setrlimit(2) only, which is async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::resource::setrlimit(
                nix::sys::resource::Resource::RLIMIT_AS,
                ADDRESS_SPACE,
                ADDRESS_SPACE,
            )
            .map_err(std::io::Error::from)
        });
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("run kmsfs");
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() >= DEADLINE {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if status.is_none() {
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let until = Instant::now() + DEADLINE;
        while child.try_wait().unwrap().is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    if let Some(mnt) = mnt {
        if is_mounted(mnt) {
            let c = std::ffi::CString::new(mnt.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    let shown = format!("--- stdout\n{stdout}--- stderr\n{stderr}");
    let status = status.unwrap_or_else(|| {
        panic!("{what}: hung or served (still running after {DEADLINE:?}):\n{shown}")
    });
    assert!(!status.success(), "{what}: should have failed:\n{shown}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("kmsfs: "),
        "{what}: the refusal must be one line on stderr starting `kmsfs: ` ({status}):\n{shown}"
    );
    lines[0].to_string()
}

/// `kmsfs mount --data-dir DATA MNT`, which must be refused.
#[track_caller]
fn mount_refused(data: &Path, mnt: &Path) -> String {
    refused(
        &[
            OsStr::new("mount"),
            OsStr::new("--data-dir"),
            data.as_os_str(),
            mnt.as_os_str(),
        ],
        Some(mnt),
    )
}

/// `kmsfs verify --data-dir DATA`, which must be refused.
#[track_caller]
fn verify_refused(data: &Path) -> String {
    refused(
        &[
            OsStr::new("verify"),
            OsStr::new("--data-dir"),
            data.as_os_str(),
        ],
        None,
    )
}

#[track_caller]
fn assert_contains(text: &str, want: &str) {
    assert!(text.contains(want), "expected {want:?} in:\n{text}");
}

/// The scratch directory with everything that must not change: all but the data directory's
/// lock file, which a mount refused after taking the lock has created (and so the directory's
/// own mtime).
fn outside(s: &Scratch, data: &Path) -> BTreeMap<PathBuf, String> {
    let mut all = listing(s.dir.path(), &[&data.join("kmsfs.lock")]);
    let meta = fs::symlink_metadata(data).unwrap();
    all.insert(
        data.to_path_buf(),
        format!("mode {:o} uid {}", meta.mode(), meta.uid()),
    );
    all
}

// ---- 1. a data directory owned by another user; a planted lock-file link -----------------------

#[test]
fn a_data_directory_owned_by_another_user_is_refused_and_its_planted_lock_link_not_followed() {
    for mode in [0o755, 0o700] {
        let s = Scratch::new();
        let data = keystore(&s);
        let mnt = s.mkdir("mnt");
        let target = victim(&s, "etc/important");
        symlink(&target, data.join("kmsfs.lock")).unwrap();
        std::os::unix::fs::chown(&data, Some(NOBODY), Some(NOBODY)).unwrap();
        fs::set_permissions(&data, fs::Permissions::from_mode(mode)).unwrap();
        let (before, print) = (listing(s.dir.path(), &[]), fingerprint(&target));

        let msg = mount_refused(&data, &mnt);
        assert_contains(
            &msg,
            &format!(
                "{} is owned by uid 65534 (nobody), not by uid 0 (root)",
                data.display()
            ),
        );
        assert_eq!(fingerprint(&target), print, "the lock link was followed");
        assert_eq!(listing(s.dir.path(), &[]), before, "mode {mode:o}");
        assert!(!is_mounted(&mnt));

        // verify only reads (a backup copy may belong to the account that made it), and never
        // opens the lock file.
        ok("kmsfs verify", verify(&data));
        assert_eq!(listing(s.dir.path(), &[]), before, "mode {mode:o}");
    }
}

#[test]
fn a_backing_file_owned_by_another_user_is_refused() {
    for file in ["KMS_DATA", "KMS_HMKF", "KMS_KPKF"] {
        let s = Scratch::new();
        let data = keystore(&s);
        let mnt = s.mkdir("mnt");
        std::os::unix::fs::chown(data.join(file), Some(NOBODY), Some(NOBODY)).unwrap();
        let before = outside(&s, &data);
        let msg = mount_refused(&data, &mnt);
        assert_contains(
            &msg,
            &format!(
                "{file} in {} is owned by uid 65534 (nobody), not by uid 0 (root)",
                data.display()
            ),
        );
        assert_eq!(outside(&s, &data), before, "{file}");
    }
}

#[test]
fn a_lock_file_link_is_not_followed_even_in_a_private_directory() {
    let s = Scratch::new();
    let data = keystore(&s);
    let mnt = s.mkdir("mnt");
    let target = victim(&s, "etc/important");
    symlink(&target, data.join("kmsfs.lock")).unwrap();
    let (before, print) = (listing(s.dir.path(), &[]), fingerprint(&target));

    let msg = mount_refused(&data, &mnt);
    assert_contains(
        &msg,
        "kmsfs.lock is a symbolic link: kmsfs never follows links in its data directory",
    );
    assert_eq!(fingerprint(&target), print, "the lock target was truncated");
    assert_eq!(listing(s.dir.path(), &[]), before);

    // A FIFO as the lock file: refused at once, not waited on.
    fs::remove_file(data.join("kmsfs.lock")).unwrap();
    nix::unistd::mkfifo(
        &data.join("kmsfs.lock"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let before = listing(s.dir.path(), &[]);
    let msg = mount_refused(&data, &mnt);
    assert_contains(
        &msg,
        "kmsfs.lock is a FIFO (named pipe), not a regular file",
    );
    assert_eq!(listing(s.dir.path(), &[]), before);
}

#[test]
fn init_refuses_a_directory_owned_by_another_user() {
    let s = Scratch::new();
    let data = s.mkdir("data");
    std::os::unix::fs::chown(&data, Some(NOBODY), Some(NOBODY)).unwrap();
    let before = listing(s.dir.path(), &[]);
    let msg = refused(
        &[
            OsStr::new("init"),
            OsStr::new("--data-dir"),
            data.as_os_str(),
        ],
        None,
    );
    assert_contains(&msg, "is owned by uid 65534 (nobody), not by uid 0 (root)");
    assert_eq!(listing(s.dir.path(), &[]), before, "init wrote anyway");
}

// ---- 2. a symlinked backing file ---------------------------------------------------------------

#[test]
fn a_symlinked_backing_file_is_refused_and_its_target_left_alone() {
    for file in ["KMS_DATA", "KMS_HMKF", "KMS_KPKF"] {
        let s = Scratch::new();
        let data = keystore(&s);
        let mnt = s.mkdir("mnt");
        // The real file moved out of the directory, a link left in its place; its mode is not
        // the 0600 that a mount gives its files, so a chmod through the link would show.
        let elsewhere = s.mkdir("elsewhere").join(file);
        fs::rename(data.join(file), &elsewhere).unwrap();
        fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o640)).unwrap();
        symlink(&elsewhere, data.join(file)).unwrap();
        let print = fingerprint(&elsewhere);
        let before = outside(&s, &data);
        let want =
            format!("{file} is a symbolic link: kmsfs never follows links in its data directory");

        assert_contains(&mount_refused(&data, &mnt), &want);
        assert_eq!(
            fingerprint(&elsewhere),
            print,
            "mount changed {file}'s target"
        );
        assert_eq!(outside(&s, &data), before, "{file}");

        assert_contains(&verify_refused(&data), &want);
        assert_eq!(outside(&s, &data), before, "{file}");
    }
}

// ---- 3. a FIFO, a device, a directory or a huge file -------------------------------------------

/// Replaces `data/file` with something that is not a regular file.
fn plant(data: &Path, file: &str, kind: &str) {
    let p = data.join(file);
    fs::remove_file(&p).unwrap();
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
    match kind {
        "fifo" => nix::unistd::mkfifo(&p, mode).unwrap(),
        // /dev/zero's numbers: endless zeros, were it ever read.
        "char" => nix::sys::stat::mknod(
            &p,
            nix::sys::stat::SFlag::S_IFCHR,
            mode,
            nix::sys::stat::makedev(1, 5),
        )
        .unwrap(),
        "dir" => fs::create_dir(&p).unwrap(),
        other => panic!("{other}"),
    }
}

#[test]
fn a_fifo_a_device_or_a_directory_as_a_backing_file_is_refused_at_once() {
    let kinds = [
        ("fifo", "is a FIFO (named pipe), not a regular file"),
        ("char", "is a character device, not a regular file"),
        ("dir", "is a directory, not a regular file"),
    ];
    for file in ["KMS_DATA", "KMS_HMKF", "KMS_KPKF"] {
        for (kind, says) in kinds {
            let s = Scratch::new();
            let data = keystore(&s);
            let mnt = s.mkdir("mnt");
            plant(&data, file, kind);
            let before = outside(&s, &data);
            let want = format!("{file} {says}");
            assert_contains(&mount_refused(&data, &mnt), &want);
            assert_eq!(outside(&s, &data), before, "{file} {kind}");
            assert_contains(&verify_refused(&data), &want);
            assert_eq!(outside(&s, &data), before, "{file} {kind}");
        }
    }
}

#[test]
fn a_key_file_linked_to_dev_zero_is_refused_without_reading_it() {
    let s = Scratch::new();
    let data = keystore(&s);
    let mnt = s.mkdir("mnt");
    fs::remove_file(data.join("KMS_KPKF")).unwrap();
    symlink("/dev/zero", data.join("KMS_KPKF")).unwrap();
    let (before, zero) = (outside(&s, &data), fingerprint(Path::new("/dev/zero")));
    let want = "KMS_KPKF is a symbolic link: kmsfs never follows links in its data directory";
    assert_contains(&mount_refused(&data, &mnt), want);
    assert_contains(&verify_refused(&data), want);
    assert_eq!(
        fingerprint(Path::new("/dev/zero")),
        zero,
        "/dev/zero chmod'd"
    );
    assert_eq!(outside(&s, &data), before);
}

#[test]
fn a_file_of_an_impossible_size_is_refused_before_it_is_read() {
    // Sparse: they take no disk, but reading one whole would take its size in memory.
    let cases = [
        (
            "KMS_KPKF",
            2 << 30,
            "KMS_KPKF: wrong length 2147483648 (expected 76, or at most 16433 for a sealed key file)",
        ),
        ("KMS_HMKF", 77, "KMS_HMKF: wrong length 77 (expected 76)"),
        (
            "KMS_DATA",
            5 << 30,
            "KMS_DATA: 5368709120 bytes, more than the 4 GiB a kmsfs data file may hold",
        ),
    ];
    for (file, len, want) in cases {
        let s = Scratch::new();
        let data = keystore(&s);
        let mnt = s.mkdir("mnt");
        fs::OpenOptions::new()
            .write(true)
            .open(data.join(file))
            .unwrap()
            .set_len(len)
            .unwrap();
        let before = outside(&s, &data);
        let started = Instant::now();
        assert_contains(&mount_refused(&data, &mnt), want);
        assert_contains(&verify_refused(&data), want);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{file}: {:?}",
            started.elapsed()
        );
        assert_eq!(outside(&s, &data), before, "{file}");
    }
}
