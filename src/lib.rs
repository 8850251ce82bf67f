//! kmsfs: a key management service mounted as a file system.

pub mod crypto;
pub mod keystore;
pub mod store;
