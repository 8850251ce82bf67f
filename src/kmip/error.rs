//! A failed batch item: the KMIP Result Reason and the message shown to the client. Every
//! refusal of the service becomes one here, in one function (`From<KmsError>`).

use super::tags::reason;
use crate::keystore::{KeystoreError, State};
use crate::service::KmsError;

/// What a batch item answers when it fails (Result Status: Operation Failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub reason: u32,
    pub message: String,
}

impl Failure {
    pub fn new(reason: u32, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(reason::INVALID_FIELD, message)
    }

    pub fn missing(what: &str) -> Failure {
        Failure::new(reason::MISSING_DATA, format!("the request has no {what}"))
    }

    pub fn unsupported(message: impl Into<String>) -> Failure {
        Failure::new(reason::FEATURE_NOT_SUPPORTED, message)
    }

    pub fn denied(message: impl Into<String>) -> Failure {
        Failure::new(reason::PERMISSION_DENIED, message)
    }

    pub fn not_found(uid: &str) -> Failure {
        Failure::new(
            reason::ITEM_NOT_FOUND,
            format!("no key with identifier {uid:?}"),
        )
    }
}

impl From<KmsError> for Failure {
    fn from(e: KmsError) -> Failure {
        let message = e.to_string();
        let r = match &e {
            KmsError::Keystore(k) => keystore_reason(k),
            // KMIP 1.x has no "try again later"; the message says why and until when.
            KmsError::Quiesced => reason::GENERAL_FAILURE,
            // A terminated record is KMIP's Destroyed: its key is gone as far as clients go.
            KmsError::KeyUnavailable {
                state: State::Terminated,
                ..
            } => reason::KEY_VALUE_NOT_PRESENT,
            // Wrong lifecycle state: KMIP 1.x says Illegal Operation.
            KmsError::KeyUnavailable { .. } => reason::ILLEGAL_OPERATION,
            KmsError::Derivation(_) | KmsError::Crypto(_) => reason::CRYPTOGRAPHIC_FAILURE,
            KmsError::LeaseOutOfRange { .. } | KmsError::NotQuiesced => reason::INVALID_FIELD,
            // Recorded, waiting for a second administrator: not done, not refused for good.
            KmsError::HeldForConfirmation { .. } => reason::GENERAL_FAILURE,
            KmsError::SelfConfirmation { .. } | KmsError::NeedsAnAdministrator => {
                reason::PERMISSION_DENIED
            }
            KmsError::Audit(_) | KmsError::Store(_) => reason::GENERAL_FAILURE,
        };
        Failure::new(r, message)
    }
}

fn keystore_reason(e: &KeystoreError) -> u32 {
    use KeystoreError::*;
    match e {
        InvalidName { .. }
        | NameTooLong { .. }
        | InvalidTag(_)
        | UnknownCipher(_)
        | DescriptionTooLong { .. }
        | PeriodOutOfRange { .. }
        | KeyLengthMismatch { .. } => reason::INVALID_FIELD,
        GroupNameTaken(_) | RecordNameTaken { .. } | TagTaken(_) => reason::OBJECT_ALREADY_EXISTS,
        NoSuchGroup(_) | NoSuchRecord(_) => reason::ITEM_NOT_FOUND,
        TransitionRefused { .. }
        | CreationStateRefused(_)
        | SecondActive { .. }
        | DeleteRefused { .. }
        | GroupNotEmpty { .. }
        | CipherLocked(_)
        | CrossGroupMove => reason::ILLEGAL_OPERATION,
    }
}
