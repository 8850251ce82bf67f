use super::State;

/// Why the keystore refused an operation. A refused operation never changes anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeystoreError {
    #[error("invalid name \"{name}\": {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("name too long ({len} bytes; at most 255)")]
    NameTooLong { len: usize },
    #[error("invalid tag \"{0}\": tags are lowercase hex")]
    InvalidTag(String),
    #[error("unknown cipher \"{0}\" (expected AES_128, AES_192 or AES_256)")]
    UnknownCipher(String),
    #[error("a group named \"{0}\" already exists")]
    GroupNameTaken(String),
    #[error("group \"{group}\" already has a record named \"{name}\"")]
    RecordNameTaken { group: String, name: String },
    #[error("tag {0} is already in use")]
    TagTaken(String),
    #[error("no such group (tag {0})")]
    NoSuchGroup(String),
    #[error("no such record (tag {0})")]
    NoSuchRecord(String),
    #[error("record \"{name}\": moving from {from} to {to} is not allowed")]
    TransitionRefused {
        name: String,
        from: State,
        to: State,
    },
    #[error("a record cannot be created in state {0} (only prelive or active)")]
    CreationStateRefused(State),
    #[error("group \"{group}\" already has an active record (\"{active}\"); a second one cannot be added active")]
    SecondActive { group: String, active: String },
    #[error("record \"{name}\" is {state}: only prelive or terminated records can be deleted")]
    DeleteRefused { name: String, state: State },
    #[error("group \"{name}\" still holds {records} record(s)")]
    GroupNotEmpty { name: String, records: usize },
    #[error("the cipher of group \"{0}\" cannot change once it holds records")]
    CipherLocked(String),
    #[error("a record cannot move to another group; create a new record there instead")]
    CrossGroupMove,
    #[error("description too long ({len} bytes; at most {max})")]
    DescriptionTooLong { len: usize, max: usize },
    // The value asked for is not shown: it is computed from what was written.
    #[error("a period runs from 1 s to {max} s (100 years)")]
    PeriodOutOfRange { secs: u64, max: u64 },
    #[error("key material of {len} bytes does not fit cipher {cipher} ({expected} bytes)")]
    KeyLengthMismatch {
        len: usize,
        cipher: &'static str,
        expected: usize,
    },
}
