//! `kmsfs mount` as an administrator runs it: serves until SIGTERM, then unmounts and exits 0;
//! a second mount of the same data directory is refused with a clear message.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn mount_serves_until_sigterm_and_refuses_a_second_mount() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mnt = dir.path().join("mnt");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_kmsfs"))
        .args(["mount", "--init", "--data-dir"])
        .arg(&data)
        .arg(&mnt)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kmsfs mount");
    common::wait_for(&mnt.join(".status"), true);
    std::fs::create_dir(mnt.join("pool")).unwrap();

    let other = dir.path().join("mnt2");
    let second = Command::new(env!("CARGO_BIN_EXE_kmsfs"))
        .args(["mount", "--data-dir"])
        .arg(&data)
        .arg(&other)
        .output()
        .unwrap();
    assert!(!second.status.success());
    let msg = String::from_utf8_lossy(&second.stderr);
    assert!(msg.contains("in use"), "{msg}");

    // SAFETY: kill(2) of the child we started.
    assert_eq!(unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = daemon.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "kmsfs mount did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    assert!(!mnt.join(".status").exists(), "still mounted");
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(mnt.to_str().unwrap()), "{mounts}");
    // The change was kept and the keystore released.
    let kms = common::open_kms(&data);
    assert!(kms.read().group_by_name("pool").is_some());
}
