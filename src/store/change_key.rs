//! Changing the HMK or the KPK: a new key (random, or derived from a new passphrase), every
//! record's key byte for byte the same.
//!
//! - HMK: KMS_DATA is rewritten, sealed under the new HMK.
//! - KPK: every record's key is unwrapped and re-wrapped under the new KPK, bound to its tag
//!   as before, and KMS_DATA is rewritten with the new wrapped keys.
//!
//! The new key is kept the way the old one was: in a plain key file, sealed by the same TPM
//! policy or token, or (passphrase at start) nowhere. Crash safety, in this order:
//!
//! 1. the old key file is copied to `KMS_HMKF.<old-id>` (mode 0400), for backups taken before
//!    the change (kept until the administrator removes it);
//! 2. the new key file is written as `KMS_HMKF.next.<new-id>` and synced;
//! 3. KMS_DATA is replaced by the rewritten file (temporary file, fsync, rename, fsync of the
//!    directory): **the commit point**: its header names the new key's id;
//! 4. `KMS_HMKF.next.<new-id>` is renamed to `KMS_HMKF`.
//!
//! Killed at any instant, the directory opens with the old pair or the new one: before 3 the
//! pending file is removed at the next open, after 3 it is renamed into place
//! (`masterkeys::settle_pending`).

use super::datafile;
use super::durable;
use super::masterkeys::{self, key_id, pending_name, retired_name, Keeping, Unlock};
use super::{file_id, Access, Store, StoreError, DATA_FILE, FILE_MODE};
use crate::crypto::{
    encode_key_file, Hmk, KdfParams, KeyFileKind, KeyId, Kpk, Passphrase, SecretKey32,
};
use crate::keystore::{Keystore, Timestamp, WrappedKey};

/// Kept copies of old key files are read-only: they are for restoring old backups.
const RETIRED_MODE: u32 = 0o400;

/// The new key: derived from this passphrase (with a fresh salt), or random.
#[derive(Debug, Default)]
pub struct NewMasterKey {
    pub passphrase: Option<Passphrase>,
}

/// For a KPK change, the keystore re-wrapped under the new KPK, and the new KPK.
pub type Rewrapped = Option<(Keystore, Kpk)>;

/// What a change did, for the command line, `.status` and the audit log.
#[derive(Debug, Clone)]
pub struct KeyChange {
    pub kind: KeyFileKind,
    pub old_id: KeyId,
    pub new_id: KeyId,
    /// The name the old key file is kept under (None: the old key had no file).
    pub kept_as: Option<String>,
    pub derived: bool,
    pub keeping: Keeping,
}

impl Store {
    /// Changes the `kind` key (see the module documentation). `ks` is the keystore as it is,
    /// `kpk` the KPK it is wrapped under; for a KPK change, returns the keystore re-wrapped
    /// and the new KPK, which the caller must use from now on.
    ///
    /// An error is a change not made. Once KMS_DATA is replaced (the commit point) the change
    /// is made, and what fails after it (the directory's fsync, the new key file's rename) is
    /// the third result: the caller must still take the re-wrapped keystore and the new KPK,
    /// or it would wrap new records under a KPK that KMS_DATA no longer names.
    pub fn change_key(
        &mut self,
        kind: KeyFileKind,
        new: &NewMasterKey,
        ks: &Keystore,
        kpk: &Kpk,
        unlock: &Unlock,
    ) -> Result<(KeyChange, Rewrapped, Result<(), StoreError>), StoreError> {
        assert!(!self.frozen, "the service refuses key changes while frozen");
        let keeping = match kind {
            KeyFileKind::Hmk => self.keeping[0],
            KeyFileKind::Kpk => self.keeping[1],
        };
        if keeping == Keeping::Passphrase && new.passphrase.is_none() {
            return Err(StoreError::KeyChangeRefused(format!(
                "the {} is kept off the disk (derived from a passphrase at every start): a random key would have to be written to a key file; give a passphrase for the new key",
                kind.label()
            )));
        }
        let (secret, kdf) = match &new.passphrase {
            None => (SecretKey32::random(), None),
            Some(pass) => {
                let params = KdfParams::with_fresh_salt();
                let secret = params
                    .derive_key32(pass)
                    .map_err(|e| StoreError::KeyChangeRefused(e.to_string()))?;
                (secret, Some(params))
            }
        };
        let old_id = masterkeys::header_id(&self.header, kind).clone();
        let new_id = key_id(kind, &secret);
        if new_id == old_id {
            return Err(StoreError::KeyChangeRefused(format!(
                "the new {} is the old one (the same passphrase and salt?)",
                kind.label()
            )));
        }

        // What the new file holds (None: kept nowhere), and the keystore it will hold.
        let new_file = match keeping {
            Keeping::File => Some(zeroize::Zeroizing::new(encode_key_file(kind, &secret))),
            Keeping::Passphrase => None,
            Keeping::Sealed(by) => {
                let old_blob = masterkeys::read_key_file_named(
                    &self.dir,
                    kind.file_name(),
                    Access::ReadWrite,
                )?
                .ok_or_else(|| StoreError::MissingKeyFile {
                    file: kind.file_name(),
                    dir: self.dir.path().to_path_buf(),
                })
                .map(|(bytes, _)| bytes)
                .and_then(|bytes| sealed_blob_of(kind, &bytes))?;
                Some(zeroize::Zeroizing::new(super::unseal::seal_like(
                    kind, by, &old_blob, &secret, unlock,
                )?))
            }
        };
        let (new_hmk, rewrapped) = match kind {
            KeyFileKind::Hmk => (Hmk::from_secret(secret.clone()), None),
            KeyFileKind::Kpk => {
                let new_kpk = Kpk::from_secret(secret.clone());
                let ks2 = rewrap_all(ks, kpk, &new_kpk)?;
                (self.hmk.clone(), Some((ks2, new_kpk)))
            }
        };

        // 1. Keep the old key file for backups taken before the change.
        let kept_as = self.keep_old_key_file(kind, &old_id)?;
        // 2. The new key file, under its pending name.
        let pending = pending_name(kind, &new_id);
        if let Some(bytes) = &new_file {
            durable::write_atomically(&self.dir, &pending, bytes, FILE_MODE)
                .map_err(StoreError::io(format!("cannot write {pending}")))?;
        }
        // 3. The commit point: KMS_DATA naming the new key.
        let mut header = self.header.clone();
        header.file_id = file_id();
        let now = Timestamp::now();
        match kind {
            KeyFileKind::Hmk => {
                header.hmk_id = new_id.clone();
                header.hmk_kdf = kdf.clone();
                header.hmk_changed = Some(now);
            }
            KeyFileKind::Kpk => {
                header.kpk_id = new_id.clone();
                header.kpk_kdf = kdf.clone();
                header.kpk_changed = Some(now);
            }
        }
        // The audit log's chain goes on under the key it has (derived from the HMK it
        // started with): the new snapshot carries it.
        let audit_key = self.audit_key();
        let data_ks = rewrapped.as_ref().map_or(ks, |(k, _)| k);
        let bytes = datafile::encode_file(&new_hmk, &header, data_ks, Some(&audit_key));
        let replaced = durable::replace_file(&self.dir, DATA_FILE, &bytes, FILE_MODE);
        let (data, dir_synced) = match replaced {
            Ok(r) => r,
            Err(e) => {
                if new_file.is_some() {
                    let _ = self.dir.remove(&pending);
                }
                return Err(StoreError::io(format!("cannot rewrite {DATA_FILE}"))(e));
            }
        };
        let parsed = datafile::decode_header(&bytes).expect("just encoded");
        self.data = data;
        self.digest = parsed.digest;
        self.format = parsed.format_version;
        self.header = header;
        self.len = bytes.len() as u64;
        self.next_seq = 1;
        self.hmk = new_hmk;
        self.carried_audit_key = Some(audit_key);
        let settled = dir_synced
            .map_err(StoreError::io("cannot sync the data directory"))
            .and_then(|()| {
                // 4. The new key file under its own name. Should this fail, the next open
                // does it.
                if new_file.is_none() {
                    return Ok(());
                }
                self.dir
                    .rename(&pending, kind.file_name())
                    .and_then(|()| self.dir.sync())
                    .map_err(StoreError::io(format!(
                        "cannot rename {pending} to {}",
                        kind.file_name()
                    )))
            });
        Ok((
            KeyChange {
                kind,
                old_id,
                new_id,
                kept_as,
                derived: kdf.is_some(),
                keeping,
            },
            rewrapped,
            settled,
        ))
    }

    /// Copies the key file as it is to `KMS_HMKF.<old-id>`, mode 0400 (None: there is none).
    fn keep_old_key_file(
        &self,
        kind: KeyFileKind,
        old_id: &KeyId,
    ) -> Result<Option<String>, StoreError> {
        let Some((bytes, _)) =
            masterkeys::read_key_file_named(&self.dir, kind.file_name(), Access::ReadWrite)?
        else {
            return Ok(None);
        };
        let name = retired_name(kind, old_id);
        durable::write_atomically(&self.dir, &name, &bytes, RETIRED_MODE)
            .map_err(StoreError::io(format!("cannot write {name}")))?;
        Ok(Some(name))
    }
}

fn sealed_blob_of(kind: KeyFileKind, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    match crate::crypto::decode_any_key_file(kind, bytes) {
        Ok(crate::crypto::KeyFileBody::Sealed { blob, .. }) => Ok(blob),
        Ok(crate::crypto::KeyFileBody::Plain(_)) => Err(StoreError::Corrupt {
            file: kind.file_name(),
            reason: "it changed from sealed to plain while the keystore was open".into(),
        }),
        Err(e) => Err(StoreError::Corrupt {
            file: kind.file_name(),
            reason: e.to_string(),
        }),
    }
}

/// Every record's key under `new`, checked to unwrap to the very same bytes.
fn rewrap_all(ks: &Keystore, old: &Kpk, new: &Kpk) -> Result<Keystore, StoreError> {
    ks.rewrapped(|tag, wrapped| {
        let key = old
            .unwrap(&wrapped.0, tag.as_str())
            .map_err(|e| StoreError::Corrupt {
                file: DATA_FILE,
                reason: format!("the key of record {tag} does not unwrap: {e}"),
            })?;
        let again = new.wrap(&key, tag.as_str());
        let check = new
            .unwrap(&again, tag.as_str())
            .map_err(|e| StoreError::KeyChangeRefused(e.to_string()))?;
        if check.expose() != key.expose() {
            return Err(StoreError::KeyChangeRefused(format!(
                "re-wrapping the key of record {tag} did not give it back"
            )));
        }
        Ok(WrappedKey(again))
    })
}
