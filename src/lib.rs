//! kmsfs: a key management service mounted as a file system.

pub mod cli;
pub mod crypto;
pub mod fs;
pub mod keystore;
pub mod service;
pub mod store;
pub mod transfer;
