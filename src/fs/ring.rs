//! Refusals as the administrator sees them: the one log line that explains each, and
//! `.errors`, the ring of the latest 100 that `tail MOUNT/.errors` shows, one JSON line each.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

use super::errno::{errno_name, errno_of};
use super::error::FsError;
use crate::keystore::Timestamp;

pub const MAX_ERRORS: usize = 100;
/// A reason is one line for an administrator; anything longer is cut (the refusals never
/// echo what was written, but a name or a path can be long), so `.errors` stays small.
pub const MAX_REASON_BYTES: usize = 512;

/// Who asked, for the log and `.errors`.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

impl Caller {
    /// Tells the service who asks, for its audit lines, until the guard is dropped.
    pub fn acting(&self) -> crate::service::Acting {
        crate::service::acting_as(self.uid, self.gid, self.pid)
    }
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    uid: u32,
    pid: u32,
    process: Option<String>,
    path: &'a str,
    operation: &'a str,
    errno: &'static str,
    reason: &'a str,
}

/// The process name of `pid`, from `/proc/PID/comm`; None once the process is gone.
fn process_name(pid: u32) -> Option<String> {
    if pid == 0 {
        return None;
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end_matches('\n').to_string())
}

#[derive(Default)]
pub struct ErrorRing {
    inner: Mutex<Ring>,
}

#[derive(Default)]
struct Ring {
    lines: VecDeque<String>,
    bytes: usize,
}

impl ErrorRing {
    /// Logs the refusal in one line and appends it to the ring.
    pub fn record(&self, caller: Caller, path: &str, operation: &str, err: &FsError) {
        let process = process_name(caller.pid);
        let who = process.as_deref().unwrap_or("?");
        let name = errno_name(errno_of(err));
        let mut reason = err.to_string();
        if reason.len() > MAX_REASON_BYTES {
            let mut cut = MAX_REASON_BYTES;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
            reason.push_str("...");
        }
        if err.is_internal() {
            log::error!(
                "{operation} {path} failed ({name}) for uid {} pid {} ({who}): {}",
                caller.uid,
                caller.pid,
                reason
            );
        } else {
            log::warn!(
                "{operation} {path} refused ({name}) for uid {} pid {} ({who}): {}",
                caller.uid,
                caller.pid,
                reason
            );
        }
        let line = Line {
            time: Timestamp::now().to_rfc3339(),
            uid: caller.uid,
            pid: caller.pid,
            process,
            path,
            operation,
            errno: name,
            reason: &reason,
        };
        let mut text = serde_json::to_string(&line).unwrap_or_default();
        text.push('\n');
        self.push(text);
    }

    fn push(&self, line: String) {
        let Ok(mut ring) = self.inner.lock() else {
            return;
        };
        ring.bytes += line.len();
        ring.lines.push_back(line);
        while ring.lines.len() > MAX_ERRORS {
            if let Some(old) = ring.lines.pop_front() {
                ring.bytes -= old.len();
            }
        }
    }

    pub fn contents(&self) -> Vec<u8> {
        let Ok(ring) = self.inner.lock() else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(ring.bytes);
        for l in &ring.lines {
            out.extend_from_slice(l.as_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_hundred() {
        let ring = ErrorRing::default();
        let caller = Caller {
            uid: 0,
            gid: 0,
            pid: std::process::id(),
        };
        for i in 0..150 {
            ring.record(
                caller,
                &format!("/m/g/k{i}/state"),
                "write",
                &FsError::Exists(format!("reason {i}")),
            );
        }
        let text = String::from_utf8(ring.contents()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), MAX_ERRORS);
        let last: serde_json::Value = serde_json::from_str(lines[99]).unwrap();
        assert_eq!(last["reason"], "reason 149 already exists");
        assert_eq!(last["errno"], "EEXIST");
        assert_eq!(last["operation"], "write");
        assert_eq!(last["path"], "/m/g/k149/state");
        assert!(last["process"].is_string());
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        // However long a reason, the line stays short.
        ring.record(
            caller,
            "/m/x",
            "write",
            &FsError::Exists("\u{e9}".repeat(10_000)),
        );
        let text = String::from_utf8(ring.contents()).unwrap();
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert!(last["reason"].as_str().unwrap().len() <= MAX_REASON_BYTES + 3);
        assert_eq!(first["reason"], "reason 50 already exists");
    }
}
