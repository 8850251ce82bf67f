//! systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram of
//! newline-separated `VAR=VALUE` lines to the `AF_UNIX` socket named in `$NOTIFY_SOCKET`
//! (a path, or an abstract name written with a leading `@`).
//!
//! `kmsfs mount` under a `Type=notify` unit reports `READY=1` only once the mount answers
//! (`MOUNTPOINT/.status` can be looked up through it), so that units ordered after kmsfs
//! find the keys there.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// How long the mount may take to answer before readiness is given up on (and logged).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `state` to `$NOTIFY_SOCKET`. `Ok(false)` if the variable is unset (not run by a
/// service manager that wants to hear).
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET) {
        Some(socket) if !socket.is_empty() => send(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `state` as one datagram to `socket` (`/path` or `@abstract-name`).
pub fn send(socket: &OsStr, state: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let name = socket.as_bytes();
    let sent = if let Some(abstract_name) = name.strip_prefix(b"@") {
        let addr = SocketAddr::from_abstract_name(abstract_name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?
    } else if name.starts_with(b"/") {
        sock.send_to(state.as_bytes(), Path::new(socket))?
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{NOTIFY_SOCKET}={} is neither an absolute path nor an @abstract name",
                socket.to_string_lossy()
            ),
        ));
    };
    if sent != state.len() {
        return Err(io::Error::other("the notification was cut short"));
    }
    Ok(())
}

/// Whether `mountpoint` is now a different file system from the directory it was (`before`,
/// its device) and answers a lookup of `.status`: a `.status` file left in the bare
/// directory does not count.
fn answers(mountpoint: &Path, before: Option<u64>) -> bool {
    match std::fs::metadata(mountpoint) {
        Ok(m) if Some(m.dev()) != before => {
            std::fs::symlink_metadata(mountpoint.join(".status")).is_ok()
        }
        _ => false,
    }
}

/// Call right before mounting: if a service manager asked for notifications, a thread
/// watches `mountpoint` and sends `READY=1` and `STATUS=serving DATA at MOUNTPOINT` once the
/// mount answers. It gives up, logging an error, after `READY_TIMEOUT` (the service manager
/// then fails the start at its own timeout).
pub fn ready_when_served(data_dir: &Path, mountpoint: &Path) {
    if std::env::var_os(NOTIFY_SOCKET).is_none_or(|s| s.is_empty()) {
        return;
    }
    let absolute = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let data_dir: PathBuf = absolute(data_dir);
    let mountpoint: PathBuf = absolute(mountpoint);
    // The device of the bare directory, taken before the mount covers it.
    let before = std::fs::metadata(&mountpoint).map(|m| m.dev()).ok();
    let spawned = std::thread::Builder::new()
        .name("kmsfs-notify".into())
        .spawn(move || {
            let until = Instant::now() + READY_TIMEOUT;
            while !answers(&mountpoint, before) {
                if Instant::now() >= until {
                    log::error!(
                        "{} did not answer within {READY_TIMEOUT:?}: readiness not reported",
                        mountpoint.display()
                    );
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let state = format!(
                "READY=1\nSTATUS=serving {} at {}",
                data_dir.display(),
                mountpoint.display()
            );
            match notify(&state) {
                Ok(_) => log::debug!("reported readiness to the service manager"),
                Err(e) => log::error!("cannot report readiness to the service manager: {e}"),
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start the readiness thread: {e}");
    }
}
