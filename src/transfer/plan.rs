//! Import planning: every change an import makes, decided against the current keystore before
//! anything is written, so that the import is all or nothing and `--preview` shows exactly it.
//!
//! Rules (the README has them for administrators):
//! - Groups become `NAME_YYYYMMDDTHHMMSSZ` (the import time, UTC), or keep their name with
//!   `--preserve-names`, in which case a group of that name here receives the records (same
//!   cipher required, else the whole import is refused). A group whose tag is in use here gets a
//!   fresh tag. A group none of whose records is new is not created.
//! - A record is skipped when its tag is in use here, when its key equals a key here (compared
//!   by value), or when its group here already has a record of its name.
//! - States are kept, except that an active record joining a group that already has an active
//!   record (here, or imported just before) becomes inactive.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use super::report::{GroupOutcome, GroupReport, RecordOutcome, RecordReport, Report, SkipReason};
use super::{ExportBody, ExportedGroup, ExportedRecord, TransferError};
use crate::crypto::{KeyMaterial, Kpk};
use crate::keystore::{
    Change, GroupTag, KeyGroup, KeyTag, Keystore, Name, State, Timestamp, WrappedKey,
    MAX_NAME_BYTES,
};

#[derive(Clone, Debug)]
pub struct ImportOptions {
    pub preserve_names: bool,
    /// The import time: the renaming suffix and the records' modification time.
    pub at: Timestamp,
}

#[derive(Debug)]
pub struct Plan {
    /// In order: each group's creation before its records.
    pub changes: Vec<Change>,
    pub report: Report,
}

/// Decides every change of importing `body` into `ks`. Keys are re-wrapped under `kpk`, bound
/// to their tags; the existing keys are unwrapped with it to compare them by value.
pub fn plan_import(
    ks: &Keystore,
    kpk: &Kpk,
    body: &ExportBody,
    opts: &ImportOptions,
) -> Result<Plan, TransferError> {
    let mut p = Planner::new(ks, kpk, opts)?;
    for g in &body.groups {
        p.group(g)?;
    }
    Ok(Plan {
        changes: p.changes,
        report: p.report,
    })
}

/// Applies the plan to a copy of `ks`, so that a preview refuses exactly what the import would.
pub fn dry_run(ks: &Keystore, plan: &Plan) -> Result<(), TransferError> {
    let mut copy = ks.clone();
    for c in &plan.changes {
        copy.apply(c)?;
    }
    Ok(())
}

/// A key compared and hashed by its bytes (the map keeps it zeroizing).
struct ByValue(KeyMaterial);

impl PartialEq for ByValue {
    fn eq(&self, other: &Self) -> bool {
        self.0.expose() == other.0.expose()
    }
}

impl Eq for ByValue {}

impl Hash for ByValue {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.0.expose().hash(h)
    }
}

impl std::borrow::Borrow<[u8]> for ByValue {
    fn borrow(&self) -> &[u8] {
        self.0.expose()
    }
}

struct Planner<'a> {
    ks: &'a Keystore,
    kpk: &'a Kpk,
    opts: &'a ImportOptions,
    suffix: String,
    /// Every key here or planned, with the "GROUP/RECORD" that holds it.
    keys: HashMap<ByValue, String>,
    /// Record tags planned so far, with their holder.
    tags: HashMap<KeyTag, String>,
    group_tags: HashSet<GroupTag>,
    group_names: HashSet<Name>,
    changes: Vec<Change>,
    report: Report,
}

/// Where the records of one exported group go.
struct Target<'a> {
    name: Name,
    tag: GroupTag,
    existing: Option<&'a KeyGroup>,
    /// The group's active record, here or planned.
    active: Option<Name>,
    names: HashSet<Name>,
}

fn holder(group: &str, record: &str) -> String {
    format!("{}/{}", group.escape_debug(), record.escape_debug())
}

impl<'a> Planner<'a> {
    fn new(ks: &'a Keystore, kpk: &'a Kpk, opts: &'a ImportOptions) -> Result<Self, TransferError> {
        let mut keys = HashMap::new();
        for g in ks.groups() {
            for r in ks.records_of(&g.tag, 0) {
                let key = kpk.unwrap(&r.wrapped_key.0, r.tag.as_str()).map_err(|_| {
                    TransferError::KeyUnreadable {
                        name: r.name.to_string(),
                        tag: r.tag.to_string(),
                    }
                })?;
                keys.entry(ByValue(key))
                    .or_insert_with(|| holder(g.name.as_str(), r.name.as_str()));
            }
        }
        Ok(Planner {
            ks,
            kpk,
            opts,
            suffix: name_suffix(opts.at),
            keys,
            tags: HashMap::new(),
            group_tags: HashSet::new(),
            group_names: HashSet::new(),
            changes: Vec::new(),
            report: Report::default(),
        })
    }

    fn group(&mut self, g: &ExportedGroup) -> Result<(), TransferError> {
        let mut target = self.target(g)?;
        let mut records = Vec::new();
        let mut changes = Vec::new();
        for r in &g.records {
            let outcome = self.record(r, &mut target, &mut changes);
            records.push(RecordReport {
                name: r.name.clone(),
                tag: r.tag.clone(),
                outcome,
            });
        }
        let outcome = if target.existing.is_some() {
            GroupOutcome::Merged {
                name: target.name,
                tag: target.tag,
            }
        } else if !changes.is_empty() || (g.records.is_empty() && self.ks.group(&g.tag).is_none()) {
            self.group_names.insert(target.name.clone());
            self.group_tags.insert(target.tag.clone());
            self.changes.push(Change::CreateGroup {
                tag: target.tag.clone(),
                name: target.name.clone(),
                cipher: g.cipher,
                description: g.description.clone(),
                at: self.opts.at,
            });
            GroupOutcome::Created {
                name: target.name,
                tag: target.tag,
            }
        } else {
            GroupOutcome::NothingNew
        };
        self.changes.append(&mut changes);
        self.report.groups.push(GroupReport {
            source: g.name.clone(),
            source_tag: g.tag.clone(),
            outcome,
            records,
        });
        Ok(())
    }

    fn target(&self, g: &ExportedGroup) -> Result<Target<'a>, TransferError> {
        let ks = self.ks;
        let existing = match self.opts.preserve_names {
            true => ks.group_by_name(g.name.as_str()),
            false => None,
        };
        match existing {
            Some(e) => {
                if e.cipher != g.cipher {
                    return Err(TransferError::CipherMismatch {
                        name: e.name.to_string(),
                        here: e.cipher,
                        there: g.cipher,
                    });
                }
                Ok(Target {
                    name: e.name.clone(),
                    tag: e.tag.clone(),
                    existing: Some(e),
                    active: e
                        .active()
                        .and_then(|t| ks.record(t))
                        .map(|r| r.name.clone()),
                    names: HashSet::new(),
                })
            }
            None => Ok(Target {
                name: self.new_name(&g.name)?,
                tag: self.new_tag(&g.tag),
                existing: None,
                active: None,
                names: HashSet::new(),
            }),
        }
    }

    fn record(
        &mut self,
        r: &ExportedRecord,
        target: &mut Target<'_>,
        changes: &mut Vec<Change>,
    ) -> RecordOutcome {
        let tag_holder = match self.ks.record(&r.tag) {
            Some(here) => self
                .ks
                .group(&here.group)
                .map(|g| holder(g.name.as_str(), here.name.as_str())),
            None => self.tags.get(&r.tag).cloned(),
        };
        if let Some(holder) = tag_holder {
            return RecordOutcome::Skipped(SkipReason::TagInUse { holder });
        }
        if let Some(holder) = self.keys.get(r.key.expose()) {
            return RecordOutcome::Skipped(SkipReason::SameKey {
                holder: holder.clone(),
            });
        }
        let name_here = target
            .existing
            .and_then(|g| g.record_by_name(r.name.as_str()))
            .is_some();
        if name_here || target.names.contains(&r.name) {
            return RecordOutcome::Skipped(SkipReason::NameTaken {
                group: target.name.clone(),
            });
        }
        let (state, outcome) = match (&target.active, r.state) {
            (Some(active), State::Active) => (
                State::Inactive,
                RecordOutcome::MadeInactive {
                    active: active.clone(),
                },
            ),
            (_, state) => (state, RecordOutcome::Imported { state }),
        };
        if state == State::Active {
            target.active = Some(r.name.clone());
        }
        let held_by = holder(target.name.as_str(), r.name.as_str());
        self.tags.insert(r.tag.clone(), held_by.clone());
        self.keys.insert(ByValue(r.key.clone()), held_by);
        target.names.insert(r.name.clone());
        changes.push(Change::ImportRecord {
            tag: r.tag.clone(),
            group: target.tag.clone(),
            name: r.name.clone(),
            state,
            description: r.description.clone(),
            wrapped_key: WrappedKey(self.kpk.wrap(&r.key, r.tag.as_str())),
            key_len: r.key.len(),
            derivation: r.derivation.clone(),
            created: r.created,
            at: self.opts.at,
        });
        outcome
    }

    fn name_taken(&self, name: &str) -> bool {
        self.ks.group_by_name(name).is_some() || self.group_names.contains(name)
    }

    /// `NAME_SUFFIX`, or `NAME_SUFFIX_2`, ... if two imports meet within one second.
    fn new_name(&self, source: &Name) -> Result<Name, TransferError> {
        if self.opts.preserve_names && !self.name_taken(source.as_str()) {
            return Ok(source.clone());
        }
        // Room for the suffix and a counter within the name length limit.
        let mut end = source
            .as_str()
            .len()
            .min(MAX_NAME_BYTES - self.suffix.len() - 6);
        while !source.as_str().is_char_boundary(end) {
            end -= 1;
        }
        let base = format!("{}_{}", &source.as_str()[..end], self.suffix);
        let candidate = (1..10_000)
            .map(|n| match n {
                1 => base.clone(),
                n => format!("{base}_{n}"),
            })
            .find(|c| !self.name_taken(c))
            .ok_or_else(|| TransferError::Invalid(format!("no free name for group {source}")))?;
        Name::parse(&candidate).map_err(|e| TransferError::Invalid(e.to_string()))
    }

    fn new_tag(&self, source: &GroupTag) -> GroupTag {
        let free = |t: &GroupTag| self.ks.group(t).is_none() && !self.group_tags.contains(t);
        if free(source) {
            return source.clone();
        }
        loop {
            let t = GroupTag::random();
            if free(&t) {
                return t;
            }
        }
    }
}

/// `20261122T201425Z`: sortable, and free of characters names may not hold.
fn name_suffix(at: Timestamp) -> String {
    let secs = at.0.div_euclid(1_000_000_000);
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| secs.to_string())
}
