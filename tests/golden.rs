//! A data directory written by format version 1 is committed under tests/golden/v1; every
//! later version of kmsfs must keep loading it, keys byte for byte.
//!
//! It was produced once with `KMSFS_WRITE_GOLDEN=1 cargo test --test golden` (which writes
//! only when the directory does not exist). Never regenerate it: add a v2 beside it instead.

mod support;

use std::path::{Path, PathBuf};

use kmsfs::crypto::Passphrase;
use kmsfs::service::Kms;
use kmsfs::store::{self, Access, InitOptions, Store};
use serde_json::{json, Value};
use support::keystore::{derived_record, group, key, record};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1")
}

/// The HMK and KPK of the golden keystore are derived from this passphrase.
const PASSPHRASE: &str = "golden passphrase v1";

fn write_golden(dir: &Path) {
    let pass = || Some(Passphrase::new(PASSPHRASE.into()));
    let data = dir.join("data");
    store::init(
        &data,
        InitOptions {
            hmk_passphrase: pass(),
            kpk_passphrase: pass(),
        },
    )
    .unwrap();
    let kms = Kms::open(&data).unwrap();
    let pool = group(&kms, "pool");
    kms.describe_group(&pool, "nightly backups").unwrap();
    let legacy = group(&kms, "legacy");
    kms.set_group_cipher(&legacy, "AES_128".parse().unwrap())
        .unwrap();
    let mut expected = Vec::new();
    // (group, name, state, derived): a derived record is prelive.
    let specs = [
        ("pool", "k-terminated", "terminated", false),
        ("pool", "k-deprecated", "deprecated", false),
        ("pool", "k-inactive", "inactive", false),
        ("pool", "k-derived", "prelive", true),
        ("pool", "k-active", "active", false),
        ("legacy", "old", "active", false),
    ];
    for (g, name, state, derived) in specs {
        let description = format!("{name} description");
        let t = if derived {
            assert_eq!(state, "prelive");
            derived_record(&kms, g, name, "record passphrase", None, &description)
        } else {
            record(&kms, g, name, state, &description)
        };
        expected.push(json!({
            "group": g, "name": name, "state": state, "tag": t.as_str(),
            "description": description,
            "key": hex::encode(key(&kms, &t)),
        }));
    }
    drop(kms);
    std::fs::remove_file(data.join(store::LOCK_FILE)).unwrap();
    let doc = json!({ "passphrase": PASSPHRASE, "records": expected });
    std::fs::write(
        dir.join("expected.json"),
        serde_json::to_string_pretty(&doc).unwrap() + "\n",
    )
    .unwrap();
}

#[test]
fn format_v1_keeps_loading() {
    let dir = golden_dir();
    if std::env::var_os("KMSFS_WRITE_GOLDEN").is_some() && !dir.exists() {
        write_golden(&dir);
    }
    let expected: Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    // Work on a copy: opening for writing would touch the committed files.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for f in store::BACKUP_SET {
        std::fs::copy(dir.join("data").join(f), data.join(f)).unwrap();
    }
    let (store, ks, kpk, _) = Store::open(&data, Access::ReadOnly).unwrap();
    assert!(store.header().hmk_kdf.is_some() && store.header().kpk_kdf.is_some());
    ks.check_invariants().unwrap();
    let records = expected["records"].as_array().unwrap();
    assert_eq!(ks.record_count(), records.len());
    assert_eq!(ks.group_count(), 2);
    assert_eq!(
        ks.group_by_name("pool").unwrap().description,
        "nightly backups"
    );
    assert_eq!(
        ks.group_by_name("legacy").unwrap().cipher.as_str(),
        "AES_128"
    );
    for r in records {
        let g = ks.group_by_name(r["group"].as_str().unwrap()).unwrap();
        let rec = ks.record_in(&g.tag, r["name"].as_str().unwrap()).unwrap();
        assert_eq!(rec.tag.as_str(), r["tag"].as_str().unwrap());
        assert_eq!(rec.state.as_str(), r["state"].as_str().unwrap());
        assert_eq!(rec.description, r["description"].as_str().unwrap());
        let key = kpk.unwrap(&rec.wrapped_key.0, rec.tag.as_str()).unwrap();
        assert_eq!(hex::encode(key.expose()), r["key"].as_str().unwrap());
    }
    // And the full daemon path opens it too.
    let kms = Kms::open(&data).unwrap();
    assert_eq!(kms.read().record_count(), records.len());
}

/// A format-1 keystore stays format 1 through changes format 1 can hold, and is rewritten as
/// format 2, keeping everything, before its first rotation setting (which format 1 cannot).
#[test]
fn format_v1_is_rewritten_as_v2_by_its_first_rotation_setting() {
    let dir = golden_dir();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for f in store::BACKUP_SET {
        std::fs::copy(dir.join("data").join(f), data.join(f)).unwrap();
    }
    let format_on_disk = || {
        let bytes = std::fs::read(data.join("KMS_DATA")).unwrap();
        u16::from_le_bytes([bytes[11], bytes[12]])
    };
    assert_eq!(format_on_disk(), 1);
    let kms = Kms::open(&data).unwrap();
    let pool = kms.read().group_by_name("pool").unwrap().tag.clone();
    kms.describe_group(&pool, "still format 1").unwrap();
    assert_eq!(
        format_on_disk(),
        1,
        "a change format 1 holds needs no rewrite"
    );
    assert_eq!(kms.status().format_version, 1);
    let before = serde_json::to_string(&kms.read().to_snapshot()).unwrap();
    let every_day = kmsfs::keystore::Rotation {
        period: Some(kmsfs::keystore::Period::from_secs(86_400).unwrap()),
        retire_after: None,
    };
    kms.set_rotation(&pool, every_day).unwrap();
    assert_eq!(format_on_disk(), store::FORMAT_VERSION);
    assert_eq!(kms.status().format_version, store::FORMAT_VERSION);
    drop(kms);
    let (_, ks, kpk, _) = Store::open(&data, Access::ReadOnly).unwrap();
    ks.check_invariants().unwrap();
    assert_eq!(ks.group(&pool).unwrap().rotation, every_day);
    // Everything else is as it was, keys included.
    let mut after = ks.to_snapshot();
    after
        .groups
        .iter_mut()
        .for_each(|g| g.rotation = Default::default());
    let mut before: kmsfs::keystore::Snapshot = serde_json::from_str(&before).unwrap();
    for g in before.groups.iter_mut().chain(after.groups.iter_mut()) {
        g.modified = kmsfs::keystore::Timestamp(0);
    }
    assert_eq!(
        serde_json::to_string(&before).unwrap(),
        serde_json::to_string(&after).unwrap()
    );
    for r in ks.records() {
        kpk.unwrap(&r.wrapped_key.0, r.tag.as_str()).unwrap();
    }
    support::cli::ok("verify", support::cli::verify(&data));
}
