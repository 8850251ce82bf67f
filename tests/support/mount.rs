//! Real mounts served in-process: a fresh keystore and a fresh mount point per test, readiness
//! awaited by polling, and an unmount (joined) at the end even when the test panics.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kmsfs::fs::MountOptions;
use kmsfs::service::{Kms, KmsError};
use kmsfs::store::{InitOptions, StoreError};
use tempfile::TempDir;

pub struct Mounted {
    /// How it is mounted (every remount uses the same options).
    pub options: MountOptions,
    /// Holds `data/` (the keystore) and `mnt/` (the mount point).
    pub dir: TempDir,
    session: Option<fuser::BackgroundSession>,
    /// The service the mount serves, while mounted (another front end's way in).
    kms: Option<Arc<Kms>>,
}

/// Opens a keystore, retrying for a moment while a previous mount's last reference to it
/// (and so its lock) is still being dropped.
pub fn open_kms(data: &Path) -> Arc<Kms> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Kms::open(data) {
            Ok(k) => return k,
            Err(KmsError::Store(StoreError::Locked { .. })) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("cannot open the keystore in {}: {e}", data.display()),
        }
    }
}

impl Mounted {
    /// A new empty keystore, mounted.
    pub fn new() -> Mounted {
        Mounted::with_options(MountOptions::default())
    }

    /// A new empty keystore, mounted with `options`.
    pub fn with_options(options: MountOptions) -> Mounted {
        // RUST_LOG=debug shows the daemon's log (and fuser's requests) in failing tests.
        let _ = env_logger::builder().is_test(true).try_init();
        let dir = tempfile::Builder::new()
            .prefix("kmsfs-test")
            .tempdir()
            .expect("tempdir");
        kmsfs::store::init(&dir.path().join("data"), InitOptions::default())
            .expect("init a keystore");
        std::fs::create_dir(dir.path().join("mnt")).expect("mkdir mnt");
        let mut m = Mounted {
            options,
            dir,
            session: None,
            kms: None,
        };
        m.mount();
        m
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// A path inside the mount.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.mnt().join(rel)
    }

    pub fn mount(&mut self) {
        assert!(self.session.is_none(), "already mounted");
        let kms = open_kms(&self.data());
        let session = kmsfs::fs::spawn(kms.clone(), &self.mnt(), &self.options)
            .unwrap_or_else(|e| panic!("cannot mount at {}: {e}", self.mnt().display()));
        self.session = Some(session);
        self.kms = Some(kms);
        wait_for(&self.p(".status"), true);
    }

    /// The service the mount serves: changes made here come from another front end, as the
    /// rotation timer's or KMIP's do.
    pub fn kms(&self) -> Arc<Kms> {
        self.kms.clone().expect("mounted")
    }

    pub fn unmount(&mut self) {
        self.kms = None;
        if let Some(s) = self.session.take() {
            unmount_session(s, &self.mnt()).expect("unmount");
        }
        wait_for(&self.p(".status"), false);
    }

    pub fn remount(&mut self) {
        self.unmount();
        self.mount();
    }

    /// Runs a bash script with the mount as its working directory and `$M` set to it.
    pub fn bash(&self, script: &str) -> Output {
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(self.mnt())
            .env("M", self.mnt())
            .output()
            .expect("run bash")
    }

    /// Like `bash`, but the script must succeed; returns its stdout.
    pub fn bash_ok(&self, script: &str) -> String {
        let out = self.bash(script);
        assert!(
            out.status.success(),
            "script failed ({}):\n{script}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like `bash`, but the script must fail; returns its stderr.
    pub fn bash_err(&self, script: &str) -> String {
        let out = self.bash(script);
        assert!(
            !out.status.success(),
            "script should have failed:\n{script}\nstdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.p(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
    }

    /// Writes `text` in one write(), as `echo` does.
    pub fn write(&self, rel: &str, text: &str) -> io::Result<()> {
        std::fs::write(self.p(rel), text)
    }

    pub fn json(&self, rel: &str) -> serde_json::Value {
        serde_json::from_str(&self.read(rel)).unwrap_or_else(|e| panic!("{rel} is not JSON: {e}"))
    }

    pub fn state(&self, rel_record: &str) -> String {
        self.read(&format!("{rel_record}/state"))
            .trim_end()
            .to_string()
    }

    /// The last line of `.errors`, parsed.
    pub fn last_error(&self) -> serde_json::Value {
        let text = self.read(".errors");
        let line = text.lines().last().expect(".errors is empty");
        serde_json::from_str(line).expect(".errors line is JSON")
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.kms = None;
        if let Some(s) = self.session.take() {
            if let Err(e) = unmount_session(s, &self.mnt()) {
                eprintln!("unmount failed: {e}");
            }
        }
    }
}

/// Unmounts the session's mount and joins its serving thread. The session is forgotten, not
/// dropped, since fuser would unmount the path a second time (docs/fuse-notes.md, "double
/// unmount"), as `kmsfs mount` does.
fn unmount_session(mut s: fuser::BackgroundSession, mnt: &Path) -> io::Result<()> {
    unmount_when_idle(mnt)?;
    let serving = std::mem::replace(&mut s.guard, std::thread::spawn(|| Ok(())));
    std::mem::forget(s);
    serving
        .join()
        .map_err(|_| io::Error::other("the serving thread panicked"))?
}

/// Unmounts `mnt`, waiting out EBUSY for a while. Tests in one binary run on parallel threads,
/// and a child forked by another test's thread holds a copy of every descriptor this test had
/// open at that instant until the child's exec closes it: the mount is busy for that moment.
/// fuser then finds the kernel mount gone and only joins its thread.
fn unmount_when_idle(mnt: &Path) -> io::Result<()> {
    use nix::errno::Errno;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match nix::mount::umount2(mnt, nix::mount::MntFlags::empty()) {
            Err(Errno::EBUSY) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(()) | Err(Errno::EINVAL) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Polls until `path` exists (or stops existing): the mount is served, or gone.
pub fn wait_for(path: &Path, present: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while path.exists() != present {
        assert!(
            Instant::now() < deadline,
            "{} did not {} within 10 s",
            path.display(),
            if present { "appear" } else { "disappear" }
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
