//! Changing the HMK and the KPK (offline with `kmsfs change-key`, and through a real mount's
//! `.change-key`), and master keys kept off the disk as a passphrase given at every start:
//! every record's key byte for byte the same afterwards, old key files kept for old backups,
//! `kmsfs info` telling what a copy needs, clear errors for a missing or wrong key.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use support::cli::{failed, kmsfs, ok};
use support::daemon::{mount_refused_with, Daemon};
use support::examples::{drill, the_backup};

const HMK_PASS: &str = "correct horse battery staple";
const KPK_PASS: &str = "a second passphrase, also long";

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn write_pass(dir: &Path, name: &str, pass: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{pass}\n")).unwrap();
    p
}

/// A keystore with a few records in several states, and every readable key by path.
fn populated(d: &Daemon) -> BTreeMap<String, Vec<u8>> {
    d.sh_ok(
        r#"mkdir pool pool/a pool/b web web/c
echo active > pool/a/state
echo active > pool/b/state          # demotes a to inactive
echo active > web/c/state
jq -n '{name:"d", state:"active", passphrase:"a record passphrase"}' > web/.create"#,
    );
    keys(d)
}

fn keys(d: &Daemon) -> BTreeMap<String, Vec<u8>> {
    ["pool/a", "pool/b", "web/c", "web/d"]
        .iter()
        .map(|r| {
            (
                r.to_string(),
                std::fs::read(d.p(&format!("{r}/key"))).unwrap(),
            )
        })
        .collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn info(data: &Path) -> serde_json::Value {
    let out = ok(
        "kmsfs info",
        kmsfs(["info", "--json", "--data-dir", arg(data)]),
    );
    serde_json::from_str(&out).unwrap()
}

fn file_names(data: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn change_key_offline_keeps_every_key_and_the_old_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mnt = dir.path().join("mnt");
    let d = Daemon::start_init(&data, &mnt);
    let before = populated(&d);
    // Refused while mounted: nothing changes.
    let err = failed(
        "change-key while mounted",
        kmsfs(["change-key", "--data-dir", arg(&data), "hmk"]),
    );
    assert!(err.contains("served by a kmsfs mount"), "{err}");
    assert!(err.contains(".change-key"), "{err}");
    d.stop();
    let backup = dir.path().join("backup");
    std::fs::create_dir(&backup).unwrap();
    for f in ["KMS_DATA", "KMS_HMKF", "KMS_KPKF"] {
        std::fs::copy(data.join(f), backup.join(f)).unwrap();
    }
    let old = info(&data);

    let out = ok(
        "change-key hmk",
        kmsfs(["change-key", "--data-dir", arg(&data), "hmk"]),
    );
    let old_hmk = old["hmk"]["id"].as_str().unwrap();
    assert!(out.contains(old_hmk), "{out}");
    let kept = data.join(format!("KMS_HMKF.{old_hmk}"));
    assert_eq!(mode(&kept), 0o400);
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        std::fs::read(backup.join("KMS_HMKF")).unwrap()
    );
    let pass = write_pass(dir.path(), "kpk.pass", KPK_PASS);
    ok(
        "change-key kpk",
        kmsfs([
            "change-key",
            "--data-dir",
            arg(&data),
            "kpk",
            "--passphrase-file",
            arg(&pass),
        ]),
    );
    let now = info(&data);
    assert_ne!(now["hmk"]["id"], old["hmk"]["id"]);
    assert_ne!(now["kpk"]["id"], old["kpk"]["id"]);
    assert_eq!(now["hmk"]["derived_from_passphrase"], false);
    assert_eq!(now["kpk"]["derived_from_passphrase"], true);
    assert!(now["kpk"]["changed"].as_str().unwrap() >= old["kpk"]["changed"].as_str().unwrap());
    assert_eq!(now["kept_key_files"].as_array().unwrap().len(), 2);
    ok("verify", support::cli::verify(&data));

    let d = Daemon::start(&data, &mnt);
    assert_eq!(keys(&d), before, "every key is byte for byte the same");
    let status = d.json(".status");
    assert_eq!(status["hmk"]["id"], now["hmk"]["id"]);
    assert_eq!(status["kpk"]["derived"], true);
    assert_eq!(status["kpk"]["kept"], "file");
    d.stop();

    // The backup from before the change: its own key files open it; with today's key files
    // verify says which kept file holds the key it needs.
    ok("verify of the old backup", support::cli::verify(&backup));
    std::fs::copy(data.join("KMS_HMKF"), backup.join("KMS_HMKF")).unwrap();
    std::fs::copy(&kept, backup.join(kept.file_name().unwrap())).unwrap();
    let err = failed("verify with the new HMK", support::cli::verify(&backup));
    assert!(
        err.contains(&format!("KMS_HMKF.{old_hmk} holds")),
        "verify names the file that holds the key: {err}"
    );
    // The audit log of the keystore goes on, one chain, across the HMK change.
    ok(
        "audit verify",
        kmsfs([
            "audit",
            "verify",
            "--data-dir",
            arg(&data),
            arg(&data.join("audit.log")),
        ]),
    );
    let log = std::fs::read_to_string(data.join("audit.log")).unwrap();
    assert!(log.contains("\"change hmk\""), "{log}");
    assert!(log.contains("\"change kpk\""), "{log}");
}

#[test]
fn change_key_through_the_mount_is_checked_audited_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mnt = dir.path().join("mnt");
    let d = Daemon::start_init(&data, &mnt);
    let before = populated(&d);
    let id = |d: &Daemon, k: &str| d.json(".status")[k]["id"].as_str().unwrap().to_string();
    let hmk0 = id(&d, "hmk");
    let kpk0 = id(&d, "kpk");
    // Write-only for the owner, like .create: it may carry a passphrase.
    assert_eq!(mode(&d.p(".change-key")), 0o200);
    d.sh_ok("echo hmk > .change-key");
    let hmk1 = id(&d, "hmk");
    assert_ne!(hmk1, hmk0);
    d.sh_ok(r#"jq -n '{key:"kpk", passphrase:"the new kpk passphrase"}' > .change-key"#);
    let kpk1 = id(&d, "kpk");
    assert_ne!(kpk1, kpk0);
    assert_eq!(d.json(".status")["kpk"]["derived"], true);
    assert_eq!(keys(&d), before);
    // Bad requests: EINVAL, nothing changed, the passphrase never echoed.
    for bad in [
        "echo bogus > .change-key",
        r#"echo '{"key":"hmk","passphrase":7}' > .change-key"#,
        r#"echo '{"key":"hmk","extra":"secret-ish"}' > .change-key"#,
        r#"echo '{"key":"xyz","passphrase":"hunter2hunter2"}' > .change-key"#,
    ] {
        let err = d.sh_err(bad);
        assert!(err.contains("Invalid argument"), "{bad}: {err}");
    }
    assert!(!d.read(".errors").contains("hunter2"));
    assert_eq!(id(&d, "hmk"), hmk1);
    // Refused with EROFS while quiesced; the backup set does not change.
    d.sh_ok("echo quiesce > .quiesce");
    let frozen = std::fs::read(data.join("KMS_DATA")).unwrap();
    let err = d.sh_err("echo hmk > .change-key");
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(std::fs::read(data.join("KMS_DATA")).unwrap(), frozen);
    d.sh_ok("echo unquiesce > .quiesce");
    assert_eq!(id(&d, "hmk"), hmk1);
    let log = std::fs::read_to_string(data.join("audit.log")).unwrap();
    assert!(log.contains(r#""operation":"change hmk","group":null,"record":null,"key_tag":null,"new_name":null,"result":"allowed""#), "{log}");
    assert!(log.contains(r#""operation":"change hmk","group":null,"record":null,"key_tag":null,"new_name":null,"result":"refused""#), "{log}");
    // Durable: after a crash (SIGKILL) the new keys open it, and every key is the same.
    let mut d = d;
    d.crash();
    drop(d);
    let d = Daemon::start(&data, &mnt);
    assert_eq!(id(&d, "hmk"), hmk1);
    assert_eq!(id(&d, "kpk"), kpk1);
    assert_eq!(keys(&d), before);
    d.stop();
    ok("verify", support::cli::verify(&data));
    assert!(file_names(&data).contains(&format!("KMS_HMKF.{hmk0}")));
    assert!(file_names(&data).contains(&format!("KMS_KPKF.{kpk0}")));
}

#[test]
fn a_passphrase_at_start_keeps_the_keys_off_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mnt = dir.path().join("mnt");
    let hp = write_pass(dir.path(), "hmk.pass", HMK_PASS);
    let kp = write_pass(dir.path(), "kpk.pass", KPK_PASS);
    let wrong = write_pass(dir.path(), "wrong.pass", "not the right passphrase");
    ok(
        "init",
        kmsfs([
            "init",
            "--data-dir",
            arg(&data),
            "--hmk-passphrase-file",
            arg(&hp),
            "--kpk-passphrase-file",
            arg(&kp),
        ]),
    );
    let d = Daemon::start(&data, &mnt);
    let before = populated(&d);
    d.stop();
    // A random key cannot go: it would be lost.
    ok(
        "seal kpk",
        kmsfs([
            "seal",
            "--data-dir",
            arg(&data),
            "kpk",
            "--passphrase-only",
            "--kpk-passphrase-file",
            arg(&kp),
        ]),
    );
    // The wrong passphrase removes nothing.
    let err = failed(
        "seal hmk with a wrong passphrase",
        kmsfs([
            "seal",
            "--data-dir",
            arg(&data),
            "hmk",
            "--passphrase-only",
            "--hmk-passphrase-file",
            arg(&wrong),
            "--kpk-passphrase-file",
            arg(&kp),
        ]),
    );
    assert!(err.contains("wrong HMK passphrase"), "{err}");
    assert!(data.join("KMS_HMKF").exists());
    ok(
        "seal hmk",
        kmsfs([
            "seal",
            "--data-dir",
            arg(&data),
            "hmk",
            "--passphrase-only",
            "--hmk-passphrase-file",
            arg(&hp),
            "--kpk-passphrase-file",
            arg(&kp),
        ]),
    );
    assert!(!data.join("KMS_HMKF").exists());
    assert!(!data.join("KMS_KPKF").exists());
    let i = info(&data);
    assert_eq!(i["hmk"]["kept"], "passphrase");
    assert_eq!(i["kpk"]["kept"], "passphrase");

    // Without the passphrase: one clear error naming the key and how to give it.
    let err = mount_refused_with(&data, &mnt, &[]);
    assert!(err.contains("HMK is derived from a passphrase"), "{err}");
    assert!(err.contains("--hmk-passphrase-file"), "{err}");
    // A wrong one: one clear error, nothing changed.
    let files = file_names(&data);
    let err = mount_refused_with(
        &data,
        &mnt,
        &[
            "--hmk-passphrase-file",
            arg(&wrong),
            "--kpk-passphrase-file",
            arg(&kp),
        ],
    );
    assert!(err.contains("wrong HMK passphrase"), "{err}");
    assert_eq!(file_names(&data), files);
    // Through inherited descriptors (verify reads them as mount does).
    let out = support::cli::bash_in(
        dir.path(),
        &format!(
            "kmsfs verify --data-dir {} --hmk-passphrase-file /dev/fd/3 --kpk-passphrase-file /dev/fd/4 3<hmk.pass 4<kpk.pass",
            arg(&data)
        ),
        &[("PATH", &support::cli::path_with_kmsfs())],
    );
    ok("verify with passphrases from descriptors", out);
    let unlock = [
        "--hmk-passphrase-file",
        arg(&hp),
        "--kpk-passphrase-file",
        arg(&kp),
    ];
    let d = Daemon::start_with(&data, &mnt, &unlock);
    assert_eq!(keys(&d), before);
    assert_eq!(d.json(".status")["hmk"]["kept"], "passphrase");
    // Changing a key kept as a passphrase needs a new passphrase: a random one is refused.
    let err = d.sh_err("echo hmk > .change-key");
    assert!(err.contains("Invalid argument"), "{err}");
    assert!(d.read(".errors").contains("kept off the disk"));
    // The backup script and the restore drill, with the passphrases: the backup holds
    // KMS_DATA alone (no key file exists to copy).
    let root = dir.path().join("backups");
    drill(
        dir.path(),
        "backup.sh",
        &[arg(&d.mnt), arg(&data), arg(&root)],
        &unlock,
    );
    let backup = the_backup(&root);
    assert_eq!(file_names(&backup), ["KMS_DATA"]);
    let report = drill(dir.path(), "restore-drill.sh", &[arg(&backup)], &unlock);
    assert!(
        report.contains("restore drill passed: 2 group(s), 4 record(s)"),
        "{report}"
    );
    // A backup is KMS_DATA alone.
    d.sh_ok("echo quiesce > .quiesce");
    let restore = dir.path().join("restore");
    std::fs::create_dir(&restore).unwrap();
    std::fs::copy(data.join("KMS_DATA"), restore.join("KMS_DATA")).unwrap();
    d.sh_ok("echo unquiesce > .quiesce && echo inactive > pool/b/state");
    d.stop();
    let i = info(&restore);
    assert_eq!(i["hmk"]["kept"], "passphrase", "{i}");
    assert!(i["hmk"]["needs"].as_str().unwrap().contains("passphrase"));
    let restored = dir.path().join("mnt2");
    let d = Daemon::start_with(&restore, &restored, &unlock);
    assert_eq!(keys(&d), before, "the backup restores every key");
    assert_eq!(
        d.read("pool/b/state").trim(),
        "active",
        "as it was at the freeze"
    );
    d.stop();
    // The passphrases never reached a file of the data directory or the daemon's log.
    for f in file_names(&data) {
        let bytes = std::fs::read(data.join(&f)).unwrap();
        for p in [HMK_PASS, KPK_PASS] {
            assert!(
                !bytes.windows(p.len()).any(|w| w == p.as_bytes()),
                "{f} holds a passphrase"
            );
        }
    }
}

#[test]
fn a_key_kept_as_a_passphrase_is_asked_for_at_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hp = write_pass(dir.path(), "hmk.pass", HMK_PASS);
    ok(
        "init",
        kmsfs([
            "init",
            "--data-dir",
            arg(&data),
            "--hmk-passphrase-file",
            arg(&hp),
        ]),
    );
    ok(
        "seal hmk",
        kmsfs([
            "seal",
            "--data-dir",
            arg(&data),
            "hmk",
            "--passphrase-only",
            "--hmk-passphrase-file",
            arg(&hp),
        ]),
    );
    let verify = [
        std::ffi::OsStr::new("verify"),
        std::ffi::OsStr::new("--data-dir"),
        data.as_os_str(),
    ];
    let out = support::cli::on_a_terminal(&verify, &format!("{HMK_PASS}\n"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("HMK passphrase (KMS_HMKF is not on disk): "),
        "{text}"
    );
    // (What was typed shows in `script`'s transcript: it is typed ahead, before the prompt
    // turns echo off, and the terminal echoes it.)
    assert!(text.contains("ok: 0 group(s)"), "{text}");
    let out = support::cli::on_a_terminal(&verify, "not it at all\n");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("wrong HMK passphrase"), "{text}");
}
