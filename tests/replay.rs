//! What the service holds in memory is exactly what the files give back: random sequences of
//! changes through `Kms`, then a reopen, must rebuild the same keystore (names, states,
//! descriptions, serials, timestamps), wherever the reopen falls in the sequence.

mod support;

use kmsfs::keystore::State;
use kmsfs::service::{Kms, NewRecord};
use kmsfs::store::{self, InitOptions};
use proptest::prelude::*;
use support::keystore::name;
use support::mount::open_kms;

#[derive(Clone, Debug)]
enum Op {
    Group(u8),
    RenameGroup(u8, u8),
    DeleteGroup(u8),
    Record(u8, u8, bool),
    RenameRecord(u8, u8, u8),
    State(u8, u8, u8),
    Describe(u8, u8),
    DeleteRecord(u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3u8).prop_map(Op::Group),
        (0..3u8, 0..3u8).prop_map(|(a, b)| Op::RenameGroup(a, b)),
        (0..3u8).prop_map(Op::DeleteGroup),
        (0..3u8, 0..4u8, any::<bool>()).prop_map(|(a, b, c)| Op::Record(a, b, c)),
        (0..3u8, 0..4u8, 0..4u8).prop_map(|(a, b, c)| Op::RenameRecord(a, b, c)),
        (0..3u8, 0..4u8, 0..5u8).prop_map(|(a, b, c)| Op::State(a, b, c)),
        (0..3u8, 0..4u8, 0..5u8).prop_map(|(a, b, c)| Op::State(a, b, c)),
        (0..3u8, 0..4u8).prop_map(|(a, b)| Op::Describe(a, b)),
        (0..3u8, 0..4u8).prop_map(|(a, b)| Op::DeleteRecord(a, b)),
    ]
}

/// Applies `op`, ignoring refusals (the core's own tests check those).
fn apply(kms: &Kms, op: &Op, n: usize) {
    let group = |g: u8| {
        kms.read()
            .group_by_name(&format!("g{g}"))
            .map(|x| x.tag.clone())
    };
    let record = |g: u8, r: u8| {
        let ks = kms.read();
        let gt = ks.group_by_name(&format!("g{g}"))?.tag.clone();
        ks.record_in(&gt, &format!("r{r}")).map(|x| x.tag.clone())
    };
    let _ = match *op {
        Op::Group(g) => kms.create_group(name(&format!("g{g}"))).map(drop),
        Op::RenameGroup(g, to) => match group(g) {
            Some(t) => kms.rename_group(&t, name(&format!("g{to}"))),
            None => Ok(()),
        },
        Op::DeleteGroup(g) => match group(g) {
            Some(t) => kms.delete_group(&t),
            None => Ok(()),
        },
        Op::Record(g, r, active) => match group(g) {
            Some(t) => {
                let mut req = NewRecord::prelive(name(&format!("r{r}")));
                if active {
                    req.state = State::Active;
                }
                kms.create_record(&t, req).map(drop)
            }
            None => Ok(()),
        },
        Op::RenameRecord(g, r, to) => match (group(g), record(g, r)) {
            (Some(gt), Some(t)) => kms.rename_record(&t, &gt, name(&format!("r{to}"))),
            _ => Ok(()),
        },
        Op::State(g, r, s) => match record(g, r) {
            Some(t) => kms.set_state(&t, State::ALL[s as usize]),
            None => Ok(()),
        },
        Op::Describe(g, r) => match record(g, r) {
            Some(t) => kms.describe_record(&t, &format!("text {n}")),
            None => Ok(()),
        },
        Op::DeleteRecord(g, r) => match record(g, r) {
            Some(t) => kms.delete_record(&t),
            None => Ok(()),
        },
    };
}

fn snapshot(kms: &Kms) -> String {
    serde_json::to_string(&kms.read().to_snapshot()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn a_reopen_rebuilds_exactly_what_memory_held(
        ops in prop::collection::vec(op(), 1..60),
        reopen_at in 0usize..60,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        store::init(&dir, InitOptions::default()).unwrap();
        let mut kms = Kms::open(&dir).unwrap();
        for (n, op) in ops.iter().enumerate() {
            apply(&kms, op, n);
            if n == reopen_at {
                let before = snapshot(&kms);
                drop(kms);
                kms = open_kms(&dir);
                prop_assert_eq!(snapshot(&kms), before);
            }
        }
        let before = snapshot(&kms);
        drop(kms);
        let kms = open_kms(&dir);
        prop_assert_eq!(snapshot(&kms), before);
        kms.read().check_invariants().unwrap();
    }
}
