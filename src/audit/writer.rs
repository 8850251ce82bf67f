//! The file the daemon appends to: opening it safely, finding where its chain stands, one
//! write per line, cutting back a failed write, and following logrotate.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::key::AuditKey;
use super::line::{self, MAX_LINE};
use super::{AuditError, Event};

/// Where the chain stands: the next line's `seq` and `prev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    next_seq: u64,
    prev: [u8; 32],
}

#[derive(Debug)]
struct State {
    file: File,
    head: Head,
    /// The reason the last append or sync failed, until one succeeds.
    failing: Option<String>,
    /// A length to cut the file back to before the next write: set when cutting back a failed
    /// write failed too, so that a partial line never has a line appended after it.
    cut_to: Option<u64>,
    /// Lines written but durable nowhere yet, oldest first: the next KMS_DATA frame carries
    /// them (`unsaved`), or the next fdatasync of the log makes them durable.
    unsaved: Vec<(u64, Vec<u8>)>,
    /// Bytes written since the log's last fdatasync: bounded by `SYNC_EVERY`.
    unsynced_bytes: usize,
}

/// The log syncs itself once this many bytes were written since its last sync, so that the
/// lines a crash can take from it are never more than this (plus one line), and KMS_DATA's
/// copy of them (`Store::audit_tail`) need not be longer than twice this.
pub const SYNC_EVERY: usize = 256 * 1024;

/// An open audit log. Every method takes `&self`; appends are serialized by a mutex, so the
/// order of the chain is the order of the file.
pub struct AuditLog {
    path: PathBuf,
    key: AuditKey,
    torn_tail: u64,
    state: Mutex<State>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (or creates, mode 0600) the log at `path` and continues its chain: see the
    /// module documentation for the file continued from and the torn tail.
    pub fn open(path: &Path, key: AuditKey) -> Result<AuditLog, AuditError> {
        let (file, tail) = open_for_append(path)?;
        let torn_tail = cut_torn_tail(path, &file, &tail)?;
        let head = match &tail.last {
            Some(last) => head_after(path, &key, last)?,
            None => match continue_from_rotated(path, &key)? {
                Some(head) => head,
                None => Head {
                    next_seq: 1,
                    prev: key.genesis(),
                },
            },
        };
        Ok(AuditLog {
            path: path.to_path_buf(),
            key,
            torn_tail,
            state: Mutex::new(State {
                file,
                head,
                failing: None,
                cut_to: None,
                unsaved: Vec::new(),
                unsynced_bytes: 0,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of an append cut short by a crash that `open` cut off the end of the file.
    pub fn torn_tail(&self) -> u64 {
        self.torn_tail
    }

    /// The `seq` the next line will have.
    pub fn next_seq(&self) -> u64 {
        self.lock().head.next_seq
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state changes only after a write succeeded, by plain assignments: a panic
        // elsewhere cannot leave it half-updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one line for `event` with a single write(2). On failure the file is cut back
    /// to its length before the write, the error is returned and kept for `health`, and the
    /// sequence number is not used; the next append tries again.
    pub fn append(&self, event: &Event<'_>) -> Result<(), AuditError> {
        let mut st = self.lock();
        let st = &mut *st;
        let line = line::build(
            &self.key,
            st.head.next_seq,
            &line::now(),
            &st.head.prev,
            event,
        );
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(&line);
        buf.push(b'\n');
        match write_line(&self.path, &st.file, &buf, &mut st.cut_to) {
            Ok(()) => {
                let seq = st.head.next_seq;
                st.head = Head {
                    next_seq: seq + 1,
                    prev: line::hash(&line),
                };
                st.failing = None;
                st.unsynced_bytes += buf.len();
                st.unsaved.push((seq, line));
                if st.unsynced_bytes >= SYNC_EVERY {
                    self.sync_locked(st)?;
                }
                Ok(())
            }
            Err(e) => {
                st.failing = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// fdatasync: every line appended so far is on disk when this returns Ok.
    pub fn sync(&self) -> Result<(), AuditError> {
        self.sync_locked(&mut self.lock())
    }

    fn sync_locked(&self, st: &mut State) -> Result<(), AuditError> {
        match st.file.sync_data() {
            Ok(()) => {
                st.unsaved.clear();
                st.unsynced_bytes = 0;
                Ok(())
            }
            Err(e) => {
                let e = AuditError::io(&self.path, "cannot sync")(e);
                st.failing = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// The lines written since the log's last sync that no KMS_DATA frame carries yet, for
    /// the next frame to carry (so that one fdatasync, KMS_DATA's, makes a change and every
    /// line before it durable), with the `seq` of the last of them.
    pub fn unsaved(&self) -> (Vec<String>, u64) {
        let st = self.lock();
        let last = st.unsaved.last().map_or(0, |(seq, _)| *seq);
        let lines = st
            .unsaved
            .iter()
            .map(|(_, l)| String::from_utf8_lossy(l).into_owned())
            .collect();
        (lines, last)
    }

    /// The lines up to `seq` are durable elsewhere (in a synced KMS_DATA frame).
    pub fn saved_through(&self, seq: u64) {
        self.lock().unsaved.retain(|(s, _)| *s > seq);
    }

    /// Puts back the lines a crash took from the end of the log before they were synced, from
    /// the copies KMS_DATA's frames carry (oldest first). Lines the file already holds are
    /// skipped; the others must continue the chain where the file ends, each in turn (a line
    /// that does not, because the log was moved aside or replaced, ends the repair with a
    /// warning: `audit verify` shows the gap). Returns how many lines were put back; they are
    /// synced before it returns.
    pub fn restore(&self, lines: &[String]) -> Result<usize, AuditError> {
        let mut st = self.lock();
        let st = &mut *st;
        let mut restored = 0;
        for line in lines {
            let bytes = line.as_bytes();
            let Ok(link) = line::parse(bytes, Some(&self.key)) else {
                log::warn!(
                    "audit log {}: a line KMS_DATA carries does not verify; not restored",
                    self.path.display()
                );
                break;
            };
            if link.seq < st.head.next_seq {
                continue;
            }
            if link.seq != st.head.next_seq || link.prev != st.head.prev {
                log::warn!(
                    "audit log {}: ends at seq {}, but the lines KMS_DATA carries continue from seq {}: the file was moved aside or replaced; not restoring them",
                    self.path.display(),
                    st.head.next_seq - 1,
                    link.seq
                );
                break;
            }
            let mut buf = Vec::with_capacity(bytes.len() + 1);
            buf.extend_from_slice(bytes);
            buf.push(b'\n');
            write_line(&self.path, &st.file, &buf, &mut st.cut_to)?;
            st.head = Head {
                next_seq: link.seq + 1,
                prev: line::hash(bytes),
            };
            restored += 1;
        }
        if restored > 0 {
            log::warn!(
                "audit log {}: put back {restored} lines a crash took from its end (KMS_DATA held them)",
                self.path.display()
            );
            self.sync_locked(st)?;
        }
        Ok(restored)
    }

    /// Ok while the log can be written; otherwise why the last append or sync failed.
    pub fn health(&self) -> Result<(), String> {
        match &self.lock().failing {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        }
    }

    /// For SIGHUP after logrotate renamed the file: appends go to the file now at the path
    /// (created if missing), and the chain continues into it. Nothing changes when the path
    /// still names the open file. On error the log keeps writing to the old file.
    pub fn reopen(&self) -> Result<(), AuditError> {
        let mut st = self.lock();
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if let Ok(open) = st.file.metadata() {
                if meta.dev() == open.dev() && meta.ino() == open.ino() {
                    return Ok(());
                }
            }
        }
        let (file, tail) = open_for_append(&self.path)?;
        cut_torn_tail(&self.path, &file, &tail)?;
        if let Some(last) = &tail.last {
            if line::hash(last) != st.head.prev {
                return Err(AuditError::Chain {
                    path: self.path.clone(),
                    reason: "the new file already holds lines, and its last line is not the last line this log wrote: still writing to the old file".into(),
                });
            }
        }
        // The old file (now rotated) is complete on disk before lines go elsewhere.
        match st.file.sync_data() {
            Ok(()) => {
                st.unsaved.clear();
                st.unsynced_bytes = 0;
            }
            Err(e) => log::warn!(
                "audit log: cannot sync the file rotated away from {}: {e}",
                self.path.display()
            ),
        }
        st.file = file;
        Ok(())
    }
}

/// One write(2) of the whole line; anything less is cut back.
fn write_line(
    path: &Path,
    file: &File,
    buf: &[u8],
    cut_to: &mut Option<u64>,
) -> Result<(), AuditError> {
    let len = |f: &File| f.metadata().map(|m| m.len());
    let mut before = len(file).map_err(AuditError::io(path, "cannot stat"))?;
    if let Some(to) = *cut_to {
        // Only ever shorten: if the file was truncated meanwhile (copytruncate), there is
        // nothing left to cut.
        if before > to {
            file.set_len(to)
                .map_err(AuditError::io(path, "cannot cut back a partial line"))?;
            before = to;
        }
        *cut_to = None;
    }
    let mut f = file;
    let failure = match f.write(buf) {
        Ok(n) if n == buf.len() => return Ok(()),
        // The kernel took part of the line (the disk filled up in the middle of it): one
        // more write of the rest, to learn why (ENOSPC, EDQUOT, EFBIG); should it succeed,
        // the line is whole after all.
        Ok(n) => match f.write(&buf[n..]) {
            Ok(m) if n + m == buf.len() => return Ok(()),
            Ok(m) => std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write ({} of {} bytes)", n + m, buf.len()),
            ),
            Err(e) => e,
        },
        Err(e) => e,
    };
    let now = len(file).unwrap_or(u64::MAX);
    if now > before {
        if let Err(e) = file.set_len(before) {
            *cut_to = Some(before);
            log::error!(
                "audit log {}: cannot cut back a partial line: {e}",
                path.display()
            );
        }
    }
    Err(AuditError::io(path, "cannot append")(failure))
}

/// What the end of a file holds.
#[derive(Debug)]
struct Tail {
    /// Bytes up to and including the last newline.
    complete_len: u64,
    /// The last complete line, without its newline.
    last: Option<Vec<u8>>,
    /// Bytes after the last newline.
    torn: u64,
}

/// Reads the end of `file` backwards until it has the last complete line.
fn read_tail(path: &Path, file: &File, len: u64) -> Result<Tail, AuditError> {
    const CHUNK: u64 = 8192;
    let limit = 2 * MAX_LINE as u64 + CHUNK;
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // The last newline, and the one before it, within buf (which starts at `start`).
        let last_nl = buf.iter().rposition(|&b| b == b'\n');
        if let Some(end) = last_nl {
            let before = buf[..end].iter().rposition(|&b| b == b'\n');
            if before.is_some() || start == 0 {
                let from = before.map_or(0, |p| p + 1);
                let complete_len = start + end as u64 + 1;
                return Ok(Tail {
                    complete_len,
                    last: Some(buf[from..end].to_vec()),
                    torn: len - complete_len,
                });
            }
        } else if start == 0 {
            return Ok(Tail {
                complete_len: 0,
                last: None,
                torn: len,
            });
        }
        if len - start >= limit {
            return Err(AuditError::Chain {
                path: path.to_path_buf(),
                reason: format!(
                    "its end holds no complete line within {limit} bytes: not an audit log"
                ),
            });
        }
        let n = CHUNK.min(start);
        start -= n;
        let mut chunk = vec![0u8; n as usize];
        file.read_exact_at(&mut chunk, start)
            .map_err(AuditError::io(path, "cannot read"))?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
    }
}

fn check_regular(path: &Path, meta: &Metadata) -> Result<(), AuditError> {
    let unsafe_ = |reason: String| {
        Err(AuditError::Unsafe {
            path: path.to_path_buf(),
            reason,
        })
    };
    let ft = meta.file_type();
    if ft.is_symlink() {
        return unsafe_("is a symbolic link; refusing to follow it".into());
    }
    if !ft.is_file() {
        return unsafe_("is not a regular file".into());
    }
    Ok(())
}

/// Opens `path` to append (creating it 0600) and reads where its chain stands.
fn open_for_append(path: &Path) -> Result<(File, Tail), AuditError> {
    let existed = match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            // Before opening: opening a device or a FIFO can have effects of its own.
            check_regular(path, &meta)?;
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(AuditError::io(path, "cannot stat")(e)),
    };
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                AuditError::Unsafe {
                    path: path.to_path_buf(),
                    reason: "is a symbolic link; refusing to follow it".into(),
                }
            } else {
                AuditError::io(path, "cannot open")(e)
            }
        })?;
    let meta = file
        .metadata()
        .map_err(AuditError::io(path, "cannot stat"))?;
    check_regular(path, &meta)?;
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(AuditError::Unsafe {
            path: path.to_path_buf(),
            reason: format!(
                "is owned by uid {}, not by this process (uid {euid})",
                meta.uid()
            ),
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(AuditError::Unsafe {
            path: path.to_path_buf(),
            reason: format!(
                "is writable by group or others (mode {:04o}); run `chmod go-w` on it",
                meta.mode() & 0o7777
            ),
        });
    }
    if !existed {
        // The new name must survive a crash as surely as the lines written to it.
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(AuditError::io(path, "cannot sync its directory"))?;
        }
    }
    let tail = read_tail(path, &file, meta.len())?;
    Ok((file, tail))
}

/// Cuts off what a crash left after the last newline; returns how many bytes that was.
fn cut_torn_tail(path: &Path, file: &File, tail: &Tail) -> Result<u64, AuditError> {
    if tail.torn == 0 {
        return Ok(0);
    }
    log::warn!(
        "audit log {}: cutting off {} bytes after its last complete line (an append cut short by a crash)",
        path.display(),
        tail.torn
    );
    file.set_len(tail.complete_len)
        .and_then(|_| file.sync_data())
        .map_err(AuditError::io(
            path,
            "cannot cut off an incomplete last line",
        ))?;
    Ok(tail.torn)
}

/// The chain continues after `last`, which must verify under `key`.
fn head_after(path: &Path, key: &AuditKey, last: &[u8]) -> Result<Head, AuditError> {
    let link = line::parse(last, Some(key)).map_err(|reason| AuditError::Chain {
        path: path.to_path_buf(),
        reason: format!(
            "its last line does not verify ({reason}); run `kmsfs audit verify`, and move the file aside to start a new chain"
        ),
    })?;
    Ok(Head {
        next_seq: link.seq + 1,
        prev: line::hash(last),
    })
}

/// `PATH.1`, logrotate's name for the file it just rotated away: where the chain stands when
/// `PATH` itself holds no line yet. None if there is no such file (or it holds no line).
fn continue_from_rotated(path: &Path, key: &AuditKey) -> Result<Option<Head>, AuditError> {
    let mut name = path.as_os_str().to_os_string();
    name.push(".1");
    let rotated = PathBuf::from(name);
    match std::fs::symlink_metadata(&rotated) {
        Ok(meta) => check_regular(&rotated, &meta)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AuditError::io(&rotated, "cannot stat")(e)),
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(&rotated)
        .map_err(AuditError::io(&rotated, "cannot open"))?;
    let meta = file
        .metadata()
        .map_err(AuditError::io(&rotated, "cannot stat"))?;
    check_regular(&rotated, &meta)?;
    let tail = read_tail(&rotated, &file, meta.len())?;
    match tail.last {
        Some(last) => {
            log::info!(
                "audit log {}: continuing the chain of {}",
                path.display(),
                rotated.display()
            );
            head_after(&rotated, key, &last).map(Some)
        }
        None => Ok(None),
    }
}
