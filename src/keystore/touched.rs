//! What a change touches: the objects whose shown content a change alters, and the names it
//! takes away. A front end that lets clients cache what it shows (the mount's page and
//! dentry caches) invalidates exactly these. Computed from the keystore as it is before the
//! change, so that a deleted record's serial and a renamed record's old name are still known.

use super::{Change, GroupTag, KeyTag, Keystore, Name, State};

/// A group or a record, by tag and by its never-reused serial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object<T> {
    pub tag: T,
    pub serial: u64,
}

/// A name that may have gone from a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gone {
    /// A group's name at the top.
    Group(Name),
    /// A record's name in its group (the group's serial).
    Record { group: u64, name: Name },
    /// A record's `.by-tag` entry.
    Tag(KeyTag),
    /// A group's `.active` link (the group's serial).
    Active { group: u64 },
}

/// Everything one change alters, beyond what it creates (a new object has nothing cached).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    /// The list of groups itself (its count) changed.
    pub groups_listing: bool,
    pub groups: Vec<Object<GroupTag>>,
    pub records: Vec<Object<KeyTag>>,
    pub gone: Vec<Gone>,
}

impl Touched {
    pub fn is_empty(&self) -> bool {
        !self.groups_listing
            && self.groups.is_empty()
            && self.records.is_empty()
            && self.gone.is_empty()
    }

    /// Adds what `other` touched.
    pub fn merge(&mut self, other: Touched) {
        self.groups_listing |= other.groups_listing;
        self.groups.extend(other.groups);
        self.records.extend(other.records);
        self.gone.extend(other.gone);
    }

    /// Adds a record that changed in a way no `Change` says (its pending moves).
    pub fn add_record(&mut self, ks: &Keystore, tag: &KeyTag) {
        self.record(ks, tag)
    }

    /// Adds a group likewise.
    pub fn add_group(&mut self, ks: &Keystore, tag: &GroupTag) {
        self.group(ks, tag)
    }

    fn group(&mut self, ks: &Keystore, tag: &GroupTag) {
        if let Some(g) = ks.group(tag) {
            self.groups.push(Object {
                tag: tag.clone(),
                serial: g.serial,
            });
        }
    }

    fn record(&mut self, ks: &Keystore, tag: &KeyTag) {
        if let Some(r) = ks.record(tag) {
            self.records.push(Object {
                tag: tag.clone(),
                serial: r.serial,
            });
        }
    }

    /// Every record of the group shows something of the group (its name, its cipher).
    fn all_records_of(&mut self, ks: &Keystore, group: &GroupTag) {
        let tags: Vec<KeyTag> = ks.records_of(group, 0).map(|r| r.tag.clone()).collect();
        for t in &tags {
            self.record(ks, t);
        }
    }

    /// A record's own change, which its group shows too (its count, its active record).
    fn record_and_group(&mut self, ks: &Keystore, tag: &KeyTag) {
        self.record(ks, tag);
        if let Some(g) = ks.record(tag).map(|r| r.group.clone()) {
            self.group(ks, &g);
        }
    }
}

impl Keystore {
    /// What `change` would touch if applied to this keystore now. A change the keystore
    /// refuses touches nothing it could name; callers ask only about checked changes.
    pub fn touched_by(&self, change: &Change) -> Touched {
        let mut t = Touched::default();
        match change {
            Change::CreateGroup { .. } => t.groups_listing = true,
            Change::RenameGroup { tag, .. } | Change::SetGroupCipher { tag, .. } => {
                t.group(self, tag);
                t.all_records_of(self, tag);
                if let (Change::RenameGroup { .. }, Some(g)) = (change, self.group(tag)) {
                    t.gone.push(Gone::Group(g.name.clone()));
                }
            }
            Change::DescribeGroup { tag, .. } | Change::SetRotation { tag, .. } => {
                t.group(self, tag)
            }
            Change::DeleteGroup { tag } => {
                t.groups_listing = true;
                t.group(self, tag);
                if let Some(g) = self.group(tag) {
                    t.gone.push(Gone::Group(g.name.clone()));
                }
            }
            Change::CreateRecord { group, state, .. }
            | Change::ImportRecord { group, state, .. } => {
                t.group(self, group);
                if *state == State::Active {
                    self.touch_demoted(&mut t, group);
                }
            }
            Change::RenameRecord { tag, .. } => {
                t.record_and_group(self, tag);
                self.name_gone(&mut t, tag);
            }
            Change::DescribeRecord { tag, .. } => t.record(self, tag),
            Change::SetState { tag, state, .. } => {
                t.record_and_group(self, tag);
                let Some(r) = self.record(tag) else {
                    return t;
                };
                if *state == State::Active {
                    self.touch_demoted(&mut t, &r.group.clone());
                } else if r.state == State::Active {
                    if let Some(g) = self.group(&r.group) {
                        t.gone.push(Gone::Active { group: g.serial });
                    }
                }
            }
            Change::DeleteRecord { tag } => {
                t.record_and_group(self, tag);
                self.name_gone(&mut t, tag);
                t.gone.push(Gone::Tag(tag.clone()));
            }
        }
        t
    }

    /// The record's current name leaves its group's listing.
    fn name_gone(&self, t: &mut Touched, tag: &KeyTag) {
        if let Some(r) = self.record(tag) {
            let group = self.group(&r.group).map_or(0, |g| g.serial);
            t.gone.push(Gone::Record {
                group,
                name: r.name.clone(),
            });
        }
    }

    /// Activating a record demotes the group's active one, whose files change too.
    fn touch_demoted(&self, t: &mut Touched, group: &GroupTag) {
        if let Some(active) = self.group(group).and_then(|g| g.active()).cloned() {
            if !t.records.iter().any(|r| r.tag == active) {
                t.record(self, &active);
            }
        }
    }
}
