//! The lifecycle through a real mount: every row of the contract's transition table through
//! `state`, deletion by rmdir, the one-active switch, and key access per state.

mod support;

use std::io::Write;
use support::cli::errno;
use support::keystore::path_to;
use support::mount::Mounted;

const STATES: [&str; 5] = ["prelive", "active", "inactive", "deprecated", "terminated"];

/// The contract's table: (from, to) pairs that are allowed.
const ALLOWED: [(&str, &str); 7] = [
    ("prelive", "active"),
    ("active", "inactive"),
    ("inactive", "active"),
    ("inactive", "deprecated"),
    ("deprecated", "inactive"),
    ("deprecated", "terminated"),
    ("terminated", "deprecated"),
];

/// A fresh group with one record brought to `state`; returns the record's relative path.
fn record_in(m: &Mounted, group: &str, state: &str) -> String {
    std::fs::create_dir(m.p(group)).unwrap();
    let rec = format!("{group}/k");
    std::fs::create_dir(m.p(&rec)).unwrap();
    for step in path_to(state) {
        m.write(&format!("{rec}/state"), step).unwrap();
    }
    assert_eq!(m.state(&rec), state);
    rec
}

#[test]
fn every_transition_of_the_table() {
    let m = Mounted::new();
    for (i, from) in STATES.iter().enumerate() {
        for (j, to) in STATES.iter().enumerate() {
            let rec = record_in(&m, &format!("g{i}{j}"), from);
            let before = m.read(&format!("{rec}/record.json"));
            let result = m.write(&format!("{rec}/state"), &format!("{to}\n"));
            if from == to {
                assert!(result.is_ok(), "{from} -> {to}: repeating a state succeeds");
                assert_eq!(m.read(&format!("{rec}/record.json")), before);
            } else if ALLOWED.contains(&(from, to)) {
                assert!(
                    result.is_ok(),
                    "{from} -> {to} should be allowed: {result:?}"
                );
                assert_eq!(m.state(&rec), *to);
            } else {
                assert_eq!(errno(result), libc::EPERM, "{from} -> {to}");
                assert_eq!(m.state(&rec), *from, "a refused move changes nothing");
                assert_eq!(m.read(&format!("{rec}/record.json")), before);
            }
        }
    }
}

#[test]
fn the_table_through_the_shell() {
    let m = Mounted::new();
    m.bash_ok("mkdir pool pool/k1 && echo active > pool/k1/state");
    let err = m.bash_err("echo prelive > pool/k1/state");
    assert!(err.contains("Operation not permitted"), "{err}");
    let err = m.bash_err("echo terminated > pool/k1/state");
    assert!(err.contains("Operation not permitted"), "{err}");
    m.bash_ok("echo inactive > pool/k1/state && echo deprecated > pool/k1/state");
    m.bash_ok("echo terminated > pool/k1/state && rmdir pool/k1");
    assert!(!m.p("pool/k1").exists());
}

#[test]
fn state_words_are_forgiving_but_unknown_ones_are_einval() {
    let m = Mounted::new();
    m.bash_ok("mkdir pool pool/a pool/b pool/c pool/d");
    // No newline, uppercase, blanks, and `>>` (a write at a non-zero offset).
    m.bash_ok("printf active > pool/a/state");
    assert_eq!(m.state("pool/a"), "active");
    m.bash_ok("echo '  ACTIVE  ' > pool/b/state");
    assert_eq!(m.state("pool/b"), "active");
    assert_eq!(m.state("pool/a"), "inactive", "b's activation demoted a");
    m.bash_ok("echo Deprecated >> pool/a/state");
    assert_eq!(m.state("pool/a"), "deprecated");
    // Unknown words: EINVAL from the write itself.
    assert_eq!(errno(m.write("pool/c/state", "activ\n")), libc::EINVAL);
    assert_eq!(errno(m.write("pool/c/state", "\n")), libc::EINVAL);
    assert_eq!(errno(m.write("pool/c/state", "active now")), libc::EINVAL);
    let err = m.bash_err("echo bogus > pool/c/state");
    assert!(err.contains("Invalid argument"), "{err}");
    assert_eq!(m.state("pool/c"), "prelive");
    // One command per write, whatever the offset: two writes on one open file.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.p("pool/d/state"))
        .unwrap();
    f.write_all(b"active\n").unwrap();
    f.write_all(b"inactive\n").unwrap();
    drop(f);
    assert_eq!(m.state("pool/d"), "inactive");
}

#[test]
fn one_active_switch_is_seen_at_once() {
    let m = Mounted::new();
    m.bash_ok("mkdir pool pool/k1 pool/k2 && echo active > pool/k1/state");
    assert_eq!(
        std::fs::read_link(m.p("pool/.active")).unwrap(),
        std::path::Path::new("k1")
    );
    // Read k1's files once, so that any cache would hold the old values.
    assert_eq!(m.state("pool/k1"), "active");
    assert_eq!(m.json("pool/k1/record.json")["state"], "active");
    m.write("pool/k2/state", "active").unwrap();
    assert_eq!(
        std::fs::read_link(m.p("pool/.active")).unwrap(),
        std::path::Path::new("k2")
    );
    assert_eq!(m.state("pool/k1"), "inactive");
    assert_eq!(m.read("pool/k1/state"), "inactive\n", "no stale size");
    assert_eq!(m.json("pool/k1/record.json")["state"], "inactive");
    assert_eq!(m.json("pool/.group.json")["active"], "k2");
    // With jq, as a script would check it.
    let out = m.bash_ok("jq -r .state pool/k1/record.json; jq -r .active pool/.group.json");
    assert_eq!(out, "inactive\nk2\n");
    // Deactivating leaves no active record: .active disappears at once.
    m.write("pool/k2/state", "inactive").unwrap();
    assert!(std::fs::symlink_metadata(m.p("pool/.active")).is_err());
    assert_eq!(
        m.json("pool/.group.json")["active"],
        serde_json::Value::Null
    );
    assert!(!m.bash_ok("ls -A pool").lines().any(|l| l == ".active"));
}

#[test]
fn rmdir_deletes_only_prelive_and_terminated_records() {
    let m = Mounted::new();
    for (i, state) in STATES.iter().enumerate() {
        let rec = record_in(&m, &format!("g{i}"), state);
        let result = std::fs::remove_dir(m.p(&rec));
        if *state == "prelive" || *state == "terminated" {
            assert!(result.is_ok(), "{state}: {result:?}");
            assert!(!m.p(&rec).exists());
        } else {
            assert_eq!(errno(result), libc::EPERM, "{state}");
            assert!(m.p(&rec).exists());
        }
    }
}

#[test]
fn key_is_readable_only_while_active_or_inactive() {
    let m = Mounted::new();
    for (i, state) in STATES.iter().enumerate() {
        let rec = record_in(&m, &format!("g{i}"), state);
        let key = std::fs::read(m.p(&format!("{rec}/key")));
        if *state == "active" || *state == "inactive" {
            let key = key.unwrap();
            assert_eq!(key.len(), 32, "AES_256 by default");
        } else {
            // Root ignores the 0400 mode; the state gate in open() does not.
            assert_eq!(errno(key), libc::EACCES, "{state}");
        }
    }
    // The key's length follows the group's cipher.
    m.bash_ok("mkdir small && echo aes_128 > small/.cipher && mkdir small/k && echo active > small/k/state");
    assert_eq!(std::fs::read(m.p("small/k/key")).unwrap().len(), 16);
    m.bash_ok(
        "mkdir mid && echo AES_192 > mid/.cipher && mkdir mid/k && echo active > mid/k/state",
    );
    assert_eq!(std::fs::read(m.p("mid/k/key")).unwrap().len(), 24);
    let err = m.bash_err("mkdir p && mkdir p/k && cat p/k/key");
    assert!(err.contains("Permission denied"), "{err}");
    // The same bytes every time, and after the record goes inactive.
    m.bash_ok("mkdir q && mkdir q/k && echo active > q/k/state");
    let first = std::fs::read(m.p("q/k/key")).unwrap();
    m.write("q/k/state", "inactive").unwrap();
    assert_eq!(std::fs::read(m.p("q/k/key")).unwrap(), first);
    m.write("q/k/state", "deprecated").unwrap();
    assert_eq!(errno(std::fs::read(m.p("q/k/key"))), libc::EACCES);
}

/// `ls -l` shows what `cat` would give: the key's length while it can be read, 0 otherwise;
/// and `cat key` right after an activation reads the whole key (its size is never cached).
#[test]
fn a_key_shows_its_size_only_while_it_can_be_read() {
    let m = Mounted::new();
    let out = m.bash_ok(
        r#"set -e
mkdir pool pool/k
stat -c %s pool/k/key
for i in $(seq 20); do
    echo active > pool/k/state
    head -c 64 pool/k/key | wc -c
    echo inactive > pool/k/state
    echo deprecated > pool/k/state
    stat -c %s pool/k/key
    echo inactive > pool/k/state
done
"#,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "prelive: {out}");
    for pair in lines[1..].chunks(2) {
        assert_eq!(pair, ["32", "0"], "{out}");
    }
    assert_eq!(lines.len(), 41);
}
