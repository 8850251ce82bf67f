use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{aead, CryptoError, KdfParams, KeyMaterial, Passphrase, SecretKey32};

/// Public fingerprint of an HMK or KPK, stored in the KMS_DATA header so that a key file
/// belonging to another keystore is recognised before anything is decrypted with it.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(pub String);

const KEY_ID_DOMAIN: &[u8] = b"kmsfs-key-id-v1\0";
const KEY_ID_HEX_LEN: usize = 32;
const WRAP_AAD_PREFIX: &[u8] = b"kmsfs-wrap-v1\0";

impl KeyId {
    // The kind label keeps one 32-byte value from having the same id as HMK and as KPK,
    // which would let a swapped pair of key files pass the id check.
    fn compute(kind: &[u8], key: &SecretKey32) -> Self {
        let digest = Sha256::new()
            .chain_update(KEY_ID_DOMAIN)
            .chain_update(kind)
            .chain_update(key.expose())
            .finalize();
        // The hasher buffered the key's bytes in a block on the stack.
        super::pages::scrub_stack();
        KeyId(hex::encode(&digest[..KEY_ID_HEX_LEN / 2]))
    }

    /// The id an HMK with this secret has (without building its cipher).
    pub fn of_hmk(key: &SecretKey32) -> KeyId {
        KeyId::compute(b"hmk", key)
    }

    pub fn of_kpk(key: &SecretKey32) -> KeyId {
        KeyId::compute(b"kpk", key)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for KeyId {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let ok =
            s.len() == KEY_ID_HEX_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if ok {
            Ok(KeyId(s))
        } else {
            Err(format!(
                "invalid key id {s:?} (expected {KEY_ID_HEX_LEN} lowercase hex digits)"
            ))
        }
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> String {
        id.0
    }
}

/// Host master key: encrypts the body of KMS_DATA. Keeps its key schedule for its whole life
/// (see `aead::cipher`).
#[derive(Clone)]
pub struct Hmk(SecretKey32, Schedule);

/// Key protection key: wraps each record's key material, bound to the record's tag.
#[derive(Clone)]
pub struct Kpk(SecretKey32, Schedule);

/// A master key's AES schedule, on a secret page (out of core dumps, locked, wiped), shared by
/// every clone of the key.
type Schedule = std::sync::Arc<super::pages::SecretPage<aes_gcm::Aes256Gcm>>;

macro_rules! common_key_impl {
    ($ty:ident, $label:literal) => {
        impl $ty {
            pub fn random() -> Self {
                $ty::from_secret(SecretKey32::random())
            }

            pub fn from_secret(key: SecretKey32) -> Self {
                // Built straight into its shared allocation: moving a schedule out of a Box
                // would leave an unwiped copy behind.
                let cipher = super::pages::SecretPage::shared(aead::cipher(&key));
                $ty(key, cipher)
            }

            pub fn derive(pass: &Passphrase, params: &KdfParams) -> Result<Self, CryptoError> {
                params.derive_key32(pass).map($ty::from_secret)
            }

            pub fn id(&self) -> KeyId {
                KeyId::compute($label, &self.0)
            }

            pub fn secret(&self) -> &SecretKey32 {
                &self.0
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(<redacted>)", stringify!($ty))
            }
        }
    };
}

common_key_impl!(Hmk, b"hmk");
common_key_impl!(Kpk, b"kpk");

impl Hmk {
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        aead::seal_with(&self.1, plaintext, aad)
    }

    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        aead::open_with(&self.1, sealed, aad)
    }
}

fn wrap_aad(key_tag: &str) -> Vec<u8> {
    [WRAP_AAD_PREFIX, key_tag.as_bytes()].concat()
}

impl Kpk {
    pub fn wrap(&self, key: &KeyMaterial, key_tag: &str) -> Vec<u8> {
        aead::seal_with(&self.1, key.expose(), &wrap_aad(key_tag))
    }

    pub fn unwrap(&self, wrapped: &[u8], key_tag: &str) -> Result<KeyMaterial, CryptoError> {
        let mut plain = aead::open_with(&self.1, wrapped, &wrap_aad(key_tag))?;
        // Moving the Vec out hands its buffer to KeyMaterial without an unwiped copy.
        Ok(KeyMaterial::from_vec(std::mem::take(&mut *plain)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::secret::tests::assert_no_leak;

    #[test]
    fn ids_are_hex_and_kind_specific() {
        let key = SecretKey32::from_bytes([9; 32]);
        let h = Hmk::from_secret(key.clone()).id();
        let k = Kpk::from_secret(key).id();
        for id in [&h, &k] {
            assert_eq!(id.0.len(), 32);
            assert!(id
                .0
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        }
        assert_ne!(h, k);
        assert_eq!(h, Hmk::from_secret(SecretKey32::from_bytes([9; 32])).id());
        assert_ne!(h, Hmk::from_secret(SecretKey32::from_bytes([8; 32])).id());
        assert_eq!(h.to_string(), h.0);
    }

    #[test]
    fn key_id_serde_is_a_plain_validated_string() {
        let id = Hmk::random().id();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<KeyId>(&json).unwrap(), id);
        for bad in ["\"abc\"", "\"0123456789ABCDEF0123456789abcdef\"", "42"] {
            assert!(serde_json::from_str::<KeyId>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wrap_is_bound_to_the_tag() {
        let kpk = Kpk::random();
        let km = KeyMaterial::random(32);
        let w = kpk.wrap(&km, "payroll");
        assert_eq!(kpk.unwrap(&w, "payroll").unwrap(), km);
        assert!(matches!(
            kpk.unwrap(&w, "payrolls"),
            Err(CryptoError::Authentication)
        ));
        assert!(matches!(
            kpk.unwrap(&w, ""),
            Err(CryptoError::Authentication)
        ));
        assert!(matches!(
            Kpk::random().unwrap(&w, "payroll"),
            Err(CryptoError::Authentication)
        ));
    }

    #[test]
    fn hmk_seal_round_trip() {
        let hmk = Hmk::random();
        let sealed = hmk.seal(b"groups", b"header");
        assert_eq!(&hmk.open(&sealed, b"header").unwrap()[..], b"groups");
        assert!(hmk.open(&sealed, b"other").is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let key = SecretKey32::from_bytes([0x3c; 32]);
        let h = Hmk::from_secret(key.clone());
        let k = Kpk::from_secret(key.clone());
        assert_eq!(format!("{h:?}"), "Hmk(<redacted>)");
        assert_eq!(format!("{k:?}"), "Kpk(<redacted>)");
        assert_no_leak(&format!("{h:?} {k:#?}"), key.expose());
    }
}
