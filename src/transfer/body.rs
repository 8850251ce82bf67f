//! What a container holds: groups with their metadata, and records with their metadata and
//! plaintext keys. Serialised as JSON into buffers that are wiped when dropped.

use std::collections::HashSet;
use std::io::Write;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::TransferError;
use crate::crypto::{KdfParams, KeyMaterial};
use crate::keystore::{Cipher, GroupTag, KeyTag, Name, State, Timestamp, MAX_DESCRIPTION_BYTES};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportBody {
    pub groups: Vec<ExportedGroup>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedGroup {
    pub name: Name,
    pub tag: GroupTag,
    pub cipher: Cipher,
    pub description: String,
    pub created: Timestamp,
    pub modified: Timestamp,
    pub records: Vec<ExportedRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedRecord {
    pub name: Name,
    pub tag: KeyTag,
    pub state: State,
    pub description: String,
    pub created: Timestamp,
    pub modified: Timestamp,
    /// Kept so that a passphrase-derived key can still be recovered from its passphrase,
    /// salt and tag after the import.
    pub derivation: Option<KdfParams>,
    #[serde(with = "key_hex")]
    pub key: KeyMaterial,
}

impl ExportBody {
    pub fn record_count(&self) -> usize {
        self.groups.iter().map(|g| g.records.len()).sum()
    }

    pub fn to_json(&self) -> Zeroizing<Vec<u8>> {
        let mut w = ZeroizingWriter(Zeroizing::new(Vec::with_capacity(4096)));
        serde_json::to_writer(&mut w, self).expect("the body serialises");
        w.0
    }

    /// Parses a decrypted body and checks what the keystore would otherwise refuse halfway.
    pub fn from_json(bytes: &[u8]) -> Result<ExportBody, TransferError> {
        let body: ExportBody = serde_json::from_slice(bytes)
            .map_err(|e| TransferError::Invalid(format!("unreadable body: {e}")))?;
        body.validate()?;
        Ok(body)
    }

    fn validate(&self) -> Result<(), TransferError> {
        let bad = |m: String| Err(TransferError::Invalid(m));
        let mut group_names = HashSet::new();
        let mut group_tags = HashSet::new();
        let mut record_tags = HashSet::new();
        for g in &self.groups {
            if !group_names.insert(&g.name) || !group_tags.insert(&g.tag) {
                return bad(format!("group \"{}\" appears twice", g.name));
            }
            if g.description.len() > MAX_DESCRIPTION_BYTES {
                return bad(format!("group \"{}\" has an oversized description", g.name));
            }
            let mut names = HashSet::new();
            for r in &g.records {
                if !names.insert(&r.name) || !record_tags.insert(&r.tag) {
                    return bad(format!("record \"{}/{}\" appears twice", g.name, r.name));
                }
                if r.key.len() != g.cipher.key_len() {
                    return bad(format!(
                        "record \"{}/{}\" holds a {}-byte key in an {} group",
                        g.name,
                        r.name,
                        r.key.len(),
                        g.cipher
                    ));
                }
                if r.description.len() > MAX_DESCRIPTION_BYTES {
                    return bad(format!(
                        "record \"{}/{}\" has an oversized description",
                        g.name, r.name
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A `Vec` that grows by moving to a new buffer and wiping the old one; growing in place would
/// hand freed memory holding plaintext keys back to the allocator.
struct ZeroizingWriter(Zeroizing<Vec<u8>>);

impl Write for ZeroizingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let need = self.0.len() + buf.len();
        if need > self.0.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(need.max(2 * self.0.capacity())));
            bigger.extend_from_slice(&self.0);
            self.0 = bigger;
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Keys as lowercase hex, through wiped buffers only.
mod key_hex {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};
    use zeroize::Zeroizing;

    use crate::crypto::KeyMaterial;

    const DIGITS: &[u8; 16] = b"0123456789abcdef";

    pub fn serialize<S: Serializer>(key: &KeyMaterial, s: S) -> Result<S::Ok, S::Error> {
        let mut text = Zeroizing::new(Vec::with_capacity(2 * key.len()));
        for b in key.expose() {
            text.push(DIGITS[usize::from(b >> 4)]);
            text.push(DIGITS[usize::from(b & 0xf)]);
        }
        s.serialize_str(std::str::from_utf8(&text).expect("hex digits are ASCII"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<KeyMaterial, D::Error> {
        d.deserialize_str(KeyVisitor)
    }

    struct KeyVisitor;

    impl Visitor<'_> for KeyVisitor {
        type Value = KeyMaterial;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a key as hex")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyMaterial, E> {
            let mut key = Zeroizing::new(vec![0u8; v.len() / 2]);
            hex::decode_to_slice(v, &mut key[..])
                .map_err(|_| E::custom("a key is not valid hex"))?;
            Ok(KeyMaterial::from_vec(std::mem::take(&mut *key)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, key: Vec<u8>) -> ExportedRecord {
        ExportedRecord {
            name: Name::parse(name).unwrap(),
            tag: KeyTag::random(),
            state: State::Active,
            description: String::new(),
            created: Timestamp(1),
            modified: Timestamp(1),
            derivation: None,
            key: KeyMaterial::from_vec(key),
        }
    }

    fn group(name: &str, cipher: Cipher, records: Vec<ExportedRecord>) -> ExportedGroup {
        ExportedGroup {
            name: Name::parse(name).unwrap(),
            tag: GroupTag::random(),
            cipher,
            description: String::new(),
            created: Timestamp(1),
            modified: Timestamp(1),
            records,
        }
    }

    #[test]
    fn keys_are_hex_and_survive_a_round_trip() {
        let body = ExportBody {
            groups: vec![group(
                "g",
                Cipher::Aes128,
                vec![record("r", (0u8..16).collect())],
            )],
        };
        let json = body.to_json();
        let text = std::str::from_utf8(&json).unwrap();
        assert!(
            text.contains(r#""key":"000102030405060708090a0b0c0d0e0f""#),
            "{text}"
        );
        let back = ExportBody::from_json(&json).unwrap();
        assert_eq!(
            back.groups[0].records[0].key.expose(),
            &(0u8..16).collect::<Vec<_>>()[..]
        );
        assert_eq!(back.record_count(), 1);
    }

    #[test]
    fn the_writer_keeps_everything_across_growth() {
        let mut w = ZeroizingWriter(Zeroizing::new(Vec::with_capacity(1)));
        for i in 0..1000u32 {
            w.write_all(&i.to_le_bytes()).unwrap();
        }
        assert_eq!(w.0.len(), 4000);
        assert_eq!(&w.0[4..8], &1u32.to_le_bytes());
    }

    #[test]
    fn inconsistent_bodies_are_refused() {
        let cases = vec![
            vec![group("g", Cipher::Aes256, vec![record("r", vec![1; 16])])],
            vec![
                group("g", Cipher::Aes256, vec![]),
                group("g", Cipher::Aes128, vec![]),
            ],
            vec![group(
                "g",
                Cipher::Aes128,
                vec![record("r", vec![1; 16]), record("r", vec![2; 16])],
            )],
        ];
        for groups in cases {
            let json = ExportBody { groups }.to_json();
            assert!(matches!(
                ExportBody::from_json(&json),
                Err(TransferError::Invalid(_))
            ));
        }
        let text = r#"{"groups":[{"name":"g","tag":"00","cipher":"AES_128","description":"","created":1,"modified":1,"records":[{"name":"r","tag":"01","state":"active","description":"","created":1,"modified":1,"derivation":null,"key":"zz"}]}]}"#;
        assert!(matches!(
            ExportBody::from_json(text.as_bytes()),
            Err(TransferError::Invalid(_))
        ));
    }
}
