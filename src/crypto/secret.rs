use std::fmt;

use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::CryptoError;

/// A 256-bit key (HMK, KPK or an AES-256 key derived from them).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey32([u8; 32]);

impl SecretKey32 {
    pub fn random() -> Self {
        let mut key = SecretKey32([0u8; 32]);
        OsRng.fill_bytes(&mut key.0);
        key
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey32(bytes)
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SecretKey32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey32(<redacted>)")
    }
}

/// A record's data-encryption key (16, 24 or 32 bytes).
#[derive(Clone)]
pub struct KeyMaterial(Zeroizing<Vec<u8>>);

impl KeyMaterial {
    pub fn random(len: usize) -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; len]);
        OsRng.fill_bytes(&mut bytes);
        KeyMaterial(bytes)
    }

    pub fn from_vec(bytes: Vec<u8>) -> Self {
        KeyMaterial(Zeroizing::new(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// Plain comparison: the crate has no direct dependency on `subtle`, and callers compare
// keys only in tests and in consistency checks, never against attacker-chosen guesses.
impl PartialEq for KeyMaterial {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for KeyMaterial {}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyMaterial(<redacted {} bytes>)", self.len())
    }
}

#[derive(Clone)]
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    pub fn new(pass: String) -> Self {
        Passphrase(Zeroizing::new(pass))
    }

    /// Editors and `echo` add a line ending that is not part of the passphrase; only one is
    /// removed so that a passphrase that deliberately ends in whitespace survives.
    pub fn from_file_contents(bytes: Vec<u8>) -> Result<Self, CryptoError> {
        let mut bytes = bytes;
        if bytes.ends_with(b"\r\n") {
            bytes.truncate(bytes.len() - 2);
        } else if bytes.ends_with(b"\n") {
            bytes.truncate(bytes.len() - 1);
        }
        if bytes.is_empty() {
            return Err(CryptoError::Kdf("the passphrase is empty".into()));
        }
        match String::from_utf8(bytes) {
            Ok(s) => Ok(Passphrase::new(s)),
            Err(e) => {
                // The error owns the passphrase bytes; wipe them before they are freed.
                e.into_bytes().zeroize();
                Err(CryptoError::Kdf("the passphrase is not valid UTF-8".into()))
            }
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Every rendering of `bytes` a careless Debug impl might produce.
    pub(crate) fn assert_no_leak(debug: &str, bytes: &[u8]) {
        assert!(!debug.contains(&hex::encode(bytes)), "{debug}");
        assert!(!debug.contains(&hex::encode_upper(bytes)), "{debug}");
        assert!(!debug.contains(&format!("{bytes:?}")), "{debug}");
        let first = bytes.iter().take(4).map(|b| b.to_string());
        assert!(
            !debug.contains(&first.collect::<Vec<_>>().join(", ")),
            "{debug}"
        );
    }

    #[test]
    fn debug_is_redacted() {
        let key = SecretKey32::from_bytes([0xab; 32]);
        let d = format!("{key:?}");
        assert_eq!(d, "SecretKey32(<redacted>)");
        assert_no_leak(&d, key.expose());
        assert_no_leak(&format!("{:?}", Some(key.clone())), key.expose());

        let km = KeyMaterial::from_vec((100u8..124).collect());
        assert_no_leak(&format!("{km:?}"), km.expose());
        assert_no_leak(&format!("{:#?}", km), km.expose());

        let p = Passphrase::new("correct horse battery staple".into());
        assert!(!format!("{p:?}").contains("horse"));
        assert!(!format!("{p:#?}").contains("horse"));
    }

    #[test]
    fn random_keys_differ_and_have_the_right_length() {
        assert_ne!(
            SecretKey32::random().expose(),
            SecretKey32::random().expose()
        );
        for len in [16, 24, 32] {
            let a = KeyMaterial::random(len);
            assert_eq!(a.len(), len);
            assert_ne!(a, KeyMaterial::random(len));
            assert_eq!(a, a.clone());
        }
    }

    #[test]
    fn passphrase_file_strips_one_line_ending() {
        let p =
            |b: &[u8]| Passphrase::from_file_contents(b.to_vec()).map(|p| p.expose().to_owned());
        assert_eq!(p(b"secret\n").unwrap(), "secret");
        assert_eq!(p(b"secret\r\n").unwrap(), "secret");
        assert_eq!(p(b"secret").unwrap(), "secret");
        assert_eq!(p(b"secret\n\n").unwrap(), "secret\n");
        assert_eq!(p(b" secret \n").unwrap(), " secret ");
        for bad in [&b""[..], b"\n", b"\r\n", b"\xff\xfe\n"] {
            assert!(matches!(p(bad), Err(CryptoError::Kdf(_))), "{bad:?}");
        }
    }
}
