//! A change's audit line is made durable by the change's own fdatasync (one sync per change,
//! not two): KMS_DATA's frame carries every line the log has not synced yet, and a start after
//! a power cut puts back in the log what the cut took from its end. Counted with strace on the
//! real daemon; the power cut is simulated by cutting the log back to what was surely on disk.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::cli::{kmsfs, ok};
use support::daemon::Daemon;

fn daemon_pid(data: &Path) -> String {
    std::fs::read_to_string(data.join("kmsfs.lock"))
        .unwrap()
        .trim()
        .to_string()
}

/// strace attached to every thread of the daemon, counting the calls that reach the disk.
struct Syncs {
    child: Child,
    out: std::path::PathBuf,
}

impl Syncs {
    fn attach(pid: &str, out: &Path) -> Syncs {
        let mut child = Command::new("strace")
            .args([
                "-f",
                "-qq",
                "-e",
                "trace=fsync,fdatasync,sync_file_range,syncfs",
            ])
            .arg("-o")
            .arg(out)
            .args(["-p", pid])
            .stderr(Stdio::piped())
            .spawn()
            .expect("strace (Debian package strace) is needed by this test");
        // strace writes nothing until a call is traced: wait until it has stopped every
        // thread once (its tracees show up in /proc/PID/task/*/status as TracerPid).
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
            let all_traced = tasks.flatten().all(|t| {
                std::fs::read_to_string(t.path().join("status"))
                    .map(|s| !s.contains("TracerPid:\t0\n"))
                    .unwrap_or(true)
            });
            if all_traced {
                break;
            }
            if let Some(st) = child.try_wait().unwrap() {
                panic!("strace exited with {st} before attaching");
            }
            assert!(Instant::now() < until, "strace did not attach in 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Syncs {
            child,
            out: out.to_path_buf(),
        }
    }

    /// Detaches and returns the traced calls, one per line.
    fn finish(mut self) -> Vec<String> {
        // Let a call made just before this returns reach strace's output.
        std::thread::sleep(Duration::from_millis(200));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        self.child.wait().unwrap();
        std::fs::read_to_string(&self.out)
            .unwrap()
            .lines()
            .filter(|l| l.contains("sync"))
            .map(String::from)
            .collect()
    }
}

#[test]
fn a_change_costs_one_fdatasync_with_its_audit_line_and_a_key_read_none() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = Daemon::start_init(&data, &dir.path().join("mnt"));
    d.sh_ok("mkdir pool pool/k1");
    let pid = daemon_pid(&data);

    let syncs = Syncs::attach(&pid, &dir.path().join("strace.change"));
    d.sh_ok("echo active > pool/k1/state");
    let calls = syncs.finish();
    assert_eq!(calls.len(), 1, "one change, one sync: {calls:#?}");
    assert!(calls[0].contains("fdatasync("), "{calls:?}");

    let syncs = Syncs::attach(&pid, &dir.path().join("strace.read"));
    d.sh_ok("cat pool/k1/key > /dev/null");
    let calls = syncs.finish();
    assert!(calls.is_empty(), "a key read syncs nothing: {calls:#?}");

    // And the line is in the log, verified.
    let log = std::fs::read_to_string(data.join("audit.log")).unwrap();
    assert!(log.contains("\"set state active\""), "{log}");
    assert!(log.contains("\"open key\""), "{log}");
    ok(
        "kmsfs audit verify",
        kmsfs([
            "audit",
            "verify",
            "--data-dir",
            data.to_str().unwrap(),
            data.join("audit.log").to_str().unwrap(),
        ]),
    );
    d.stop();
}

#[test]
fn after_a_power_cut_takes_unsynced_lines_the_next_start_puts_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mnt = dir.path().join("mnt");
    let log = data.join("audit.log");
    let d = Daemon::start_init(&data, &mnt);
    d.sh_ok("mkdir pool && echo quiesce > .quiesce && echo unquiesce > .quiesce");
    // Quiesce syncs the log: what it holds now is surely on disk.
    let synced = std::fs::read(&log).unwrap();
    d.sh_ok(
        r#"mkdir pool/k1 pool/k2
cat pool/k1/key 2>/dev/null || true      # refused: prelive
echo active > pool/k1/state
cat pool/k1/key > /dev/null
echo "notes" > pool/k2/description
mv pool/k2 pool/k3
cat pool/k1/key > /dev/null              # after the last change: may be lost"#,
    );
    let before = std::fs::read_to_string(&log).unwrap();
    let mut d = d;
    d.crash();
    drop(d);
    // The power cut: nothing the log wrote since its last sync reached the disk.
    std::fs::write(&log, &synced).unwrap();

    let d = Daemon::start(&data, &mnt);
    let after = std::fs::read_to_string(&log).unwrap();
    // Every line up to the last change's is back, byte for byte; the read after it is not
    // (it was never durable anywhere: a key read is not synced).
    let lines: Vec<&str> = before.lines().collect();
    let last_change = lines
        .iter()
        .rposition(|l| l.contains("\"operation\":\"rename\""))
        .expect("the rename's line");
    let restored: Vec<&str> = after.lines().collect();
    assert_eq!(
        restored[..=last_change],
        lines[..=last_change],
        "the log after the restart:\n{after}"
    );
    assert!(
        d.log_text().contains("put back"),
        "the daemon says what it repaired:\n{}",
        d.log_text()
    );
    // The chain goes on from the restored lines, and verifies.
    d.sh_ok("echo inactive > pool/k1/state");
    d.stop();
    ok(
        "kmsfs audit verify",
        kmsfs([
            "audit",
            "verify",
            "--data-dir",
            data.to_str().unwrap(),
            data.join("audit.log").to_str().unwrap(),
        ]),
    );
    // A second start has nothing to put back.
    let d = Daemon::start(&data, &mnt);
    assert!(!d.log_text().contains("put back"), "{}", d.log_text());
    d.stop();
}
