//! Keys, passphrases, key derivation and authenticated encryption for kmsfs.
//!
//! Everything that touches key bytes lives here so that the rest of the crate only
//! handles redacted, self-zeroizing types.

mod aead;
mod hierarchy;
mod kdf;
mod keyfile;
mod pages;
mod secret;

pub use aead::{open, seal, SEAL_OVERHEAD};
pub use hierarchy::{Hmk, KeyId, Kpk};
pub use kdf::KdfParams;
pub use keyfile::{
    decode_any_key_file, decode_key_file, encode_key_file, encode_sealed_key_file, KeyFileBody,
    KeyFileKind, Sealer, KEY_FILE_LEN, MAX_KEY_FILE_LEN,
};
pub use pages::{dump_exclusion, exclude_from_dumps, scrub_stack};
pub use secret::{KeyMaterial, Passphrase, SecretKey32};

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("authentication failed: the data was altered or the key is wrong")]
    Authentication,
    #[error("key derivation failed: {0}")]
    Kdf(String),
    /// Says what is wrong with a key file's bytes; the caller prefixes the file name.
    #[error("{0}")]
    KeyFile(String),
    #[error("ciphertext is too short")]
    Truncated,
}
