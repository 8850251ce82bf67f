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
