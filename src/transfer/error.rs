use std::path::PathBuf;

use crate::keystore::{Cipher, KeystoreError};

/// Why an export or import failed. The container's variants say what is wrong with the file;
/// the command line prefixes its name.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// A wrong passphrase and an edited byte look the same to authenticated encryption, on
    /// purpose: the container says nothing about which part failed.
    #[error("wrong passphrase, or the file was altered")]
    Altered,
    #[error("not a kmsfs export container (or its first bytes were altered)")]
    NotAContainer,
    #[error("container format {0} is not supported by this kmsfs (it reads format {v}), or the file was altered", v = super::CONTAINER_VERSION)]
    UnsupportedVersion(u16),
    /// Authentic but inconsistent: written by something other than `kmsfs export`.
    #[error("the container is inconsistent: {0}")]
    Invalid(String),
    #[error("no group named \"{0}\" in the keystore; nothing was written")]
    UnknownGroup(String),
    #[error(
        "group \"{name}\" exists here with cipher {here}, the imported one has {there}: nothing was imported (without --preserve-names it would become a new group)"
    )]
    CipherMismatch {
        name: String,
        here: Cipher,
        there: Cipher,
    },
    #[error("KMS_KPKF does not open the key of record \"{name}\" (tag {tag}): wrong KPK, or KMS_DATA was altered")]
    KeyUnreadable { name: String, tag: String },
    #[error("key derivation failed: {0}")]
    Kdf(String),
    #[error("{} already exists; refusing to overwrite it", .0.display())]
    OutputExists(PathBuf),
    /// The keystore refused a planned change (a dry run or the commit itself).
    #[error("the keystore refuses the import, nothing was changed: {0}")]
    Refused(#[from] KeystoreError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}
