//! Losing a key file: `kmsfs regenerate` rebuilds it from its passphrase, and restoring with
//! the wrong key files is refused with a message naming them.

mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

use kmsfs::crypto::Passphrase;
use kmsfs::service::Kms;
use kmsfs::store::{self, InitOptions};
use support::cli::{kmsfs, text, verify};
use support::keystore::{group, key, record};

fn stderr(o: &Output) -> String {
    text(&o.stderr)
}

/// `kmsfs regenerate --data-dir DIR` with `--hmk-passphrase-file` and `--kpk-passphrase-file`
/// for the files given.
fn regenerate(dir: &Path, hmk: Option<&Path>, kpk: Option<&Path>) -> Output {
    let mut args = vec![
        OsStr::new("regenerate"),
        OsStr::new("--data-dir"),
        dir.as_os_str(),
    ];
    if let Some(f) = hmk {
        args.extend([OsStr::new("--hmk-passphrase-file"), f.as_os_str()]);
    }
    if let Some(f) = kpk {
        args.extend([OsStr::new("--kpk-passphrase-file"), f.as_os_str()]);
    }
    kmsfs(args)
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
    group(&kms, "pool");
    let t = record(&kms, "pool", "k", "prelive", "");
    let key = key(&kms, &t);
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
    let o = verify(&s.dir);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("KMS_HMKF is absent"), "{}", stderr(&o));

    let o = regenerate(&s.dir, Some(&s.hmk_pw), Some(&s.kpk_pw));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(s.dir.join("KMS_HMKF")).unwrap(), hmk);
    assert_eq!(std::fs::read(s.dir.join("KMS_KPKF")).unwrap(), kpk);
    assert!(verify(&s.dir).status.success());
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
    let o = regenerate(&s.dir, Some(&s.kpk_pw), None);
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
    let o = regenerate(&dir, None, Some(&pw));
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
    let o = verify(&s.dir);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("KMS_KPKF does not belong to this keystore"),
        "{}",
        stderr(&o)
    );
    let err = Kms::open(&s.dir).err().unwrap().to_string();
    assert!(err.contains("KMS_KPKF"), "{err}");
    // Regenerating from the right passphrase mends it.
    let o = regenerate(&s.dir, None, Some(&s.kpk_pw));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(verify(&s.dir).status.success());
}
