//! The layout of KMS_DATA: a plain, self-checking header, then a log of frames, each sealed
//! under the HMK. The first frame is a snapshot of the whole keystore; every later frame is
//! one change. Appending a frame costs the same however large the keystore is; compaction
//! (rewriting the file as one snapshot) keeps the log from growing without bound.
//!
//! ```text
//! header: "KMSFS-DATA\n" | format u16 LE | json length u32 LE | header json | SHA-256 of all before
//! frame:  length u32 LE | !length u32 LE | seq u64 LE | sealed payload (nonce | ciphertext | tag)
//! ```
//! Every frame's associated data is the header's digest and the frame's sequence number, so
//! an altered header, a reordered, dropped-from-the-middle or transplanted frame fails to open.
//!
//! After the last whole frame, only what a crash during an append can leave is a torn tail
//! (`is_torn_tail` says exactly what: the frame cut short, or zeros to the end of the file
//! from the frame's start or a 512-byte boundary after it); anything else there is damage.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::AuditKey;
use crate::crypto::{Hmk, KdfParams, KeyId, SecretKey32};
use crate::keystore::{Change, Keystore, Snapshot, Timestamp};

pub const DATA_FILE: &str = "KMS_DATA";
const MAGIC: &[u8; 11] = b"KMSFS-DATA\n";
/// The format this kmsfs writes. Later versions must keep reading every earlier format (see
/// tests/golden). 2 added rotation (`Change::SetRotation`, a group's `rotation`, a record's
/// `state_since`); a format-1 file is rewritten as 2 before its first change that needs it.
pub const FORMAT_VERSION: u16 = 2;
const FRAME_PREFIX: usize = 16;
/// Far above any real frame (a snapshot of 100,000 records is about 50 MB); a larger length
/// can only be damage.
const MAX_FRAME: u32 = 1 << 30;

/// The plain part of KMS_DATA: what is needed to find or rebuild the keys, and nothing secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Random, new at each rewrite, so frames cannot be moved between two versions of the file.
    pub file_id: String,
    pub hmk_id: KeyId,
    pub kpk_id: KeyId,
    /// Present when the HMK is derived from a passphrase: what rebuilds it.
    pub hmk_kdf: Option<KdfParams>,
    pub kpk_kdf: Option<KdfParams>,
    pub created: Timestamp,
    /// When each key was last changed (`kmsfs change-key`); absent: never, since `created`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmk_changed: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kpk_changed: Option<Timestamp>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "frame", rename_all = "snake_case")]
enum Payload {
    Snapshot {
        snapshot: Snapshot,
        /// The audit log's key, once the HMK it was derived from has been changed: the chain
        /// goes on under the same key (`AuditKey::from_hmk` derives it otherwise).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audit_key: Option<CarriedAuditKey>,
    },
    Change {
        change: Change,
        /// Audit lines not yet synced in the audit log, the change's own last: this frame's
        /// fdatasync makes them durable too (one sync per change), and a start after a crash
        /// puts back in the log those it lost (`AuditLog::restore`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        audit: Vec<String>,
    },
}

/// The audit key as a snapshot carries it (sealed under the HMK with the rest of the frame).
#[derive(Serialize, Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
struct CarriedAuditKey {
    key: String,
    context: String,
}

/// How much of the audit lines the frames carry `decode_file` keeps (the latest): at least
/// twice what the audit log can have unsynced (`audit::SYNC_EVERY`).
pub const AUDIT_TAIL_MAX: usize = 2 * crate::audit::SYNC_EVERY;

#[derive(Debug, PartialEq, Eq)]
pub struct ParsedHeader {
    pub header: Header,
    pub format_version: u16,
    pub digest: [u8; 32],
    pub len: usize,
}

/// What a well-formed file holds.
// No Debug: it holds the whole keystore, whose printout helps no one.
#[allow(missing_debug_implementations)]
pub struct Loaded {
    pub parsed: ParsedHeader,
    pub keystore: Keystore,
    /// Frames in the file, the snapshot included; the next frame's sequence number.
    pub frames: u64,
    /// Bytes up to the end of the last whole frame.
    pub valid_len: u64,
    /// Bytes after that: the remains of a write a crash interrupted.
    pub torn_tail: u64,
    /// The latest audit lines the change frames carry, oldest first (at most `AUDIT_TAIL_MAX`
    /// bytes).
    pub audit_tail: Vec<String>,
    /// The audit key the snapshot carries, if the HMK was ever changed.
    pub audit_key: Option<AuditKey>,
}

pub fn encode_header(h: &Header) -> (Vec<u8>, [u8; 32]) {
    let json = serde_json::to_vec(h).expect("header serialises");
    let mut out = Vec::with_capacity(MAGIC.len() + 6 + json.len() + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    let digest: [u8; 32] = Sha256::digest(&out).into();
    out.extend_from_slice(&digest);
    (out, digest)
}

/// Reads the header alone; needs no key (for `regenerate`, and to say which key file is wrong).
pub fn decode_header(bytes: &[u8]) -> Result<ParsedHeader, String> {
    if bytes.len() < MAGIC.len() + 6 || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a kmsfs data file (bad magic)".into());
    }
    let mut at = MAGIC.len();
    let version = u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    at += 2;
    let json_len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
    at += 4;
    let end = at
        .checked_add(json_len)
        .and_then(|e| e.checked_add(32))
        .filter(|e| *e <= bytes.len())
        .ok_or("header is truncated or its length field is damaged")?;
    let body_end = end - 32;
    let digest: [u8; 32] = Sha256::digest(&bytes[..body_end]).into();
    if digest[..] != bytes[body_end..end] {
        return Err("header checksum mismatch: the header was altered or damaged".into());
    }
    if version == 0 || version > FORMAT_VERSION {
        return Err(format!(
            "format version {version} is not supported by this kmsfs (it reads 1 to {FORMAT_VERSION})"
        ));
    }
    let header: Header = serde_json::from_slice(&bytes[at..body_end])
        .map_err(|e| format!("header is not readable: {e}"))?;
    Ok(ParsedHeader {
        header,
        format_version: version,
        digest,
        len: end,
    })
}

fn aad(digest: &[u8; 32], seq: u64) -> [u8; 40] {
    let mut a = [0u8; 40];
    a[..32].copy_from_slice(digest);
    a[32..].copy_from_slice(&seq.to_le_bytes());
    a
}

fn encode_frame(hmk: &Hmk, digest: &[u8; 32], seq: u64, payload: &Payload) -> Vec<u8> {
    let plain = zeroize::Zeroizing::new(serde_json::to_vec(payload).expect("payload serialises"));
    let sealed = hmk.seal(&plain, &aad(digest, seq));
    let len = sealed.len() as u32;
    let mut out = Vec::with_capacity(FRAME_PREFIX + sealed.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&sealed);
    out
}

pub fn encode_change(
    hmk: &Hmk,
    digest: &[u8; 32],
    seq: u64,
    change: &Change,
    audit: &[String],
) -> Vec<u8> {
    encode_frame(
        hmk,
        digest,
        seq,
        &Payload::Change {
            change: change.clone(),
            audit: audit.to_vec(),
        },
    )
}

/// A whole file holding `ks` as one snapshot frame; `audit_key`: the audit key to carry (see
/// `Payload::Snapshot`).
pub fn encode_file(
    hmk: &Hmk,
    header: &Header,
    ks: &Keystore,
    audit_key: Option<&AuditKey>,
) -> Vec<u8> {
    let (mut out, digest) = encode_header(header);
    let frame = encode_frame(
        hmk,
        &digest,
        0,
        &Payload::Snapshot {
            snapshot: ks.to_snapshot(),
            audit_key: audit_key.map(|k| CarriedAuditKey {
                key: hex::encode(k.secret().expose()),
                context: k.context().to_string(),
            }),
        },
    );
    out.extend_from_slice(&frame);
    out
}

/// Authenticates and replays the whole file. What follows the last whole frame is the
/// `torn_tail` (never applied) only if a crash during an append can have left it (see
/// `is_torn_tail`); any other tail, any complete frame that fails to open, any gap in the
/// sequence, is damage.
pub fn decode_file(hmk: &Hmk, bytes: &[u8]) -> Result<Loaded, String> {
    let parsed = decode_header(bytes)?;
    let mut at = parsed.len;
    let mut seq = 0u64;
    let mut keystore: Option<Keystore> = None;
    let mut audit_tail = std::collections::VecDeque::new();
    let mut audit_key = None;
    let mut audit_bytes = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let torn = || is_torn_tail(rest, seq, at as u64);
        if rest.len() < FRAME_PREFIX {
            if torn() {
                break;
            }
            return Err(format!(
                "frame {seq} at byte {at}: the file ends with {} bytes that are not the start of a frame",
                rest.len()
            ));
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes"));
        let check = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if check != !len || len > MAX_FRAME {
            if torn() {
                break;
            }
            return Err(format!("frame {seq} at byte {at}: damaged length field"));
        }
        let stored_seq = u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes"));
        let end = FRAME_PREFIX + len as usize;
        if stored_seq != seq {
            if rest.len() <= end && torn() {
                break;
            }
            return Err(format!(
                "frame at byte {at} has sequence {stored_seq}, expected {seq}: frames were reordered or removed"
            ));
        }
        if rest.len() < end {
            // The length and the sequence number are those of the next frame: cut short.
            break;
        }
        let plain = match hmk.open(&rest[FRAME_PREFIX..end], &aad(&parsed.digest, seq)) {
            Ok(plain) => plain,
            Err(_) if rest.len() == end && torn() => break,
            Err(_) => {
                return Err(format!(
                    "frame {seq} at byte {at} fails authentication: the file was altered or damaged"
                ))
            }
        };
        let payload: Payload = serde_json::from_slice(&plain)
            .map_err(|e| format!("frame {seq} is not readable: {e}"))?;
        match (payload, keystore.as_mut()) {
            (
                Payload::Snapshot {
                    snapshot,
                    audit_key: carried,
                },
                None,
            ) => {
                if let Some(c) = carried {
                    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
                    hex::decode_to_slice(&c.key, &mut bytes[..])
                        .map_err(|_| "the snapshot's audit key is not 64 hex digits".to_string())?;
                    audit_key = Some(AuditKey::from_parts(
                        SecretKey32::from_slice(&bytes),
                        c.context.clone(),
                    ));
                }
                keystore = Some(
                    Keystore::from_snapshot(snapshot)
                        .map_err(|e| format!("snapshot breaks an invariant: {e}"))?,
                );
            }
            (Payload::Change { change, audit }, Some(ks)) => {
                ks.apply(&change)
                    .map_err(|e| format!("frame {seq} does not apply: {e}"))?;
                for line in audit {
                    audit_bytes += line.len();
                    audit_tail.push_back(line);
                }
                while audit_bytes > AUDIT_TAIL_MAX {
                    let old = audit_tail.pop_front().expect("bytes counted are in it");
                    audit_bytes -= old.len();
                }
            }
            (Payload::Snapshot { .. }, Some(_)) => {
                return Err(format!("frame {seq}: a snapshot in the middle of the log"));
            }
            (Payload::Change { .. }, None) => {
                return Err("the log does not start with a snapshot".into());
            }
        }
        at += end;
        seq += 1;
    }
    let keystore = keystore.ok_or("the file holds no snapshot frame (truncated?)")?;
    Ok(Loaded {
        parsed,
        keystore,
        frames: seq,
        valid_len: at as u64,
        torn_tail: (bytes.len() - at) as u64,
        audit_tail: audit_tail.into(),
        audit_key,
    })
}

/// Whether `tail`, the bytes after the last whole frame (starting at byte `at` of the file,
/// where frame `seq` would begin), is what a crash during the append of frame `seq` can
/// leave. An append is one write of the frame at the end of the file, then `fdatasync`; a
/// crash before the sync completes can leave:
///
/// 1. an incomplete frame prefix: the first bytes of the frame, then nothing (the file
///    size covers only what was written): the length field, its complement and the
///    sequence number, as far as the tail holds them, are those of frame `seq`, and the
///    tail is shorter than the frame they announce;
/// 2. zeros from some point to the end of the file: the file size was extended but the
///    data never reached the disk (XFS, ext4 `data=writeback`), and what was not written
///    reads as zeros. Unwritten space is whole blocks, so the zeros start at the frame
///    itself (`at`) or at a multiple of 512 bytes of the file (the smallest block of any
///    Linux file system), or a little earlier where the bytes written before that boundary
///    end in zeros themselves (those of the frame's prefix, or at most `WRITTEN_ZEROS` of
///    its sealed part); what comes before the boundary is an incomplete frame prefix as in
///    1 (it may be the whole length of the frame: then it does not authenticate), and the
///    tail is no longer than the frame whose length field it holds.
///
/// Anything else is damage: a tail that is not the start of frame `seq`, zeros followed by
/// other bytes, zeros starting inside a block (further from its end than that), or more
/// bytes than the frame announces.
/// Cutting a tail of these shapes from a file is the same as cutting whole frames off its
/// end, which cannot be detected from the file alone either.
fn is_torn_tail(tail: &[u8], seq: u64, at: u64) -> bool {
    // 1: the tail as it is (zeros in it may be bytes of the frame) begins frame `seq`.
    if announced_len(tail, seq).is_some_and(|frame_len| tail.len() < frame_len) {
        return true;
    }
    // 2: what precedes the zeros begins frame `seq`, and the zeros start at a block. What
    // was written may itself end in zero bytes (the high bytes of the sequence number, or by
    // chance a few of the sealed part): the block starts at the first boundary at or after
    // the last byte that is not zero.
    let written = tail.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let zeros_from = match written {
        0 => 0,
        w => ((at + w as u64).next_multiple_of(512) - at) as usize,
    };
    let sealed_zeros = zeros_from.saturating_sub(written.max(FRAME_PREFIX));
    zeros_from < tail.len()
        && sealed_zeros <= WRITTEN_ZEROS
        && announced_len(&tail[..zeros_from], seq).is_some_and(|frame_len| tail.len() <= frame_len)
}

/// How many zero bytes of a frame's sealed part may end what a torn append wrote before the
/// block boundary where its zeros start: sealed bytes are zero by chance (a run of 9 has odds
/// of 2^-72), so more is a frame zeroed from inside a block, which is damage. (Zeros in the
/// frame's prefix are compared with the prefix it must have.)
const WRITTEN_ZEROS: usize = 8;

/// If `bytes` can be the first bytes of frame `seq` (its length field, the complement and the
/// sequence number as far as `bytes` holds them), the length of that frame (the largest a
/// frame may have while `bytes` does not hold the whole length field).
fn announced_len(bytes: &[u8], seq: u64) -> Option<usize> {
    if bytes.len() < 4 {
        return Some(FRAME_PREFIX + MAX_FRAME as usize);
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    if len > MAX_FRAME {
        return None;
    }
    let mut prefix = [0u8; FRAME_PREFIX];
    prefix[0..4].copy_from_slice(&len.to_le_bytes());
    prefix[4..8].copy_from_slice(&(!len).to_le_bytes());
    prefix[8..16].copy_from_slice(&seq.to_le_bytes());
    let n = bytes.len().min(FRAME_PREFIX);
    (bytes[..n] == prefix[..n]).then_some(FRAME_PREFIX + len as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Kpk;
    use crate::keystore::{Cipher, GroupTag, Name};

    fn header(hmk: &Hmk) -> Header {
        Header {
            file_id: "00".repeat(16),
            hmk_id: hmk.id(),
            kpk_id: Kpk::random().id(),
            hmk_kdf: None,
            kpk_kdf: None,
            created: Timestamp(1),
            hmk_changed: None,
            kpk_changed: None,
        }
    }

    fn create_group(name: &str) -> Change {
        Change::CreateGroup {
            tag: GroupTag::random(),
            name: Name::parse(name).unwrap(),
            cipher: Cipher::Aes256,
            description: "secret words".into(),
            at: Timestamp(2),
        }
    }

    fn sample(hmk: &Hmk) -> Vec<u8> {
        let h = header(hmk);
        let mut bytes = encode_file(hmk, &h, &Keystore::new(), None);
        let digest = decode_header(&bytes).unwrap().digest;
        for (seq, name) in ["a", "b", "c"].iter().enumerate() {
            bytes.extend(encode_change(
                hmk,
                &digest,
                seq as u64 + 1,
                &create_group(name),
                &[format!("line for {name}")],
            ));
        }
        bytes
    }

    #[test]
    fn frames_carry_audit_lines_and_the_kept_tail_is_bounded() {
        let hmk = Hmk::random();
        let loaded = decode_file(&hmk, &sample(&hmk)).unwrap();
        assert_eq!(
            loaded.audit_tail,
            ["line for a", "line for b", "line for c"]
        );
        // A frame without lines is written exactly as before lines existed.
        let digest = [7; 32];
        let change = create_group("d");
        let plain = encode_change(&hmk, &digest, 1, &change, &[]);
        let opened = hmk.open(&plain[FRAME_PREFIX..], &aad(&digest, 1)).unwrap();
        assert!(!String::from_utf8_lossy(&opened).contains("audit"));

        let h = header(&hmk);
        let mut bytes = encode_file(&hmk, &h, &Keystore::new(), None);
        let digest = decode_header(&bytes).unwrap().digest;
        let line = "x".repeat(100 * 1024);
        for seq in 1..=12u64 {
            let change = create_group(&format!("g{seq}"));
            let lines = [format!("{seq:02}{line}")];
            bytes.extend(encode_change(&hmk, &digest, seq, &change, &lines));
        }
        let tail = decode_file(&hmk, &bytes).unwrap().audit_tail;
        let kept: usize = tail.iter().map(String::len).sum();
        assert!(kept <= AUDIT_TAIL_MAX, "{kept}");
        assert!(kept + 100 * 1024 + 2 > AUDIT_TAIL_MAX, "{kept}");
        assert!(tail.last().unwrap().starts_with("12"));
    }

    #[test]
    fn round_trip() {
        let hmk = Hmk::random();
        let loaded = decode_file(&hmk, &sample(&hmk)).unwrap();
        assert_eq!(loaded.keystore.group_count(), 3);
        assert_eq!(loaded.frames, 4);
        assert_eq!(loaded.torn_tail, 0);
    }

    #[test]
    fn every_byte_is_protected() {
        let hmk = Hmk::random();
        let bytes = sample(&hmk);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            match decode_file(&hmk, &b) {
                Err(_) => {}
                Ok(l) => panic!(
                    "flip at byte {i} of {} went unnoticed (torn tail {})",
                    bytes.len(),
                    l.torn_tail
                ),
            }
        }
    }

    #[test]
    fn a_cut_off_last_frame_is_a_torn_tail() {
        let hmk = Hmk::random();
        let bytes = sample(&hmk);
        let whole = decode_file(&hmk, &bytes).unwrap();
        for cut in 1..40 {
            let l = decode_file(&hmk, &bytes[..bytes.len() - cut]).unwrap();
            assert_eq!(l.keystore.group_count(), 2);
            assert_eq!(l.valid_len + l.torn_tail, whole.valid_len - cut as u64);
        }
    }

    #[test]
    fn zeros_after_the_last_frame_or_from_a_block_on_are_a_torn_tail() {
        let hmk = Hmk::random();
        let bytes = sample(&hmk);
        let whole = decode_file(&hmk, &bytes).unwrap();
        for n in [1, 15, 16, 17, 600, 5000] {
            let mut b = bytes.clone();
            b.resize(bytes.len() + n, 0);
            let l = decode_file(&hmk, &b).unwrap();
            assert_eq!(
                (l.valid_len, l.torn_tail),
                (whole.valid_len, n as u64),
                "{n}"
            );
            assert_eq!(l.keystore.group_count(), 3);
        }
        // The last append's size reached the disk but its data only up to a block boundary
        // (or none of it): zeros from there to the end.
        let last = decode_file(&hmk, &bytes[..bytes.len() - 1])
            .unwrap()
            .valid_len as usize;
        let blocks = (last.next_multiple_of(512)..bytes.len()).step_by(512);
        for from in std::iter::once(last).chain(blocks) {
            let mut b = bytes.clone();
            b[from..].fill(0);
            let l = decode_file(&hmk, &b).unwrap_or_else(|e| panic!("zeros from {from}: {e}"));
            assert_eq!((l.valid_len, l.keystore.group_count()), (last as u64, 2));
        }
    }

    #[test]
    fn any_other_tail_is_damage() {
        let hmk = Hmk::random();
        let bytes = sample(&hmk);
        let tails: [&[u8]; 4] = [
            b"garbage!",
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            &[0xff; 20],
            &[7; 3000],
        ];
        for tail in tails {
            let mut b = bytes.clone();
            b.extend_from_slice(tail);
            assert!(decode_file(&hmk, &b).is_err(), "{tail:?}");
        }
    }

    #[test]
    fn wrong_key_fails() {
        let hmk = Hmk::random();
        assert!(decode_file(&Hmk::random(), &sample(&hmk)).is_err());
    }

    #[test]
    fn nothing_secret_in_plaintext() {
        let hmk = Hmk::random();
        let bytes = sample(&hmk);
        let hay = String::from_utf8_lossy(&bytes);
        assert!(!hay.contains("secret words"));
    }
}
