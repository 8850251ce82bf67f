//! The TPM half of `unseal` (see `crate::sealing::tpm`).

use super::masterkeys::Unlock;
use super::StoreError;
use crate::crypto::{KeyFileKind, SecretKey32};
use crate::sealing::tpm::{self, PcrPolicy, Tpm};

fn failed(kind: KeyFileKind, e: tpm::TpmError) -> StoreError {
    StoreError::Unseal {
        file: kind.file_name(),
        reason: format!("sealed to a TPM: {e}"),
    }
}

pub(super) fn unseal(
    kind: KeyFileKind,
    blob: &[u8],
    unlock: &Unlock,
) -> Result<SecretKey32, StoreError> {
    Tpm::open(unlock.tcti())
        .and_then(|mut t| t.unseal(blob))
        .map_err(|e| failed(kind, e))
}

/// Seals `secret` to the TPM with the PCR policy `old_blob` was sealed with.
pub(super) fn seal_like(
    kind: KeyFileKind,
    old_blob: &[u8],
    secret: &SecretKey32,
    unlock: &Unlock,
) -> Result<Vec<u8>, StoreError> {
    let policy = tpm::policy_of(old_blob).map_err(|e| failed(kind, e))?;
    seal(kind, secret, &policy, unlock)
}

pub(super) fn seal(
    kind: KeyFileKind,
    secret: &SecretKey32,
    policy: &PcrPolicy,
    unlock: &Unlock,
) -> Result<Vec<u8>, StoreError> {
    Tpm::open(unlock.tcti())
        .and_then(|mut t| t.seal(secret, policy))
        .map_err(|e| failed(kind, e))
}

pub(super) fn describe(blob: &[u8]) -> Result<String, String> {
    tpm::describe(blob).map_err(|e| e.to_string())
}
