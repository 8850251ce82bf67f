//! What one open file has been written so far, before it means anything to the service.
//!
//! - `.create` (`ObjectInput`): one JSON object, possibly split over several writes (`jq`
//!   splits large output); complete on the write that ends it.
//! - Descriptions (`TextInput`): small ordinary files, committed on flush or close.
//!
//! Command files need no buffer: each `write()` is one whole command.

use serde::de::IgnoredAny;
use zeroize::Zeroizing;

use super::error::{FsError, InputError};
use crate::keystore::check_description_len;

/// A `.create` object is a name, a few words and a passphrase: anything this large is a
/// mistake (a wrong file piped in), refused before it fills memory.
pub const MAX_CREATE_BYTES: usize = 64 * 1024;

/// The JSON accumulated by one open `.create`.
/// The object may hold a passphrase: the buffer is wiped when dropped, and is allocated at its
/// full size up front so that growing it never leaves an unwiped copy behind.
///
/// Completeness is found by scanning with `IgnoredAny`, which builds no values (so no unwiped
/// copy of a half-written passphrase); the complete object is then parsed once, into the
/// request, by `parse::new_record`.
pub struct ObjectInput {
    file: &'static str,
    buf: Zeroizing<Vec<u8>>,
    /// Also takes one bare word in one write (`echo hmk > .change-key`).
    words: bool,
}

impl std::fmt::Debug for ObjectInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectInput({}, {} bytes)", self.file, self.buf.len())
    }
}

impl ObjectInput {
    pub fn new(file: &'static str) -> ObjectInput {
        ObjectInput {
            file,
            buf: Zeroizing::new(Vec::with_capacity(MAX_CREATE_BYTES)),
            words: false,
        }
    }

    /// A JSON object, or one word written in one `write()`.
    pub fn with_words(file: &'static str) -> ObjectInput {
        ObjectInput {
            words: true,
            ..ObjectInput::new(file)
        }
    }

    /// Adds one write. Returns the complete object when this write completes one, None while
    /// it is incomplete. A refused write clears what was accumulated, so that the rest of a
    /// broken object is refused too rather than glued to the next attempt.
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, FsError> {
        if self.buf.len() + data.len() > MAX_CREATE_BYTES {
            zeroize::Zeroize::zeroize(&mut *self.buf);
            return Err(FsError::ObjectTooLarge {
                file: self.file,
                max: MAX_CREATE_BYTES,
            });
        }
        self.buf.extend_from_slice(data);
        let result = self.parse();
        if !matches!(result, Ok(None)) {
            zeroize::Zeroize::zeroize(&mut *self.buf);
        }
        result
    }

    fn parse(&self) -> Result<Option<Zeroizing<Vec<u8>>>, FsError> {
        let Some(start) = self.buf.iter().position(|b| !b.is_ascii_whitespace()) else {
            return Ok(None);
        };
        if self.buf[start] != b'{' {
            if self.words {
                return Ok(Some(Zeroizing::new(self.buf[start..].to_vec())));
            }
            return Err(self.invalid("expected one JSON object, starting with '{'"));
        }
        let mut stream = serde_json::Deserializer::from_slice(&self.buf).into_iter::<IgnoredAny>();
        match stream.next() {
            None => Ok(None),
            Some(Err(e)) if e.is_eof() => Ok(None),
            Some(Err(e)) => Err(self.invalid(&format!("invalid JSON: {e}"))),
            Some(Ok(_)) => {
                let end = stream.byte_offset();
                if self.buf[end..].iter().any(|b| !b.is_ascii_whitespace()) {
                    return Err(
                        self.invalid("one JSON object per write sequence; found more after it")
                    );
                }
                Ok(Some(Zeroizing::new(self.buf[..end].to_vec())))
            }
        }
    }

    fn invalid(&self, reason: &str) -> FsError {
        let reason = reason.to_string();
        if self.words {
            InputError::ChangeKey(reason).into()
        } else {
            InputError::Create(reason).into()
        }
    }

    /// Whether something other than blanks was written and never completed.
    pub fn has_leftover(&self) -> bool {
        self.buf.iter().any(|b| !b.is_ascii_whitespace())
    }
}

/// A description being edited through one open file: an ordinary small file in memory.
///
/// A refused write discards the whole edit (the truncation that `>` did before it
/// included): a refused operation changes nothing, so `echo TOO-LONG > description` keeps the
/// old text rather than leaving it empty.
///
/// Every refusal the bytes can cause comes from the `write()` itself (EFBIG, EINVAL for text
/// that is not UTF-8), because the shell ignores what `close()` says. One exception: a
/// character split over two writes (`jq`, `cp` writing in chunks) leaves an incomplete UTF-8
/// sequence at the end of the text, which is accepted until the commit; a commit that still
/// finds it is EINVAL.
///
/// The shell flushes before it writes (`echo x > f` dups the new descriptor onto stdout and
/// closes the original), so a flush commits only once something was written; a truncation
/// alone (`: > f`) is committed at close. An edit neither written nor truncated commits
/// nothing, ever: holding a description open for writing changes nothing.
#[derive(Debug)]
pub struct TextInput {
    text: Vec<u8>,
    /// Changed (written or truncated) since the last commit.
    dirty: bool,
    /// Written since the last commit (a flush commits only then).
    written: bool,
    /// Written at least once since the open, committed or not.
    ever_written: bool,
    refused: bool,
}

impl TextInput {
    /// Starts from the current text, so that `>>` appends and partial overwrites keep the rest.
    pub fn new(current: Vec<u8>) -> TextInput {
        TextInput {
            text: current,
            dirty: false,
            written: false,
            ever_written: false,
            refused: false,
        }
    }

    /// Writes at `offset` (at the end for O_APPEND). Refused at write time, so that the
    /// writer sees it: EFBIG when larger than a description may be, EINVAL when the text
    /// would not be UTF-8 (but for an incomplete character at its very end). A refused write
    /// changes nothing of the text and discards the edit.
    pub fn write(&mut self, offset: u64, data: &[u8], append: bool) -> Result<(), FsError> {
        let offset = if append {
            self.text.len()
        } else {
            usize::try_from(offset).unwrap_or(usize::MAX)
        };
        let end = offset.saturating_add(data.len());
        if let Err(e) = check_description_len(end) {
            self.refuse();
            return Err(e.into());
        }
        // At most 4096 bytes: the text as it would be, checked before it is kept.
        let mut next = self.text.clone();
        if next.len() < end {
            next.resize(end, 0);
        }
        next[offset..end].copy_from_slice(data);
        if !utf8_but_for_its_tail(&next) {
            self.refuse();
            return Err(not_utf8());
        }
        self.text = next;
        self.dirty = true;
        self.written = true;
        self.ever_written = true;
        Ok(())
    }

    /// Whether anything was ever written through this open file.
    pub fn ever_written(&self) -> bool {
        self.ever_written
    }

    pub fn truncate(&mut self, size: u64) -> Result<(), FsError> {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if let Err(e) = check_description_len(size) {
            self.refuse();
            return Err(e.into());
        }
        self.text.resize(size, 0);
        self.dirty = true;
        Ok(())
    }

    /// Marks the edit as refused: nothing of it will be committed.
    pub fn refuse(&mut self) {
        self.refused = true;
    }

    /// The text to commit, if it changed since the last commit and no write was refused; at
    /// a flush (`closing` false) only once something was written. Taking it clears the marks,
    /// so a refused commit is reported once, not again at close.
    pub fn take_pending(&mut self, closing: bool) -> Option<Result<String, FsError>> {
        if !self.dirty || self.refused || !(closing || self.written) {
            return None;
        }
        self.dirty = false;
        self.written = false;
        Some(String::from_utf8(self.text.clone()).map_err(|_| not_utf8()))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.text
    }
}

fn not_utf8() -> FsError {
    InputError::NotUtf8 {
        what: "a description",
    }
    .into()
}

/// Valid UTF-8, or valid but for an incomplete sequence at the very end (the start of a
/// character whose other bytes the next write brings).
fn utf8_but_for_its_tail(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(_) => true,
        // `error_len` None: the input ended inside a sequence that was valid so far.
        Err(e) => e.error_len().is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::errno::errno_of;

    #[test]
    fn create_whole_and_split() {
        let mut c = ObjectInput::new(".create");
        assert_eq!(
            &c.feed(b"{\"name\": \"k\"}\n").unwrap().unwrap()[..],
            b"{\"name\": \"k\"}"
        );
        assert!(!c.has_leftover());
        assert_eq!(c.feed(b"{\"na").unwrap(), None);
        assert!(c.has_leftover());
        assert_eq!(c.feed(b"me\": \"k\", \"state\"").unwrap(), None);
        let obj = c.feed(b": \"active\"}").unwrap().unwrap();
        assert_eq!(&obj[..], b"{\"name\": \"k\", \"state\": \"active\"}");
        // jq's trailing newline in a write of its own.
        assert_eq!(c.feed(b"\n").unwrap(), None);
        assert!(!c.has_leftover());
    }

    #[test]
    fn create_split_inside_a_string_escape() {
        let mut c = ObjectInput::new(".create");
        assert_eq!(c.feed(b"{\"name\": \"a\\").unwrap(), None);
        assert!(c.feed(b"\"b\"}").unwrap().is_some());
    }

    #[test]
    fn create_refusals() {
        let mut c = ObjectInput::new(".create");
        assert_eq!(
            errno_of(&c.feed(b"{\"name\": }").unwrap_err()),
            libc::EINVAL
        );
        assert!(!c.has_leftover(), "a refusal starts over");
        assert_eq!(errno_of(&c.feed(b"[1]").unwrap_err()), libc::EINVAL);
        assert_eq!(errno_of(&c.feed(b"name=k").unwrap_err()), libc::EINVAL);
        assert_eq!(errno_of(&c.feed(b"{} {}").unwrap_err()), libc::EINVAL);
        let big = vec![b' '; MAX_CREATE_BYTES + 1];
        assert_eq!(errno_of(&c.feed(&big).unwrap_err()), libc::EFBIG);
    }

    #[test]
    fn text_like_a_small_file() {
        let mut t = TextInput::new(b"hello\n".to_vec());
        assert!(t.take_pending(true).is_none());
        t.write(0, b"J", false).unwrap();
        t.write(99, b"x", true).unwrap();
        assert_eq!(t.bytes(), b"Jello\nx");
        t.truncate(0).unwrap();
        assert!(t.take_pending(false).is_some(), "written: a flush commits");
        t.truncate(0).unwrap();
        assert!(
            t.take_pending(false).is_none(),
            "only truncated: not at a flush"
        );
        t.write(0, b"new\n", false).unwrap();
        assert_eq!(t.take_pending(false).unwrap().unwrap(), "new\n");
        assert!(t.take_pending(true).is_none());
        t.truncate(0).unwrap();
        assert_eq!(t.take_pending(true).unwrap().unwrap(), "");
        assert_eq!(
            errno_of(&t.write(4090, b"0123456789", false).unwrap_err()),
            libc::EFBIG
        );
        assert!(
            t.take_pending(true).is_none(),
            "a refused write discards the edit"
        );
    }

    #[test]
    fn text_must_stay_utf8_but_for_a_character_split_over_writes() {
        let mut t = TextInput::new(b"old".to_vec());
        assert_eq!(
            errno_of(&t.write(0, b"bad\xff\n", false).unwrap_err()),
            libc::EINVAL
        );
        assert_eq!(t.bytes(), b"old", "a refused write changes nothing");
        assert!(t.take_pending(true).is_none(), "and discards the edit");
        // A character split over writes, each one byte of it.
        let mut t = TextInput::new(Vec::new());
        for (i, b) in "é🔑".bytes().enumerate() {
            t.write(i as u64, &[b], false).unwrap();
        }
        assert_eq!(t.take_pending(true).unwrap().unwrap(), "é🔑");
        // What no later byte can complete: a lone continuation byte, or a start byte
        // followed by something that does not continue it.
        let mut t = TextInput::new(b"ab".to_vec());
        assert_eq!(
            errno_of(&t.write(2, &[0xa9], false).unwrap_err()),
            libc::EINVAL
        );
        let mut t = TextInput::new(b"ab".to_vec());
        t.write(2, &[0xc3], false).unwrap();
        assert_eq!(
            errno_of(&t.write(3, b"x", false).unwrap_err()),
            libc::EINVAL
        );
        // Breaking a character in the middle of the text.
        let mut t = TextInput::new("café!".as_bytes().to_vec());
        assert_eq!(
            errno_of(&t.write(4, b"x", false).unwrap_err()),
            libc::EINVAL
        );
        // Left incomplete at the commit: EINVAL then.
        let mut t = TextInput::new(Vec::new());
        t.write(0, b"caf\xc3", false).unwrap();
        assert_eq!(
            errno_of(&t.take_pending(true).unwrap().unwrap_err()),
            libc::EINVAL
        );
        // A truncation through a character leaves its start: the commit refuses it.
        let mut t = TextInput::new("café".as_bytes().to_vec());
        t.truncate(4).unwrap();
        assert_eq!(
            errno_of(&t.take_pending(true).unwrap().unwrap_err()),
            libc::EINVAL
        );
    }

    #[test]
    fn an_edit_neither_written_nor_truncated_commits_nothing() {
        let mut t = TextInput::new(b"current".to_vec());
        assert!(t.take_pending(false).is_none());
        assert!(t.take_pending(true).is_none());
        assert!(!t.ever_written());
        t.write(0, b"x", false).unwrap();
        assert!(t.take_pending(false).is_some());
        assert!(t.ever_written(), "even once committed");
    }
}
