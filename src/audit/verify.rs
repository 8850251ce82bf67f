//! Checking audit log files offline: every line's form and MAC, and the chain from each line
//! to the next across the files, in the order given (oldest first). The first line that does
//! not verify is named as `FILE:LINE: reason`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::key::AuditKey;
use super::line::{self, MAX_LINE};

/// What verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub files: usize,
    pub lines: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Whether every line's MAC was checked (a key was given).
    pub macs_checked: bool,
    /// What was seen but not checked, one line each (`FILE:LINE: ...`): a chain that starts
    /// after seq 1, an incomplete last line, an empty file.
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("no audit log files given")]
    NoFiles,
    #[error("{}: {reason}", file.display())]
    Unreadable { file: PathBuf, reason: String },
    /// The first line that does not verify.
    #[error("{}:{line}: {reason}", file.display())]
    Broken {
        file: PathBuf,
        line: u64,
        reason: String,
    },
}

/// The previous line, for the next one's checks and for messages.
struct Prev {
    seq: u64,
    hash: [u8; 32],
    file: PathBuf,
    line: u64,
}

/// Checks `files` as one chain, in order (rotated files first: `audit.log.2 audit.log.1
/// audit.log`). With `key`, every line's MAC and the genesis of a chain that starts at seq 1;
/// without, the form of each line, the sequence numbers and the `prev` links only.
pub fn verify(files: &[PathBuf], key: Option<&AuditKey>) -> Result<Report, VerifyError> {
    if files.is_empty() {
        return Err(VerifyError::NoFiles);
    }
    let mut report = Report {
        files: files.len(),
        macs_checked: key.is_some(),
        ..Report::default()
    };
    let mut prev: Option<Prev> = None;
    for (i, path) in files.iter().enumerate() {
        let is_last = i + 1 == files.len();
        let mut reader = open(path)?;
        let mut n: u64 = 0;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            (&mut reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut buf)
                .map_err(|e| VerifyError::Unreadable {
                    file: path.clone(),
                    reason: format!("cannot read: {e}"),
                })?;
            if buf.is_empty() {
                break;
            }
            n += 1;
            let broken = |reason: String| VerifyError::Broken {
                file: path.clone(),
                line: n,
                reason,
            };
            if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
                return Err(broken(format!(
                    "longer than {MAX_LINE} bytes: not an audit line"
                )));
            }
            if buf.last() != Some(&b'\n') {
                if is_last {
                    report.notes.push(format!(
                        "{}:{n}: an incomplete last line ({} bytes, no newline) was not checked: an append cut short by a crash, or being written right now; kmsfs cuts it off when it opens the log",
                        path.display(),
                        buf.len()
                    ));
                    break;
                }
                return Err(broken(format!(
                    "an incomplete line ({} bytes, no newline) before the end of the chain",
                    buf.len()
                )));
            }
            let text = &buf[..buf.len() - 1];
            let link = line::parse(text, key).map_err(broken)?;
            check_link(&link, prev.as_ref(), key, path, n, &mut report.notes).map_err(broken)?;
            report.first_seq.get_or_insert(link.seq);
            report.last_seq = Some(link.seq);
            report.lines += 1;
            prev = Some(Prev {
                seq: link.seq,
                hash: line::hash(text),
                file: path.clone(),
                line: n,
            });
        }
        if n == 0 {
            report.notes.push(format!("{}: empty", path.display()));
        }
    }
    Ok(report)
}

/// The line's place in the chain: right after `prev`, or the first line given.
fn check_link(
    link: &line::Link,
    prev: Option<&Prev>,
    key: Option<&AuditKey>,
    path: &Path,
    n: u64,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let Some(prev) = prev else {
        if link.seq != 1 {
            notes.push(format!(
                "{}:{n}: the chain starts at seq {}: the lines before it are in files not given (or deleted), so its link to them was not checked",
                path.display(),
                link.seq
            ));
        } else if let Some(key) = key {
            if link.prev != key.genesis() {
                return Err("seq 1, but not the start of this keystore's chain (its prev is not this keystore's genesis): a line from another keystore's log".into());
            }
        } else {
            notes.push(format!(
                "{}:{n}: the chain starts at seq 1; without the key, whether it is this keystore's chain was not checked",
                path.display()
            ));
        }
        return Ok(());
    };
    let expected = prev.seq + 1;
    let at = format!("{}:{}", prev.file.display(), prev.line);
    if link.seq != expected {
        return Err(if link.seq == 1 {
            format!("seq 1 where {expected} was expected (after {at}): a new chain starts here; lines after {at} were lost, or this line comes from another log")
        } else if link.seq > expected {
            let missing = link.seq - expected;
            format!(
                "seq {} where {expected} was expected (after {at}): {missing} line{} missing before this one (removed, moved elsewhere, or lines reordered)",
                link.seq,
                if missing == 1 { " is" } else { "s are" }
            )
        } else {
            format!(
                "seq {} where {expected} was expected (after {at}): this line is out of order (lines reordered, or a line copied in)",
                link.seq
            )
        });
    }
    if link.prev != prev.hash {
        return Err(format!(
            "its prev is not the hash of the line before it ({at}): that line was altered, or this line was spliced in from another log"
        ));
    }
    Ok(())
}

/// A plain file, read from the start. Compressed rotated files are named as such.
fn open(path: &Path) -> Result<BufReader<File>, VerifyError> {
    let unreadable = |reason: String| VerifyError::Unreadable {
        file: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(|e| unreadable(format!("cannot open: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| unreadable(format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(unreadable(
            "not a regular file (verify reads plain files; decompress a rotated .gz file to a file first)".into(),
        ));
    }
    let mut reader = BufReader::new(file);
    let head = reader
        .fill_buf()
        .map_err(|e| unreadable(format!("cannot read: {e}")))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        return Err(unreadable(
            "gzip-compressed: decompress it to a file first (`zcat F.gz > F`), or keep `delaycompress` in the logrotate configuration".into(),
        ));
    }
    Ok(reader)
}
