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

    fn label(self) -> &'static str {
        match self {
            KeyFileKind::Hmk => "HMK",
            KeyFileKind::Kpk => "KPK",
        }
    }
}

const MAGIC_LEN: usize = 10;
const FORMAT_VERSION: u16 = 1;
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
    Ok(SecretKey32::from_bytes(*key))
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
