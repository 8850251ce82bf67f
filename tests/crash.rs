//! Kills a writer with SIGKILL in the middle of its work, many times, and checks that the
//! keystore always loads and holds every change that was acknowledged before the kill.
//!
//! The test re-runs its own binary as the writer (selected by an environment variable), so
//! the kill lands in a real process at an arbitrary instant, possibly inside an fdatasync.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use kmsfs::service::Kms;
use kmsfs::store::{self, InitOptions};
use support::cli::{ok, verify};
use support::keystore::{group, record};

const CHILD_ENV: &str = "KMSFS_CRASH_CHILD_DIR";

/// The writer: creates records and changes states forever, printing each acknowledgement.
fn writer(dir: &Path) -> ! {
    let kms = Kms::open(dir).unwrap();
    let start = kms.read().record_count();
    let mut out = std::io::stdout();
    for i in start.. {
        // Created prelive, then activated (the parent made the group).
        let t = record(
            &kms,
            "pool",
            &format!("r{i}"),
            "active",
            &"x".repeat(i % 700),
        );
        use std::io::Write;
        writeln!(out, "ACK {i} {t}").unwrap();
        out.flush().unwrap();
    }
    unreachable!()
}

/// The tag in a writer's acknowledgement line (the test harness prints other lines too).
fn ack_tag(line: &str) -> Option<&str> {
    line.strip_prefix("ACK ")?
        .split_once(' ')
        .map(|(_, tag)| tag)
}

#[test]
fn sigkill_mid_write_loses_no_acknowledged_change() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        writer(Path::new(&dir));
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    store::init(&dir, InitOptions::default()).unwrap();
    group(&Kms::open(&dir).unwrap(), "pool");
    let mut acked: Vec<String> = Vec::new();
    for round in 0..12 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sigkill_mid_write_loses_no_acknowledged_change",
                "--nocapture",
            ])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Let it acknowledge a varying number of changes, then kill it without warning.
        let target = 5 + (round * 7) % 23;
        let mut seen = 0;
        while seen < target {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(tag) = ack_tag(&line) {
                acked.push(tag.to_string());
                seen += 1;
            }
        }
        std::thread::sleep(Duration::from_micros(137 * round as u64));
        child.kill().unwrap();
        // Anything printed before the kill was acknowledged too.
        for line in lines.map_while(Result::ok) {
            if let Some(tag) = ack_tag(&line) {
                acked.push(tag.to_string());
            }
        }
        child.wait().unwrap();
        assert!(seen > 0, "round {round}: the writer acknowledged nothing");

        let kms = Kms::open(&dir).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let ks = kms.read();
        ks.check_invariants().unwrap();
        for t in &acked {
            let tag = kmsfs::keystore::KeyTag::parse(t).unwrap();
            assert!(ks.record(&tag).is_some(), "round {round}: lost record {t}");
        }
        let g = ks.group_by_name("pool").unwrap();
        let active = ks
            .records_of(&g.tag, 0)
            .filter(|r| r.state.as_str() == "active")
            .count();
        assert!(active <= 1);
    }
    assert!(acked.len() >= 12 * 5);
    ok("verify", verify(&dir));
}
