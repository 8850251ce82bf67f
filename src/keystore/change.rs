//! Every change to a keystore, as a value: applied in memory, and appended to the data file
//! so that replaying the changes in order rebuilds the keystore.

use serde::{Deserialize, Serialize};

use super::{Cipher, GroupTag, KeyTag, Name, Rotation, State, Timestamp, WrappedKey};
use crate::crypto::KdfParams;

/// Descriptions behave like small files: at most 4 KiB.
pub const MAX_DESCRIPTION_BYTES: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    CreateGroup {
        tag: GroupTag,
        name: Name,
        cipher: Cipher,
        description: String,
        at: Timestamp,
    },
    RenameGroup {
        tag: GroupTag,
        name: Name,
        at: Timestamp,
    },
    DescribeGroup {
        tag: GroupTag,
        description: String,
        at: Timestamp,
    },
    SetGroupCipher {
        tag: GroupTag,
        cipher: Cipher,
        at: Timestamp,
    },
    /// Format 2: a group's rotation period and retirement.
    SetRotation {
        tag: GroupTag,
        rotation: Rotation,
        at: Timestamp,
    },
    DeleteGroup {
        tag: GroupTag,
    },
    CreateRecord {
        tag: KeyTag,
        group: GroupTag,
        name: Name,
        state: State,
        description: String,
        wrapped_key: WrappedKey,
        /// Length of the plaintext key, checked against the group's cipher.
        key_len: usize,
        derivation: Option<KdfParams>,
        at: Timestamp,
    },
    /// A record brought in by `kmsfs import`. Unlike `CreateRecord` it takes any state (an
    /// exported record keeps its state) and its original creation time, and it never demotes
    /// the group's active record: the importer decides which record stays active, so a second
    /// active record is refused rather than silently switched.
    ImportRecord {
        tag: KeyTag,
        group: GroupTag,
        name: Name,
        state: State,
        description: String,
        wrapped_key: WrappedKey,
        key_len: usize,
        derivation: Option<KdfParams>,
        created: Timestamp,
        at: Timestamp,
    },
    RenameRecord {
        tag: KeyTag,
        name: Name,
        at: Timestamp,
    },
    DescribeRecord {
        tag: KeyTag,
        description: String,
        at: Timestamp,
    },
    SetState {
        tag: KeyTag,
        state: State,
        at: Timestamp,
    },
    DeleteRecord {
        tag: KeyTag,
    },
}

impl Change {
    /// The oldest format of KMS_DATA that can hold this change: a kmsfs that reads only older
    /// formats must refuse the file by its header, not stumble on a frame it cannot decode.
    pub fn min_format(&self) -> u16 {
        match self {
            Change::SetRotation { .. } => 2,
            _ => 1,
        }
    }
}
