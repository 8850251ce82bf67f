//! The audit log as an administrator meets it: `kmsfs audit verify` over files that logrotate
//! moved, each kind of tampering named at its FILE:LINE, and a full file system (a real tmpfs)
//! that makes appends fail and then recover, with no partial line left behind.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kmsfs::audit::{self, AuditKey, AuditLog, Caller, Event, Verdict};

const BIN: &str = env!("CARGO_BIN_EXE_kmsfs");

/// A keystore (`kmsfs init`'s files) in `dir/data`, and its audit key.
fn keystore(dir: &Path) -> (PathBuf, AuditKey) {
    let data = dir.join("data");
    kmsfs::store::init(&data, Default::default()).unwrap();
    let key = kmsfs::store::read_audit_key(&data, &Default::default()).unwrap();
    (data, key)
}

fn caller() -> Caller {
    Caller::lookup(0, 0, std::process::id())
}

/// `n` events of the kinds the mount logs.
fn append(log: &AuditLog, n: usize) {
    let c = caller();
    for i in 0..n {
        let group = format!("g{i}");
        let ev = match i % 4 {
            0 => Event::record(&c, "open key", "pool", "k1", Some("9f0c"), Verdict::Allowed),
            1 => Event::record(
                &c,
                "write state",
                "pool",
                "k1",
                None,
                Verdict::Refused("EPERM"),
            ),
            2 => Event::group(&c, "mkdir", &group, Verdict::Allowed),
            _ => Event::keystore(&c, "quiesce", Verdict::Allowed),
        };
        log.append(&ev).unwrap();
    }
}

fn kmsfs_audit_verify(data_dir: Option<&Path>, files: &[PathBuf]) -> Output {
    let mut c = Command::new(BIN);
    c.args(["audit", "verify"]);
    if let Some(d) = data_dir {
        c.arg("--data-dir").arg(d);
    }
    c.args(files).env("RUST_LOG", "off");
    c.output().expect("run kmsfs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Exit 0; returns stdout.
#[track_caller]
fn verifies(data_dir: Option<&Path>, files: &[PathBuf]) -> String {
    let out = kmsfs_audit_verify(data_dir, files);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Exit non-zero with exactly one line on stderr, which names `want` (FILE:LINE: reason).
#[track_caller]
fn refuses(data_dir: Option<&Path>, files: &[PathBuf], want: &str) {
    let out = kmsfs_audit_verify(data_dir, files);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(want), "{err}\nwanted: {want}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
}

fn lines(p: &Path) -> Vec<String> {
    fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(p: &Path, ls: &[String]) {
    fs::write(p, ls.join("\n") + "\n").unwrap();
}

/// logrotate without copytruncate: rename, `create 0600`, then SIGHUP (here: `reopen`).
fn rotate(log: &AuditLog, path: &Path) -> PathBuf {
    let mut old = path.as_os_str().to_owned();
    old.push(".1");
    let old = PathBuf::from(old);
    fs::rename(path, &old).unwrap();
    fs::write(path, b"").unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
    log.reopen().unwrap();
    old
}

#[test]
fn rotated_files_verify_as_one_chain_and_tampering_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, key) = keystore(tmp.path());
    let path = audit::default_path(&data);
    let log = AuditLog::open(&path, key).unwrap();
    append(&log, 6);
    let old = rotate(&log, &path);
    append(&log, 6);
    drop(log);
    let (a, b) = (lines(&old), lines(&path));
    assert_eq!((a.len(), b.len()), (6, 6));
    let files = vec![old.clone(), path.clone()];

    let out = verifies(Some(&data), &files);
    assert!(
        out.starts_with("ok: 12 line(s) in 2 file(s), seq 1..12: chain, sequence numbers and MACs checked (hmk "),
        "{out}"
    );
    let out = verifies(None, &files);
    assert!(out.contains("MACs NOT checked"), "{out}");
    refuses(
        Some(&data),
        &[path.clone(), old.clone()],
        "audit.log.1:1: seq 1 where 13 was expected",
    );

    // Each tampering on a fresh copy of the two files, named at its FILE:LINE.
    let scratch = tmp.path().join("copy");
    fs::create_dir(&scratch).unwrap();
    let (ca, cb) = (scratch.join("audit.log.1"), scratch.join("audit.log"));
    let copies = vec![ca.clone(), cb.clone()];
    let case = |ta: Vec<String>, tb: Vec<String>, with_key: bool, want: &str| {
        write_lines(&ca, &ta);
        write_lines(&cb, &tb);
        refuses(with_key.then_some(data.as_path()), &copies, want);
    };

    // An edited line: its MAC names it; without the key, the next line's link does.
    let mut ea = a.clone();
    ea[2] = ea[2].replace("\"mkdir\"", "\"rmdir\"");
    case(
        ea.clone(),
        b.clone(),
        true,
        "audit.log.1:3: the MAC does not match",
    );
    case(
        ea,
        b.clone(),
        false,
        "audit.log.1:4: its prev is not the hash of the line before it",
    );

    // A removed line.
    let mut rb = b.clone();
    rb.remove(1);
    case(
        a.clone(),
        rb.clone(),
        true,
        "audit.log:2: seq 9 where 8 was expected (after ",
    );
    case(
        a.clone(),
        rb,
        false,
        "audit.log:2: seq 9 where 8 was expected",
    );

    // Two swapped lines.
    let mut sb = b.clone();
    sb.swap(2, 3);
    case(
        a.clone(),
        sb,
        true,
        "audit.log:3: seq 10 where 9 was expected",
    );

    // A line moved to the other file: from audit.log (seq 8) to the end of audit.log.1 ...
    let (mut ma, mut mb) = (a.clone(), b.clone());
    ma.push(mb.remove(1));
    case(ma, mb, true, "audit.log.1:7: seq 8 where 7 was expected");
    // ... and from the middle of audit.log.1 (seq 3) to the start of audit.log.
    let (mut ma, mut mb) = (a.clone(), b.clone());
    mb.insert(0, ma.remove(2));
    case(ma, mb, true, "audit.log.1:3: seq 4 where 3 was expected");

    // A line spliced in from another keystore's log, with the same seq as the one it
    // replaces, and another keystore's whole chain put in place of audit.log.1.
    let other_tmp = tempfile::tempdir().unwrap();
    let (other_data, other_key) = keystore(other_tmp.path());
    let other_path = audit::default_path(&other_data);
    let other = AuditLog::open(&other_path, other_key).unwrap();
    append(&other, 8);
    drop(other);
    let foreign = lines(&other_path);
    let mut fa = a.clone();
    fa[3] = foreign[3].clone();
    case(
        fa.clone(),
        b.clone(),
        true,
        "audit.log.1:4: the MAC does not match",
    );
    case(
        fa,
        b.clone(),
        false,
        "audit.log.1:4: its prev is not the hash of the line before it (",
    );
    case(
        foreign[..6].to_vec(),
        b.clone(),
        true,
        "audit.log.1:1: the MAC does not match",
    );
    // The foreign chain verifies under its own keystore's key, and not under ours.
    verifies(Some(&other_data), std::slice::from_ref(&other_path));
    refuses(
        Some(&data),
        std::slice::from_ref(&other_path),
        "audit.log:1: the MAC does not match",
    );

    // The originals were never touched by any of this: verify only reads.
    assert_eq!((lines(&old), lines(&path)), (a, b));
}

#[test]
fn verify_reads_only_and_reports_what_it_could_not_check() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, key) = keystore(tmp.path());
    let path = audit::default_path(&data);
    let log = AuditLog::open(&path, key).unwrap();
    append(&log, 3);
    // A crash in the middle of an append leaves a fragment: noted, not a failure.
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(b"{\"seq\":4,\"ti");
    fs::write(&path, &bytes).unwrap();
    let before = fs::metadata(&path).unwrap();
    let out = kmsfs_audit_verify(Some(&data), std::slice::from_ref(&path));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("note: ")
            && text(&out.stderr).contains(":4: an incomplete last line"),
        "{}",
        text(&out.stderr)
    );
    let after = fs::metadata(&path).unwrap();
    assert_eq!(fs::read(&path).unwrap(), bytes);
    assert_eq!(before.len(), after.len());
    // Without files, or with a compressed one: refused, one line.
    let out = Command::new(BIN)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let gz = tmp.path().join("audit.log.2.gz");
    fs::write(&gz, [0x1f, 0x8b, 8, 0]).unwrap();
    refuses(None, &[gz], "audit.log.2.gz: gzip-compressed");
    // A data directory whose KMS_HMKF is missing: named.
    let broken = tmp.path().join("broken");
    fs::create_dir(&broken).unwrap();
    fs::copy(data.join("KMS_DATA"), broken.join("KMS_DATA")).unwrap();
    refuses(Some(&broken), &[path], "KMS_HMKF is missing");
    // Nothing was written into the data directory (no lock file, no log).
    let names: Vec<_> = fs::read_dir(&broken)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["KMS_DATA"]);
}

/// A tmpfs mounted for one test, unmounted however the test ends.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs (the tests run as root): {}",
            text(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

#[test]
fn a_full_file_system_fails_appends_until_there_is_room_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, key) = keystore(tmp.path());
    let fs_dir = tmp.path().join("small");
    let _mounted = Tmpfs::mount(&fs_dir, "64k");
    let path = fs_dir.join("audit.log");
    let log = AuditLog::open(&path, key).unwrap();
    append(&log, 3);
    // Fill the file system.
    let filler = fs_dir.join("filler");
    {
        use std::io::Write;
        let mut f = fs::File::create(&filler).unwrap();
        let block = [0u8; 1024];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                    break;
                }
            }
        }
    }
    // Appends succeed while the log's last page has room, then fail with ENOSPC.
    let c = caller();
    let ev = Event::record(&c, "open key", "pool", "k1", Some("9f0c"), Verdict::Allowed);
    let mut written = 3;
    let err = loop {
        match log.append(&ev) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 100, "a 64k tmpfs never filled up");
    };
    assert_eq!(err.os_error(), Some(libc::ENOSPC), "{err}");
    let health = log.health().unwrap_err();
    assert!(health.contains("No space left on device"), "{health}");
    assert!(health.contains("audit.log"), "{health}");
    // It keeps failing, without leaving a partial line and without using sequence numbers.
    for _ in 0..3 {
        assert_eq!(log.append(&ev).unwrap_err().os_error(), Some(libc::ENOSPC));
    }
    let bytes = fs::read(&path).unwrap();
    assert!(bytes.ends_with(b"\n"));
    let files = vec![path.clone()];
    let out = verifies(Some(&data), &files);
    assert!(out.contains(&format!("{written} line(s)")), "{out}");
    assert_eq!(log.next_seq(), written + 1);
    // Room again: the next append simply succeeds, and the whole file verifies.
    fs::remove_file(&filler).unwrap();
    log.append(&ev).unwrap();
    assert_eq!(log.health(), Ok(()));
    log.sync().unwrap();
    append(&log, 2);
    let total = written + 3;
    let out = verifies(Some(&data), &files);
    assert!(
        out.contains(&format!("{total} line(s) in 1 file(s), seq 1..{total}:")),
        "{out}"
    );
    let r = audit::verify(&files, None).unwrap();
    assert_eq!(r.lines, total);
}

/// The postrotate script of docs/audit.md's logrotate snippet, for the data directory `data`.
fn postrotate_script(data: &Path) -> String {
    let doc = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/audit.md")).unwrap();
    let block = doc
        .split("/var/lib/kmsfs/audit.log {\n")
        .nth(1)
        .expect("docs/audit.md has the logrotate snippet");
    let script = block
        .split("    postrotate\n")
        .nth(1)
        .and_then(|s| s.split("    endscript\n").next())
        .expect("the snippet has postrotate ... endscript");
    script.replace("/var/lib/kmsfs", data.to_str().unwrap())
}

fn run_sh(script: &str) {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process, killed and reaped however the test ends; and the mount of a daemon,
/// detached if it is left behind.
struct Reaped(std::process::Child, Option<PathBuf>);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if let Some(mnt) = &self.1 {
            let _ = Command::new("umount").arg("-l").arg(mnt).output();
        }
    }
}

#[test]
fn logrotate_postrotate_signals_only_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = keystore(tmp.path());
    let mnt = tmp.path().join("mnt");
    let log = tmp.path().join("daemon.log");
    let script = postrotate_script(&data);

    // A serving daemon: the script finds it through kmsfs.lock and sends it SIGHUP.
    let mut daemon = Reaped(
        Command::new(BIN)
            .arg("mount")
            .arg("--data-dir")
            .arg(&data)
            .arg(&mnt)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        Some(mnt.clone()),
    );
    wait_until("the daemon to serve", || mnt.join(".status").exists());
    run_sh(&script);
    wait_until("the daemon to log the SIGHUP", || {
        fs::read_to_string(&log).unwrap().contains("SIGHUP")
    });
    assert!(
        daemon.0.try_wait().unwrap().is_none(),
        "SIGHUP ended the daemon"
    );
    let out = Command::new("umount").arg(&mnt).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until("the daemon to exit", || {
        daemon.0.try_wait().unwrap().is_some()
    });

    // The daemon is gone and its pid stays in kmsfs.lock; should another program have that
    // pid now, it is not signalled, even one with `mount` in its command line (this sh would
    // die of a SIGHUP): it does not hold the lock.
    let mut other = Reaped(
        Command::new("sh")
            .args(["-c", "sleep 10; :", "mount"])
            .spawn()
            .unwrap(),
        None,
    );
    fs::write(data.join("kmsfs.lock"), format!("{}\n", other.0.id())).unwrap();
    run_sh(&script);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        other.0.try_wait().unwrap().is_none(),
        "a stale pid was signalled"
    );

    // A kmsfs process that holds the lock but is not `kmsfs mount` (an import): not signalled.
    let hup = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone()).unwrap();
    let lock = kmsfs::store::DirLock::acquire(&data).unwrap();
    run_sh(&script);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !hup.load(std::sync::atomic::Ordering::SeqCst),
        "a kmsfs that is not a mount was signalled"
    );
    drop(lock);
}
