//! The audit trail through a real `kmsfs mount`: every key open (allowed or refused), every
//! change and every refusal is one line, written before the answer, never holding a key or a
//! description; the log verifies; with its file system full the daemon fails closed for key
//! reads and changes, keeps serving metadata and unquiesce, and resumes by itself; after
//! logrotate's rename and a SIGHUP the chain continues in the new file.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::cli::{kmsfs, ok};
use support::daemon::Daemon;

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn find<'a>(
    lines: &'a [serde_json::Value],
    op: &str,
    result: &str,
) -> Option<&'a serde_json::Value> {
    lines
        .iter()
        .rev()
        .find(|l| l["operation"] == op && l["result"] == result)
}

fn verify(data: &Path, files: &[PathBuf]) -> String {
    let mut args = vec![
        "audit".to_string(),
        "verify".into(),
        "--data-dir".into(),
        data.display().to_string(),
    ];
    args.extend(files.iter().map(|f| f.display().to_string()));
    ok("kmsfs audit verify", kmsfs(&args))
}

#[test]
fn every_key_read_change_and_refusal_is_one_line_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = Daemon::start_init(&data, &dir.path().join("mnt"));
    let out = d.sh(r#"mkdir pool pool/k1
echo "secret notes" > pool/k1/description
cat pool/k1/key                     # refused: prelive
echo active > pool/k1/state
cat pool/k1/key > /dev/null         # allowed
echo terminated > pool/k1/state     # refused by the lifecycle
echo x > .status                    # refused by the mount itself
true"#);
    assert!(out.status.success(), "{out:?}");
    let tag = d.json("pool/k1/record.json")["tag"]
        .as_str()
        .unwrap()
        .to_string();
    let key = std::fs::read(d.p("pool/k1/key")).unwrap();
    let log = data.join("audit.log");
    let all = lines(&log);

    let refused = find(&all, "open key", "refused").expect("the refused key read");
    assert_eq!(refused["group"], "pool");
    assert_eq!(refused["record"], "k1");
    assert_eq!(refused["key_tag"], tag.as_str());
    assert_eq!(refused["process"], "cat");
    assert!(
        refused["exe"].as_str().unwrap().ends_with("/cat"),
        "{refused}"
    );
    assert_eq!(refused["uid"], 0);
    assert!(refused["pid"].as_u64().unwrap() > 0);
    assert!(refused["reason"].as_str().unwrap().contains("prelive"));
    assert!(find(&all, "open key", "allowed").is_some(), "{all:?}");
    for op in [
        "create group",
        "create record",
        "describe record",
        "set state active",
    ] {
        assert!(find(&all, op, "allowed").is_some(), "{op}: {all:?}");
    }
    assert!(find(&all, "set state terminated", "refused").is_some());
    let open = find(&all, "open", "refused").expect("the mount's own refusal");
    assert!(
        open["reason"].as_str().unwrap().contains(".status"),
        "{open}"
    );
    // Never a key, a description or anything that looks like one.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("secret notes"));
    assert!(!text.contains(&hex::encode(&key)));
    // The owner's view through the mount, and .status.
    assert_eq!(d.read(".audit"), text);
    assert_eq!(d.json(".status")["audit"]["writable"], true);
    let mode = std::fs::metadata(&log).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    // The chain and the MACs hold, and a removed line is found.
    verify(&data, std::slice::from_ref(&log));
    d.stop();
    let kept: Vec<String> = text.lines().map(String::from).collect();
    let edited = dir.path().join("edited.log");
    let without: Vec<&str> = kept
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, l)| l.as_str())
        .collect();
    std::fs::write(&edited, without.join("\n") + "\n").unwrap();
    let out = kmsfs([
        "audit",
        "verify",
        "--data-dir",
        data.to_str().unwrap(),
        edited.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("edited.log:3"),
        "{out:?}"
    );
}

/// A small tmpfs for the audit log, unmounted at the end whatever happens.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: PathBuf) -> Tmpfs {
        std::fs::create_dir_all(&path).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success(), "cannot mount a tmpfs at {}", path.display());
        Tmpfs(path)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_key_reads_and_changes_closed_and_service_resumes_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fs = Tmpfs::mount(dir.path().join("auditfs"));
    let log = fs.0.join("audit.log");
    let d = Daemon::start_with(
        &data,
        &dir.path().join("mnt"),
        &["--init", "--audit-log", log.to_str().unwrap()],
    );
    d.sh_ok("mkdir pool pool/k1 && echo active > pool/k1/state && echo quiesce > .quiesce");
    // Fill the file system.
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1k", "count=1024"])
        .arg(format!("of={}", fs.0.join("fill").display()))
        .output()
        .unwrap();
    // Key reads and changes are refused with EIO (once the log's last page is full: tmpfs
    // takes appends into a partly used page even when it has no free page left)...
    let mut reads = 0;
    let err = loop {
        let out = d.sh("cat pool/k1/key > /dev/null");
        if !out.status.success() {
            break String::from_utf8_lossy(&out.stderr).into_owned();
        }
        reads += 1;
        assert!(
            reads < 100,
            "100 key reads were logged on a full file system"
        );
    };
    assert!(err.contains("Input/output error"), "{err}");
    // ...metadata, listings, .status and unquiesce keep working.
    d.sh_ok("ls -l pool && cat pool/k1/record.json .quiesce >/dev/null");
    let status = d.json(".status");
    assert_eq!(status["audit"]["writable"], false, "{status}");
    d.sh_ok("echo unquiesce > .quiesce");
    let err = d.sh_err("echo inactive > pool/k1/state");
    assert!(err.contains("Input/output error"), "{err}");
    let err = d.sh_err("mkdir pool/k2");
    assert!(err.contains("Input/output error"), "{err}");
    let err = d.sh_err("echo quiesce > .quiesce");
    assert!(err.contains("Input/output error"), "{err}");
    assert_eq!(d.state("pool/k1"), "active");
    let last = d.sh_ok("tail -n1 .errors");
    assert!(last.contains("audit log"), "{last}");
    // Room again: service resumes without a restart, and the log has no partial line.
    std::fs::remove_file(fs.0.join("fill")).unwrap();
    assert_eq!(std::fs::read(d.p("pool/k1/key")).unwrap().len(), 32);
    d.sh_ok("echo inactive > pool/k1/state");
    assert_eq!(d.json(".status")["audit"]["writable"], true);
    verify(&data, std::slice::from_ref(&log));
}

trait DaemonExt {
    fn state(&self, rel: &str) -> String;
}

impl DaemonExt for Daemon {
    fn state(&self, rel: &str) -> String {
        self.read(&format!("{rel}/state")).trim_end().to_string()
    }
}

#[test]
fn after_logrotate_and_sighup_the_chain_continues_in_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = Daemon::start_init(&data, &dir.path().join("mnt"));
    d.sh_ok("mkdir pool");
    let log = data.join("audit.log");
    let old = data.join("audit.log.1");
    // What logrotate does without copytruncate: rename, then postrotate's SIGHUP.
    std::fs::rename(&log, &old).unwrap();
    let pid = std::fs::read_to_string(data.join("kmsfs.lock")).unwrap();
    let st = Command::new("kill")
        .args(["-HUP", pid.trim()])
        .status()
        .unwrap();
    assert!(st.success());
    let until = Instant::now() + Duration::from_secs(10);
    while !d.log_text().contains("reopened the audit log") {
        assert!(Instant::now() < until, "no reopen:\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    d.sh_ok("mkdir pool/k1 && echo active > pool/k1/state");
    assert!(log.exists(), "a new audit.log");
    assert!(find(&lines(&log), "set state active", "allowed").is_some());
    assert!(find(&lines(&old), "create group", "allowed").is_some());
    // One chain over both files, in order: the new file starts where the old one ended.
    verify(&data, &[old.clone(), log.clone()]);
    let first_new = &lines(&log)[0];
    let last_old = lines(&old).last().unwrap().clone();
    assert_eq!(
        first_new["seq"].as_u64().unwrap(),
        last_old["seq"].as_u64().unwrap() + 1
    );
    // In the wrong order they do not verify.
    let swapped = kmsfs([
        "audit",
        "verify",
        "--data-dir",
        data.to_str().unwrap(),
        log.to_str().unwrap(),
        old.to_str().unwrap(),
    ]);
    assert!(!swapped.status.success(), "{swapped:?}");
    d.stop();
}
