//! Serving a mount until it ends: `umount MOUNTPOINT` from outside, or SIGINT/SIGTERM, which
//! unmount it. SIGHUP (the terminal of a foreground daemon closing, or `logrotate`) reopens
//! the audit log: it never kills a serving daemon.

use std::io;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use fuser::BackgroundSession;
use nix::mount::{umount2, MntFlags};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// How serving ended, or that a stop had to detach a busy mount.
enum Event {
    Ended(io::Result<()>),
    Detached,
}

/// Serves `session` (mounted at `mountpoint`) until it is unmounted; returns the serving
/// thread's result.
/// `on_hup` runs at every SIGHUP (logrotate's `postrotate`: reopen the audit log).
///
/// A SIGTERM or SIGINT while something keeps the mount busy (a shell's working directory, an
/// open file) detaches it, and the kernel keeps serving what is open until it is closed. After
/// `grace`, this returns anyway: the daemon exits, which closes its FUSE device and aborts
/// the connection (what is still open then fails with ENOTCONN; every change is durable or
/// was never answered), so that `systemctl stop` ends without a SIGKILL.
pub fn until_unmounted(
    mut session: BackgroundSession,
    mountpoint: &Path,
    grace: Duration,
    on_hup: impl Fn() + Send + 'static,
) -> io::Result<()> {
    let (events, event) = mpsc::channel::<Event>();
    // The handlers stay installed once registered (signal-hook never removes them); after
    // `close` they only drop what arrives. A daemon exits right after this returns.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let handle = signals.handle();
    let watcher = {
        let mountpoint = mountpoint.to_path_buf();
        let events = events.clone();
        std::thread::Builder::new()
            .name("kmsfs-signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if sig == SIGHUP {
                        on_hup();
                        continue;
                    }
                    log::info!("signal {sig}: unmounting {}", mountpoint.display());
                    if unmount(&mountpoint) {
                        let _ = events.send(Event::Detached);
                    }
                }
            })?
    };
    // fuser 0.18 unmounts again when the session is dropped after an outside `umount`: its
    // check sees the closed device as still mounted, and a second umount2 could take down a
    // new mount at the same path (docs/fuse-notes.md, "double unmount"). The session is
    // already unmounted once its serving thread has ended, so take that thread and forget
    // the rest rather than drop it.
    let finished = std::thread::spawn(|| Ok(()));
    let serving = std::mem::replace(&mut session.guard, finished);
    std::mem::forget(session);
    std::thread::Builder::new()
        .name("kmsfs-serving".into())
        .spawn(move || {
            let ended = serving
                .join()
                .map_err(|_| io::Error::other("the file system's serving thread panicked"))
                .and_then(|r| r);
            let _ = events.send(Event::Ended(ended));
        })?;
    let result = match event.recv() {
        Ok(Event::Ended(result)) => result,
        Ok(Event::Detached) => match event.recv_timeout(grace) {
            Ok(Event::Ended(result)) => result,
            Ok(Event::Detached) | Err(_) => {
                log::warn!(
                    "{} is still in use {} s after it was detached: stopping anyway \
                     (what is open there now fails with ENOTCONN)",
                    mountpoint.display(),
                    grace.as_secs()
                );
                Ok(())
            }
        },
        Err(_) => Err(io::Error::other("the serving thread vanished")),
    };
    handle.close();
    let _ = watcher.join();
    result
}

/// Unmounts `path`; if something keeps it busy (a shell's working directory), detaches it so
/// that the daemon can still exit and the mount goes away once it is no longer used. True
/// when it had to detach.
fn unmount(path: &Path) -> bool {
    match umount2(path, MntFlags::empty()) {
        Ok(()) => false,
        Err(e) => {
            log::warn!("unmounting {}: {e}; detaching it instead", path.display());
            if let Err(e) = umount2(path, MntFlags::MNT_DETACH) {
                log::error!("cannot unmount {}: {e}", path.display());
            }
            true
        }
    }
}
