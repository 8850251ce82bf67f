//! What the files of a group and a record contain. Each is rendered from one object (and, for
//! `.group.json`, the name of its active record), never from the whole keystore, so that
//! reading one file costs the same with ten records or ten thousand.

use serde::Serialize;

use crate::keystore::{KeyGroup, KeyRecord, Keystore};

/// `.group.json`: keys in the contract's order (serde keeps struct field order).
#[derive(Serialize)]
struct GroupJson<'a> {
    name: &'a str,
    tag: &'a str,
    cipher: &'a str,
    description: &'a str,
    created: String,
    modified: String,
    records: usize,
    active: Option<&'a str>,
}

/// `record.json`: never the key; the salt only when the key came from a passphrase.
#[derive(Serialize)]
struct RecordJson<'a> {
    name: &'a str,
    tag: &'a str,
    group: &'a str,
    group_tag: &'a str,
    state: &'a str,
    cipher: &'a str,
    description: &'a str,
    created: String,
    modified: String,
    passphrase_derived: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    salt: Option<String>,
}

fn pretty_line<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these structs of strings and numbers cannot fail.
    let mut out = serde_json::to_vec_pretty(value).unwrap_or_default();
    out.push(b'\n');
    out
}

pub fn group_json(ks: &Keystore, g: &KeyGroup) -> Vec<u8> {
    let active = g
        .active()
        .and_then(|t| ks.record(t))
        .map(|r| r.name.as_str());
    pretty_line(&GroupJson {
        name: g.name.as_str(),
        tag: g.tag.as_str(),
        cipher: g.cipher.as_str(),
        description: &g.description,
        created: g.created.to_rfc3339(),
        modified: g.modified.to_rfc3339(),
        records: g.record_count(),
        active,
    })
}

pub fn record_json(ks: &Keystore, r: &KeyRecord) -> Vec<u8> {
    let group = ks.group(&r.group);
    pretty_line(&RecordJson {
        name: r.name.as_str(),
        tag: r.tag.as_str(),
        group: group.map(|g| g.name.as_str()).unwrap_or(""),
        group_tag: r.group.as_str(),
        state: r.state.as_str(),
        cipher: group.map(|g| g.cipher.as_str()).unwrap_or(""),
        description: &r.description,
        created: r.created.to_rfc3339(),
        modified: r.modified.to_rfc3339(),
        passphrase_derived: r.derivation.is_some(),
        salt: r.derivation.as_ref().map(|d| hex::encode(&d.salt)),
    })
}

/// One word and a newline, as `cat state` and `cat .cipher` show it.
pub fn word_line(word: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(word.len() + 1);
    out.extend_from_slice(word.as_bytes());
    out.push(b'\n');
    out
}

/// The target of `.active`: the record's name, relative to the group directory.
pub fn active_target(ks: &Keystore, g: &KeyGroup) -> Option<String> {
    let r = ks.record(g.active()?)?;
    Some(r.name.to_string())
}

/// The target of `.by-tag/TAG`: `../GROUP/RECORD`.
pub fn tag_target(ks: &Keystore, r: &KeyRecord) -> Option<String> {
    let g = ks.group(&r.group)?;
    Some(format!("../{}/{}", g.name, r.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::{Change, Cipher, GroupTag, KeyTag, Name, State, Timestamp, WrappedKey};

    fn keystore() -> (Keystore, GroupTag, KeyTag) {
        let mut ks = Keystore::new();
        let g = GroupTag::random();
        let k = KeyTag::random();
        ks.apply(&Change::CreateGroup {
            tag: g.clone(),
            name: Name::parse("pool").unwrap(),
            cipher: Cipher::Aes128,
            description: "d".into(),
            at: Timestamp(1_700_000_000_000_000_000),
        })
        .unwrap();
        ks.apply(&Change::CreateRecord {
            tag: k.clone(),
            group: g.clone(),
            name: Name::parse("k1").unwrap(),
            state: State::Active,
            description: String::new(),
            wrapped_key: WrappedKey(vec![0; 40]),
            key_len: 16,
            derivation: None,
            at: Timestamp(1_700_000_000_000_000_000),
        })
        .unwrap();
        (ks, g, k)
    }

    #[test]
    fn group_json_keys_in_order() {
        let (ks, g, _) = keystore();
        let text = String::from_utf8(group_json(&ks, ks.group(&g).unwrap())).unwrap();
        assert!(text.ends_with("}\n"));
        let keys: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix('"')?.split('"').next())
            .collect();
        assert_eq!(
            keys,
            [
                "name",
                "tag",
                "cipher",
                "description",
                "created",
                "modified",
                "records",
                "active"
            ]
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["active"], "k1");
        assert_eq!(v["records"], 1);
        assert_eq!(v["created"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn record_json_has_no_salt_unless_derived() {
        let (ks, _, k) = keystore();
        let text = String::from_utf8(record_json(&ks, ks.record(&k).unwrap())).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["group"], "pool");
        assert_eq!(v["cipher"], "AES_128");
        assert_eq!(v["state"], "active");
        assert_eq!(v["passphrase_derived"], false);
        assert!(v.get("salt").is_none());
        assert!(v.get("wrapped_key").is_none());
    }

    #[test]
    fn targets() {
        let (ks, g, k) = keystore();
        assert_eq!(
            active_target(&ks, ks.group(&g).unwrap()).as_deref(),
            Some("k1")
        );
        assert_eq!(
            tag_target(&ks, ks.record(&k).unwrap()).as_deref(),
            Some("../pool/k1")
        );
    }
}
