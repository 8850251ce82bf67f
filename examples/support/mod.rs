//! Shared by the benchmark examples: large keystores built fast, and medians.

use std::path::Path;
use std::time::Duration;

use kmsfs::crypto::KeyMaterial;
use kmsfs::keystore::{Change, Cipher, GroupTag, KeyTag, Name, State, Timestamp, WrappedKey};
use kmsfs::store::{self, Access, InitOptions, Store};

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A new keystore in `dir` whose group `group` holds `records` records named
/// `record-NNNNNN` (the one numbered `active`, if any, active; the rest prelive), written as one
/// snapshot: a benchmark needs 100,000 records in seconds, not 100,000 fsyncs.
/// Returns the group's tag and the records' names and tags.
pub fn build_keystore(
    dir: &Path,
    group: &str,
    records: usize,
    active: Option<usize>,
) -> (GroupTag, Vec<(String, KeyTag)>) {
    store::init(dir, InitOptions::default()).unwrap();
    let (mut st, mut ks, kpk, _) = Store::open(dir, Access::ReadWrite).unwrap();
    let g = GroupTag::random();
    let at = Timestamp::now();
    ks.apply(&Change::CreateGroup {
        tag: g.clone(),
        name: Name::parse(group).unwrap(),
        cipher: Cipher::Aes256,
        description: String::new(),
        at,
    })
    .unwrap();
    let mut out = Vec::with_capacity(records);
    for i in 0..records {
        let tag = KeyTag::random();
        let key = KeyMaterial::random(32);
        let name = format!("record-{i:06}");
        ks.apply(&Change::CreateRecord {
            wrapped_key: WrappedKey(kpk.wrap(&key, tag.as_str())),
            tag: tag.clone(),
            group: g.clone(),
            name: Name::parse(&name).unwrap(),
            state: if active == Some(i) {
                State::Active
            } else {
                State::Prelive
            },
            description: "a typical description of a key".into(),
            key_len: 32,
            derivation: None,
            at,
        })
        .unwrap();
        out.push((name, tag));
    }
    st.compact(&ks).unwrap();
    (g, out)
}
