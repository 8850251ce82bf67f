//! The export container: one file, authenticated as a whole.
//!
//! ```text
//! "KMSFS-EXPORT\n" | format u16 LE | header length u32 LE | header JSON | nonce(12) | ciphertext | tag(16)
//! ```
//! The header JSON (`{"kdf": Argon2id parameters and a fresh salt, "created": ns since epoch}`)
//! is plain, because the key that opens the rest is derived from the passphrase with it. All
//! bytes before the nonce are the associated data of the one AES-256-GCM seal of the body, so
//! an edit anywhere (magic, version, header, ciphertext) fails to open exactly as a wrong
//! passphrase does.

use serde::{Deserialize, Serialize};

use super::{ExportBody, TransferError};
use crate::crypto::{self, KdfParams, Passphrase};
use crate::keystore::Timestamp;

pub const MAGIC: &[u8; 13] = b"KMSFS-EXPORT\n";
pub const CONTAINER_VERSION: u16 = 1;
const PREFIX_LEN: usize = MAGIC.len() + 2 + 4;
/// A real header is about 200 bytes; a larger length field can only be damage.
const MAX_HEADER_LEN: usize = 64 * 1024;
// Tighter than what KMS_DATA accepts: these come from a file that may have travelled, and an
// edited header must not make the import allocate gigabytes, or spend minutes, before it
// fails (the key is derived before anything can be authenticated). `seal` always writes the
// defaults (64 MiB, 3 passes, 1 lane); the bounds allow 4 times their memory and 4 times
// their work (memory times passes: about a second), and no more. The earlier bounds (1 GiB,
// 16 passes) let a hostile header demand 1 GiB and about 85 times the default work.
pub(crate) const MAX_M_COST_KIB: u32 = 4 * KdfParams::DEFAULT_M_COST_KIB;
pub(crate) const MAX_T_COST: u32 = 16;
/// Memory times passes, in KiB: what the derivation costs in time.
pub(crate) const MAX_KDF_WORK: u64 =
    4 * KdfParams::DEFAULT_M_COST_KIB as u64 * KdfParams::DEFAULT_T_COST as u64;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerHeader {
    pub kdf: KdfParams,
    pub created: Timestamp,
}

/// Seals `body` under a key derived from `pass` with the default parameters and a fresh salt.
pub fn seal(pass: &Passphrase, body: &ExportBody) -> Result<Vec<u8>, TransferError> {
    let header = ContainerHeader {
        kdf: KdfParams::with_fresh_salt(),
        created: Timestamp::now(),
    };
    seal_with(&header, pass, body)
}

pub(crate) fn seal_with(
    header: &ContainerHeader,
    pass: &Passphrase,
    body: &ExportBody,
) -> Result<Vec<u8>, TransferError> {
    let key = header
        .kdf
        .derive_key32(pass)
        .map_err(|e| TransferError::Kdf(e.to_string()))?;
    let json = serde_json::to_vec(header).expect("the header serialises");
    let mut out = Vec::with_capacity(PREFIX_LEN + json.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&CONTAINER_VERSION.to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    let plain = body.to_json();
    let sealed = crypto::seal(&key, &plain, &out);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Authenticates and decrypts a container; the body's keys are wiped when it is dropped.
pub fn open(
    bytes: &[u8],
    pass: &Passphrase,
) -> Result<(ContainerHeader, ExportBody), TransferError> {
    let (header, aad_len) = decode_header(bytes)?;
    // Parameters outside the KDF's bounds can only come from an edited header.
    let key = header
        .kdf
        .derive_key32(pass)
        .map_err(|_| TransferError::Altered)?;
    let plain = crypto::open(&key, &bytes[aad_len..], &bytes[..aad_len])
        .map_err(|_| TransferError::Altered)?;
    let body = ExportBody::from_json(&plain)?;
    Ok((header, body))
}

/// The plain header and the length of the associated data (everything before the nonce).
pub(crate) fn decode_header(bytes: &[u8]) -> Result<(ContainerHeader, usize), TransferError> {
    if bytes.len() < PREFIX_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return Err(TransferError::NotAContainer);
    }
    let at = MAGIC.len();
    let version = u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    if version != CONTAINER_VERSION {
        return Err(TransferError::UnsupportedVersion(version));
    }
    let len_bytes = [bytes[at + 2], bytes[at + 3], bytes[at + 4], bytes[at + 5]];
    let json_len = u32::from_le_bytes(len_bytes) as usize;
    if json_len > MAX_HEADER_LEN || PREFIX_LEN + json_len > bytes.len() {
        return Err(TransferError::Altered);
    }
    let end = PREFIX_LEN + json_len;
    let header: ContainerHeader =
        serde_json::from_slice(&bytes[PREFIX_LEN..end]).map_err(|_| TransferError::Altered)?;
    let work = u64::from(header.kdf.m_cost_kib) * u64::from(header.kdf.t_cost);
    if header.kdf.m_cost_kib > MAX_M_COST_KIB
        || header.kdf.t_cost > MAX_T_COST
        || work > MAX_KDF_WORK
    {
        return Err(TransferError::Altered);
    }
    Ok((header, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyMaterial;
    use crate::keystore::{Cipher, GroupTag, KeyTag, Name, State};
    use crate::transfer::{ExportedGroup, ExportedRecord};

    fn pass(s: &str) -> Passphrase {
        Passphrase::new(s.into())
    }

    /// Cheap KDF parameters, so that every byte of a container can be tried.
    fn cheap_header() -> ContainerHeader {
        ContainerHeader {
            kdf: KdfParams {
                m_cost_kib: 8,
                t_cost: 1,
                ..KdfParams::with_fresh_salt()
            },
            created: Timestamp(1_700_000_000_000_000_000),
        }
    }

    fn body() -> ExportBody {
        ExportBody {
            groups: vec![ExportedGroup {
                name: Name::parse("pool").unwrap(),
                tag: GroupTag::random(),
                cipher: Cipher::Aes256,
                description: "secret plans".into(),
                created: Timestamp(1),
                modified: Timestamp(2),
                records: vec![ExportedRecord {
                    name: Name::parse("k").unwrap(),
                    tag: KeyTag::random(),
                    state: State::Deprecated,
                    description: String::new(),
                    created: Timestamp(3),
                    modified: Timestamp(4),
                    derivation: None,
                    key: KeyMaterial::from_vec(vec![0xa7; 32]),
                }],
            }],
        }
    }

    #[test]
    fn round_trip() {
        let (h, b) = (cheap_header(), body());
        let bytes = seal_with(&h, &pass("pw"), &b).unwrap();
        assert!(bytes.starts_with(MAGIC));
        let (got, back) = open(&bytes, &pass("pw")).unwrap();
        assert_eq!(got, h);
        assert_eq!(back.groups[0].records[0].key, b.groups[0].records[0].key);
        assert_eq!(back.groups[0].records[0].state, State::Deprecated);
        assert_eq!(back.groups[0].description, "secret plans");
    }

    #[test]
    fn wrong_passphrase_is_refused() {
        let bytes = seal_with(&cheap_header(), &pass("pw"), &body()).unwrap();
        assert!(matches!(
            open(&bytes, &pass("pw2")),
            Err(TransferError::Altered)
        ));
    }

    #[test]
    fn every_edited_byte_is_refused() {
        let bytes = seal_with(&cheap_header(), &pass("pw"), &body()).unwrap();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let r = open(&bad, &pass("pw"));
            assert!(r.is_err(), "byte {i} of {} was not noticed", bytes.len());
            if i >= MAGIC.len() + 2 {
                assert!(matches!(r, Err(TransferError::Altered)), "byte {i}: {r:?}");
            }
        }
        for len in 0..bytes.len() {
            assert!(
                open(&bytes[..len], &pass("pw")).is_err(),
                "truncated to {len}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(open(&longer, &pass("pw")).is_err());
    }

    #[test]
    fn an_expensive_header_is_refused_before_any_work() {
        let mut h = cheap_header();
        let bytes = seal_with(&h, &pass("pw"), &body()).unwrap();
        // The same sealed body behind a header that asks for 4 GiB.
        let sealed = &bytes[PREFIX_LEN + serde_json::to_vec(&h).unwrap().len()..];
        h.kdf.m_cost_kib = 4 * 1024 * 1024;
        let json = serde_json::to_vec(&h).unwrap();
        let mut edited = MAGIC.to_vec();
        edited.extend_from_slice(&CONTAINER_VERSION.to_le_bytes());
        edited.extend_from_slice(&(json.len() as u32).to_le_bytes());
        edited.extend_from_slice(&json);
        edited.extend_from_slice(sealed);
        let start = std::time::Instant::now();
        assert!(matches!(
            open(&edited, &pass("pw")),
            Err(TransferError::Altered)
        ));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }

    /// The bounds: the defaults `seal` writes pass; more than 4 times their memory, or their
    /// work (memory times passes), is refused before the derivation starts.
    #[test]
    fn kdf_bounds_admit_the_defaults_and_refuse_costly_headers() {
        let with = |m_cost_kib: u32, t_cost: u32| ContainerHeader {
            kdf: KdfParams {
                m_cost_kib,
                t_cost,
                ..KdfParams::with_fresh_salt()
            },
            created: Timestamp(1),
        };
        let framed = |h: &ContainerHeader| {
            let json = serde_json::to_vec(h).unwrap();
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&CONTAINER_VERSION.to_le_bytes());
            b.extend_from_slice(&(json.len() as u32).to_le_bytes());
            b.extend_from_slice(&json);
            b.extend_from_slice(&[0; 28]);
            b
        };
        let d = KdfParams::with_fresh_salt();
        for (m, t) in [
            (d.m_cost_kib, d.t_cost),
            (MAX_M_COST_KIB, 3),
            (8, MAX_T_COST),
            (MAX_M_COST_KIB / 4, 12),
        ] {
            assert!(decode_header(&framed(&with(m, t))).is_ok(), "{m} KiB x {t}");
        }
        let start = std::time::Instant::now();
        for (m, t) in [
            (MAX_M_COST_KIB + 1, 1),
            (8, MAX_T_COST + 1),
            (MAX_M_COST_KIB, 4),
            (MAX_M_COST_KIB / 4, 13),
            (1024 * 1024, 16),
            (u32::MAX, u32::MAX),
        ] {
            assert!(
                matches!(
                    open(&framed(&with(m, t)), &pass("pw")),
                    Err(TransferError::Altered)
                ),
                "{m} KiB x {t}"
            );
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn other_files_and_versions_are_named() {
        assert!(matches!(
            open(b"KMSFS-DATA\nxxxxxxxxxxxxxxxxxxxxxx", &pass("pw")),
            Err(TransferError::NotAContainer)
        ));
        let mut bytes = seal_with(&cheap_header(), &pass("pw"), &body()).unwrap();
        bytes[MAGIC.len()] = 2;
        assert!(matches!(
            open(&bytes, &pass("pw")),
            Err(TransferError::UnsupportedVersion(2))
        ));
    }
}
