//! Import planning against in-memory keystores (no KDF, no disk): renaming, merging, skipping,
//! state adjustment, and that a plan always applies.

use super::*;
use crate::crypto::{KeyMaterial, Kpk};
use crate::keystore::{
    Change, Cipher, GroupTag, KeyTag, Keystore, Name, State, Timestamp, WrappedKey,
};

const AT: Timestamp = Timestamp(1_700_000_000_000_000_000);
const SUFFIX: &str = "20231114T221320Z";

struct Side {
    ks: Keystore,
    kpk: Kpk,
}

impl Side {
    fn new() -> Side {
        Side {
            ks: Keystore::new(),
            kpk: Kpk::random(),
        }
    }

    fn group(&mut self, name: &str, cipher: Cipher) -> GroupTag {
        self.group_with_tag(name, cipher, GroupTag::random())
    }

    fn group_with_tag(&mut self, name: &str, cipher: Cipher, tag: GroupTag) -> GroupTag {
        self.ks
            .apply(&Change::CreateGroup {
                tag: tag.clone(),
                name: Name::parse(name).unwrap(),
                cipher,
                description: format!("{name} description"),
                at: Timestamp(1),
            })
            .unwrap();
        tag
    }

    /// A record in any state directly (ImportRecord), holding `key`.
    fn record(&mut self, g: &GroupTag, name: &str, state: State, key: &[u8]) -> KeyTag {
        let tag = KeyTag::random();
        let km = KeyMaterial::from_vec(key.to_vec());
        self.ks
            .apply(&Change::ImportRecord {
                tag: tag.clone(),
                group: g.clone(),
                name: Name::parse(name).unwrap(),
                state,
                description: format!("{name} description"),
                wrapped_key: WrappedKey(self.kpk.wrap(&km, tag.as_str())),
                key_len: km.len(),
                derivation: None,
                created: Timestamp(7),
                at: Timestamp(8),
            })
            .unwrap();
        tag
    }

    fn export(&self, only: &[&str]) -> ExportBody {
        let only: Vec<String> = only.iter().map(|s| s.to_string()).collect();
        collect(&self.ks, &self.kpk, &only).unwrap()
    }

    fn plan(&self, body: &ExportBody, preserve_names: bool) -> Result<Plan, TransferError> {
        let opts = ImportOptions {
            preserve_names,
            at: AT,
        };
        plan_import(&self.ks, &self.kpk, body, &opts)
    }

    fn import(&mut self, body: &ExportBody, preserve_names: bool) -> Report {
        let plan = self.plan(body, preserve_names).unwrap();
        dry_run(&self.ks, &plan).unwrap();
        for c in &plan.changes {
            self.ks.apply(c).unwrap();
        }
        self.ks.check_invariants().unwrap();
        plan.report
    }

    fn key(&self, tag: &KeyTag) -> Vec<u8> {
        let r = self.ks.record(tag).unwrap();
        self.kpk
            .unwrap(&r.wrapped_key.0, tag.as_str())
            .unwrap()
            .expose()
            .to_vec()
    }

    fn state_of(&self, group: &str, record: &str) -> State {
        let g = self.ks.group_by_name(group).unwrap();
        self.ks.record_in(&g.tag, record).unwrap().state
    }
}

fn outcomes(report: &Report) -> Vec<(String, RecordOutcome)> {
    report
        .groups
        .iter()
        .flat_map(|g| &g.records)
        .map(|r| (r.name.to_string(), r.outcome.clone()))
        .collect()
}

fn source() -> (Side, Vec<KeyTag>) {
    let mut s = Side::new();
    let pool = s.group("pool", Cipher::Aes256);
    let legacy = s.group("legacy", Cipher::Aes128);
    let tags = vec![
        s.record(&pool, "a", State::Active, &[1; 32]),
        s.record(&pool, "b", State::Deprecated, &[2; 32]),
        s.record(&legacy, "c", State::Terminated, &[3; 16]),
        s.record(&legacy, "d", State::Inactive, &[4; 16]),
    ];
    (s, tags)
}

#[test]
fn a_fresh_keystore_gets_everything_renamed_with_the_import_time() {
    let (src, tags) = source();
    let mut dst = Side::new();
    let report = dst.import(&src.export(&[]), false);
    let pool = dst.ks.group_by_name(&format!("pool_{SUFFIX}")).unwrap();
    let legacy = dst.ks.group_by_name(&format!("legacy_{SUFFIX}")).unwrap();
    assert_eq!(pool.tag, src.ks.group_by_name("pool").unwrap().tag);
    assert_eq!(legacy.cipher, Cipher::Aes128);
    assert_eq!(legacy.description, "legacy description");
    for t in &tags {
        let (a, b) = (src.ks.record(t).unwrap(), dst.ks.record(t).unwrap());
        assert_eq!(
            (&a.name, a.state, &a.description, a.created),
            (&b.name, b.state, &b.description, b.created)
        );
        assert_eq!(b.modified, AT);
        assert_eq!(src.key(t), dst.key(t), "keys are re-wrapped, not changed");
    }
    assert_eq!(report.imported(), 4);
    assert_eq!(report.skipped(), 0);
    let text = report.render(false);
    assert!(
        text.contains(&format!("group \"pool\" -> new group \"pool_{SUFFIX}\"")),
        "{text}"
    );
    assert!(
        text.contains("imported 4 record(s), skipped 0; created 2 group(s)"),
        "{text}"
    );
}

#[test]
fn only_the_named_groups_are_exported() {
    let (src, _) = source();
    let body = src.export(&["legacy"]);
    assert_eq!(body.groups.len(), 1);
    assert_eq!(body.groups[0].name.as_str(), "legacy");
    assert!(matches!(
        collect(&src.ks, &src.kpk, &["nope".to_string()]),
        Err(TransferError::UnknownGroup(n)) if n == "nope"
    ));
}

#[test]
fn importing_twice_skips_everything_and_creates_nothing() {
    let (src, _) = source();
    let mut dst = Side::new();
    let body = src.export(&[]);
    dst.import(&body, false);
    let groups = dst.ks.group_count();
    let plan = dst.plan(&body, false).unwrap();
    assert!(plan.changes.is_empty(), "{:?}", plan.changes);
    assert_eq!(plan.report.skipped(), 4);
    assert!(plan
        .report
        .groups
        .iter()
        .all(|g| g.outcome == GroupOutcome::NothingNew));
    assert!(outcomes(&plan.report)
        .iter()
        .all(|(_, o)| matches!(o, RecordOutcome::Skipped(SkipReason::TagInUse { .. }))));
    dst.import(&body, false);
    assert_eq!(dst.ks.group_count(), groups);
}

#[test]
fn preserve_names_merges_and_never_makes_two_active() {
    let (src, _) = source();
    let mut dst = Side::new();
    let pool = dst.group("pool", Cipher::Aes256);
    dst.record(&pool, "current", State::Active, &[9; 32]);
    dst.record(&pool, "b", State::Prelive, &[8; 32]);
    let report = dst.import(&src.export(&["pool"]), true);
    assert_eq!(
        report.groups[0].outcome,
        GroupOutcome::Merged {
            name: Name::parse("pool").unwrap(),
            tag: pool.clone()
        }
    );
    assert_eq!(
        outcomes(&report),
        vec![
            (
                "a".into(),
                RecordOutcome::MadeInactive {
                    active: Name::parse("current").unwrap()
                }
            ),
            (
                "b".into(),
                RecordOutcome::Skipped(SkipReason::NameTaken {
                    group: Name::parse("pool").unwrap()
                })
            ),
        ]
    );
    assert_eq!(dst.state_of("pool", "a"), State::Inactive);
    assert_eq!(dst.state_of("pool", "current"), State::Active);
    let text = report.render(true);
    assert!(
        text.contains("\"current\" stays the group's active record"),
        "{text}"
    );
    assert!(text.contains("already has a record of that name"), "{text}");
    assert!(
        text.contains("preview, nothing was changed: would import 1 record(s) (1 made inactive)"),
        "{text}"
    );
}

#[test]
fn preserve_names_creates_missing_groups_under_their_own_name() {
    let (src, _) = source();
    let mut dst = Side::new();
    dst.import(&src.export(&[]), true);
    assert!(dst.ks.group_by_name("pool").is_some());
    assert_eq!(dst.state_of("pool", "a"), State::Active);
    assert_eq!(dst.state_of("legacy", "c"), State::Terminated);
}

#[test]
fn a_cipher_mismatch_refuses_the_whole_import() {
    let (src, _) = source();
    let mut dst = Side::new();
    dst.group("legacy", Cipher::Aes256);
    let err = dst.plan(&src.export(&[]), true).unwrap_err();
    assert!(matches!(err, TransferError::CipherMismatch { .. }), "{err}");
    assert!(err.to_string().contains("AES_256") && err.to_string().contains("AES_128"));
}

#[test]
fn the_same_key_under_another_tag_is_skipped() {
    let (src, _) = source();
    let mut dst = Side::new();
    let mine = dst.group("mine", Cipher::Aes256);
    dst.record(&mine, "copy", State::Prelive, &[2; 32]);
    let report = dst.import(&src.export(&["pool"]), false);
    assert_eq!(
        outcomes(&report)[1],
        (
            "b".into(),
            RecordOutcome::Skipped(SkipReason::SameKey {
                holder: "mine/copy".into()
            })
        )
    );
    assert_eq!(report.imported(), 1);
}

#[test]
fn duplicates_inside_one_container_are_caught_too() {
    let mut s = Side::new();
    let g = s.group("g", Cipher::Aes256);
    s.record(&g, "x", State::Active, &[5; 32]);
    s.record(&g, "y", State::Inactive, &[5; 32]);
    let mut body = s.export(&[]);
    // A second active record, as only an edited container could hold.
    body.groups[0].records[1].state = State::Active;
    body.groups[0].records[1].key = KeyMaterial::from_vec(vec![6; 32]);
    let mut dst = Side::new();
    let report = dst.import(&body, false);
    let group = format!("g_{SUFFIX}");
    assert_eq!(dst.state_of(&group, "x"), State::Active);
    assert_eq!(dst.state_of(&group, "y"), State::Inactive);
    assert!(matches!(
        outcomes(&report)[1].1,
        RecordOutcome::MadeInactive { .. }
    ));

    let mut body = s.export(&[]);
    body.groups[0].records[1].tag = KeyTag::random();
    let mut dst = Side::new();
    let report = dst.import(&body, false);
    assert_eq!(
        outcomes(&report)[1].1,
        RecordOutcome::Skipped(SkipReason::SameKey {
            holder: format!("g_{SUFFIX}/x")
        })
    );
}

#[test]
fn a_taken_group_tag_is_replaced_and_a_taken_name_counted_up() {
    let (src, _) = source();
    let src_pool = src.ks.group_by_name("pool").unwrap().tag.clone();
    let mut dst = Side::new();
    dst.group_with_tag("elsewhere", Cipher::Aes256, src_pool.clone());
    dst.group(&format!("pool_{SUFFIX}"), Cipher::Aes256);
    let report = dst.import(&src.export(&["pool"]), false);
    let GroupOutcome::Created { name, tag } = &report.groups[0].outcome else {
        panic!("{:?}", report.groups[0].outcome)
    };
    assert_eq!(name.as_str(), format!("pool_{SUFFIX}_2"));
    assert_ne!(tag, &src_pool);
    assert!(report.render(false).contains("with a fresh tag"));
}

#[test]
fn long_names_are_shortened_to_fit() {
    let mut s = Side::new();
    let long = "é".repeat(127); // 254 bytes
    let g = s.group(&long, Cipher::Aes256);
    s.record(&g, "k", State::Prelive, &[1; 32]);
    let mut dst = Side::new();
    dst.import(&s.export(&[]), false);
    let name = dst.ks.groups().next().unwrap().name.to_string();
    assert!(name.len() <= 255 && name.ends_with(SUFFIX), "{name}");
    assert!(name.starts_with("éé"));
}

#[test]
fn empty_groups_are_created_once() {
    let mut s = Side::new();
    s.group("empty", Cipher::Aes192);
    let body = s.export(&[]);
    let mut dst = Side::new();
    dst.import(&body, false);
    assert_eq!(dst.ks.group_count(), 1);
    let report = dst.import(&body, false);
    assert_eq!(report.groups[0].outcome, GroupOutcome::NothingNew);
    assert_eq!(dst.ks.group_count(), 1);
}

#[test]
fn a_preview_refuses_what_the_keystore_would() {
    let (src, _) = source();
    let mut body = src.export(&["pool"]);
    let dst = Side::new();
    let mut plan = dst.plan(&body, false).unwrap();
    // Corrupt the plan as a bug might: the dry run catches it.
    if let Some(Change::ImportRecord { key_len, .. }) = plan.changes.last_mut() {
        *key_len = 3;
    }
    assert!(matches!(
        dry_run(&dst.ks, &plan),
        Err(TransferError::Refused(_))
    ));
    body.groups.clear();
    assert!(dst.plan(&body, false).unwrap().changes.is_empty());
}
