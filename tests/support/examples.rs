//! The admin scripts of `examples/` run as an administrator runs them, for the drills of
//! every way of keeping master keys.

use std::path::{Path, PathBuf};

use super::cli::{ok, path_with_kmsfs};

/// Runs `examples/NAME` with `args`, `KMSFS_UNLOCK` set to `unlock`: exit 0 required.
pub fn drill(dir: &Path, name: &str, args: &[&str], unlock: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    let tmp = dir.join("drill-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = std::process::Command::new("bash")
        .arg(&script)
        .args(args)
        .current_dir(dir)
        .env("PATH", path_with_kmsfs())
        .env("TMPDIR", &tmp)
        .env("KMSFS_UNLOCK", unlock.join(" "))
        .env("KMSFS_LEASE", "60")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    ok(name, out)
}

/// The one backup `backup.sh` made below `root`.
pub fn the_backup(root: &Path) -> PathBuf {
    let mut v: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(v.len(), 1, "{v:?}");
    v.pop().unwrap()
}
