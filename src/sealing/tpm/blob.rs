//! The sealed blob: what `Tpm::seal` returns and `Tpm::unseal` takes, and what an
//! administrator may find in a file. Self-describing, so that `describe` needs no TPM.
//!
//! Version 1, all integers big-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 8 | magic `KMSFSTPM` |
//! | 1 | version, 1 |
//! | 2 | PCR bank: the TPM algorithm id of its hash, `0x000B` (SHA-256) |
//! | 1 | n, the number of PCRs in the policy (1 to 24) |
//! | n | the PCR indexes, ascending, distinct, each 0 to 23 |
//! | 2 + p | p, then the sealed object's TPM2B_PUBLIC as the TPM marshals it |
//! | 2 + q | q, then its TPM2B_PRIVATE (encrypted by the TPM under the primary key) |
//! | 32 | SHA-256 of everything before it |
//!
//! The checksum finds damage (a flipped bit, a truncated copy) before the TPM is asked; it is
//! no protection against a forger, and needs none: the TPM checks the integrity of the sealed
//! object itself, and refuses one that was changed or that another TPM made.
//! The primary key is always the one of version 1's template (see `super::primary_template`).

use sha2::{Digest as _, Sha256};

use super::TpmError;

const MAGIC: &[u8; 8] = b"KMSFSTPM";
const VERSION: u8 = 1;
/// TPM_ALG_SHA256.
pub(super) const ALG_SHA256: u16 = 0x000B;
const CHECKSUM_LEN: usize = 32;
/// PCRs 0 to 23: the SHA-256 bank of a PC Client TPM.
pub(super) const PCR_COUNT: u8 = 24;

/// A decoded blob, checked: the PCRs are a valid selection and each TPM2B's own size agrees
/// with its length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Blob {
    /// Ascending, distinct, each below `PCR_COUNT`, at least one.
    pub pcrs: Vec<u8>,
    /// The marshalled TPM2B_PUBLIC of the sealed object.
    pub public: Vec<u8>,
    /// The marshalled TPM2B_PRIVATE of the sealed object.
    pub private: Vec<u8>,
}

fn bad(what: impl Into<String>) -> TpmError {
    TpmError::BadBlob(what.into())
}

/// Whether `pcrs` is a selection a blob may carry.
pub(super) fn valid_pcrs(pcrs: &[u8]) -> bool {
    !pcrs.is_empty() && pcrs.iter().all(|&p| p < PCR_COUNT) && pcrs.windows(2).all(|w| w[0] < w[1])
}

/// Whether `bytes` is a marshalled TPM2B whose size field covers exactly the rest.
fn whole_tpm2b(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && usize::from(u16::from_be_bytes([bytes[0], bytes[1]])) == bytes.len() - 2
}

fn put_sized(out: &mut Vec<u8>, part: &[u8], name: &str) -> Result<(), TpmError> {
    let len = u16::try_from(part.len())
        .map_err(|_| TpmError::Tpm(format!("the TPM returned a {name} too large to store")))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(part);
    Ok(())
}

impl Blob {
    pub fn encode(&self) -> Result<Vec<u8>, TpmError> {
        if !valid_pcrs(&self.pcrs) {
            return Err(TpmError::InvalidPolicy(format!(
                "PCRs {:?}: expected 1 to {PCR_COUNT} distinct indexes below {PCR_COUNT}",
                self.pcrs
            )));
        }
        let mut out = Vec::with_capacity(64 + self.public.len() + self.private.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&ALG_SHA256.to_be_bytes());
        // valid_pcrs: at most PCR_COUNT entries, so this fits.
        out.push(self.pcrs.len() as u8);
        out.extend_from_slice(&self.pcrs);
        put_sized(&mut out, &self.public, "TPM2B_PUBLIC")?;
        put_sized(&mut out, &self.private, "TPM2B_PRIVATE")?;
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Blob, TpmError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(bad(
                "not a kmsfs TPM blob (it does not start with KMSFSTPM)",
            ));
        }
        let mut r = Reader {
            bytes,
            at: MAGIC.len(),
        };
        let version = r.u8()?;
        if version != VERSION {
            return Err(bad(format!(
                "kmsfs TPM blob version {version}; this kmsfs reads version {VERSION}"
            )));
        }
        if bytes.len() < r.at + CHECKSUM_LEN {
            return Err(bad("truncated: shorter than its header and checksum"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if Sha256::digest(body).as_slice() != sum {
            return Err(bad("damaged or truncated: its checksum does not match"));
        }
        r.bytes = body;
        let bank = r.u16()?;
        if bank != ALG_SHA256 {
            return Err(bad(format!(
                "PCR bank {bank:#06x}; this kmsfs seals to SHA-256 ({ALG_SHA256:#06x}) only"
            )));
        }
        let n = usize::from(r.u8()?);
        let pcrs = r.take(n)?.to_vec();
        if !valid_pcrs(&pcrs) {
            return Err(bad(format!("invalid PCR selection {pcrs:?}")));
        }
        let public = r.sized()?.to_vec();
        let private = r.sized()?.to_vec();
        if r.at != body.len() {
            return Err(bad(format!(
                "{} unexpected bytes after the sealed object",
                body.len() - r.at
            )));
        }
        if !whole_tpm2b(&public) || !whole_tpm2b(&private) {
            return Err(bad(
                "the sealed object's TPM2B sizes disagree with the blob",
            ));
        }
        Ok(Blob {
            pcrs,
            public,
            private,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TpmError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| bad("truncated"))?;
        let part = &self.bytes[self.at..end];
        self.at = end;
        Ok(part)
    }

    fn u8(&mut self) -> Result<u8, TpmError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, TpmError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn sized(&mut self) -> Result<&'a [u8], TpmError> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tpm2b(content: &[u8]) -> Vec<u8> {
        let mut v = (content.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(content);
        v
    }

    fn sample() -> Blob {
        Blob {
            pcrs: vec![0, 7, 23],
            public: tpm2b(&[0x00, 0x08, 0x00, 0x0b, 1, 2, 3]),
            private: tpm2b(&[9; 100]),
        }
    }

    /// `body` (a blob without its checksum) with a correct checksum.
    fn with_checksum(mut body: Vec<u8>) -> Vec<u8> {
        let sum = Sha256::digest(&body);
        body.extend_from_slice(&sum);
        body
    }

    fn reseal(mut blob: Vec<u8>, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        blob.truncate(blob.len() - CHECKSUM_LEN);
        edit(&mut blob);
        with_checksum(blob)
    }

    fn bad_blob(bytes: &[u8]) -> String {
        match Blob::decode(bytes) {
            Err(TpmError::BadBlob(why)) => why,
            other => panic!("expected BadBlob, got {other:?}"),
        }
    }

    #[test]
    fn round_trip() {
        let b = sample();
        let bytes = b.encode().unwrap();
        assert_eq!(&bytes[..8], b"KMSFSTPM");
        assert_eq!(bytes[8], 1);
        assert_eq!(Blob::decode(&bytes).unwrap(), b);
        // The layout of the module documentation, field by field.
        assert_eq!(&bytes[9..12], &[0x00, 0x0b, 3]);
        assert_eq!(&bytes[12..15], &[0, 7, 23]);
        assert_eq!(bytes.len(), 15 + 2 + 9 + 2 + 102 + 32);
    }

    #[test]
    fn every_truncation_is_bad_blob() {
        let bytes = sample().encode().unwrap();
        for len in 0..bytes.len() {
            bad_blob(&bytes[..len]);
        }
    }

    #[test]
    fn bad_magic_and_version() {
        let mut bytes = sample().encode().unwrap();
        bytes[0] = b'X';
        assert!(bad_blob(&bytes).contains("not a kmsfs TPM blob"));
        assert!(bad_blob(b"hello").contains("not a kmsfs TPM blob"));
        let bytes = reseal(sample().encode().unwrap(), |b| b[8] = 2);
        assert!(bad_blob(&bytes).contains("version 2"));
    }

    #[test]
    fn any_flipped_bit_fails_the_checksum() {
        let bytes = sample().encode().unwrap();
        for i in 9..bytes.len() {
            for bit in [0x01, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= bit;
                assert!(bad_blob(&b).contains("checksum"), "byte {i}");
            }
        }
    }

    #[test]
    fn a_correct_checksum_over_a_bad_body_is_still_refused() {
        let enc = || sample().encode().unwrap();
        // Another bank, PCRs out of order, duplicated, out of range, none.
        assert!(bad_blob(&reseal(enc(), |b| b[10] = 0x04)).contains("PCR bank"));
        for pcrs in [[7, 0, 23], [7, 7, 23], [0, 7, 24]] {
            let bytes = reseal(enc(), |b| b[12..15].copy_from_slice(&pcrs));
            assert!(bad_blob(&bytes).contains("PCR selection"), "{pcrs:?}");
        }
        let none = reseal(enc(), |b| {
            b[11] = 0;
            b.drain(12..15);
        });
        bad_blob(&none);
        // Trailing bytes; a length past the end; a TPM2B whose own size disagrees.
        assert!(bad_blob(&reseal(enc(), |b| b.push(0))).contains("unexpected bytes"));
        assert!(bad_blob(&reseal(enc(), |b| b[15] = 0xff)).contains("truncated"));
        let inner = reseal(enc(), |b| b[18] = 0x06);
        assert!(bad_blob(&inner).contains("TPM2B sizes"));
    }

    #[test]
    fn encode_refuses_an_invalid_selection() {
        for pcrs in [vec![], vec![8, 7], vec![24]] {
            let b = Blob { pcrs, ..sample() };
            assert!(matches!(b.encode(), Err(TpmError::InvalidPolicy(_))));
        }
    }
}
