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
