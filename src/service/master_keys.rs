//! Changing the HMK or the KPK of the keystore this process serves (the mount's
//! `.change-key`; offline, `kmsfs change-key`), and what `.status` tells about both keys.
//! The files' side, crash safety included, is `store::change_key`.

use super::two_person::{Gate, Target};
use super::{audit, Kms, KmsError};
use crate::audit::{Event, Verdict};
use crate::crypto::KeyFileKind;
use crate::keystore::Timestamp;
use crate::store::{Keeping, KeyChange, NewMasterKey};

/// One master key as `.status` and `kmsfs info` show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterKeyStatus {
    pub id: String,
    /// Derived from a passphrase (else random).
    pub derived: bool,
    pub keeping: Keeping,
    /// When it was last changed (its creation, if never).
    pub changed: Timestamp,
}

fn op(kind: KeyFileKind) -> &'static str {
    match kind {
        KeyFileKind::Hmk => "change hmk",
        KeyFileKind::Kpk => "change kpk",
    }
}

impl Kms {
    /// Changes the `kind` key: checked (refused while quiesced; a destructive move under the
    /// two-person rule), audited (the line is synced first: the rewrite drops the frames that
    /// carry lines), then made durable by `Store::change_key` before it returns. Every
    /// record's key stays byte for byte the same.
    pub fn change_master_key(
        &self,
        kind: KeyFileKind,
        new: &NewMasterKey,
    ) -> Result<KeyChange, KmsError> {
        // The writer's lock for the whole change; `inner`'s write lock for the checks, and
        // again to take the new keys: readers go on with the old keys while the files are
        // rewritten (they open the same keys either way).
        let mut w = self.settled_writer();
        let store = &mut w.store;
        let mut guard = self.write();
        let inner = &mut *guard;
        let refuse = |e: KmsError| {
            self.audit_master_key(kind, Verdict::Refused(&e.to_string()));
            Err(e)
        };
        if inner.freeze.is_frozen() {
            return refuse(KmsError::Quiesced);
        }
        let gate = inner.two_person.gate_action(
            Target::Keystore,
            op(kind).to_string(),
            audit::actor_uid(),
        );
        self.pending.store(
            inner.two_person.pending().len(),
            std::sync::atomic::Ordering::Release,
        );
        match gate {
            Ok(Gate::Free) | Ok(Gate::Confirmed(_)) => {}
            Err(e) => return refuse(e),
        }
        if let Some(log) = &self.audit {
            let caller = audit::actor();
            log.append(&Event::keystore(&caller, op(kind), Verdict::Allowed))
                .and_then(|()| log.sync())
                .map_err(|e| KmsError::Audit(e.to_string()))?;
        }
        drop(guard);
        let changed = {
            let inner = self.read();
            store.change_key(kind, new, &inner.0.ks, &inner.0.kpk, &self.unlock)
        };
        let mut guard = self.write();
        let inner = &mut *guard;
        inner.on_disk = super::OnDisk::of(store);
        match changed {
            Ok((change, rewrapped, settled)) => {
                // KMS_DATA names the new key from here on, whatever failed after it.
                if let Some((ks, kpk)) = rewrapped {
                    inner.ks = ks;
                    inner.kpk = kpk;
                }
                // The file was rewritten: the next change is checked against it and goes
                // after it.
                let ks = inner.ks.clone();
                drop(guard);
                w.rebased(&ks);
                if let Err(e) = settled {
                    let e = KmsError::from(e);
                    log::error!(
                        "changed the {} ({} -> {}), but {e}",
                        kind.label(),
                        change.old_id,
                        change.new_id
                    );
                    self.audit_master_key(kind, Verdict::Failed(&e.to_string()));
                    return Err(e);
                }
                log::info!(
                    "changed the {}: {} -> {}{}",
                    kind.label(),
                    change.old_id,
                    change.new_id,
                    change
                        .kept_as
                        .as_ref()
                        .map(|f| format!("; the old key file is kept as {f}"))
                        .unwrap_or_default()
                );
                Ok(change)
            }
            Err(e) => {
                let ks = inner.ks.clone();
                drop(guard);
                w.rebased(&ks);
                let e = KmsError::from(e);
                self.audit_master_key(kind, Verdict::Failed(&e.to_string()));
                Err(e)
            }
        }
    }

    fn audit_master_key(&self, kind: KeyFileKind, verdict: Verdict<'_>) {
        if let Some(log) = &self.audit {
            let caller = audit::actor();
            let _ = log.append(&Event::keystore(&caller, op(kind), verdict));
        }
    }
}

impl super::ReadGuard<'_> {
    /// The HMK and the KPK as `.status` shows them.
    pub fn master_keys(&self) -> [MasterKeyStatus; 2] {
        let h = &self.0.on_disk.header;
        let (hk, kk) = self.0.on_disk.keeping;
        [
            MasterKeyStatus {
                id: h.hmk_id.to_string(),
                derived: h.hmk_kdf.is_some(),
                keeping: hk,
                changed: h.hmk_changed.unwrap_or(h.created),
            },
            MasterKeyStatus {
                id: h.kpk_id.to_string(),
                derived: h.kpk_kdf.is_some(),
                keeping: kk,
                changed: h.kpk_changed.unwrap_or(h.created),
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::Name;
    use crate::service::{acting_as, NewRecord};
    use std::time::Duration;

    #[test]
    fn a_key_change_keeps_every_key_and_is_a_destructive_move_for_two_persons() {
        let (dir, kms, g, k) = super::super::test_keystore();
        let data = dir.path().join("data");
        let key = kms.unwrap_key(&k).unwrap();
        let [hmk0, kpk0] = kms.read().master_keys();

        let c = kms
            .change_master_key(KeyFileKind::Kpk, &NewMasterKey::default())
            .unwrap();
        assert_eq!(c.old_id.to_string(), kpk0.id);
        let [hmk1, kpk1] = kms.read().master_keys();
        assert_eq!(hmk1.id, hmk0.id);
        assert_eq!(kpk1.id, c.new_id.to_string());
        assert_eq!(kms.unwrap_key(&k).unwrap(), key);
        // A record made after the change is wrapped under the new KPK, and survives a reopen.
        let k2 = kms
            .create_record(&g, NewRecord::prelive(Name::parse("k2").unwrap()))
            .unwrap();
        let key2 = kms.unwrap_key(&k2).unwrap();

        kms.require_two_persons(Duration::from_secs(60));
        {
            let _alice = acting_as(1001, 1001, 1);
            assert!(matches!(
                kms.change_master_key(KeyFileKind::Hmk, &NewMasterKey::default()),
                Err(KmsError::HeldForConfirmation { .. })
            ));
            assert_eq!(kms.read().master_keys()[0].id, hmk0.id);
            assert_eq!(kms.read().pending()[0].target, Target::Keystore);
            assert!(matches!(
                kms.change_master_key(KeyFileKind::Hmk, &NewMasterKey::default()),
                Err(KmsError::SelfConfirmation { .. })
            ));
        }
        {
            let _bob = acting_as(1002, 1002, 2);
            kms.change_master_key(KeyFileKind::Hmk, &NewMasterKey::default())
                .unwrap();
        }
        assert_ne!(kms.read().master_keys()[0].id, hmk0.id);
        kms.quiesce(None).unwrap();
        assert!(matches!(
            kms.change_master_key(KeyFileKind::Kpk, &NewMasterKey::default()),
            Err(KmsError::Quiesced)
        ));
        kms.unquiesce().unwrap();
        drop(kms);
        let kms = Kms::open(&data).unwrap();
        assert_eq!(kms.unwrap_key(&k).unwrap(), key);
        assert_eq!(kms.unwrap_key(&k2).unwrap(), key2);
    }
}
