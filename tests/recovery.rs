//! Losing a key file: `kmsfs regenerate` rebuilds it from its passphrase, and restoring with
//! the wrong key files is refused with a message naming them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kmsfs::crypto::Passphrase;
use kmsfs::service::{Kms, NewRecord};
use kmsfs::store::{self, InitOptions};

fn kmsfs(args: &[&str], dir: &Path, extra: &[&Path]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kmsfs"));
    c.stdin(std::process::Stdio::null());
    c.args(args).arg("--data-dir").arg(dir);
    for e in extra {
        c.arg(e);
    }
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    hmk_pw: PathBuf,
    kpk_pw: PathBuf,
    key: Vec<u8>,
}

fn derived_keystore() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let hmk_pw = tmp.path().join("hmk.pw");
    let kpk_pw = tmp.path().join("kpk.pw");
    std::fs::write(&hmk_pw, "hmk words\n").unwrap();
    std::fs::write(&kpk_pw, "kpk words\n").unwrap();
    store::init(
        &dir,
        InitOptions {
            hmk_passphrase: Some(Passphrase::new("hmk words".into())),
            kpk_passphrase: Some(Passphrase::new("kpk words".into())),
        },
    )
    .unwrap();
    let kms = Kms::open(&dir).unwrap();
    let g = kms
        .create_group(kmsfs::keystore::Name::parse("pool").unwrap())
        .unwrap();
    let t = kms
        .create_record(
            &g,
            NewRecord::prelive(kmsfs::keystore::Name::parse("k").unwrap()),
        )
        .unwrap();
    let key = kms.unwrap_key(&t).unwrap().expose().to_vec();
    Setup {
        _tmp: tmp,
        dir,
        hmk_pw,
        kpk_pw,
        key,
    }
}

#[test]
fn lost_key_files_are_rebuilt_from_their_passphrases() {
    let s = derived_keystore();
    let hmk = std::fs::read(s.dir.join("KMS_HMKF")).unwrap();
    let kpk = std::fs::read(s.dir.join("KMS_KPKF")).unwrap();
    std::fs::remove_file(s.dir.join("KMS_HMKF")).unwrap();
    std::fs::remove_file(s.dir.join("KMS_KPKF")).unwrap();
    let o = kmsfs(&["verify"], &s.dir, &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("KMS_HMKF is missing"), "{}", stderr(&o));

    let o = Command::new(env!("CARGO_BIN_EXE_kmsfs"))
        .stdin(std::process::Stdio::null())
        .args(["regenerate", "--data-dir"])
        .arg(&s.dir)
        .arg("--hmk-passphrase-file")
        .arg(&s.hmk_pw)
        .arg("--kpk-passphrase-file")
        .arg(&s.kpk_pw)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(s.dir.join("KMS_HMKF")).unwrap(), hmk);
    assert_eq!(std::fs::read(s.dir.join("KMS_KPKF")).unwrap(), kpk);
    assert!(kmsfs(&["verify"], &s.dir, &[]).status.success());
    let kms = Kms::open(&s.dir).unwrap();
    let t = {
        let ks = kms.read();
        let g = ks.group_by_name("pool").unwrap();
        ks.record_in(&g.tag, "k").unwrap().tag.clone()
    };
    assert_eq!(kms.unwrap_key(&t).unwrap().expose(), &s.key[..]);
}

#[test]
fn a_wrong_passphrase_writes_nothing() {
    let s = derived_keystore();
    std::fs::remove_file(s.dir.join("KMS_HMKF")).unwrap();
    // The KPK's passphrase is not the HMK's.
    let o = Command::new(env!("CARGO_BIN_EXE_kmsfs"))
        .stdin(std::process::Stdio::null())
        .args(["regenerate", "--data-dir"])
        .arg(&s.dir)
        .arg("--hmk-passphrase-file")
        .arg(&s.kpk_pw)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("wrong passphrase"), "{}", stderr(&o));
    assert!(!s.dir.join("KMS_HMKF").exists());
}

#[test]
fn random_keys_cannot_be_regenerated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    store::init(&dir, InitOptions::default()).unwrap();
    let pw = tmp.path().join("pw");
    std::fs::write(&pw, "x").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_kmsfs"))
        .stdin(std::process::Stdio::null())
        .args(["regenerate", "--data-dir"])
        .arg(&dir)
        .arg("--kpk-passphrase-file")
        .arg(&pw)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("random"), "{}", stderr(&o));
}

#[test]
fn restoring_with_another_keystores_key_files_is_refused_by_name() {
    let s = derived_keystore();
    let other = tempfile::tempdir().unwrap();
    let odir = other.path().join("data");
    store::init(&odir, InitOptions::default()).unwrap();
    std::fs::copy(odir.join("KMS_KPKF"), s.dir.join("KMS_KPKF")).unwrap();
    let o = kmsfs(&["verify"], &s.dir, &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("KMS_KPKF does not belong to this keystore"),
        "{}",
        stderr(&o)
    );
    let err = Kms::open(&s.dir).err().unwrap().to_string();
    assert!(err.contains("KMS_KPKF"), "{err}");
    // Regenerating from the right passphrase mends it.
    let o = Command::new(env!("CARGO_BIN_EXE_kmsfs"))
        .stdin(std::process::Stdio::null())
        .args(["regenerate", "--data-dir"])
        .arg(&s.dir)
        .arg("--kpk-passphrase-file")
        .arg(&s.kpk_pw)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(kmsfs(&["verify"], &s.dir, &[]).status.success());
}
