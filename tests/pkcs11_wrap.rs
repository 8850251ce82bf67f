//! The HMK or KPK protected by a non-extractable AES-256 key in a real SoftHSM2 token
//! (`kmsfs::sealing::pkcs11`). Every test holds `softhsm::shared()`: one set of tokens for
//! the binary, made before the module is first initialised.

mod support;

use std::path::Path;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use kmsfs::crypto::SecretKey32;
use kmsfs::sealing::pkcs11::{describe, recover, Blob, Pin, Pkcs11Error, TokenKey};
use sha2::{Digest, Sha256};
use support::softhsm::{self, MODULE, OTHER_TOKEN, PIN, TOKEN};

fn key_in(token: &str, label: &str) -> TokenKey {
    TokenKey {
        module: MODULE.into(),
        token_label: token.into(),
        key_label: label.into(),
    }
}

fn key(label: &str) -> TokenKey {
    key_in(TOKEN, label)
}

fn pin() -> Pin {
    Pin::new(PIN.into())
}

fn wrong_pin() -> Pin {
    Pin::new("not-the-pin-0000".into())
}

/// A token key made for the test, and a blob of a random master key under it.
fn protected(label: &str, purpose: &str) -> (SecretKey32, Vec<u8>) {
    let tk = key(label);
    tk.ensure(&pin()).unwrap();
    let master = SecretKey32::random();
    let blob = tk.protect(&pin(), &master, purpose).unwrap();
    (master, blob)
}

fn recover_it(blob: &[u8], purpose: &str) -> Result<SecretKey32, Pkcs11Error> {
    recover(Path::new(MODULE), &pin(), blob, purpose)
}

/// The blob with one field changed and a valid checksum again.
fn edited(blob: &[u8], change: impl FnOnce(&mut Blob)) -> Vec<u8> {
    let mut b = Blob::decode(blob).unwrap();
    change(&mut b);
    b.encode().unwrap()
}

#[test]
fn ensure_creates_the_key_once_then_reports_it_existing() {
    let _hsm = softhsm::shared();
    let tk = key("ensure-once");
    assert!(tk.ensure(&pin()).unwrap(), "first ensure creates the key");
    assert!(!tk.ensure(&pin()).unwrap(), "second ensure finds it");
    assert!(!key("ensure-once").ensure(&pin()).unwrap());
    // The same label in another token is another key.
    assert!(key_in(OTHER_TOKEN, "ensure-once").ensure(&pin()).unwrap());
}

/// Reads the key back through cryptoki directly, not through the module under test.
#[test]
fn the_created_key_is_sensitive_and_its_value_cannot_be_read() {
    let _hsm = softhsm::shared();
    key("look-inside").ensure(&pin()).unwrap();

    let ctx = Pkcs11::new(MODULE).unwrap();
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let slot = ctx
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == TOKEN)
        .expect("the test token");
    let session = ctx.open_rw_session(slot).unwrap();
    session
        .login(UserType::User, Some(&AuthPin::from(PIN)))
        .unwrap();
    let found = session
        .find_objects(&[Attribute::Label(b"look-inside".to_vec())])
        .unwrap();
    assert_eq!(found.len(), 1, "exactly one object labelled look-inside");
    let handle = found[0];

    let attrs = session
        .get_attributes(
            handle,
            &[
                AttributeType::KeyType,
                AttributeType::ValueLen,
                AttributeType::Token,
                AttributeType::Private,
                AttributeType::Sensitive,
                AttributeType::AlwaysSensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::Encrypt,
                AttributeType::Decrypt,
                AttributeType::Wrap,
                AttributeType::Unwrap,
                AttributeType::Modifiable,
            ],
        )
        .unwrap();
    let want = [
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::AlwaysSensitive(true),
        Attribute::Extractable(false),
        Attribute::NeverExtractable(true),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Modifiable(false),
    ];
    for w in &want {
        assert!(attrs.contains(w), "{w:?} missing from {attrs:?}");
    }

    // CKA_VALUE is refused: the token reports it sensitive and returns no value.
    let info = session
        .get_attribute_info(handle, &[AttributeType::Value])
        .unwrap();
    assert!(matches!(info[..], [AttributeInfo::Sensitive]), "{info:?}");
    let value = session
        .get_attributes(handle, &[AttributeType::Value])
        .unwrap();
    assert!(
        !value.iter().any(|a| matches!(a, Attribute::Value(_))),
        "{value:?}"
    );
    // Nor can it be made extractable afterwards.
    assert!(session
        .update_attributes(handle, &[Attribute::Extractable(true)])
        .is_err());
    assert!(session
        .update_attributes(handle, &[Attribute::Sensitive(false)])
        .is_err());
    // Dropping the session closes it, and with it this process's login.
}

#[test]
fn protect_then_recover_round_trips_byte_for_byte() {
    let _hsm = softhsm::shared();
    let (master, blob) = protected("round-trip", "hmk");
    assert_eq!(recover_it(&blob, "hmk").unwrap().expose(), master.expose());
    // A fresh IV each time: the same key protected twice gives two blobs.
    let again = key("round-trip").protect(&pin(), &master, "hmk").unwrap();
    assert_ne!(again, blob);
    assert_eq!(recover_it(&again, "hmk").unwrap().expose(), master.expose());
    // Neither holds the key in clear.
    assert!(!blob.windows(32).any(|w| w == master.expose()));
    // A PIN from a file's first line.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pin");
    std::fs::write(&file, format!("{PIN}\nignored second line\n")).unwrap();
    let from_file = Pin::from_file(&file).unwrap();
    let got = recover(Path::new(MODULE), &from_file, &blob, "hmk").unwrap();
    assert_eq!(got.expose(), master.expose());
}

#[test]
fn a_wrong_pin_is_a_pin_error() {
    let _hsm = softhsm::shared();
    let (master, blob) = protected("wrong-pin", "hmk");
    let tk = key("wrong-pin");
    let is_pin = |r: Result<(), Pkcs11Error>| match r {
        Err(Pkcs11Error::Pin) => {}
        other => panic!("expected Pin, got {other:?}"),
    };
    is_pin(recover(Path::new(MODULE), &wrong_pin(), &blob, "hmk").map(drop));
    is_pin(tk.ensure(&wrong_pin()).map(drop));
    is_pin(tk.protect(&wrong_pin(), &master, "hmk").map(drop));
    assert!(Pkcs11Error::Pin.to_string().contains("PIN"));
    // The right PIN still works afterwards.
    assert_eq!(recover_it(&blob, "hmk").unwrap().expose(), master.expose());
}

#[test]
fn a_missing_token_label_is_no_token() {
    let _hsm = softhsm::shared();
    match key_in("no-such-token", "k").ensure(&pin()) {
        Err(Pkcs11Error::NoToken { label }) => assert_eq!(label, "no-such-token"),
        other => panic!("expected NoToken, got {other:?}"),
    }
    let (_, blob) = protected("for-no-token", "hmk");
    let elsewhere = edited(&blob, |b| b.token_label = "no-such-token".into());
    match recover_it(&elsewhere, "hmk") {
        Err(e @ Pkcs11Error::NoToken { .. }) => {
            assert!(e.to_string().contains("\"no-such-token\""), "{e}")
        }
        other => panic!("expected NoToken, got {other:?}"),
    }
}

#[test]
fn a_missing_key_label_is_no_key() {
    let _hsm = softhsm::shared();
    let master = SecretKey32::random();
    match key("never-created").protect(&pin(), &master, "hmk") {
        Err(Pkcs11Error::NoKey { token, key }) => {
            assert_eq!((token.as_str(), key.as_str()), (TOKEN, "never-created"))
        }
        other => panic!("expected NoKey, got {other:?}"),
    }
    let (_, blob) = protected("for-no-key", "hmk");
    let other_key = edited(&blob, |b| b.key_label = "never-created".into());
    match recover_it(&other_key, "hmk") {
        Err(Pkcs11Error::NoKey { token, key }) => {
            assert_eq!((token.as_str(), key.as_str()), (TOKEN, "never-created"))
        }
        other => panic!("expected NoKey, got {other:?}"),
    }
}

#[test]
fn a_blob_with_any_single_byte_flipped_never_yields_a_key() {
    let _hsm = softhsm::shared();
    let (master, blob) = protected("flipped", "hmk");
    for i in 0..blob.len() {
        let mut b = blob.clone();
        b[i] ^= 0x01;
        match recover_it(&b, "hmk") {
            Err(Pkcs11Error::BadBlob(_) | Pkcs11Error::Authentication) => {}
            other => panic!("byte {i} flipped: {other:?}"),
        }
    }
    // With the checksum made valid again, the token itself must refuse every change; the
    // labels' bytes name other tokens or keys, which do not exist.
    let body_len = blob.len() - 32;
    for i in 0..body_len {
        let mut b = blob[..body_len].to_vec();
        b[i] ^= 0x01;
        let sum = Sha256::digest(&b);
        b.extend_from_slice(&sum);
        match recover_it(&b, "hmk") {
            Err(
                Pkcs11Error::BadBlob(_)
                | Pkcs11Error::Authentication
                | Pkcs11Error::NoToken { .. }
                | Pkcs11Error::NoKey { .. },
            ) => {}
            other => panic!("byte {i} flipped, checksum fixed: {other:?}"),
        }
    }
    // The IV and the ciphertext (with its tag): every flip is the token's refusal.
    let decoded = Blob::decode(&blob).unwrap();
    for i in 0..decoded.iv.len() {
        let b = edited(&blob, |b| b.iv[i] ^= 0x80);
        assert!(matches!(
            recover_it(&b, "hmk"),
            Err(Pkcs11Error::Authentication)
        ));
    }
    for i in 0..decoded.ciphertext.len() {
        let b = edited(&blob, |b| b.ciphertext[i] ^= 0x80);
        match recover_it(&b, "hmk") {
            Err(Pkcs11Error::Authentication) => {}
            other => panic!("ciphertext byte {i}: {other:?}"),
        }
    }
    assert_eq!(recover_it(&blob, "hmk").unwrap().expose(), master.expose());
}

#[test]
fn a_blob_for_one_purpose_does_not_recover_as_another() {
    let _hsm = softhsm::shared();
    let (master, blob) = protected("purpose", "hmk");
    match recover_it(&blob, "kpk") {
        Err(Pkcs11Error::BadBlob(msg)) => assert!(msg.contains("hmk"), "{msg}"),
        other => panic!("expected BadBlob, got {other:?}"),
    }
    // Relabelled as a KPK blob (checksum fixed): the additional data differs, the token refuses.
    let relabelled = edited(&blob, |b| b.purpose = "kpk".into());
    assert!(matches!(
        recover_it(&relabelled, "kpk"),
        Err(Pkcs11Error::Authentication)
    ));
    assert_eq!(recover_it(&blob, "hmk").unwrap().expose(), master.expose());
}

#[test]
fn a_key_of_the_same_label_in_another_token_cannot_recover() {
    let _hsm = softhsm::shared();
    let (master, blob) = protected("same-label", "kpk");
    assert!(key_in(OTHER_TOKEN, "same-label").ensure(&pin()).unwrap());
    let moved = edited(&blob, |b| b.token_label = OTHER_TOKEN.into());
    match recover_it(&moved, "kpk") {
        Err(e @ Pkcs11Error::Authentication) => {
            assert!(e.to_string().contains("another key"), "{e}")
        }
        other => panic!("expected Authentication, got {other:?}"),
    }
    // And a blob made in the other token does not open with the first token's key.
    let theirs = key_in(OTHER_TOKEN, "same-label")
        .protect(&pin(), &master, "kpk")
        .unwrap();
    let back = edited(&theirs, |b| b.token_label = TOKEN.into());
    assert!(matches!(
        recover_it(&back, "kpk"),
        Err(Pkcs11Error::Authentication)
    ));
    assert_eq!(
        recover_it(&theirs, "kpk").unwrap().expose(),
        master.expose()
    );
}

#[test]
fn an_unloadable_module_is_a_module_error() {
    let hsm = softhsm::shared();
    let (_, blob) = protected("for-module", "hmk");
    // Missing, and a file that is not a library.
    for module in [Path::new("/nonexistent/libpkcs11.so"), hsm.conf.as_path()] {
        let tk = TokenKey {
            module: module.to_owned(),
            ..key("for-module")
        };
        for r in [
            tk.ensure(&pin()).map(drop),
            recover(module, &pin(), &blob, "hmk").map(drop),
        ] {
            match r {
                Err(e @ Pkcs11Error::Module { .. }) => {
                    assert!(e.to_string().contains(&module.display().to_string()), "{e}")
                }
                other => panic!("{}: expected Module, got {other:?}", module.display()),
            }
        }
    }
}

#[test]
fn describe_needs_no_token() {
    let _hsm = softhsm::shared();
    let (_, blob) = protected("kmsfs-hmk", "hmk");
    assert_eq!(
        describe(&blob).unwrap(),
        format!("PKCS#11 token \"{TOKEN}\", key \"kmsfs-hmk\", AES-256-GCM, protects the hmk")
    );
    // A token that is nowhere to be found is still described.
    let away = edited(&blob, |b| b.token_label = "kmsfs".into());
    assert_eq!(
        describe(&away).unwrap(),
        "PKCS#11 token \"kmsfs\", key \"kmsfs-hmk\", AES-256-GCM, protects the hmk"
    );
    assert!(matches!(
        describe(b"KMSFS key file, not a blob"),
        Err(Pkcs11Error::BadBlob(_))
    ));
}
