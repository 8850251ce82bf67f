//! kmsfs as a systemd service: `examples/kmsfs.service` passes `systemd-analyze verify`, gives
//! the service no mount namespace (the mount must be visible to the host), and its
//! restrictions leave the daemon working; readiness (`READY=1` to `$NOTIFY_SOCKET`) comes
//! only once the mount answers; `--log-file` gets the log; the unit's ExecStopPost detaches
//! the dead mount a crash leaves, and nothing else.

mod support;

use std::ffi::OsStr;
use std::fs;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use support::cli::{describe, failed, ok, BIN};
use support::daemon::is_mounted;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/kmsfs.service");
const DEADLINE: Duration = Duration::from_secs(15);

fn unit_text() -> String {
    fs::read_to_string(UNIT).unwrap()
}

/// The unit's settings (`Key=value` lines, comments left out), in order, with their section.
fn settings() -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in unit_text().lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line.trim_matches(['[', ']']).to_string();
            continue;
        }
        let (k, v) = line.split_once('=').expect("Key=value");
        out.push((section.clone(), k.to_string(), v.to_string()));
    }
    out
}

/// The value of `key` in [Service] (the last one, as systemd takes it).
fn service(key: &str) -> Option<String> {
    settings()
        .into_iter()
        .filter(|(s, k, _)| s == "Service" && k == key)
        .map(|(_, _, v)| v)
        .next_back()
}

/// `kmsfs mount` as a child process, stopped (SIGTERM, then SIGKILL) and reaped when
/// dropped, its mount detached if one is left.
struct Mount {
    child: Option<Child>,
    mnt: PathBuf,
    stderr: PathBuf,
    /// False once crashed on purpose: the dead mount is the test's to deal with.
    detach: bool,
}

impl Mount {
    /// `PREFIX... BIN mount ARGS --data-dir DATA MNT`, stderr into `MNT.stderr`.
    fn spawn(prefix: &[&str], args: &[&OsStr], env: &[(&str, &OsStr)]) -> Mount {
        let mnt = PathBuf::from(args.last().expect("the mount point"));
        let stderr = PathBuf::from(format!("{}.stderr", mnt.display()));
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        cmd.arg("mount")
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn kmsfs mount");
        Mount {
            child: Some(child),
            mnt,
            stderr,
            detach: true,
        }
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Polls until `MNT/.status` answers; panics with stderr if the daemon exits first.
    fn wait_served(&mut self) {
        let until = Instant::now() + DEADLINE;
        while !self.mnt.join(".status").exists() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("kmsfs mount exited with {status}:\n{}", self.stderr());
            }
            assert!(Instant::now() < until, "not served:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < until, "did not exit:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    /// SIGTERM: the daemon must unmount and exit 0.
    fn stop(mut self) {
        kill(self.pid(), Signal::SIGTERM).unwrap();
        let status = self.wait_exit();
        assert!(status.success(), "exit {status}:\n{}", self.stderr());
        assert!(!is_mounted(&self.mnt), "still mounted");
    }

    /// `umount MNT` from outside: the daemon must exit 0 (a daemon run under strace gets no
    /// signals: strace blocks them).
    fn unmount(mut self) {
        let out = Command::new("umount").arg(&self.mnt).output().unwrap();
        ok("umount", out);
        let status = self.wait_exit();
        assert!(status.success(), "exit {status}:\n{}", self.stderr());
    }

    /// SIGKILL, as a crash: the dead mount stays.
    fn crash(mut self) {
        kill(self.pid(), Signal::SIGKILL).unwrap();
        self.wait_exit();
        self.detach = false;
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Unmounting ends the daemon even when it cannot get signals (under strace).
            if is_mounted(&self.mnt) {
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            }
            // kmsfs itself, also when it runs under a wrapper (strace, setpriv via sh).
            for pid in descendants(child.id()) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let until = Instant::now() + DEADLINE;
            while child.try_wait().ok().flatten().is_none() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("--- stderr of kmsfs mount:\n{}", self.stderr());
            }
        }
        if self.detach && is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

fn os(p: &Path) -> &OsStr {
    p.as_os_str()
}

/// The processes below `pid` (from /proc/PID/task/*/children).
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            out.push(child);
            out.extend(descendants(child));
        }
    }
    out
}

/// Detaches `0` when dropped if it is still a mount point: a test that leaves a dead mount on
/// purpose never leaves it behind, passed or failed.
struct DetachOnDrop(PathBuf);

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

// ---- the unit file --------------------------------------------------------------------

#[test]
fn unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    // The unit as installed, but starting the binary cargo built, with its man page on
    // MANPATH (verify checks Documentation=man:kmsfs(1) too).
    let unit = unit_text();
    assert!(
        unit.contains("ExecStart=/usr/local/sbin/kmsfs mount "),
        "{unit}"
    );
    fs::write(
        dir.path().join("kmsfs.service"),
        unit.replace("/usr/local/sbin/kmsfs", BIN),
    )
    .unwrap();
    let man1 = dir.path().join("man/man1");
    fs::create_dir_all(&man1).unwrap();
    fs::write(man1.join("kmsfs.1"), kmsfs::cli::man_page().unwrap()).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("kmsfs.service"))
        .env("MANPATH", dir.path().join("man"))
        .output()
        .expect("run systemd-analyze (is systemd installed?)");
    // Unknown or misspelt settings are only warnings: nothing may be said at all.
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "{}",
        describe("systemd-analyze verify", &out)
    );
}

/// Settings that give a service its own mount namespace, in which systemd makes every mount
/// a slave first: the FUSE mount would then be seen by the service alone.
const NAMESPACING: &[&str] = &[
    "PrivateTmp",
    "PrivateDevices",
    "PrivateMounts",
    "PrivateNetwork",
    "PrivateIPC",
    "NetworkNamespacePath",
    "ProtectSystem",
    "ProtectHome",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectProc",
    "ProcSubset",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "ExecPaths",
    "NoExecPaths",
    "TemporaryFileSystem",
    "BindPaths",
    "BindReadOnlyPaths",
    "RootDirectory",
    "RootImage",
    "MountImages",
    "ExtensionImages",
    "ExtensionDirectories",
    "DynamicUser",
    "LogNamespace",
    "MountAPIVFS",
];

#[test]
fn unit_gives_the_service_no_mount_namespace_and_the_settings_it_needs() {
    for (_, key, value) in settings() {
        assert!(
            !NAMESPACING.contains(&key.as_str()),
            "{key}={value} gives kmsfs a private mount namespace: /mnt/kms would be empty for everyone else"
        );
    }
    assert!(
        matches!(service("MountFlags").as_deref(), None | Some("shared")),
        "MountFlags other than shared creates a mount namespace"
    );
    let want = [
        ("Type", "notify"),
        (
            "ExecStart",
            "/usr/local/sbin/kmsfs mount --data-dir /var/lib/kmsfs /mnt/kms",
        ),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", "CAP_SYS_ADMIN CAP_IPC_LOCK"),
        ("DevicePolicy", "closed"),
        ("DeviceAllow", "/dev/fuse rw"),
        ("LimitCORE", "0"),
        ("UMask", "0077"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
    ];
    for (key, value) in want {
        assert_eq!(service(key).as_deref(), Some(value), "{key}");
    }
    let post = service("ExecStopPost").expect("ExecStopPost");
    assert!(
        post.starts_with('-'),
        "{post}: its failure must not fail the unit"
    );
    assert!(post.contains("umount -l /mnt/kms"), "{post}");
    // Logging goes to the journal: no --log-file in the unit.
    assert!(!unit_text().contains("--log-file"));
}

/// The unit's ExecStopPost command for mount point `mnt`, run as systemd would (its quoting
/// is the shell's).
fn exec_stop_post(mnt: &Path) -> std::process::Output {
    let post = service("ExecStopPost").unwrap();
    let command = post
        .trim_start_matches('-')
        .replace("/mnt/kms", mnt.to_str().unwrap());
    Command::new("sh").arg("-c").arg(command).output().unwrap()
}

#[test]
fn exec_stop_post_detaches_a_crashed_mount_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mnt = dir.path().join("mnt");
    let _guard = DetachOnDrop(mnt.clone());
    let mut m = Mount::spawn(
        &[],
        &[
            OsStr::new("--init"),
            OsStr::new("--data-dir"),
            os(&data),
            os(&mnt),
        ],
        &[],
    );
    m.wait_served();
    m.crash();
    // The dead mount: still listed, and in the way.
    assert!(is_mounted(&mnt));
    let e = fs::read_dir(&mnt).map(|_| ()).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");
    ok("ExecStopPost after a crash", exec_stop_post(&mnt));
    assert!(!is_mounted(&mnt));
    // ... so that the service starts again. A live kmsfs mount (another daemon's, say: this
    // one did not crash) is left alone.
    let mut m = Mount::spawn(&[], &[OsStr::new("--data-dir"), os(&data), os(&mnt)], &[]);
    m.wait_served();
    ok("ExecStopPost with a live mount", exec_stop_post(&mnt));
    assert!(
        mnt.join(".status").exists(),
        "ExecStopPost detached a live mount"
    );
    m.stop();
    // After a clean stop there is nothing to detach, and a file system that is not kmsfs
    // (mounted at that path by the admin) is left alone.
    ok("ExecStopPost after a clean stop", exec_stop_post(&mnt));
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "admin-tmpfs"])
        .arg(&mnt)
        .output()
        .unwrap();
    ok("mount tmpfs", out);
    let _ = exec_stop_post(&mnt);
    let still = is_mounted(&mnt);
    let _ = Command::new("umount").arg(&mnt).status();
    assert!(
        still,
        "ExecStopPost unmounted a file system that is not kmsfs"
    );
}

#[test]
fn daemon_works_within_the_units_restrictions() {
    // What can be reproduced without systemd: the capability bounding set, no new privileges
    // and the umask, on a whole session (create, activate, read a key, freeze, thaw).
    let caps = service("CapabilityBoundingSet").unwrap();
    let bounding: Vec<String> = caps
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let bounding = format!("-all,{}", bounding.join(","));
    let umask = service("UMask").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mnt = dir.path().join("mnt");
    let script = format!("umask {umask} && exec \"$@\"");
    let mut m = Mount::spawn(
        &[
            "sh",
            "-c",
            &script,
            "sh",
            "setpriv",
            "--no-new-privs",
            "--inh-caps=-all",
            &format!("--bounding-set={bounding}"),
        ],
        &[
            OsStr::new("--init"),
            OsStr::new("--data-dir"),
            os(&data),
            os(&mnt),
        ],
        &[],
    );
    m.wait_served();
    let status = fs::read_to_string(format!("/proc/{}/status", m.pid())).unwrap();
    let bnd = status.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
    assert_eq!(
        bnd, "CapBnd:\t0000000000204000",
        "only CAP_SYS_ADMIN (bit 21) and CAP_IPC_LOCK (bit 14)"
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(
            "set -e; cd \"$1\"; mkdir pool pool/k1; echo active > pool/k1/state;
             test \"$(wc -c < pool/k1/key)\" -eq 32; echo quiesce > .quiesce;
             echo unquiesce > .quiesce; mkdir pool/k2; jq -e '.records == 2' .status",
        )
        .arg("bash")
        .arg(&m.mnt)
        .output()
        .unwrap();
    ok("a session under the unit's restrictions", out);
    m.stop();
    for f in ["KMS_DATA", "KMS_HMKF", "KMS_KPKF"] {
        let mode = fs::metadata(data.join(f)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
}

// ---- readiness: sd_notify -------------------------------------------------------------

/// How long strace holds up the daemon's mount(2), so that a READY sent before the mount
/// answers would arrive a whole second early, every time.
const MOUNT_DELAY: Duration = Duration::from_secs(1);

/// Runs `kmsfs mount` with `NOTIFY_SOCKET=name`, `sock` being bound there, its mount(2) held
/// up by `MOUNT_DELAY`: the one datagram must be READY=1 with a STATUS, and arrive only once
/// `MNT/.status` answers.
fn ready_only_once_served(sock: UnixDatagram, name: &OsStr) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mnt = dir.path().join("mnt");
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let delay = format!("inject=mount:delay_enter={}", MOUNT_DELAY.as_micros());
    let started = Instant::now();
    let m = Mount::spawn(
        &[
            "strace",
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=mount",
            "-e",
            &delay,
        ],
        &[
            OsStr::new("--init"),
            OsStr::new("--data-dir"),
            os(&data),
            os(&mnt),
        ],
        &[("NOTIFY_SOCKET", name)],
    );
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notification ({e}):\n{}", m.stderr()));
    // At once, before anything else: the mount must already answer.
    let served = mnt.join(".status").exists();
    let mounted = is_mounted(&mnt);
    assert!(
        served && mounted,
        "READY before the mount answered:\n{}",
        m.stderr()
    );
    assert!(
        started.elapsed() >= MOUNT_DELAY,
        "the mount was not held up (is strace installed?)"
    );
    let msg = String::from_utf8(buf[..n].to_vec()).unwrap();
    let lines: Vec<&str> = msg.lines().collect();
    let (data, mnt) = (data.canonicalize().unwrap(), mnt.canonicalize().unwrap());
    assert_eq!(
        lines,
        [
            "READY=1".to_string(),
            format!("STATUS=serving {} at {}", data.display(), mnt.display())
        ],
        "{msg}"
    );
    // And nothing more while it serves.
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(sock.recv(&mut buf).is_err(), "a second notification");
    m.unmount();
}

#[test]
fn ready_is_sent_to_a_path_socket_only_once_the_mount_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    ready_only_once_served(sock, path.as_os_str());
}

#[test]
fn ready_is_sent_to_an_abstract_socket_only_once_the_mount_answers() {
    let name = format!(
        "kmsfs-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    ready_only_once_served(sock, OsStr::new(&format!("@{name}")));
}

#[test]
fn notify_sends_one_datagram_and_names_a_bad_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    kmsfs::cli::notify::send(path.as_os_str(), "STOPPING=1").unwrap();
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
    let e = kmsfs::cli::notify::send(OsStr::new("relative/notify"), "READY=1").unwrap_err();
    assert!(
        e.to_string().contains("NOTIFY_SOCKET=relative/notify"),
        "{e}"
    );
    // Nobody listening: an error, never a hang.
    assert!(kmsfs::cli::notify::send(dir.path().join("none").as_os_str(), "READY=1").is_err());
}

// ---- --log-file -----------------------------------------------------------------------

#[test]
fn log_file_receives_the_log_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mnt = dir.path().join("mnt");
    let log = dir.path().join("kmsfs.log");
    let log_arg = [OsStr::new("--log-file"), os(&log)];
    let mount_args = |init: bool| {
        let mut a: Vec<&OsStr> = log_arg.to_vec();
        if init {
            a.push(OsStr::new("--init"));
        }
        a.extend([OsStr::new("--data-dir"), os(&data), os(&mnt)]);
        a
    };
    let mut m = Mount::spawn(&[], &mount_args(true), &[]);
    m.wait_served();
    // A refusal: the .errors line goes to the log too.
    let out = Command::new("touch")
        .arg(mnt.join("stray"))
        .output()
        .unwrap();
    failed("touch a stray file", out);

    // A second mount of the same keystore is refused: its reason goes to its log file as
    // well as to stderr.
    let refused_log = dir.path().join("refused.log");
    let mut r = Mount::spawn(
        &[],
        &[
            OsStr::new("--log-file"),
            os(&refused_log),
            OsStr::new("--data-dir"),
            os(&data),
            os(&dir.path().join("mnt2")),
        ],
        &[],
    );
    assert!(!r.wait_exit().success());
    let stderr = r.stderr();
    let reason = stderr
        .lines()
        .find_map(|l| l.strip_prefix("kmsfs: "))
        .unwrap_or_else(|| panic!("no error line on stderr: {stderr}"));
    let logged = fs::read_to_string(&refused_log).unwrap();
    assert!(
        logged.contains(" ERROR ") && logged.contains(reason),
        "{logged}"
    );
    m.stop();

    let text = fs::read_to_string(&log).unwrap();
    let mode = fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "a new log file is private");
    for want in [
        "created a keystore with random keys",
        "serving the keystore of",
        "refused (EPERM)",
        "unmounted",
    ] {
        assert!(text.contains(want), "no {want:?} in the log:\n{text}");
    }
    // The same line format as stderr's: `[TIME LEVEL target] message`, no colours.
    for line in text.lines() {
        assert!(
            line.starts_with("[20") && !line.contains('\u{1b}'),
            "{line:?}"
        );
    }
    assert!(text
        .lines()
        .any(|l| l.contains(" WARN ") && l.contains("refused (EPERM)")));
    // Nothing went to stderr.
    let stderr = fs::read_to_string(dir.path().join("mnt.stderr")).unwrap();
    assert_eq!(stderr, "", "the log went to stderr too");

    // Appended to, never truncated; an existing file keeps its mode.
    fs::set_permissions(&log, fs::Permissions::from_mode(0o640)).unwrap();
    let mut m = Mount::spawn(&[], &mount_args(false), &[]);
    m.wait_served();
    m.stop();
    let again = fs::read_to_string(&log).unwrap();
    assert!(again.starts_with(&text), "the log was not appended to");
    assert_eq!(
        again.matches("serving the keystore of").count(),
        2,
        "{again}"
    );
    assert_eq!(
        fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o640
    );

    // A log file that cannot be opened is an error before anything else happens.
    let bad = dir.path().join("no/such/dir/kmsfs.log");
    let out = Command::new(BIN)
        .args([OsStr::new("mount"), OsStr::new("--log-file"), os(&bad)])
        .args([OsStr::new("--data-dir"), os(&data), os(&mnt)])
        .output()
        .unwrap();
    let err = failed("mount with an unopenable log file", out);
    assert!(err.contains("cannot open log file"), "{err}");
    assert!(!is_mounted(&mnt));
}
