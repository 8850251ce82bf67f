//! The contract's rules, walked exhaustively and by random model-based sequences.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn at(n: i64) -> Timestamp {
    Timestamp(1_700_000_000_000_000_000 + n)
}

fn new_group(ks: &mut Keystore, name: &str) -> GroupTag {
    let tag = GroupTag::random();
    ks.apply(&Change::CreateGroup {
        tag: tag.clone(),
        name: Name::parse(name).unwrap(),
        cipher: Cipher::Aes256,
        description: String::new(),
        at: at(0),
    })
    .unwrap();
    tag
}

fn create_record(group: &GroupTag, name: &str, state: State) -> (KeyTag, Change) {
    let tag = KeyTag::random();
    let change = Change::CreateRecord {
        tag: tag.clone(),
        group: group.clone(),
        name: Name::parse(name).unwrap(),
        state,
        description: String::new(),
        wrapped_key: WrappedKey(vec![0; 60]),
        key_len: 32,
        derivation: None,
        at: at(1),
    };
    (tag, change)
}

/// Drives a fresh record into `state` along allowed moves.
fn record_in_state(ks: &mut Keystore, group: &GroupTag, name: &str, state: State) -> KeyTag {
    let (tag, c) = create_record(group, name, State::Prelive);
    ks.apply(&c).unwrap();
    let path: &[State] = match state {
        State::Prelive => &[],
        State::Active => &[State::Active],
        State::Inactive => &[State::Active, State::Inactive],
        State::Deprecated => &[State::Active, State::Inactive, State::Deprecated],
        State::Terminated => &[
            State::Active,
            State::Inactive,
            State::Deprecated,
            State::Terminated,
        ],
    };
    for s in path {
        ks.apply(&Change::SetState {
            tag: tag.clone(),
            state: *s,
            at: at(2),
        })
        .unwrap();
    }
    assert_eq!(ks.record(&tag).unwrap().state, state);
    tag
}

fn snapshot_json(ks: &Keystore) -> String {
    serde_json::to_string(&ks.to_snapshot()).unwrap()
}

#[test]
fn every_cell_of_the_transition_table() {
    use State::*;
    let allowed = [
        (Prelive, Active),
        (Active, Inactive),
        (Inactive, Active),
        (Inactive, Deprecated),
        (Deprecated, Inactive),
        (Deprecated, Terminated),
        (Terminated, Deprecated),
    ];
    for from in State::ALL {
        for to in State::ALL {
            let mut ks = Keystore::new();
            let g = new_group(&mut ks, "pool");
            let tag = record_in_state(&mut ks, &g, "k1", from);
            let before = snapshot_json(&ks);
            let result = ks.apply(&Change::SetState {
                tag: tag.clone(),
                state: to,
                at: at(9),
            });
            if from == to {
                assert_eq!(result, Ok(Outcome::Unchanged), "{from} -> {to}");
                assert_eq!(snapshot_json(&ks), before);
            } else if allowed.contains(&(from, to)) {
                assert_eq!(result, Ok(Outcome::Changed), "{from} -> {to}");
                assert_eq!(ks.record(&tag).unwrap().state, to);
            } else {
                assert!(
                    matches!(result, Err(KeystoreError::TransitionRefused { .. })),
                    "{from} -> {to}: {result:?}"
                );
                assert_eq!(
                    snapshot_json(&ks),
                    before,
                    "{from} -> {to} changed something"
                );
            }
            ks.check_invariants().unwrap();
        }
    }
}

#[test]
fn every_cell_of_the_delete_column() {
    for from in State::ALL {
        let mut ks = Keystore::new();
        let g = new_group(&mut ks, "pool");
        let tag = record_in_state(&mut ks, &g, "k1", from);
        let before = snapshot_json(&ks);
        let result = ks.apply(&Change::DeleteRecord { tag: tag.clone() });
        if matches!(from, State::Prelive | State::Terminated) {
            assert_eq!(result, Ok(Outcome::Changed));
            assert!(ks.record(&tag).is_none());
            assert_eq!(ks.group(&g).unwrap().record_count(), 0);
        } else {
            assert!(matches!(result, Err(KeystoreError::DeleteRefused { .. })));
            assert_eq!(snapshot_json(&ks), before);
        }
        ks.check_invariants().unwrap();
    }
}

#[test]
fn creation_only_in_prelive_or_active() {
    for s in State::ALL {
        let mut ks = Keystore::new();
        let g = new_group(&mut ks, "pool");
        let (_, c) = create_record(&g, "k", s);
        let r = ks.apply(&c);
        assert_eq!(
            r.is_ok(),
            matches!(s, State::Prelive | State::Active),
            "{s}"
        );
    }
}

#[test]
fn activation_demotes_the_current_active_record() {
    let mut ks = Keystore::new();
    let g = new_group(&mut ks, "pool");
    let (a, c) = create_record(&g, "a", State::Active);
    ks.apply(&c).unwrap();
    let b = record_in_state(&mut ks, &g, "b", State::Prelive);
    ks.apply(&Change::SetState {
        tag: b.clone(),
        state: State::Active,
        at: at(5),
    })
    .unwrap();
    assert_eq!(ks.record(&a).unwrap().state, State::Inactive);
    assert_eq!(ks.group(&g).unwrap().active(), Some(&b));
    // Creating active demotes too.
    let (c_tag, c) = create_record(&g, "c", State::Active);
    ks.apply(&c).unwrap();
    assert_eq!(ks.record(&b).unwrap().state, State::Inactive);
    assert_eq!(ks.group(&g).unwrap().active(), Some(&c_tag));
    // Deactivating leaves the group with none.
    ks.apply(&Change::SetState {
        tag: c_tag,
        state: State::Inactive,
        at: at(6),
    })
    .unwrap();
    assert_eq!(ks.group(&g).unwrap().active(), None);
    ks.check_invariants().unwrap();
}

#[test]
fn groups_delete_only_when_empty_and_cipher_locks() {
    let mut ks = Keystore::new();
    let g = new_group(&mut ks, "pool");
    ks.apply(&Change::SetGroupCipher {
        tag: g.clone(),
        cipher: Cipher::Aes128,
        at: at(1),
    })
    .unwrap();
    let (r, mut c) = create_record(&g, "k", State::Prelive);
    // The key length must match the cipher.
    assert!(matches!(
        ks.apply(&c),
        Err(KeystoreError::KeyLengthMismatch { .. })
    ));
    if let Change::CreateRecord { key_len, .. } = &mut c {
        *key_len = 16;
    }
    ks.apply(&c).unwrap();
    assert!(matches!(
        ks.apply(&Change::SetGroupCipher {
            tag: g.clone(),
            cipher: Cipher::Aes256,
            at: at(2)
        }),
        Err(KeystoreError::CipherLocked(_))
    ));
    // The same cipher is a no-op even when locked.
    assert_eq!(
        ks.apply(&Change::SetGroupCipher {
            tag: g.clone(),
            cipher: Cipher::Aes128,
            at: at(2)
        }),
        Ok(Outcome::Unchanged)
    );
    assert!(matches!(
        ks.apply(&Change::DeleteGroup { tag: g.clone() }),
        Err(KeystoreError::GroupNotEmpty { records: 1, .. })
    ));
    ks.apply(&Change::DeleteRecord { tag: r }).unwrap();
    ks.apply(&Change::DeleteGroup { tag: g }).unwrap();
    assert_eq!(ks.group_count(), 0);
}

#[test]
fn renames_keep_tags_and_refuse_taken_names() {
    let mut ks = Keystore::new();
    let g = new_group(&mut ks, "pool");
    new_group(&mut ks, "other");
    assert!(matches!(
        ks.apply(&Change::RenameGroup {
            tag: g.clone(),
            name: Name::parse("other").unwrap(),
            at: at(1)
        }),
        Err(KeystoreError::GroupNameTaken(_))
    ));
    ks.apply(&Change::RenameGroup {
        tag: g.clone(),
        name: Name::parse("renamed").unwrap(),
        at: at(1),
    })
    .unwrap();
    assert_eq!(ks.group_by_name("renamed").unwrap().tag, g);
    assert!(ks.group_by_name("pool").is_none());
    let a = record_in_state(&mut ks, &g, "a", State::Prelive);
    record_in_state(&mut ks, &g, "b", State::Prelive);
    assert!(matches!(
        ks.apply(&Change::RenameRecord {
            tag: a.clone(),
            name: Name::parse("b").unwrap(),
            at: at(1)
        }),
        Err(KeystoreError::RecordNameTaken { .. })
    ));
    ks.apply(&Change::RenameRecord {
        tag: a.clone(),
        name: Name::parse("c").unwrap(),
        at: at(1),
    })
    .unwrap();
    assert_eq!(ks.record_in(&g, "c").unwrap().tag, a);
    ks.check_invariants().unwrap();
}

#[test]
fn descriptions_are_bounded() {
    let mut ks = Keystore::new();
    let g = new_group(&mut ks, "pool");
    let long = "x".repeat(MAX_DESCRIPTION_BYTES + 1);
    assert!(matches!(
        ks.apply(&Change::DescribeGroup {
            tag: g.clone(),
            description: long,
            at: at(1)
        }),
        Err(KeystoreError::DescriptionTooLong { .. })
    ));
    let ok = "y".repeat(MAX_DESCRIPTION_BYTES);
    ks.apply(&Change::DescribeGroup {
        tag: g.clone(),
        description: ok.clone(),
        at: at(1),
    })
    .unwrap();
    assert_eq!(ks.group(&g).unwrap().description, ok);
}

#[test]
fn snapshot_round_trip_preserves_everything() {
    let mut ks = Keystore::new();
    let g = new_group(&mut ks, "pool");
    for (i, s) in State::ALL.iter().enumerate() {
        record_in_state(&mut ks, &g, &format!("k{i}"), *s);
    }
    let snap = ks.to_snapshot();
    let json = serde_json::to_string(&snap).unwrap();
    let back = Keystore::from_snapshot(serde_json::from_str(&json).unwrap()).unwrap();
    assert_eq!(snapshot_json(&back), json);
    back.check_invariants().unwrap();
}

// ---- model-based: random sequences against a tiny reference model -------------------------

#[derive(Clone, Debug)]
enum Op {
    CreateGroup(usize),
    RenameGroup(usize, usize),
    DeleteGroup(usize),
    SetCipher(usize, usize),
    CreateRecord(usize, usize, usize),
    RenameRecord(usize, usize, usize),
    SetState(usize, usize, usize),
    DeleteRecord(usize, usize),
    DescribeGroup(usize, bool),
    DescribeRecord(usize, usize, bool),
}

const GROUPS: [&str; 3] = ["g0", "g1", "g2"];
const RECORDS: [&str; 4] = ["r0", "r1", "r2", "r3"];
const CIPHERS: [Cipher; 3] = [Cipher::Aes128, Cipher::Aes192, Cipher::Aes256];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize).prop_map(Op::CreateGroup),
        (0..3usize, 0..3usize).prop_map(|(a, b)| Op::RenameGroup(a, b)),
        (0..3usize).prop_map(Op::DeleteGroup),
        (0..3usize, 0..3usize).prop_map(|(a, b)| Op::SetCipher(a, b)),
        (0..3usize, 0..4usize, 0..5usize).prop_map(|(a, b, c)| Op::CreateRecord(a, b, c)),
        (0..3usize, 0..4usize, 0..4usize).prop_map(|(a, b, c)| Op::RenameRecord(a, b, c)),
        (0..3usize, 0..4usize, 0..5usize).prop_map(|(a, b, c)| Op::SetState(a, b, c)),
        (0..3usize, 0..4usize, 0..5usize).prop_map(|(a, b, c)| Op::SetState(a, b, c)),
        (0..3usize, 0..4usize).prop_map(|(a, b)| Op::DeleteRecord(a, b)),
        (0..3usize, any::<bool>()).prop_map(|(a, b)| Op::DescribeGroup(a, b)),
        (0..3usize, 0..4usize, any::<bool>()).prop_map(|(a, b, c)| Op::DescribeRecord(a, b, c)),
    ]
}

#[derive(Clone, Debug, Default, PartialEq)]
struct ModelGroup {
    cipher: usize,
    records: BTreeMap<String, State>,
}

/// The contract in its most naive form: names and states only.
type Model = BTreeMap<String, ModelGroup>;

/// Applies `op` to the model; `Err` means the contract refuses it.
fn model_apply(m: &mut Model, op: &Op) -> Result<(), ()> {
    match *op {
        Op::CreateGroup(g) => {
            if m.contains_key(GROUPS[g]) {
                return Err(());
            }
            m.insert(
                GROUPS[g].into(),
                ModelGroup {
                    cipher: 2,
                    ..Default::default()
                },
            );
        }
        Op::RenameGroup(g, to) => {
            let grp = m.get(GROUPS[g]).ok_or(())?.clone();
            if g != to {
                if m.contains_key(GROUPS[to]) {
                    return Err(());
                }
                m.remove(GROUPS[g]);
                m.insert(GROUPS[to].into(), grp);
            }
        }
        Op::DeleteGroup(g) => {
            if !m.get(GROUPS[g]).ok_or(())?.records.is_empty() {
                return Err(());
            }
            m.remove(GROUPS[g]);
        }
        Op::SetCipher(g, c) => {
            let grp = m.get_mut(GROUPS[g]).ok_or(())?;
            if grp.cipher != c && !grp.records.is_empty() {
                return Err(());
            }
            grp.cipher = c;
        }
        Op::CreateRecord(g, r, s) => {
            let grp = m.get_mut(GROUPS[g]).ok_or(())?;
            let s = State::ALL[s];
            if grp.records.contains_key(RECORDS[r]) || !matches!(s, State::Prelive | State::Active)
            {
                return Err(());
            }
            if s == State::Active {
                for st in grp.records.values_mut() {
                    if *st == State::Active {
                        *st = State::Inactive;
                    }
                }
            }
            grp.records.insert(RECORDS[r].into(), s);
        }
        Op::RenameRecord(g, r, to) => {
            let grp = m.get_mut(GROUPS[g]).ok_or(())?;
            let st = *grp.records.get(RECORDS[r]).ok_or(())?;
            if r != to {
                if grp.records.contains_key(RECORDS[to]) {
                    return Err(());
                }
                grp.records.remove(RECORDS[r]);
                grp.records.insert(RECORDS[to].into(), st);
            }
        }
        Op::SetState(g, r, s) => {
            let grp = m.get_mut(GROUPS[g]).ok_or(())?;
            let from = *grp.records.get(RECORDS[r]).ok_or(())?;
            let to = State::ALL[s];
            if from == to {
                return Ok(());
            }
            if !from.may_move_to(to) {
                return Err(());
            }
            if to == State::Active {
                for st in grp.records.values_mut() {
                    if *st == State::Active {
                        *st = State::Inactive;
                    }
                }
            }
            grp.records.insert(RECORDS[r].into(), to);
        }
        Op::DeleteRecord(g, r) => {
            let grp = m.get_mut(GROUPS[g]).ok_or(())?;
            let st = *grp.records.get(RECORDS[r]).ok_or(())?;
            if !matches!(st, State::Prelive | State::Terminated) {
                return Err(());
            }
            grp.records.remove(RECORDS[r]);
        }
        Op::DescribeGroup(g, too_long) => {
            m.get(GROUPS[g]).ok_or(())?;
            if too_long {
                return Err(());
            }
        }
        Op::DescribeRecord(g, r, too_long) => {
            m.get(GROUPS[g])
                .ok_or(())?
                .records
                .get(RECORDS[r])
                .ok_or(())?;
            if too_long {
                return Err(());
            }
        }
    }
    Ok(())
}

/// Translates `op` into a core change, resolving names to tags. Unknown names get fresh
/// tags, which the core must refuse.
fn to_change(ks: &Keystore, op: &Op, n: i64) -> Change {
    let gtag = |g: usize| {
        ks.group_by_name(GROUPS[g])
            .map(|x| x.tag.clone())
            .unwrap_or_else(GroupTag::random)
    };
    let rtag = |g: usize, r: usize| {
        ks.group_by_name(GROUPS[g])
            .and_then(|x| x.record_by_name(RECORDS[r]).cloned())
            .unwrap_or_else(KeyTag::random)
    };
    let name = |s: &str| Name::parse(s).unwrap();
    match *op {
        Op::CreateGroup(g) => Change::CreateGroup {
            tag: GroupTag::random(),
            name: name(GROUPS[g]),
            cipher: Cipher::Aes256,
            description: String::new(),
            at: at(n),
        },
        Op::RenameGroup(g, to) => Change::RenameGroup {
            tag: gtag(g),
            name: name(GROUPS[to]),
            at: at(n),
        },
        Op::DeleteGroup(g) => Change::DeleteGroup { tag: gtag(g) },
        Op::SetCipher(g, c) => Change::SetGroupCipher {
            tag: gtag(g),
            cipher: CIPHERS[c],
            at: at(n),
        },
        Op::CreateRecord(g, r, s) => {
            let key_len = ks
                .group_by_name(GROUPS[g])
                .map(|x| x.cipher.key_len())
                .unwrap_or(32);
            Change::CreateRecord {
                tag: KeyTag::random(),
                group: gtag(g),
                name: name(RECORDS[r]),
                state: State::ALL[s],
                description: "d".into(),
                wrapped_key: WrappedKey(vec![1; 8]),
                key_len,
                derivation: None,
                at: at(n),
            }
        }
        Op::RenameRecord(g, r, to) => Change::RenameRecord {
            tag: rtag(g, r),
            name: name(RECORDS[to]),
            at: at(n),
        },
        Op::SetState(g, r, s) => Change::SetState {
            tag: rtag(g, r),
            state: State::ALL[s],
            at: at(n),
        },
        Op::DeleteRecord(g, r) => Change::DeleteRecord { tag: rtag(g, r) },
        Op::DescribeGroup(g, too_long) => Change::DescribeGroup {
            tag: gtag(g),
            description: description(too_long, n),
            at: at(n),
        },
        Op::DescribeRecord(g, r, too_long) => Change::DescribeRecord {
            tag: rtag(g, r),
            description: description(too_long, n),
            at: at(n),
        },
    }
}

fn description(too_long: bool, n: i64) -> String {
    if too_long {
        "z".repeat(MAX_DESCRIPTION_BYTES + 1)
    } else {
        format!("v{n}")
    }
}

fn view(ks: &Keystore) -> Model {
    ks.groups()
        .map(|g| {
            let cipher = CIPHERS.iter().position(|c| *c == g.cipher).unwrap();
            let records = ks
                .records_of(&g.tag, 0)
                .map(|r| (r.name.to_string(), r.state))
                .collect();
            (g.name.to_string(), ModelGroup { cipher, records })
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn random_sequences_keep_the_invariants(ops in prop::collection::vec(op(), 1..120)) {
        let mut ks = Keystore::new();
        let mut model = Model::new();
        for (n, op) in ops.iter().enumerate() {
            let change = to_change(&ks, op, n as i64);
            let before = snapshot_json(&ks);
            let expected = model_apply(&mut model, op);
            let got = ks.apply(&change);
            prop_assert_eq!(got.is_ok(), expected.is_ok(), "op {:?} gave {:?}", op, got);
            if got.is_err() {
                prop_assert_eq!(&snapshot_json(&ks), &before, "refused {:?} changed state", op);
            }
            prop_assert_eq!(&view(&ks), &model);
            prop_assert!(ks.check_invariants().is_ok(), "{:?}", ks.check_invariants());
            for g in ks.groups() {
                let active = ks.records_of(&g.tag, 0).filter(|r| r.state == State::Active).count();
                prop_assert!(active <= 1);
            }
            // Snapshots survive a round trip at every step.
            let again = Keystore::from_snapshot(ks.to_snapshot()).unwrap();
            prop_assert_eq!(snapshot_json(&again), snapshot_json(&ks));
        }
    }
}

// ---- ImportRecord: records brought in by `kmsfs import` -------------------------------------

fn import_record(group: &GroupTag, name: &str, state: State) -> (KeyTag, Change) {
    let tag = KeyTag::random();
    let change = Change::ImportRecord {
        tag: tag.clone(),
        group: group.clone(),
        name: Name::parse(name).unwrap(),
        state,
        description: "imported".into(),
        wrapped_key: WrappedKey(vec![0; 60]),
        key_len: 32,
        derivation: None,
        created: at(-1000),
        at: at(5),
    };
    (tag, change)
}

#[test]
fn import_keeps_every_state_and_the_creation_time() {
    let mut ks = Keystore::new();
    let g = new_group(&mut ks, "pool");
    for (i, state) in State::ALL.into_iter().enumerate() {
        let (tag, c) = import_record(&g, &format!("r{i}"), state);
        assert_eq!(ks.apply(&c).unwrap(), Outcome::Changed);
        let r = ks.record(&tag).unwrap();
        assert_eq!(r.state, state);
        assert_eq!((r.created, r.modified), (at(-1000), at(5)));
        assert_eq!(r.description, "imported");
    }
    let group = ks.group(&g).unwrap();
    assert_eq!(group.record_count(), 5);
    assert_eq!(
        ks.record(group.active().unwrap()).unwrap().name.as_str(),
        "r1"
    );
    assert_eq!(group.modified, at(5));
    ks.check_invariants().unwrap();
    let back = Keystore::from_snapshot(ks.to_snapshot()).unwrap();
    assert_eq!(snapshot_json(&back), snapshot_json(&ks));
}

#[test]
fn import_never_adds_a_second_active_record() {
    let mut ks = Keystore::new();
    let g = new_group(&mut ks, "pool");
    let current = record_in_state(&mut ks, &g, "current", State::Active);
    let before = snapshot_json(&ks);
    let (_, c) = import_record(&g, "incoming", State::Active);
    assert!(matches!(
        ks.apply(&c),
        Err(KeystoreError::SecondActive { ref group, ref active })
            if group == "pool" && active == "current"
    ));
    assert_eq!(
        snapshot_json(&ks),
        before,
        "a refused import changed the keystore"
    );
    assert_eq!(ks.record(&current).unwrap().state, State::Active);
    // The same record as inactive is fine, and leaves the active record alone.
    let (tag, c) = import_record(&g, "incoming", State::Inactive);
    ks.apply(&c).unwrap();
    assert_eq!(ks.record(&tag).unwrap().state, State::Inactive);
    assert_eq!(ks.group(&g).unwrap().active(), Some(&current));

    // In a group without an active record the first active import is accepted, the next is not.
    let h = new_group(&mut ks, "other");
    let (first, c) = import_record(&h, "a", State::Active);
    ks.apply(&c).unwrap();
    let (_, c) = import_record(&h, "b", State::Active);
    assert!(matches!(
        ks.apply(&c),
        Err(KeystoreError::SecondActive { .. })
    ));
    assert_eq!(ks.group(&h).unwrap().active(), Some(&first));
    ks.check_invariants().unwrap();
}

#[test]
fn import_enforces_what_creation_enforces() {
    let mut ks = Keystore::new();
    let g = new_group(&mut ks, "pool");
    let h = new_group(&mut ks, "other");
    let existing = record_in_state(&mut ks, &h, "taken", State::Inactive);
    let _ = record_in_state(&mut ks, &g, "taken", State::Prelive);
    let before = snapshot_json(&ks);
    /// A prelive import into `pool` named "fresh", with one field changed.
    fn edited(g: &GroupTag, edit: impl FnOnce(&mut Change)) -> Change {
        let mut c = import_record(g, "fresh", State::Prelive).1;
        edit(&mut c);
        c
    }
    let tag_taken = edited(&g, |c| {
        if let Change::ImportRecord { tag, .. } = c {
            *tag = existing.clone(); // a record of another group
        }
    });
    let name_taken = import_record(&g, "taken", State::Prelive).1;
    let short_key = edited(&g, |c| {
        if let Change::ImportRecord { key_len, .. } = c {
            *key_len = 16;
        }
    });
    let long_text = edited(&g, |c| {
        if let Change::ImportRecord { description, .. } = c {
            *description = "x".repeat(MAX_DESCRIPTION_BYTES + 1);
        }
    });
    let no_group = edited(&g, |c| {
        if let Change::ImportRecord { group, .. } = c {
            *group = GroupTag::random();
        }
    });
    let refusals = [
        (tag_taken, "TagTaken"),
        (name_taken, "RecordNameTaken"),
        (short_key, "KeyLengthMismatch"),
        (long_text, "DescriptionTooLong"),
        (no_group, "NoSuchGroup"),
    ];
    for (change, expected) in refusals {
        let err = ks.apply(&change).unwrap_err();
        assert!(
            format!("{err:?}").starts_with(expected),
            "{change:?} gave {err:?}"
        );
        assert_eq!(
            snapshot_json(&ks),
            before,
            "{change:?} changed the keystore"
        );
    }
    ks.apply(&edited(&g, |_| {})).unwrap();
    ks.check_invariants().unwrap();
}

#[test]
fn import_record_survives_the_log_encoding() {
    let g = GroupTag::random();
    let (_, c) = import_record(&g, "r", State::Deprecated);
    let json = serde_json::to_string(&c).unwrap();
    assert!(json.contains(r#""op":"import_record""#), "{json}");
    assert_eq!(serde_json::from_str::<Change>(&json).unwrap(), c);
}

// ---- touched_by: exactly what a change alters ----------------------------------------------

/// What the mount shows of each group and record (and could have cached), by serial.
#[derive(Debug, PartialEq)]
struct Shown {
    groups: BTreeMap<u64, String>,
    records: BTreeMap<u64, String>,
    names: std::collections::BTreeSet<String>,
}

fn shown(ks: &Keystore) -> Shown {
    let mut groups = BTreeMap::new();
    let mut records = BTreeMap::new();
    let mut names = std::collections::BTreeSet::new();
    for g in ks.groups() {
        let active = g
            .active()
            .and_then(|t| ks.record(t))
            .map(|r| r.name.to_string());
        groups.insert(
            g.serial,
            format!(
                "{} {:?} {:?} {:?} {} {:?} {:?}",
                g.name,
                g.cipher,
                g.description,
                g.rotation,
                g.record_count(),
                active,
                g.modified
            ),
        );
        names.insert(format!("/{}", g.name));
        if active.is_some() {
            names.insert(format!("{}/.active", g.serial));
        }
        for r in ks.records_of(&g.tag, 0) {
            records.insert(
                r.serial,
                format!(
                    "{} {} {:?} {:?} {} {:?} {:?}",
                    r.name, g.name, g.cipher, r.state, r.description, r.modified, r.state_since
                ),
            );
            names.insert(format!("{}/{}", g.serial, r.name));
            names.insert(format!(".by-tag/{}", r.tag));
        }
    }
    Shown {
        groups,
        records,
        names,
    }
}

fn gone_name(g: &touched::Gone) -> String {
    match g {
        touched::Gone::Group(n) => format!("/{n}"),
        touched::Gone::Record { group, name } => format!("{group}/{name}"),
        touched::Gone::Tag(t) => format!(".by-tag/{t}"),
        touched::Gone::Active { group } => format!("{group}/.active"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn touched_names_everything_a_change_alters(ops in prop::collection::vec(op(), 1..80)) {
        let mut ks = Keystore::new();
        for (n, op) in ops.iter().enumerate() {
            let change = to_change(&ks, op, n as i64);
            if ks.check(&change).is_err() {
                continue;
            }
            let touched = ks.touched_by(&change);
            let before = shown(&ks);
            ks.apply(&change).unwrap();
            let after = shown(&ks);
            for (serial, was) in &before.groups {
                if after.groups.get(serial) != Some(was) {
                    prop_assert!(touched.groups.iter().any(|g| g.serial == *serial),
                        "{:?} changed group {} but touched {:?}", op, serial, touched);
                }
            }
            for (serial, was) in &before.records {
                if after.records.get(serial) != Some(was) {
                    prop_assert!(touched.records.iter().any(|r| r.serial == *serial),
                        "{:?} changed record {} but touched {:?}", op, serial, touched);
                }
            }
            let gone: Vec<String> = touched.gone.iter().map(gone_name).collect();
            for name in before.names.difference(&after.names) {
                prop_assert!(gone.contains(name), "{:?} took {} but gone is {:?}", op, name, gone);
            }
            if before.groups.len() != after.groups.len() {
                prop_assert!(touched.groups_listing);
            }
        }
    }
}
