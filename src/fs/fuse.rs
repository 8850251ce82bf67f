//! The only `fuser::Filesystem` of kmsfs: each method calls the operation layer (`ops`) once
//! and turns its answer into the reply, on every path.

use std::ffi::OsStr;
use std::path::Path;
use std::time::SystemTime;

use fuser::{
    BsdFileFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use std::sync::Arc;

use super::cache::KernelCache;
use super::counts::RequestCounts;
use super::errno::errno_of;
use super::error::FsError;
use super::ops::{Entry, Operations, RenameMode, SetAttr};
use super::ring::Caller;

pub struct KmsFs {
    ops: Operations,
    /// `--admins`: the kernel enforces the ACLs `getxattr` gives.
    posix_acl: bool,
    counts: Option<Arc<RequestCounts>>,
}

/// Inode numbers are never reused.
const GENERATION: Generation = Generation(0);

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(errno_of(e))
}

fn reply_entry(reply: ReplyEntry, r: Result<Entry, FsError>) {
    match r {
        Ok(e) => reply.entry_with_ttls(&e.attr_ttl, &e.entry_ttl, &e.attr, GENERATION),
        Err(e) => reply.error(errno(&e)),
    }
}

fn reply_empty(reply: ReplyEmpty, r: Result<(), FsError>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

impl KmsFs {
    pub fn new(ops: Operations, posix_acl: bool, counts: Option<Arc<RequestCounts>>) -> KmsFs {
        KmsFs {
            ops,
            posix_acl,
            counts,
        }
    }

    pub fn kernel_cache(&self) -> Arc<KernelCache> {
        self.ops.kernel_cache()
    }

    fn count(&self, op: &str) {
        if let Some(c) = &self.counts {
            c.count(op);
        }
    }
}

impl Filesystem for KmsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // One READDIRPLUS per page of `ls -l` instead of one LOOKUP per entry.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS) {
            log::warn!("the kernel lacks {missing:?}: listings will be slower");
        }
        // Every read from the page cache (a `key`) first brings forgotten attributes up to
        // date, so it never stops at a size from before an activation (`cache.rs`).
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_AUTO_INVAL_DATA) {
            log::warn!("the kernel lacks {missing:?}: a key read may stop at an old size");
        }
        if self.posix_acl {
            // Without it the admins would have no rights at all: refuse to serve.
            if let Err(missing) = config.add_capabilities(InitFlags::FUSE_POSIX_ACL) {
                return Err(std::io::Error::other(format!(
                    "--admins needs POSIX ACLs in FUSE, which this kernel lacks ({missing:?})"
                )));
            }
        }
        Ok(())
    }

    fn destroy(&mut self) {
        self.ops.kernel_cache().disconnect();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.count("LOOKUP");
        reply_entry(reply, self.ops.lookup(parent.0, name));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.count("GETATTR");
        match self.ops.getattr(ino.0) {
            Ok(a) => reply.attr(&a.ttl, &a.attr),
            Err(e) => reply.error(errno(&e)),
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
        self.count("SETATTR");
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            times: atime.is_some() || mtime.is_some(),
        };
        match self.ops.setattr(caller(req), ino.0, set, fh.map(|f| f.0)) {
            Ok(a) => reply.attr(&a.ttl, &a.attr),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.count("READLINK");
        match self.ops.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(&e)),
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
        self.count("OTHER");
        let e = self.ops.refuse_stray(caller(req), parent.0, name, "mknod");
        reply.error(errno(&e));
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
        self.count("MKDIR");
        reply_entry(reply, self.ops.mkdir(caller(req), parent.0, name));
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.count("UNLINK");
        reply_empty(reply, self.ops.unlink(caller(req), parent.0, name));
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.count("RMDIR");
        reply_empty(reply, self.ops.rmdir(caller(req), parent.0, name));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        self.count("OTHER");
        let e = self
            .ops
            .refuse_stray(caller(req), parent.0, link_name, "symlink");
        reply.error(errno(&e));
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
        self.count("RENAME");
        let mode = RenameMode {
            noreplace: flags.contains(RenameFlags::RENAME_NOREPLACE),
            exchange_or_whiteout: flags
                .intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT),
        };
        let r = self
            .ops
            .rename(caller(req), (parent.0, name), (newparent.0, newname), mode);
        reply_empty(reply, r);
    }

    fn link(
        &self,
        req: &Request,
        _ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.count("OTHER");
        let e = self
            .ops
            .refuse_stray(caller(req), newparent.0, newname, "link");
        reply.error(errno(&e));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.count("OPEN");
        match self.ops.open(caller(req), ino.0, flags.0) {
            Ok(o) => reply.opened(FileHandle(o.fh), o.flags),
            Err(e) => reply.error(errno(&e)),
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
        self.count("READ");
        match self.ops.read(fh.0, offset, size) {
            Ok(data) => {
                reply.data(&data.bytes);
                if data.secret {
                    // fuser copies a short reply (a 32-byte key fits) into a buffer on this
                    // thread's stack: wiped now, not whenever a later request overwrites it.
                    crate::crypto::scrub_stack();
                }
            }
            Err(e) => reply.error(errno(&e)),
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
        self.count("WRITE");
        let append = flags.0 & libc::O_APPEND != 0;
        match self.ops.write(caller(req), fh.0, offset, data, append) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(&e)),
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
        self.count("FLUSH");
        reply_empty(reply, self.ops.flush(caller(req), fh.0));
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
        self.count("RELEASE");
        self.ops.release(caller(req), fh.0);
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
        self.count("FSYNC");
        reply_empty(reply, self.ops.fsync(caller(req), fh.0));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.count("OPENDIR");
        match self.ops.opendir(ino.0) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.count("RELEASEDIR");
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.count("READDIR");
        let r = self.ops.readdir(ino.0, offset, |e| {
            reply.add(INodeNo(e.ino), e.cookie, e.kind, &e.name)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.count("READDIRPLUS");
        let r = self.ops.readdirplus(ino.0, offset, |d, e| {
            reply.add(
                INodeNo(d.ino),
                d.cookie,
                &d.name,
                &e.ttl(),
                &e.attr,
                GENERATION,
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.count("OTHER");
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.count("STATFS");
        let s = self.ops.statfs();
        reply.statfs(0, 0, 0, s.files, 0, 4096, 255, 4096);
    }

    // Without --admins there are no extended attributes: ENOSYS makes the kernel stop asking
    // (and fuser's default would log a warning for each call). With it, the ACLs.
    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.count("GETXATTR");
        if !self.posix_acl {
            return reply.error(Errno::ENOSYS);
        }
        match self.ops.getxattr(ino.0, name) {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() <= size as usize => reply.data(&v),
            Ok(_) => reply.error(Errno::ERANGE),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.count("OTHER");
        if !self.posix_acl {
            return reply.error(Errno::ENOSYS);
        }
        let names = b"system.posix_acl_access\0";
        match size {
            0 => reply.size(names.len() as u32),
            s if s as usize >= names.len() => reply.data(names),
            _ => reply.error(Errno::ERANGE),
        }
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
        self.count("OTHER");
        // ACLs follow the keystore like the modes do.
        reply.error(if self.posix_acl {
            Errno::EPERM
        } else {
            Errno::ENOSYS
        });
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        self.count("OTHER");
        reply.error(Errno::ENOSYS);
    }

    // `jq` and the shell ask whether stdout is a terminal (TCGETS): no file here is one.
    // Answered quietly (fuser's default logs a warning for every call).
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        self.count("OTHER");
        reply.error(Errno::ENOTTY);
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
        self.count("CREATE");
        let e = self.ops.refuse_stray(caller(req), parent.0, name, "create");
        reply.error(errno(&e));
    }
}
