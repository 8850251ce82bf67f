use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::Zeroizing;

use super::{CryptoError, SecretKey32};

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// An AES-256-GCM key schedule. A master key keeps one for its whole life: building one per
/// message left a copy of the raw key (the schedule's first round keys) on the stack of every
/// thread that sealed or opened, which zeroing the schedule on drop does not reach (found by
/// scanning a core of the daemon: 12 copies of the HMK, 9 of the KPK).
pub fn cipher(key: &SecretKey32) -> Aes256Gcm {
    let c = Aes256Gcm::new(key.expose().into());
    super::pages::scrub_stack();
    c
}

/// AES-256-GCM with a random nonce: `nonce || ciphertext || tag`. Random 96-bit nonces are
/// safe for far more messages than a keystore will ever seal under one key.
pub fn seal(key: &SecretKey32, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    seal_with(&cipher(key), plaintext, aad)
}

pub fn seal_with(cipher: &Aes256Gcm, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
    out.resize(NONCE_LEN, 0);
    OsRng.fill_bytes(&mut out);
    out.extend_from_slice(plaintext);
    // Encrypting in place in a buffer that never reallocates leaves no plaintext copy behind.
    let (nonce, body) = out.split_at_mut(NONCE_LEN);
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(nonce), aad, body)
        .expect("AES-GCM refuses only inputs over 64 GiB");
    super::pages::scrub_stack();
    out.extend_from_slice(&tag);
    out
}

pub fn open(
    key: &SecretKey32,
    sealed: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    open_with(&cipher(key), sealed, aad)
}

pub fn open_with(
    cipher: &Aes256Gcm,
    sealed: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(CryptoError::Truncated);
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut buf = Zeroizing::new(body.to_vec());
    let opened = cipher.decrypt_in_place_detached(
        Nonce::from_slice(nonce),
        aad,
        &mut buf,
        Tag::from_slice(tag),
    );
    super::pages::scrub_stack();
    opened.map_err(|_| CryptoError::Authentication)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let key = SecretKey32::random();
        for pt in [&b""[..], b"x", &[0x5a; 1000]] {
            let sealed = seal(&key, pt, b"aad");
            assert_eq!(sealed.len(), pt.len() + SEAL_OVERHEAD);
            assert_eq!(&open(&key, &sealed, b"aad").unwrap()[..], pt);
        }
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let key = SecretKey32::random();
        let sealed = seal(&key, b"attack at dawn", b"hdr");
        for i in 0..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    matches!(open(&key, &bad, b"hdr"), Err(CryptoError::Authentication)),
                    "byte {i} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn wrong_aad_or_key_fails() {
        let key = SecretKey32::random();
        let sealed = seal(&key, b"secret", b"record-a");
        assert!(matches!(
            open(&key, &sealed, b"record-b"),
            Err(CryptoError::Authentication)
        ));
        assert!(matches!(
            open(&key, &sealed, b""),
            Err(CryptoError::Authentication)
        ));
        let other = SecretKey32::random();
        assert!(matches!(
            open(&other, &sealed, b"record-a"),
            Err(CryptoError::Authentication)
        ));
    }

    #[test]
    fn nonces_are_fresh() {
        let key = SecretKey32::random();
        let a = seal(&key, b"same", b"");
        let b = seal(&key, b"same", b"");
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
        assert_ne!(a, b);
    }

    #[test]
    fn short_input_is_truncated_not_a_panic() {
        let key = SecretKey32::random();
        for len in 0..SEAL_OVERHEAD {
            assert!(matches!(
                open(&key, &vec![0; len], b""),
                Err(CryptoError::Truncated)
            ));
        }
        let sealed = seal(&key, b"", b"");
        assert!(matches!(
            open(&key, &sealed[..SEAL_OVERHEAD - 1], b""),
            Err(CryptoError::Truncated)
        ));
    }
}
