//! Open files: what opening, reading, writing, flushing and closing each file means, as its
//! table entry says. The kernel's call orders this must follow (`echo x > f` is OPEN, SETATTR
//! size 0 without a handle, WRITE, FLUSH, RELEASE) are in `docs/fuse-notes.md`; `tests.rs`
//! replays them.

use fuser::{FileType, FopenFlags};
use zeroize::Zeroizing;

use super::{Attr, Operations};
use crate::fs::attr;
use crate::fs::error::{FsError, Shape};
use crate::fs::handles::{Handle, Input, Readable, Unreported};
use crate::fs::inode::{Node, Of};
use crate::fs::input::{ObjectInput, TextInput};
use crate::fs::parse;
use crate::fs::ring::Caller;
use crate::fs::table::{Cache, Content, Write};

/// An open file: its handle and how the kernel should cache its bytes.
#[derive(Clone, Copy, Debug)]
pub struct Opened {
    pub fh: u64,
    pub flags: FopenFlags,
}

/// What a READ answers.
#[derive(Debug)]
pub struct Read {
    pub bytes: Zeroizing<Vec<u8>>,
    /// Key bytes: the reply's copies must be wiped.
    pub secret: bool,
}

/// What a SETATTR asks for.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    /// atime or mtime given.
    pub times: bool,
}

impl Operations {
    /// The current bytes of a rendered file.
    fn render(&self, node: &Node) -> Result<Vec<u8>, FsError> {
        let (file, of) = match (node.file(), node.of()) {
            (Some(f), Some(of)) => (f, of),
            _ => return Err(FsError::NotAFile),
        };
        match file.content {
            Content::Rendered(render) => self.view(|v| render(v, &of)).ok_or(FsError::NotFound),
            Content::Secret { .. } => Err(FsError::NotAFile),
        }
    }

    /// Opens a file. Root passes the kernel's permission checks, so what the modes forbid is
    /// refused here for every caller: writing a read-only file (EACCES), and reading `key`
    /// unless the record is active or inactive (EACCES, decided by the service).
    pub fn open(&self, caller: Caller, ino: u64, flags: i32) -> Result<Opened, FsError> {
        let _acting = caller.acting();
        let node = self.node(ino)?;
        self.open_node(&node, flags, caller.pid)
            .map_err(|e| self.refused(caller, &self.path(&node), "open", e))
    }

    fn open_node(&self, node: &Node, flags: i32, pid: u32) -> Result<Opened, FsError> {
        let (file, of) = match (node.file(), node.of()) {
            (Some(f), Some(of)) if f.kind == FileType::RegularFile => (f, of),
            _ => return Err(FsError::NotAFile),
        };
        let acc = flags & libc::O_ACCMODE;
        let wants_write = acc != libc::O_RDONLY;
        let wants_read = acc != libc::O_WRONLY;
        if wants_write && !file.writable() {
            return Err(FsError::ReadOnly(self.path(node)));
        }
        // Nothing is pending at the close of a read-only file: no FLUSH for it.
        let noflush = if wants_write {
            FopenFlags::empty()
        } else {
            FopenFlags::FOPEN_NOFLUSH
        };
        let cache = match file.cache {
            // A record's key never changes: the page cache may keep it across opens.
            // Its FLUSH is kept: the serving thread's stack then gets overwritten at once,
            // which `tests/secret_pages.rs` needs (without it, a copy of a key handed out was
            // in a dump of the daemon 2 times out of 3).
            Cache::FixedBytes => FopenFlags::FOPEN_KEEP_CACHE,
            // Content that changes: never from the page cache. A cached page can be filled
            // by a READ answered after a change while the kernel still holds the size from
            // before it (it does not trust a short read once the attributes were forgotten
            // meanwhile): `active\n\0\0`. Direct I/O reads what there is, whatever the size.
            _ => FopenFlags::FOPEN_DIRECT_IO | noflush,
        };
        if let Content::Secret { open, .. } = file.content {
            if let (Some(policy), Of::Record(tag)) = (&self.key_policy, &of) {
                if let Err(refusal) = policy.check(pid) {
                    let e = FsError::ExecutableNotAllowed {
                        exe: refusal.exe,
                        reason: refusal.reason,
                    };
                    self.kms.audit_key_refusal(tag, &e.to_string());
                    return Err(e);
                }
            }
            let key = open(&self.kms, &of)?;
            let fh = self.handles.insert(Handle {
                node: node.clone(),
                of,
                opened_by: pid,
                readable: Readable::Secret(key),
                input: Input::None,
                writer: None,
                unreported: None,
            });
            return Ok(Opened { fh, flags: cache });
        }
        let input = match (wants_write, file.write) {
            (false, _) | (true, Write::ReadOnly) => Input::None,
            (true, Write::Command(apply)) => Input::Command(apply),
            (true, Write::Object(apply)) => Input::Object(ObjectInput::new(file.name), apply),
            (true, Write::Request(apply)) => {
                Input::Object(ObjectInput::with_words(file.name), apply)
            }
            (true, Write::Text(apply)) => Input::Text(TextInput::new(self.render(node)?), apply),
        };
        // A description open for writing reads back its own edit; others, what was there.
        let readable = if wants_read && !matches!(input, Input::Text(..)) {
            self.render(node)?
        } else {
            Vec::new()
        };
        let fh = self.handles.insert(Handle {
            node: node.clone(),
            of,
            opened_by: pid,
            readable: Readable::Plain(readable),
            input,
            writer: None,
            unreported: None,
        });
        Ok(Opened { fh, flags: cache })
    }

    /// One snapshot per open, so one `cat` sees one version even over several reads. The
    /// copy may hold key bytes: it is wiped once the reply has been sent.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Read, FsError> {
        let h = self.handles.get(fh).ok_or(FsError::BadHandle)?;
        let h = h.lock().map_err(|_| FsError::BadHandle)?;
        let bytes = h.read_bytes();
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let end = start.saturating_add(size as usize).min(bytes.len());
        Ok(Read {
            bytes: Zeroizing::new(bytes[start..end].to_vec()),
            secret: matches!(h.readable, Readable::Secret(_)),
        })
    }

    /// Applies a write. Commands and `.create` act here, so that the caller's `write()` (and
    /// the shell's `echo`) gets the refusal.
    pub fn write(
        &self,
        caller: Caller,
        fh: u64,
        offset: u64,
        data: &[u8],
        append: bool,
    ) -> Result<u32, FsError> {
        let _acting = caller.acting();
        self.write_handle(caller.pid, fh, offset, data, append)
            .map_err(|e| self.refused(caller, &self.handle_path(fh), "write", e))
    }

    fn write_handle(
        &self,
        pid: u32,
        fh: u64,
        offset: u64,
        data: &[u8],
        append: bool,
    ) -> Result<u32, FsError> {
        let h = self.handles.get(fh).ok_or(FsError::BadHandle)?;
        let mut h = h.lock().map_err(|_| FsError::BadHandle)?;
        let h = &mut *h;
        match &mut h.input {
            Input::None => return Err(FsError::NotOpenForWriting),
            Input::Command(apply) => apply(&self.kms, &h.of, parse::command_text(data)?)?,
            Input::Object(buf, apply) => {
                // `.create` and `.change-key` take passphrases: the request buffer the kernel's
                // write arrived in (fuser's, not ours to wipe) is kept out of core dumps.
                crate::crypto::exclude_from_dumps(data);
                if let Some(object) = buf.feed(data)? {
                    apply(&self.kms, &h.of, &object)?;
                }
            }
            Input::Text(text, _) => {
                // Who writes, for the commit at a FLUSH, which may not look (see `flush`).
                if h.writer.as_ref().map(|w| w.0) != Some(pid) {
                    h.writer = Some((pid, crate::audit::exe_of(pid)));
                }
                // Refused now rather than at close, where nobody would see it.
                if let Err(e) = self.kms.check_writable() {
                    text.refuse();
                    return Err(e.into());
                }
                text.write(offset, data, append)?;
            }
        }
        Ok(data.len() as u32)
    }

    /// Commits a description written through this handle, if it changed (see `TextInput`).
    ///
    /// A FLUSH may come from a process inside `execve` (closing its close-on-exec copy of the
    /// file), which holds the lock that reading its `/proc/PID/exe` waits for: the audit line
    /// takes the executable read at the caller's own last write, and none for another process.
    pub fn flush(&self, caller: Caller, fh: u64) -> Result<(), FsError> {
        let _acting = caller.acting();
        let writer = self
            .handles
            .get(fh)
            .and_then(|h| h.lock().ok().and_then(|h| h.writer.clone()));
        let exe = writer
            .filter(|(pid, _)| *pid == caller.pid)
            .and_then(|(_, exe)| exe);
        crate::audit::with_known_exe(caller.pid, exe, || {
            self.commit(fh, false, caller.pid)
                .map_err(|e| self.refused(caller, &self.handle_path(fh), "flush", e))
        })
    }

    /// Every accepted change is already durable; only a pending description remains, which
    /// fsync commits, a bare truncation included.
    pub fn fsync(&self, caller: Caller, fh: u64) -> Result<(), FsError> {
        let _acting = caller.acting();
        self.commit(fh, true, caller.pid)
            .map_err(|e| self.refused(caller, &self.handle_path(fh), "fsync", e))
    }

    /// An open file can be held by several processes (a child inherits it until its exec),
    /// and whichever flushes first commits the edit. When that commit fails, the others learn
    /// it at their next flush or close: without that, the writer's own `close()` would find
    /// nothing pending and return 0 for a change that was refused.
    fn commit(&self, fh: u64, closing: bool, pid: u32) -> Result<(), FsError> {
        let Some(h) = self.handles.get(fh) else {
            return Ok(());
        };
        let mut h = h.lock().map_err(|_| FsError::BadHandle)?;
        let h = &mut *h;
        let Input::Text(text, apply) = &mut h.input else {
            return Ok(());
        };
        match text.take_pending(closing) {
            Some(pending) => {
                let committed = pending.and_then(|p| apply(&self.kms, &h.of, &p));
                h.unreported = committed.as_ref().err().map(|e| Unreported {
                    errno: crate::fs::errno_of(e),
                    reason: e.to_string(),
                    told: pid,
                });
                committed
            }
            None => match h.unreported.take_if(|u| u.told != pid) {
                Some(u) => Err(FsError::EarlierCommitFailed {
                    errno: u.errno,
                    reason: u.reason,
                }),
                None => Ok(()),
            },
        }
    }

    /// Forgets a handle. What is still pending is committed (a description) or reported (an
    /// object left incomplete); `close()` has already returned, so the error reaches only the
    /// log and `.errors`.
    pub fn release(&self, caller: Caller, fh: u64) {
        let _acting = caller.acting();
        let path = self.handle_path(fh);
        if let Err(e) = self.release_handle(fh, caller.pid) {
            self.refused(caller, &path, "close", e);
        }
    }

    fn release_handle(&self, fh: u64, pid: u32) -> Result<(), FsError> {
        let flushed = self.commit(fh, true, pid);
        let Some(h) = self.handles.remove(fh) else {
            return flushed;
        };
        flushed?;
        let h = h.lock().map_err(|_| FsError::BadHandle)?;
        if let Input::Object(buf, _) = &h.input {
            if buf.has_leftover() {
                return Err(FsError::IncompleteObject {
                    file: h.node.file().map_or("?", |f| f.name),
                });
            }
        }
        Ok(())
    }

    /// SETATTR: only a size (the shell's truncate) means something; modes, owners and times
    /// follow the keystore. Repeating the mode or owner a file already has is accepted
    /// (`cp -p`, `tar` restoring what they read).
    pub fn setattr(
        &self,
        caller: Caller,
        ino: u64,
        set: SetAttr,
        fh: Option<u64>,
    ) -> Result<Attr, FsError> {
        let _acting = caller.acting();
        let node = self.node(ino)?;
        let changed = (|| {
            let owner = self.owner;
            let changes_owner_or_mode = set
                .mode
                .is_some_and(|m| m as u16 & 0o7777 != attr::perm(&node))
                || set.uid.is_some_and(|u| u != owner.uid)
                || set.gid.is_some_and(|g| g != owner.gid);
            // A truncate carries its own time stamps; times alone would be `touch`.
            let only_times = set.size.is_none() && set.times;
            if changes_owner_or_mode || only_times {
                return Err(Shape::FixedAttributes.into());
            }
            if let Some(size) = set.size {
                self.truncate(&node, fh, caller.pid, size)?;
            }
            Ok(())
        })();
        changed.map_err(|e| self.refused(caller, &self.path(&node), "setattr", e))?;
        self.getattr(ino)
    }

    /// `truncate`/`O_TRUNC`. On command files and `.create` a no-op that is never refused
    /// (even while quiesced: `echo unquiesce > .quiesce` truncates first).
    fn truncate(&self, node: &Node, fh: Option<u64>, pid: u32, size: u64) -> Result<(), FsError> {
        let file = node.file().ok_or(FsError::NotAFile)?;
        let apply = match file.write {
            Write::ReadOnly => return Err(FsError::ReadOnly(self.path(node))),
            Write::Command(_) | Write::Object(_) | Write::Request(_) => return Ok(()),
            Write::Text(apply) => apply,
        };
        // Truncating a description is a change: refused here, where `>` sees it, rather than
        // at close.
        self.kms.check_writable()?;
        if self.truncate_edit(node, fh, pid, size)? {
            return Ok(());
        }
        // A path truncate with no edit of the caller's open (`truncate(2)` on the path): a
        // change of its own, made now.
        let of = node.of().ok_or(FsError::NotAFile)?;
        let mut text = TextInput::new(self.render(node)?);
        text.truncate(size)?;
        match text.take_pending(true) {
            Some(pending) => apply(&self.kms, &of, &pending?),
            None => Ok(()),
        }
    }

    /// Applies a truncation to the caller's own edit, to be committed with it at flush or
    /// close; false when the caller has none open. With a handle (`ftruncate`), that one.
    /// Without (`echo x > description` opens, then truncates, and the kernel sends that
    /// truncation without the handle, from the same pid): the edit this pid opened most
    /// recently on the file and has not written yet (the one the OPEN just made), else its
    /// most recent one. Never another process's edit: that one would commit an empty text
    /// at its close, over what this caller writes.
    fn truncate_edit(
        &self,
        node: &Node,
        fh: Option<u64>,
        pid: u32,
        size: u64,
    ) -> Result<bool, FsError> {
        let candidates = match fh.and_then(|fh| self.handles.get(fh)) {
            Some(h) => vec![h],
            None => self.handles.opened_by(node, pid),
        };
        let mut newest = None;
        for h in candidates {
            let mut guard = h.lock().map_err(|_| FsError::BadHandle)?;
            let Input::Text(text, _) = &mut guard.input else {
                continue;
            };
            if !text.ever_written() {
                text.truncate(size)?;
                return Ok(true);
            }
            newest.get_or_insert_with(|| h.clone());
        }
        let Some(h) = newest else {
            return Ok(false);
        };
        let mut guard = h.lock().map_err(|_| FsError::BadHandle)?;
        match &mut guard.input {
            Input::Text(text, _) => text.truncate(size).map(|()| true),
            _ => Ok(false),
        }
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        Self::quiet((|| {
            let node = self.node(ino)?;
            match node.file() {
                Some(f) if f.kind == FileType::Symlink => self.render(&node),
                _ => Err(FsError::NotASymlink),
            }
        })())
    }

    fn handle_path(&self, fh: u64) -> String {
        match self.handles.node(fh) {
            Some(n) => self.path(&n),
            None => format!("{}/?", self.mountpoint.display()),
        }
    }
}
