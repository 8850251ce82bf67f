//! `kmsfs seal` / `kmsfs unseal`: changing how a master key is kept (plain key file, sealed
//! to the TPM, wrapped by a PKCS#11 token, or nowhere: a passphrase at every start) without
//! changing the key. Offline: the directory lock is taken, as `import` does.

use super::masterkeys::{Keeping, Unlock};
use super::unseal::{purpose, token};
use super::{durable, tpm_seal, Access, Store, StoreError, FILE_MODE};
use crate::crypto::{encode_key_file, encode_sealed_key_file, KeyFileKind, Sealer, SecretKey32};
use crate::sealing::{pkcs11, tpm::PcrPolicy};

/// How the key is to be kept from now on.
#[derive(Debug, Clone)]
pub enum KeepAs {
    /// A plain key file (what `kmsfs init` writes).
    File,
    /// Sealed to the TPM (`Unlock::tpm` says which), bound to these PCRs.
    Tpm(PcrPolicy),
    /// Wrapped by an AES key in a PKCS#11 token (`Unlock::pkcs11` gives the module and PIN);
    /// the key is created, sensitive and non-extractable, if the token has none by that label.
    Pkcs11 {
        token_label: String,
        key_label: String,
    },
    /// No key file at all: the key is derived from its passphrase at every start.
    Passphrase,
}

/// Rewrites the `kind` key file to keep the same key as `how` says. The new form is checked
/// to give the key back before the old file is replaced.
pub fn keep_key(
    dir: &std::path::Path,
    kind: KeyFileKind,
    how: &KeepAs,
    unlock: &Unlock,
) -> Result<Keeping, StoreError> {
    let (store, _ks, kpk, _) = Store::open_with(dir, Access::ReadWrite, unlock)?;
    let secret = match kind {
        KeyFileKind::Hmk => store.hmk.secret().clone(),
        KeyFileKind::Kpk => kpk.secret().clone(),
    };
    let same = |got: &SecretKey32| got.expose() == secret.expose();
    let check = |ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(StoreError::KeyChangeRefused(
                "the sealed key did not unseal to the same key; nothing was changed".into(),
            ))
        }
    };
    let (bytes, keeping) = match how {
        KeepAs::File => (Some(encode_key_file(kind, &secret)), Keeping::File),
        KeepAs::Tpm(policy) => {
            let blob = tpm_seal::seal(kind, &secret, policy, unlock)?;
            check(same(&tpm_seal::unseal(kind, &blob, unlock)?))?;
            (
                Some(encode_sealed_key_file(kind, Sealer::Tpm, &blob)),
                Keeping::Sealed(Sealer::Tpm),
            )
        }
        KeepAs::Pkcs11 {
            token_label,
            key_label,
        } => {
            let t = token(kind, unlock)?;
            let failed = |e: pkcs11::Pkcs11Error| StoreError::Unseal {
                file: kind.file_name(),
                reason: e.to_string(),
            };
            let key = pkcs11::TokenKey {
                module: t.module.clone(),
                token_label: token_label.clone(),
                key_label: key_label.clone(),
            };
            if key.ensure(&t.pin).map_err(failed)? {
                log::info!(
                    "created the AES-256 key {key_label:?} (sensitive, not extractable) in the token {token_label:?}"
                );
            }
            let blob = key
                .protect(&t.pin, &secret, purpose(kind))
                .map_err(failed)?;
            let back = pkcs11::recover(&t.module, &t.pin, &blob, purpose(kind)).map_err(failed)?;
            check(same(&back))?;
            (
                Some(encode_sealed_key_file(kind, Sealer::Pkcs11, &blob)),
                Keeping::Sealed(Sealer::Pkcs11),
            )
        }
        KeepAs::Passphrase => {
            let params = match kind {
                KeyFileKind::Hmk => store.header.hmk_kdf.clone(),
                KeyFileKind::Kpk => store.header.kpk_kdf.clone(),
            }
            .ok_or_else(|| {
                StoreError::KeyChangeRefused(format!(
                    "the {} is random, not derived from a passphrase: without its key file it would be lost; first make it passphrase-derived with `kmsfs change-key {} --passphrase-file FILE`",
                    kind.label(),
                    purpose(kind)
                ))
            })?;
            let pass = match kind {
                KeyFileKind::Hmk => unlock.hmk_passphrase.as_ref(),
                KeyFileKind::Kpk => unlock.kpk_passphrase.as_ref(),
            }
            .ok_or(StoreError::NeedPassphrase {
                key: kind.label(),
                file: kind.file_name(),
            })?;
            let derived = params
                .derive_key32(pass)
                .map_err(|e| StoreError::KeyChangeRefused(e.to_string()))?;
            if !same(&derived) {
                return Err(StoreError::WrongPassphrase {
                    key: kind.label(),
                    got: super::masterkeys::key_id(kind, &derived),
                    want: super::masterkeys::key_id(kind, &secret),
                });
            }
            (None, Keeping::Passphrase)
        }
    };
    let name = kind.file_name();
    match bytes {
        Some(bytes) => {
            let bytes = zeroize::Zeroizing::new(bytes);
            durable::write_atomically(&store.dir, name, &bytes, FILE_MODE)
                .map_err(StoreError::io(format!("cannot write {name}")))?;
        }
        None => match store.dir.remove(name) {
            Ok(()) => store
                .dir
                .sync()
                .map_err(StoreError::io("cannot sync the data directory"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(format!("cannot remove {name}"))(e)),
        },
    }
    Ok(keeping)
}
