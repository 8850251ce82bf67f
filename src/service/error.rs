use crate::crypto::CryptoError;
use crate::keystore::{KeystoreError, State};
use crate::store::StoreError;

/// Why the service refused or failed an operation; `Display` is the one-line reason shown to
/// administrators (in the log and in `.errors`).
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    #[error(
        "the keystore is quiesced for a backup; changes resume after `echo unquiesce > .quiesce`"
    )]
    Quiesced,
    #[error("record \"{name}\" is {state}: its key can be read only while active or inactive")]
    KeyUnavailable { name: String, state: State },
    /// Malformed input: an unknown word, bad JSON, a missing field.
    #[error("{0}")]
    Invalid(String),
    #[error("the keystore is not quiesced: there is no hold to release")]
    NotQuiesced,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cryptographic failure: {0}")]
    Crypto(#[from] CryptoError),
}
