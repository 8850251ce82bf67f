//! Rotation through the one commit path: setting a group's periods, rotating now, and what
//! the timer does when a rotation or a retirement falls due. A rotation is one change (a
//! fresh record created active, which demotes the current one in the same step), so a reader
//! never sees a group with two active records or, mid-rotation, none.

use super::{Kms, KmsError};
use crate::crypto::KeyMaterial;
use crate::keystore::{
    Change, Due, GroupTag, KeyTag, Keystore, KeystoreError, Rotation, State, Timestamp, WrappedKey,
};

/// What the timer did, for the log and for tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotated {
    /// `group` got a fresh active record `new`; `old` became inactive.
    Rotated {
        group: GroupTag,
        old: Option<KeyTag>,
        new: KeyTag,
    },
    /// `record` had been inactive for its group's retirement period: now deprecated.
    Retired { record: KeyTag },
}

pub(super) fn any_enabled(ks: &Keystore) -> bool {
    ks.groups()
        .any(|g| g.rotation.period.is_some() || g.rotation.retire_after.is_some())
}

impl Kms {
    pub fn set_rotation(&self, group: &GroupTag, rotation: Rotation) -> Result<(), KmsError> {
        self.commit(Change::SetRotation {
            tag: group.clone(),
            rotation,
            at: Timestamp::now(),
        })
        .map(drop)
    }

    /// Changes one of a group's two periods, keeping the other as it is under the lock (so
    /// two administrators setting one each never undo each other).
    pub fn update_rotation(
        &self,
        group: &GroupTag,
        update: impl FnOnce(&mut Rotation),
    ) -> Result<(), KmsError> {
        self.commit_with(|ks, _| {
            let g = ks
                .group(group)
                .ok_or_else(|| KeystoreError::NoSuchGroup(group.to_string()))?;
            let mut rotation = g.rotation;
            update(&mut rotation);
            Ok(Some(Change::SetRotation {
                tag: group.clone(),
                rotation,
                at: Timestamp::now(),
            }))
        })
        .map(drop)
    }

    /// Rotates `group` now: a fresh record with a random key, named `rot-YYYYmmddTHHMMSSZ`,
    /// becomes active; the record that was active becomes inactive in the same step.
    pub fn rotate(&self, group: &GroupTag, now: Timestamp) -> Result<KeyTag, KmsError> {
        let old = self.read().group(group).and_then(|g| g.active().cloned());
        self.rotate_if(group, now, |_| true)?
            .inspect(|new| log_rotation(self, group, old.as_ref(), new, "on request"))
            .ok_or_else(|| KeystoreError::NoSuchGroup(group.to_string()).into())
    }

    /// Makes the rotation unless `still` says, under the write lock, that it is no longer
    /// wanted (someone rotated first). Returns the new record's tag.
    fn rotate_if(
        &self,
        group: &GroupTag,
        now: Timestamp,
        still: impl FnOnce(&Keystore) -> bool,
    ) -> Result<Option<KeyTag>, KmsError> {
        let cipher = self
            .read()
            .group(group)
            .map(|g| g.cipher)
            .ok_or_else(|| KeystoreError::NoSuchGroup(group.to_string()))?;
        let tag = KeyTag::random();
        let key = KeyMaterial::random(cipher.key_len());
        let made = self.commit_with(|ks, kpk| {
            let Some(g) = ks.group(group) else {
                return Ok(None);
            };
            if g.cipher != cipher || !still(ks) {
                return Ok(None);
            }
            let replaced = g
                .active()
                .and_then(|t| ks.record(t))
                .map(|r| format!("; replaced \"{}\"", r.name))
                .unwrap_or_default();
            Ok(Some(Change::CreateRecord {
                tag: tag.clone(),
                group: group.clone(),
                name: ks.rotation_name(group, now),
                state: State::Active,
                description: format!("made by rotation{replaced}"),
                wrapped_key: WrappedKey(kpk.wrap(&key, tag.as_str())),
                key_len: key.len(),
                derivation: None,
                at: now,
            }))
        })?;
        Ok(made.map(|_| tag))
    }

    /// Makes every change rotation and retirement ask for at `now`. While quiesced nothing is
    /// made: due changes wait, and happen (once) after the freeze. Failures are logged and
    /// tried again at the next tick.
    pub fn run_due(&self, now: Timestamp) -> Vec<Rotated> {
        if self.is_quiesced() {
            return Vec::new();
        }
        let due = self.read().due(now);
        let mut done = Vec::new();
        for d in due {
            match d {
                Due::Rotate { group, replaces } => {
                    let still_due = |ks: &Keystore| {
                        ks.group(&group).is_some_and(|g| {
                            g.active() == Some(&replaces)
                                && ks.next_rotation(g).is_some_and(|t| t <= now)
                        })
                    };
                    match self.rotate_if(&group, now, still_due) {
                        Ok(Some(new)) => {
                            log_rotation(self, &group, Some(&replaces), &new, "period reached");
                            done.push(Rotated::Rotated {
                                group,
                                old: Some(replaces),
                                new,
                            });
                        }
                        Ok(None) => {}
                        // The freeze began since the check: the rotation waits for it.
                        Err(KmsError::Quiesced) => break,
                        Err(e) => log::error!("rotation of group tag {group} failed: {e}"),
                    }
                }
                Due::Retire { record } => {
                    let made = self.commit_with(|ks, _| {
                        let still = ks
                            .record(&record)
                            .is_some_and(|r| r.state == State::Inactive);
                        Ok(still.then(|| Change::SetState {
                            tag: record.clone(),
                            state: State::Deprecated,
                            at: now,
                        }))
                    });
                    match made {
                        Ok(Some(_)) => {
                            let ks = self.read();
                            if let Some(r) = ks.record(&record) {
                                let g = ks.group(&r.group).map(|g| g.name.as_str()).unwrap_or("?");
                                log::info!(
                                    "retired record \"{}\" of group \"{g}\": inactive for its group's retirement period, now deprecated",
                                    r.name
                                );
                            }
                            done.push(Rotated::Retired { record });
                        }
                        Ok(None) => {}
                        Err(KmsError::Quiesced) => break,
                        Err(e) => log::error!("retirement of record tag {record} failed: {e}"),
                    }
                }
            }
        }
        done
    }
}

fn log_rotation(kms: &Kms, group: &GroupTag, old: Option<&KeyTag>, new: &KeyTag, why: &str) {
    let ks = kms.read();
    let name = |t: &KeyTag| ks.record(t).map(|r| r.name.to_string()).unwrap_or_default();
    let g = ks.group(group).map(|g| g.name.as_str()).unwrap_or("?");
    match old {
        Some(old) => log::info!(
            "rotated group \"{g}\" ({why}): \"{}\" is now inactive, \"{}\" active",
            name(old),
            name(new)
        ),
        None => log::info!(
            "rotated group \"{g}\" ({why}): \"{}\" is now active",
            name(new)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::{Name, Period};
    use crate::service::NewRecord;

    const S: i64 = 1_000_000_000;

    fn kms() -> (tempfile::TempDir, std::sync::Arc<Kms>) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        crate::store::init(&data, Default::default()).unwrap();
        let kms = Kms::open(&data).unwrap();
        (dir, kms)
    }

    fn every(secs: u64) -> Rotation {
        Rotation {
            period: Some(Period::from_secs(secs).unwrap()),
            retire_after: None,
        }
    }

    #[test]
    fn rotation_runs_once_per_period_waits_while_quiesced_and_survives_a_reopen() {
        let (dir, kms) = kms();
        let g = kms.create_group(Name::parse("pool").unwrap()).unwrap();
        let mut req = NewRecord::prelive(Name::parse("k1").unwrap());
        req.state = State::Active;
        let k1 = kms.create_record(&g, req).unwrap();
        let t0 = kms.read().record(&k1).unwrap().in_state_since();
        kms.set_rotation(&g, every(3600)).unwrap();
        assert!(kms.run_due(Timestamp(t0.0 + 3599 * S)).is_empty());
        // Quiesced: the due rotation waits, then happens once.
        kms.quiesce(None).unwrap();
        assert!(kms.run_due(Timestamp(t0.0 + 10 * 3600 * S)).is_empty());
        kms.unquiesce().unwrap();
        let done = kms.run_due(Timestamp(t0.0 + 10 * 3600 * S));
        assert_eq!(done.len(), 1, "{done:?}");
        assert!(kms.run_due(Timestamp(t0.0 + 10 * 3600 * S)).is_empty());
        let Rotated::Rotated { new, old, .. } = &done[0] else {
            panic!("{done:?}")
        };
        assert_eq!(old.as_ref(), Some(&k1));
        {
            let ks = kms.read();
            assert_eq!(ks.record(&k1).unwrap().state, State::Inactive);
            let r = ks.record(new).unwrap();
            assert_eq!(r.state, State::Active);
            assert!(r.name.as_str().starts_with("rot-"), "{}", r.name);
            ks.check_invariants().unwrap();
        }
        // The setting and the times survive a reopen (format 2 on disk).
        drop(kms);
        let kms = super::super::tests_support_reopen(dir.path());
        let ks = kms.read();
        assert_eq!(ks.group(&g).unwrap().rotation, every(3600));
        assert_eq!(ks.status().format_version, crate::store::FORMAT_VERSION);
        assert_eq!(ks.record(&k1).unwrap().state, State::Inactive);
    }

    #[test]
    fn rotating_now_needs_no_period_and_retirement_stops_at_deprecated() {
        let (_dir, kms) = kms();
        let g = kms.create_group(Name::parse("pool").unwrap()).unwrap();
        let first = kms.rotate(&g, Timestamp::now()).unwrap();
        let second = kms.rotate(&g, Timestamp::now()).unwrap();
        {
            let ks = kms.read();
            assert_eq!(ks.record(&first).unwrap().state, State::Inactive);
            assert_eq!(ks.record(&second).unwrap().state, State::Active);
            assert_ne!(
                ks.record(&first).unwrap().name,
                ks.record(&second).unwrap().name
            );
        }
        let since = kms.read().record(&first).unwrap().in_state_since();
        kms.set_rotation(
            &g,
            Rotation {
                period: None,
                retire_after: Some(Period::from_secs(60).unwrap()),
            },
        )
        .unwrap();
        let done = kms.run_due(Timestamp(since.0 + 61 * S));
        assert_eq!(
            done,
            vec![Rotated::Retired {
                record: first.clone()
            }]
        );
        assert_eq!(kms.read().record(&first).unwrap().state, State::Deprecated);
        assert!(kms.run_due(Timestamp(since.0 + 10_000 * S)).is_empty());
    }
}
