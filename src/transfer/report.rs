//! What an import does (or, with `--preview`, would do), for the administrator to read.

use std::fmt::Write;

use crate::keystore::{GroupTag, KeyTag, Name, State};

#[derive(Debug, Default)]
pub struct Report {
    pub groups: Vec<GroupReport>,
}

#[derive(Debug)]
pub struct GroupReport {
    /// The group's name and tag in the container.
    pub source: Name,
    pub source_tag: GroupTag,
    pub outcome: GroupOutcome,
    pub records: Vec<RecordReport>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum GroupOutcome {
    /// A new group; `tag` differs from the source tag when that was in use here.
    Created { name: Name, tag: GroupTag },
    /// `--preserve-names` and a group of that name exists: the records join it.
    Merged { name: Name, tag: GroupTag },
    /// Not created: every record was skipped (or, for an empty group, its tag exists here).
    NothingNew,
}

#[derive(Debug)]
pub struct RecordReport {
    pub name: Name,
    pub tag: KeyTag,
    pub outcome: RecordOutcome,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordOutcome {
    Imported {
        state: State,
    },
    /// Active in the container, imported inactive: `active` stays the group's active record.
    MadeInactive {
        active: Name,
    },
    Skipped(SkipReason),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// `holder` is "GROUP/RECORD" of the record that has the tag here.
    TagInUse {
        holder: String,
    },
    SameKey {
        holder: String,
    },
    NameTaken {
        group: Name,
    },
}

impl Report {
    fn records(&self) -> impl Iterator<Item = &RecordReport> {
        self.groups.iter().flat_map(|g| &g.records)
    }

    pub fn imported(&self) -> usize {
        self.records()
            .filter(|r| !matches!(r.outcome, RecordOutcome::Skipped(_)))
            .count()
    }

    pub fn skipped(&self) -> usize {
        self.records()
            .filter(|r| matches!(r.outcome, RecordOutcome::Skipped(_)))
            .count()
    }

    pub fn made_inactive(&self) -> usize {
        self.records()
            .filter(|r| matches!(r.outcome, RecordOutcome::MadeInactive { .. }))
            .count()
    }

    fn count_groups(&self, f: fn(&GroupOutcome) -> bool) -> usize {
        self.groups.iter().filter(|g| f(&g.outcome)).count()
    }

    /// One line per group and per record, then a summary; `preview` words it as a plan.
    pub fn render(&self, preview: bool) -> String {
        let mut out = String::new();
        for g in &self.groups {
            let _ = match &g.outcome {
                GroupOutcome::Created { name, tag } if *tag == g.source_tag => {
                    writeln!(
                        out,
                        "group {} -> new group {} (tag {tag})",
                        q(&g.source),
                        q(name)
                    )
                }
                GroupOutcome::Created { name, tag } => writeln!(
                    out,
                    "group {} -> new group {} with a fresh tag {tag} (its tag {} is in use here)",
                    q(&g.source),
                    q(name),
                    g.source_tag
                ),
                GroupOutcome::Merged { name, tag } => writeln!(
                    out,
                    "group {} -> existing group {} (tag {tag})",
                    q(&g.source),
                    q(name)
                ),
                GroupOutcome::NothingNew => writeln!(
                    out,
                    "group {} -> not created: nothing in it is new here",
                    q(&g.source)
                ),
            };
            for r in &g.records {
                let _ = writeln!(out, "  {}", record_line(r));
            }
        }
        let created = self.count_groups(|o| matches!(o, GroupOutcome::Created { .. }));
        let merged = self.count_groups(|o| matches!(o, GroupOutcome::Merged { .. }));
        let inactive = match self.made_inactive() {
            0 => String::new(),
            n => format!(" ({n} made inactive)"),
        };
        let renamed = self
            .groups
            .iter()
            .any(|g| matches!(&g.outcome, GroupOutcome::Created { name, .. } if *name != g.source));
        if preview && renamed {
            let _ = writeln!(
                out,
                "note: renamed groups take the time of the actual import, not of this preview"
            );
        }
        let _ = if preview {
            writeln!(
                out,
                "preview, nothing was changed: would import {} record(s){inactive} and skip {}; would create {created} group(s) and merge into {merged}",
                self.imported(),
                self.skipped()
            )
        } else {
            writeln!(
                out,
                "imported {} record(s){inactive}, skipped {}; created {created} group(s), merged into {merged}",
                self.imported(),
                self.skipped()
            )
        };
        out
    }
}

fn record_line(r: &RecordReport) -> String {
    let head = format!("record {} (tag {})", q(&r.name), r.tag);
    match &r.outcome {
        RecordOutcome::Imported { state } => format!("+ {head}: {state}"),
        RecordOutcome::MadeInactive { active } => format!(
            "+ {head}: inactive, not active: {} stays the group's active record",
            q(active)
        ),
        RecordOutcome::Skipped(SkipReason::TagInUse { holder }) => {
            format!("- {head}: skipped, its tag is in use here by \"{holder}\"")
        }
        RecordOutcome::Skipped(SkipReason::SameKey { holder }) => {
            format!("- {head}: skipped, its key is already here as \"{holder}\"")
        }
        RecordOutcome::Skipped(SkipReason::NameTaken { group }) => format!(
            "- {head}: skipped, group {} already has a record of that name",
            q(group)
        ),
    }
}

/// Names may hold spaces and quotes; quoting them keeps each line unambiguous.
fn q(name: &Name) -> String {
    format!("\"{}\"", name.as_str().escape_debug())
}
