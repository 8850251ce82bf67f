//! Sealing the master key to a TPM 2.0 and unsealing it, against a real software TPM
//! (`swtpm`, started by each test on loopback, stopped after): a round trip byte for byte;
//! a PCR of the policy extended refuses, one outside it does not; a damaged blob never gives
//! a wrong key; another TPM cannot unseal, the same one after a reboot can; an unreachable
//! TPM is named; `describe` needs no TPM.

mod support;

use std::str::FromStr;

use kmsfs::crypto::SecretKey32;
use kmsfs::sealing::tpm::{describe, PcrPolicy, Tpm, TpmError};
use sha2::{Digest as _, Sha256};
use support::swtpm::Swtpm;
use tss_esapi::handles::PcrHandle;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::{Digest, DigestValues};
use tss_esapi::{Context, TctiNameConf};

fn open(tpm: &Swtpm) -> Tpm {
    Tpm::open(&tpm.tcti()).unwrap_or_else(|e| panic!("open {}: {e}", tpm.tcti()))
}

fn seal(tpm: &Swtpm, key: &SecretKey32, pcrs: &[u8]) -> Vec<u8> {
    let policy = PcrPolicy {
        pcrs: pcrs.to_vec(),
    };
    open(tpm).seal(key, &policy).expect("seal")
}

fn unseal(tpm: &Swtpm, blob: &[u8]) -> Result<SecretKey32, TpmError> {
    open(tpm).unseal(blob)
}

/// Extends PCR `pcr`'s SHA-256 value, as a measured boot would (its own connection: swtpm
/// serves one at a time).
fn extend(tpm: &Swtpm, pcr: u8) {
    let handle = match pcr {
        7 => PcrHandle::Pcr7,
        8 => PcrHandle::Pcr8,
        16 => PcrHandle::Pcr16,
        _ => panic!("no handle for PCR {pcr} in this test"),
    };
    let mut ctx = Context::new(TctiNameConf::from_str(&tpm.tcti()).unwrap()).unwrap();
    let mut values = DigestValues::new();
    values.set(
        HashingAlgorithm::Sha256,
        Digest::try_from(Sha256::digest(b"something else booted").to_vec()).unwrap(),
    );
    ctx.execute_with_nullauth_session(|ctx| ctx.pcr_extend(handle, values))
        .expect("pcr_extend");
}

#[test]
fn seal_then_unseal_round_trips_byte_for_byte() {
    let tpm = Swtpm::start();
    let key = SecretKey32::random();
    let blob = open(&tpm).seal(&key, &PcrPolicy::default()).unwrap();
    assert_eq!(unseal(&tpm, &blob).unwrap().expose(), key.expose());
    // Sealing and unsealing again on one connection: every handle was freed.
    let mut t = open(&tpm);
    for _ in 0..5 {
        let blob = t.seal(&key, &PcrPolicy::default()).unwrap();
        assert_eq!(t.unseal(&blob).unwrap().expose(), key.expose());
    }
}

#[test]
fn two_seals_of_one_key_differ_and_both_unseal() {
    let tpm = Swtpm::start();
    let key = SecretKey32::random();
    let a = seal(&tpm, &key, &[7]);
    let b = seal(&tpm, &key, &[7]);
    assert_ne!(a, b, "each seal encrypts with fresh randomness");
    assert_eq!(unseal(&tpm, &a).unwrap().expose(), key.expose());
    assert_eq!(unseal(&tpm, &b).unwrap().expose(), key.expose());
}

#[test]
fn extending_a_pcr_of_the_policy_refuses_and_names_the_pcrs() {
    let tpm = Swtpm::start();
    let key = SecretKey32::random();
    let blob = seal(&tpm, &key, &[7]);
    let pair = seal(&tpm, &key, &[8, 7]);
    extend(&tpm, 7);
    match unseal(&tpm, &blob) {
        Err(e @ TpmError::PolicyMismatch { .. }) => {
            assert!(matches!(&e, TpmError::PolicyMismatch { pcrs } if pcrs == &[7]));
            assert_eq!(
                e.to_string(),
                "the TPM refused to unseal: PCR values differ from when the key was sealed \
                 (PCRs 7)"
            );
        }
        other => panic!("expected PolicyMismatch, got {other:?}"),
    }
    let e = unseal(&tpm, &pair).map(|_| ()).unwrap_err();
    assert!(e.to_string().ends_with("(PCRs 7, 8)"), "{e}");
    // The refusal does not count towards the TPM's dictionary-attack lockout: still refused
    // (not locked out) after many tries, and a key sealed to the new values unseals.
    for _ in 0..10 {
        assert!(matches!(
            unseal(&tpm, &blob),
            Err(TpmError::PolicyMismatch { .. })
        ));
    }
    let resealed = seal(&tpm, &key, &[7]);
    assert_eq!(unseal(&tpm, &resealed).unwrap().expose(), key.expose());
}

#[test]
fn extending_a_pcr_outside_the_policy_still_unseals() {
    let tpm = Swtpm::start();
    let key = SecretKey32::random();
    let blob = seal(&tpm, &key, &[7]);
    extend(&tpm, 8);
    extend(&tpm, 16);
    assert_eq!(unseal(&tpm, &blob).unwrap().expose(), key.expose());
}

#[test]
fn a_damaged_blob_never_unseals_a_wrong_key() {
    let tpm = Swtpm::start();
    let key = SecretKey32::random();
    let blob = seal(&tpm, &key, &[7]);
    let mut t = open(&tpm);
    // Any flipped byte: the checksum finds it, before the TPM is asked.
    for i in 0..blob.len() {
        let mut b = blob.clone();
        b[i] ^= 0x01;
        match t.unseal(&b) {
            Err(TpmError::BadBlob(_)) => {}
            other => panic!("byte {i} flipped: expected BadBlob, got {other:?}"),
        }
    }
    // A forger who also fixes the checksum: the TPM's own integrity check, the policy or the
    // decoder refuses every change; none gives a key, let alone a different one.
    let body = blob.len() - 32;
    for i in 9..body {
        let mut b = blob[..body].to_vec();
        b[i] ^= 0x01;
        let sum = Sha256::digest(&b);
        b.extend_from_slice(&sum);
        match t.unseal(&b) {
            Err(TpmError::Unavailable { .. }) => panic!("byte {i}: the TPM went away"),
            Err(_) => {}
            Ok(k) => panic!(
                "byte {i} changed and the blob still unsealed (the same key: {})",
                k.expose() == key.expose()
            ),
        }
    }
    assert!(matches!(t.unseal(b"KMSFSTPM"), Err(TpmError::BadBlob(_))));
    assert!(matches!(t.unseal(&[]), Err(TpmError::BadBlob(_))));
    // And the original still unseals.
    assert_eq!(t.unseal(&blob).unwrap().expose(), key.expose());
}

#[test]
fn another_tpm_cannot_unseal_but_the_same_one_after_a_reboot_can() {
    let first = Swtpm::start();
    let other = Swtpm::start();
    let key = SecretKey32::random();
    let blob = seal(&first, &key, &[7]);
    match unseal(&other, &blob) {
        Err(e @ TpmError::WrongTpm { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("another TPM sealed it"), "{msg}");
        }
        other => panic!("expected WrongTpm, got {other:?}"),
    }
    // A restart resets the PCRs to the values of a boot, and the primary key is recreated
    // from the same seed: the key unseals.
    extend(&first, 7);
    let first = Swtpm::restart(first);
    assert_eq!(unseal(&first, &blob).unwrap().expose(), key.expose());
}

#[test]
fn an_unreachable_tpm_is_unavailable_and_named() {
    let tpm = Swtpm::start();
    let port = tpm.port;
    drop(tpm); // nothing listens there now
    let tcti = format!("swtpm:host=127.0.0.1,port={port}");
    for tcti in [
        tcti.as_str(),
        "device:/nonexistent/tpmrm0",
        "not-a-tcti:at-all",
    ] {
        match Tpm::open(tcti) {
            Err(e @ TpmError::Unavailable { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.starts_with(&format!("cannot use the TPM at {tcti}: ")),
                    "{msg}"
                );
            }
            other => panic!("{tcti}: expected Unavailable, got {other:?}"),
        }
    }
}

#[test]
fn describe_needs_no_tpm() {
    let tpm = Swtpm::start();
    let key = SecretKey32::random();
    let one = seal(&tpm, &key, &[7]);
    let three = seal(&tpm, &key, &[14, 0, 7, 7]);
    drop(tpm);
    assert_eq!(describe(&one).unwrap(), "TPM 2.0, sealed to SHA-256 PCRs 7");
    assert_eq!(
        describe(&three).unwrap(),
        "TPM 2.0, sealed to SHA-256 PCRs 0, 7, 14"
    );
    let e = describe(b"{\"not\": \"a blob\"}").unwrap_err();
    assert!(matches!(e, TpmError::BadBlob(_)));
    assert!(e.to_string().contains("not a kmsfs TPM blob"), "{e}");
}

#[test]
fn an_invalid_policy_is_refused_before_sealing() {
    let tpm = Swtpm::start();
    let mut t = open(&tpm);
    let key = SecretKey32::random();
    for pcrs in [vec![], vec![24], vec![7, 255]] {
        match t.seal(&key, &PcrPolicy { pcrs: pcrs.clone() }) {
            Err(TpmError::InvalidPolicy(_)) => {}
            other => panic!("{pcrs:?}: expected InvalidPolicy, got {other:?}"),
        }
    }
    assert_eq!(PcrPolicy::default().pcrs, vec![7]);
}
