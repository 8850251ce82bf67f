//! Test support, one module per concern, shared by every test binary (`mod support;`):
//!
//! - `mount`: a keystore mounted in-process (`Mounted`), `open_kms`, `wait_for`;
//! - `daemon`: `kmsfs mount` as a child process (`Daemon`), `mount_refused`, `is_mounted`;
//! - `kmip`: certificates made with openssl, PyKMIP's client through `examples/kmip_lifecycle.py`;
//! - `knobs`: the drills' `KMSFS_DRILL_*` settings (`env_or`, `seed`);
//! - `keystore`: a keystore populated through the service API (`group`, `record`, ...);
//! - `cli`: the built `kmsfs` binary and shell commands (`kmsfs`, `verify`, `ok`, `errno`, ...);
//! - `examples`: the admin scripts of `examples/` run as an administrator runs them;
//! - `powercut`: strace recordings of real processes replayed as power cuts (`tests/power_cut.rs`);
//! - `scratch`: a private scratch directory per test (`Scratch`);
//! - `snapshot`: what a mounted keystore shows and what its backing files hold, to compare;
//! - `softhsm`: a real SoftHSM2 with tokens of its own, shared by a binary's tests;
//! - `swtpm`: a real software TPM on loopback ports, stopped when dropped.
//!
//! A test that cannot mount fails; it never skips.

// Each test binary uses a different part of this.
#![allow(dead_code)]

pub mod cli;
pub mod daemon;
pub mod examples;
pub mod keystore;
pub mod kmip;
pub mod knobs;
pub mod mount;
pub mod powercut;
pub mod scratch;
pub mod snapshot;
pub mod softhsm;
pub mod swtpm;
