//! The backing files through the library and the `kmsfs init` / `kmsfs verify` commands:
//! tampering is caught and named, init never overwrites, nothing secret is in plaintext,
//! and every acknowledged change survives a reopen.

mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

use kmsfs::service::Kms;
use kmsfs::store::{self, InitOptions};
use support::cli::{kmsfs, on_a_terminal, text, verify};
use support::keystore::{derived_record, group, key, record};

fn fresh_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    (tmp, dir)
}

const DESCRIPTION: &str = "payroll backups, do not share";
const PASSPHRASE: &str = "correct horse battery staple";

/// A keystore with groups, records in several states and descriptions; returns the keys.
fn populated(dir: &Path) -> Vec<Vec<u8>> {
    store::init(dir, InitOptions::default()).unwrap();
    let kms = Kms::open(dir).unwrap();
    let g = group(&kms, "pool");
    kms.describe_group(&g, DESCRIPTION).unwrap();
    let mut keys = Vec::new();
    for (i, state) in ["active", "prelive"].iter().enumerate() {
        let t = record(&kms, "pool", &format!("k{i}"), state, DESCRIPTION);
        keys.push(key(&kms, &t));
    }
    let t = derived_record(&kms, "pool", "derived", PASSPHRASE, None, "");
    keys.push(key(&kms, &t));
    keys
}

/// `kmsfs verify`: whether it passed, and its stderr.
fn verdict(dir: &Path) -> (bool, String) {
    let out = verify(dir);
    (out.status.success(), text(&out.stderr))
}

/// `kmsfs init --data-dir DIR` (random keys: stdin is not a terminal).
fn kmsfs_init(dir: &Path) -> Output {
    kmsfs([
        OsStr::new("init"),
        OsStr::new("--data-dir"),
        dir.as_os_str(),
    ])
}

#[test]
fn verify_names_the_file_for_a_changed_byte_anywhere() {
    let (_tmp, dir) = fresh_dir();
    populated(&dir);
    let (ok, err) = verdict(&dir);
    assert!(ok, "{err}");
    for file in ["KMS_DATA", "KMS_HMKF", "KMS_KPKF"] {
        let original = std::fs::read(dir.join(file)).unwrap();
        let n = original.len();
        for pos in [0, n / 2, n - 1] {
            let mut bytes = original.clone();
            bytes[pos] ^= 0x20;
            std::fs::write(dir.join(file), &bytes).unwrap();
            let (ok, err) = verdict(&dir);
            assert!(!ok, "{file} byte {pos} of {n}: verify accepted it");
            assert!(
                err.contains(file),
                "{file} byte {pos}: error does not name it: {err}"
            );
            assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        }
        std::fs::write(dir.join(file), &original).unwrap();
    }
    assert!(verdict(&dir).0);
}

#[test]
fn key_files_of_another_keystore_are_named() {
    let (_tmp, dir) = fresh_dir();
    let (_tmp2, other) = fresh_dir();
    populated(&dir);
    store::init(&other, InitOptions::default()).unwrap();
    for file in ["KMS_HMKF", "KMS_KPKF"] {
        let original = std::fs::read(dir.join(file)).unwrap();
        std::fs::copy(other.join(file), dir.join(file)).unwrap();
        let (ok, err) = verdict(&dir);
        assert!(!ok);
        assert!(
            err.contains(file) && err.contains("does not belong"),
            "{err}"
        );
        std::fs::write(dir.join(file), original).unwrap();
    }
    std::fs::remove_file(dir.join("KMS_KPKF")).unwrap();
    let (ok, err) = verdict(&dir);
    assert!(!ok && err.contains("KMS_KPKF is missing"), "{err}");
}

#[test]
fn init_never_overwrites() {
    let (_tmp, dir) = fresh_dir();
    let out = kmsfs_init(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before: Vec<Vec<u8>> = store::BACKUP_SET
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    for f in store::BACKUP_SET {
        let meta = std::fs::metadata(dir.join(f)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{f}");
    }
    let out = kmsfs_init(&dir);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));
    // Even a lone leftover key file blocks init.
    let (_tmp2, dir2) = fresh_dir();
    std::fs::create_dir_all(&dir2).unwrap();
    std::fs::write(dir2.join("KMS_KPKF"), b"x").unwrap();
    let out = kmsfs_init(&dir2);
    assert!(!out.status.success());
    assert_eq!(std::fs::read(dir2.join("KMS_KPKF")).unwrap(), b"x");
    let after: Vec<Vec<u8>> = store::BACKUP_SET
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    assert_eq!(before, after);
}

#[test]
fn init_refuses_a_directory_others_can_write() {
    use std::os::unix::fs::PermissionsExt;
    let (_tmp, dir) = fresh_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = kmsfs_init(&dir);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("writable by group or others"));
    assert!(!dir.join("KMS_DATA").exists());
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn nothing_secret_reaches_the_disk_in_plaintext() {
    let (_tmp, dir) = fresh_dir();
    let pw = dir.with_file_name("pw");
    std::fs::write(&pw, format!("{PASSPHRASE}\n")).unwrap();
    let out = kmsfs([
        OsStr::new("init"),
        OsStr::new("--data-dir"),
        dir.as_os_str(),
        OsStr::new("--hmk-passphrase-file"),
        pw.as_os_str(),
    ]);
    assert!(out.status.success());
    let kms = Kms::open(&dir).unwrap();
    let g = group(&kms, "pool");
    kms.describe_group(&g, DESCRIPTION).unwrap();
    let t = derived_record(&kms, "pool", "k", PASSPHRASE, None, DESCRIPTION);
    let key = key(&kms, &t);
    drop(kms);
    let hex_key = hex::encode(&key);
    for f in store::BACKUP_SET {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        for needle in [
            DESCRIPTION.as_bytes(),
            PASSPHRASE.as_bytes(),
            &key,
            hex_key.as_bytes(),
            b"pool",
        ] {
            assert!(!contains(&bytes, needle), "{f} holds a secret in plaintext");
        }
    }
}

#[test]
fn every_acknowledged_change_survives_a_reopen() {
    let (_tmp, dir) = fresh_dir();
    let keys = populated(&dir);
    let kms = Kms::open(&dir).unwrap();
    let ks = kms.read();
    let g = ks.group_by_name("pool").unwrap();
    assert_eq!(g.description, DESCRIPTION);
    assert_eq!(g.record_count(), 3);
    let tags: Vec<_> = ["k0", "k1", "derived"]
        .iter()
        .map(|n| ks.record_in(&g.tag, n).unwrap().tag.clone())
        .collect();
    assert_eq!(ks.record_in(&g.tag, "k0").unwrap().state.as_str(), "active");
    drop(ks);
    for (t, k) in tags.iter().zip(&keys) {
        assert_eq!(kms.unwrap_key(t).unwrap().expose(), &k[..]);
    }
}

#[test]
fn a_second_opener_is_refused_while_the_first_holds_the_lock() {
    let (_tmp, dir) = fresh_dir();
    store::init(&dir, InitOptions::default()).unwrap();
    let first = Kms::open(&dir).unwrap();
    let err = Kms::open(&dir)
        .expect_err("second open must fail")
        .to_string();
    assert!(err.contains("in use by another kmsfs process"), "{err}");
    drop(first);
}

#[test]
fn compaction_keeps_everything() {
    let (_tmp, dir) = fresh_dir();
    store::init(&dir, InitOptions::default()).unwrap();
    let kms = Kms::open(&dir).unwrap();
    group(&kms, "pool");
    let t = record(&kms, "pool", "k", "prelive", "");
    let key = key(&kms, &t);
    // Enough changes to pass the compaction threshold at least once.
    for i in 0..5000 {
        kms.describe_record(&t, &format!("d{i}")).unwrap();
    }
    let size = std::fs::metadata(dir.join("KMS_DATA")).unwrap().len();
    drop(kms);
    assert!(size < 2_000_000, "the log was not compacted: {size} bytes");
    let kms = Kms::open(&dir).unwrap();
    let ks = kms.read();
    let r = ks.record(&t).unwrap();
    assert_eq!(r.description, "d4999");
    drop(ks);
    assert_eq!(kms.unwrap_key(&t).unwrap().expose(), &key[..]);
}

#[test]
fn init_asks_for_passphrases_on_a_terminal() {
    let (tmp, dir) = fresh_dir();
    let out = on_a_terminal(
        &[
            OsStr::new("init"),
            OsStr::new("--data-dir"),
            dir.as_os_str(),
        ],
        "typed words, long enough\ntyped words, long enough\n\n",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("HMK passphrase (empty for a random key)"),
        "{text}"
    );
    assert!(
        text.contains("(from a passphrase)") && text.contains("(random)"),
        "{text}"
    );
    // The HMK really came from what was typed: regenerate rebuilds the same file from it.
    let hmk = std::fs::read(dir.join("KMS_HMKF")).unwrap();
    std::fs::remove_file(dir.join("KMS_HMKF")).unwrap();
    let pw = tmp.path().join("pw");
    std::fs::write(&pw, "typed words, long enough\n").unwrap();
    let o = kmsfs([
        OsStr::new("regenerate"),
        OsStr::new("--data-dir"),
        dir.as_os_str(),
        OsStr::new("--hmk-passphrase-file"),
        pw.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(dir.join("KMS_HMKF")).unwrap(), hmk);

    // Two different answers: refused, nothing written.
    let (_tmp2, dir2) = fresh_dir();
    let out = on_a_terminal(
        &[
            OsStr::new("init"),
            OsStr::new("--data-dir"),
            dir2.as_os_str(),
        ],
        "the first answer\nthe second answer\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("differ"));
    assert!(!dir2.join("KMS_DATA").exists());
}

#[test]
fn a_dropped_keystore_can_be_reopened_at_once() {
    // The lease timer must never be what keeps a dropped keystore (and its lock) alive: with
    // no lease it never holds a reference at all, which a tight watch over several of its
    // 250 ms ticks would catch.
    let (_tmp, dir) = fresh_dir();
    store::init(&dir, InitOptions::default()).unwrap();
    let kms = Kms::open(&dir).unwrap();
    let watch = std::time::Instant::now();
    while watch.elapsed() < std::time::Duration::from_millis(800) {
        assert_eq!(
            std::sync::Arc::strong_count(&kms),
            1,
            "something else holds the keystore"
        );
    }
    drop(kms);
    for _ in 0..50 {
        let kms = Kms::open(&dir).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(7));
        drop(kms);
    }
}
