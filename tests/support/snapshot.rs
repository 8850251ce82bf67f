//! What a keystore is, in forms a test can compare: everything a mount shows (through a
//! `Daemon`, with `bash` and `jq`), its records and keys, and the digests and modes of its
//! backing files.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use kmsfs::store::BACKUP_SET;
use sha2::{Digest, Sha256};

use super::daemon::Daemon;

/// Modes (permission bits) of the three backing files.
pub fn modes(data: &Path) -> Vec<u32> {
    BACKUP_SET
        .iter()
        .map(|f| {
            fs::metadata(data.join(f))
                .unwrap_or_else(|e| panic!("{f}: {e}"))
                .permissions()
                .mode()
                & 0o7777
        })
        .collect()
}

/// SHA-256 of each backing file, and its length and mtime.
pub fn digests(data: &Path) -> Vec<String> {
    BACKUP_SET
        .iter()
        .map(|f| {
            let p = data.join(f);
            let mut bytes = Vec::new();
            File::open(&p)
                .and_then(|mut file| file.read_to_end(&mut bytes))
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let meta = fs::metadata(&p).unwrap();
            format!(
                "{f} {} len {} mtime {:?}",
                hex::encode(Sha256::digest(&bytes)),
                meta.len(),
                meta.modified().unwrap()
            )
        })
        .collect()
}

/// Everything the mount shows, as text: `.status` (without the data directory and the
/// freeze and the audit log's path, which differ between a live keystore and its restored copy), every group's
/// `.group.json`, `.cipher`, `.description` and `.active`, every record's `record.json`,
/// `state`, `description` and key (or "unreadable"), and every `.by-tag` link.
/// JSON goes through `jq -S` so that the comparison does not depend on formatting.
pub fn snapshot(d: &Daemon) -> String {
    d.sh_ok(
        r#"set -euo pipefail
shopt -s nullglob
jq -cS 'del(.data_dir, .quiesced, .audit)' .status
for g in */; do
    g=${g%/}
    echo "group $g"
    jq -cS . "$g/.group.json"
    echo "cipher $(cat "$g/.cipher")"
    echo "description $(base64 -w0 "$g/.description")"
    echo "active $(readlink "$g/.active" || echo -)"
    for r in "$g"/*/; do
        r=${r%/}
        echo "record $r"
        jq -cS . "$r/record.json"
        echo "state $(cat "$r/state")"
        echo "description $(base64 -w0 "$r/description")"
        if key=$(base64 -w0 "$r/key" 2>/dev/null); then
            echo "key $key"
        else
            echo "key unreadable"
        fi
    done
done
for t in .by-tag/*; do
    echo "tag ${t#.by-tag/} -> $(readlink "$t")"
done
"#,
    )
}

/// Records by tag: (group/name, state), read through `.by-tag`.
pub fn records(d: &Daemon) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(d.p(".by-tag")).expect("read .by-tag") {
        let tag = e.unwrap().file_name().to_string_lossy().into_owned();
        let rec = d.json(&format!(".by-tag/{tag}/record.json"));
        let path = format!(
            "{}/{}",
            rec["group"].as_str().unwrap(),
            rec["name"].as_str().unwrap()
        );
        out.insert(tag, (path, rec["state"].as_str().unwrap().to_string()));
    }
    out
}

/// Adds the key of every record whose state allows reading it (active, inactive), by tag.
/// A key never changes for a tag, so a key seen once is the key for good.
pub fn collect_keys(d: &Daemon, keys: &mut BTreeMap<String, Vec<u8>>) {
    for (tag, (path, state)) in records(d) {
        if state == "active" || state == "inactive" {
            let key = fs::read(d.p(&format!("{path}/key")))
                .unwrap_or_else(|e| panic!("read {path}/key ({state}): {e}"));
            if let Some(old) = keys.insert(tag.clone(), key.clone()) {
                assert_eq!(old, key, "the key of {path} (tag {tag}) changed");
            }
        }
    }
}

/// Moves every record to a state whose key can be read (prelive -> active, deprecated ->
/// inactive, terminated -> deprecated -> inactive), then reads all keys. For a restored copy,
/// after its snapshot was compared: it changes states.
pub fn unlock_all_keys(d: &Daemon) -> BTreeMap<String, Vec<u8>> {
    for (_, (path, state)) in records(d) {
        let steps: &[&str] = match state.as_str() {
            "prelive" => &["active"],
            "deprecated" => &["inactive"],
            "terminated" => &["deprecated", "inactive"],
            _ => &[],
        };
        for s in steps {
            fs::write(d.p(&format!("{path}/state")), s)
                .unwrap_or_else(|e| panic!("{path}: {state} -> {s}: {e}"));
        }
    }
    let mut keys = BTreeMap::new();
    collect_keys(d, &mut keys);
    assert_eq!(keys.len(), records(d).len(), "every key readable now");
    keys
}
