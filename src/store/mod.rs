//! The three backing files in the data directory, and how changes reach them durably.
//!
//! - `KMS_HMKF`, `KMS_KPKF`: the HMK and the KPK (see `crypto::keyfile`), written once.
//! - `KMS_DATA`: see `datafile`. Each change is appended as one sealed frame and fdatasync'd
//!   before the call that made it returns.

mod datafile;
mod durable;
mod error;
mod lock;

pub use datafile::{Header, DATA_FILE, FORMAT_VERSION};
pub use error::StoreError;
pub use lock::{DirLock, LOCK_FILE};

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::crypto::{
    decode_key_file, encode_key_file, Hmk, KdfParams, KeyFileKind, Kpk, Passphrase, SecretKey32,
};
use crate::keystore::{Change, Keystore, Timestamp};

pub const BACKUP_SET: [&str; 3] = [DATA_FILE, "KMS_HMKF", "KMS_KPKF"];
const FILE_MODE: u32 = 0o600;
const FROZEN_MODE: u32 = 0o400;
/// Compact once the log holds this many frames more than live objects: the rewrite costs
/// O(keystore), so spacing rewrites by O(keystore) changes keeps the cost per change constant.
const COMPACT_SLACK: u64 = 4096;

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
    dir: PathBuf,
    data: File,
    header: Header,
    /// The format of the file on disk (older files are read as they are).
    format: u16,
    digest: [u8; 32],
    len: u64,
    next_seq: u64,
    hmk: Hmk,
    frozen: bool,
    _lock: Option<DirLock>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("len", &self.len)
            .field("next_seq", &self.next_seq)
            .field("frozen", &self.frozen)
            .finish_non_exhaustive()
    }
}

fn file_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// The daemon refuses a directory others can write: they could swap the files under it.
pub fn check_directory(dir: &Path) -> Result<(), StoreError> {
    let meta = fs::metadata(dir).map_err(StoreError::io(format!("{}", dir.display())))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(StoreError::UnsafeDirectory {
            dir: dir.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Creates an empty keystore. Refuses to touch a directory that holds any of the three files.
pub fn init(dir: &Path, opts: InitOptions) -> Result<InitReport, StoreError> {
    if !dir.exists() {
        fs::create_dir_all(dir)
            .map_err(StoreError::io(format!("cannot create {}", dir.display())))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(StoreError::io(format!("cannot chmod {}", dir.display())))?;
    }
    check_directory(dir)?;
    for file in BACKUP_SET {
        if dir.join(file).symlink_metadata().is_ok() {
            return Err(StoreError::AlreadyExists {
                dir: dir.to_path_buf(),
                file,
            });
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
    };
    write_key_file(dir, KeyFileKind::Hmk, hmk.secret())?;
    write_key_file(dir, KeyFileKind::Kpk, kpk.secret())?;
    // KMS_DATA last: its presence is what makes the directory a keystore.
    let bytes = datafile::encode_file(&hmk, &header, &Keystore::new());
    durable::write_atomically(dir, DATA_FILE, &bytes, FILE_MODE)
        .map_err(StoreError::io(format!("cannot write {DATA_FILE}")))?;
    Ok(InitReport {
        hmk_id: header.hmk_id.to_string(),
        kpk_id: header.kpk_id.to_string(),
        hmk_derived: hmk_kdf.is_some(),
        kpk_derived: kpk_kdf.is_some(),
    })
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

pub fn write_key_file(dir: &Path, kind: KeyFileKind, key: &SecretKey32) -> Result<(), StoreError> {
    let bytes = zeroize::Zeroizing::new(encode_key_file(kind, key));
    durable::write_atomically(dir, kind.file_name(), &bytes, FILE_MODE)
        .map_err(StoreError::io(format!("cannot write {}", kind.file_name())))
}

fn read_key_file(dir: &Path, kind: KeyFileKind) -> Result<SecretKey32, StoreError> {
    let file = kind.file_name();
    let bytes = match fs::read(dir.join(file)) {
        Ok(b) => zeroize::Zeroizing::new(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::MissingKeyFile {
                file,
                dir: dir.to_path_buf(),
            })
        }
        Err(e) => return Err(StoreError::io(format!("cannot read {file}"))(e)),
    };
    decode_key_file(kind, &bytes).map_err(|e| StoreError::Corrupt {
        file,
        reason: e.to_string(),
    })
}

/// Reads the plain header of KMS_DATA (no key needed).
pub fn read_header(dir: &Path) -> Result<Header, StoreError> {
    let bytes = read_data_file(dir)?;
    datafile::decode_header(&bytes)
        .map(|p| p.header)
        .map_err(|reason| StoreError::Corrupt {
            file: DATA_FILE,
            reason,
        })
}

/// Reads KMS_HMKF and checks that it is the HMK of KMS_DATA's header; reads only, takes no
/// lock (for `kmsfs audit verify`, beside a live mount or on a backup).
pub fn read_hmk(dir: &Path) -> Result<Hmk, StoreError> {
    let header = read_header(dir)?;
    let hmk = Hmk::from_secret(read_key_file(dir, KeyFileKind::Hmk)?);
    check_key_id("KMS_HMKF", &hmk.id(), &header.hmk_id)?;
    Ok(hmk)
}

fn read_data_file(dir: &Path) -> Result<Vec<u8>, StoreError> {
    match fs::read(dir.join(DATA_FILE)) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(StoreError::NoKeystore(dir.to_path_buf()))
        }
        Err(e) => Err(StoreError::io(format!("cannot read {DATA_FILE}"))(e)),
    }
}

impl Store {
    /// Loads and authenticates all three files. With `ReadWrite` it also takes the directory
    /// lock, discards the remains of an interrupted append, and gives the files back their
    /// 0600 mode (a restored frozen copy, or a daemon that stopped while frozen, just works).
    pub fn open(
        dir: &Path,
        access: Access,
    ) -> Result<(Store, Keystore, Kpk, OpenReport), StoreError> {
        if access == Access::ReadWrite {
            check_directory(dir)?;
        }
        let lock = match access {
            Access::ReadWrite => Some(DirLock::acquire(dir)?),
            Access::ReadOnly => None,
        };
        let bytes = read_data_file(dir)?;
        let parsed = datafile::decode_header(&bytes).map_err(|reason| StoreError::Corrupt {
            file: DATA_FILE,
            reason,
        })?;
        let hmk = Hmk::from_secret(read_key_file(dir, KeyFileKind::Hmk)?);
        let kpk = Kpk::from_secret(read_key_file(dir, KeyFileKind::Kpk)?);
        check_key_id("KMS_HMKF", &hmk.id(), &parsed.header.hmk_id)?;
        check_key_id("KMS_KPKF", &kpk.id(), &parsed.header.kpk_id)?;
        let loaded = datafile::decode_file(&hmk, &bytes).map_err(|reason| StoreError::Corrupt {
            file: DATA_FILE,
            reason,
        })?;
        let path = dir.join(DATA_FILE);
        let data = match access {
            Access::ReadWrite => {
                for f in BACKUP_SET {
                    durable::set_mode(&dir.join(f), FILE_MODE)
                        .map_err(StoreError::io(format!("cannot chmod {f}")))?;
                }
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(StoreError::io(format!("cannot open {DATA_FILE}")))?;
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
            Access::ReadOnly => {
                File::open(&path).map_err(StoreError::io(format!("cannot open {DATA_FILE}")))?
            }
        };
        let report = OpenReport {
            torn_tail: loaded.torn_tail,
            frames: loaded.frames,
        };
        let store = Store {
            dir: dir.to_path_buf(),
            data,
            header: loaded.parsed.header,
            format: loaded.parsed.format_version,
            digest: loaded.parsed.digest,
            len: loaded.valid_len,
            next_seq: loaded.frames,
            hmk,
            frozen: false,
            _lock: lock,
        };
        Ok((store, loaded.keystore, kpk, report))
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The key of this keystore's audit log, derived from the HMK.
    pub fn audit_key(&self) -> crate::audit::AuditKey {
        crate::audit::AuditKey::from_hmk(&self.hmk)
    }

    /// The format of KMS_DATA as it is on disk.
    pub fn format(&self) -> u16 {
        self.format
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// Makes one accepted change durable. On failure the file is cut back to its previous
    /// length, so the disk never holds a change that memory refused or vice versa.
    pub fn append(&mut self, change: &Change) -> Result<(), StoreError> {
        assert!(!self.frozen, "the service refuses changes while frozen");
        let frame = datafile::encode_change(&self.hmk, &self.digest, self.next_seq, change);
        let result = self
            .data
            .seek(SeekFrom::Start(self.len))
            .and_then(|_| self.data.write_all(&frame))
            .and_then(|_| self.data.sync_data());
        if let Err(e) = result {
            let _ = self
                .data
                .set_len(self.len)
                .and_then(|_| self.data.sync_data());
            return Err(StoreError::io(format!("cannot append to {DATA_FILE}"))(e));
        }
        self.len += frame.len() as u64;
        self.next_seq += 1;
        Ok(())
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
        let bytes = datafile::encode_file(&self.hmk, &header, ks);
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
        for f in BACKUP_SET {
            durable::set_mode(&self.dir.join(f), FROZEN_MODE)
                .map_err(StoreError::io(format!("cannot chmod {f}")))?;
        }
        durable::sync_dir(&self.dir).map_err(StoreError::io("cannot sync the data directory"))?;
        self.frozen = true;
        Ok(())
    }

    /// Ends the freeze. Appends are allowed again even if a file's mode cannot be restored:
    /// the daemon writes through its open descriptor, and the error is still reported.
    pub fn thaw(&mut self) -> Result<(), StoreError> {
        self.frozen = false;
        for f in BACKUP_SET {
            durable::set_mode(&self.dir.join(f), FILE_MODE)
                .map_err(StoreError::io(format!("cannot chmod {f}")))?;
        }
        Ok(())
    }
}

fn check_key_id(
    file: &'static str,
    got: &crate::crypto::KeyId,
    want: &crate::crypto::KeyId,
) -> Result<(), StoreError> {
    if got != want {
        return Err(StoreError::KeyMismatch {
            file,
            reason: format!("its key id is {got}, KMS_DATA expects {want}"),
        });
    }
    Ok(())
}
