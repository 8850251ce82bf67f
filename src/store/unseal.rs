//! Sealed key files: the key comes back from the TPM or the token that sealed it, and a new
//! key (a key change, `kmsfs seal`) is sealed the same way.

use super::masterkeys::Unlock;
use super::StoreError;
use crate::crypto::{KeyFileKind, Sealer, SecretKey32};
use crate::sealing::pkcs11;

pub use crate::sealing::tpm::DEFAULT_TCTI;

/// What the blob's own header says a key is for: "hmk" or "kpk".
pub(super) fn purpose(kind: KeyFileKind) -> &'static str {
    match kind {
        KeyFileKind::Hmk => "hmk",
        KeyFileKind::Kpk => "kpk",
    }
}

fn failed(kind: KeyFileKind, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Unseal {
        file: kind.file_name(),
        reason: reason.to_string(),
    }
}

pub(super) fn token(kind: KeyFileKind, unlock: &Unlock) -> Result<&super::TokenAccess, StoreError> {
    unlock.pkcs11.as_ref().ok_or_else(|| {
        failed(
            kind,
            format!(
                "the {} is wrapped by a PKCS#11 token: give --pkcs11-module LIBRARY and --pkcs11-pin-file FILE",
                kind.label()
            ),
        )
    })
}

pub(super) fn unseal(
    kind: KeyFileKind,
    by: Sealer,
    blob: &[u8],
    unlock: &Unlock,
) -> Result<SecretKey32, StoreError> {
    match by {
        Sealer::Pkcs11 => {
            let t = token(kind, unlock)?;
            pkcs11::recover(&t.module, &t.pin, blob, purpose(kind)).map_err(|e| failed(kind, e))
        }
        Sealer::Tpm => super::tpm_seal::unseal(kind, blob, unlock),
    }
}

/// Seals `secret` the way `old_blob` was sealed (the same PCR policy, the same token key).
pub(super) fn seal_like(
    kind: KeyFileKind,
    by: Sealer,
    old_blob: &[u8],
    secret: &SecretKey32,
    unlock: &Unlock,
) -> Result<Vec<u8>, StoreError> {
    let blob = match by {
        Sealer::Pkcs11 => {
            let t = token(kind, unlock)?;
            let old = pkcs11::Blob::decode(old_blob).map_err(|e| failed(kind, e))?;
            let key = pkcs11::TokenKey {
                module: t.module.clone(),
                token_label: old.token_label,
                key_label: old.key_label,
            };
            key.protect(&t.pin, secret, purpose(kind))
                .map_err(|e| failed(kind, e))?
        }
        Sealer::Tpm => super::tpm_seal::seal_like(kind, old_blob, secret, unlock)?,
    };
    Ok(crate::crypto::encode_sealed_key_file(kind, by, &blob))
}

/// What a sealed key file needs, in words, without the TPM or the token.
pub fn describe(by: Sealer, blob: &[u8]) -> String {
    let d = match by {
        Sealer::Pkcs11 => pkcs11::describe(blob).map_err(|e| e.to_string()),
        Sealer::Tpm => super::tpm_seal::describe(blob),
    };
    d.unwrap_or_else(|e| format!("{} (unreadable: {e})", by.label()))
}
