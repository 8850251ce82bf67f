//! Helpers for tests that drive the real `kmsfs` binary and real shell tools: a scratch
//! directory per test, a `kmsfs mount` child process that is always stopped (even when the
//! test panics), and snapshots of a mounted keystore taken with `bash` and `jq`.
//! A test that cannot mount fails; it never skips.

#![allow(dead_code)] // not every test binary uses every helper

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_kmsfs");
pub const BACKUP_SET: [&str; 3] = ["KMS_DATA", "KMS_HMKF", "KMS_KPKF"];

/// How long a daemon may take to serve, or to exit after SIGTERM.
const DAEMON_DEADLINE: Duration = Duration::from_secs(15);

/// `PATH` with the directory of the built `kmsfs` first, so that scripts find it.
pub fn path_with_kmsfs() -> OsString {
    let bin_dir = Path::new(BIN).parent().expect("binary has a directory");
    let mut path = OsString::from(bin_dir);
    if let Some(old) = std::env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    path
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Describes a finished command for assertion messages.
pub fn describe(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Runs `bash -c script` with the built binary first on PATH, in `cwd`, with `env` set.
pub fn bash_in(cwd: &Path, script: &str, env: &[(&str, &OsStr)]) -> Output {
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(script)
        .current_dir(cwd)
        .env("PATH", path_with_kmsfs())
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run bash")
}

pub fn ok(what: &str, out: Output) -> String {
    assert!(out.status.success(), "{}", describe(what, &out));
    text(&out.stdout)
}

/// The command must fail; returns its stderr.
pub fn failed(what: &str, out: Output) -> String {
    assert!(
        !out.status.success(),
        "should have failed: {}",
        describe(what, &out)
    );
    text(&out.stderr)
}

/// Runs the built `kmsfs` with these arguments (stdin closed: never interactive).
pub fn kmsfs<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run kmsfs")
}

pub fn verify(data: &Path) -> Output {
    kmsfs([
        OsStr::new("verify"),
        OsStr::new("--data-dir"),
        data.as_os_str(),
    ])
}

/// A private scratch directory for one test; everything a test makes lives below it.
pub struct Scratch {
    pub dir: TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("kmsfs-drill")
            .tempdir()
            .expect("tempdir");
        Scratch { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Creates `rel` (and parents) mode 0700 and returns it.
    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).unwrap();
        p
    }

    /// Writes a file mode 0600 (passphrase files, say).
    pub fn file(&self, rel: &str, contents: &str) -> PathBuf {
        let p = self.path(rel);
        fs::write(&p, contents).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    pub fn bash(&self, script: &str, env: &[(&str, &OsStr)]) -> Output {
        bash_in(self.dir.path(), script, env)
    }
}

/// Whether `mnt` is a mount point now (per /proc/self/mounts).
pub fn is_mounted(mnt: &Path) -> bool {
    let want = mnt.canonicalize().unwrap_or_else(|_| mnt.to_path_buf());
    let want = want.to_string_lossy();
    fs::read_to_string("/proc/self/mounts")
        .expect("read /proc/self/mounts")
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(&*want))
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

fn sigterm(child: &Child) {
    // SAFETY: kill(2) on the pid of a child we spawned and have not yet reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}

fn spawn_mount(data: &Path, mnt: &Path, log: &Path, extra: &[&str]) -> Child {
    fs::create_dir_all(mnt).expect("mkdir mount point");
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

/// `kmsfs mount --data-dir DATA MNT` as a child process. Dropping it stops the daemon (SIGTERM,
/// then SIGKILL and `umount -l` if it does not go) so that no test leaves a mount behind.
pub struct Daemon {
    child: Option<Child>,
    pub data: PathBuf,
    pub mnt: PathBuf,
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

    fn start_with(data: &Path, mnt: &Path, extra: &[&str]) -> Daemon {
        let log = PathBuf::from(format!("{}.log", mnt.display()));
        let child = spawn_mount(data, mnt, &log, extra);
        let mut d = Daemon {
            child: Some(child),
            data: data.to_path_buf(),
            mnt: mnt.canonicalize().expect("canonical mount point"),
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
        sigterm(&child);
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
        if let Some(mut child) = self.child.take() {
            sigterm(&child);
            if wait_exit(&mut child, DAEMON_DEADLINE).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            if std::thread::panicking() {
                eprintln!(
                    "--- log of kmsfs mount at {}:\n{}",
                    self.mnt.display(),
                    self.log_text()
                );
            }
        }
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

/// Runs `kmsfs mount` where it must be refused: returns its stderr. Never leaves a mount.
pub fn mount_refused(data: &Path, mnt: &Path) -> String {
    let log = PathBuf::from(format!("{}.refused.log", mnt.display()));
    let mut child = spawn_mount(data, mnt, &log, &[]);
    let status = wait_exit(&mut child, DAEMON_DEADLINE);
    let stderr = fs::read_to_string(&log).unwrap_or_default();
    if status.is_none() {
        sigterm(&child);
        if wait_exit(&mut child, DAEMON_DEADLINE).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    if is_mounted(mnt) {
        let _ = Command::new("umount").arg("-l").arg(mnt).status();
    }
    let status = status.unwrap_or_else(|| panic!("kmsfs mount was not refused:\n{stderr}"));
    assert!(
        !status.success(),
        "kmsfs mount should have failed:\n{stderr}"
    );
    stderr
}

/// Modes (permission bits) of the three backing files.
pub fn modes(data: &Path) -> Vec<u32> {
    BACKUP_SET
        .iter()
        .map(|f| {
            fs::metadata(data.join(f))
                .unwrap_or_else(|e| panic!("{f}: {e}"))
                .permissions()
                .mode()
                & 0o7777
        })
        .collect()
}

/// SHA-256 of each backing file, and its length and mtime.
pub fn digests(data: &Path) -> Vec<String> {
    BACKUP_SET
        .iter()
        .map(|f| {
            let p = data.join(f);
            let mut bytes = Vec::new();
            File::open(&p)
                .and_then(|mut file| file.read_to_end(&mut bytes))
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let meta = fs::metadata(&p).unwrap();
            format!(
                "{f} {} len {} mtime {:?}",
                hex::encode(Sha256::digest(&bytes)),
                meta.len(),
                meta.modified().unwrap()
            )
        })
        .collect()
}

/// Everything the mount shows, as text: `.status` (without the data directory and the
/// freeze, which differ between a live keystore and its restored copy), every group's
/// `.group.json`, `.cipher`, `.description` and `.active`, every record's `record.json`,
/// `state`, `description` and key (or "unreadable"), and every `.by-tag` link.
/// JSON goes through `jq -S` so that the comparison does not depend on formatting.
pub fn snapshot(d: &Daemon) -> String {
    d.sh_ok(
        r#"set -euo pipefail
shopt -s nullglob
jq -cS 'del(.data_dir, .quiesced)' .status
for g in */; do
    g=${g%/}
    echo "group $g"
    jq -cS . "$g/.group.json"
    echo "cipher $(cat "$g/.cipher")"
    echo "description $(base64 -w0 "$g/.description")"
    echo "active $(readlink "$g/.active" || echo -)"
    for r in "$g"/*/; do
        r=${r%/}
        echo "record $r"
        jq -cS . "$r/record.json"
        echo "state $(cat "$r/state")"
        echo "description $(base64 -w0 "$r/description")"
        if key=$(base64 -w0 "$r/key" 2>/dev/null); then
            echo "key $key"
        else
            echo "key unreadable"
        fi
    done
done
for t in .by-tag/*; do
    echo "tag ${t#.by-tag/} -> $(readlink "$t")"
done
"#,
    )
}

/// Records by tag: (group/name, state), read through `.by-tag`.
pub fn records(d: &Daemon) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(d.p(".by-tag")).expect("read .by-tag") {
        let tag = e.unwrap().file_name().to_string_lossy().into_owned();
        let rec = d.json(&format!(".by-tag/{tag}/record.json"));
        let path = format!(
            "{}/{}",
            rec["group"].as_str().unwrap(),
            rec["name"].as_str().unwrap()
        );
        out.insert(tag, (path, rec["state"].as_str().unwrap().to_string()));
    }
    out
}

/// Adds the key of every record whose state allows reading it (active, inactive), by tag.
/// A key never changes for a tag, so a key seen once is the key for good.
pub fn collect_keys(d: &Daemon, keys: &mut BTreeMap<String, Vec<u8>>) {
    for (tag, (path, state)) in records(d) {
        if state == "active" || state == "inactive" {
            let key = fs::read(d.p(&format!("{path}/key")))
                .unwrap_or_else(|e| panic!("read {path}/key ({state}): {e}"));
            if let Some(old) = keys.insert(tag.clone(), key.clone()) {
                assert_eq!(old, key, "the key of {path} (tag {tag}) changed");
            }
        }
    }
}

/// Moves every record to a state whose key can be read (prelive -> active, deprecated ->
/// inactive, terminated -> deprecated -> inactive), then reads all keys. For a restored copy,
/// after its snapshot was compared: it changes states.
pub fn unlock_all_keys(d: &Daemon) -> BTreeMap<String, Vec<u8>> {
    for (_, (path, state)) in records(d) {
        let steps: &[&str] = match state.as_str() {
            "prelive" => &["active"],
            "deprecated" => &["inactive"],
            "terminated" => &["deprecated", "inactive"],
            _ => &[],
        };
        for s in steps {
            fs::write(d.p(&format!("{path}/state")), s)
                .unwrap_or_else(|e| panic!("{path}: {state} -> {s}: {e}"));
        }
    }
    let mut keys = BTreeMap::new();
    collect_keys(d, &mut keys);
    assert_eq!(keys.len(), records(d).len(), "every key readable now");
    keys
}
