//! Automatic rotation through a real mount, with short periods so that nothing waits long:
//! `echo 2s > GROUP/.rotation` and the daemon replaces the active record by itself, once per
//! period, never while quiesced, once (not once per missed period) after downtime; the
//! period survives a remount; retirement deprecates inactive records and goes no further.

mod support;

use std::time::{Duration, Instant};

use support::mount::Mounted;

/// The active record's name, if any.
fn active(m: &Mounted, group: &str) -> Option<String> {
    std::fs::read_link(m.p(&format!("{group}/.active")))
        .ok()
        .map(|t| t.to_string_lossy().into_owned())
}

fn records(m: &Mounted, group: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(m.p(group))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// Polls until `pred` holds, or fails after `within`.
fn wait_until(what: &str, within: Duration, mut pred: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !pred() {
        assert!(Instant::now() < until, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pool_with_active_k1(m: &Mounted) {
    m.bash_ok(r#"mkdir pool && jq -n '{name: "k1", state: "active"}' > pool/.create"#);
    assert_eq!(active(m, "pool").as_deref(), Some("k1"));
}

#[test]
fn rotation_runs_by_itself_once_per_period_and_waits_while_quiesced() {
    let m = Mounted::new();
    pool_with_active_k1(&m);
    m.bash_ok("echo 2s > pool/.rotation");
    let shown = m.read("pool/.rotation");
    assert!(shown.starts_with("period 2s\nnext "), "{shown}");
    wait_until("the first rotation", Duration::from_secs(10), || {
        active(&m, "pool").is_some_and(|a| a != "k1")
    });
    let first = active(&m, "pool").unwrap();
    assert!(first.starts_with("rot-"), "{first}");
    assert_eq!(m.state("pool/k1"), "inactive");
    let rec = m.json(&format!("pool/{first}/record.json"));
    assert_eq!(rec["state"], "active");
    assert_eq!(rec["description"], "made by rotation; replaced \"k1\"");
    assert_eq!(m.json("pool/.group.json")["rotation"], "2s");
    // The new key is a real key of the group's length.
    assert_eq!(
        std::fs::read(m.p(&format!("pool/{first}/key")))
            .unwrap()
            .len(),
        32
    );

    // Quiesced: due rotations wait, and nothing in the data directory changes.
    m.bash_ok("echo quiesce > .quiesce");
    let frozen = records(&m, "pool");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(records(&m, "pool"), frozen, "no rotation while quiesced");
    assert_eq!(active(&m, "pool").as_deref(), Some(first.as_str()));
    m.bash_ok("echo unquiesce > .quiesce");
    // Due since long before: caught up with exactly one rotation.
    wait_until(
        "the rotation after the freeze",
        Duration::from_secs(5),
        || active(&m, "pool").is_some_and(|a| a != first),
    );
    let after = records(&m, "pool");
    assert_eq!(after.len(), frozen.len() + 1, "{after:?}");

    // Off: no more rotations.
    m.bash_ok("echo off > pool/.rotation");
    let stopped = records(&m, "pool");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(records(&m, "pool"), stopped);
    assert_eq!(m.read("pool/.rotation"), "period off\nnext -\nretire off\n");
}

#[test]
fn after_downtime_rotation_catches_up_once_and_the_period_survives() {
    let mut m = Mounted::new();
    pool_with_active_k1(&m);
    m.bash_ok("echo 3s > pool/.rotation");
    // Down for more than two periods.
    m.unmount();
    std::thread::sleep(Duration::from_secs(7));
    m.mount();
    assert_eq!(m.json("pool/.group.json")["rotation"], "3s");
    wait_until("the catch-up rotation", Duration::from_secs(5), || {
        active(&m, "pool").is_some_and(|a| a != "k1")
    });
    // Within the new record's first period nothing else happens.
    std::thread::sleep(Duration::from_millis(1500));
    let names = records(&m, "pool");
    assert_eq!(
        names.len(),
        2,
        "one rotation, not one per missed period: {names:?}"
    );
    // The keystore on disk says format 2 now.
    assert_eq!(m.json(".status")["format_version"], 2);
}

#[test]
fn rotate_now_and_retirement_through_the_rotation_file() {
    let m = Mounted::new();
    pool_with_active_k1(&m);
    m.bash_ok("mkdir pool/pre && echo rotate > pool/.rotation");
    let second = active(&m, "pool").unwrap();
    assert!(second.starts_with("rot-"));
    assert_eq!(m.state("pool/k1"), "inactive");
    // Retirement: inactive records become deprecated after the period, nothing further;
    // prelive and active records are left alone.
    m.bash_ok("echo 'retire 2s' > pool/.rotation");
    assert_eq!(m.json("pool/.group.json")["retire_after"], "2s");
    wait_until("k1 retired", Duration::from_secs(10), || {
        m.state("pool/k1") == "deprecated"
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(m.state("pool/k1"), "deprecated");
    assert_eq!(m.state("pool/pre"), "prelive");
    assert_eq!(m.state(&format!("pool/{second}")), "active");
    // Bad input is refused by the write itself and changes nothing.
    let err = m.bash_err("echo 90 > pool/.rotation");
    assert!(err.contains("Invalid argument"), "{err}");
    let err = m.bash_err("echo 'rotate now' > pool/.rotation");
    assert!(err.contains("Invalid argument"), "{err}");
    assert_eq!(m.read("pool/.rotation"), "period off\nnext -\nretire 2s\n");
    // Quiesced, `rotate` is EROFS.
    m.bash_ok("echo quiesce > .quiesce");
    let err = m.bash_err("echo rotate > pool/.rotation");
    assert!(err.contains("Read-only file system"), "{err}");
    m.bash_ok("echo unquiesce > .quiesce");
}
