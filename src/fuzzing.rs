//! Thin wrappers over the parsers of outside input, for the `cargo fuzz` targets in `fuzz/`
//! and the regression tests that replay what they found (`tests/fuzz_regressions.rs`).
//!
//! This module exists only for them: it is hidden from the documentation, is not an API, and
//! holds no logic of its own. Each function calls the parser the mount, the store or the
//! import uses, unchanged.

pub use crate::crypto::{
    decode_any_key_file, decode_key_file, encode_key_file, encode_sealed_key_file, Hmk,
    KeyFileBody, KeyFileKind, Passphrase, Sealer,
};
pub use crate::fs::input::{ObjectInput, TextInput, MAX_CREATE_BYTES};
pub use crate::fs::parse::{QuiesceCommand, RotationCommand, MAX_COMMAND_BYTES};
pub use crate::fs::{FsError, InputError};
pub use crate::keystore::{Cipher, KeystoreError, Name, State, MAX_NAME_BYTES};
pub use crate::sealing::pkcs11::Blob as TokenBlob;
pub use crate::sealing::tpm::{describe as describe_tpm_blob, policy_of as tpm_policy_of};
pub use crate::service::NewRecord;
pub use crate::store::datafile::{Loaded, ParsedHeader};
pub use crate::transfer::{ContainerHeader, ExportBody, TransferError};

/// A request written to `.change-key` (`fs::parse::change_key`).
pub fn change_key(bytes: &[u8]) -> Result<crate::fs::parse::ChangeKeyRequest, FsError> {
    crate::fs::parse::change_key(bytes)
}

/// A command write's text (`fs::parse::command_text`).
pub fn command_text(data: &[u8]) -> Result<&str, InputError> {
    crate::fs::parse::command_text(data)
}

/// A state word, as written to a record's `state` file.
pub fn state(text: &str) -> Result<State, InputError> {
    crate::fs::parse::state(text)
}

/// A cipher name, as written to a group's `cipher` file.
pub fn cipher(text: &str) -> Result<Cipher, FsError> {
    crate::fs::parse::cipher(text)
}

/// A `.quiesce` command.
pub fn quiesce(text: &str) -> Result<QuiesceCommand, InputError> {
    crate::fs::parse::quiesce(text)
}

/// A `.rotation` command.
pub fn rotation(text: &str) -> Result<RotationCommand, FsError> {
    crate::fs::parse::rotation(text)
}

/// A complete `.create` object into the request (`fs::parse::new_record`).
pub fn new_record(bytes: &[u8]) -> Result<NewRecord, FsError> {
    crate::fs::parse::new_record(bytes)
}

/// The longest description there may be.
pub const MAX_DESCRIPTION_BYTES: usize = crate::keystore::MAX_DESCRIPTION_BYTES;

/// KMS_DATA's header alone (`store::datafile::decode_header`).
pub fn decode_data_header(bytes: &[u8]) -> Result<ParsedHeader, String> {
    crate::store::datafile::decode_header(bytes)
}

/// The whole KMS_DATA loader (`store::datafile::decode_file`).
pub fn decode_data_file(hmk: &Hmk, bytes: &[u8]) -> Result<Loaded, String> {
    crate::store::datafile::decode_file(hmk, bytes)
}

/// A KMS_DATA file holding an empty keystore as its snapshot, under `hmk` (a seed for the
/// fuzz target: `store::datafile::encode_file`).
pub fn encode_empty_data_file(hmk: &Hmk) -> Vec<u8> {
    let header = crate::store::Header {
        file_id: "00".repeat(16),
        hmk_id: hmk.id(),
        kpk_id: hmk.id(),
        hmk_kdf: None,
        kpk_kdf: None,
        created: crate::keystore::Timestamp(1),
        hmk_changed: None,
        kpk_changed: None,
    };
    crate::store::datafile::encode_file(hmk, &header, &crate::keystore::Keystore::new(), None)
}

/// An export container's plain header (`transfer::container::decode_header`), with the
/// length of its associated data.
pub fn container_header(bytes: &[u8]) -> Result<(ContainerHeader, usize), TransferError> {
    crate::transfer::container::decode_header(bytes)
}

/// Opens an export container (`transfer::open`, what `kmsfs import` does).
pub fn open_container(
    bytes: &[u8],
    pass: &Passphrase,
) -> Result<(ContainerHeader, ExportBody), TransferError> {
    crate::transfer::open(bytes, pass)
}

/// Seals an empty export under the given header (a seed for the fuzz target, with KDF
/// parameters cheap enough to open thousands of times a second).
pub fn seal_container_with(
    header: &ContainerHeader,
    pass: &Passphrase,
) -> Result<Vec<u8>, TransferError> {
    crate::transfer::container::seal_with(header, pass, &ExportBody { groups: Vec::new() })
}

/// A KMIP message, TTLV-decoded (`kmip::ttlv::decode`), and its encoder.
pub use crate::kmip::ttlv::{decode as kmip_decode, Ttlv, TtlvError, Value as TtlvValue};

/// A decoded KMIP message read as a request (`kmip::message::parse_request`): Ok holds
/// the number of batch items.
pub fn kmip_request(msg: &Ttlv) -> Result<usize, String> {
    crate::kmip::message::parse_request(msg)
        .map(|r| r.items.len())
        .map_err(|f| f.to_string())
}
