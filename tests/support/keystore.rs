//! A keystore populated through the service API, as tests that need one without a mount
//! build it: groups and records by name, each record walked along the lifecycle from prelive
//! to the state it should have, its key random or derived from a passphrase.

use kmsfs::crypto::Passphrase;
use kmsfs::keystore::{GroupTag, KeyTag, Name, State};
use kmsfs::service::{KeySource, Kms, NewRecord};

/// A valid group or record name.
pub fn name(s: &str) -> Name {
    Name::parse(s).unwrap_or_else(|e| panic!("not a valid name: {s:?}: {e}"))
}

/// Creates the group `name` (cipher AES_256).
pub fn group(kms: &Kms, name: &str) -> GroupTag {
    kms.create_group(self::name(name))
        .unwrap_or_else(|e| panic!("create group {name}: {e}"))
}

/// The tag of the existing group `name`.
pub fn group_tag(kms: &Kms, name: &str) -> GroupTag {
    kms.read()
        .group_by_name(name)
        .unwrap_or_else(|| panic!("no group {name}"))
        .tag
        .clone()
}

/// The states a fresh prelive record goes through to reach `state`.
pub fn path_to(state: &str) -> &'static [&'static str] {
    match state {
        "prelive" => &[],
        "active" => &["active"],
        "inactive" => &["active", "inactive"],
        "deprecated" => &["active", "inactive", "deprecated"],
        "terminated" => &["active", "inactive", "deprecated", "terminated"],
        other => panic!("no such state: {other}"),
    }
}

/// Creates `group/name` prelive with its key from `key`, then moves it to `state` one allowed
/// step at a time.
pub fn record_with_key(
    kms: &Kms,
    group: &str,
    name: &str,
    state: &str,
    description: &str,
    key: KeySource,
) -> KeyTag {
    let g = group_tag(kms, group);
    let mut req = NewRecord::prelive(self::name(name));
    req.description = description.into();
    req.key = key;
    let t = kms
        .create_record(&g, req)
        .unwrap_or_else(|e| panic!("create record {group}/{name}: {e}"));
    for s in path_to(state) {
        let to: State = s.parse().unwrap();
        kms.set_state(&t, to)
            .unwrap_or_else(|e| panic!("{group}/{name} -> {s}: {e}"));
    }
    t
}

/// `group/name` with a fresh random key, brought to `state` (a state word: "active", ...).
pub fn record(kms: &Kms, group: &str, name: &str, state: &str, description: &str) -> KeyTag {
    record_with_key(kms, group, name, state, description, KeySource::Random)
}

/// `group/name`, prelive, its key derived from `passphrase` and `salt` (fresh unless given).
pub fn derived_record(
    kms: &Kms,
    group: &str,
    name: &str,
    passphrase: &str,
    salt: Option<Vec<u8>>,
    description: &str,
) -> KeyTag {
    let key = KeySource::Passphrase {
        passphrase: Passphrase::new(passphrase.into()),
        salt,
    };
    record_with_key(kms, group, name, "prelive", description, key)
}

/// The key bytes of a record (whatever its state).
pub fn key(kms: &Kms, tag: &KeyTag) -> Vec<u8> {
    kms.unwrap_key(tag)
        .unwrap_or_else(|e| panic!("unwrap the key of {tag}: {e}"))
        .expose()
        .to_vec()
}
