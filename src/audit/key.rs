//! The audit log's MAC key, derived from the HMK: whoever can write the file but does not hold
//! the HMK cannot make a line that verifies.

use std::fmt;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::crypto::{Hmk, SecretKey32};

/// HKDF-SHA256 `info` starts with this label (then a NUL and the context).
const LABEL: &[u8] = b"kmsfs audit log v1";
/// The first line of a chain links to SHA-256 of this prefix and the context.
const GENESIS: &[u8] = b"kmsfs audit log v1 genesis\0";

/// The key lines are MACed with, and the keystore it belongs to (`context`, public). Zeroized
/// on drop; Debug shows the context only.
pub struct AuditKey {
    key: SecretKey32,
    context: String,
}

impl AuditKey {
    /// HKDF-SHA256 (no salt; the HMK is already uniformly random) of the HMK's 32 bytes, with
    /// `info` = "kmsfs audit log v1" NUL `context`. `context` names the keystore (see
    /// `from_hmk`); it also makes the genesis of the chain, so two keystores' chains differ
    /// from their very first line.
    pub fn derive(hmk_secret: &[u8; 32], context: &str) -> AuditKey {
        let info = [LABEL, b"\0", context.as_bytes()].concat();
        let mut okm = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(None, hmk_secret)
            .expand(&info, &mut okm[..])
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        AuditKey {
            key: SecretKey32::from_slice(&okm),
            context: context.to_owned(),
        }
    }

    /// The key of a keystore's audit log, with the context `hmk HMK-ID` (the id `kmsfs init`,
    /// `kmsfs verify` and `.status` print). The daemon and `kmsfs audit verify` both use this.
    pub fn from_hmk(hmk: &Hmk) -> AuditKey {
        AuditKey::derive(hmk.secret().expose(), &format!("hmk {}", hmk.id()))
    }

    /// A key carried as it is (a snapshot keeps it across a change of the HMK).
    pub fn from_parts(key: SecretKey32, context: String) -> AuditKey {
        AuditKey { key, context }
    }

    pub fn secret(&self) -> &SecretKey32 {
        &self.key
    }

    pub fn context(&self) -> &str {
        &self.context
    }

    /// What the first line of a chain has as `prev`.
    pub(super) fn genesis(&self) -> [u8; 32] {
        genesis(&self.context)
    }

    fn hmac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(self.key.expose()).expect("HMAC takes any key length")
    }

    pub(super) fn mac(&self, body: &[u8]) -> [u8; 32] {
        let mut m = self.hmac();
        m.update(body);
        m.finalize().into_bytes().into()
    }

    /// Constant-time comparison.
    pub(super) fn check(&self, body: &[u8], mac: &[u8; 32]) -> bool {
        let mut m = self.hmac();
        m.update(body);
        m.verify_slice(mac).is_ok()
    }
}

pub(super) fn genesis(context: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(GENESIS)
        .chain_update(context.as_bytes())
        .finalize()
        .into()
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditKey(<redacted>, context {:?})", self.context)
    }
}
