use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{CryptoError, SecretKey32};

/// Which key a file holds. The magic differs so that KMS_HMKF and KMS_KPKF cannot be
/// swapped or copied over one another unnoticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFileKind {
    Hmk,
    Kpk,
}

impl KeyFileKind {
    pub fn file_name(self) -> &'static str {
        match self {
            KeyFileKind::Hmk => "KMS_HMKF",
            KeyFileKind::Kpk => "KMS_KPKF",
        }
    }

    fn magic(self) -> &'static [u8; MAGIC_LEN] {
        match self {
            KeyFileKind::Hmk => b"KMSFS-HMK\n",
            KeyFileKind::Kpk => b"KMSFS-KPK\n",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            KeyFileKind::Hmk => "HMK",
            KeyFileKind::Kpk => "KPK",
        }
    }
}

const MAGIC_LEN: usize = 10;
const FORMAT_VERSION: u16 = 1;
/// A key file that holds the key sealed by something else (a TPM, a PKCS#11 token), not the
/// key itself: `magic || 2 (u16 LE) || sealer (u8) || blob length (u32 LE) || blob || SHA-256`.
const SEALED_VERSION: u16 = 2;
const SEALED_BLOB_AT: usize = MAGIC_LEN + 2 + 1 + 4;
/// Far above any sealed blob (a TPM's is about 300 bytes): a larger file is not a key file.
pub const MAX_SEALED_BLOB: usize = 16 * 1024;
/// The largest key file a reader accepts.
pub const MAX_KEY_FILE_LEN: usize = SEALED_BLOB_AT + MAX_SEALED_BLOB + 32;

/// What holds the key of a sealed key file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sealer {
    /// A TPM 2.0, bound to PCR values (`sealing::tpm`).
    Tpm,
    /// A non-extractable AES key in a PKCS#11 token (`sealing::pkcs11`).
    Pkcs11,
}

impl Sealer {
    fn code(self) -> u8 {
        match self {
            Sealer::Tpm => 1,
            Sealer::Pkcs11 => 2,
        }
    }

    fn from_code(code: u8) -> Option<Sealer> {
        match code {
            1 => Some(Sealer::Tpm),
            2 => Some(Sealer::Pkcs11),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Sealer::Tpm => "TPM",
            Sealer::Pkcs11 => "PKCS#11 token",
        }
    }
}

/// What a key file holds: the key, or the key sealed by a TPM or a token.
#[derive(Debug)]
pub enum KeyFileBody {
    Plain(SecretKey32),
    Sealed { by: Sealer, blob: Vec<u8> },
}

/// A sealed key file: the blob is what the sealer needs to give the key back (public: it is
/// useless without the TPM or the token).
pub fn encode_sealed_key_file(kind: KeyFileKind, by: Sealer, blob: &[u8]) -> Vec<u8> {
    assert!(blob.len() <= MAX_SEALED_BLOB, "sealed blobs are small");
    let mut out = Vec::with_capacity(SEALED_BLOB_AT + blob.len() + 32);
    out.extend_from_slice(kind.magic());
    out.extend_from_slice(&SEALED_VERSION.to_le_bytes());
    out.push(by.code());
    out.extend_from_slice(&(blob.len() as u32).to_le_bytes());
    out.extend_from_slice(blob);
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// Reads a key file of either form: plain (`decode_key_file`) or sealed.
pub fn decode_any_key_file(kind: KeyFileKind, bytes: &[u8]) -> Result<KeyFileBody, CryptoError> {
    let fail = |msg: String| Err(CryptoError::KeyFile(msg));
    let sealed = bytes.len() >= SEALED_BLOB_AT + 32
        && u16::from_le_bytes([bytes[MAGIC_LEN], bytes[MAGIC_LEN + 1]]) == SEALED_VERSION;
    if !sealed {
        return decode_key_file(kind, bytes).map(KeyFileBody::Plain);
    }
    if bytes.len() > MAX_KEY_FILE_LEN {
        return fail(format!(
            "wrong length {} (a key file is at most {MAX_KEY_FILE_LEN} bytes)",
            bytes.len()
        ));
    }
    let sum_at = bytes.len() - 32;
    if Sha256::digest(&bytes[..sum_at])[..] != bytes[sum_at..] {
        return fail("checksum mismatch: the file was altered or damaged".into());
    }
    if &bytes[..MAGIC_LEN] != kind.magic() {
        return fail(format!("not a kmsfs {} file (bad magic)", kind.label()));
    }
    let version = u16::from_le_bytes([bytes[MAGIC_LEN], bytes[MAGIC_LEN + 1]]);
    if version != SEALED_VERSION {
        return fail(format!("unsupported format version {version}"));
    }
    let Some(by) = Sealer::from_code(bytes[MAGIC_LEN + 2]) else {
        return fail(format!("unknown sealer {}", bytes[MAGIC_LEN + 2]));
    };
    let len_at = MAGIC_LEN + 3;
    let len = u32::from_le_bytes(bytes[len_at..len_at + 4].try_into().expect("4 bytes")) as usize;
    if SEALED_BLOB_AT + len != sum_at {
        return fail("the sealed blob's length does not match the file's".into());
    }
    Ok(KeyFileBody::Sealed {
        by,
        blob: bytes[SEALED_BLOB_AT..sum_at].to_vec(),
    })
}
const KEY_AT: usize = MAGIC_LEN + 2;
const SUM_AT: usize = KEY_AT + 32;
const FILE_LEN: usize = SUM_AT + 32;
/// The length of every key file (76 bytes): readers check it before they read a byte.
pub const KEY_FILE_LEN: usize = FILE_LEN;

/// `magic || version (u16 LE) || key || SHA-256 of the preceding bytes`.
pub fn encode_key_file(kind: KeyFileKind, key: &SecretKey32) -> Vec<u8> {
    let mut out = Vec::with_capacity(FILE_LEN);
    out.extend_from_slice(kind.magic());
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(key.expose());
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

pub fn decode_key_file(kind: KeyFileKind, bytes: &[u8]) -> Result<SecretKey32, CryptoError> {
    let fail = |msg: String| Err(CryptoError::KeyFile(msg));
    if bytes.len() != FILE_LEN {
        return fail(format!(
            "wrong length {} (expected {FILE_LEN})",
            bytes.len()
        ));
    }
    // The checksum is checked first: a damaged file is reported as damaged rather than as
    // whatever its altered header happens to look like.
    if Sha256::digest(&bytes[..SUM_AT])[..] != bytes[SUM_AT..] {
        return fail("checksum mismatch: the file was altered or damaged".into());
    }
    if &bytes[..MAGIC_LEN] != kind.magic() {
        return fail(format!("not a kmsfs {} file (bad magic)", kind.label()));
    }
    let version = u16::from_le_bytes([bytes[MAGIC_LEN], bytes[MAGIC_LEN + 1]]);
    if version != FORMAT_VERSION {
        return fail(format!("unsupported format version {version}"));
    }
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&bytes[KEY_AT..SUM_AT]);
    Ok(SecretKey32::from_slice(&key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: KeyFileKind, bytes: &[u8]) -> String {
        match decode_key_file(kind, bytes) {
            Err(CryptoError::KeyFile(m)) => m,
            other => panic!("expected KeyFile error, got {other:?}"),
        }
    }

    /// A file with a valid checksum over arbitrary header bytes.
    fn resum(mut bytes: Vec<u8>) -> Vec<u8> {
        let sum = Sha256::digest(&bytes[..SUM_AT]);
        bytes[SUM_AT..].copy_from_slice(&sum);
        bytes
    }

    #[test]
    fn round_trip_and_layout() {
        for kind in [KeyFileKind::Hmk, KeyFileKind::Kpk] {
            let key = SecretKey32::random();
            let file = encode_key_file(kind, &key);
            assert_eq!(file.len(), 76);
            assert_eq!(&file[..10], kind.magic());
            assert_eq!(&file[10..12], &[1, 0]);
            assert_eq!(&file[12..44], key.expose());
            assert_eq!(decode_key_file(kind, &file).unwrap().expose(), key.expose());
        }
        assert_eq!(KeyFileKind::Hmk.file_name(), "KMS_HMKF");
        assert_eq!(KeyFileKind::Kpk.file_name(), "KMS_KPKF");
    }

    #[test]
    fn sealed_files_round_trip_and_every_flip_is_rejected() {
        for by in [Sealer::Tpm, Sealer::Pkcs11] {
            let file = encode_sealed_key_file(KeyFileKind::Hmk, by, b"opaque blob");
            match decode_any_key_file(KeyFileKind::Hmk, &file).unwrap() {
                KeyFileBody::Sealed { by: got, blob } => {
                    assert_eq!(got, by);
                    assert_eq!(blob, b"opaque blob");
                }
                other => panic!("{other:?}"),
            }
            assert!(decode_any_key_file(KeyFileKind::Kpk, &file).is_err());
            for i in 0..file.len() {
                let mut bad = file.clone();
                bad[i] ^= 0x01;
                assert!(
                    decode_any_key_file(KeyFileKind::Hmk, &bad).is_err(),
                    "byte {i}"
                );
            }
            for cut in 1..file.len() {
                assert!(decode_any_key_file(KeyFileKind::Hmk, &file[..cut]).is_err());
            }
        }
        let key = SecretKey32::random();
        let plain = encode_key_file(KeyFileKind::Kpk, &key);
        match decode_any_key_file(KeyFileKind::Kpk, &plain).unwrap() {
            KeyFileBody::Plain(k) => assert_eq!(k.expose(), key.expose()),
            other => panic!("{other:?}"),
        }
        let huge = encode_sealed_key_file(KeyFileKind::Hmk, Sealer::Tpm, &[0; MAX_SEALED_BLOB]);
        assert!(decode_any_key_file(KeyFileKind::Hmk, &huge).is_ok());
        let mut more = huge.clone();
        more.push(0);
        assert!(decode_any_key_file(KeyFileKind::Hmk, &more).is_err());
    }

    #[test]
    fn every_byte_flip_is_rejected() {
        let file = encode_key_file(KeyFileKind::Kpk, &SecretKey32::random());
        for i in 0..file.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut bad = file.clone();
                bad[i] ^= mask;
                assert!(
                    matches!(
                        decode_key_file(KeyFileKind::Kpk, &bad),
                        Err(CryptoError::KeyFile(_))
                    ),
                    "byte {i} mask {mask:#x}"
                );
            }
        }
    }

    #[test]
    fn error_messages_say_what_is_wrong() {
        let key = SecretKey32::random();
        let file = encode_key_file(KeyFileKind::Hmk, &key);
        assert_eq!(
            err(KeyFileKind::Hmk, &file[..75]),
            "wrong length 75 (expected 76)"
        );
        assert_eq!(
            err(KeyFileKind::Hmk, &[file.clone(), vec![0]].concat()),
            "wrong length 77 (expected 76)"
        );
        assert_eq!(err(KeyFileKind::Hmk, b""), "wrong length 0 (expected 76)");
        assert_eq!(
            err(KeyFileKind::Kpk, &file),
            "not a kmsfs KPK file (bad magic)"
        );
        let mut v7 = file.clone();
        v7[10] = 7;
        assert_eq!(
            err(KeyFileKind::Hmk, &resum(v7)),
            "unsupported format version 7"
        );
        let mut flipped = file.clone();
        flipped[20] ^= 1;
        assert_eq!(
            err(KeyFileKind::Hmk, &flipped),
            "checksum mismatch: the file was altered or damaged"
        );
        for m in [
            err(KeyFileKind::Kpk, &file),
            err(KeyFileKind::Hmk, &flipped),
        ] {
            assert!(!m.contains("KMS_"), "{m}");
        }
    }
}
