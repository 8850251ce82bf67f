//! `kmsfs mount` as a child process, as an administrator runs it. A `Daemon` never outlives its
//! test: dropping it stops the daemon (SIGTERM, then SIGKILL), reaps it, and detaches its mount
//! if one is left, so that no test leaves a mount or a zombie behind, passed or not.

use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::cli::{bash_in, failed, ok, BIN};

/// How long a daemon may take to serve, or to exit after SIGTERM or an unmount.
const DAEMON_DEADLINE: Duration = Duration::from_secs(15);

/// Whether `mnt` is a mount point now (per /proc/self/mounts).
pub fn is_mounted(mnt: &Path) -> bool {
    let want = mnt.canonicalize().unwrap_or_else(|_| mnt.to_path_buf());
    let want = want.to_string_lossy();
    fs::read_to_string("/proc/self/mounts")
        .expect("read /proc/self/mounts")
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(&*want))
}

/// Lazy unmount (`umount -l`): also what detaches the dead mount a killed daemon leaves
/// ("transport endpoint is not connected"). Harmless where nothing is mounted.
fn detach(mnt: &Path) {
    let c = std::ffi::CString::new(mnt.as_os_str().as_bytes()).expect("no NUL in the path");
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

/// `mnt` made absolute and free of symlinks, whether or not it exists yet (`kmsfs mount`
/// creates a missing mount point).
fn canonical(mnt: &Path) -> PathBuf {
    if let Ok(p) = mnt.canonicalize() {
        return p;
    }
    match (mnt.parent(), mnt.file_name()) {
        (Some(parent), Some(name)) => parent
            .canonicalize()
            .unwrap_or_else(|e| panic!("the parent of {}: {e}", mnt.display()))
            .join(name),
        _ => mnt.to_path_buf(),
    }
}

fn wait_exit(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let until = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM to a child we spawned; returns what kill(2) returned.
fn sigterm(child: &Child) -> i32 {
    // SAFETY: kill(2) on the pid of a child we spawned and have not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }
}

/// SIGTERM, then SIGKILL if it does not go; always reaped.
fn terminate(mut child: Child) {
    sigterm(&child);
    if wait_exit(&mut child, DAEMON_DEADLINE).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `kmsfs mount EXTRA --data-dir DATA MNT`, its stdout and stderr in `log`.
fn spawn_mount(data: &Path, mnt: &Path, log: &Path, extra: &[&str]) -> Child {
    let log_file = File::create(log).expect("create the daemon's log");
    Command::new(BIN)
        .arg("mount")
        .args(extra)
        .arg("--data-dir")
        .arg(data)
        .arg(mnt)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("spawn kmsfs mount")
}

/// `kmsfs mount --data-dir DATA MNT` as a child process, serving.
pub struct Daemon {
    /// None once stopped, killed or exited (and reaped).
    child: Option<Child>,
    pub data: PathBuf,
    /// The mount point, canonical.
    pub mnt: PathBuf,
    /// The daemon's stdout and stderr: `MNT.log`.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts the daemon and waits (polling `MNT/.status`) until it serves. Panics, with the
    /// daemon's log, if it exits or does not serve in time.
    pub fn start(data: &Path, mnt: &Path) -> Daemon {
        Daemon::start_with(data, mnt, &[])
    }

    /// `kmsfs mount --init`: creates a keystore with random keys first if there is none.
    pub fn start_init(data: &Path, mnt: &Path) -> Daemon {
        Daemon::start_with(data, mnt, &["--init"])
    }

    /// `kmsfs mount EXTRA --data-dir DATA MNT`.
    pub fn start_with(data: &Path, mnt: &Path, extra: &[&str]) -> Daemon {
        let log = PathBuf::from(format!("{}.log", mnt.display()));
        let child = spawn_mount(data, mnt, &log, extra);
        let mut d = Daemon {
            child: Some(child),
            data: data.to_path_buf(),
            mnt: canonical(mnt),
            log,
        };
        let until = Instant::now() + DAEMON_DEADLINE;
        while !d.mnt.join(".status").exists() {
            if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
                d.child = None;
                panic!(
                    "kmsfs mount of {} exited with {status} before serving:\n{}",
                    data.display(),
                    d.log_text()
                );
            }
            assert!(
                Instant::now() < until,
                "kmsfs mount did not serve {} within {DAEMON_DEADLINE:?}:\n{}",
                d.mnt.display(),
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM; the daemon must unmount, exit 0, and leave no mount behind.
    pub fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        assert_eq!(sigterm(&child), 0, "SIGTERM to kmsfs mount");
        let status = wait_exit(&mut child, DAEMON_DEADLINE);
        let log = self.log_text();
        match status {
            Some(s) => assert!(s.success(), "kmsfs mount exited with {s}:\n{log}"),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("kmsfs mount did not exit after SIGTERM:\n{log}");
            }
        }
        assert!(
            !is_mounted(&self.mnt),
            "{} is still mounted after the daemon exited",
            self.mnt.display()
        );
        assert!(!self.mnt.join(".status").exists());
    }

    /// SIGKILL, as a crash: no chance to unmount. Reaps the daemon, then detaches the dead
    /// mount it leaves, so that the same mount point can be mounted again.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL kmsfs mount");
        child.wait().expect("reap kmsfs mount");
        detach(&self.mnt);
    }

    /// SIGKILL, as a crash, and leave the dead mount in place as a real crash does (`ls MNT`:
    /// "Transport endpoint is not connected"). Dropping the `Daemon` detaches it if it is
    /// still there.
    pub fn crash(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL kmsfs mount");
        child.wait().expect("reap kmsfs mount");
    }

    /// Waits for the daemon to exit by itself (after an external `umount`, say) and returns
    /// its exit status. Panics, with its log, if it does not exit in time.
    pub fn wait(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        match wait_exit(&mut child, DAEMON_DEADLINE) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "kmsfs mount did not exit within {DAEMON_DEADLINE:?}:\n{}",
                    self.log_text()
                );
            }
        }
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.p(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
    }

    pub fn json(&self, rel: &str) -> serde_json::Value {
        serde_json::from_str(&self.read(rel)).unwrap_or_else(|e| panic!("{rel} is not JSON: {e}"))
    }

    /// `bash -c script` in the mount, with `$M` set to it.
    pub fn sh(&self, script: &str) -> Output {
        bash_in(&self.mnt, script, &[("M", self.mnt.as_os_str())])
    }

    pub fn sh_ok(&self, script: &str) -> String {
        ok(script, self.sh(script))
    }

    /// The script must fail; returns its stderr.
    pub fn sh_err(&self, script: &str) -> String {
        failed(script, self.sh(script))
    }

    /// `cat .quiesce`, parsed.
    pub fn quiesce(&self) -> serde_json::Value {
        self.json(".quiesce")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child);
            if std::thread::panicking() {
                eprintln!(
                    "--- log of kmsfs mount at {}:\n{}",
                    self.mnt.display(),
                    self.log_text()
                );
            }
        }
        if is_mounted(&self.mnt) {
            detach(&self.mnt);
        }
    }
}

/// Runs `kmsfs mount` where it must be refused: returns its output (stdout and stderr).
/// Never leaves a mount or a process behind.
pub fn mount_refused(data: &Path, mnt: &Path) -> String {
    mount_refused_with(data, mnt, &[])
}

/// `mount_refused` with extra arguments.
pub fn mount_refused_with(data: &Path, mnt: &Path, extra: &[&str]) -> String {
    let log = PathBuf::from(format!("{}.refused.log", mnt.display()));
    let mut child = spawn_mount(data, mnt, &log, extra);
    let status = wait_exit(&mut child, DAEMON_DEADLINE);
    let stderr = fs::read_to_string(&log).unwrap_or_default();
    if status.is_none() {
        terminate(child);
    }
    if is_mounted(mnt) {
        detach(mnt);
    }
    let status = status.unwrap_or_else(|| panic!("kmsfs mount was not refused:\n{stderr}"));
    assert!(
        !status.success(),
        "kmsfs mount should have failed:\n{stderr}"
    );
    stderr
}
