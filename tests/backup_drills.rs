//! Backup and restore drills with the real binary and real tools (`cp -a`, `tar`, `rsync`,
//! `restic`, `jq`, `bash`): the freeze of `.quiesce` makes any of them take a consistent copy
//! of a live keystore, and the copy, restored, shows exactly the keystore of the freeze.
//! Also: what the freeze refuses and allows, leases, a daemon stopped while frozen, restoring
//! only KMS_DATA with regenerated key files, wrong key files, and `examples/backup.sh` and
//! `examples/restore-drill.sh` end to end.

mod support;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kmsfs::store::BACKUP_SET;
use support::cli::{describe, errno, failed, kmsfs, ok, path_with_kmsfs, text, verify};
use support::daemon::{mount_refused, Daemon};
use support::scratch::Scratch;
use support::snapshot::{collect_keys, digests, modes, records, snapshot, unlock_all_keys};

const FROZEN: [u32; 3] = [0o400; 3];
const WRITABLE: [u32; 3] = [0o600; 3];

/// Polls `.quiesce` until `quiesced` is `want`.
fn wait_quiesced(d: &Daemon, want: bool, deadline: Duration) -> Duration {
    let t0 = Instant::now();
    while d.quiesce()["quiesced"] != want {
        assert!(
            t0.elapsed() < deadline,
            ".quiesce did not become quiesced={want} within {deadline:?}: {}\n{}",
            d.read(".quiesce"),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    t0.elapsed()
}

// ---- the live keystore of the drills ---------------------------------------------------------

/// Builds, through the mount and with shell commands only, a keystore with groups of every
/// kind and records in every state; returns the keys seen while they were readable.
fn build_live_keystore(d: &Daemon) -> BTreeMap<String, Vec<u8>> {
    d.sh_ok(
        r#"set -euo pipefail
mkdir payroll
echo "Payroll keys, rotated monthly" > payroll/.description
mkdir payroll/old
echo "first key" > payroll/old/description
echo active > payroll/old/state
mkdir payroll/cur
printf 'second key\nwith two lines\n' > payroll/cur/description
echo ACTIVE > payroll/cur/state
mkdir payroll/next
mkdir archive
echo '{"name": "k1", "state": "active", "description": "archived 1"}' > archive/.create
echo '{"name": "k2", "state": "active"}' > archive/.create
jq -n '{name: "k3", state: "active", description: "made by jq"}' > archive/.create
mkdir derived
echo AES_128 > derived/.cipher
echo '{"name": "pp", "state": "active", "passphrase": "correct horse battery staple", "description": "derived"}' > derived/.create
mkdir tmpname
mv tmpname finance
echo Finance > finance/.description
echo '{"name": "f1"}' > finance/.create
echo active >> finance/f1/state
mkdir empty
echo "nothing here yet" > empty/.description
"#,
    );
    let mut keys = BTreeMap::new();
    collect_keys(d, &mut keys);
    // Now the states whose keys cannot be read.
    d.sh_ok(
        r#"set -euo pipefail
echo deprecated > archive/k1/state
echo deprecated > archive/k2/state
echo terminated > archive/k2/state
"#,
    );
    let states: BTreeMap<String, String> = records(d).into_values().collect();
    let want: BTreeMap<String, String> = [
        ("archive/k1", "deprecated"),
        ("archive/k2", "terminated"),
        ("archive/k3", "active"),
        ("derived/pp", "active"),
        ("finance/f1", "active"),
        ("payroll/cur", "active"),
        ("payroll/next", "prelive"),
        ("payroll/old", "inactive"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(states, want);
    keys
}

/// More changes after the backup: new records and groups, state changes, deletions, renames,
/// descriptions.
fn change_live_keystore(d: &Daemon) {
    d.sh_ok(
        r#"set -euo pipefail
echo active > payroll/next/state
echo deprecated > payroll/old/state
mv payroll/old payroll/old-renamed
mv finance finance-2
rmdir archive/k2
rmdir empty
mkdir newgroup newgroup/n1
echo active > newgroup/n1/state
echo "changed after the backup" > archive/.description
echo "changed after the backup" > derived/pp/description
echo '{"name": "k4", "state": "active"}' > archive/.create
"#,
    );
}

// ---- the tools -------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Tool {
    CpA,
    Tar,
    Rsync,
    Restic,
}

impl Tool {
    /// Backs up `data` into `store` (a directory) while the keystore is frozen.
    fn backup(self, s: &Scratch, data: &Path, store: &Path) {
        let script = match self {
            Tool::CpA => r#"cp -a "$DATA" "$STORE/data""#,
            Tool::Tar => {
                r#"tar -C "$(dirname "$DATA")" -cpf "$STORE/kms.tar" "$(basename "$DATA")""#
            }
            Tool::Rsync => r#"rsync -a "$DATA/" "$STORE/data/""#,
            Tool::Restic => {
                r#"restic -q -r "$STORE/repo" init && restic -q -r "$STORE/repo" backup "$DATA""#
            }
        };
        self.run(s, "backup", script, data, store, Path::new("/nonexistent"));
    }

    /// Restores the backup in `store` below `target`; returns the restored data directory.
    fn restore(self, s: &Scratch, data: &Path, store: &Path, target: &Path) -> PathBuf {
        let script = match self {
            Tool::CpA => r#"cp -a "$STORE/data" "$TARGET/data""#,
            Tool::Tar => r#"tar -C "$TARGET" -xpf "$STORE/kms.tar""#,
            Tool::Rsync => r#"rsync -a "$STORE/data/" "$TARGET/data/""#,
            Tool::Restic => r#"restic -q -r "$STORE/repo" restore latest --target "$TARGET""#,
        };
        self.run(s, "restore", script, data, store, target);
        match self {
            Tool::Tar => target.join(data.file_name().unwrap()),
            // restic restores the absolute path below the target.
            Tool::Restic => target.join(data.strip_prefix("/").unwrap()),
            Tool::CpA | Tool::Rsync => target.join("data"),
        }
    }

    fn run(self, s: &Scratch, what: &str, script: &str, data: &Path, store: &Path, target: &Path) {
        let cache = s.path("restic-cache");
        let env = [
            ("DATA", data.as_os_str()),
            ("STORE", store.as_os_str()),
            ("TARGET", target.as_os_str()),
            ("RESTIC_PASSWORD", OsStr::new("drill password")),
            ("RESTIC_CACHE_DIR", cache.as_os_str()),
        ];
        ok(&format!("{self:?} {what}"), s.bash(script, &env));
    }
}

/// The drill: live keystore, freeze, back up, release, more changes, restore, verify, mount,
/// and the restored keystore is exactly the frozen one, keys byte for byte.
fn drill(tool: Tool) {
    let s = Scratch::new();
    let data = s.path("data");
    let live = Daemon::start_init(&data, &s.path("mnt"));
    let mut keys = build_live_keystore(&live);

    live.sh_ok("echo quiesce > .quiesce");
    assert_eq!(live.quiesce()["quiesced"], true);
    assert_eq!(modes(&data), FROZEN);
    let frozen = snapshot(&live);
    let frozen_records = records(&live);
    let store = s.mkdir("backup");
    tool.backup(&s, &data, &store);
    assert_eq!(snapshot(&live), frozen, "the freeze held during the backup");
    live.sh_ok("echo unquiesce > .quiesce");
    assert_eq!(modes(&data), WRITABLE);

    change_live_keystore(&live);
    // The keys of the records that were prelive at the freeze, readable now.
    collect_keys(&live, &mut keys);
    assert_ne!(snapshot(&live), frozen, "the live keystore moved on");
    for tag in frozen_records.keys() {
        assert!(keys.contains_key(tag), "the key of {tag} was seen");
    }
    if matches!(tool, Tool::CpA | Tool::Rsync) {
        // The backup itself is a data directory: verify accepts it as it is.
        let out = verify(&store.join("data"));
        ok("verify the backup", out);
    }

    let target = s.mkdir("restore");
    let restored = tool.restore(&s, &data, &store, &target);
    // The copy was taken frozen: no write permission, and the tool kept that.
    assert_eq!(modes(&restored), FROZEN, "{tool:?} kept the modes");
    let report = ok("verify the restored copy", verify(&restored));
    assert!(
        report.starts_with("ok: 5 group(s), 8 record(s)"),
        "{report}"
    );

    let back = Daemon::start(&restored, &s.path("mnt-restored"));
    assert_eq!(modes(&restored), WRITABLE, "mount gave back 0600");
    assert_eq!(
        snapshot(&back),
        frozen,
        "{tool:?}: the keystore of the freeze"
    );
    assert_eq!(records(&back), frozen_records);
    // Keys byte for byte, also of the records whose state hides them (unlocked in the copy).
    let restored_keys = unlock_all_keys(&back);
    for (tag, key) in &restored_keys {
        assert_eq!(Some(key), keys.get(tag), "{tool:?}: key of {tag}");
    }
    assert_eq!(
        restored_keys.len(),
        frozen_records.len(),
        "no record more, none less"
    );
    // The restored keystore takes changes.
    back.sh_ok("mkdir after-restore after-restore/r && echo active > after-restore/r/state");
    back.stop();
    live.stop();
}

#[test]
fn drill_cp_a() {
    drill(Tool::CpA);
}

#[test]
fn drill_tar() {
    drill(Tool::Tar);
}

#[test]
fn drill_rsync() {
    drill(Tool::Rsync);
}

#[test]
fn drill_restic() {
    drill(Tool::Restic);
}

// ---- the freeze ------------------------------------------------------------------------------

/// A small keystore for the freeze tests: group `g` with `a` (active) and `p` (prelive), and
/// an empty group `e`.
fn small_keystore(s: &Scratch) -> (PathBuf, Daemon) {
    let data = s.path("data");
    let d = Daemon::start_init(&data, &s.path("mnt"));
    d.sh_ok("mkdir g g/a g/p e && echo active > g/a/state && echo 'group g' > g/.description");
    (data, d)
}

#[test]
fn while_frozen_every_change_is_erofs_reads_work_and_no_byte_changes() {
    let s = Scratch::new();
    let (data, d) = small_keystore(&s);
    let key_a = fs::read(d.p("g/a/key")).unwrap();

    d.sh_ok("echo quiesce > .quiesce");
    let q = d.quiesce();
    assert_eq!(q["quiesced"], true, "{q}");
    assert_eq!(q["holds"], 1, "{q}");
    assert_eq!(q["leases"], serde_json::json!([]), "{q}");
    // `since` is RFC 3339 and recent (jq parses it).
    d.sh_ok(r#"jq -e '(now - (.since | fromdateiso8601)) | (. >= -2 and . < 60)' .quiesce"#);
    d.sh_ok("jq -e '.quiesced == true' .status");
    assert_eq!(modes(&data), FROZEN, "no write permission while frozen");
    let before = digests(&data);

    // Every change through std::fs: EROFS.
    let p = |rel: &str| d.p(rel);
    let create = r#"{"name": "n", "state": "active"}"#;
    let attempts: Vec<(&str, std::io::Result<()>)> = vec![
        ("mkdir group", fs::create_dir(p("g2"))),
        ("mkdir record", fs::create_dir(p("g/r2"))),
        ("write state", fs::write(p("g/a/state"), "inactive")),
        ("activate prelive", fs::write(p("g/p/state"), "active")),
        ("rename record", fs::rename(p("g/p"), p("g/p2"))),
        ("rename group", fs::rename(p("e"), p("e2"))),
        ("rmdir prelive record", fs::remove_dir(p("g/p"))),
        ("rmdir empty group", fs::remove_dir(p("e"))),
        ("group description", fs::write(p("g/.description"), "new")),
        ("record description", fs::write(p("g/a/description"), "new")),
        (".create", fs::write(p("g/.create"), create)),
        (".cipher", fs::write(p("e/.cipher"), "AES_128")),
    ];
    for (what, r) in attempts {
        assert!(r.is_err(), "{what}: expected an error, got {r:?}");
        assert_eq!(errno(r), libc::EROFS, "{what}");
    }
    // The same through bash, which prints the errno's text.
    for cmd in [
        "mkdir g2",
        "mkdir g/r2",
        "echo inactive > g/a/state",
        "echo active > g/p/state",
        "mv g/p g/p2",
        "mv e e2",
        "rmdir g/p",
        "rmdir e",
        "echo new > g/.description",
        "echo new >> g/a/description",
        r#"echo '{"name": "n"}' > g/.create"#,
        r#"echo '{"name": "n2", "passphrase": "pw"}' > g/.create"#,
        "echo AES_192 > e/.cipher",
    ] {
        let err = d.sh_err(cmd);
        assert!(err.contains("Read-only file system"), "{cmd}: {err}");
    }
    // A write that changes nothing may succeed; it never changes anything.
    let same = d.sh("echo active > g/a/state");
    assert!(
        same.status.success() || text(&same.stderr).contains("Read-only file system"),
        "{}",
        describe("same state", &same)
    );

    // Reads keep working, key reads included.
    assert_eq!(fs::read(d.p("g/a/key")).unwrap(), key_a);
    assert_eq!(d.read("g/a/state"), "active\n");
    assert_eq!(d.read("g/.description"), "group g\n");
    d.sh_ok("jq -e '.records == 2 and .active == \"a\"' g/.group.json");
    d.sh_ok("jq -e '.state == \"prelive\"' g/p/record.json");
    d.sh_ok("test $(ls .by-tag | wc -l) -eq 2");
    d.sh_ok(r#"cmp g/a/key ".by-tag/$(jq -r .tag g/a/record.json)/key""#);

    // A writer keeps trying for about a second; not one byte of the backing files changes.
    let mut writer = Command::new("bash")
        .arg("-c")
        .arg(
            r#"n=0; ok=0
end=$(( $(date +%s%N) + 1000000000 ))
while [ "$(date +%s%N)" -lt "$end" ]; do
    n=$((n + 1))
    mkdir "w$n" 2>/dev/null && ok=$((ok + 1))
    mkdir "g/w$n" 2>/dev/null && ok=$((ok + 1))
    { echo inactive > g/a/state; } 2>/dev/null && ok=$((ok + 1))
    { echo active > g/p/state; } 2>/dev/null && ok=$((ok + 1))
    mv g/p "g/p$n" 2>/dev/null && ok=$((ok + 1))
    rmdir e 2>/dev/null && ok=$((ok + 1))
    { echo "text $n" > g/a/description; } 2>/dev/null && ok=$((ok + 1))
    { echo "{\"name\": \"c$n\"}" > g/.create; } 2>/dev/null && ok=$((ok + 1))
    { echo AES_128 > e/.cipher; } 2>/dev/null && ok=$((ok + 1))
done
echo "$n $ok""#,
        )
        .current_dir(&d.mnt)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut checks = 0;
    while writer.try_wait().unwrap().is_none() {
        assert_eq!(
            digests(&data),
            before,
            "a backing file changed while frozen"
        );
        checks += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = writer.wait_with_output().unwrap();
    let counts = text(&out.stdout);
    let counts: Vec<u64> = counts
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(counts[0] > 0 && checks > 5, "the writer ran: {counts:?}");
    assert_eq!(counts[1], 0, "no change was accepted while frozen");
    assert_eq!(digests(&data), before);
    assert_eq!(modes(&data), FROZEN);
    d.sh_ok(r#"jq -se 'map(select(.errno == "EROFS")) | length > 0' .errors"#);

    // Holds nest: two quiesce and one unquiesce is still frozen.
    d.sh_ok("echo 1 > .quiesce");
    assert_eq!(d.quiesce()["holds"], 2);
    let since = d.quiesce()["since"].clone();
    d.sh_ok("echo unquiesce > .quiesce");
    let q = d.quiesce();
    assert_eq!(
        (q["quiesced"].clone(), q["holds"].clone()),
        (true.into(), 1.into())
    );
    assert_eq!(q["since"], since, "the freeze is the same one");
    assert_eq!(modes(&data), FROZEN);
    assert_eq!(errno(fs::create_dir(d.p("g2"))), libc::EROFS);
    assert_eq!(digests(&data), before);
    // The last release: writable again, and changes resume.
    d.sh_ok("echo 0 > .quiesce");
    d.sh_ok(
        "jq -e '.quiesced == false and .holds == 0 and .since == null and .leases == []' .quiesce",
    );
    assert_eq!(modes(&data), WRITABLE);
    d.sh_ok("mkdir g2 && echo inactive > g/a/state && mv g/p g/p2 && rmdir e");
    assert_ne!(digests(&data), before);
    // Unquiesce with no hold: EINVAL.
    assert_eq!(errno(fs::write(d.p(".quiesce"), "unquiesce")), libc::EINVAL);
    let err = d.sh_err("echo unquiesce > .quiesce");
    assert!(err.contains("Invalid argument"), "{err}");
    d.stop();
}

#[test]
fn a_lease_lapses_by_itself_and_unquiesce_releases_a_plain_hold_first() {
    let s = Scratch::new();
    let (data, d) = small_keystore(&s);

    let t0 = Instant::now();
    d.sh_ok(r#"echo "quiesce 2" > .quiesce"#);
    let q = d.quiesce();
    assert_eq!(q["quiesced"], true, "{q}");
    assert_eq!(q["leases"].as_array().unwrap().len(), 1, "{q}");
    // The lease's expiry is about two seconds from now.
    d.sh_ok(r#"jq -e '((.leases[0] | fromdateiso8601) - now) | (. > -1 and . < 4)' .quiesce"#);
    assert_eq!(modes(&data), FROZEN);
    assert_eq!(errno(fs::create_dir(d.p("g2"))), libc::EROFS);
    wait_quiesced(&d, false, Duration::from_secs(10));
    let lapsed = t0.elapsed();
    assert!(
        lapsed >= Duration::from_millis(1900),
        "lapsed early: {lapsed:?}"
    );
    d.sh_ok("jq -e '.holds == 0 and .leases == [] and .since == null' .quiesce");
    assert_eq!(modes(&data), WRITABLE);
    d.sh_ok("mkdir g2 && echo inactive > g/a/state");
    let log = d.log_text();
    assert!(
        log.contains("lapsed") && log.contains("ERROR"),
        "the lapse is logged loudly:\n{log}"
    );

    // A plain hold and a lease: unquiesce takes the plain one, whatever the order.
    for script in [
        r#"echo quiesce > .quiesce && echo "quiesce 600" > .quiesce"#,
        r#"echo "quiesce 600" > .quiesce && echo quiesce > .quiesce"#,
    ] {
        d.sh_ok(script);
        d.sh_ok("jq -e '.holds == 2 and (.leases | length) == 1' .quiesce");
        d.sh_ok("echo unquiesce > .quiesce");
        d.sh_ok("jq -e '.quiesced and .holds == 1 and (.leases | length) == 1' .quiesce");
        assert_eq!(errno(fs::create_dir(d.p("g3"))), libc::EROFS);
        d.sh_ok("echo unquiesce > .quiesce");
        d.sh_ok("jq -e '.quiesced == false and .holds == 0' .quiesce");
        assert_eq!(modes(&data), WRITABLE);
    }
    // Bad leases are malformed input.
    for bad in ["quiesce 0", "quiesce soon", "quiesce -1"] {
        let err = d.sh_err(&format!("echo '{bad}' > .quiesce"));
        assert!(err.contains("Invalid argument"), "{bad}: {err}");
    }
    d.sh_ok("jq -e '.holds == 0' .quiesce");
    d.stop();
}

#[test]
fn a_daemon_stopped_while_frozen_comes_back_unfrozen_and_writable() {
    let s = Scratch::new();
    let (data, d) = small_keystore(&s);
    d.sh_ok(r#"echo quiesce > .quiesce && echo "quiesce 600" > .quiesce"#);
    let frozen = snapshot(&d);
    let before = digests(&data);
    d.stop();
    // The files stay read-only while no daemon runs; an offline check works.
    assert_eq!(modes(&data), FROZEN);
    assert_eq!(digests(&data), before);
    ok("verify", verify(&data));

    let d = Daemon::start(&data, &s.path("mnt"));
    assert_eq!(modes(&data), WRITABLE, "mount gives back 0600");
    d.sh_ok("jq -e '.quiesced == false and .holds == 0 and .leases == []' .quiesce");
    assert_eq!(snapshot(&d), frozen, "nothing lost");
    d.sh_ok("mkdir g2 && echo active > g/p/state && echo changed > g/.description");
    d.sh_ok(r#"test "$(cat g/a/state)" = inactive"#);
    d.stop();
    // And the changes were kept.
    let d = Daemon::start(&data, &s.path("mnt"));
    d.sh_ok(r#"test -d g2 && test "$(cat g/p/state)" = active"#);
    d.stop();
}

// ---- key files -------------------------------------------------------------------------------

#[test]
fn restoring_only_kms_data_with_key_files_regenerated_from_passphrases() {
    let s = Scratch::new();
    let hmk_pw = s.file("hmk.pass", "hmk passphrase for the drill\n");
    let kpk_pw = s.file("kpk.pass", "kpk passphrase for the drill\n");
    let wrong_pw = s.file("wrong.pass", "not the hmk passphrase\n");
    let data = s.path("data");
    let out = kmsfs([
        OsStr::new("init"),
        OsStr::new("--data-dir"),
        data.as_os_str(),
        OsStr::new("--hmk-passphrase-file"),
        hmk_pw.as_os_str(),
        OsStr::new("--kpk-passphrase-file"),
        kpk_pw.as_os_str(),
    ]);
    let init = ok("kmsfs init with passphrases", out);
    assert!(init.contains("from a passphrase"), "{init}");
    let live = Daemon::start(&data, &s.path("mnt"));
    live.sh_ok(
        r#"set -euo pipefail
mkdir vault vault/r1 vault/r2 vault/r3
echo 'the vault' > vault/.description
echo active > vault/r1/state
echo active > vault/r2/state
echo 'spare' > vault/r3/description
"#,
    );
    let mut keys = BTreeMap::new();
    collect_keys(&live, &mut keys);

    // Only KMS_DATA is backed up with the data: the key files are kept elsewhere.
    let store = s.mkdir("backup");
    live.sh_ok("echo quiesce > .quiesce");
    let frozen = snapshot(&live);
    ok(
        "cp -a KMS_DATA",
        s.bash(
            r#"cp -a "$DATA/KMS_DATA" "$STORE/""#,
            &[("DATA", data.as_os_str()), ("STORE", store.as_os_str())],
        ),
    );
    live.sh_ok("echo unquiesce > .quiesce");
    live.sh_ok("echo active > vault/r3/state && mkdir later");
    collect_keys(&live, &mut keys);
    live.stop();

    let restored = s.mkdir("restore/data");
    ok(
        "restore KMS_DATA",
        s.bash(
            r#"cp -a "$STORE/KMS_DATA" "$R/""#,
            &[("STORE", store.as_os_str()), ("R", restored.as_os_str())],
        ),
    );
    let err = failed("verify without key files", verify(&restored));
    assert!(
        err.contains("KMS_HMKF") && err.contains("regenerate"),
        "{err}"
    );
    let err = mount_refused(&restored, &s.path("mnt-restored"));
    assert!(err.contains("KMS_HMKF"), "{err}");

    let regenerate = |args: &[&OsStr]| {
        let mut all = vec![
            OsStr::new("regenerate"),
            OsStr::new("--data-dir"),
            restored.as_os_str(),
        ];
        all.extend_from_slice(args);
        kmsfs(all)
    };
    let err = failed(
        "regenerate with a wrong passphrase",
        regenerate(&[OsStr::new("--hmk-passphrase-file"), wrong_pw.as_os_str()]),
    );
    assert!(
        err.contains("KMS_HMKF") && err.contains("wrong passphrase"),
        "{err}"
    );
    assert!(!restored.join("KMS_HMKF").exists(), "nothing written");
    let out = ok(
        "regenerate",
        regenerate(&[
            OsStr::new("--hmk-passphrase-file"),
            hmk_pw.as_os_str(),
            OsStr::new("--kpk-passphrase-file"),
            kpk_pw.as_os_str(),
        ]),
    );
    assert!(
        out.contains("KMS_HMKF") && out.contains("KMS_KPKF"),
        "{out}"
    );
    for f in ["KMS_HMKF", "KMS_KPKF"] {
        assert_eq!(
            fs::read(restored.join(f)).unwrap(),
            fs::read(data.join(f)).unwrap(),
            "{f} rebuilt byte for byte"
        );
    }
    ok("verify after regenerate", verify(&restored));

    let back = Daemon::start(&restored, &s.path("mnt-restored"));
    assert_eq!(modes(&restored), WRITABLE);
    assert_eq!(snapshot(&back), frozen);
    for (tag, key) in unlock_all_keys(&back) {
        assert_eq!(Some(&key), keys.get(&tag), "key of {tag}");
    }
    back.stop();
}

#[test]
fn restoring_with_wrong_key_files_is_refused_naming_them() {
    let s = Scratch::new();
    let (data, d) = small_keystore(&s);
    d.sh_ok("echo quiesce > .quiesce");
    let frozen = snapshot(&d);
    let store = s.mkdir("backup");
    ok(
        "cp -a",
        s.bash(
            r#"cp -a "$DATA" "$STORE/data""#,
            &[("DATA", data.as_os_str()), ("STORE", store.as_os_str())],
        ),
    );
    d.sh_ok("echo unquiesce > .quiesce");
    d.stop();
    let other = s.path("other");
    ok(
        "init another keystore",
        kmsfs([
            OsStr::new("init"),
            OsStr::new("--data-dir"),
            other.as_os_str(),
        ]),
    );
    let backup = store.join("data");

    // A restore of KMS_DATA with key files taken from `hmk` and `kpk` (None: left out).
    let restore = |name: &str, hmk: Option<&Path>, kpk: Option<&Path>| -> PathBuf {
        let dir = s.mkdir(&format!("restore-{name}"));
        fs::copy(backup.join("KMS_DATA"), dir.join("KMS_DATA")).unwrap();
        if let Some(h) = hmk {
            fs::copy(h, dir.join("KMS_HMKF")).unwrap();
        }
        if let Some(k) = kpk {
            fs::copy(k, dir.join("KMS_KPKF")).unwrap();
        }
        dir
    };
    /// Key files taken from `hmk` and `kpk` (None: left out); the refusal names `names` and
    /// says `says`.
    struct Case {
        name: &'static str,
        hmk: Option<PathBuf>,
        kpk: Option<PathBuf>,
        names: &'static str,
        says: &'static str,
    }
    let cases = [
        Case {
            name: "other-both",
            hmk: Some(other.join("KMS_HMKF")),
            kpk: Some(other.join("KMS_KPKF")),
            names: "KMS_HMKF",
            says: "does not belong to this keystore",
        },
        Case {
            name: "other-kpk",
            hmk: Some(backup.join("KMS_HMKF")),
            kpk: Some(other.join("KMS_KPKF")),
            names: "KMS_KPKF",
            says: "does not belong to this keystore",
        },
        Case {
            name: "swapped",
            hmk: Some(backup.join("KMS_KPKF")),
            kpk: Some(backup.join("KMS_HMKF")),
            names: "KMS_HMKF",
            says: "bad magic",
        },
        Case {
            name: "kpk-missing",
            hmk: Some(backup.join("KMS_HMKF")),
            kpk: None,
            names: "KMS_KPKF",
            says: "missing",
        },
        Case {
            name: "hmk-missing",
            hmk: None,
            kpk: Some(backup.join("KMS_KPKF")),
            names: "KMS_HMKF",
            says: "missing",
        },
    ];
    for c in &cases {
        let (name, file, words) = (c.name, c.names, c.says);
        let dir = restore(name, c.hmk.as_deref(), c.kpk.as_deref());
        let err = failed(&format!("verify {name}"), verify(&dir));
        assert!(
            err.contains(file) && err.contains(words) && err.starts_with("kmsfs: "),
            "{name}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        let err = mount_refused(&dir, &s.path(&format!("mnt-{name}")));
        assert!(err.contains(file) && err.contains(words), "{name}: {err}");
    }
    // A random key cannot be regenerated: the message says to restore the file.
    let dir = s.path("restore-kpk-missing");
    let pw = s.file("pw", "some passphrase\n");
    let err = failed(
        "regenerate a random KPK",
        kmsfs([
            OsStr::new("regenerate"),
            OsStr::new("--data-dir"),
            dir.as_os_str(),
            OsStr::new("--kpk-passphrase-file"),
            pw.as_os_str(),
        ]),
    );
    assert!(
        err.contains("KMS_KPKF") && err.contains("random") && err.contains("backup"),
        "{err}"
    );
    // The right files, and all is well.
    let dir = restore(
        "right",
        Some(&backup.join("KMS_HMKF")),
        Some(&backup.join("KMS_KPKF")),
    );
    ok("verify", verify(&dir));
    let back = Daemon::start(&dir, &s.path("mnt-right"));
    assert_eq!(snapshot(&back), frozen);
    back.stop();
}

// ---- the example scripts ---------------------------------------------------------------------

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// Runs an example script with `args`, the built `kmsfs` first on PATH, `TMPDIR` in the scratch
/// directory and `env` set.
fn run_script(
    s: &Scratch,
    name: &str,
    args: &[&OsStr],
    env: &[(&str, &OsStr)],
) -> std::process::Output {
    let tmp = s.mkdir("tmp");
    // Run as an administrator would: executable, by its `#!` line.
    let mut c = Command::new(example(name));
    c.args(args)
        .current_dir(s.dir.path())
        .env("PATH", path_with_kmsfs())
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run the script")
}

/// The backup directories `backup.sh` made below `root`.
fn backups(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match fs::read_dir(root) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

fn scratch_is_clean(s: &Scratch) {
    let tmp = s.path("tmp");
    let left: Vec<_> = fs::read_dir(&tmp).unwrap().collect();
    assert!(
        left.is_empty(),
        "the drill left {left:?} in {}",
        tmp.display()
    );
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.contains(&*tmp.to_string_lossy()),
        "the drill left a mount behind:\n{mounts}"
    );
}

#[test]
fn backup_script_and_restore_drill_end_to_end() {
    let s = Scratch::new();
    let (data, d) = small_keystore(&s);
    d.sh_ok(
        r#"echo '{"name": "c", "state": "active", "description": "made by .create"}' > g/.create"#,
    );
    let root = s.path("backups");
    let out = run_script(
        &s,
        "backup.sh",
        &[d.mnt.as_os_str(), data.as_os_str(), root.as_os_str()],
        &[("KMSFS_LEASE", OsStr::new("60"))],
    );
    let report = ok("backup.sh", out);
    let made = backups(&root);
    assert_eq!(made.len(), 1, "{made:?}");
    let backup = &made[0];
    assert!(
        backup
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("kmsfs-"),
        "{backup:?}"
    );
    assert!(report.contains(&*backup.to_string_lossy()), "{report}");
    for f in BACKUP_SET {
        assert!(backup.join(f).is_file(), "{f} in {backup:?}");
    }
    assert_eq!(modes(backup), FROZEN, "a copy of the frozen files");
    // The freeze was released, and the lease with it.
    d.sh_ok("jq -e '.quiesced == false and .holds == 0 and .leases == []' .quiesce");
    assert_eq!(modes(&data), WRITABLE);
    let log = d.log_text();
    assert!(log.contains("lease 60 s"), "{log}");
    assert!(!log.contains("lapsed"), "{log}");
    ok("verify the backup", verify(backup));

    // More changes; the drill shows the keystore of the backup.
    d.sh_ok("mkdir later && echo active > g/p/state");
    let backup_digests = digests(backup);
    let out = run_script(&s, "restore-drill.sh", &[backup.as_os_str()], &[]);
    let drill = ok("restore-drill.sh", out);
    for line in ["g/a", "g/p", "g/c"] {
        assert!(drill.contains(line), "{line}: {drill}");
    }
    let table: Vec<&str> = drill
        .lines()
        .filter(|l| l.trim_start().starts_with("g/"))
        .collect();
    assert_eq!(table.len(), 3, "{drill}");
    for (rec, state) in [("g/a", "inactive"), ("g/p", "prelive"), ("g/c", "active")] {
        assert!(
            table
                .iter()
                .any(|l| l.split_whitespace().take(2).eq([rec, state])),
            "{rec} {state}: {drill}"
        );
    }
    assert!(!drill.contains("later"), "{drill}");
    assert_eq!(
        digests(backup),
        backup_digests,
        "the drill never touches the backup"
    );
    scratch_is_clean(&s);

    // A damaged backup fails the drill, naming the file.
    let damaged = s.mkdir("damaged");
    for f in BACKUP_SET {
        fs::copy(backup.join(f), damaged.join(f)).unwrap();
    }
    let mut bytes = fs::read(damaged.join("KMS_DATA")).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0x01;
    fs::write(damaged.join("KMS_DATA"), bytes).unwrap();
    let out = run_script(&s, "restore-drill.sh", &[damaged.as_os_str()], &[]);
    let err = failed("drill of a damaged backup", out);
    assert!(err.contains("KMS_DATA"), "{err}");
    scratch_is_clean(&s);
    d.stop();
}

#[test]
fn backup_script_keeps_the_key_files_apart_when_asked() {
    let s = Scratch::new();
    let (data, d) = small_keystore(&s);
    let root = s.path("backups");
    let keys_root = s.path("keys");
    let out = run_script(
        &s,
        "backup.sh",
        &[],
        &[
            ("KMSFS_MOUNT", d.mnt.as_os_str()),
            ("KMSFS_DATA_DIR", data.as_os_str()),
            ("KMSFS_BACKUP_ROOT", root.as_os_str()),
            ("KMSFS_KEYS_DIR", keys_root.as_os_str()),
        ],
    );
    ok("backup.sh with KMSFS_KEYS_DIR", out);
    let made = backups(&root);
    let keys = backups(&keys_root);
    assert_eq!((made.len(), keys.len()), (1, 1), "{made:?} {keys:?}");
    let names: Vec<String> = backups(&made[0])
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["KMS_DATA"], "no key file next to KMS_DATA");
    for f in ["KMS_HMKF", "KMS_KPKF"] {
        assert!(keys[0].join(f).is_file(), "{f}");
    }
    d.sh_ok("jq -e '.holds == 0' .quiesce");
    // Without the key files the drill fails clearly; with them it passes.
    let err = failed(
        "drill without key files",
        run_script(&s, "restore-drill.sh", &[made[0].as_os_str()], &[]),
    );
    assert!(err.contains("KMS_HMKF"), "{err}");
    let drill = ok(
        "drill with key files",
        run_script(
            &s,
            "restore-drill.sh",
            &[made[0].as_os_str(), keys[0].as_os_str()],
            &[],
        ),
    );
    assert!(drill.contains("g/a"), "{drill}");
    scratch_is_clean(&s);
    d.stop();
}

/// A directory with a `cp` that runs `behaviour` instead of (or before) the real one: the
/// fault injected into backup.sh's copy, which runs while the keystore is frozen.
fn fake_cp(s: &Scratch, name: &str, behaviour: &str) -> std::ffi::OsString {
    let real = text(
        &Command::new("bash")
            .args(["-c", "command -v cp"])
            .output()
            .unwrap()
            .stdout,
    );
    let dir = s.mkdir(name);
    let cp = dir.join("cp");
    // A stopped fake stops what it runs, as a real cp would stop at once.
    fs::write(
        &cp,
        format!(
            "#!/bin/bash\ntrap 'kill $(jobs -p) 2>/dev/null; exit 143' TERM\n( {behaviour} ) &\nwait $! || exit $?\nexec {} \"$@\"\n",
            real.trim()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&cp, fs::Permissions::from_mode(0o755)).unwrap();
    let mut path = dir.into_os_string();
    path.push(":");
    path.push(path_with_kmsfs());
    path
}

#[test]
fn backup_script_releases_the_freeze_when_the_copy_fails_or_is_killed() {
    let s = Scratch::new();
    let (data, d) = small_keystore(&s);
    let root = s.path("backups");
    let args = [d.mnt.as_os_str(), data.as_os_str(), root.as_os_str()];

    // The copy fails: non-zero exit, the hold released, no backup left (not even partial).
    let path = fake_cp(&s, "failing", "echo 'cp: simulated failure' >&2; exit 1");
    let err = failed(
        "backup.sh with a failing copy",
        run_script(&s, "backup.sh", &args, &[("PATH", &path)]),
    );
    assert!(err.contains("simulated failure"), "{err}");
    d.sh_ok("jq -e '.quiesced == false and .holds == 0' .quiesce");
    assert_eq!(modes(&data), WRITABLE);
    assert!(backups(&root).is_empty(), "{:?}", backups(&root));

    // Killed (SIGTERM to the script alone, as `kill PID` does) while frozen in the copy: the
    // trap stops the copy, removes it and releases the hold at once.
    let path = fake_cp(&s, "slow", "sleep 30");
    let job_log = s.path("killed-job.log");
    let mut job = Command::new(example("backup.sh"))
        .args(args)
        .env("PATH", &path)
        .env("TMPDIR", s.mkdir("tmp"))
        .stdin(Stdio::null())
        .stdout(fs::File::create(&job_log).unwrap())
        .stderr(fs::File::create(s.path("killed-job.err")).unwrap())
        .spawn()
        .unwrap();
    wait_quiesced(&d, true, Duration::from_secs(10));
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    unsafe {
        libc::kill(job.id() as libc::pid_t, libc::SIGTERM);
    }
    let t0 = Instant::now();
    let status = loop {
        if let Some(status) = job.try_wait().unwrap() {
            break status;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = job.kill();
            let _ = job.wait();
            panic!("backup.sh did not end within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = fs::read_to_string(s.path("killed-job.err")).unwrap();
    assert!(!status.success(), "killed: {status}\n{err}");
    assert!(err.contains("FAILED"), "{err}");
    d.sh_ok("jq -e '.quiesced == false and .holds == 0' .quiesce");
    assert_eq!(modes(&data), WRITABLE);
    assert!(backups(&root).is_empty(), "{:?}", backups(&root));

    // A lease shorter than the copy: the copy cannot be trusted, and the script says so.
    let path = fake_cp(
        &s,
        "slower-than-lease",
        r#"case "$*" in *KMS_DATA*) sleep 2 ;; esac"#,
    );
    let err = failed(
        "backup.sh with a lease shorter than the copy",
        run_script(
            &s,
            "backup.sh",
            &args,
            &[("PATH", &path), ("KMSFS_LEASE", OsStr::new("1"))],
        ),
    );
    assert!(err.contains("KMSFS_LEASE"), "{err}");
    d.sh_ok("jq -e '.quiesced == false and .holds == 0' .quiesce");
    assert!(backups(&root).is_empty(), "{:?}", backups(&root));

    // Not a kmsfs mount, or the wrong data directory: refused before any freeze.
    let err = failed(
        "backup.sh of a plain directory",
        run_script(
            &s,
            "backup.sh",
            &[
                s.path("tmp").as_os_str(),
                data.as_os_str(),
                root.as_os_str(),
            ],
            &[],
        ),
    );
    assert!(err.contains("not a kmsfs mount"), "{err}");
    let other = s.path("other");
    ok(
        "init",
        kmsfs([
            OsStr::new("init"),
            OsStr::new("--data-dir"),
            other.as_os_str(),
        ]),
    );
    let err = failed(
        "backup.sh with another data directory",
        run_script(
            &s,
            "backup.sh",
            &[d.mnt.as_os_str(), other.as_os_str(), root.as_os_str()],
            &[],
        ),
    );
    assert!(err.contains("serves"), "{err}");
    d.sh_ok("jq -e '.holds == 0' .quiesce");
    let log = d.log_text();
    assert!(log.contains("lapsed"), "the short lease lapsed: {log}");
    d.stop();
}
