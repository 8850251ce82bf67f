//! A real SoftHSM2 with tokens of its own, made once per test binary (`softhsm::shared()`).
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` from the environment when the module is initialised
//! (`C_Initialize`, once per process) and only sees the tokens that exist then. So the
//! first caller writes a private configuration, makes every token with `softhsm2-util`,
//! and only then sets `SOFTHSM2_CONF` for this process; every test must call `shared()`
//! before anything loads the module. The guard it returns also runs the tests one at a time
//! on the token, because a PKCS#11 login belongs to the whole process.
//!
//! Missing SoftHSM2 fails the test with a panic saying what to install; it never skips.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

/// Debian's `softhsm2` (`libsofthsm2`) package puts the module here.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const UTIL: &str = "softhsm2-util";
pub const PIN: &str = "kmsfs-user-pin-1234";
pub const SO_PIN: &str = "kmsfs-so-pin-5678";
/// The token most tests use.
pub const TOKEN: &str = "kmsfs-test";
/// A second token, for keys of the same label that are different keys.
pub const OTHER_TOKEN: &str = "kmsfs-other";

#[derive(Debug)]
pub struct SoftHsm {
    /// The token directory and configuration, below cargo's target/tmp.
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub module: PathBuf,
}

static SHARED: OnceLock<Mutex<SoftHsm>> = OnceLock::new();

/// The process's SoftHSM2, set up on first use; hold the guard for the whole test.
pub fn shared() -> MutexGuard<'static, SoftHsm> {
    SHARED
        .get_or_init(|| Mutex::new(set_up()))
        .lock()
        // A failed test must not fail the ones after it.
        .unwrap_or_else(PoisonError::into_inner)
}

fn set_up() -> SoftHsm {
    let module = PathBuf::from(MODULE);
    assert!(
        module.exists(),
        "SoftHSM2 is not installed: {MODULE} is missing (apt-get install softhsm2)"
    );
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    prune_old(root);
    let dir = tempfile::Builder::new()
        .prefix("softhsm-")
        .tempdir_in(root)
        .expect("a directory for the SoftHSM2 tokens")
        // Kept for the life of the process (a static is never dropped); prune_old removes it
        // on a later run.
        .keep();
    let tokens = dir.join("tokens");
    fs::create_dir(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n\
             slots.removable = false\n",
            tokens.display()
        ),
    )
    .unwrap();
    for label in [TOKEN, OTHER_TOKEN] {
        let out = Command::new(UTIL)
            .args(["--init-token", "--free", "--label", label])
            .args(["--pin", PIN, "--so-pin", SO_PIN])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {UTIL} ({e}): SoftHSM2 is not installed (apt-get install softhsm2)"
                )
            });
        assert!(
            out.status.success(),
            "{UTIL} --init-token --label {label}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Only now, once, before any C_Initialize of this process (every test calls shared()
    // first, and the others wait for this initialiser).
    std::env::set_var("SOFTHSM2_CONF", &conf);
    SoftHsm { dir, conf, module }
}

/// Token directories of earlier runs (older than an hour, so never a running one's).
fn prune_old(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < hour_ago);
        if old && entry.file_name().to_string_lossy().starts_with("softhsm-") {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
