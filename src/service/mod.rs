//! The keystore service: the core, its storage and its keys behind one lock, as the mount and
//! the command line use them. Every change is checked, made durable, then applied, all under
//! the write lock, so readers see either the state before a change or after it.

mod audit;
mod create;
mod error;
mod import;
mod master_keys;
mod observe;
mod quiesce;
mod rotation;
mod status;
mod two_person;
mod writer;

pub use audit::{acting_as, acting_as_client, Acting, ActingClient};
pub use create::{KeySource, NewRecord};
pub use error::KmsError;
pub use master_keys::MasterKeyStatus;
pub use observe::Observer;
pub use quiesce::{QuiesceView, MAX_LEASE};
pub use rotation::Rotated;
pub use status::Status;
pub use two_person::{Pending, Target as PendingTarget};

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{Duration, Instant};

use crate::crypto::{CryptoError, KdfParams, KeyMaterial, Kpk};
use crate::keystore::touched::Touched;
use crate::keystore::{
    Change, Cipher, GroupTag, KeyTag, Keystore, KeystoreError, Name, Outcome, State, Timestamp,
    WrappedKey,
};
use crate::store::{Access, Store, Unlock, FORMAT_VERSION};
use quiesce::Freeze;

/// The part of the store's state that readers show, copied after every operation on it.
#[derive(Debug, Clone)]
struct OnDisk {
    header: crate::store::Header,
    format: u16,
    keeping: (crate::store::Keeping, crate::store::Keeping),
}

impl OnDisk {
    fn of(store: &Store) -> OnDisk {
        OnDisk {
            header: store.header().clone(),
            format: store.format(),
            keeping: store.keeping(),
        }
    }
}

#[derive(Debug)]
struct Inner {
    ks: Keystore,
    /// What the files on disk say of themselves, as of the last change: for `.status`.
    on_disk: OnDisk,
    freeze: Freeze,
    two_person: two_person::TwoPerson,
    /// Under the lock: a change of the KPK (`change_master_key`) replaces it, and every key
    /// is wrapped under the KPK of the moment its change is committed.
    kpk: Kpk,
    /// As `open` resolved it, for `.status` (rendered under the same guard as the counts).
    data_dir: PathBuf,
}

pub struct Kms {
    inner: RwLock<Inner>,
    /// The writer's lock (`writer.rs`): every change holds it to check and write its frame,
    /// and lets it go for the fdatasync, which changes that arrive meanwhile share; freezes
    /// and key changes hold it with nothing in flight. `inner`'s write lock is taken only to
    /// check and then to apply, so readers never wait for a disk. Always taken before `inner`.
    writer: Mutex<writer::Writer>,
    /// Signalled when an fdatasync ends, and when the writer opens again.
    synced: Condvar,
    data_dir: PathBuf,
    /// Leased holds, for the timer to read without taking a reference to the service: a
    /// timer that held one at the wrong moment would keep the keystore (and its lock) alive
    /// after its owner dropped it.
    leased: Arc<AtomicUsize>,
    /// Whether any group rotates or retires records, for the timer likewise.
    rotating: Arc<AtomicBool>,
    /// Destructive moves waiting for a second administrator, for the timer likewise.
    pending: Arc<AtomicUsize>,
    /// Every key read and change is written here first (see `audit.rs`); None for the
    /// offline commands, which hold the keystore alone.
    audit: Option<crate::audit::AuditLog>,
    /// How the master keys were opened: a key change seals the new key the same way.
    unlock: Unlock,
    /// Told of every change as it becomes visible (`observe.rs`).
    observers: RwLock<Vec<Arc<dyn Observer>>>,
}

impl std::fmt::Debug for Kms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys: only which keystore this is.
        write!(f, "Kms({})", self.data_dir.display())
    }
}

/// A read view of the keystore; hold it briefly (writers wait for it).
#[derive(Debug)]
pub struct ReadGuard<'a>(RwLockReadGuard<'a, Inner>);

impl Deref for ReadGuard<'_> {
    type Target = Keystore;
    fn deref(&self) -> &Keystore {
        &self.0.ks
    }
}

impl Kms {
    /// Opens the keystore in `data_dir` for exclusive use by this process.
    pub fn open(data_dir: &Path) -> Result<Arc<Kms>, KmsError> {
        Kms::open_audited(data_dir, None)
    }

    /// Opens the keystore and its audit log (the chain continues where the file ends), keyed
    /// under a key derived from the HMK.
    pub fn open_audited(data_dir: &Path, audit_log: Option<&Path>) -> Result<Arc<Kms>, KmsError> {
        Kms::open_with(data_dir, audit_log, Unlock::default())
    }

    /// `open_audited`, with what master keys kept off the disk need (`store::Unlock`); the
    /// service keeps it for key changes (the TPM, the token).
    pub fn open_with(
        data_dir: &Path,
        audit_log: Option<&Path>,
        unlock: Unlock,
    ) -> Result<Arc<Kms>, KmsError> {
        let (mut store, ks, kpk, _report) = Store::open_with(data_dir, Access::ReadWrite, &unlock)?;
        let audit = match audit_log {
            None => None,
            Some(path) => Some(
                crate::audit::AuditLog::open(path, store.audit_key())
                    .map_err(|e| KmsError::Audit(e.to_string()))?,
            ),
        };
        // Absolute, so that `.status` names the same directory to a script run from anywhere
        // (`examples/backup.sh` from cron checks that the mount serves the directory it copies).
        let data_dir = &data_dir
            .canonicalize()
            .unwrap_or_else(|_| data_dir.to_path_buf());
        if let Some(log) = &audit {
            // What a crash (a power cut) took from the log's end before it was synced, the
            // frames of KMS_DATA still carry.
            log.restore(&store.take_audit_tail())
                .map_err(|e| KmsError::Audit(e.to_string()))?;
        }
        let rotating = Arc::new(AtomicBool::new(rotation::any_enabled(&ks)));
        let on_disk = OnDisk::of(&store);
        let writer = writer::Writer::new(store, &ks);
        let kms = Arc::new(Kms {
            inner: RwLock::new(Inner {
                ks,
                on_disk,
                freeze: Freeze::default(),
                two_person: Default::default(),
                kpk,
                data_dir: data_dir.to_path_buf(),
            }),
            writer: Mutex::new(writer),
            synced: Condvar::new(),
            unlock,
            data_dir: data_dir.to_path_buf(),
            leased: Arc::new(AtomicUsize::new(0)),
            rotating: rotating.clone(),
            pending: Arc::new(AtomicUsize::new(0)),
            audit,
            observers: RwLock::new(Vec::new()),
        });
        spawn_timer(
            Arc::downgrade(&kms),
            kms.leased.clone(),
            rotating,
            kms.pending.clone(),
        );
        Ok(kms)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn read(&self) -> ReadGuard<'_> {
        // A panic while holding the lock cannot leave the keystore half-changed (changes are
        // applied by infallible code after the checks), so a poisoned lock is still sound.
        ReadGuard(self.inner.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Check, persist, apply. A change that would change nothing succeeds even while frozen.
    fn commit(&self, change: Change) -> Result<Outcome, KmsError> {
        self.commit_with(|_, _| Ok(Some(change)))
            .map(|o| o.unwrap_or(Outcome::Unchanged))
    }

    /// Like `commit`, for a change that depends on the keystore as it is under the write lock
    /// (a rotation's name, or whether it is still due): `make` sees the keystore and returns
    /// the change, or None when there is nothing to do any more.
    fn commit_with(
        &self,
        make: impl FnOnce(&Keystore, &Kpk) -> Result<Option<Change>, KmsError>,
    ) -> Result<Option<Outcome>, KmsError> {
        // The writer's lock first: no other change, freeze or key change can come between
        // the checks below and the change's frame being written. Changes are checked against
        // `staged`, which holds every change written before this one, durable or not.
        let mut w = self.open_writer();
        let (change, pending_touched) = {
            let mut guard = self.write();
            let inner = &mut *guard;
            let Some(change) = make(&w.staged, &inner.kpk)? else {
                return Ok(None);
            };
            match w.staged.check(&change) {
                Ok(Outcome::Unchanged) => return Ok(Some(Outcome::Unchanged)),
                Ok(Outcome::Changed) => {}
                Err(e) => {
                    let e = KmsError::from(e);
                    self.audit_change_refused(&w.staged, &change, &e);
                    return Err(e);
                }
            }
            if inner.freeze.is_frozen() {
                self.audit_change_refused(&w.staged, &change, &KmsError::Quiesced);
                return Err(KmsError::Quiesced);
            }
            if change.min_format() > w.store.format() {
                // An older file cannot hold this change: rewrite it in the current format
                // first (atomically, as compaction does), with nothing in flight, so that its
                // header tells an older kmsfs to keep out rather than let it stumble on a
                // frame it cannot read. Rare: once per keystore.
                drop(guard);
                drop(w);
                w = self.settled_writer();
                log::info!(
                    "rewriting {} in format {FORMAT_VERSION} (it was {})",
                    self.data_dir.display(),
                    w.store.format()
                );
                self.sync_audit_before_compaction()?;
                let ks = w.staged.clone();
                w.store.compact(&ks)?;
                w.rebased(&ks);
                self.write().on_disk = OnDisk::of(&w.store);
                return self.commit_change(w, change, Touched::default());
            }
            let pending_before = inner.two_person.pending().to_vec();
            let gate = inner.two_person.gate(&change, audit::actor_uid());
            self.pending
                .store(inner.two_person.pending().len(), Ordering::Release);
            let pending_touched =
                observe::pending_touched(&w.staged, &pending_before, inner.two_person.pending());
            match gate {
                Ok(two_person::Gate::Free) => {}
                Ok(two_person::Gate::Confirmed(first)) => log::info!(
                    "two-person rule: {} asked by uid {} is confirmed by uid {}",
                    first.action,
                    first.by_uid,
                    audit::actor_uid().unwrap_or(0)
                ),
                Err(e) => {
                    self.audit_change_refused(&w.staged, &change, &e);
                    drop(guard);
                    self.tell_published(&pending_touched);
                    return Err(e);
                }
            }
            // The line that allows the change is written before the change is made, and the
            // change's frame carries it (with every line not yet synced in the log): one
            // fdatasync makes both durable, and a crash can lose neither without the other. A
            // crash after the line is written but before the frame is synced leaves a line
            // for a change that did not happen, never the reverse.
            self.audit_change(&w.staged, &change)?;
            (change, pending_touched)
        };
        self.commit_change(w, change, pending_touched)
    }

    /// Writes a checked change's frame and waits until it is durable (its fdatasync shared
    /// with the changes written meanwhile) and visible to readers.
    fn commit_change<'a>(
        &'a self,
        mut w: std::sync::MutexGuard<'a, writer::Writer>,
        change: Change,
        pending_touched: Touched,
    ) -> Result<Option<Outcome>, KmsError> {
        let (lines, last_line) = self.audit_unsaved();
        let mut touched = w.staged.touched_by(&change);
        touched.merge(pending_touched);
        let ticket = match w.write(change.clone(), &lines, last_line, touched) {
            Ok(t) => t,
            Err(e) => {
                let e = KmsError::from(e);
                self.audit_change_refused(&w.staged, &change, &e);
                return Err(e);
            }
        };
        let (_w, durable) = self.wait_durable(w, ticket);
        durable.map(|()| Some(Outcome::Changed))
    }

    /// Refuses with `Quiesced` while a hold remains: asked by callers that collect a change
    /// before making it (a description being written), so that the call that starts it is
    /// the one refused. `commit` decides again when the change is made.
    pub fn check_writable(&self) -> Result<(), KmsError> {
        if self.read().0.freeze.is_frozen() {
            return Err(KmsError::Quiesced);
        }
        Ok(())
    }

    // ---- groups ------------------------------------------------------------------------------

    pub fn create_group(&self, name: Name) -> Result<GroupTag, KmsError> {
        let tag = GroupTag::random();
        self.commit(Change::CreateGroup {
            tag: tag.clone(),
            name,
            cipher: Cipher::default(),
            description: String::new(),
            at: Timestamp::now(),
        })?;
        Ok(tag)
    }

    pub fn rename_group(&self, tag: &GroupTag, name: Name) -> Result<(), KmsError> {
        self.commit(Change::RenameGroup {
            tag: tag.clone(),
            name,
            at: Timestamp::now(),
        })
        .map(drop)
    }

    pub fn delete_group(&self, tag: &GroupTag) -> Result<(), KmsError> {
        self.commit(Change::DeleteGroup { tag: tag.clone() })
            .map(drop)
    }

    pub fn describe_group(&self, tag: &GroupTag, text: &str) -> Result<(), KmsError> {
        self.commit(Change::DescribeGroup {
            tag: tag.clone(),
            description: text.to_string(),
            at: Timestamp::now(),
        })
        .map(drop)
    }

    pub fn set_group_cipher(&self, tag: &GroupTag, cipher: Cipher) -> Result<(), KmsError> {
        self.commit(Change::SetGroupCipher {
            tag: tag.clone(),
            cipher,
            at: Timestamp::now(),
        })
        .map(drop)
    }

    // ---- records -----------------------------------------------------------------------------

    pub fn create_record(&self, group: &GroupTag, req: NewRecord) -> Result<KeyTag, KmsError> {
        let tag = req.tag.unwrap_or_else(KeyTag::random);
        let cipher = self
            .read()
            .group(group)
            .map(|g| g.cipher)
            .ok_or_else(|| KeystoreError::NoSuchGroup(group.to_string()))?;
        // The KDF runs outside the lock: a slow derivation must not stall other requests.
        let (key, derivation) = match &req.key {
            KeySource::Random => (KeyMaterial::random(cipher.key_len()), None),
            KeySource::Passphrase { passphrase, salt } => {
                let params = match salt {
                    None => KdfParams::with_fresh_salt(),
                    Some(salt) => KdfParams::with_salt(salt.clone()),
                };
                let key = params
                    .derive(passphrase, cipher.key_len())
                    .map_err(|e| match e {
                        CryptoError::Kdf(m) => KmsError::Derivation(m),
                        other => KmsError::Crypto(other),
                    })?;
                (key, Some(params))
            }
        };
        self.insert_record(
            group,
            tag,
            req.name,
            req.state,
            req.description,
            &key,
            derivation,
        )
    }

    /// Adds a record holding `key` (wrapped here under the KPK, bound to `tag`).
    #[allow(clippy::too_many_arguments)]
    pub fn insert_record(
        &self,
        group: &GroupTag,
        tag: KeyTag,
        name: Name,
        state: State,
        description: String,
        key: &KeyMaterial,
        derivation: Option<KdfParams>,
    ) -> Result<KeyTag, KmsError> {
        self.commit_with(|_, kpk| {
            Ok(Some(Change::CreateRecord {
                tag: tag.clone(),
                group: group.clone(),
                name,
                state,
                description,
                wrapped_key: WrappedKey(kpk.wrap(key, tag.as_str())),
                key_len: key.len(),
                derivation,
                at: Timestamp::now(),
            }))
        })?;
        Ok(tag)
    }

    /// Renames a record, which stays in its group: `group` is where the caller wants it, and
    /// any other group than its own is refused (a record's key is bound to its group).
    pub fn rename_record(
        &self,
        tag: &KeyTag,
        group: &GroupTag,
        name: Name,
    ) -> Result<(), KmsError> {
        let own = self.read().record(tag).map(|r| r.group.clone());
        match own {
            None => return Err(KeystoreError::NoSuchRecord(tag.to_string()).into()),
            Some(own) if &own != group => return Err(KeystoreError::CrossGroupMove.into()),
            Some(_) => {}
        }
        self.commit(Change::RenameRecord {
            tag: tag.clone(),
            name,
            at: Timestamp::now(),
        })
        .map(drop)
    }

    pub fn describe_record(&self, tag: &KeyTag, text: &str) -> Result<(), KmsError> {
        self.commit(Change::DescribeRecord {
            tag: tag.clone(),
            description: text.to_string(),
            at: Timestamp::now(),
        })
        .map(drop)
    }

    /// Moves a record through its lifecycle; activating demotes the group's active record in
    /// the same step.
    pub fn set_state(&self, tag: &KeyTag, state: State) -> Result<(), KmsError> {
        self.commit(Change::SetState {
            tag: tag.clone(),
            state,
            at: Timestamp::now(),
        })
        .map(drop)
    }

    pub fn delete_record(&self, tag: &KeyTag) -> Result<(), KmsError> {
        self.commit(Change::DeleteRecord { tag: tag.clone() })
            .map(drop)
    }

    /// Refuses unless the record's state allows use of its key (active or inactive).
    pub fn key_readable(&self, tag: &KeyTag) -> Result<(), KmsError> {
        let ks = self.read();
        let r = ks
            .record(tag)
            .ok_or_else(|| KeystoreError::NoSuchRecord(tag.to_string()))?;
        if r.state.allows_key_use() {
            Ok(())
        } else {
            Err(KmsError::KeyUnavailable {
                name: r.name.to_string(),
                state: r.state,
            })
        }
    }

    /// A key for a caller (the mount's `key`): only in a state that allows it, and only once
    /// its audit line is written.
    pub fn read_key(&self, tag: &KeyTag) -> Result<KeyMaterial, KmsError> {
        if let Err(e) = self.key_readable(tag) {
            self.audit_key(tag, Some(&e))?;
            return Err(e);
        }
        self.audit_key(tag, None)?;
        self.unwrap_key(tag)
    }

    /// The plaintext key whatever the state (export, verification); never for the mount.
    pub fn unwrap_key(&self, tag: &KeyTag) -> Result<KeyMaterial, KmsError> {
        let guard = self.read();
        let wrapped = guard
            .record(tag)
            .map(|r| &r.wrapped_key)
            .ok_or_else(|| KeystoreError::NoSuchRecord(tag.to_string()))?;
        Ok(guard.0.kpk.unwrap(&wrapped.0, tag.as_str())?)
    }

    // ---- quiesce -----------------------------------------------------------------------------

    /// Adds one hold (lapsing after `lease` if given). Returns once the three files are
    /// durable, consistent and read-only.
    pub fn quiesce(&self, lease: Option<Duration>) -> Result<(), KmsError> {
        if lease.is_some_and(|l| l.is_zero() || l > MAX_LEASE) {
            let e = KmsError::LeaseOutOfRange {
                max_secs: MAX_LEASE.as_secs(),
            };
            self.audit_keystore("quiesce", Err(&e), false)?;
            return Err(e);
        }
        self.audit_keystore("quiesce", Ok(()), true)?;
        // The writer's lock with nothing in flight: every change written finishes (its
        // fdatasync) before the freeze, and none starts until it is in place.
        let mut w = self.settled_writer();
        let store = &mut w.store;
        let mut inner = self.write();
        let inner = &mut *inner;
        if !inner.freeze.is_frozen() {
            if let Err(e) = store.freeze() {
                let _ = store.thaw();
                return Err(e.into());
            }
        }
        inner.freeze.add(lease, Instant::now(), Timestamp::now());
        self.leased.store(inner.freeze.leased(), Ordering::Release);
        log::info!(
            "quiesced ({} hold(s){})",
            inner.freeze.holds(),
            lease
                .map(|l| format!(", lease {} s", l.as_secs()))
                .unwrap_or_default()
        );
        Ok(())
    }

    /// Removes one hold, an unleased one first; with none left, changes resume.
    pub fn unquiesce(&self) -> Result<(), KmsError> {
        let mut w = self.settled_writer();
        let store = &mut w.store;
        let mut inner = self.write();
        let inner = &mut *inner;
        if let Err(e) = inner.freeze.release() {
            self.audit_keystore("unquiesce", Err(&e), false)?;
            return Err(e);
        }
        // Best effort: a freeze must be able to end whatever the audit log's state.
        self.audit_keystore("unquiesce", Ok(()), false)?;
        self.leased.store(inner.freeze.leased(), Ordering::Release);
        if !inner.freeze.is_frozen() {
            store.thaw()?;
            log::info!("unquiesced: changes resume");
        }
        Ok(())
    }

    /// Lets lapsed leases go; called by the timer.
    fn expire_leases(&self) {
        let mut w = self.settled_writer();
        let store = &mut w.store;
        let mut inner = self.write();
        let lapsed = inner.freeze.expire(Instant::now());
        self.leased.store(inner.freeze.leased(), Ordering::Release);
        if lapsed > 0 {
            let _ = self.audit_keystore("quiesce lease lapsed", Ok(()), false);
            log::error!(
                "{lapsed} quiesce lease(s) lapsed without unquiesce: did a backup job die? {} hold(s) remain",
                inner.freeze.holds()
            );
            if !inner.freeze.is_frozen() {
                if let Err(e) = store.thaw() {
                    log::error!("cannot restore write permission after the lease lapsed: {e}");
                }
            }
        }
    }

    pub fn is_quiesced(&self) -> bool {
        self.read().0.freeze.is_frozen()
    }

    pub fn quiesce_view(&self) -> QuiesceView {
        self.read().quiesce_view()
    }

    pub fn status(&self) -> Status {
        self.read().status()
    }
}

impl ReadGuard<'_> {
    /// Destructive moves waiting for a second administrator (`--two-person`).
    pub fn pending(&self) -> &[Pending] {
        self.0.two_person.pending()
    }

    /// The backup freeze as `.quiesce` shows it.
    pub fn quiesce_view(&self) -> QuiesceView {
        self.0.freeze.view()
    }

    /// What `.status` shows, under the same guard as the keystore it counts.
    pub fn status(&self) -> Status {
        let header = &self.0.on_disk.header;
        Status {
            version: env!("CARGO_PKG_VERSION"),
            format_version: self.0.on_disk.format,
            data_dir: self.0.data_dir.clone(),
            groups: self.0.ks.group_count(),
            records: self.0.ks.record_count(),
            hmk_id: header.hmk_id.to_string(),
            kpk_id: header.kpk_id.to_string(),
            quiesced: self.0.freeze.is_frozen(),
        }
    }
}

/// Wakes often enough that a lease lapses, or a rotation happens, within a fraction of a
/// second of its time; takes a reference to the service only when there is a lease or a
/// rotating group, and stops when the service is dropped.
fn spawn_timer(
    kms: Weak<Kms>,
    leased: Arc<AtomicUsize>,
    rotating: Arc<AtomicBool>,
    pending: Arc<AtomicUsize>,
) {
    let _ = std::thread::Builder::new()
        .name("kmsfs-timer".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(250));
            if kms.strong_count() == 0 {
                return;
            }
            let leases = leased.load(Ordering::Acquire) > 0;
            let rotation = rotating.load(Ordering::Acquire);
            let held = pending.load(Ordering::Acquire) > 0;
            if !leases && !rotation && !held {
                continue;
            }
            let Some(k) = kms.upgrade() else { return };
            if held {
                k.expire_pending();
            }
            if leases {
                k.expire_leases();
            }
            if rotation {
                k.run_due(Timestamp::now());
            }
        });
}

/// Reopens a keystore whose previous `Kms` was just dropped (its lock may take a moment).
#[cfg(test)]
fn tests_support_reopen(dir: &Path) -> Arc<Kms> {
    let data = dir.join("data");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Kms::open(&data) {
            Ok(k) => return k,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("reopen {}: {e}", data.display()),
        }
    }
}

/// For the service's unit tests: a new keystore in `DIR/data` holding group `pool` with one
/// active record `k`.
#[cfg(test)]
fn test_keystore() -> (tempfile::TempDir, Arc<Kms>, GroupTag, KeyTag) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    crate::store::init(&data, Default::default()).unwrap();
    let kms = Kms::open(&data).unwrap();
    let g = kms.create_group(Name::parse("pool").unwrap()).unwrap();
    let k = kms
        .create_record(&g, NewRecord::prelive(Name::parse("k").unwrap()))
        .unwrap();
    kms.set_state(&k, State::Active).unwrap();
    (dir, kms, g, k)
}

#[cfg(test)]
mod writer_lock_tests {
    use super::*;
    use std::sync::mpsc;

    /// While a change holds the writer's lock (as it does to check and write its frame), key
    /// reads, metadata and `.status` are served; the next change waits for its turn.
    #[test]
    fn readers_never_wait_for_the_writer() {
        let (_dir, kms, _g, k) = test_keystore();
        let writer = kms.writer();
        let (done, read) = mpsc::channel();
        let kms2 = kms.clone();
        let k2 = k.clone();
        std::thread::spawn(move || {
            let key = kms2.read_key(&k2).map(|k| k.len());
            let status = kms2.status();
            let _ = done.send((key.ok(), status.records));
        });
        let (key, records) = read
            .recv_timeout(Duration::from_secs(20))
            .expect("a reader waited for the writer's lock");
        assert_eq!((key, records), (Some(32), 1));
        let (changed, change) = mpsc::channel();
        let kms3 = kms.clone();
        std::thread::spawn(move || {
            let _ = changed.send(kms3.describe_record(&k, "later").is_ok());
        });
        assert!(
            change.recv_timeout(Duration::from_millis(300)).is_err(),
            "a change went ahead while another held the writer's lock"
        );
        drop(writer);
        assert!(change.recv_timeout(Duration::from_secs(20)).unwrap());
    }
}
