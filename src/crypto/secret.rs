use std::fmt;

use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::{Zeroize, Zeroizing};

use super::pages::SecretPage;

use super::CryptoError;

/// A 256-bit key (HMK, KPK or an AES-256 key derived from them), on a page of its own: out of
/// core dumps, locked in RAM, wiped when dropped (`pages`).
pub struct SecretKey32(Box<SecretPage<[u8; 32]>>);

impl SecretKey32 {
    pub fn random() -> Self {
        let mut page = SecretPage::boxed([0u8; 32]);
        OsRng.fill_bytes(&mut **page);
        SecretKey32(page)
    }

    /// For constants and tests: `bytes` is a copy on the caller's stack. Keys read or derived
    /// at run time come in through `from_slice`, which leaves no such copy.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey32::from_slice(&bytes)
    }

    /// Copies the key straight onto its page from the caller's (wiped) buffer.
    pub fn from_slice(bytes: &[u8; 32]) -> Self {
        let mut page = SecretPage::boxed([0u8; 32]);
        page.copy_from_slice(bytes);
        SecretKey32(page)
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl Clone for SecretKey32 {
    fn clone(&self) -> Self {
        let mut page = SecretPage::boxed([0u8; 32]);
        page.copy_from_slice(&**self.0);
        SecretKey32(page)
    }
}

impl fmt::Debug for SecretKey32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey32(<redacted>)")
    }
}

/// A record's data-encryption key (16, 24 or 32 bytes), on a page of its own like the master
/// keys. A longer value (only hostile input has one: import checks lengths later) is kept in
/// an ordinary wiped buffer.
pub struct KeyMaterial(Held);

enum Held {
    Page(Box<SecretPage<([u8; MAX_PAGED_KEY], usize)>>),
    Heap(Zeroizing<Vec<u8>>),
}

/// Record keys up to this length live on a secret page.
const MAX_PAGED_KEY: usize = 64;

impl KeyMaterial {
    pub fn random(len: usize) -> Self {
        let mut km = KeyMaterial::zeroed(len);
        match &mut km.0 {
            Held::Page(p) => OsRng.fill_bytes(&mut p.0[..len]),
            Held::Heap(v) => OsRng.fill_bytes(v),
        }
        km
    }

    fn zeroed(len: usize) -> Self {
        if len <= MAX_PAGED_KEY {
            KeyMaterial(Held::Page(SecretPage::boxed(([0u8; MAX_PAGED_KEY], len))))
        } else {
            KeyMaterial(Held::Heap(Zeroizing::new(vec![0u8; len])))
        }
    }

    /// Takes the bytes onto a secret page and wipes `bytes`.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        let mut bytes = Zeroizing::new(bytes);
        let mut km = KeyMaterial::zeroed(bytes.len());
        match &mut km.0 {
            Held::Page(p) => p.0[..bytes.len()].copy_from_slice(&bytes),
            Held::Heap(v) => v.copy_from_slice(&bytes),
        }
        bytes.zeroize();
        km
    }

    pub fn expose(&self) -> &[u8] {
        match &self.0 {
            Held::Page(p) => &p.0[..p.1],
            Held::Heap(v) => v,
        }
    }

    pub fn len(&self) -> usize {
        self.expose().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Clone for KeyMaterial {
    fn clone(&self) -> Self {
        let mut km = KeyMaterial::zeroed(self.len());
        match &mut km.0 {
            Held::Page(p) => p.0[..self.len()].copy_from_slice(self.expose()),
            Held::Heap(v) => v.copy_from_slice(self.expose()),
        }
        km
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
