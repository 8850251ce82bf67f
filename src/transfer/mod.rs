//! Moving keys between keystores: `kmsfs export` writes a passphrase-protected container of
//! groups and records with their plaintext keys; `kmsfs import` plans how such a container
//! joins another keystore (renames, skips, state adjustments) before anything changes.
//!
//! - `container`: the file layout, sealed under a key derived from the passphrase.
//! - `body`: what the container holds (groups, records, keys), zeroized after use.
//! - `export`: the body of a keystore, or of some of its groups.
//! - `plan`: the changes an import makes, and the report of what it does.

mod body;
pub(crate) mod container;
mod error;
mod export;
mod file;
mod plan;
mod report;

pub use body::{ExportBody, ExportedGroup, ExportedRecord};
pub use container::{open, seal, ContainerHeader, CONTAINER_VERSION, MAGIC};
pub use error::TransferError;
pub use export::collect;
pub use file::write_new;
pub use plan::{dry_run, plan_import, ImportOptions, Plan};
pub use report::{GroupOutcome, GroupReport, RecordOutcome, RecordReport, Report, SkipReason};

#[cfg(test)]
mod tests;
