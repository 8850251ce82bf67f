//! The daemon holds the HMK, the KPK and unwrapped keys: a crash must not write them to a
//! core file, and its memory must be closed to other processes of its user. Before the fix a
//! `kill -ABRT` left an 80 MB core holding the HMK and released keys.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::cli::BIN;
use support::mount::wait_for;

/// Core files in `dir` (core_pattern `core`, with or without the pid).
fn cores(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n == "core" || n.starts_with("core."))
        .collect()
}

fn wait_gone(child: &mut Child) {
    let until = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < until, "the process did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn abort(pid: u32) {
    let ok = Command::new("kill")
        .args(["-ABRT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Kills the daemon and lazily unmounts whatever it left, passed or not.
struct Guard {
    child: Child,
    mnt: std::path::PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

#[test]
fn an_aborted_daemon_leaves_no_core_and_says_it_is_not_dumpable() {
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    assert!(
        !pattern.starts_with('|'),
        "core_pattern pipes cores to {pattern}: this test needs plain core files to see them"
    );
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();

    // Control: in this environment an ordinary process does leave a core.
    let mut control = Command::new("bash")
        .arg("-c")
        .arg("ulimit -c unlimited && exec sleep 30")
        .current_dir(&cwd)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    abort(control.id());
    wait_gone(&mut control);
    let control_cores = cores(&cwd);
    assert!(
        !control_cores.is_empty(),
        "an aborted `sleep` left no core here (core_pattern {pattern:?}): the test could not see a core either way"
    );
    for c in control_cores {
        std::fs::remove_file(cwd.join(c)).unwrap();
    }

    // The daemon, started the same way, with a key unwrapped and handed out.
    let data = dir.path().join("data");
    let mnt = dir.path().join("mnt");
    kmsfs::store::init(&data, Default::default()).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let child = Command::new("bash")
        .arg("-c")
        .arg(r#"ulimit -c unlimited && exec "$0" mount --data-dir "$1" "$2""#)
        .arg(BIN)
        .arg(&data)
        .arg(&mnt)
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut daemon = Guard {
        child,
        mnt: mnt.clone(),
    };
    wait_for(&mnt.join(".status"), true);
    let out = Command::new("bash")
        .arg("-c")
        .arg("mkdir pool pool/k && echo active > pool/k/state && cat pool/k/key >/dev/null && cat .status")
        .current_dir(&mnt)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["hardening"]["dumpable"], false, "{status}");
    assert_eq!(status["hardening"]["core_limit"], 0, "{status}");
    // Root: the daemon's memory is locked, so no key ever reaches swap.
    assert_eq!(status["hardening"]["memory_locked"], true, "{status}");
    let vm = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id())).unwrap();
    let locked = vm.lines().find(|l| l.starts_with("VmLck:")).unwrap();
    assert!(!locked.contains(" 0 kB"), "{locked}");
    // Seen from outside too: the shell's `ulimit -c unlimited` is undone.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.child.id())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert!(core.split_whitespace().nth(4) == Some("0"), "{core}");
    abort(daemon.child.id());
    wait_gone(&mut daemon.child);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cores(&cwd), Vec::<String>::new(), "the daemon left a core");
}
