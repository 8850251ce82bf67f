//! SIGKILL the daemon while a shell loop keeps changing the keystore through the mount; after
//! a remount, every change whose system call had returned is there.

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use support::cli::{ok, verify};
use support::daemon::Daemon;

#[test]
fn sigkill_of_the_daemon_loses_no_acknowledged_change() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mnt = tmp.path().join("mnt");
    let acks = tmp.path().join("acks");
    kmsfs::store::init(&data, Default::default()).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let mut daemon = Daemon::start(&data, &mnt);
    std::fs::create_dir(mnt.join("pool")).unwrap();
    for round in 0..4u64 {
        // Each line is written only after the change's system call returned success.
        let mut writer = Command::new("bash")
            .arg("-c")
            .arg(
                r#"i=0
                while :; do
                  r="r${ROUND}_$i"
                  mkdir "$M/pool/$r" 2>/dev/null || exit 0
                  echo "$r prelive" >> "$ACKS"
                  echo active > "$M/pool/$r/state" 2>/dev/null || exit 0
                  echo "$r active" >> "$ACKS"
                  i=$((i+1))
                done"#,
            )
            .env("M", &mnt)
            .env("ACKS", &acks)
            .env("ROUND", round.to_string())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(150 + 70 * round));
        // SIGKILL, reaped, and its dead mount detached.
        daemon.kill();
        writer.wait().unwrap();
        daemon = Daemon::start(&data, &mnt);

        let mut expected: HashMap<String, String> = HashMap::new();
        for line in std::fs::read_to_string(&acks).unwrap_or_default().lines() {
            let (name, state) = line.split_once(' ').unwrap();
            expected.insert(name.to_string(), state.to_string());
        }
        assert!(
            !expected.is_empty(),
            "round {round}: nothing was acknowledged"
        );
        let mut active = 0;
        for entry in std::fs::read_dir(mnt.join("pool")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.starts_with('.') {
                continue; // .group.json, .active, ...
            }
            let state =
                std::fs::read_to_string(mnt.join("pool").join(&name).join("state")).unwrap();
            active += usize::from(state.trim() == "active");
        }
        assert!(active <= 1, "round {round}: {active} active records");
        for (name, state) in &expected {
            let path = mnt.join("pool").join(name).join("state");
            let now = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("round {round}: acknowledged {name} is lost: {e}"));
            if state == "active" {
                // A later activation may have demoted it, never undone it.
                assert!(
                    matches!(now.trim(), "active" | "inactive"),
                    "round {round}: {name} was activated but is {now}"
                );
            }
        }
    }
    Command::new("umount").arg(&mnt).status().unwrap();
    let status = daemon.wait();
    assert!(
        status.success(),
        "the daemon exits 0 after umount: {status}"
    );
    ok("verify", verify(&data));
}
