//! The only `fuser::Filesystem` of kmsfs: each method resolves its inode, asks `Core`, and
//! replies. Every refusal of a call that changes something is logged and kept in `.errors`
//! (`refuse`); every reply is answered on every path.

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use fuser::{
    BsdFileFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::attr;
use super::core::{Core, RenameMode, RootSizes};
use super::errors::{Caller, FsError};
use super::inode::Node;
use super::tree;

pub struct KmsFs {
    core: Core,
}

const GENERATION: Generation = Generation(0); // inode numbers are never reused

impl KmsFs {
    pub fn new(core: Core) -> KmsFs {
        KmsFs { core }
    }

    /// Records a refusal (log line + `.errors`) and gives the errno to reply with.
    fn refuse(&self, req: &Request, path: &str, op: &str, err: &FsError) -> Errno {
        let caller = Caller {
            uid: req.uid(),
            pid: req.pid(),
        };
        self.core.errors.record(caller, path, op, err);
        Errno::from_i32(err.errno)
    }

    /// The errno of a failed query (nothing changed, nothing to record), logging daemon
    /// failures so that an EIO is never silent.
    fn quiet(err: &FsError) -> Errno {
        if err.internal {
            log::error!("{}", err.reason);
        }
        Errno::from_i32(err.errno)
    }

    fn node(&self, ino: INodeNo) -> Result<Node, Errno> {
        self.core.node(ino.0).map_err(|e| Self::quiet(&e))
    }

    fn reply_entry(reply: ReplyEntry, node: &Node, attr: &fuser::FileAttr) {
        let (attr_ttl, entry_ttl) = attr::ttls(node);
        reply.entry_with_ttls(&attr_ttl, &entry_ttl, attr, GENERATION);
    }

    fn stray(&self, req: &Request, parent: INodeNo, name: &OsStr, op: &str) -> Errno {
        let path = match self.core.node(parent.0) {
            Ok(p) => self.core.child_path(&p, name),
            Err(_) => name.to_string_lossy().into_owned(),
        };
        self.refuse(req, &path, op, &self.core.refuse_stray(name))
    }
}

impl Filesystem for KmsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // One READDIRPLUS per page of `ls -l` instead of one LOOKUP per entry.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS) {
            log::warn!("the kernel lacks {missing:?}: listings will be slower");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = self
            .node(parent)
            .and_then(|p| self.core.lookup(&p, name).map_err(|e| Self::quiet(&e)));
        match result {
            Ok((node, attr)) => Self::reply_entry(reply, &node, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let result = self.node(ino).and_then(|n| {
            self.core
                .attr(&n)
                .map(|a| (n, a))
                .map_err(|e| Self::quiet(&e))
        });
        match result {
            Ok((node, attr)) => reply.attr(&attr::ttls(&node).0, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let node = match self.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let owner = self.core.owner;
        let changes_owner_or_mode = mode.is_some_and(|m| m as u16 & 0o7777 != attr::perm(&node))
            || uid.is_some_and(|u| u != owner.uid)
            || gid.is_some_and(|g| g != owner.gid);
        // A truncate carries its own time stamps; times alone would be `touch`.
        let only_times = size.is_none() && (atime.is_some() || mtime.is_some());
        let result = if changes_owner_or_mode || only_times {
            Err(FsError::new(
                libc::EPERM,
                "modes, owners and times in the mount follow the keystore and cannot be set",
            ))
        } else if let Some(size) = size {
            self.core.truncate(&node, fh.map(|f| f.0), size)
        } else {
            Ok(())
        };
        if let Err(e) = result {
            let path = self.core.path(&node);
            return reply.error(self.refuse(req, &path, "setattr", &e));
        }
        match self.core.attr(&node) {
            Ok(a) => reply.attr(&attr::ttls(&node).0, &a),
            Err(e) => reply.error(Self::quiet(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self
            .node(ino)
            .and_then(|n| self.core.readlink(&n).map_err(|e| Self::quiet(&e)))
        {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(self.stray(req, parent, name, "mknod"));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let parent = match self.node(parent) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        match self.core.mkdir(&parent, name) {
            Ok((node, attr)) => Self::reply_entry(reply, &node, &attr),
            Err(e) => {
                let path = self.core.child_path(&parent, name);
                reply.error(self.refuse(req, &path, "mkdir", &e))
            }
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let parent = match self.node(parent) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        match self.core.unlink(&parent, name) {
            Ok(()) => reply.ok(),
            Err(e) => {
                let path = self.core.child_path(&parent, name);
                reply.error(self.refuse(req, &path, "unlink", &e))
            }
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let parent = match self.node(parent) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        // The path is taken before the change: afterwards the name resolves no more.
        let path = self.core.child_path(&parent, name);
        match self.core.rmdir(&parent, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.refuse(req, &path, "rmdir", &e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(self.stray(req, parent, link_name, "symlink"));
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (parent, new_parent) = match (self.node(parent), self.node(newparent)) {
            (Ok(p), Ok(n)) => (p, n),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let mode = RenameMode {
            noreplace: flags.contains(RenameFlags::RENAME_NOREPLACE),
            exchange_or_whiteout: flags
                .intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT),
        };
        let path = self.core.child_path(&parent, name);
        match self.core.rename(&parent, name, &new_parent, newname, mode) {
            Ok(()) => reply.ok(),
            Err(e) => {
                let op = format!("rename to {}", self.core.child_path(&new_parent, newname));
                reply.error(self.refuse(req, &path, &op, &e))
            }
        }
    }

    fn link(
        &self,
        req: &Request,
        _ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(self.stray(req, newparent, newname, "link"));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let node = match self.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.core.open(&node, flags.0) {
            Ok((fh, fopen)) => reply.opened(FileHandle(fh), fopen),
            Err(e) => {
                let path = self.core.path(&node);
                reply.error(self.refuse(req, &path, "open", &e))
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.core.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(Self::quiet(&e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let append = flags.0 & libc::O_APPEND != 0;
        match self.core.write(fh.0, offset, data, append) {
            Ok(n) => reply.written(n),
            Err(e) => {
                let path = self.handle_path(fh);
                reply.error(self.refuse(req, &path, "write", &e))
            }
        }
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.core.flush(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => {
                let path = self.handle_path(fh);
                reply.error(self.refuse(req, &path, "flush", &e))
            }
        }
    }

    fn release(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let path = self.handle_path(fh);
        if let Err(e) = self.core.release(fh.0) {
            // Nobody waits for this answer (close() has returned): log and `.errors` only.
            self.refuse(req, &path, "close", &e);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Every accepted change is already durable; only a pending description remains.
        match self.core.fsync(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => {
                let path = self.handle_path(fh);
                reply.error(self.refuse(req, &path, "fsync", &e))
            }
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.node(ino) {
            Ok(n) if attr::kind(&n) == fuser::FileType::Directory => {
                reply.opened(FileHandle(0), FopenFlags::empty())
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let dir = match self.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        {
            let ks = self.core.kms.read();
            tree::list(&ks, &self.core.inodes, &dir, offset, |e| {
                reply.add(INodeNo(e.ino), e.cookie, attr::kind(&e.node), &e.name)
            });
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let dir = match self.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let sizes = match dir {
            Node::Root if offset < tree::DYNAMIC_BASE => self.core.root_sizes(),
            _ => RootSizes::default(),
        };
        {
            let ks = self.core.kms.read();
            tree::list(&ks, &self.core.inodes, &dir, offset, |e| {
                let Some(attr) = self.core.attr_locked(&ks, &e.node, &sizes) else {
                    return false;
                };
                // One TTL serves both the entry and its attributes here: the shorter.
                let (attr_ttl, entry_ttl) = attr::ttls(&e.node);
                let ttl: Duration = attr_ttl.min(entry_ttl);
                reply.add(INodeNo(e.ino), e.cookie, &e.name, &ttl, &attr, GENERATION)
            });
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let files = {
            let ks = self.core.kms.read();
            (ks.group_count() + ks.record_count()) as u64
        };
        reply.statfs(0, 0, 0, files, 0, 4096, 255, 4096);
    }

    // No extended attributes. ENOSYS makes the kernel stop asking (and fuser's default would
    // log a warning for each call).
    fn getxattr(&self, _req: &Request, _ino: INodeNo, _n: &OsStr, _s: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(self.stray(req, parent, name, "create"));
    }
}

impl KmsFs {
    fn handle_path(&self, fh: FileHandle) -> String {
        match self.core.handles.node(fh.0) {
            Some(n) => self.core.path(&n),
            None => format!("{}/?", self.core.mountpoint.display()),
        }
    }
}
