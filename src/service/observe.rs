//! Front ends that let their clients cache what they show (the mount: the kernel's attribute
//! and dentry caches) are told of every change once it is visible, with what it touched
//! (`keystore::touched`), so that they can invalidate exactly that.
//!
//! `published` runs right after the change is applied, under the writer's lock only (readers
//! go on), before the call that made the change returns. It may tell the kernel, which never
//! waits for the service's locks, and must not call the service.

use std::sync::Arc;

use super::two_person::{Pending, Target};
use super::Kms;
use crate::keystore::touched::Touched;
use crate::keystore::Keystore;

pub trait Observer: Send + Sync {
    fn published(&self, touched: &Touched);
}

impl Kms {
    /// Tells `observer` of every change from now on.
    pub fn observe(&self, observer: Arc<dyn Observer>) {
        self.observers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(observer);
    }

    pub(super) fn tell_published(&self, touched: &Touched) {
        if touched.is_empty() {
            return;
        }
        for o in self
            .observers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            o.published(touched);
        }
    }
}

/// What a change of the pending moves touches: `record.json` and `.group.json` list them.
pub(super) fn pending_touched(ks: &Keystore, before: &[Pending], after: &[Pending]) -> Touched {
    let mut t = Touched::default();
    let differs = |p: &Pending, other: &[Pending]| !other.contains(p);
    let changed = before
        .iter()
        .filter(|p| differs(p, after))
        .chain(after.iter().filter(|p| differs(p, before)));
    for p in changed {
        match &p.target {
            Target::Record(tag) => t.add_record(ks, tag),
            Target::Group(tag) => t.add_group(ks, tag),
            // Only `.status` shows those, and it is never cached.
            Target::Keystore => {}
        }
    }
    t
}
