//! The keystore core: key groups, key records, the lifecycle and its invariants.
//! No I/O and no FUSE here, so that the contract's rules can be tested in microseconds.

mod change;
mod error;
mod model;
mod names;
mod rotation;
mod state;
#[cfg(test)]
mod tests;
pub mod touched;

pub use change::{Change, MAX_DESCRIPTION_BYTES};
pub use error::KeystoreError;
pub use model::{KeyGroup, KeyRecord, WrappedKey};
pub use names::{Cipher, GroupTag, KeyTag, Name, Timestamp, MAX_NAME_BYTES};
pub use rotation::{Due, Period, Rotation};
pub use state::{State, UnknownState};

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// What an accepted change did. Repeating a write (the same state, name or description)
/// is accepted and changes nothing, so scripts may repeat themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Changed,
}

#[derive(Clone, Debug, Default)]
pub struct Keystore {
    /// Shared with clones until changed, like `records`.
    groups: HashMap<GroupTag, Arc<KeyGroup>>,
    group_names: HashMap<Name, GroupTag>,
    groups_by_serial: BTreeMap<u64, GroupTag>,
    /// Shared with clones until changed (`Arc::make_mut`): the service keeps two keystores,
    /// the readers' and the writer's (`service/writer.rs`), and a record costs memory once.
    records: HashMap<KeyTag, Arc<KeyRecord>>,
    next_serial: u64,
}

/// The whole keystore as plain data, for compaction and for import/export.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub next_serial: u64,
    pub groups: Vec<KeyGroup>,
    pub records: Vec<KeyRecord>,
}

impl Keystore {
    pub fn new() -> Keystore {
        Keystore {
            next_serial: 1,
            ..Default::default()
        }
    }

    // ---- queries -------------------------------------------------------------------------

    pub fn group(&self, tag: &GroupTag) -> Option<&KeyGroup> {
        self.groups.get(tag).map(|g| &**g)
    }

    pub fn group_by_name(&self, name: &str) -> Option<&KeyGroup> {
        self.group_names.get(name).and_then(|t| self.group(t))
    }

    /// Groups in creation order, starting after `after_serial` (exclusive).
    pub fn groups_after(&self, after_serial: u64) -> impl Iterator<Item = &KeyGroup> {
        self.groups_by_serial
            .range(after_serial.saturating_add(1)..)
            .filter_map(|(_, t)| self.group(t))
    }

    pub fn groups(&self) -> impl Iterator<Item = &KeyGroup> {
        self.groups_after(0)
    }

    pub fn record(&self, tag: &KeyTag) -> Option<&KeyRecord> {
        self.records.get(tag).map(|r| &**r)
    }

    pub fn record_in(&self, group: &GroupTag, name: &str) -> Option<&KeyRecord> {
        self.groups
            .get(group)
            .and_then(|g| g.record_by_name(name))
            .and_then(|t| self.records.get(t))
            .map(|r| &**r)
    }

    /// Records of a group in creation order, starting after `after_serial` (exclusive).
    pub fn records_of(
        &self,
        group: &GroupTag,
        after_serial: u64,
    ) -> impl Iterator<Item = &KeyRecord> {
        self.groups
            .get(group)
            .into_iter()
            .flat_map(move |g| g.records_after(after_serial))
            .filter_map(|(_, t)| self.records.get(t).map(|r| &**r))
    }

    /// The same keystore with every record's wrapped key replaced by `rewrap(tag, old)`: for a
    /// change of the KPK, all or nothing (the first error is returned, nothing is replaced).
    pub fn rewrapped<E>(
        &self,
        mut rewrap: impl FnMut(&KeyTag, &WrappedKey) -> Result<WrappedKey, E>,
    ) -> Result<Keystore, E> {
        let mut out = self.clone();
        for (tag, record) in out.records.iter_mut() {
            let wrapped = rewrap(tag, &record.wrapped_key)?;
            Arc::make_mut(record).wrapped_key = wrapped;
        }
        Ok(out)
    }

    pub fn records(&self) -> impl Iterator<Item = &KeyRecord> {
        self.records.values().map(|r| &**r)
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    // ---- changes -------------------------------------------------------------------------

    /// Decides whether `change` would be accepted, without changing anything. Callers make an
    /// accepted change durable between `check` and `apply`, so that memory never runs ahead
    /// of the disk.
    pub fn check(&self, change: &Change) -> Result<Outcome, KeystoreError> {
        use Outcome::*;
        match change {
            Change::CreateGroup {
                tag,
                name,
                description,
                ..
            } => {
                check_description(description)?;
                if self.groups.contains_key(tag) {
                    return Err(KeystoreError::TagTaken(tag.to_string()));
                }
                if self.group_names.contains_key(name) {
                    return Err(KeystoreError::GroupNameTaken(name.to_string()));
                }
                Ok(Changed)
            }
            Change::RenameGroup { tag, name, .. } => {
                let g = self.group_or_err(tag)?;
                if &g.name == name {
                    return Ok(Unchanged);
                }
                if self.group_names.contains_key(name) {
                    return Err(KeystoreError::GroupNameTaken(name.to_string()));
                }
                Ok(Changed)
            }
            Change::DescribeGroup {
                tag, description, ..
            } => {
                check_description(description)?;
                let g = self.group_or_err(tag)?;
                Ok(if &g.description == description {
                    Unchanged
                } else {
                    Changed
                })
            }
            Change::SetGroupCipher { tag, cipher, .. } => {
                let g = self.group_or_err(tag)?;
                if g.cipher == *cipher {
                    Ok(Unchanged)
                } else if g.record_count() > 0 {
                    Err(KeystoreError::CipherLocked(g.name.to_string()))
                } else {
                    Ok(Changed)
                }
            }
            Change::SetRotation { tag, rotation, .. } => {
                let g = self.group_or_err(tag)?;
                Ok(if &g.rotation == rotation {
                    Unchanged
                } else {
                    Changed
                })
            }
            Change::DeleteGroup { tag } => {
                let g = self.group_or_err(tag)?;
                if g.record_count() > 0 {
                    return Err(KeystoreError::GroupNotEmpty {
                        name: g.name.to_string(),
                        records: g.record_count(),
                    });
                }
                Ok(Changed)
            }
            Change::CreateRecord {
                tag,
                group,
                name,
                state,
                description,
                key_len,
                ..
            } => {
                let g = self.check_new_record(tag, group, name, description)?;
                if !state.may_be_created_in() {
                    return Err(KeystoreError::CreationStateRefused(*state));
                }
                check_key_len(g, *key_len)?;
                Ok(Changed)
            }
            Change::ImportRecord {
                tag,
                group,
                name,
                state,
                description,
                key_len,
                ..
            } => {
                let g = self.check_new_record(tag, group, name, description)?;
                check_key_len(g, *key_len)?;
                if *state == State::Active {
                    if let Some(current) = g.active().and_then(|t| self.records.get(t)) {
                        return Err(KeystoreError::SecondActive {
                            group: g.name.to_string(),
                            active: current.name.to_string(),
                        });
                    }
                }
                Ok(Changed)
            }
            Change::RenameRecord { tag, name, .. } => {
                let r = self.record_or_err(tag)?;
                if &r.name == name {
                    return Ok(Unchanged);
                }
                let g = self.group_or_err(&r.group)?;
                if g.record_by_name(name.as_str()).is_some() {
                    return Err(KeystoreError::RecordNameTaken {
                        group: g.name.to_string(),
                        name: name.to_string(),
                    });
                }
                Ok(Changed)
            }
            Change::DescribeRecord {
                tag, description, ..
            } => {
                check_description(description)?;
                let r = self.record_or_err(tag)?;
                Ok(if &r.description == description {
                    Unchanged
                } else {
                    Changed
                })
            }
            Change::SetState { tag, state, .. } => {
                let r = self.record_or_err(tag)?;
                if r.state == *state {
                    Ok(Unchanged)
                } else if r.state.may_move_to(*state) {
                    Ok(Changed)
                } else {
                    Err(KeystoreError::TransitionRefused {
                        name: r.name.to_string(),
                        from: r.state,
                        to: *state,
                    })
                }
            }
            Change::DeleteRecord { tag } => {
                let r = self.record_or_err(tag)?;
                if r.state.may_be_deleted() {
                    Ok(Changed)
                } else {
                    Err(KeystoreError::DeleteRefused {
                        name: r.name.to_string(),
                        state: r.state,
                    })
                }
            }
        }
    }

    /// Checks and applies `change` as one step: either all of it happens or nothing does.
    pub fn apply(&mut self, change: &Change) -> Result<Outcome, KeystoreError> {
        let outcome = self.check(change)?;
        if outcome == Outcome::Changed {
            self.mutate(change);
        }
        Ok(outcome)
    }

    /// Performs a change that `check` accepted. Nothing here may fail.
    fn mutate(&mut self, change: &Change) {
        match change.clone() {
            Change::CreateGroup {
                tag,
                name,
                cipher,
                description,
                at,
            } => {
                let serial = self.take_serial();
                self.group_names.insert(name.clone(), tag.clone());
                self.groups_by_serial.insert(serial, tag.clone());
                self.groups.insert(
                    tag.clone(),
                    Arc::new(KeyGroup {
                        tag,
                        name,
                        cipher,
                        description,
                        created: at,
                        modified: at,
                        serial,
                        rotation: Default::default(),
                        members: Default::default(),
                    }),
                );
            }
            Change::RenameGroup { tag, name, at } => {
                let g = Arc::make_mut(self.groups.get_mut(&tag).expect("checked"));
                self.group_names.remove(&g.name);
                self.group_names.insert(name.clone(), tag.clone());
                g.name = name;
                g.modified = at;
            }
            Change::DescribeGroup {
                tag,
                description,
                at,
            } => {
                let g = Arc::make_mut(self.groups.get_mut(&tag).expect("checked"));
                g.description = description;
                g.modified = at;
            }
            Change::SetGroupCipher { tag, cipher, at } => {
                let g = Arc::make_mut(self.groups.get_mut(&tag).expect("checked"));
                g.cipher = cipher;
                g.modified = at;
            }
            Change::SetRotation { tag, rotation, at } => {
                let g = Arc::make_mut(self.groups.get_mut(&tag).expect("checked"));
                g.rotation = rotation;
                g.modified = at;
            }
            Change::DeleteGroup { tag } => {
                let g = self.groups.remove(&tag).expect("checked");
                self.group_names.remove(&g.name);
                self.groups_by_serial.remove(&g.serial);
            }
            Change::CreateRecord {
                tag,
                group,
                name,
                state,
                description,
                wrapped_key,
                derivation,
                at,
                key_len: _,
            } => {
                if state == State::Active {
                    self.demote_active(&group, at);
                }
                self.insert_record(KeyRecord {
                    tag,
                    group,
                    name,
                    state,
                    description,
                    created: at,
                    modified: at,
                    state_since: Some(at),
                    serial: 0,
                    wrapped_key,
                    derivation,
                });
            }
            Change::ImportRecord {
                tag,
                group,
                name,
                state,
                description,
                wrapped_key,
                derivation,
                created,
                at,
                key_len: _,
            } => {
                // No demotion: `check` refused a second active record.
                self.insert_record(KeyRecord {
                    tag,
                    group,
                    name,
                    state,
                    description,
                    created,
                    modified: at,
                    state_since: Some(at),
                    serial: 0,
                    wrapped_key,
                    derivation,
                });
            }
            Change::RenameRecord { tag, name, at } => {
                let r = Arc::make_mut(self.records.get_mut(&tag).expect("checked"));
                let g = Arc::make_mut(self.groups.get_mut(&r.group).expect("checked"));
                g.members.by_name.remove(&r.name);
                g.members.by_name.insert(name.clone(), tag.clone());
                r.name = name;
                r.modified = at;
            }
            Change::DescribeRecord {
                tag,
                description,
                at,
            } => {
                let r = Arc::make_mut(self.records.get_mut(&tag).expect("checked"));
                r.description = description;
                r.modified = at;
            }
            Change::SetState { tag, state, at } => {
                let group = self.records[&tag].group.clone();
                if state == State::Active {
                    // Activating demotes the current active record in the same step, so no
                    // reader ever sees two active records or a group without one mid-switch.
                    self.demote_active(&group, at);
                }
                let r = Arc::make_mut(self.records.get_mut(&tag).expect("checked"));
                let was_active = r.state == State::Active;
                r.state = state;
                r.modified = at;
                r.state_since = Some(at);
                let g = Arc::make_mut(self.groups.get_mut(&group).expect("checked"));
                if state == State::Active {
                    g.members.active = Some(tag);
                    g.modified = at;
                } else if was_active {
                    g.members.active = None;
                    g.modified = at;
                }
            }
            Change::DeleteRecord { tag } => {
                let r = self.records.remove(&tag).expect("checked");
                if let Some(g) = self.groups.get_mut(&r.group).map(Arc::make_mut) {
                    g.members.by_name.remove(&r.name);
                    g.members.by_serial.remove(&r.serial);
                }
            }
        }
    }

    /// What every new record must satisfy, however it arrives: its description fits the bound,
    /// its group exists, its tag is unused and its name is free in the group.
    fn check_new_record(
        &self,
        tag: &KeyTag,
        group: &GroupTag,
        name: &Name,
        description: &str,
    ) -> Result<&KeyGroup, KeystoreError> {
        check_description(description)?;
        let g = self.group_or_err(group)?;
        if self.records.contains_key(tag) {
            return Err(KeystoreError::TagTaken(tag.to_string()));
        }
        if g.record_by_name(name.as_str()).is_some() {
            return Err(KeystoreError::RecordNameTaken {
                group: g.name.to_string(),
                name: name.to_string(),
            });
        }
        Ok(g)
    }

    /// Files a checked new record under its group, with the next serial; `record.modified` is
    /// also the group's modification time.
    fn insert_record(&mut self, mut record: KeyRecord) {
        record.serial = self.take_serial();
        let g = Arc::make_mut(self.groups.get_mut(&record.group).expect("checked"));
        g.members
            .by_name
            .insert(record.name.clone(), record.tag.clone());
        g.members
            .by_serial
            .insert(record.serial, record.tag.clone());
        if record.state == State::Active {
            g.members.active = Some(record.tag.clone());
        }
        g.modified = record.modified;
        self.records.insert(record.tag.clone(), Arc::new(record));
    }

    fn demote_active(&mut self, group: &GroupTag, at: Timestamp) {
        let Some(g) = self.groups.get_mut(group).map(Arc::make_mut) else {
            return;
        };
        if let Some(current) = g.members.active.take() {
            if let Some(r) = self.records.get_mut(&current).map(Arc::make_mut) {
                r.state = State::Inactive;
                r.modified = at;
                r.state_since = Some(at);
            }
        }
    }

    fn take_serial(&mut self) -> u64 {
        let s = self.next_serial;
        self.next_serial += 1;
        s
    }

    fn group_or_err(&self, tag: &GroupTag) -> Result<&KeyGroup, KeystoreError> {
        self.group(tag)
            .ok_or_else(|| KeystoreError::NoSuchGroup(tag.to_string()))
    }

    fn record_or_err(&self, tag: &KeyTag) -> Result<&KeyRecord, KeystoreError> {
        self.record(tag)
            .ok_or_else(|| KeystoreError::NoSuchRecord(tag.to_string()))
    }

    // ---- snapshots and invariants ----------------------------------------------------------

    pub fn to_snapshot(&self) -> Snapshot {
        let mut groups: Vec<KeyGroup> = self.groups.values().map(|g| (**g).clone()).collect();
        groups.sort_by_key(|g| g.serial);
        let mut records: Vec<KeyRecord> = self.records.values().map(|r| (**r).clone()).collect();
        records.sort_by_key(|r| r.serial);
        Snapshot {
            next_serial: self.next_serial,
            groups,
            records,
        }
    }

    /// Rebuilds a keystore from a snapshot, refusing one that breaks an invariant.
    pub fn from_snapshot(snapshot: Snapshot) -> Result<Keystore, String> {
        let mut ks = Keystore {
            next_serial: snapshot.next_serial,
            ..Default::default()
        };
        for mut g in snapshot.groups {
            g.members = Default::default();
            ks.group_names.insert(g.name.clone(), g.tag.clone());
            ks.groups_by_serial.insert(g.serial, g.tag.clone());
            if ks.groups.insert(g.tag.clone(), Arc::new(g)).is_some() {
                return Err("two groups share a tag".into());
            }
        }
        for r in snapshot.records {
            let g = ks
                .groups
                .get_mut(&r.group)
                .map(Arc::make_mut)
                .ok_or_else(|| format!("record {} belongs to no group", r.tag))?;
            g.members.by_name.insert(r.name.clone(), r.tag.clone());
            g.members.by_serial.insert(r.serial, r.tag.clone());
            if r.state == State::Active {
                if g.members.active.is_some() {
                    return Err(format!("group {} has two active records", g.name));
                }
                g.members.active = Some(r.tag.clone());
            }
            if ks.records.insert(r.tag.clone(), Arc::new(r)).is_some() {
                return Err("two records share a tag".into());
            }
        }
        ks.check_invariants()?;
        Ok(ks)
    }

    /// The invariants of the contract, checked from scratch (for `verify` and tests).
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.group_names.len() != self.groups.len()
            || self.groups_by_serial.len() != self.groups.len()
        {
            return Err("group names are not unique".into());
        }
        let mut member_total = 0;
        for g in self.groups.values() {
            if self.group_names.get(&g.name) != Some(&g.tag) {
                return Err(format!("group {} is not indexed by its name", g.tag));
            }
            if g.serial >= self.next_serial {
                return Err(format!("group {} has a serial from the future", g.name));
            }
            if g.members.by_name.len() != g.members.by_serial.len() {
                return Err(format!("record names in group {} are not unique", g.name));
            }
            let mut active = 0;
            for t in g.members.by_serial.values() {
                let r = self
                    .records
                    .get(t)
                    .ok_or_else(|| format!("group {} lists a missing record", g.name))?;
                if r.group != g.tag || g.members.by_name.get(&r.name) != Some(t) {
                    return Err(format!("record {} is indexed wrongly", r.tag));
                }
                if r.serial >= self.next_serial {
                    return Err(format!("record {} has a serial from the future", r.name));
                }
                if r.state == State::Active {
                    active += 1;
                    if g.members.active.as_ref() != Some(t) {
                        return Err(format!("group {} lost track of its active record", g.name));
                    }
                }
            }
            if active > 1 {
                return Err(format!("group {} has {active} active records", g.name));
            }
            if active == 0 && g.members.active.is_some() {
                return Err(format!("group {} points at an inactive record", g.name));
            }
            member_total += g.members.by_serial.len();
        }
        if member_total != self.records.len() {
            return Err("some records belong to no group".into());
        }
        Ok(())
    }
}

fn check_key_len(g: &KeyGroup, key_len: usize) -> Result<(), KeystoreError> {
    if key_len != g.cipher.key_len() {
        return Err(KeystoreError::KeyLengthMismatch {
            len: key_len,
            cipher: g.cipher.as_str(),
            expected: g.cipher.key_len(),
        });
    }
    Ok(())
}

fn check_description(d: &str) -> Result<(), KeystoreError> {
    check_description_len(d.len())
}

/// The one rule for a description's size, also asked by the mount while a description is
/// still being written (so that the `write()` that makes it too long is the one refused).
pub fn check_description_len(len: usize) -> Result<(), KeystoreError> {
    if len > MAX_DESCRIPTION_BYTES {
        return Err(KeystoreError::DescriptionTooLong {
            len,
            max: MAX_DESCRIPTION_BYTES,
        });
    }
    Ok(())
}
