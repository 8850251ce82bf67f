use std::time::Duration;

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
    /// The passphrase and salt given for a record cannot make a key (a salt of a bad length).
    #[error("cannot derive the key: {0}")]
    Derivation(String),
    #[error("a lease runs from 1 s to {max_secs} s")]
    LeaseOutOfRange { max_secs: u64 },
    #[error("the keystore is not quiesced: there is no hold to release")]
    NotQuiesced,
    /// `--two-person`: recorded; a second administrator must ask for the same move.
    #[error("two-person rule: {action} is held pending until {until}; a second administrator must ask for it too before then")]
    HeldForConfirmation { action: String, until: String },
    #[error("two-person rule: the same administrator cannot confirm their own request (pending until {until})")]
    SelfConfirmation { until: String },
    #[error("two-person rule: a destructive move needs an administrator to ask for it")]
    NeedsAnAdministrator,
    /// The audit log cannot be written: key reads and changes wait for it (fail closed).
    #[error(
        "the audit log cannot be written ({0}); key reads and changes are refused until it can"
    )]
    Audit(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cryptographic failure: {0}")]
    Crypto(#[from] CryptoError),
}

/// Longer leases are almost certainly a typo (seconds taken for minutes, say).
pub const MAX_LEASE: Duration = Duration::from_secs(7 * 24 * 3600);
