//! Control files as the shell and scripts drive them: `.create`, descriptions, `.cipher`,
//! `.quiesce`, and `.errors` explaining every refusal.

mod support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use support::cli::errno;
use support::mount::Mounted;

/// Writes each piece with its own write() on one open file.
fn write_pieces(m: &Mounted, rel: &str, pieces: &[&[u8]]) -> Vec<std::io::Result<()>> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.p(rel))
        .unwrap();
    pieces.iter().map(|p| f.write_all(p)).collect()
}

/// Polls `.errors` until a line satisfies `pred` (release reaches the daemon after close()).
fn wait_for_error(m: &Mounted, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = m
            .read(".errors")
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| pred(v));
        if let Some(v) = found {
            return v;
        }
        assert!(Instant::now() < deadline, ".errors never got the line");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn create_makes_records_in_one_step() {
    let m = Mounted::new();
    m.bash_ok("mkdir pool");
    m.bash_ok(r#"echo '{"name": "k1", "state": "active", "description": "first"}' > pool/.create"#);
    assert_eq!(m.state("pool/k1"), "active");
    assert_eq!(m.read("pool/k1/description"), "first");
    assert_eq!(std::fs::read(m.p("pool/k1/key")).unwrap().len(), 32);
    // Created active: the current active record steps down in the same step.
    m.bash_ok(r#"jq -n '{name: "k2", state: "active"}' > pool/.create"#);
    assert_eq!(m.state("pool/k1"), "inactive");
    assert_eq!(
        std::fs::read_link(m.p("pool/.active")).unwrap(),
        std::path::Path::new("k2")
    );
    // Prelive by default.
    m.write("pool/.create", r#"{"name": "k3"}"#).unwrap();
    assert_eq!(m.state("pool/k3"), "prelive");
    // Refusals from the write itself.
    assert_eq!(
        errno(m.write("pool/.create", r#"{"name": "k3"}"#)),
        libc::EEXIST
    );
    assert_eq!(errno(m.write("pool/.create", "{\"name\": }")), libc::EINVAL);
    assert_eq!(errno(m.write("pool/.create", "name=k4")), libc::EINVAL);
    assert_eq!(
        errno(m.write("pool/.create", r#"{"name": "k4", "state": "inactive"}"#)),
        libc::EINVAL
    );
    assert_eq!(
        errno(m.write("pool/.create", r#"{"name": "k4", "colour": "red"}"#)),
        libc::EINVAL
    );
    assert_eq!(
        errno(m.write("pool/.create", r#"{"name": ".k4"}"#)),
        libc::EINVAL
    );
    let long = format!(r#"{{"name": "{}"}}"#, "k".repeat(256));
    assert_eq!(errno(m.write("pool/.create", &long)), libc::ENAMETOOLONG);
    let err = m.bash_err("echo '{\"name\": 12' > pool/.create; echo '{bad' > pool/.create");
    assert!(err.contains("Invalid argument"), "{err}");
    assert!(!m.p("pool/k4").exists());
    // Reading .create (as root may) shows nothing, so that cp -r and tar pass over it.
    assert_eq!(m.read("pool/.create"), "");
}

#[test]
fn create_accumulates_split_writes() {
    let m = Mounted::new();
    m.bash_ok("mkdir pool");
    let results = write_pieces(
        &m,
        "pool/.create",
        &[
            b"{\"name\": \"sp",
            b"lit\", \"state\"",
            b": \"active\", \"description\": \"a\\",
            b"\"b\"}",
            b"\n",
        ],
    );
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(m.state("pool/split"), "active");
    assert_eq!(m.read("pool/split/description"), "a\"b");
    // A large object from jq (written in several pieces by jq itself).
    let desc = "d".repeat(4000);
    m.bash_ok(&format!(
        r#"jq -n --arg d {desc} '{{name: "big", description: $d}}' > pool/.create"#
    ));
    assert_eq!(m.read("pool/big/description"), desc);
    // Two objects through one open file, one after the other.
    let results = write_pieces(
        &m,
        "pool/.create",
        &[b"{\"name\": \"one\"}\n", b"{\"name\": \"two\"}\n"],
    );
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert!(m.p("pool/one").is_dir() && m.p("pool/two").is_dir());
}

#[test]
fn create_left_incomplete_is_an_error_at_close() {
    let m = Mounted::new();
    m.bash_ok("mkdir pool");
    let results = write_pieces(&m, "pool/.create", &[b"{\"name\": \"half\", "]);
    assert!(results[0].is_ok());
    let line = wait_for_error(&m, |v| v["operation"] == "close");
    assert_eq!(line["errno"], "EINVAL");
    assert!(
        line["reason"].as_str().unwrap().contains("incomplete"),
        "{line}"
    );
    assert!(
        line["path"].as_str().unwrap().ends_with("/pool/.create"),
        "{line}"
    );
    assert!(!m.p("pool/half").exists());
}

#[test]
fn create_from_a_passphrase_and_recover_the_key() {
    let m = Mounted::new();
    m.bash_ok("mkdir pool");
    m.bash_ok(
        r#"jq -n '{name: "pk", state: "active", passphrase: "correct horse battery"}' > pool/.create"#,
    );
    let r = m.json("pool/pk/record.json");
    assert_eq!(r["passphrase_derived"], true);
    let salt = r["salt"].as_str().unwrap().to_string();
    let tag = r["tag"].as_str().unwrap().to_string();
    assert!(salt.len() >= 16 && salt.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(m.json("pool/.group.json").get("salt").is_none());
    let key = std::fs::read(m.p("pool/pk/key")).unwrap();
    // Retire and delete the record, then bring it back from passphrase, salt and tag.
    m.bash_ok("cd pool/pk && for s in inactive deprecated terminated; do echo $s > state; done");
    m.bash_ok("rmdir pool/pk");
    assert!(!m.p("pool/pk").exists());
    m.bash_ok(&format!(
        r#"jq -n --arg s {salt} --arg t {tag} '{{name: "pk", state: "active", passphrase: "correct horse battery", salt: $s, tag: $t}}' > pool/.create"#
    ));
    assert_eq!(std::fs::read(m.p("pool/pk/key")).unwrap(), key);
    assert_eq!(m.json("pool/pk/record.json")["tag"], tag.as_str());
    // A record without a passphrase has no salt in its metadata.
    m.bash_ok("mkdir pool/plain");
    assert!(m.json("pool/plain/record.json").get("salt").is_none());
}

#[test]
fn a_slow_create_does_not_stall_others() {
    let m = Mounted::new();
    m.bash_ok("mkdir pool");
    let create = m.p("pool/.create");
    let worker = std::thread::spawn(move || {
        std::fs::write(
            create,
            r#"{"name": "slow", "passphrase": "derive me slowly"}"#,
        )
    });
    // While the KDF runs in one request, others keep being answered.
    let mut answered_meanwhile = 0;
    while !worker.is_finished() {
        m.read(".status");
        std::fs::metadata(m.p("pool")).unwrap();
        answered_meanwhile += 1;
    }
    worker.join().unwrap().unwrap();
    assert!(
        answered_meanwhile >= 2,
        "only {answered_meanwhile} requests during the KDF"
    );
    assert!(m.p("pool/slow").is_dir());
}

#[test]
fn descriptions_are_small_files() {
    let m = Mounted::new();
    m.bash_ok("mkdir pool pool/k1");
    for rel in ["pool/k1/description", "pool/.description"] {
        m.bash_ok(&format!("echo hello > {rel}"));
        assert_eq!(m.read(rel), "hello\n");
        m.bash_ok(&format!("echo world >> {rel}"));
        assert_eq!(m.read(rel), "hello\nworld\n");
        m.bash_ok(&format!(
            "printf 'J' | dd of={rel} bs=1 seek=0 conv=notrunc status=none"
        ));
        assert_eq!(m.read(rel), "Jello\nworld\n");
        // Larger than 4 KiB: EFBIG from the write, and the refused edit changes nothing
        // (not even the truncation that `>` did first).
        let big = "x".repeat(5000);
        assert_eq!(errno(m.write(rel, &big)), libc::EFBIG, "{rel}");
        let err = m.bash_err(&format!("head -c 5000 /dev/zero | tr '\\0' y > {rel}"));
        assert!(err.contains("too large"), "{err}");
        assert_eq!(m.read(rel), "Jello\nworld\n");
        assert_eq!(m.last_error()["errno"], "EFBIG");
        m.write(rel, &"z".repeat(4096)).unwrap();
        assert_eq!(m.read(rel).len(), 4096);
        // Emptied without a write: committed at close (release reaches the daemon just
        // after close() returns).
        m.bash_ok(&format!(": > {rel}"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !m.read(rel).is_empty() {
            assert!(Instant::now() < deadline, "{rel} was not emptied");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    m.bash_ok("echo 'keys for the nightly backups' > pool/.description");
    assert_eq!(
        m.json("pool/.group.json")["description"],
        "keys for the nightly backups\n"
    );
    m.bash_ok("echo rotated > pool/k1/description");
    assert_eq!(m.json("pool/k1/record.json")["description"], "rotated\n");
}

#[test]
fn cipher_is_writable_only_while_the_group_is_empty() {
    let m = Mounted::new();
    m.bash_ok("mkdir pool");
    assert_eq!(m.read("pool/.cipher"), "AES_256\n");
    m.bash_ok("echo aes_128 > pool/.cipher");
    assert_eq!(m.read("pool/.cipher"), "AES_128\n");
    assert_eq!(errno(m.write("pool/.cipher", "AES_512")), libc::EINVAL);
    m.bash_ok("mkdir pool/k1");
    assert_eq!(errno(m.write("pool/.cipher", "AES_256\n")), libc::EPERM);
    // The same cipher again changes nothing and succeeds.
    m.write("pool/.cipher", "AES_128\n").unwrap();
    assert_eq!(m.json("pool/k1/record.json")["cipher"], "AES_128");
}

#[test]
fn errors_explain_every_refusal() {
    let m = Mounted::new();
    m.bash_ok("mkdir pool pool/k1");
    let err = m.bash_err("echo terminated > pool/k1/state");
    assert!(err.contains("Operation not permitted"), "{err}");
    let line = m.last_error();
    assert_eq!(line["errno"], "EPERM");
    assert_eq!(line["operation"], "write");
    assert_eq!(line["process"], "bash");
    assert_eq!(line["uid"], 0);
    assert!(line["pid"].as_u64().unwrap() > 0);
    assert!(
        line["path"].as_str().unwrap().ends_with("/pool/k1/state"),
        "{line}"
    );
    let reason = line["reason"].as_str().unwrap();
    assert!(
        reason.contains("prelive") && reason.contains("terminated"),
        "{reason}"
    );
    assert!(line["time"].as_str().unwrap().ends_with('Z'));
    // Each kind of refusal names its operation.
    m.bash_err("rmdir pool");
    assert_eq!(m.last_error()["operation"], "rmdir");
    assert_eq!(m.last_error()["errno"], "ENOTEMPTY");
    m.bash_err("mkdir .x");
    assert_eq!(m.last_error()["operation"], "mkdir");
    m.bash_err("cat pool/k1/key");
    assert_eq!(m.last_error()["operation"], "open");
    assert_eq!(m.last_error()["errno"], "EACCES");
    // `tail` answers "why did my echo fail?"; the ring keeps the last 100.
    for _ in 0..110 {
        let _ = m.write("pool/k1/state", "bogus");
    }
    let text = m.read(".errors");
    assert_eq!(text.lines().count(), 100);
    assert!(m.bash_ok("tail -n 1 .errors").contains("unknown state"));
    assert_eq!(
        std::fs::metadata(m.p(".errors")).unwrap().len() as usize,
        text.len()
    );
}

#[test]
fn quiesce_freezes_changes_and_unquiesce_restores_them() {
    let m = Mounted::new();
    m.bash_ok("mkdir pool pool/k1 && echo active > pool/k1/state");
    let q = m.json(".quiesce");
    assert_eq!(q["quiesced"], false);
    assert_eq!(q["holds"], 0);
    m.bash_ok("echo quiesce > .quiesce");
    let q = m.json(".quiesce");
    assert_eq!(q["quiesced"], true);
    assert_eq!(q["holds"], 1);
    assert!(q["since"].is_string());
    assert_eq!(m.json(".status")["quiesced"], true);
    // The backing files lost their write permission.
    for f in ["KMS_DATA", "KMS_HMKF", "KMS_KPKF"] {
        let mode = std::fs::metadata(m.data().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o222, 0, "{f}");
    }
    // Every change: EROFS from the call itself. Reads, key reads included, keep working.
    assert_eq!(errno(std::fs::create_dir(m.p("pool/k2"))), libc::EROFS);
    assert_eq!(errno(std::fs::create_dir(m.p("other"))), libc::EROFS);
    assert_eq!(errno(m.write("pool/k1/state", "inactive")), libc::EROFS);
    assert_eq!(
        errno(std::fs::rename(m.p("pool"), m.p("pool2"))),
        libc::EROFS
    );
    assert_eq!(
        errno(m.write("pool/.create", r#"{"name": "k3"}"#)),
        libc::EROFS
    );
    assert_eq!(errno(m.write("pool/k1/description", "x")), libc::EROFS);
    let err = m.bash_err("mkdir pool/k4");
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(m.last_error()["errno"], "EROFS");
    assert_eq!(std::fs::read(m.p("pool/k1/key")).unwrap().len(), 32);
    // Writing what is already there changes nothing and may succeed.
    m.write("pool/k1/state", "active").unwrap();
    // Holds nest; a leased hold shows its expiry.
    m.bash_ok("echo 'quiesce 600' > .quiesce");
    let q = m.json(".quiesce");
    assert_eq!(q["holds"], 2);
    assert_eq!(q["leases"].as_array().unwrap().len(), 1);
    m.bash_ok("echo unquiesce > .quiesce");
    assert_eq!(m.json(".quiesce")["holds"], 1);
    assert_eq!(errno(std::fs::create_dir(m.p("pool/k2"))), libc::EROFS);
    m.bash_ok("echo 0 >> .quiesce");
    assert_eq!(m.json(".quiesce")["quiesced"], false);
    std::fs::create_dir(m.p("pool/k2")).unwrap();
    let mode = std::fs::metadata(m.data().join("KMS_DATA"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Unquiescing with no hold, or an unknown command: EINVAL.
    assert_eq!(errno(m.write(".quiesce", "unquiesce\n")), libc::EINVAL);
    assert_eq!(errno(m.write(".quiesce", "freeze\n")), libc::EINVAL);
    let err = m.bash_err("echo unquiesce > .quiesce");
    assert!(err.contains("Invalid argument"), "{err}");
    m.bash_ok("echo 1 > .quiesce && echo 0 > .quiesce");
}

#[test]
fn backup_while_quiesced_restores_byte_for_byte() {
    let mut m = Mounted::new();
    m.bash_ok("mkdir pool pool/k1 && echo active > pool/k1/state");
    let key = std::fs::read(m.p("pool/k1/key")).unwrap();
    let backup = m.dir.path().join("backup");
    m.bash_ok(&format!(
        "echo quiesce > .quiesce && cp -a {} {} && echo unquiesce > .quiesce",
        m.data().display(),
        backup.display()
    ));
    // Changes after the backup are not in it.
    m.bash_ok("mkdir pool/k2 && echo active > pool/k2/state");
    m.unmount();
    std::fs::remove_dir_all(m.data()).unwrap();
    std::fs::rename(&backup, m.data()).unwrap();
    m.mount();
    assert_eq!(std::fs::read(m.p("pool/k1/key")).unwrap(), key);
    assert_eq!(m.state("pool/k1"), "active");
    assert!(!m.p("pool/k2").exists());
    m.bash_ok("mkdir pool/k3");
}

/// A mis-pasted secret written to a control file is never echoed into the log or `.errors`,
/// and however many such writes come, `.errors` stays small.
#[test]
fn huge_or_secret_writes_are_refused_without_echo_and_errors_stays_small() {
    let m = Mounted::new();
    m.bash_ok("mkdir pool pool/k1");
    let secret = "TOPSECRET-".repeat(400_000);
    for _ in 0..20 {
        assert_eq!(errno(m.write("pool/k1/state", &secret)), libc::EINVAL);
        assert_eq!(errno(m.write(".quiesce", &secret)), libc::EINVAL);
        assert_eq!(errno(m.write("pool/.cipher", &secret)), libc::EINVAL);
    }
    let errors = m.read(".errors");
    assert!(!errors.contains("TOPSECRET"), "{}", &errors[..200]);
    assert!(
        errors.len() < 100 * 1024,
        ".errors is {} bytes",
        errors.len()
    );
    assert_eq!(m.state("pool/k1"), "prelive");
}

/// A description refused because of its bytes is refused by the `write()`, which the shell
/// reports; a character split over two writes is not a refusal.
#[test]
fn description_text_that_is_not_utf8_is_refused_by_the_write() {
    let m = Mounted::new();
    m.bash_ok("mkdir pool pool/k1 && echo kept > pool/k1/description");
    for rel in ["pool/k1/description", "pool/.description"] {
        m.bash_ok(&format!("echo kept > {rel}"));
        let err = m.bash_err(&format!(r"printf 'bad\xff\n' > {rel}"));
        assert!(err.contains("Invalid argument"), "{err}");
        assert_eq!(m.read(rel), "kept\n", "{rel}");
        let line = m.last_error();
        assert_eq!(line["operation"], "write");
        assert_eq!(line["errno"], "EINVAL");
        // Two writes, a character split between them.
        m.bash_ok(&format!(
            r"{{ printf 'caf\xc3'; printf '\xa9\n'; }} > {rel}"
        ));
        assert_eq!(m.read(rel), "café\n", "{rel}");
    }
}

/// A small tmpfs, unmounted at the end whatever happens.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &std::path::Path, size: &str) -> Tmpfs {
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success(), "cannot mount a tmpfs at {}", path.display());
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A full disk cannot be foreseen by `write()`: the commit at close meets it, and close()
/// returns ENOSPC, which `cp` and `dd conv=fsync` report (the shell's `echo` does not check).
#[test]
fn a_full_disk_fails_the_close_of_a_description() {
    let mut m = Mounted::new();
    m.bash_ok("mkdir pool pool/k1 && echo kept > pool/k1/description");
    // Move the keystore onto a small file system of its own.
    m.unmount();
    let saved = m.dir.path().join("saved");
    std::fs::rename(m.data(), &saved).unwrap();
    std::fs::create_dir(m.data()).unwrap();
    let disk = Tmpfs::mount(&m.data(), "256k");
    m.bash_ok(&format!(
        "cp -a {}/. {}",
        saved.display(),
        m.data().display()
    ));
    m.mount();
    let text = m.dir.path().join("text");
    std::fs::write(&text, "t".repeat(4096)).unwrap();
    // Fill it: every page taken (a 4 KiB description needs at least one more).
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=4k", "count=1024"])
        .arg(format!("of={}", m.data().join("fill").display()))
        .output()
        .unwrap();
    let rel = "pool/k1/description";
    let err = m.bash_err(&format!("cp {} {rel}", text.display()));
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(m.read(rel), "kept\n");
    let err = m.bash_err(&format!(
        "dd if={} of={rel} conv=fsync status=none",
        text.display()
    ));
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(m.read(rel), "kept\n");
    let line = m.last_error();
    assert_eq!(line["errno"], "ENOSPC", "{line}");
    // The shell's own `printf` succeeds, since bash does not check close(); nothing changed
    // (`cat`, which checks, fails).
    m.bash_ok(&format!(
        r#"printf '%s' "$(cat {})" > {rel}"#,
        text.display()
    ));
    assert_eq!(m.read(rel), "kept\n");
    // Room again: the same copy succeeds.
    std::fs::remove_file(m.data().join("fill")).unwrap();
    m.bash_ok(&format!("cp {} {rel}", text.display()));
    assert_eq!(m.read(rel).len(), 4096);
    m.unmount();
    drop(disk);
}
