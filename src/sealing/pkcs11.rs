//! A 32-byte master key (the HMK or the KPK) encrypted by a non-extractable AES-256 key that
//! lives inside a PKCS#11 token (an HSM, a smart card, SoftHSM2).
//!
//! The token key is made by [`TokenKey::ensure`] (`CKA_SENSITIVE`, not `CKA_EXTRACTABLE`,
//! encrypt/decrypt only), so its value never leaves the token. [`TokenKey::protect`] has the
//! token encrypt the master key with `CKM_AES_GCM` and returns a self-describing blob;
//! [`recover`] finds the token and key that the blob names and has the token decrypt it;
//! [`describe`] says what a blob needs without touching a token.
//!
//! Mechanism: AES-256-GCM (`CKM_AES_GCM`, a fresh random 12-byte IV, a 128-bit tag). It is
//! authenticated, takes additional data (so a blob is bound to its purpose and to the token
//! and key that it names), encrypts plain bytes (no need to import the master key into the
//! token as an object, as `CKM_AES_KEY_WRAP_PAD`'s `C_WrapKey` would), and SoftHSM2 and the
//! usual HSMs implement it.
//!
//! Blob layout (version 1; lengths are single bytes except the ciphertext's, big-endian u16):
//!
//! ```text
//! "KMSFSP11" | version 1 | mechanism 1 (AES-256-GCM)
//! | len purpose | len token label | len key label
//! | len IV (12) | IV | len ciphertext (48: 32 + 16-byte tag) | ciphertext | SHA-256 of all before
//! ```
//!
//! The GCM additional data is `kmsfs-<purpose>`, a zero byte, then the header (everything
//! before the IV), so editing the purpose, the labels or the version makes the token refuse.
//! The checksum only catches accidental damage early, before a token is asked.
//!
//! A PKCS#11 module is loaded and initialised (`C_Initialize`) once per process and stays
//! so; every operation holds one process-wide lock from opening its session to closing it,
//! because a token's login state is shared by all the sessions of a process.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::{AuthPin, Ulong};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::SecretKey32;

/// Everything that can go wrong, each variant one cause an administrator can act on.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs11Error {
    /// The PKCS#11 library cannot be loaded or initialised.
    #[error("cannot use the PKCS#11 module {}: {reason}", path.display())]
    Module { path: PathBuf, reason: String },
    #[error("the PKCS#11 module has no initialised token labelled {label:?}")]
    NoToken { label: String },
    #[error("the PKCS#11 token {token:?} holds no AES key labelled {key:?}")]
    NoKey { token: String, key: String },
    /// `CKR_PIN_INCORRECT` (or a PIN the token cannot even accept).
    #[error("the PKCS#11 token refused the PIN: it is wrong")]
    Pin,
    /// The token would not decrypt: the blob was altered, or the key of that label in that
    /// token is not the one that made it.
    #[error(
        "the PKCS#11 token refused to decrypt the blob: it was altered, or it was made by \
         another key (a key of the same label in another token, or a key since replaced)"
    )]
    Authentication,
    /// The blob is damaged, not a blob, or not for this purpose; the token was not asked.
    #[error("bad PKCS#11 blob: {0}")]
    BadBlob(String),
    /// A label or purpose given by the caller that kmsfs cannot use.
    #[error("invalid PKCS#11 setting: {0}")]
    Config(String),
    /// Anything else the token or module reported.
    #[error("PKCS#11 token: {0}")]
    Token(String),
}

/// A token PIN. Read from a file's first line (`/dev/fd/N` for an inherited descriptor) or
/// a reader, never from the command line; wiped from memory when dropped.
#[derive(Clone)]
pub struct Pin(Zeroizing<String>);

/// Longest PIN file line accepted (PKCS#11 tokens take far shorter PINs).
const MAX_PIN_LEN: usize = 1024;

impl Pin {
    pub fn new(pin: String) -> Pin {
        Pin(Zeroizing::new(pin))
    }

    /// The first line of a file, without its line ending (`/dev/fd/3` reads descriptor 3).
    pub fn from_file(path: &Path) -> io::Result<Pin> {
        let file = File::open(path)?;
        Pin::from_reader(file)
    }

    /// The first line read from `reader` (a `File` made from an inherited `OwnedFd`, say).
    pub fn from_reader(reader: impl Read) -> io::Result<Pin> {
        // Allocated once, big enough, so that no reallocation leaves a copy behind.
        let mut buf = Zeroizing::new(Vec::with_capacity(MAX_PIN_LEN + 1));
        reader.take(MAX_PIN_LEN as u64 + 1).read_to_end(&mut buf)?;
        let end = match buf.iter().position(|&b| b == b'\n') {
            Some(n) => n,
            None if buf.len() > MAX_PIN_LEN => {
                return Err(invalid_pin(format!(
                    "the PIN is longer than {MAX_PIN_LEN} bytes"
                )))
            }
            None => buf.len(),
        };
        buf[end..].zeroize();
        buf.truncate(end);
        if buf.ends_with(b"\r") {
            buf.truncate(end - 1);
        }
        if buf.is_empty() {
            return Err(invalid_pin("the PIN is empty".into()));
        }
        match String::from_utf8(std::mem::take(&mut *buf)) {
            Ok(s) => Ok(Pin::new(s)),
            Err(e) => {
                e.into_bytes().zeroize();
                Err(invalid_pin("the PIN is not valid UTF-8".into()))
            }
        }
    }

    fn auth(&self) -> AuthPin {
        // secrecy's box, wiped on drop.
        AuthPin::from(self.0.as_str())
    }
}

fn invalid_pin(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

/// An AES-256 key in a PKCS#11 token, found by the token's label and the key's `CKA_LABEL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenKey {
    /// The PKCS#11 library, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    pub token_label: String,
    pub key_label: String,
}

impl TokenKey {
    /// Creates the key in the token unless a key of that label is there: AES, 32 bytes, a
    /// token object, private, sensitive, not extractable, not modifiable or copyable, for
    /// encrypting and decrypting only. Returns whether it was created. An existing key must
    /// be a sensitive, non-extractable AES-256 key.
    pub fn ensure(&self, pin: &Pin) -> Result<bool, Pkcs11Error> {
        check_token_label(&self.token_label)?;
        check_key_label(&self.key_label)?;
        with_session(&self.module, &self.token_label, pin, true, |session| {
            if let Some(key) = find_key(session, &self.token_label, &self.key_label)? {
                self.check_key(session, key)?;
                return Ok(false);
            }
            session
                .generate_key(&Mechanism::AesKeyGen, &key_template(&self.key_label))
                .map_err(|e| token_error("creating the key", e))?;
            Ok(true)
        })
    }

    /// Has the token encrypt `key` (AES-256-GCM, additional data naming kmsfs and
    /// `purpose`, e.g. "hmk") and returns the blob. The token key must exist (see
    /// [`TokenKey::ensure`]) and be sensitive and non-extractable; the token must decrypt the
    /// result back to `key` before the blob is returned.
    pub fn protect(
        &self,
        pin: &Pin,
        key: &SecretKey32,
        purpose: &str,
    ) -> Result<Vec<u8>, Pkcs11Error> {
        check_token_label(&self.token_label)?;
        check_key_label(&self.key_label)?;
        check_purpose(purpose)?;
        let mut iv = [0u8; IV_LEN];
        OsRng.fill_bytes(&mut iv);
        let mut blob = Blob {
            purpose: purpose.to_owned(),
            token_label: self.token_label.clone(),
            key_label: self.key_label.clone(),
            iv,
            ciphertext: Vec::new(),
        };
        let aad = blob.aad()?;
        blob.ciphertext = with_session(&self.module, &self.token_label, pin, false, |session| {
            let handle =
                find_key(session, &self.token_label, &self.key_label)?.ok_or_else(|| {
                    Pkcs11Error::NoKey {
                        token: self.token_label.clone(),
                        key: self.key_label.clone(),
                    }
                })?;
            self.check_key(session, handle)?;
            let mut iv = blob.iv;
            let ciphertext = session
                .encrypt(&gcm(&mut iv, &aad)?, handle, key.expose())
                .map_err(|e| token_error("encrypting", e))?;
            if ciphertext.len() != CIPHERTEXT_LEN {
                return Err(Pkcs11Error::Token(format!(
                    "AES-GCM gave {} bytes for a 32-byte key, not {CIPHERTEXT_LEN}",
                    ciphertext.len()
                )));
            }
            let mut iv = blob.iv;
            let back = Zeroizing::new(
                session
                    .decrypt(&gcm(&mut iv, &aad)?, handle, &ciphertext)
                    .map_err(|e| token_error("decrypting what was just encrypted", e))?,
            );
            if back.as_slice() != key.expose() {
                return Err(Pkcs11Error::Token(
                    "the token did not decrypt what it had just encrypted".into(),
                ));
            }
            Ok(ciphertext)
        })?;
        blob.encode()
    }

    fn check_key(&self, session: &Session, key: ObjectHandle) -> Result<(), Pkcs11Error> {
        let attrs = session
            .get_attributes(
                key,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::ValueLen,
                ],
            )
            .map_err(|e| token_error("reading the key's attributes", e))?;
        let (mut sensitive, mut extractable, mut len) = (false, true, 0usize);
        for attr in &attrs {
            match attr {
                Attribute::Sensitive(b) => sensitive = *b,
                Attribute::Extractable(b) => extractable = *b,
                Attribute::ValueLen(n) => len = usize::from(*n),
                _ => {}
            }
        }
        if !sensitive || extractable || len != 32 {
            return Err(Pkcs11Error::Token(format!(
                "the key {:?} in token {:?} is not a sensitive, non-extractable AES-256 key \
                 (sensitive {sensitive}, extractable {extractable}, {len} bytes); kmsfs will \
                 not protect a master key with it",
                self.key_label, self.token_label
            )));
        }
        Ok(())
    }
}

/// Has the token and key that `blob` names decrypt it, through the PKCS#11 library
/// `module`. `purpose` must be the one the blob was made for ("hmk", "kpk").
pub fn recover(
    module: &Path,
    pin: &Pin,
    blob: &[u8],
    purpose: &str,
) -> Result<SecretKey32, Pkcs11Error> {
    check_purpose(purpose)?;
    let blob = Blob::decode(blob)?;
    if blob.purpose != purpose {
        return Err(Pkcs11Error::BadBlob(format!(
            "it protects the {}, not the {purpose}",
            blob.purpose
        )));
    }
    let aad = blob.aad()?;
    with_session(module, &blob.token_label, pin, false, |session| {
        let handle = find_key(session, &blob.token_label, &blob.key_label)?.ok_or_else(|| {
            Pkcs11Error::NoKey {
                token: blob.token_label.clone(),
                key: blob.key_label.clone(),
            }
        })?;
        let mut iv = blob.iv;
        let plain = Zeroizing::new(
            session
                .decrypt(&gcm(&mut iv, &aad)?, handle, &blob.ciphertext)
                .map_err(|e| match e {
                    // SoftHSM2 reports a failed tag check as CKR_GENERAL_ERROR; the blob's
                    // shape was checked, so that is what it means here.
                    CkError::Pkcs11(
                        RvError::EncryptedDataInvalid
                        | RvError::EncryptedDataLenRange
                        | RvError::GeneralError,
                        _,
                    ) => Pkcs11Error::Authentication,
                    e => token_error("decrypting", e),
                })?,
        );
        let mut bytes = Zeroizing::new([0u8; 32]);
        if plain.len() != bytes.len() {
            return Err(Pkcs11Error::Token(format!(
                "the token decrypted {} bytes, not a 32-byte key",
                plain.len()
            )));
        }
        bytes.copy_from_slice(&plain);
        Ok(SecretKey32::from_slice(&bytes))
    })
}

/// What a blob needs, for an administrator: `PKCS#11 token "kmsfs", key "kmsfs-hmk",
/// AES-256-GCM, protects the hmk`. No token is needed.
pub fn describe(blob: &[u8]) -> Result<String, Pkcs11Error> {
    let blob = Blob::decode(blob)?;
    Ok(format!(
        "PKCS#11 token {:?}, key {:?}, AES-256-GCM, protects the {}",
        blob.token_label, blob.key_label, blob.purpose
    ))
}

const MAGIC: &[u8; 8] = b"KMSFSP11";
const VERSION: u8 = 1;
/// The only mechanism of version 1: CKM_AES_GCM, 12-byte IV, 128-bit tag.
const MECHANISM_AES_GCM: u8 = 1;
const IV_LEN: usize = 12;
const TAG_BITS: u64 = 128;
const CIPHERTEXT_LEN: usize = 32 + 16;
const CHECKSUM_LEN: usize = 32;
/// PKCS#11 token labels are 32 bytes, blank-padded.
const MAX_TOKEN_LABEL: usize = 32;
const MAX_KEY_LABEL: usize = 64;
const MAX_PURPOSE: usize = 16;

/// A decoded blob. Public so that tools (and tests) can read and re-encode one; `encode`
/// checks every field as `decode` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub purpose: String,
    pub token_label: String,
    pub key_label: String,
    pub iv: [u8; IV_LEN],
    /// AES-GCM ciphertext then tag.
    pub ciphertext: Vec<u8>,
}

impl Blob {
    /// Magic to key label: the part that goes into the GCM additional data as it is.
    fn header(&self) -> Result<Vec<u8>, Pkcs11Error> {
        let bad = Pkcs11Error::BadBlob;
        check_purpose(&self.purpose).map_err(|e| bad(e.to_string()))?;
        check_token_label(&self.token_label).map_err(|e| bad(e.to_string()))?;
        check_key_label(&self.key_label).map_err(|e| bad(e.to_string()))?;
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(MECHANISM_AES_GCM);
        for field in [&self.purpose, &self.token_label, &self.key_label] {
            // The checks above bound every length well below 256.
            out.push(field.len() as u8);
            out.extend_from_slice(field.as_bytes());
        }
        Ok(out)
    }

    fn aad(&self) -> Result<Vec<u8>, Pkcs11Error> {
        let mut aad = format!("kmsfs-{}", self.purpose).into_bytes();
        aad.push(0);
        aad.extend_from_slice(&self.header()?);
        Ok(aad)
    }

    pub fn encode(&self) -> Result<Vec<u8>, Pkcs11Error> {
        if self.ciphertext.len() != CIPHERTEXT_LEN {
            return Err(Pkcs11Error::BadBlob(format!(
                "the ciphertext is {} bytes, not {CIPHERTEXT_LEN}",
                self.ciphertext.len()
            )));
        }
        let mut out = self.header()?;
        out.push(IV_LEN as u8);
        out.extend_from_slice(&self.iv);
        out.extend_from_slice(&(CIPHERTEXT_LEN as u16).to_be_bytes());
        out.extend_from_slice(&self.ciphertext);
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Blob, Pkcs11Error> {
        let bad = |msg: &str| Pkcs11Error::BadBlob(msg.to_owned());
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(bad("it is not a kmsfs PKCS#11 blob (no KMSFSP11 magic)"));
        }
        let mut r = Reader {
            bytes: &bytes[MAGIC.len()..],
        };
        let version = r.u8()?;
        if version != VERSION {
            return Err(Pkcs11Error::BadBlob(format!(
                "version {version} is not one this kmsfs reads (it reads {VERSION})"
            )));
        }
        if bytes.len() < MAGIC.len() + 2 + CHECKSUM_LEN {
            return Err(bad("it is truncated"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if Sha256::digest(body).as_slice() != sum {
            return Err(bad(
                "its checksum does not match: it is damaged or truncated",
            ));
        }
        let mut r = Reader {
            bytes: &body[MAGIC.len() + 1..],
        };
        let mechanism = r.u8()?;
        if mechanism != MECHANISM_AES_GCM {
            return Err(Pkcs11Error::BadBlob(format!(
                "mechanism {mechanism} is unknown (1 is AES-256-GCM)"
            )));
        }
        let purpose = r.string("purpose")?;
        let token_label = r.string("token label")?;
        let key_label = r.string("key label")?;
        let iv_len = usize::from(r.u8()?);
        if iv_len != IV_LEN {
            return Err(Pkcs11Error::BadBlob(format!(
                "the IV is {iv_len} bytes, not {IV_LEN}"
            )));
        }
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(r.take(IV_LEN)?);
        let len_bytes = r.take(2)?;
        let ct_len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
        let ciphertext = r.take(ct_len)?.to_vec();
        if !r.bytes.is_empty() {
            return Err(bad("it has bytes after the ciphertext"));
        }
        let blob = Blob {
            purpose,
            token_label,
            key_label,
            iv,
            ciphertext,
        };
        // The same checks as encoding: labels, purpose, ciphertext length.
        if blob.encode()?.as_slice() != bytes {
            return Err(bad("it is not in canonical form"));
        }
        Ok(blob)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Pkcs11Error> {
        if self.bytes.len() < n {
            return Err(Pkcs11Error::BadBlob("it is truncated".into()));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Pkcs11Error> {
        Ok(self.take(1)?[0])
    }

    fn string(&mut self, what: &str) -> Result<String, Pkcs11Error> {
        let len = usize::from(self.u8()?);
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec())
            .map_err(|_| Pkcs11Error::BadBlob(format!("its {what} is not UTF-8")))
    }
}

fn check_label(what: &str, label: &str, max: usize) -> Result<(), Pkcs11Error> {
    if label.is_empty() || label.len() > max {
        return Err(Pkcs11Error::Config(format!(
            "a {what} has 1 to {max} bytes: {label:?}"
        )));
    }
    // Token labels are blank-padded, so trailing blanks would never match.
    if label.chars().any(char::is_control) || label.ends_with(' ') || label.starts_with(' ') {
        return Err(Pkcs11Error::Config(format!(
            "a {what} has no control characters and no leading or trailing blanks: {label:?}"
        )));
    }
    Ok(())
}

fn check_token_label(label: &str) -> Result<(), Pkcs11Error> {
    check_label("token label", label, MAX_TOKEN_LABEL)
}

fn check_key_label(label: &str) -> Result<(), Pkcs11Error> {
    check_label("key label", label, MAX_KEY_LABEL)
}

fn check_purpose(purpose: &str) -> Result<(), Pkcs11Error> {
    let ok = !purpose.is_empty()
        && purpose.len() <= MAX_PURPOSE
        && purpose
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(Pkcs11Error::Config(format!(
            "a purpose is 1 to {MAX_PURPOSE} of a-z, 0-9 and '-' (\"hmk\", \"kpk\"): {purpose:?}"
        )));
    }
    Ok(())
}

fn gcm<'a>(iv: &'a mut [u8], aad: &'a [u8]) -> Result<Mechanism<'a>, Pkcs11Error> {
    let params = GcmParams::new(iv, aad, Ulong::new(TAG_BITS))
        .map_err(|e| token_error("AES-GCM parameters", e))?;
    Ok(Mechanism::AesGcm(params))
}

fn key_template(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(Ulong::new(32)),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
    ]
}

fn token_error(what: &str, e: CkError) -> Pkcs11Error {
    match e {
        CkError::Pkcs11(RvError::MechanismInvalid | RvError::MechanismParamInvalid, _) => {
            Pkcs11Error::Token(format!(
                "{what}: the token does not support AES-256-GCM ({e})"
            ))
        }
        e => Pkcs11Error::Token(format!("{what}: {e}")),
    }
}

/// Modules loaded and initialised by this process; the lock is held for a whole operation.
static MODULES: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());

fn module_context(
    modules: &mut Vec<(PathBuf, Pkcs11)>,
    path: &Path,
) -> Result<Pkcs11, Pkcs11Error> {
    if let Some((_, ctx)) = modules.iter().find(|(p, _)| p == path) {
        return Ok(ctx.clone());
    }
    let module_error = |reason: String| Pkcs11Error::Module {
        path: path.to_owned(),
        reason,
    };
    let ctx = Pkcs11::new(path).map_err(|e| module_error(e.to_string()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Loaded under another name (a symbolic link) or by other code of this process.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(module_error(format!("C_Initialize failed: {e}"))),
    }
    modules.push((path.to_owned(), ctx.clone()));
    Ok(ctx)
}

fn find_token(ctx: &Pkcs11, label: &str) -> Result<Slot, Pkcs11Error> {
    let slots = ctx
        .get_slots_with_initialized_token()
        .map_err(|e| token_error("listing the slots", e))?;
    let mut found = Vec::new();
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| token_error("reading a token's information", e))?;
        if info.label() == label {
            found.push(slot);
        }
    }
    match found.as_slice() {
        [] => Err(Pkcs11Error::NoToken {
            label: label.to_owned(),
        }),
        [slot] => Ok(*slot),
        _ => Err(Pkcs11Error::Token(format!(
            "{} tokens are labelled {label:?}; kmsfs needs exactly one",
            found.len()
        ))),
    }
}

fn find_key(
    session: &Session,
    token: &str,
    label: &str,
) -> Result<Option<ObjectHandle>, Pkcs11Error> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| token_error("looking for the key", e))?;
    match found.as_slice() {
        [] => Ok(None),
        [key] => Ok(Some(*key)),
        _ => Err(Pkcs11Error::Token(format!(
            "{} AES keys in token {token:?} are labelled {label:?}; kmsfs needs exactly one",
            found.len()
        ))),
    }
}

/// Opens a session on the token labelled `token`, logs in as the user, runs `f`, and closes
/// the session (the last session of the process closing ends the login).
fn with_session<T>(
    module: &Path,
    token: &str,
    pin: &Pin,
    read_write: bool,
    f: impl FnOnce(&Session) -> Result<T, Pkcs11Error>,
) -> Result<T, Pkcs11Error> {
    let mut modules = MODULES.lock().unwrap_or_else(PoisonError::into_inner);
    let ctx = module_context(&mut modules, module)?;
    let slot = find_token(&ctx, token)?;
    let session = if read_write {
        ctx.open_rw_session(slot)
    } else {
        ctx.open_ro_session(slot)
    }
    .map_err(|e| token_error("opening a session", e))?;
    match session.login(UserType::User, Some(&pin.auth())) {
        // Login is per process and token; with the lock held and every session closed
        // after use this only happens if other code of this process logged in.
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(CkError::Pkcs11(
            RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
            _,
        )) => return Err(Pkcs11Error::Pin),
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
            return Err(Pkcs11Error::Token(format!(
                "the user PIN of token {token:?} is locked (too many wrong PINs)"
            )))
        }
        Err(e) => return Err(token_error("logging in", e)),
    }
    let out = f(&session);
    drop(session);
    drop(modules);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Blob {
        Blob {
            purpose: "hmk".into(),
            token_label: "kmsfs".into(),
            key_label: "kmsfs-hmk".into(),
            iv: [7; IV_LEN],
            ciphertext: (0..CIPHERTEXT_LEN as u8).collect(),
        }
    }

    fn bad_blob(r: Result<Blob, Pkcs11Error>) -> String {
        match r {
            Err(Pkcs11Error::BadBlob(msg)) => msg,
            other => panic!("expected BadBlob, got {other:?}"),
        }
    }

    #[test]
    fn blob_round_trips_and_has_the_documented_layout() {
        let blob = sample();
        let bytes = blob.encode().unwrap();
        assert_eq!(Blob::decode(&bytes).unwrap(), blob);
        assert_eq!(&bytes[..8], b"KMSFSP11");
        assert_eq!(bytes[8], VERSION);
        assert_eq!(bytes[9], MECHANISM_AES_GCM);
        assert_eq!(&bytes[10..14], b"\x03hmk");
        assert_eq!(&bytes[14..20], b"\x05kmsfs");
        assert_eq!(&bytes[20..30], b"\x09kmsfs-hmk");
        assert_eq!(bytes[30], 12);
        assert_eq!(&bytes[31..43], &[7; 12]);
        assert_eq!(&bytes[43..45], &[0, 48]);
        assert_eq!(bytes.len(), 45 + 48 + 32);
        assert_eq!(&bytes[93..], Sha256::digest(&bytes[..93]).as_slice());
        assert_eq!(
            describe(&bytes).unwrap(),
            "PKCS#11 token \"kmsfs\", key \"kmsfs-hmk\", AES-256-GCM, protects the hmk"
        );
    }

    #[test]
    fn every_single_byte_change_or_truncation_is_refused() {
        let bytes = sample().encode().unwrap();
        for i in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                bad_blob(Blob::decode(&b));
            }
        }
        for n in 0..bytes.len() {
            bad_blob(Blob::decode(&bytes[..n]));
        }
        let mut longer = bytes.clone();
        longer.push(0);
        bad_blob(Blob::decode(&longer));
    }

    /// Re-checksummed, so only the field checks stand in the way.
    fn with_checksum(mut body: Vec<u8>) -> Vec<u8> {
        let sum = Sha256::digest(&body);
        body.extend_from_slice(&sum);
        body
    }

    #[test]
    fn a_well_checksummed_blob_with_bad_fields_is_refused() {
        let good = sample().encode().unwrap();
        let body = &good[..good.len() - CHECKSUM_LEN];
        let mut v2 = body.to_vec();
        v2[8] = 2;
        assert!(bad_blob(Blob::decode(&with_checksum(v2))).contains("version 2"));
        let mut mech = body.to_vec();
        mech[9] = 9;
        assert!(bad_blob(Blob::decode(&with_checksum(mech))).contains("mechanism 9"));
        let mut purpose = body.to_vec();
        purpose[11] = b'H';
        bad_blob(Blob::decode(&with_checksum(purpose)));
        let mut utf8 = body.to_vec();
        utf8[15] = 0xff;
        assert!(bad_blob(Blob::decode(&with_checksum(utf8))).contains("UTF-8"));
        let mut iv_len = body.to_vec();
        iv_len[30] = 16;
        bad_blob(Blob::decode(&with_checksum(iv_len)));
        let mut short_ct = body.to_vec();
        short_ct[44] = 47;
        short_ct.pop();
        assert!(bad_blob(Blob::decode(&with_checksum(short_ct))).contains("47 bytes"));
        bad_blob(Blob::decode(b"KMSFSP11"));
        bad_blob(Blob::decode(b"not a blob at all, just some bytes"));
        bad_blob(Blob::decode(b""));
    }

    #[test]
    fn encode_checks_what_decode_checks() {
        let changes: [fn(&mut Blob); 8] = [
            |b| b.purpose = "HMK".into(),
            |b| b.purpose = String::new(),
            |b| b.token_label = "x".repeat(33),
            |b| b.token_label = "padded ".into(),
            |b| b.key_label = String::new(),
            |b| b.key_label = "line\nbreak".into(),
            |b| b.key_label = "k".repeat(65),
            |b| {
                b.ciphertext.pop();
            },
        ];
        for change in changes {
            let mut blob = sample();
            change(&mut blob);
            assert!(
                matches!(blob.encode(), Err(Pkcs11Error::BadBlob(_))),
                "{blob:?}"
            );
        }
        let mut longest = sample();
        longest.token_label = "t".repeat(32);
        longest.key_label = "é".repeat(32);
        longest.purpose = "p".repeat(16);
        assert_eq!(Blob::decode(&longest.encode().unwrap()).unwrap(), longest);
    }

    #[test]
    fn the_additional_data_names_kmsfs_the_purpose_and_the_header() {
        let blob = sample();
        let aad = blob.aad().unwrap();
        assert!(aad.starts_with(b"kmsfs-hmk\0KMSFSP11"));
        assert!(aad.ends_with(b"\x09kmsfs-hmk"));
        let mut other = blob.clone();
        other.token_label = "other".into();
        assert_ne!(other.aad().unwrap(), aad);
    }

    #[test]
    fn pin_is_the_first_line_and_never_printed() {
        let pin = |b: &[u8]| Pin::from_reader(b).map(|p| p.0.as_str().to_owned());
        assert_eq!(pin(b"1234\n").unwrap(), "1234");
        assert_eq!(pin(b"1234\r\nsecond line\n").unwrap(), "1234");
        assert_eq!(pin(b" 12 34 ").unwrap(), " 12 34 ");
        for bad in [&b""[..], b"\n", b"\r\n", b"\xff\n"] {
            let e = pin(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{bad:?}");
        }
        assert!(pin(&vec![b'1'; MAX_PIN_LEN]).is_ok());
        assert!(pin(&vec![b'1'; MAX_PIN_LEN + 1]).is_err());
        let p = Pin::new("hunter2-secret".into());
        assert_eq!(format!("{p:?}"), "Pin(<redacted>)");
        assert!(!format!("{:?}", Some(p)).contains("hunter2"));
    }

    #[test]
    fn bad_purposes_and_labels_are_config_errors() {
        for p in ["", "HMK", "hmk key", "a-very-long-purpose-name"] {
            assert!(
                matches!(check_purpose(p), Err(Pkcs11Error::Config(_))),
                "{p}"
            );
        }
        for l in ["", " lead", "trail ", "tab\t", &"x".repeat(33)] {
            assert!(
                matches!(check_token_label(l), Err(Pkcs11Error::Config(_))),
                "{l}"
            );
        }
        check_token_label(&"x".repeat(32)).unwrap();
        check_key_label("kmsfs-hmk").unwrap();
    }

    #[test]
    fn an_unloadable_module_is_a_module_error() {
        let e = recover_with_missing_module();
        assert!(
            matches!(&e, Pkcs11Error::Module { path, .. } if path == Path::new("/nonexistent/libp11.so")),
            "{e:?}"
        );
        assert!(e.to_string().contains("/nonexistent/libp11.so"), "{e}");
    }

    fn recover_with_missing_module() -> Pkcs11Error {
        let blob = sample().encode().unwrap();
        recover(
            Path::new("/nonexistent/libp11.so"),
            &Pin::new("1234".into()),
            &blob,
            "hmk",
        )
        .unwrap_err()
    }
}
