//! Open files: what each file handle reads and what its writes have accumulated.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::error::FsError;
use super::inode::{Node, Of};
use super::input::{ObjectInput, TextInput};
use super::table::Apply;
use crate::crypto::KeyMaterial;
use crate::service::Kms;

/// What reads of a handle return: a snapshot taken at open(), so that one `cat` sees one
/// consistent version even when it takes several reads.
pub enum Readable {
    Plain(Vec<u8>),
    /// Key bytes, wiped when the handle is released.
    Secret(KeyMaterial),
}

impl Readable {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Readable::Plain(v) => v,
            Readable::Secret(k) => k.expose(),
        }
    }
}

/// What writes to a handle do: the meaning its file's table entry gives them, with the
/// buffer of what this handle has written where the meaning needs one.
pub enum Input {
    /// Opened read-only.
    None,
    Command(Apply),
    Object(ObjectInput, fn(&Kms, &Of, &[u8]) -> Result<(), FsError>),
    Text(TextInput, Apply),
}

pub struct Handle {
    pub node: Node,
    pub of: Of,
    /// The pid of the OPEN (the kernel gives the caller's pid in every request): the shell's
    /// truncation, which arrives without a handle right after the OPEN, is matched by it.
    pub opened_by: u32,
    pub readable: Readable,
    pub input: Input,
    /// The process that last wrote through this handle and its executable, read at that
    /// write: a FLUSH may not read it (`audit::with_known_exe`).
    pub writer: Option<(u32, Option<String>)>,
    /// A failed commit of this open file that the processes which did not make it have not
    /// been told of yet (see `Operations::commit`).
    pub unreported: Option<Unreported>,
}

/// Why a commit failed, and the pid that was told.
#[derive(Clone, Debug)]
pub struct Unreported {
    pub errno: i32,
    pub reason: String,
    pub told: u32,
}

impl Handle {
    /// A description open for writing reads back what this handle has written so far.
    pub fn read_bytes(&self) -> &[u8] {
        match &self.input {
            Input::Text(t, _) => t.bytes(),
            _ => self.readable.bytes(),
        }
    }
}

/// Handles are locked one by one, never the table during a service call, so that a slow
/// `.create` (a passphrase KDF) holds up no other open file. The node and the opening pid of
/// each handle are kept beside it, readable without waiting for the handle's lock.
#[derive(Default)]
pub struct Handles {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Open>>,
}

/// One open file: what can be asked without the handle's lock, and the handle.
struct Open {
    node: Node,
    opened_by: u32,
    handle: Arc<Mutex<Handle>>,
}

impl Handles {
    /// Handle numbers only grow: a larger one was opened later.
    pub fn insert(&self, h: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut open) = self.open.lock() {
            let entry = Open {
                node: h.node.clone(),
                opened_by: h.opened_by,
                handle: Arc::new(Mutex::new(h)),
            };
            open.insert(fh, entry);
        }
        fh
    }

    pub fn get(&self, fh: u64) -> Option<Arc<Mutex<Handle>>> {
        self.open.lock().ok()?.get(&fh).map(|o| o.handle.clone())
    }

    pub fn node(&self, fh: u64) -> Option<Node> {
        self.open.lock().ok()?.get(&fh).map(|o| o.node.clone())
    }

    pub fn remove(&self, fh: u64) -> Option<Arc<Mutex<Handle>>> {
        self.open.lock().ok()?.remove(&fh).map(|o| o.handle)
    }

    /// The handles that `pid` opened on `node`, the most recently opened first (a scan: there
    /// are only as many as open files). Never another process's: a truncation without a
    /// handle belongs to the caller that just opened, not to every edit of the file.
    pub fn opened_by(&self, node: &Node, pid: u32) -> Vec<Arc<Mutex<Handle>>> {
        let Ok(open) = self.open.lock() else {
            return Vec::new();
        };
        let mut mine: Vec<(u64, Arc<Mutex<Handle>>)> = open
            .iter()
            .filter(|(_, o)| o.opened_by == pid && &o.node == node)
            .map(|(fh, o)| (*fh, o.handle.clone()))
            .collect();
        mine.sort_by_key(|(fh, _)| std::cmp::Reverse(*fh));
        mine.into_iter().map(|(_, h)| h).collect()
    }
}
