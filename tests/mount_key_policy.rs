//! `--key-policy`: only the executables it names, by path and SHA-256, may open `key` files,
//! checked at every open; a shell of the same user, or the allowed path with other bytes, is
//! refused with EACCES, and the refusal is audited with the executable.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use sha2::{Digest, Sha256};
use support::daemon::Daemon;

/// Runs a program as an administrator would, without the test runner's library path (which
/// the policy would rightly refuse).
fn run(program: &Path, args: &[&Path]) -> Output {
    Command::new(program)
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("LD_PRELOAD")
        .output()
        .unwrap()
}

#[test]
fn only_the_allowed_executable_reads_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let reader = dir.path().join("backup-reader");
    std::fs::copy("/usr/bin/cat", &reader).unwrap();
    let hash = hex::encode(Sha256::digest(std::fs::read(&reader).unwrap()));
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        format!(
            r#"{{"allow": [{{"path": "{}", "sha256": "{hash}"}}]}}"#,
            reader.display()
        ),
    )
    .unwrap();
    let d = Daemon::start_with(
        &data,
        &dir.path().join("mnt"),
        &["--init", "--key-policy", policy.to_str().unwrap()],
    );
    d.sh_ok("mkdir pool pool/k1 && echo active > pool/k1/state");
    let key = d.p("pool/k1/key");

    // The allowed program reads the key.
    let out = run(&reader, &[&key]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout.len(), 32);
    // The same account's shell tools do not.
    let out = run(Path::new("/usr/bin/cat"), &[&key]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"read -r -n 4 x < "$0""#)
        .arg(&key)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(!out.status.success(), "bash's own read: {out:?}");
    // Metadata stays open to everyone the modes allow.
    d.sh_ok("cat pool/k1/record.json pool/k1/state > /dev/null");
    // The refusal names the executable, in .errors and in the audit log.
    let last = d.sh_ok("tail -n 1 .errors");
    assert!(
        last.contains("/usr/bin/bash") || last.contains("/bin/bash"),
        "{last}"
    );
    let audit = std::fs::read_to_string(data.join("audit.log")).unwrap();
    let refused: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &serde_json::Value| l["operation"] == "open key" && l["result"] == "refused")
        .collect();
    assert!(
        refused
            .iter()
            .any(|l| l["exe"] == "/usr/bin/cat"
                && l["reason"].as_str().unwrap().contains("key policy")),
        "{refused:?}"
    );

    // The allowed path with other bytes (a program swapped in) is refused.
    std::fs::remove_file(&reader).unwrap();
    std::fs::copy("/usr/bin/tac", &reader).unwrap();
    let out = run(&reader, &[&key]);
    assert!(!out.status.success(), "{out:?}");
    // A preloaded library in an allowed program is refused too.
    std::fs::remove_file(&reader).unwrap();
    std::fs::copy("/usr/bin/cat", &reader).unwrap();
    let out = Command::new(&reader)
        .arg(&key)
        .env("LD_PRELOAD", "")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(run(&reader, &[&key]).stdout.len(), 32, "the original again");
    d.stop();
}

#[test]
fn a_bad_policy_file_is_refused_before_anything_is_mounted() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, r#"{"allow": [{"path": "cat", "sha256": "x"}]}"#).unwrap();
    let err = support::daemon::mount_refused_with(
        &dir.path().join("data"),
        &dir.path().join("mnt"),
        &["--init", "--key-policy", policy.to_str().unwrap()],
    );
    assert!(err.contains("key policy"), "{err}");
    assert!(!dir.path().join("data").exists(), "nothing was created");
}
