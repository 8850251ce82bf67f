//! Key groups and key records as the keystore holds them.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

use super::{Cipher, GroupTag, KeyTag, Name, Rotation, State, Timestamp};
use crate::crypto::KdfParams;

/// A record's key, wrapped under the KPK and bound to the record's tag. The core never sees
/// plaintext key material.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WrappedKey(#[serde(with = "hex")] pub Vec<u8>);

impl std::fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WrappedKey({} bytes)", self.0.len())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGroup {
    pub tag: GroupTag,
    pub name: Name,
    pub cipher: Cipher,
    pub description: String,
    pub created: Timestamp,
    pub modified: Timestamp,
    /// Never reused; orders listings and gives the mount stable inode numbers and cookies.
    pub serial: u64,
    /// Off in keystores written before rotation existed (format 1).
    #[serde(default)]
    pub rotation: Rotation,
    #[serde(skip)]
    pub(super) members: Members,
}

/// Indexes of a group's records; rebuilt from the records on load.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Members {
    pub by_name: HashMap<Name, KeyTag>,
    pub by_serial: BTreeMap<u64, KeyTag>,
    pub active: Option<KeyTag>,
}

impl KeyGroup {
    pub fn record_count(&self) -> usize {
        self.members.by_name.len()
    }

    pub fn active(&self) -> Option<&KeyTag> {
        self.members.active.as_ref()
    }

    pub fn record_by_name(&self, name: &str) -> Option<&KeyTag> {
        self.members.by_name.get(name)
    }

    /// Records in creation order, starting after `after_serial` (exclusive).
    pub fn records_after(&self, after_serial: u64) -> impl Iterator<Item = (u64, &KeyTag)> {
        self.members
            .by_serial
            .range(after_serial.saturating_add(1)..)
            .map(|(s, t)| (*s, t))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub tag: KeyTag,
    pub group: GroupTag,
    pub name: Name,
    pub state: State,
    pub description: String,
    pub created: Timestamp,
    pub modified: Timestamp,
    /// When the record entered its current state; absent in format 1 (see `in_state_since`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_since: Option<Timestamp>,
    pub serial: u64,
    pub wrapped_key: WrappedKey,
    /// Present when the key was derived from a passphrase: the parameters and salt that,
    /// with the passphrase, give the same key again.
    pub derivation: Option<KdfParams>,
}
