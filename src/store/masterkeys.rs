//! Where the HMK and the KPK come from when a keystore is opened, and how each is kept:
//!
//! - a plain key file (`KMS_HMKF`, `KMS_KPKF`: the key itself, `crypto::keyfile`);
//! - no key file, the header saying the key is derived from a passphrase: the passphrase is
//!   asked for at every start (`Unlock`), never written anywhere;
//! - a sealed key file: the key sealed to a TPM 2.0 or wrapped by a PKCS#11 token's
//!   non-extractable key (`crate::sealing`), useless without that TPM or token.
//!
//! Whatever gives the key, its id must be the one KMS_DATA's header names. A key change
//! (`change_key`) leaves, until the next open, a `KMS_HMKF.next.<ID>`: it is finished or
//! undone here, by the header alone (see `settle_pending`).

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use super::datafile::Header;
use super::dir::{DataDir, How};
use super::{Access, StoreError};
use crate::crypto::{
    decode_any_key_file, KeyFileBody, KeyFileKind, KeyId, Passphrase, Sealer, SecretKey32,
    KEY_FILE_LEN, MAX_KEY_FILE_LEN,
};

/// What opening needs besides the files: passphrases for keys kept off the disk, and how to
/// reach a TPM or a token. The default is enough for plain key files.
#[derive(Debug, Default)]
pub struct Unlock {
    pub hmk_passphrase: Option<Passphrase>,
    pub kpk_passphrase: Option<Passphrase>,
    /// The TPM (a TCTI: `device:/dev/tpmrm0` when None).
    pub tpm: Option<String>,
    /// The PKCS#11 module and the token's user PIN, for keys a token wraps.
    pub pkcs11: Option<TokenAccess>,
}

#[derive(Debug)]
pub struct TokenAccess {
    pub module: PathBuf,
    pub pin: crate::sealing::pkcs11::Pin,
}

impl Unlock {
    fn passphrase(&self, kind: KeyFileKind) -> Option<&Passphrase> {
        match kind {
            KeyFileKind::Hmk => self.hmk_passphrase.as_ref(),
            KeyFileKind::Kpk => self.kpk_passphrase.as_ref(),
        }
    }

    pub fn tcti(&self) -> &str {
        self.tpm
            .as_deref()
            .unwrap_or(crate::sealing::tpm::DEFAULT_TCTI)
    }
}

/// How a master key is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keeping {
    /// In its plain key file.
    File,
    /// Nowhere: derived from a passphrase given at every start.
    Passphrase,
    /// In a key file sealed by a TPM or a token.
    Sealed(Sealer),
}

impl Keeping {
    pub fn describe(self) -> &'static str {
        match self {
            Keeping::File => "key file",
            Keeping::Passphrase => "passphrase at start (no key file)",
            Keeping::Sealed(Sealer::Tpm) => "sealed to the TPM",
            Keeping::Sealed(Sealer::Pkcs11) => "wrapped by a PKCS#11 token",
        }
    }

    /// For `.status` and `kmsfs info --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Keeping::File => "file",
            Keeping::Passphrase => "passphrase",
            Keeping::Sealed(Sealer::Tpm) => "tpm",
            Keeping::Sealed(Sealer::Pkcs11) => "pkcs11",
        }
    }
}

/// A master key as opened: the key, how it is kept, and its key file (None when it has none).
pub(super) struct Opened {
    pub secret: SecretKey32,
    pub keeping: Keeping,
    pub file: Option<File>,
}

pub(super) fn header_id(header: &Header, kind: KeyFileKind) -> &KeyId {
    match kind {
        KeyFileKind::Hmk => &header.hmk_id,
        KeyFileKind::Kpk => &header.kpk_id,
    }
}

fn header_kdf(header: &Header, kind: KeyFileKind) -> Option<&crate::crypto::KdfParams> {
    match kind {
        KeyFileKind::Hmk => header.hmk_kdf.as_ref(),
        KeyFileKind::Kpk => header.kpk_kdf.as_ref(),
    }
}

pub fn key_id(kind: KeyFileKind, secret: &SecretKey32) -> KeyId {
    match kind {
        KeyFileKind::Hmk => KeyId::of_hmk(secret),
        KeyFileKind::Kpk => KeyId::of_kpk(secret),
    }
}

/// The name a key change gives the new key file until it is settled.
pub(super) fn pending_name(kind: KeyFileKind, id: &KeyId) -> String {
    format!("{}.next.{id}", kind.file_name())
}

/// The name a key change keeps the old key file under, for backups taken before the change.
pub fn retired_name(kind: KeyFileKind, id: &KeyId) -> String {
    format!("{}.{id}", kind.file_name())
}

/// Finishes or undoes a key change a crash interrupted. KMS_DATA is the commit point: if its
/// header names the pending key's id, the change was made, and the pending file becomes the
/// key file; otherwise it was not, and the pending file is removed. Read-only access changes
/// nothing and says which file to use.
pub(super) fn settle_pending(
    d: &DataDir,
    kind: KeyFileKind,
    header: &Header,
    access: Access,
) -> Result<Option<String>, StoreError> {
    let prefix = format!("{}.next.", kind.file_name());
    let mut use_instead = None;
    for name in d.names_with_prefix(&prefix)? {
        let committed = name[prefix.len()..] == header_id(header, kind).0;
        match (access, committed) {
            (Access::ReadOnly, true) => use_instead = Some(name),
            (Access::ReadOnly, false) => {}
            (Access::ReadWrite, true) => {
                log::warn!(
                    "finishing a change of the {} that a crash interrupted: {name} becomes {}",
                    kind.label(),
                    kind.file_name()
                );
                d.rename(&name, kind.file_name())
                    .and_then(|()| d.sync())
                    .map_err(StoreError::io(format!("cannot rename {name}")))?;
            }
            (Access::ReadWrite, false) => {
                log::warn!(
                    "undoing a change of the {} that a crash interrupted: removing {name}",
                    kind.label()
                );
                d.remove(&name)
                    .and_then(|()| d.sync())
                    .map_err(StoreError::io(format!("cannot remove {name}")))?;
            }
        }
    }
    Ok(use_instead)
}

/// Opens the master key `kind` of the keystore whose header is `header`.
pub(super) fn open_key(
    d: &DataDir,
    kind: KeyFileKind,
    header: &Header,
    access: Access,
    unlock: &Unlock,
) -> Result<Opened, StoreError> {
    let file_name = kind.file_name();
    let pending = settle_pending(d, kind, header, access)?;
    let name = pending.as_deref().unwrap_or(file_name);
    let want = header_id(header, kind);
    let Some((bytes, file)) = read_key_file_named(d, name, access)? else {
        // No key file: a key derived from a passphrase is asked for; any other is lost here.
        let Some(params) = header_kdf(header, kind) else {
            return Err(missing(d, kind, header));
        };
        let Some(pass) = unlock.passphrase(kind) else {
            return Err(StoreError::NeedPassphrase {
                key: kind.label(),
                file: file_name,
            });
        };
        let secret = params.derive_key32(pass).map_err(|e| StoreError::Corrupt {
            file: "passphrase",
            reason: e.to_string(),
        })?;
        let got = key_id(kind, &secret);
        if &got != want {
            return Err(StoreError::WrongPassphrase {
                key: kind.label(),
                got,
                want: want.clone(),
            });
        }
        return Ok(Opened {
            secret,
            keeping: Keeping::Passphrase,
            file: None,
        });
    };
    let corrupt = |reason: String| StoreError::Corrupt {
        file: file_name,
        reason,
    };
    let (secret, keeping) = match decode_any_key_file(kind, &bytes) {
        Ok(KeyFileBody::Plain(secret)) => (secret, Keeping::File),
        Ok(KeyFileBody::Sealed { by, blob }) => (
            super::unseal::unseal(kind, by, &blob, unlock)?,
            Keeping::Sealed(by),
        ),
        Err(e) => return Err(corrupt(e.to_string())),
    };
    let got = key_id(kind, &secret);
    if &got != want {
        return Err(mismatch(d, kind, &got, want));
    }
    Ok(Opened {
        secret,
        keeping,
        file: Some(file),
    })
}

/// How a master key is kept, from the files and the header alone (no key is opened): for
/// `kmsfs info` on a backup copy, and for the command line to know what to ask for.
pub fn keeping(dir: &std::path::Path, kind: KeyFileKind) -> Result<Option<Keeping>, StoreError> {
    let d = super::open_dir(dir)?;
    let header = super::read_header(dir)?;
    let pending = settle_pending(&d, kind, &header, Access::ReadOnly)?;
    let name = pending.as_deref().unwrap_or(kind.file_name());
    match read_key_file_named(&d, name, Access::ReadOnly)? {
        Some((bytes, _)) => match decode_any_key_file(kind, &bytes) {
            Ok(KeyFileBody::Plain(_)) => Ok(Some(Keeping::File)),
            Ok(KeyFileBody::Sealed { by, .. }) => Ok(Some(Keeping::Sealed(by))),
            Err(e) => Err(StoreError::Corrupt {
                file: kind.file_name(),
                reason: e.to_string(),
            }),
        },
        None if header_kdf(&header, kind).is_some() => Ok(Some(Keeping::Passphrase)),
        None => Ok(None),
    }
}

/// The sealed blob of a key file, for `kmsfs info` to describe (None: not sealed or absent).
pub fn sealed_blob(
    dir: &std::path::Path,
    kind: KeyFileKind,
) -> Result<Option<(Sealer, Vec<u8>)>, StoreError> {
    let d = super::open_dir(dir)?;
    match read_key_file_named(&d, kind.file_name(), Access::ReadOnly)? {
        Some((bytes, _)) => match decode_any_key_file(kind, &bytes) {
            Ok(KeyFileBody::Sealed { by, blob }) => Ok(Some((by, blob))),
            _ => Ok(None),
        },
        None => Ok(None),
    }
}

/// The files `KMS_HMKF.<ID>` / `KMS_KPKF.<ID>` that key changes kept, with the id each names.
pub fn retired_files(dir: &std::path::Path) -> Result<Vec<(KeyFileKind, String)>, StoreError> {
    let d = super::open_dir(dir)?;
    let mut out = Vec::new();
    for kind in [KeyFileKind::Hmk, KeyFileKind::Kpk] {
        let prefix = format!("{}.", kind.file_name());
        for name in d.names_with_prefix(&prefix)? {
            let id = &name[prefix.len()..];
            if KeyId::try_from(id.to_string()).is_ok() {
                out.push((kind, name));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

fn missing(d: &DataDir, kind: KeyFileKind, header: &Header) -> StoreError {
    let want = header_id(header, kind);
    let retired = retired_name(kind, want);
    if d.metadata(&retired).ok().flatten().is_some() {
        return StoreError::KeyMismatch {
            file: kind.file_name(),
            reason: format!(
                "it is missing, and KMS_DATA needs {} {want}, which {retired} holds: copy {retired} to {}",
                kind.label(),
                kind.file_name()
            ),
        };
    }
    StoreError::MissingKeyFile {
        file: kind.file_name(),
        dir: d.path().to_path_buf(),
    }
}

/// The key file holds another key. If a key change kept the one KMS_DATA needs, say where: the
/// KMS_DATA is then a copy from before the change (a restored backup).
fn mismatch(d: &DataDir, kind: KeyFileKind, got: &KeyId, want: &KeyId) -> StoreError {
    let retired = retired_name(kind, want);
    let held = d.metadata(&retired).ok().flatten().is_some();
    let reason = if held {
        format!(
            "its key id is {got}, KMS_DATA expects {want}, which {retired} holds (kept when the {} was changed: this KMS_DATA is older than the change); open it with that file as {}",
            kind.label(),
            kind.file_name()
        )
    } else {
        format!("its key id is {got}, KMS_DATA expects {want}")
    };
    StoreError::KeyMismatch {
        file: kind.file_name(),
        reason,
    }
}

/// A key file's bytes, wiped when dropped.
pub(super) type KeyFileBytes = zeroize::Zeroizing<Vec<u8>>;

/// Reads a key file of either form (at most `MAX_KEY_FILE_LEN` bytes: the size is checked
/// before a byte is read); None if there is none by that name.
pub(super) fn read_key_file_named(
    d: &DataDir,
    name: &str,
    access: Access,
) -> Result<Option<(KeyFileBytes, File)>, StoreError> {
    let Some(f) = d.open_file(name, How::Read)? else {
        return Ok(None);
    };
    if access == Access::ReadWrite {
        d.check_owned(name, &f)?;
    }
    let too_long = |len: u64| {
        StoreError::Corrupt {
        file: static_name(name),
        reason: format!(
            "wrong length {len} (expected {KEY_FILE_LEN}, or at most {MAX_KEY_FILE_LEN} for a sealed key file)"
        ),
    }
    };
    let len = f
        .metadata()
        .map_err(StoreError::io(format!("cannot stat {name}")))?
        .len();
    if len > MAX_KEY_FILE_LEN as u64 {
        return Err(too_long(len));
    }
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE_LEN + 1));
    (&f).take(MAX_KEY_FILE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(StoreError::io(format!("cannot read {name}")))?;
    if bytes.len() > MAX_KEY_FILE_LEN {
        return Err(too_long(bytes.len() as u64));
    }
    Ok(Some((bytes, f)))
}

/// Error variants name files by `&'static str`: the two key files, or what a pending or a
/// retired file is a copy of.
fn static_name(name: &str) -> &'static str {
    if name.starts_with("KMS_KPKF") {
        "KMS_KPKF"
    } else {
        "KMS_HMKF"
    }
}
