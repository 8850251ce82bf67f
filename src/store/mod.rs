//! The three backing files in the data directory, and how changes reach them durably.
//!
//! - `KMS_HMKF`, `KMS_KPKF`: the HMK and the KPK (see `crypto::keyfile`), written once.
//! - `KMS_DATA`: see `datafile`. Each change is appended as one sealed frame and fdatasync'd
//!   before the call that made it returns.
//!
//! Every file in the data directory is reached through `dir::DataDir`: never through a
//! symbolic link, only if it is a regular file, and its size checked before it is read (key
//! files are exactly `KEY_FILE_LEN` bytes, KMS_DATA at most `MAX_DATA_LEN`). Whoever writes
//! (the daemon, `init`, `regenerate`, `import`) also refuses a directory or a backing file
//! that another user owns; reading a copy (`verify`, `export`) does not ask who owns it.

mod change_key;
pub(crate) mod datafile;
mod dir;
mod durable;
mod error;
mod lock;
mod masterkeys;
mod seal;
mod tpm_seal;
mod unseal;

pub use change_key::{KeyChange, NewMasterKey};
pub use datafile::{Header, DATA_FILE, FORMAT_VERSION};
pub use error::StoreError;
pub use lock::{DirLock, LOCK_FILE};
pub use masterkeys::{
    keeping, retired_files, retired_name, sealed_blob, Keeping, TokenAccess, Unlock,
};
pub use seal::{keep_key, KeepAs};
pub use unseal::{describe as describe_sealed, DEFAULT_TCTI};

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::crypto::{encode_key_file, Hmk, KdfParams, KeyFileKind, Kpk, Passphrase, SecretKey32};
use crate::keystore::{Change, Keystore, Timestamp};
use dir::{DataDir, How};

pub const BACKUP_SET: [&str; 3] = [DATA_FILE, "KMS_HMKF", "KMS_KPKF"];
const FILE_MODE: u32 = 0o600;
const FROZEN_MODE: u32 = 0o400;
/// Compact once the log holds this many frames more than live objects: the rewrite costs
/// O(keystore), so spacing rewrites by O(keystore) changes keeps the cost per change constant.
const COMPACT_SLACK: u64 = 4096;
/// The largest KMS_DATA that is read (4 GiB): far above any real keystore (a snapshot of
/// 100,000 records is about 50 MB, and compaction keeps the log within a few thousand frames
/// of it), so a larger file is damage or not a keystore at all, refused before it is read.
pub const MAX_DATA_LEN: u64 = 4 << 30;

#[derive(Debug, Default)]
pub struct InitOptions {
    pub hmk_passphrase: Option<Passphrase>,
    pub kpk_passphrase: Option<Passphrase>,
}

/// What `init` made, for the command line to report.
#[derive(Debug)]
pub struct InitReport {
    pub hmk_id: String,
    pub kpk_id: String,
    pub hmk_derived: bool,
    pub kpk_derived: bool,
}

/// How a keystore is opened: by the daemon (exclusive, writable) or to inspect a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
}

/// What `open` found besides the keystore itself.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Bytes of an append that a crash interrupted, discarded (ReadWrite) or ignored (ReadOnly).
    pub torn_tail: u64,
    pub frames: u64,
}

pub struct Store {
    dir: DataDir,
    data: File,
    header: Header,
    /// The format of the file on disk (older files are read as they are).
    format: u16,
    digest: [u8; 32],
    len: u64,
    next_seq: u64,
    /// See `take_audit_tail`.
    audit_tail: Vec<String>,
    /// The audit key the snapshot carries (since the HMK was first changed), carried on by
    /// every rewrite.
    carried_audit_key: Option<crate::audit::AuditKey>,
    /// How the HMK and the KPK are kept.
    keeping: [Keeping; 2],
    hmk: Hmk,
    frozen: bool,
    _lock: Option<DirLock>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir.path())
            .field("len", &self.len)
            .field("next_seq", &self.next_seq)
            .field("frozen", &self.frozen)
            .finish_non_exhaustive()
    }
}

fn file_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// The daemon refuses a directory that another user owns or that others can write: they
/// could swap the files under it.
pub fn check_directory(dir: &Path) -> Result<(), StoreError> {
    open_dir(dir)?.check_private()
}

/// Opens the data directory; a missing one holds no keystore.
fn open_dir(dir: &Path) -> Result<DataDir, StoreError> {
    DataDir::open(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => StoreError::NoKeystore(dir.to_path_buf()),
        _ => StoreError::io(format!("cannot open the data directory {}", dir.display()))(e),
    })
}

/// Creates an empty keystore. Refuses to touch a directory that holds any of the three files.
pub fn init(dir: &Path, opts: InitOptions) -> Result<InitReport, StoreError> {
    let created = !dir.exists();
    if created {
        // The directories made here, deepest first: each one's name lives in its parent.
        let made: Vec<&Path> = dir
            .ancestors()
            .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
            .collect();
        fs::create_dir_all(dir)
            .map_err(StoreError::io(format!("cannot create {}", dir.display())))?;
        sync_parents(&made)?;
    }
    let d = open_dir(dir)?;
    if created {
        d.set_mode(0o700)
            .map_err(StoreError::io(format!("cannot chmod {}", dir.display())))?;
    }
    d.check_private()?;
    for file in BACKUP_SET {
        let st = d
            .metadata(file)
            .map_err(StoreError::io(format!("cannot look for {file}")))?;
        match st {
            None => {}
            Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                return Err(StoreError::Symlink {
                    dir: dir.to_path_buf(),
                    file: file.to_string(),
                })
            }
            Some(_) => {
                return Err(StoreError::AlreadyExists {
                    dir: dir.to_path_buf(),
                    file,
                })
            }
        }
    }
    let (hmk, hmk_kdf) = make_key(opts.hmk_passphrase.as_ref(), Hmk::random, Hmk::derive)?;
    let (kpk, kpk_kdf) = make_key(opts.kpk_passphrase.as_ref(), Kpk::random, Kpk::derive)?;
    let header = Header {
        file_id: file_id(),
        hmk_id: hmk.id(),
        kpk_id: kpk.id(),
        hmk_kdf: hmk_kdf.clone(),
        kpk_kdf: kpk_kdf.clone(),
        created: Timestamp::now(),
        hmk_changed: None,
        kpk_changed: None,
    };
    let hmk_bytes = zeroize::Zeroizing::new(encode_key_file(KeyFileKind::Hmk, hmk.secret()));
    let kpk_bytes = zeroize::Zeroizing::new(encode_key_file(KeyFileKind::Kpk, kpk.secret()));
    let data_bytes = datafile::encode_file(&hmk, &header, &Keystore::new(), None);
    // KMS_DATA last: its presence is what makes the directory a keystore.
    write_all_or_nothing(
        &d,
        &[
            (KeyFileKind::Hmk.file_name(), &hmk_bytes[..]),
            (KeyFileKind::Kpk.file_name(), &kpk_bytes[..]),
            (DATA_FILE, &data_bytes[..]),
        ],
    )?;
    Ok(InitReport {
        hmk_id: header.hmk_id.to_string(),
        kpk_id: header.kpk_id.to_string(),
        hmk_derived: hmk_kdf.is_some(),
        kpk_derived: kpk_kdf.is_some(),
    })
}

/// Makes the names of directories just created durable: the fsyncs of the files inside and
/// of the directory itself do not cover its entry in its parent, which a power cut could
/// otherwise take, keystore and all, after `init` reported success.
fn sync_parents(made: &[&Path]) -> Result<(), StoreError> {
    for d in made {
        let parent = match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(parent)
            .and_then(|f| f.sync_all())
            .map_err(StoreError::io(format!("cannot sync {}", parent.display())))?;
    }
    Ok(())
}

/// Creates the files `files` (none of which exists) all or none: each is written under its
/// temporary name and fsynced, and only once all are durable are they renamed into place, in
/// order, and the directory fsynced. On any failure whatever was written or renamed is
/// removed, so a full disk leaves the directory as it was (`init` can simply be run again).
fn write_all_or_nothing(dir: &DataDir, files: &[(&'static str, &[u8])]) -> Result<(), StoreError> {
    let mut temps: Vec<String> = Vec::new();
    let mut placed: Vec<&'static str> = Vec::new();
    let mut result = Ok(());
    for (name, bytes) in files {
        match durable::write_temp(dir, name, bytes, FILE_MODE) {
            Ok(tmp) => temps.push(tmp),
            Err(e) => {
                result = Err(StoreError::io(format!("cannot write {name}"))(e));
                break;
            }
        }
    }
    if result.is_ok() {
        for ((name, _), tmp) in files.iter().zip(&temps) {
            if let Err(e) = dir.rename(tmp, name) {
                result = Err(StoreError::io(format!("cannot rename {tmp} to {name}"))(e));
                break;
            }
            placed.push(name);
        }
    }
    if result.is_ok() {
        result = dir
            .sync()
            .map_err(StoreError::io("cannot sync the data directory"));
    }
    if result.is_err() {
        // KMS_DATA first: without it the directory holds no keystore, whatever else remains.
        for name in placed.iter().rev() {
            let _ = dir.remove(name);
        }
        for tmp in &temps {
            let _ = dir.remove(tmp);
        }
        let _ = dir.sync();
    }
    result
}

type Derive<K> = fn(&Passphrase, &KdfParams) -> Result<K, crate::crypto::CryptoError>;

fn make_key<K>(
    pass: Option<&Passphrase>,
    random: fn() -> K,
    derive: Derive<K>,
) -> Result<(K, Option<KdfParams>), StoreError> {
    match pass {
        None => Ok((random(), None)),
        Some(p) => {
            let params = KdfParams::with_fresh_salt();
            let key = derive(p, &params).map_err(|e| StoreError::Corrupt {
                file: "passphrase",
                reason: e.to_string(),
            })?;
            Ok((key, Some(params)))
        }
    }
}

/// Writes a key file (`kmsfs regenerate`) into a directory of the caller's own.
pub fn write_key_file(dir: &Path, kind: KeyFileKind, key: &SecretKey32) -> Result<(), StoreError> {
    let d = open_dir(dir)?;
    d.check_private()?;
    write_key_file_in(&d, kind, key)
}

fn write_key_file_in(
    dir: &DataDir,
    kind: KeyFileKind,
    key: &SecretKey32,
) -> Result<(), StoreError> {
    let bytes = zeroize::Zeroizing::new(encode_key_file(kind, key));
    durable::write_atomically(dir, kind.file_name(), &bytes, FILE_MODE)
        .map_err(StoreError::io(format!("cannot write {}", kind.file_name())))
}

/// Opens a backing file that exists; with `ReadWrite` access it must be the caller's own.
fn open_backing(
    dir: &DataDir,
    file: &'static str,
    how: How,
    access: Access,
) -> Result<Option<File>, StoreError> {
    let Some(f) = dir.open_file(file, how)? else {
        return Ok(None);
    };
    if access == Access::ReadWrite {
        dir.check_owned(file, &f)?;
    }
    Ok(Some(f))
}

/// The size of an open file, from its descriptor.
fn size(f: &File, file: &'static str) -> Result<u64, StoreError> {
    Ok(f.metadata()
        .map_err(StoreError::io(format!("cannot stat {file}")))?
        .len())
}

/// Opens and reads KMS_DATA, at most `MAX_DATA_LEN` bytes of it: its size is checked first,
/// and a file that grows while it is read (a daemon appending beside `verify`) is never read
/// past the bound.
fn read_data_file(dir: &DataDir, access: Access) -> Result<(File, Vec<u8>), StoreError> {
    let f = open_backing(dir, DATA_FILE, How::Read, access)?
        .ok_or_else(|| StoreError::NoKeystore(dir.path().to_path_buf()))?;
    let too_large = |len: u64| StoreError::Corrupt {
        file: DATA_FILE,
        reason: too_large_reason(len),
    };
    let len = size(&f, DATA_FILE)?;
    if len > MAX_DATA_LEN {
        return Err(too_large(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    (&f).take(MAX_DATA_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(StoreError::io(format!("cannot read {DATA_FILE}")))?;
    if bytes.len() as u64 > MAX_DATA_LEN {
        return Err(too_large(bytes.len() as u64));
    }
    Ok((f, bytes))
}

/// Why a KMS_DATA of `len` bytes is not read.
fn too_large_reason(len: u64) -> String {
    let max = MAX_DATA_LEN >> 30;
    format!("{len} bytes, more than the {max} GiB a kmsfs data file may hold: not a keystore, or damaged")
}

/// The format version of KMS_DATA, from its plain header (no key needed).
pub fn read_format(dir: &Path) -> Result<u16, StoreError> {
    let (_, bytes) = read_data_file(&open_dir(dir)?, Access::ReadOnly)?;
    datafile::decode_header(&bytes)
        .map(|p| p.format_version)
        .map_err(|reason| StoreError::Corrupt {
            file: DATA_FILE,
            reason,
        })
}

/// Reads the plain header of KMS_DATA (no key needed).
pub fn read_header(dir: &Path) -> Result<Header, StoreError> {
    let (_, bytes) = read_data_file(&open_dir(dir)?, Access::ReadOnly)?;
    datafile::decode_header(&bytes)
        .map(|p| p.header)
        .map_err(|reason| StoreError::Corrupt {
            file: DATA_FILE,
            reason,
        })
}

/// The key of the keystore's audit log: the one its snapshot carries since an HMK change, else
/// derived from the HMK. Reads only, takes no lock (for `kmsfs audit verify`, beside a live
/// mount or on a backup).
pub fn read_audit_key(dir: &Path, unlock: &Unlock) -> Result<crate::audit::AuditKey, StoreError> {
    let (store, _, _, _) = Store::open_with(dir, Access::ReadOnly, unlock)?;
    Ok(store.audit_key())
}

impl Store {
    /// Loads and authenticates all three files. With `ReadWrite` it also takes the directory
    /// lock, discards the remains of an interrupted append, and gives the files back their
    /// 0600 mode (a restored frozen copy, or a daemon that stopped while frozen, just works).
    pub fn open(
        dir: &Path,
        access: Access,
    ) -> Result<(Store, Keystore, Kpk, OpenReport), StoreError> {
        Store::open_with(dir, access, &Unlock::default())
    }

    /// `open`, with what keys kept off the disk need (`masterkeys`).
    pub fn open_with(
        dir: &Path,
        access: Access,
        unlock: &Unlock,
    ) -> Result<(Store, Keystore, Kpk, OpenReport), StoreError> {
        let d = open_dir(dir)?;
        if access == Access::ReadWrite {
            d.check_private()?;
        }
        let lock = match access {
            Access::ReadWrite => Some(DirLock::acquire_in(&d)?),
            Access::ReadOnly => None,
        };
        if access == Access::ReadWrite {
            remove_leftover_temps(&d)?;
        }
        // Read only, even for the daemon: a restored frozen copy is mode 0400, and only gets
        // its 0600 back (through this descriptor) once everything has been checked.
        let (read, bytes) = read_data_file(&d, access)?;
        let parsed = datafile::decode_header(&bytes).map_err(|reason| StoreError::Corrupt {
            file: DATA_FILE,
            reason,
        })?;
        let hmk = masterkeys::open_key(&d, KeyFileKind::Hmk, &parsed.header, access, unlock)?;
        let kpk = masterkeys::open_key(&d, KeyFileKind::Kpk, &parsed.header, access, unlock)?;
        let keeping = [hmk.keeping, kpk.keeping];
        let (hmk_file, kpk_file) = (hmk.file, kpk.file);
        let (hmk, kpk) = (Hmk::from_secret(hmk.secret), Kpk::from_secret(kpk.secret));
        let loaded = datafile::decode_file(&hmk, &bytes).map_err(|reason| StoreError::Corrupt {
            file: DATA_FILE,
            reason,
        })?;
        let data = match access {
            Access::ReadWrite => {
                for (f, file) in [
                    (Some(&read), DATA_FILE),
                    (hmk_file.as_ref(), "KMS_HMKF"),
                    (kpk_file.as_ref(), "KMS_KPKF"),
                ] {
                    if let Some(f) = f {
                        durable::set_mode(f, FILE_MODE)
                            .map_err(StoreError::io(format!("cannot chmod {file}")))?;
                    }
                }
                let f = d
                    .open_file(DATA_FILE, How::ReadWrite)?
                    .ok_or_else(|| StoreError::NoKeystore(dir.to_path_buf()))?;
                same_file(&read, &f)?;
                if loaded.torn_tail > 0 {
                    log::warn!(
                        "{DATA_FILE}: discarding {} bytes of an append interrupted by a crash",
                        loaded.torn_tail
                    );
                    f.set_len(loaded.valid_len)
                        .and_then(|_| f.sync_all())
                        .map_err(StoreError::io(format!("cannot truncate {DATA_FILE}")))?;
                }
                f
            }
            Access::ReadOnly => read,
        };
        let report = OpenReport {
            torn_tail: loaded.torn_tail,
            frames: loaded.frames,
        };
        let store = Store {
            dir: d,
            data,
            header: loaded.parsed.header,
            format: loaded.parsed.format_version,
            digest: loaded.parsed.digest,
            len: loaded.valid_len,
            next_seq: loaded.frames,
            audit_tail: loaded.audit_tail,
            carried_audit_key: loaded.audit_key,
            keeping,
            hmk,
            frozen: false,
            _lock: lock,
        };
        Ok((store, loaded.keystore, kpk, report))
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The latest audit lines KMS_DATA's frames carry, as loaded (once: then empty), for
    /// `AuditLog::restore` to put back what a crash took from the log's end.
    pub fn take_audit_tail(&mut self) -> Vec<String> {
        std::mem::take(&mut self.audit_tail)
    }

    /// The key of this keystore's audit log, derived from the HMK.
    pub fn audit_key(&self) -> crate::audit::AuditKey {
        match &self.carried_audit_key {
            Some(k) => crate::audit::AuditKey::from_parts(k.secret().clone(), k.context().into()),
            None => crate::audit::AuditKey::from_hmk(&self.hmk),
        }
    }

    /// How the HMK and the KPK are kept.
    pub fn keeping(&self) -> (Keeping, Keeping) {
        (self.keeping[0], self.keeping[1])
    }

    /// The format of KMS_DATA as it is on disk.
    pub fn format(&self) -> u16 {
        self.format
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// Makes one accepted change durable. On failure the file is cut back to its previous
    /// length, so the disk never holds a change that memory refused or vice versa.
    ///
    /// `audit`: the audit lines not yet durable in the audit log, carried in the same frame so
    /// that its one fdatasync makes them durable with the change (see `take_audit_tail`).
    pub fn append(&mut self, change: &Change, audit: &[String]) -> Result<(), StoreError> {
        let (len, seq) = (self.len, self.next_seq);
        self.write_change(change, audit)?;
        if let Err(e) = self.data.sync_data() {
            self.discard_after(len, seq);
            return Err(StoreError::io(format!("cannot append to {DATA_FILE}"))(e));
        }
        Ok(())
    }

    /// Writes one accepted change's frame after the others, without syncing it: an
    /// fdatasync of `sync_handle` (the service's group commit) makes it durable, with every
    /// frame written before it. Returns the file's length after the frame. On failure the
    /// file is cut back to where the frame began.
    pub fn write_change(&mut self, change: &Change, audit: &[String]) -> Result<u64, StoreError> {
        assert!(!self.frozen, "the service refuses changes while frozen");
        let frame = datafile::encode_change(&self.hmk, &self.digest, self.next_seq, change, audit);
        let result = self
            .data
            .seek(SeekFrom::Start(self.len))
            .and_then(|_| self.data.write_all(&frame));
        if let Err(e) = result {
            let _ = self.data.set_len(self.len);
            return Err(StoreError::io(format!("cannot append to {DATA_FILE}"))(e));
        }
        self.len += frame.len() as u64;
        self.next_seq += 1;
        Ok(self.len)
    }

    /// Where the next frame goes: the file's length and the frame's sequence number.
    pub fn end(&self) -> (u64, u64) {
        (self.len, self.next_seq)
    }

    /// A descriptor of KMS_DATA for an fdatasync made without the writer's lock (frames may
    /// be written after the sync began: they are not covered).
    pub fn sync_handle(&self) -> std::io::Result<File> {
        self.data.try_clone()
    }

    /// After a failed fdatasync: the frames from `len` on (sequence `seq` on) are in doubt,
    /// so they go, and the file is cut back to what was durable.
    pub fn discard_after(&mut self, len: u64, seq: u64) {
        let cut = self.data.set_len(len).and_then(|_| self.data.sync_data());
        if let Err(e) = cut {
            log::error!("cannot cut {DATA_FILE} back to {len} bytes after a failed sync: {e}");
        }
        self.len = len;
        self.next_seq = seq;
    }

    pub fn wants_compaction(&self, ks: &Keystore) -> bool {
        let live = (ks.group_count() + ks.record_count()) as u64;
        self.next_seq > live + COMPACT_SLACK
    }

    /// Rewrites KMS_DATA as a single snapshot of `ks` (atomically: old file or new, never half).
    pub fn compact(&mut self, ks: &Keystore) -> Result<(), StoreError> {
        assert!(!self.frozen, "no compaction while frozen");
        let mut header = self.header.clone();
        header.file_id = file_id();
        let bytes = datafile::encode_file(&self.hmk, &header, ks, self.carried_audit_key.as_ref());
        let (data, dir_synced) = durable::replace_file(&self.dir, DATA_FILE, &bytes, FILE_MODE)
            .map_err(StoreError::io(format!("cannot rewrite {DATA_FILE}")))?;
        // From the rename on, appends must go to the new file, whatever happens next.
        let parsed = datafile::decode_header(&bytes).expect("just encoded");
        self.data = data;
        self.digest = parsed.digest;
        self.format = parsed.format_version;
        self.header = header;
        self.len = bytes.len() as u64;
        self.next_seq = 1;
        dir_synced.map_err(StoreError::io(
            "cannot sync the data directory after compaction",
        ))
    }

    /// The backup freeze: everything is already durable (each append was synced); removing
    /// write permission makes the backup set visibly read-only to copying tools.
    pub fn freeze(&mut self) -> Result<(), StoreError> {
        self.data
            .sync_all()
            .map_err(StoreError::io(format!("cannot sync {DATA_FILE}")))?;
        self.set_modes(FROZEN_MODE)?;
        self.dir
            .sync()
            .map_err(StoreError::io("cannot sync the data directory"))?;
        self.frozen = true;
        Ok(())
    }

    /// Sets the mode of the three files: KMS_DATA through the descriptor appends go to, the
    /// key files opened afresh (never through a link) so the files on disk are the ones set.
    fn set_modes(&self, mode: u32) -> Result<(), StoreError> {
        durable::set_mode(&self.data, mode)
            .map_err(StoreError::io(format!("cannot chmod {DATA_FILE}")))?;
        for (file, keeping) in ["KMS_HMKF", "KMS_KPKF"].into_iter().zip(self.keeping) {
            let f = self.dir.open_file(file, How::Read)?;
            let f = match (f, keeping) {
                (Some(f), _) => f,
                // Kept off the disk: there is no file to freeze.
                (None, Keeping::Passphrase) => continue,
                (None, _) => {
                    return Err(StoreError::MissingKeyFile {
                        file,
                        dir: self.dir.path().to_path_buf(),
                    })
                }
            };
            durable::set_mode(&f, mode).map_err(StoreError::io(format!("cannot chmod {file}")))?;
        }
        Ok(())
    }

    /// Ends the freeze. Appends are allowed again even if a file's mode cannot be restored:
    /// the daemon writes through its open descriptor, and the error is still reported.
    pub fn thaw(&mut self) -> Result<(), StoreError> {
        self.frozen = false;
        self.set_modes(FILE_MODE)
    }
}

/// Temporary files (`.KMS_DATA.tmp`, `.KMS_HMKF.next.ID.tmp`, ...) that a crash left before
/// they were renamed into place: never part of the keystore; removed under the lock.
fn remove_leftover_temps(d: &DataDir) -> Result<(), StoreError> {
    let mut removed = false;
    for name in d.names_with_prefix(".KMS_")? {
        if name.ends_with(".tmp") {
            log::info!("removing {name}, left by an interrupted write");
            d.remove(&name)
                .map_err(StoreError::io(format!("cannot remove {name}")))?;
            removed = true;
        }
    }
    if removed {
        d.sync()
            .map_err(StoreError::io("cannot sync the data directory"))?;
    }
    Ok(())
}

/// The file opened for writing must be the one that was read and checked.
fn same_file(read: &File, write: &File) -> Result<(), StoreError> {
    let (a, b) = (read.metadata(), write.metadata());
    match (a, b) {
        (Ok(a), Ok(b)) if a.dev() == b.dev() && a.ino() == b.ino() => Ok(()),
        (Err(e), _) | (_, Err(e)) => Err(StoreError::io(format!("cannot stat {DATA_FILE}"))(e)),
        _ => Err(StoreError::Corrupt {
            file: DATA_FILE,
            reason: "the file was replaced while it was being opened; try again".into(),
        }),
    }
}
