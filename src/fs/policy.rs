//! `--key-policy FILE`: the executables allowed to open `key` files, by path and SHA-256, so
//! that only the backup program reads keys, not a shell running as the same account.
//!
//! ```json
//! {"allow": [{"path": "/usr/bin/restic", "sha256": "9f86d0..."}]}
//! ```
//!
//! At every open of a `key`, the caller's executable is what the kernel says it runs:
//! `/proc/PID/exe`. Its path is the link's target, and its bytes are read through that link,
//! which opens the very file the process was started from (even if the path has since been
//! replaced or deleted), so swapping the file on disk after a check changes nothing. Hashes
//! are cached by (device, inode, size, mtime, ctime). Limits, also in SECURITY.md: a process
//! that runs an allowed program can still be made to do other things by whoever controls it
//! (its arguments, LD_PRELOAD — refused here — or ptrace by the same user unless the program
//! is not dumpable); an allowed interpreter (python, bash) allows every script it runs; the
//! pid of a request names the caller at the time of the request (a process that exits and
//! whose pid is reused within that instant is not told apart).

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    allow: Vec<Allowed>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Allowed {
    path: String,
    sha256: String,
}

type Identity = (u64, u64, u64, i64, i64);

#[derive(Debug)]
pub struct KeyPolicy {
    allow: Vec<Allowed>,
    hashes: Mutex<HashMap<Identity, String>>,
}

/// Why a caller may not open a key: named in the refusal, `.errors` and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAllowed {
    pub exe: String,
    pub reason: &'static str,
}

impl KeyPolicy {
    pub fn load(path: &Path) -> Result<KeyPolicy, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the key policy {}: {e}", path.display()))?;
        let file: PolicyFile = serde_json::from_str(&text).map_err(|e| {
            format!(
                "the key policy {} is not {{\"allow\": [{{\"path\": ..., \"sha256\": ...}}]}}: {e}",
                path.display()
            )
        })?;
        for a in &file.allow {
            let hex_ok = a.sha256.len() == 64
                && a.sha256
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if !a.path.starts_with('/') || !hex_ok {
                return Err(format!(
                    "the key policy {}: {:?} needs an absolute path and a lowercase hex SHA-256",
                    path.display(),
                    a.path
                ));
            }
        }
        Ok(KeyPolicy {
            allow: file.allow,
            hashes: Mutex::default(),
        })
    }

    /// Whether process `pid` may open a key.
    pub fn check(&self, pid: u32) -> Result<(), NotAllowed> {
        let link = format!("/proc/{pid}/exe");
        let exe = std::fs::read_link(&link)
            .map(|p| p.to_string_lossy().into_owned())
            .map_err(|_| NotAllowed {
                exe: "?".into(),
                reason: "its executable cannot be determined",
            })?;
        let refuse = |reason| NotAllowed {
            exe: exe.clone(),
            reason,
        };
        let candidates: Vec<&Allowed> = self.allow.iter().filter(|a| a.path == exe).collect();
        if candidates.is_empty() {
            return Err(refuse("it is not in the key policy"));
        }
        if preloads(pid) {
            return Err(refuse("it runs with LD_PRELOAD or LD_LIBRARY_PATH set"));
        }
        let hash = self
            .hash_of(&link)
            .map_err(|_| refuse("its executable cannot be read"))?;
        if candidates.iter().any(|a| a.sha256 == hash) {
            Ok(())
        } else {
            Err(refuse("its SHA-256 is not the one the key policy allows"))
        }
    }

    fn hash_of(&self, link: &str) -> std::io::Result<String> {
        let mut f = std::fs::File::open(link)?;
        let m = f.metadata()?;
        let id = (
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime_nsec() + m.mtime() * 1_000_000_000,
            m.ctime(),
        );
        if let Some(h) = self.hashes.lock().ok().and_then(|c| c.get(&id).cloned()) {
            return Ok(h);
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let h = hex::encode(hasher.finalize());
        if let Ok(mut c) = self.hashes.lock() {
            c.insert(id, h.clone());
        }
        Ok(h)
    }
}

/// Whether the process runs with a preloaded or redirected library: an allowed program made
/// to run someone else's code.
fn preloads(pid: u32) -> bool {
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
        // Unreadable environment: cannot tell, so refuse.
        return true;
    };
    env.split(|b| *b == 0).any(|v| {
        v.starts_with(b"LD_PRELOAD=")
            || v.starts_with(b"LD_LIBRARY_PATH=")
            || v.starts_with(b"LD_AUDIT=")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_test_binary_is_allowed_only_by_its_own_hash() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::fs::read_link("/proc/self/exe").unwrap();
        let hash = hex::encode(Sha256::digest(std::fs::read(&me).unwrap()));
        let write = |allow: &str| {
            let p = dir.path().join("policy.json");
            std::fs::write(&p, allow).unwrap();
            KeyPolicy::load(&p)
        };
        let pid = std::process::id();
        let ok = write(&format!(
            r#"{{"allow":[{{"path":"{}","sha256":"{hash}"}}]}}"#,
            me.display()
        ))
        .unwrap();
        // Tests may run with LD_LIBRARY_PATH set by cargo: then the refusal says so.
        match ok.check(pid) {
            Ok(()) => {}
            Err(e) => assert!(e.reason.contains("LD_"), "{e:?}"),
        }
        let wrong = write(&format!(
            r#"{{"allow":[{{"path":"{}","sha256":"{}"}}]}}"#,
            me.display(),
            "0".repeat(64)
        ))
        .unwrap();
        assert!(wrong.check(pid).is_err());
        let other = write(&format!(
            r#"{{"allow":[{{"path":"/usr/bin/restic","sha256":"{hash}"}}]}}"#
        ))
        .unwrap();
        assert_eq!(
            other.check(pid).unwrap_err().reason,
            "it is not in the key policy"
        );
        for bad in [
            r#"{"allow":[{"path":"cat","sha256":"00"}]}"#,
            r#"{"deny":[]}"#,
            "[]",
        ] {
            assert!(write(bad).is_err(), "{bad}");
        }
    }
}
