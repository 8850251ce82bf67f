//! kmsfs: a key management service mounted as a file system.
//!
//! - `keystore`: the core (groups, records, the lifecycle), no I/O.
//! - `crypto`, `store`: the key hierarchy and the three files of a data directory.
//! - `service`: the one path every change takes (checked, durable, applied).
//! - `fs`: the mount; `transfer`: export and import; `cli`: the subcommands.
//! - `kmip`: the keystore over KMIP 1.0-1.4 for backup products (`docs/kmip.md`).
//! - `audit`: the tamper-evident audit log and its verification (`docs/audit.md`).
//! - `sealing`: a master key sealed to a TPM or wrapped by a PKCS#11 token's key.

// Every system call goes through std or nix. The one exception is `crypto::pages` (secret
// pages kept out of core dumps: nix's madvise and mlock are `unsafe fn`), which allows it
// for itself and says why each use is sound.
#![deny(unsafe_code)]
#![deny(unused_must_use)]
#![warn(
    missing_debug_implementations,
    rust_2018_idioms,
    clippy::dbg_macro,
    clippy::todo,
    clippy::unwrap_used
)]

pub mod audit;
pub mod cli;
pub mod crypto;
pub mod fs;
// Only for the `cargo fuzz` targets in fuzz/ (and their regression tests): not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod harden;
pub mod keystore;
// KMIP, the industry protocol, served from the same keystore (`kmsfs mount --kmip-listen`).
pub mod kmip;
pub mod sealing;
pub mod service;
pub mod store;
pub mod transfer;
