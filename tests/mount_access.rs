//! Who may use the mount, with real second users acting through `setpriv`: a backup service
//! account in the `--key-readers` group reads keys and metadata but changes nothing; any
//! other user gets nothing, not even names; without options, nobody but the owner gets in.
//! The test creates its users and group (it runs as root, as CI does) and fails if it cannot.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use kmsfs::fs::MountOptions;
use support::mount::Mounted;

const READERS: &str = "kmsfs-test-readers";
const BACKUP: &str = "kmsfs-test-backup";
const OTHER: &str = "kmsfs-test-other";
const ADMINS: &str = "kmsfs-test-admins";
const ADMIN: &str = "kmsfs-test-admin";
const ADMIN2: &str = "kmsfs-test-admin2";

/// Creates the groups and the users if they are missing (idempotent). One test at a time:
/// useradd and groupadd refuse to run while another holds /etc/passwd's lock.
fn users() -> u32 {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let run = |args: &[&str]| {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        // "already exists" from a parallel test is fine; anything else is not.
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("already exists"),
            "{args:?}: {err}"
        );
    };
    run(&["groupadd", "-f", READERS]);
    run(&["groupadd", "-f", ADMINS]);
    for (user, groups) in [
        (BACKUP, Some(READERS)),
        (OTHER, None),
        (ADMIN, Some(ADMINS)),
        (ADMIN2, Some(ADMINS)),
    ] {
        if Command::new("id")
            .arg(user)
            .output()
            .unwrap()
            .status
            .success()
        {
            continue;
        }
        let mut args = vec!["useradd", "-M", "-N", "-s", "/usr/sbin/nologin"];
        if let Some(g) = groups {
            args.extend(["-G", g]);
        }
        args.push(user);
        run(&args);
    }
    gid_of(READERS)
}

fn gid_of(group: &str) -> u32 {
    let gid = Command::new("getent")
        .args(["group", group])
        .output()
        .unwrap();
    String::from_utf8_lossy(&gid.stdout)
        .split(':')
        .nth(2)
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| panic!("the group {group} has a gid"))
}

/// Runs a bash script as `user` (with that user's groups), in the mount.
fn as_user(m: &Mounted, user: &str, script: &str) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid",
            user,
            "--regid",
            user_group(user),
            "--init-groups",
            "--",
        ])
        .args(["bash", "-c", script])
        .current_dir("/")
        .env("M", m.mnt())
        .output()
        .unwrap()
}

fn user_group(user: &str) -> &'static str {
    match user {
        BACKUP => READERS,
        ADMIN | ADMIN2 => ADMINS,
        _ => "nogroup",
    }
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn denied(out: Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should have been refused");
    assert!(err.contains("Permission denied"), "{err}");
}

/// The scratch directory is open to traverse (the mount's own root decides the rest); the
/// data directory stays 0700.
fn open_the_way(m: &Mounted) {
    std::fs::set_permissions(m.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn keystore(m: &Mounted) {
    m.bash_ok(
        r#"set -e
mkdir pool pool/k1 pool/pre
echo active > pool/k1/state
echo "secret notes" > pool/k1/description"#,
    );
}

#[test]
fn key_readers_read_keys_and_metadata_and_change_nothing() {
    let gid = users();
    let m = Mounted::with_options(MountOptions {
        key_readers: Some(gid),
        ..Default::default()
    });
    open_the_way(&m);
    keystore(&m);
    let key = std::fs::read(m.p("pool/k1/key")).unwrap();
    let before = m.bash_ok("jq -cS . pool/*/record.json .status");

    // The backup account reads the key and every piece of metadata.
    let out = ok(as_user(&m, BACKUP, r#"cd "$M" && base64 -w0 pool/k1/key"#));
    assert_eq!(out, base64(&key));
    ok(as_user(
        &m,
        BACKUP,
        r#"cd "$M" && ls -l pool && jq -e '.state == "active"' pool/k1/record.json && cat pool/k1/state pool/k1/description .status .quiesce .errors pool/.rotation >/dev/null"#,
    ));
    // A key whose state forbids it stays closed, for the group as for root.
    let out = as_user(&m, BACKUP, r#"cat "$M/pool/pre/key""#);
    denied(out);
    // It changes nothing: every kind of change is refused by the kernel.
    for change in [
        "echo inactive > pool/k1/state",
        "echo x > pool/k1/description",
        "mkdir pool/k2",
        "rmdir pool/pre",
        "mv pool/pre pool/renamed",
        r#"echo '{"name":"k3"}' > pool/.create"#,
        "echo quiesce > .quiesce",
        "echo rotate > pool/.rotation",
        "mkdir newgroup",
    ] {
        denied(as_user(&m, BACKUP, &format!(r#"cd "$M" && {change}"#)));
    }
    assert_eq!(m.bash_ok("jq -cS . pool/*/record.json .status"), before);

    // Anyone else gets nothing, not even the names.
    denied(as_user(&m, OTHER, r#"ls "$M""#));
    denied(as_user(&m, OTHER, r#"cat "$M/.status""#));
    denied(as_user(&m, OTHER, r#"cat "$M/pool/k1/record.json""#));
    denied(as_user(&m, OTHER, r#"cat "$M/pool/k1/key""#));
    // And `ls -l` as the owner shows who may read.
    let listing = m.bash_ok("ls -ln pool/k1");
    let key_line = listing.lines().find(|l| l.ends_with(" key")).unwrap();
    assert!(
        key_line.starts_with(&format!("-r--r----- 1 0 {gid} ")),
        "{listing}"
    );
}

#[test]
fn without_options_only_the_owner_gets_in_and_allow_other_opens_nothing_more() {
    users();
    let m = Mounted::new();
    open_the_way(&m);
    keystore(&m);
    denied(as_user(&m, BACKUP, r#"ls "$M""#));
    denied(as_user(&m, OTHER, r#"cat "$M/.status""#));
    drop(m);

    // --allow-other lets users in, and the modes then give others nothing: descriptions,
    // states and the JSON that repeats them are equally closed.
    let m = Mounted::with_options(MountOptions {
        allow_other: true,
        ..Default::default()
    });
    open_the_way(&m);
    keystore(&m);
    for path in [
        "",
        "pool/k1/record.json",
        "pool/k1/description",
        "pool/k1/state",
        "pool/.group.json",
        ".errors",
        ".status",
    ] {
        denied(as_user(
            &m,
            OTHER,
            &format!(r#"cat "$M/{path}" || ls "$M/{path}""#),
        ));
    }
}

#[test]
fn admins_change_the_keystore_but_never_read_a_key() {
    let readers = users();
    let admins = gid_of(ADMINS);
    let m = Mounted::with_options(MountOptions {
        key_readers: Some(readers),
        admins: Some(admins),
        ..Default::default()
    });
    open_the_way(&m);
    keystore(&m);
    // The admin lists, reads metadata and moves records through their lifecycle...
    ok(as_user(
        &m,
        ADMIN,
        r#"set -e
cd "$M"
ls -l pool >/dev/null
jq -e '.state == "active"' pool/k1/record.json >/dev/null
echo inactive > pool/k1/state
echo "rotated by the admin" > pool/k1/description
mkdir pool/k2
echo active > pool/k2/state
jq -n '{name: "k3"}' > pool/.create
rmdir pool/pre
mv pool/k3 pool/k4
echo 30d > pool/.rotation
echo quiesce > .quiesce && echo unquiesce > .quiesce"#,
    ));
    assert_eq!(m.state("pool/k1"), "inactive");
    assert_eq!(m.state("pool/k2"), "active");
    assert!(m.p("pool/k4").exists() && !m.p("pool/pre").exists());
    // ...but never reads a key or the audit view.
    denied(as_user(&m, ADMIN, r#"cat "$M/pool/k2/key""#));
    denied(as_user(&m, ADMIN, r#"cat "$M/.audit""#));
    // The readers still read keys and change nothing; others still get nothing.
    ok(as_user(&m, BACKUP, r#"cat "$M/pool/k2/key" >/dev/null"#));
    denied(as_user(&m, BACKUP, r#"echo inactive > "$M/pool/k2/state""#));
    denied(as_user(&m, OTHER, r#"ls "$M""#));
    // ls shows the ACL's mask in the group bits, and the ACLs cannot be changed.
    let listing = m.bash_ok("ls -ln pool/k2");
    let state = listing.lines().find(|l| l.ends_with(" state")).unwrap();
    assert!(
        state.starts_with("-rw-rw----+") || state.starts_with("-rw-rw---- "),
        "{listing}"
    );
}

fn uid_of(user: &str) -> u64 {
    let out = Command::new("id").args(["-u", user]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn two_person_rule_holds_a_destructive_move_until_a_second_admin_asks() {
    let readers = users();
    let m = Mounted::with_options(MountOptions {
        key_readers: Some(readers),
        admins: Some(gid_of(ADMINS)),
        two_person: Some(std::time::Duration::from_secs(120)),
        ..Default::default()
    });
    open_the_way(&m);
    keystore(&m);
    m.bash_ok("echo inactive > pool/k1/state && echo deprecated > pool/k1/state");
    // The first admin's request is held: the write says so, nothing changes.
    let out = as_user(&m, ADMIN, r#"echo terminated > "$M/pool/k1/state""#);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Operation now in progress"), "{err}");
    assert_eq!(m.state("pool/k1"), "deprecated");
    let rec = m.json("pool/k1/record.json");
    assert_eq!(rec["pending"][0]["action"], "terminate", "{rec}");
    assert_eq!(rec["pending"][0]["by_uid"].as_u64(), Some(uid_of(ADMIN)));
    let status = m.json(".status");
    assert_eq!(status["pending"][0]["of"], "pool/k1", "{status}");
    assert!(m.last_error()["reason"]
        .as_str()
        .unwrap()
        .contains("second administrator"));
    // The same admin cannot confirm it.
    let out = as_user(&m, ADMIN, r#"echo terminated > "$M/pool/k1/state""#);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"));
    assert_eq!(m.state("pool/k1"), "deprecated");
    // A second admin does.
    ok(as_user(
        &m,
        ADMIN2,
        r#"echo terminated > "$M/pool/k1/state""#,
    ));
    assert_eq!(m.state("pool/k1"), "terminated");
    assert_eq!(
        m.json("pool/k1/record.json")["pending"],
        serde_json::json!([])
    );
    // Deletion likewise, and non-destructive moves are never held.
    let out = as_user(&m, ADMIN2, r#"rmdir "$M/pool/k1""#);
    assert!(!out.status.success(), "{out:?}");
    assert!(m.p("pool/k1").exists());
    ok(as_user(&m, ADMIN, r#"rmdir "$M/pool/k1""#));
    assert!(!m.p("pool/k1").exists());
    ok(as_user(&m, ADMIN, r#"echo active > "$M/pool/pre/state""#));
}

fn base64(bytes: &[u8]) -> String {
    let out = Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(bytes)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}
