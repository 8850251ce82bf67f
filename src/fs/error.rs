//! Why an operation of the mount failed: one enum for the fs layer, each variant one cause.
//! The errno of each is decided in one place, `errno.rs`.

use crate::keystore::KeystoreError;
use crate::service::KmsError;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// Refused or failed by the service (the keystore's rules, the freeze, storage).
    #[error(transparent)]
    Service(#[from] KmsError),
    /// A rule of the keystore asked directly: a name, a cipher, a description's size.
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    /// Text written to a control file that means nothing.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The mount's own shape forbids it, whoever asks.
    #[error(transparent)]
    Shape(#[from] Shape),
    #[error("no such file or directory")]
    NotFound,
    #[error("{0} is read-only")]
    ReadOnly(String),
    /// `--key-policy`: the caller's executable may not open keys.
    #[error("{exe} may not open keys: {reason} (see --key-policy)")]
    ExecutableNotAllowed { exe: String, reason: &'static str },
    #[error("{0} is not a directory")]
    NotADirectory(String),
    #[error("not a regular file")]
    NotAFile,
    #[error("not a symbolic link")]
    NotASymlink,
    #[error("no such extended attribute")]
    NoAttribute,
    #[error("{0} already exists")]
    Exists(String),
    #[error("rename: exchanging or whiteouts are not supported")]
    UnsupportedRename,
    #[error("unknown file handle")]
    BadHandle,
    #[error("not open for writing")]
    NotOpenForWriting,
    #[error("{file} was closed with an incomplete JSON object; nothing was created")]
    IncompleteObject { file: &'static str },
    #[error("{file} takes one JSON object of at most {max} bytes")]
    ObjectTooLarge { file: &'static str, max: usize },
    /// Another holder of the same open file (a child that inherited it) flushed first, and
    /// that commit failed: reported to the others at their next flush or close.
    #[error(
        "the edit was committed by another process holding this open file, and refused: {reason}"
    )]
    EarlierCommitFailed { errno: i32, reason: String },
}

impl FsError {
    /// A failure of the daemon (storage, crypto) rather than a refusal of the caller's request:
    /// logged as an error, not a warning.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            FsError::Service(KmsError::Store(_) | KmsError::Crypto(_) | KmsError::Audit(_))
        )
    }
}

/// What the mount's shape never allows: its entries are the keystore's, nothing else.
#[derive(Debug, thiserror::Error)]
pub enum Shape {
    #[error("directories are groups (at the top) or records (in a group); none can be made here")]
    NoDirectoryHere,
    #[error(".by-tag is part of the mount")]
    FixedDirectory,
    #[error(
        "files of the mount cannot be removed; rmdir a record (prelive or terminated) to delete it"
    )]
    FileRemoval,
    #[error("cannot create {0:?}: the mount holds only groups, records and their files")]
    StrayFile(String),
    #[error("a group stays at the top of the mount; it can only be renamed there")]
    GroupOutsideRoot,
    /// EPERM, never EXDEV: `mv` would answer EXDEV by copying the key into a new record.
    #[error("a record cannot move out of its group; create a new record there instead")]
    RecordOutsideGroup,
    #[error("only groups and records can be renamed")]
    NotRenamable,
    #[error("modes, owners and times in the mount follow the keystore and cannot be set")]
    FixedAttributes,
}

/// Control-file text that cannot be understood. Never echoes more than a short command:
/// what is written may be a mis-pasted secret, and the reason reaches the log and `.errors`.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{what} is not UTF-8 text")]
    NotUtf8 { what: &'static str },
    #[error("a command is one short word or two (at most {max} bytes); nothing was changed")]
    CommandTooLong { max: usize },
    #[error("unknown state {0:?} (expected prelive, active, inactive, deprecated or terminated)")]
    UnknownState(String),
    #[error("unknown command {0:?} (expected quiesce, quiesce SECONDS or unquiesce)")]
    UnknownQuiesce(String),
    #[error("lease {0:?} is not a whole number of seconds")]
    BadLease(String),
    #[error("unknown rotation command {0:?} (expected a period such as 90d, 12h, 30m or 45s; off; rotate; retire PERIOD; retire off)")]
    UnknownRotation(String),
    /// A `.create` object that does not describe a record; the reason names a field at most.
    #[error(".create: {0}")]
    Create(String),
    /// A `.change-key` request that is not one; never echoes what was written (a passphrase).
    #[error(".change-key: {0}")]
    ChangeKey(String),
}
