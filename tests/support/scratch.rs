//! A private scratch directory per test: everything a test makes lives below it, and goes
//! with it.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Output;

use tempfile::TempDir;

use super::cli::bash_in;

pub struct Scratch {
    pub dir: TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("kmsfs-drill")
            .tempdir()
            .expect("tempdir");
        Scratch { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Creates `rel` (and parents) mode 0700 and returns it.
    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).unwrap();
        p
    }

    /// Writes a file mode 0600 (passphrase files, say).
    pub fn file(&self, rel: &str, contents: &str) -> PathBuf {
        let p = self.path(rel);
        fs::write(&p, contents).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// `bash -c script` in the scratch directory (see `cli::bash_in`).
    pub fn bash(&self, script: &str, env: &[(&str, &OsStr)]) -> Output {
        bash_in(self.dir.path(), script, env)
    }
}
