//! What the mount shows survives unmount and mount: keys byte for byte, states, names,
//! descriptions; and a second mount of the same keystore is refused while one is served.

mod support;

use kmsfs::service::{Kms, KmsError};
use kmsfs::store::StoreError;
use support::mount::Mounted;

#[test]
fn keystore_survives_unmount_and_mount() {
    let mut m = Mounted::new();
    m.bash_ok(
        r#"mkdir pool pool/k1 pool/k2 pool/k3 small \
        && echo AES_128 > small/.cipher && mkdir small/s1 \
        && echo active > small/s1/state \
        && echo active > pool/k1/state && echo active > pool/k2/state \
        && echo inactive > pool/k2/state \
        && echo 'pool of nightly keys' > pool/.description \
        && echo 'the first' > pool/k1/description \
        && jq -n '{name: "pp", state: "active", passphrase: "s3cret phrase"}' > pool/.create \
        && mv pool/k3 pool/spare"#,
    );
    let files = [
        "pool/.group.json",
        "pool/k1/record.json",
        "pool/k2/record.json",
        "pool/spare/record.json",
        "pool/pp/record.json",
        "small/.group.json",
        "small/s1/record.json",
    ];
    let before: Vec<String> = files.iter().map(|f| m.read(f)).collect();
    let keys = ["pool/k1/key", "pool/pp/key", "small/s1/key"];
    let key_bytes: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| std::fs::read(m.p(k)).unwrap())
        .collect();
    let tags = m.bash_ok("ls .by-tag | sort");
    m.remount();
    for (f, text) in files.iter().zip(&before) {
        assert_eq!(&m.read(f), text, "{f}");
    }
    for (k, bytes) in keys.iter().zip(&key_bytes) {
        assert_eq!(&std::fs::read(m.p(k)).unwrap(), bytes, "{k}");
    }
    assert_eq!(key_bytes[2].len(), 16);
    assert_eq!(m.bash_ok("ls .by-tag | sort"), tags);
    assert_eq!(m.state("pool/k2"), "inactive");
    assert_eq!(
        std::fs::read_link(m.p("pool/.active")).unwrap(),
        std::path::Path::new("pp")
    );
    // And it keeps working after the remount.
    m.bash_ok("mkdir pool/k4 && echo active > pool/k4/state");
    assert_eq!(m.state("pool/pp"), "inactive");
}

#[test]
fn a_second_mount_of_the_same_keystore_is_refused() {
    let m = Mounted::new();
    match Kms::open(&m.data()) {
        Err(KmsError::Store(StoreError::Locked { .. })) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("the keystore was opened twice"),
    }
}
