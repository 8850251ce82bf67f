//! `kmsfs mount` as an administrator runs it: serves until SIGTERM, then unmounts and exits 0;
//! a second mount of the same data directory is refused with a clear message.

mod support;

use std::time::{Duration, Instant};

use support::daemon::{mount_refused, Daemon};
use support::mount::open_kms;

#[test]
fn mount_serves_until_sigterm_and_refuses_a_second_mount() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mnt = dir.path().join("mnt");
    // Neither the data directory nor the mount point exists: `--init` and mount make them.
    let daemon = Daemon::start_init(&data, &mnt);
    std::fs::create_dir(mnt.join("pool")).unwrap();

    let msg = mount_refused(&data, &dir.path().join("mnt2"));
    assert!(msg.contains("in use"), "{msg}");

    // SIGTERM: the daemon must exit 0 (within 10 s) and leave no mount behind.
    let sent = Instant::now();
    daemon.stop();
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "kmsfs mount did not exit after SIGTERM"
    );
    assert!(!mnt.join(".status").exists(), "still mounted");
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(mnt.to_str().unwrap()), "{mounts}");
    // The change was kept and the keystore released.
    let kms = open_kms(&data);
    assert!(kms.read().group_by_name("pool").is_some());
}

/// `.status` names the data directory as an absolute path, so a script run from another
/// directory (cron's) checks the right one: `--data-dir` given relative to the daemon's
/// working directory used to show up relative, and `examples/backup.sh` refused to copy.
#[test]
fn status_names_the_data_directory_absolutely_for_scripts_run_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mnt = dir.path().join("mnt");
    kmsfs::store::init(&data, Default::default()).unwrap();
    // Relative to the daemon's working directory (the test's, the package root).
    let cwd = std::env::current_dir().unwrap();
    let ups = cwd.components().count() - 1;
    let relative =
        std::path::PathBuf::from("../".repeat(ups)).join(data.strip_prefix("/").unwrap());
    assert!(relative.is_relative());
    let daemon = Daemon::start(&relative, &mnt);
    let status = daemon.json(".status");
    let canonical = data.canonicalize().unwrap();
    assert_eq!(status["data_dir"], canonical.to_str().unwrap());
    // The cron-style backup from `/` now finds the mount serving the directory it copies.
    let backups = dir.path().join("backups");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/backup.sh");
    let out = std::process::Command::new(&script)
        .arg(&mnt)
        .arg(&canonical)
        .arg(&backups)
        .current_dir("/")
        .env("PATH", support::cli::path_with_kmsfs())
        .env("KMSFS_KEYS_DIR", "none")
        .output()
        .unwrap();
    support::cli::ok("backup.sh from /", out);
    daemon.stop();
}
