//! Import into a keystore held by this process: planned against the current keystore, then
//! committed as one atomic rewrite of KMS_DATA, so that an import that dies halfway leaves the
//! keystore as it was.

use super::{Kms, KmsError};
use crate::keystore::touched::Touched;
use crate::keystore::{Change, Outcome};
use crate::transfer::{self, ExportBody, ImportOptions, Plan, TransferError};

impl Kms {
    /// Plans importing `body` (see `transfer::plan_import`); changes nothing.
    pub fn plan_import(
        &self,
        body: &ExportBody,
        opts: &ImportOptions,
    ) -> Result<Plan, TransferError> {
        let guard = self.read();
        transfer::plan_import(&guard, &guard.0.kpk, body, opts)
    }

    /// Applies `changes` all together or not at all: to a copy of the keystore first (any
    /// refusal stops there), then as one compacted KMS_DATA written beside the old one and
    /// renamed over it. Memory takes the new keystore only once the rename is durable.
    pub fn apply_atomically(&self, changes: &[Change]) -> Result<(), KmsError> {
        let mut w = self.settled_writer();
        let store = &mut w.store;
        let mut guard = self.write();
        let inner = &mut *guard;
        let mut next = inner.ks.clone();
        let mut changed = false;
        let mut touched = Touched::default();
        for c in changes {
            touched.merge(next.touched_by(c));
            changed |= next.apply(c)? == Outcome::Changed;
        }
        if !changed {
            return Ok(());
        }
        if inner.freeze.is_frozen() {
            return Err(KmsError::Quiesced);
        }
        let before = store.header().file_id.clone();
        let result = store.compact(&next);
        // A failure after the rename (the directory's fsync) leaves the new file in place:
        // memory must follow the disk even though the error is reported.
        let taken = result.is_ok() || store.header().file_id != before;
        if taken {
            inner.ks = next;
        }
        inner.on_disk = super::OnDisk::of(store);
        let ks = inner.ks.clone();
        drop(guard);
        w.rebased(&ks);
        if taken {
            self.tell_published(&touched);
        }
        Ok(result?)
    }
}
