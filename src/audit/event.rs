//! What one line says: who asked, what, about which group or record, and the verdict.

use std::cell::RefCell;

thread_local! {
    /// Set while a FLUSH is served (`with_known_exe`): the caller's executable as already
    /// known, so that `/proc/PID/exe` is not read.
    static KNOWN_EXE: RefCell<Option<(u32, Option<String>)>> = const { RefCell::new(None) };
}

/// The target of `/proc/PID/exe`. Reading it waits while that process is inside `execve`
/// (the kernel takes the process's `exec_update_lock`, which execve holds for writing while it
/// closes the close-on-exec files): see `with_known_exe`.
pub fn exe_of(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Runs `f`, the handling of a FLUSH, with `pid` known to run `exe` and no `/proc/PID/exe` read
/// at all. A FLUSH is what `execve` sends when it closes a close-on-exec file of the mount (a
/// program started by Rust's `Command`, Go or Python while a description was open for
/// writing), and it sends it holding the lock that reading its `/proc/PID/exe` waits for: the
/// daemon then waited for the exec, the exec for the daemon, with the keystore's write lock
/// held, and no signal could end the child. Any other process is an unknown one (`exe` null).
pub fn with_known_exe<T>(pid: u32, exe: Option<String>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<(u32, Option<String>)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            KNOWN_EXE.with(|k| *k.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(KNOWN_EXE.with(|k| k.replace(Some((pid, exe)))));
    f()
}

/// Who made a request: the ids from the FUSE request, and what `/proc` says of the process
/// (gone by the time of the lookup, or a kernel request: None).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    /// `/proc/PID/comm`.
    pub process: Option<String>,
    /// The target of `/proc/PID/exe`.
    pub exe: Option<String>,
    /// A network client (KMIP): its certificate's subject. The ids are then the daemon's.
    pub client: Option<String>,
}

impl Caller {
    /// The caller of a request, with its process name and executable from `/proc`.
    pub fn lookup(uid: u32, gid: u32, pid: u32) -> Caller {
        let (process, exe) = if pid == 0 {
            (None, None)
        } else {
            (
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .ok()
                    .map(|c| c.trim_end_matches('\n').to_string()),
                match KNOWN_EXE.with(|k| k.borrow().clone()) {
                    Some((known, exe)) if known == pid => exe,
                    Some(_) => None,
                    None => exe_of(pid),
                },
            )
        };
        Caller {
            uid,
            gid,
            pid,
            process,
            exe,
            client: None,
        }
    }

    /// A KMIP client, named by its certificate's subject, served by the daemon.
    pub fn client(subject: &str) -> Caller {
        Caller {
            client: Some(subject.to_string()),
            ..Caller::daemon()
        }
    }

    /// The daemon itself, for what it does on its own (a scheduled rotation, a lease lapsing).
    pub fn daemon() -> Caller {
        Caller::lookup(
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
            std::process::id(),
        )
    }
}

/// The outcome of the request, with a short reason when it did not happen. The reason is the
/// text `.errors` shows for the same refusal; it must never hold a passphrase, a key or a
/// description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// The checks passed: the operation is carried out (log it before acting).
    Allowed,
    /// The checks refused it (EPERM, EROFS, EINVAL ...): nothing changed.
    Refused(&'a str),
    /// It was allowed but could not be carried out (an I/O error): nothing changed.
    Failed(&'a str),
}

/// One event. Built only by the constructors below, so a line can hold nothing but these
/// fields: no key bytes, passphrases or descriptions.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub(super) caller: &'a Caller,
    pub(super) operation: &'static str,
    pub(super) group: Option<&'a str>,
    pub(super) record: Option<&'a str>,
    pub(super) key_tag: Option<&'a str>,
    pub(super) new_name: Option<&'a str>,
    pub(super) verdict: Verdict<'a>,
}

impl<'a> Event<'a> {
    fn new(caller: &'a Caller, operation: &'static str, verdict: Verdict<'a>) -> Event<'a> {
        Event {
            caller,
            operation,
            group: None,
            record: None,
            key_tag: None,
            new_name: None,
            verdict,
        }
    }

    /// An operation on the whole keystore: `quiesce`, `unquiesce`, `import`.
    pub fn keystore(caller: &'a Caller, operation: &'static str, verdict: Verdict<'a>) -> Self {
        Event::new(caller, operation, verdict)
    }

    /// An operation on a group: `mkdir`, `rmdir`, `write .cipher`, `write .rotation`,
    /// `write .description`, `rotate`.
    pub fn group(
        caller: &'a Caller,
        operation: &'static str,
        group: &'a str,
        verdict: Verdict<'a>,
    ) -> Self {
        Event {
            group: Some(group),
            ..Event::new(caller, operation, verdict)
        }
    }

    /// An operation on a record: `open key`, `write state`, `write description`, `create`,
    /// `mkdir`, `rmdir`, `change-key`. `key_tag` once the record has one.
    pub fn record(
        caller: &'a Caller,
        operation: &'static str,
        group: &'a str,
        record: &'a str,
        key_tag: Option<&'a str>,
        verdict: Verdict<'a>,
    ) -> Self {
        Event {
            group: Some(group),
            record: Some(record),
            key_tag,
            ..Event::new(caller, operation, verdict)
        }
    }

    /// `rename` of a group: `group` is the old name, `new_name` the new one.
    pub fn rename_group(
        caller: &'a Caller,
        from: &'a str,
        to: &'a str,
        verdict: Verdict<'a>,
    ) -> Self {
        Event {
            group: Some(from),
            new_name: Some(to),
            ..Event::new(caller, "rename", verdict)
        }
    }

    /// `rename` of a record within its group: `record` is the old name, `new_name` the new one.
    pub fn rename_record(
        caller: &'a Caller,
        group: &'a str,
        from: &'a str,
        to: &'a str,
        key_tag: Option<&'a str>,
        verdict: Verdict<'a>,
    ) -> Self {
        Event {
            group: Some(group),
            record: Some(from),
            key_tag,
            new_name: Some(to),
            ..Event::new(caller, "rename", verdict)
        }
    }
}
