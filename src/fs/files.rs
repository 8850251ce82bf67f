//! Open files: what opening, reading, writing, flushing and closing each file of the tree
//! means (see `control.rs` for how writes to control files are understood).

use fuser::FopenFlags;
use zeroize::Zeroizing;

use super::attr;
use super::content;
use super::control::{command_text, CreateInput, TextInput};
use super::core::{bad_handle, read_only, Core};
use super::errors::FsError;
use super::handles::{Handle, Input, Readable};
use super::inode::{GroupFile, Node, RecordFile};
use crate::service::{KmsError, NewRecord};

impl Core {
    /// What a file shows when read (not `key`, which is read in `open`).
    fn content(&self, node: &Node) -> Result<Vec<u8>, FsError> {
        match node {
            Node::Quiesce => return Ok(self.kms.quiesce_status_json().into_bytes()),
            Node::Status => return Ok(self.kms.status_json().into_bytes()),
            Node::Errors => return Ok(self.errors.contents()),
            _ => {}
        }
        let ks = self.kms.read();
        let bytes = match node {
            Node::GroupFile(g, f) => {
                let g = ks.group(g).ok_or_else(FsError::not_found)?;
                match f {
                    GroupFile::Json => content::group_json(&ks, g),
                    GroupFile::Description => g.description.clone().into_bytes(),
                    GroupFile::Cipher => content::word_line(g.cipher.as_str()),
                    GroupFile::Create => Vec::new(),
                    GroupFile::Active => return Err(FsError::new(libc::EINVAL, "a symlink")),
                }
            }
            Node::RecordFile(k, f) => {
                let r = ks.record(k).ok_or_else(FsError::not_found)?;
                match f {
                    RecordFile::Json => content::record_json(&ks, r),
                    RecordFile::State => content::word_line(r.state.as_str()),
                    RecordFile::Description => r.description.clone().into_bytes(),
                    RecordFile::Key => return Err(FsError::new(libc::EINVAL, "key")),
                }
            }
            _ => return Err(FsError::new(libc::EISDIR, "not a regular file")),
        };
        Ok(bytes)
    }

    /// Opens a file. `key` is gated here for every caller (root included, whom the kernel's
    /// permission check lets through): EACCES unless the record is active or inactive. Root
    /// also bypasses the read-only modes, so writing read-only files is refused here too.
    pub fn open(&self, node: &Node, flags: i32) -> Result<(u64, FopenFlags), FsError> {
        if attr::kind(node) != fuser::FileType::RegularFile {
            return Err(FsError::new(libc::EISDIR, "not a regular file"));
        }
        let acc = flags & libc::O_ACCMODE;
        let wants_write = acc != libc::O_RDONLY;
        let wants_read = acc != libc::O_WRONLY;
        if wants_write && !attr::writable(node) {
            return Err(read_only(&self.path(node)));
        }
        if let Node::RecordFile(k, RecordFile::Key) = node {
            let key = self.kms.read_key(k)?;
            let fh = self.handles.insert(Handle {
                node: node.clone(),
                readable: Readable::Secret(key),
                input: Input::None,
            });
            // A record's key never changes: the page cache may keep it across opens.
            return Ok((fh, FopenFlags::FOPEN_KEEP_CACHE));
        }
        let input = if !wants_write {
            Input::None
        } else {
            match node {
                Node::Quiesce
                | Node::RecordFile(_, RecordFile::State)
                | Node::GroupFile(_, GroupFile::Cipher) => Input::Command,
                Node::GroupFile(_, GroupFile::Create) => Input::Create(CreateInput::default()),
                _ => Input::Text(TextInput::new(self.content(node)?)),
            }
        };
        let readable = if wants_read && !matches!(input, Input::Text(_)) {
            self.content(node)?
        } else {
            Vec::new()
        };
        let fh = self.handles.insert(Handle {
            node: node.clone(),
            readable: Readable::Plain(readable),
            input,
        });
        // Content that changes: never from the page cache (see attr::VOLATILE_TTL).
        Ok((fh, FopenFlags::FOPEN_DIRECT_IO))
    }

    /// The copy may hold key bytes: it is wiped once the reply has been sent.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Zeroizing<Vec<u8>>, FsError> {
        let h = self.handles.get(fh).ok_or_else(bad_handle)?;
        let h = h.lock().map_err(|_| bad_handle())?;
        let bytes = h.read_bytes();
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let end = start.saturating_add(size as usize).min(bytes.len());
        Ok(Zeroizing::new(bytes[start..end].to_vec()))
    }

    /// Applies a write. Command files and `.create` act here, so that the caller's `write()`
    /// (and the shell's `echo`) gets the refusal.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8], append: bool) -> Result<u32, FsError> {
        let h = self.handles.get(fh).ok_or_else(bad_handle)?;
        let mut h = h.lock().map_err(|_| bad_handle())?;
        let node = h.node.clone();
        match &mut h.input {
            Input::None => return Err(FsError::new(libc::EBADF, "not open for writing")),
            Input::Command => {
                let text = command_text(data)?;
                match &node {
                    Node::Quiesce => self.kms.quiesce_command(text)?,
                    Node::RecordFile(k, RecordFile::State) => self.kms.set_state(k, text)?,
                    Node::GroupFile(g, GroupFile::Cipher) => self.kms.set_group_cipher(g, text)?,
                    _ => return Err(read_only(&self.path(&node))),
                }
            }
            Input::Create(input) => {
                if let Some(object) = input.feed(data)? {
                    let Node::GroupFile(g, _) = &node else {
                        return Err(read_only(&self.path(&node)));
                    };
                    let req = NewRecord::parse_create_json(&object)?;
                    self.kms.create_record(g, req)?;
                }
            }
            Input::Text(text) => {
                // Refused now rather than at close, where nobody would see it.
                if self.kms.is_quiesced() {
                    text.refuse();
                    return Err(KmsError::Quiesced.into());
                }
                text.write(offset, data, append)?;
            }
        }
        Ok(data.len() as u32)
    }

    /// Commits a description written through this handle, if it changed (see `TextInput`).
    pub fn flush(&self, fh: u64) -> Result<(), FsError> {
        self.commit(fh, false)
    }

    /// Commits whatever a description's handle holds, a bare truncation included.
    pub fn fsync(&self, fh: u64) -> Result<(), FsError> {
        self.commit(fh, true)
    }

    fn commit(&self, fh: u64, closing: bool) -> Result<(), FsError> {
        let Some(h) = self.handles.get(fh) else {
            return Ok(());
        };
        let mut h = h.lock().map_err(|_| bad_handle())?;
        let node = h.node.clone();
        if let Input::Text(text) = &mut h.input {
            if let Some(pending) = text.take_pending(closing) {
                self.describe(&node, &pending?)?;
            }
        }
        Ok(())
    }

    fn describe(&self, node: &Node, text: &str) -> Result<(), FsError> {
        match node {
            Node::GroupFile(g, GroupFile::Description) => Ok(self.kms.describe_group(g, text)?),
            Node::RecordFile(k, RecordFile::Description) => {
                Ok(self.kms.describe_record(k, text)?)
            }
            _ => Err(read_only(&self.path(node))),
        }
    }

    /// Forgets a handle. What is still pending is committed (a description) or reported (a
    /// `.create` object left incomplete); the error reaches only the log and `.errors`.
    pub fn release(&self, fh: u64) -> Result<(), FsError> {
        let flushed = self.commit(fh, true);
        let Some(h) = self.handles.remove(fh) else {
            return flushed;
        };
        flushed?;
        let h = h.lock().map_err(|_| bad_handle())?;
        if let Input::Create(input) = &h.input {
            if input.has_leftover() {
                return Err(FsError::new(
                    libc::EINVAL,
                    ".create was closed with an incomplete JSON object; nothing was created",
                ));
            }
        }
        Ok(())
    }

    /// `truncate`/`O_TRUNC`. On command files and `.create` a no-op that is never refused
    /// (even while quiesced: `echo unquiesce > .quiesce` truncates first).
    pub fn truncate(&self, node: &Node, fh: Option<u64>, size: u64) -> Result<(), FsError> {
        if !attr::writable(node) {
            return Err(read_only(&self.path(node)));
        }
        match node {
            Node::GroupFile(_, GroupFile::Description)
            | Node::RecordFile(_, RecordFile::Description) => {}
            _ => return Ok(()),
        }
        // Truncating a description is a change: refused here, where `>` sees it, rather than
        // at close.
        if self.kms.is_quiesced() {
            return Err(KmsError::Quiesced.into());
        }
        // `echo x > description` opens, then truncates, then writes; the kernel (6.18 at
        // least) sends that truncate without the file handle. So a truncate applies to the
        // edits open on the file, to be committed with them at flush or close.
        let handles = match fh.and_then(|fh| self.handles.get(fh)) {
            Some(h) => vec![h],
            None => self.handles.open_on(node),
        };
        let mut edited = false;
        for h in handles {
            let mut h = h.lock().map_err(|_| bad_handle())?;
            if let Input::Text(text) = &mut h.input {
                text.truncate(size)?;
                edited = true;
            }
        }
        if edited {
            return Ok(());
        }
        // A path truncate with no open edit (`truncate -s 0 description`): a change of its own.
        let mut text = TextInput::new(self.content(node)?);
        text.truncate(size)?;
        match text.take_pending(true) {
            Some(pending) => self.describe(node, &pending?),
            None => Ok(()),
        }
    }

    pub fn readlink(&self, node: &Node) -> Result<Vec<u8>, FsError> {
        let ks = self.kms.read();
        let target = match node {
            Node::GroupFile(g, GroupFile::Active) => {
                ks.group(g).and_then(|g| content::active_target(&ks, g))
            }
            Node::TagLink(k) => ks.record(k).and_then(|r| content::tag_target(&ks, r)),
            _ => return Err(FsError::new(libc::EINVAL, "not a symlink")),
        };
        target
            .map(|t| t.as_bytes().to_vec())
            .ok_or_else(FsError::not_found)
    }
}
