//! `kmsfs::fs::mount` serves until SIGTERM, then unmounts cleanly and returns Ok. Alone in its
//! test binary: the signal goes to the whole process.

mod support;

use std::time::Duration;

use kmsfs::fs::MountOptions;
use support::mount::{open_kms, wait_for};

/// mount() installs process-wide signal handlers: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn sigterm_unmounts_cleanly() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mnt = dir.path().join("mnt");
    kmsfs::store::init(&data, Default::default()).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let kms = open_kms(&data);
    let served = {
        let mnt = mnt.clone();
        std::thread::spawn(move || kmsfs::fs::mount(kms, &mnt, &MountOptions::default()))
    };
    wait_for(&mnt.join(".status"), true);
    std::fs::create_dir(mnt.join("pool")).unwrap();
    // SIGHUP (a closed terminal, logrotate) must not kill a serving daemon. Without a
    // handler it would end this whole test process.
    // SAFETY: kill(2) on our own pid; mount() installed a handler for SIGHUP.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!served.is_finished(), "SIGHUP ended the mount");
    std::fs::create_dir(mnt.join("after-hup")).unwrap();
    // SAFETY: kill(2) on our own pid; mount() installed a handler for SIGTERM.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGTERM) }, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !served.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "mount() did not return after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    served
        .join()
        .unwrap()
        .expect("mount() returns Ok after a signal");
    assert!(!mnt.join(".status").exists(), "unmounted");
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(mnt.to_str().unwrap()), "{mounts}");
    // The keystore was released and kept the change.
    let kms = open_kms(&data);
    assert!(kms.read().group_by_name("pool").is_some());
}

#[test]
fn external_umount_ends_mount_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mnt = dir.path().join("mnt");
    kmsfs::store::init(&data, Default::default()).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let kms = open_kms(&data);
    let served = {
        let mnt = mnt.clone();
        std::thread::spawn(move || kmsfs::fs::mount(kms, &mnt, &MountOptions::default()))
    };
    wait_for(&mnt.join(".status"), true);
    let status = std::process::Command::new("umount")
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(status.success());
    served
        .join()
        .unwrap()
        .expect("mount() returns Ok after umount");
    // A new mount at the same path survives the old session's end (no second unmount).
    let kms = open_kms(&data);
    let session = kmsfs::fs::spawn(kms, &mnt, &MountOptions::default()).unwrap();
    wait_for(&mnt.join(".status"), true);
    std::thread::sleep(Duration::from_millis(200));
    assert!(mnt.join(".status").exists());
    session.umount_and_join().unwrap();
}
