//! The writer's lock and group commit. A change is checked against `staged` (the keystore
//! with every written change applied), its frame is written to KMS_DATA under the lock, and
//! the lock is let go for the fdatasync: changes from other callers that arrive meanwhile are
//! checked and written after it, and share the next fdatasync. Readers see a change only once
//! its frame is durable (the syncer applies every change it made durable, in log order, to
//! the keystore they read), and each caller gets its answer only then. A failed fdatasync
//! cuts the file back to what was durable and fails every change it covered; `staged`
//! returns to what readers see.

use std::collections::{HashMap, VecDeque};
use std::sync::MutexGuard;

use super::{Kms, KmsError, OnDisk};
use crate::keystore::touched::Touched;
use crate::keystore::{Change, Keystore};
use crate::store::Store;

/// What the writer's lock guards.
pub(super) struct Writer {
    pub store: Store,
    /// The keystore with every written change applied, durable or not: what the next change
    /// is checked against. The readers' keystore whenever nothing is in flight.
    pub staged: Keystore,
    in_flight: VecDeque<InFlight>,
    /// An fdatasync runs, without the lock.
    syncing: bool,
    /// No new frame may be written (a freeze or a rewrite waits for the ones in flight).
    closed: bool,
    /// KMS_DATA is durable through this (length, next sequence number).
    durable: (u64, u64),
    /// Changes whose frames a failed fdatasync took away, with its errno and text.
    failed: HashMap<u64, (Option<i32>, String)>,
    next_id: u64,
}

struct InFlight {
    id: u64,
    change: Change,
    /// What it touches, taken from `staged` before it was applied there.
    touched: Touched,
    /// KMS_DATA's length once its frame is written.
    end: u64,
    /// The last audit line its frame carries.
    last_line: u64,
}

/// A change written and waiting for its fdatasync.
pub(super) struct Ticket(u64);

impl Writer {
    pub fn new(store: Store, ks: &Keystore) -> Writer {
        let durable = store.end();
        Writer {
            store,
            staged: ks.clone(),
            in_flight: VecDeque::new(),
            syncing: false,
            closed: false,
            durable,
            failed: HashMap::new(),
            next_id: 0,
        }
    }

    /// Writes a checked change's frame (after every other) and applies it to `staged`.
    pub fn write(
        &mut self,
        change: Change,
        lines: &[String],
        last_line: u64,
        touched: Touched,
    ) -> Result<Ticket, crate::store::StoreError> {
        let end = self.store.write_change(&change, lines)?;
        self.staged
            .apply(&change)
            .expect("checked against staged under the writer's lock");
        self.next_id += 1;
        let id = self.next_id;
        self.in_flight.push_back(InFlight {
            id,
            change,
            touched,
            end,
            last_line,
        });
        Ok(Ticket(id))
    }

    /// Nothing is in flight: the files are what readers see.
    pub fn is_settled(&self) -> bool {
        self.in_flight.is_empty() && !self.syncing
    }

    /// After the store was rewritten by other means (compaction, a key change, an import),
    /// with nothing in flight: `ks` is what it holds.
    pub fn rebased(&mut self, ks: &Keystore) {
        debug_assert!(self.in_flight.is_empty());
        self.staged = ks.clone();
        self.durable = self.store.end();
    }
}

impl Kms {
    pub(super) fn writer(&self) -> MutexGuard<'_, Writer> {
        // A panic while holding it leaves the files as the last completed operation left them
        // (each write is cut back on failure), so a poisoned lock is sound.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The writer's lock, once no new frame is being held back by a freeze or a rewrite.
    pub(super) fn open_writer(&self) -> MutexGuard<'_, Writer> {
        let mut w = self.writer();
        while w.closed {
            w = self.synced.wait(w).unwrap_or_else(|e| e.into_inner());
        }
        w
    }

    /// The writer's lock with nothing in flight: every written frame is durable and applied
    /// (or failed). New frames wait meanwhile, so this ends even under a stream of changes.
    pub(super) fn settled_writer(&self) -> MutexGuard<'_, Writer> {
        let mut w = self.open_writer();
        w.closed = true;
        while !w.is_settled() {
            w = self.sync_or_wait(w);
        }
        w.closed = false;
        self.synced.notify_all();
        w
    }

    /// Waits until the ticket's change is durable and visible (Ok), or was lost with a failed
    /// fdatasync (the error). Becomes the syncer when none runs.
    pub(super) fn wait_durable<'a>(
        &'a self,
        mut w: MutexGuard<'a, Writer>,
        ticket: Ticket,
    ) -> (MutexGuard<'a, Writer>, Result<(), KmsError>) {
        loop {
            if let Some((errno, text)) = w.failed.remove(&ticket.0) {
                return (w, Err(sync_failed(errno, &text)));
            }
            if !w.in_flight.iter().any(|f| f.id == ticket.0) {
                return (w, Ok(()));
            }
            w = self.sync_or_wait(w);
        }
    }

    /// Runs one fdatasync for everything written so far if none runs, else waits for the one
    /// that does.
    fn sync_or_wait<'a>(&'a self, mut w: MutexGuard<'a, Writer>) -> MutexGuard<'a, Writer> {
        if w.syncing {
            return self.synced.wait(w).unwrap_or_else(|e| e.into_inner());
        }
        let Some(last) = w.in_flight.back() else {
            return w;
        };
        let through = (last.end, w.store.end().1);
        let handle = w.store.sync_handle();
        w.syncing = true;
        drop(w);
        let synced = handle.and_then(|f| f.sync_data());
        let mut w = self.writer();
        w.syncing = false;
        match synced {
            Ok(()) => self.made_durable(&mut w, through),
            Err(e) => self.lost_in_flight(&mut w, &e),
        }
        self.synced.notify_all();
        w
    }

    /// Every frame through `through` is durable: apply their changes, in log order, to what
    /// readers see, tell the observers, and compact when the log has grown long.
    fn made_durable(&self, w: &mut Writer, through: (u64, u64)) {
        w.durable = through;
        let mut done = Vec::new();
        while w.in_flight.front().is_some_and(|f| f.end <= through.0) {
            done.extend(w.in_flight.pop_front());
        }
        let Some(last_line) = done.iter().map(|f| f.last_line).max() else {
            return;
        };
        self.audit_saved_through(last_line);
        {
            let mut guard = self.write();
            let inner = &mut *guard;
            for f in &done {
                inner
                    .ks
                    .apply(&f.change)
                    .expect("applied to staged in the same order");
            }
            inner.on_disk = OnDisk::of(&w.store);
            if done.iter().any(|f| {
                matches!(
                    f.change,
                    Change::SetRotation { .. } | Change::DeleteGroup { .. }
                )
            }) {
                self.rotating.store(
                    super::rotation::any_enabled(&inner.ks),
                    std::sync::atomic::Ordering::Release,
                );
            }
        }
        for f in &done {
            self.tell_published(&f.touched);
        }
        if w.in_flight.is_empty() && w.store.wants_compaction(&w.staged) {
            // The changes are durable in the log already; a failed compaction only means the
            // log stays longer until the next attempt.
            let compacted = self
                .sync_audit_before_compaction()
                .and_then(|()| Ok(w.store.compact(&w.staged)?));
            if let Err(e) = compacted {
                log::error!("compaction of {} failed: {e}", self.data_dir.display());
            }
            w.durable = w.store.end();
            self.write().on_disk = OnDisk::of(&w.store);
        }
    }

    /// An fdatasync failed: nothing written since the last durable point can be trusted.
    fn lost_in_flight(&self, w: &mut Writer, e: &std::io::Error) {
        let (len, seq) = w.durable;
        log::error!("fdatasync of KMS_DATA failed ({e}): the changes it covered are refused");
        w.store.discard_after(len, seq);
        let lost: Vec<InFlight> = w.in_flight.drain(..).collect();
        let readers = self.read();
        let (errno, text) = (e.raw_os_error(), e.to_string());
        for f in &lost {
            self.audit_change_refused(&readers, &f.change, &sync_failed(errno, &text));
            w.failed.insert(f.id, (errno, text.clone()));
        }
        w.staged = readers.0.ks.clone();
    }
}

/// The refusal of a change whose fdatasync failed, as `Store::append` words it.
fn sync_failed(errno: Option<i32>, text: &str) -> KmsError {
    let source = match errno {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::other(text.to_string()),
    };
    KmsError::Store(crate::store::StoreError::Io {
        what: format!("cannot append to {}", crate::store::DATA_FILE),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{test_keystore, NewRecord};
    use super::*;
    use crate::keystore::{Name, State};

    fn snapshot(ks: &Keystore) -> String {
        serde_json::to_string(&ks.to_snapshot()).unwrap()
    }

    /// Eight threads changing their own records, and activating them in one group, at once
    /// (their frames then share fdatasyncs; `examples/bench` counts the device flushes):
    /// every acknowledged change is there afterwards, in memory and on disk, never two active
    /// records, and nothing is left in flight.
    #[test]
    fn concurrent_changes_lose_nothing_and_never_show_two_active_records() {
        let (dir, kms, g, _k) = test_keystore();
        let tags: Vec<_> = (0..8)
            .map(|i| {
                let name = Name::parse(&format!("r{i}")).unwrap();
                kms.create_record(&g, NewRecord::prelive(name)).unwrap()
            })
            .collect();
        let last: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = tags
                .iter()
                .enumerate()
                .map(|(i, tag)| {
                    let kms = &kms;
                    s.spawn(move || {
                        let mut text = String::new();
                        for n in 0..40 {
                            text = format!("writer {i} change {n}");
                            kms.describe_record(tag, &text).unwrap();
                            if n % 8 == i % 8 {
                                kms.set_state(tag, State::Active).unwrap();
                                let ks = kms.read();
                                let active = ks.records().filter(|r| r.state == State::Active);
                                assert_eq!(active.count(), 1, "two active records");
                            }
                        }
                        text
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (tag, text) in tags.iter().zip(&last) {
            assert_eq!(&kms.read().record(tag).unwrap().description, text);
        }
        let w = kms.writer();
        assert!(w.is_settled());
        assert_eq!(snapshot(&w.staged), snapshot(&kms.read()));
        drop(w);
        let before = snapshot(&kms.read());
        drop(kms);
        let reopened = crate::service::Kms::open(&dir.path().join("data")).unwrap();
        assert_eq!(snapshot(&reopened.read()), before);
    }
}
