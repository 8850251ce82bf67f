//! The one mapping from every error of the mount to the errno its system call returns (the
//! table in `docs/errors.md`), and errno names for `.errors`. Exhaustive on purpose: a new
//! variant must be given its errno here, not fall into a default.

use super::error::{FsError, InputError, Shape};
use crate::keystore::KeystoreError;
use crate::service::KmsError;
use crate::store::StoreError;

pub fn errno_of(e: &FsError) -> i32 {
    match e {
        FsError::Service(k) => kms_errno(k),
        FsError::Keystore(k) => keystore_errno(k),
        FsError::Input(i) => input_errno(i),
        FsError::Shape(s) => shape_errno(s),
        FsError::NotFound => libc::ENOENT,
        // Root bypasses the modes; the mount refuses what they forbid itself.
        FsError::ReadOnly(_) => libc::EACCES,
        FsError::ExecutableNotAllowed { .. } => libc::EACCES,
        FsError::NotADirectory(_) => libc::ENOTDIR,
        FsError::NotAFile => libc::EISDIR,
        FsError::NotASymlink => libc::EINVAL,
        FsError::NoAttribute => libc::ENODATA,
        FsError::Exists(_) => libc::EEXIST,
        FsError::UnsupportedRename => libc::EINVAL,
        FsError::BadHandle | FsError::NotOpenForWriting => libc::EBADF,
        FsError::IncompleteObject { .. } => libc::EINVAL,
        FsError::ObjectTooLarge { .. } => libc::EFBIG,
        FsError::EarlierCommitFailed { errno, .. } => *errno,
    }
}

pub fn kms_errno(e: &KmsError) -> i32 {
    match e {
        KmsError::Keystore(k) => keystore_errno(k),
        KmsError::Quiesced => libc::EROFS,
        // Decided in open() for every caller, root included: a state that forbids key use.
        KmsError::KeyUnavailable { .. } => libc::EACCES,
        // A salt of the wrong length in `.create`: malformed input.
        KmsError::Derivation(_) => libc::EINVAL,
        KmsError::LeaseOutOfRange { .. } => libc::EINVAL,
        // Unquiescing without a hold is malformed input to `.quiesce`, per the contract.
        KmsError::NotQuiesced => libc::EINVAL,
        // Not refused, not done: it waits for the second administrator.
        KmsError::HeldForConfirmation { .. } => libc::EINPROGRESS,
        KmsError::SelfConfirmation { .. } | KmsError::NeedsAnAdministrator => libc::EPERM,
        // The change cannot be made durable because the data directory's file system is full
        // (or its owner over quota): said as such, so that `cp` and `dd` report "No space
        // left on device" rather than an I/O error.
        KmsError::Store(StoreError::Io { source, .. })
            if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) =>
        {
            source.raw_os_error().unwrap_or(libc::EIO)
        }
        // A key change that cannot be made as asked (a random key for a passphrase-only HMK).
        KmsError::Store(StoreError::KeyChangeRefused(_)) => libc::EINVAL,
        // Fail closed: the daemon cannot record the read or the change.
        KmsError::Audit(_) | KmsError::Store(_) | KmsError::Crypto(_) => libc::EIO,
    }
}

pub fn keystore_errno(e: &KeystoreError) -> i32 {
    match e {
        KeystoreError::InvalidName { .. }
        | KeystoreError::InvalidTag(_)
        | KeystoreError::UnknownCipher(_)
        | KeystoreError::PeriodOutOfRange { .. } => libc::EINVAL,
        KeystoreError::NameTooLong { .. } => libc::ENAMETOOLONG,
        KeystoreError::GroupNameTaken(_)
        | KeystoreError::RecordNameTaken { .. }
        | KeystoreError::TagTaken(_) => libc::EEXIST,
        KeystoreError::NoSuchGroup(_) | KeystoreError::NoSuchRecord(_) => libc::ENOENT,
        KeystoreError::TransitionRefused { .. }
        | KeystoreError::CreationStateRefused(_)
        // Only imports meet it (the mount's activations demote the current record).
        | KeystoreError::SecondActive { .. }
        | KeystoreError::DeleteRefused { .. }
        | KeystoreError::CipherLocked(_)
        // Never EXDEV: `mv` would then copy the key into a new record.
        | KeystoreError::CrossGroupMove => libc::EPERM,
        KeystoreError::GroupNotEmpty { .. } => libc::ENOTEMPTY,
        // A description is a small file; larger than it may grow is "file too large".
        KeystoreError::DescriptionTooLong { .. } => libc::EFBIG,
        // The key's length follows the group's cipher; only a `.cipher` change racing a
        // `.create` on an empty group meets it. The request no longer fits: malformed input.
        KeystoreError::KeyLengthMismatch { .. } => libc::EINVAL,
    }
}

fn input_errno(e: &InputError) -> i32 {
    match e {
        InputError::NotUtf8 { .. }
        | InputError::CommandTooLong { .. }
        | InputError::UnknownState(_)
        | InputError::UnknownQuiesce(_)
        | InputError::BadLease(_)
        | InputError::UnknownRotation(_)
        | InputError::Create(_)
        | InputError::ChangeKey(_) => libc::EINVAL,
    }
}

fn shape_errno(e: &Shape) -> i32 {
    match e {
        Shape::NoDirectoryHere
        | Shape::FixedDirectory
        | Shape::FileRemoval
        | Shape::StrayFile(_)
        | Shape::GroupOutsideRoot
        | Shape::RecordOutsideGroup
        | Shape::NotRenamable
        | Shape::FixedAttributes => libc::EPERM,
    }
}

/// The symbolic name of an errno, as `.errors` shows it.
pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EDQUOT => "EDQUOT",
        libc::EROFS => "EROFS",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ENOSYS => "ENOSYS",
        libc::ENODATA => "ENODATA",
        libc::EINPROGRESS => "EINPROGRESS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => "EUNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::State;

    /// What the store says when an append fails with `errno`.
    fn store_io(errno: i32) -> FsError {
        KmsError::Store(StoreError::Io {
            what: "cannot append to KMS_DATA".into(),
            source: std::io::Error::from_raw_os_error(errno),
        })
        .into()
    }

    #[test]
    fn contract_table() {
        let cases: Vec<(FsError, i32)> = vec![
            (InputError::UnknownState("x".into()).into(), libc::EINVAL),
            (KmsError::NotQuiesced.into(), libc::EINVAL),
            (KmsError::Quiesced.into(), libc::EROFS),
            (
                KmsError::KeyUnavailable {
                    name: "k".into(),
                    state: State::Prelive,
                }
                .into(),
                libc::EACCES,
            ),
            (
                KmsError::Keystore(KeystoreError::TransitionRefused {
                    name: "k".into(),
                    from: State::Active,
                    to: State::Prelive,
                })
                .into(),
                libc::EPERM,
            ),
            (Shape::RecordOutsideGroup.into(), libc::EPERM),
            (KeystoreError::CrossGroupMove.into(), libc::EPERM),
            (KeystoreError::CipherLocked("g".into()).into(), libc::EPERM),
            (
                KeystoreError::GroupNameTaken("g".into()).into(),
                libc::EEXIST,
            ),
            (
                KeystoreError::GroupNotEmpty {
                    name: "g".into(),
                    records: 1,
                }
                .into(),
                libc::ENOTEMPTY,
            ),
            (
                KeystoreError::NameTooLong { len: 300 }.into(),
                libc::ENAMETOOLONG,
            ),
            (
                KeystoreError::DescriptionTooLong {
                    len: 5000,
                    max: 4096,
                }
                .into(),
                libc::EFBIG,
            ),
            (
                KeystoreError::UnknownCipher("x".into()).into(),
                libc::EINVAL,
            ),
            (
                KeystoreError::NoSuchRecord("ab".into()).into(),
                libc::ENOENT,
            ),
            (FsError::ReadOnly("/m/.status".into()), libc::EACCES),
            (store_io(libc::ENOSPC), libc::ENOSPC),
            (store_io(libc::EDQUOT), libc::EDQUOT),
            (store_io(libc::EIO), libc::EIO),
            (Shape::StrayFile("x".into()).into(), libc::EPERM),
        ];
        for (e, want) in cases {
            assert_eq!(errno_of(&e), want, "{e}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(errno_name(libc::EROFS), "EROFS");
        assert_eq!(errno_name(libc::ENAMETOOLONG), "ENAMETOOLONG");
    }
}
