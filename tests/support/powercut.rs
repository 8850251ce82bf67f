//! Power cuts, offline (the model is described in tests/power_cut.rs): a real process runs
//! under strace (`record`); the system calls that touch the data directory become `Op`s; a
//! `Model` replays them and, at any point of the history, lists the disk images a power cut
//! there could leave (`Model::images`), which `write_image` puts into a scratch directory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::Rng;
use sha2::{Digest, Sha256};

/// The system calls recorded: every way a file's bytes, size or name can change or be made
/// durable, and what maps descriptors to files (a call on a file of the data directory that
/// the model does not know panics, so nothing is silently left out).
pub const TRACED: &str = "openat,open,creat,write,pwrite64,writev,pwritev,pwritev2,lseek,\
ftruncate,truncate,fallocate,copy_file_range,sendfile,fsync,fdatasync,sync_file_range,syncfs,\
sync,rename,renameat,renameat2,unlink,unlinkat,mkdir,mkdirat,rmdir,close,dup,dup2,dup3,fcntl";

/// A write of this prefix, on any descriptor, is an acknowledgement marker: the process that
/// drives the keystore writes `POWERCUT-ACK N\n` (to /dev/null) once call N has returned, so
/// the trace itself says which operations came before it.
pub const ACK_MAGIC: &[u8] = b"POWERCUT-ACK ";

/// An inode of the model (an index into the recording's files).
pub type Ino = usize;

/// One operation on the data directory, as the process made it (successful calls only).
#[derive(Clone, Debug)]
pub enum Op {
    /// `mkdir` of the data directory itself, in its parent.
    MkdirData,
    /// fsync of the data directory's parent.
    SyncParent,
    /// A file created (`O_CREAT`) under `name`.
    Create {
        name: String,
        ino: Ino,
    },
    Write {
        ino: Ino,
        off: u64,
        data: Arc<[u8]>,
    },
    Truncate {
        ino: Ino,
        len: u64,
    },
    /// fsync or fdatasync of a file.
    Sync {
        ino: Ino,
    },
    Rename {
        from: String,
        to: String,
    },
    Unlink {
        name: String,
    },
    /// fsync of the data directory.
    SyncDir,
    /// The driving process's acknowledgement of call `N` (see `ACK_MAGIC`).
    Ack(u64),
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::MkdirData => write!(f, "mkdir DATA"),
            Op::SyncParent => write!(f, "fsync(parent of DATA)"),
            Op::Create { name, ino } => write!(f, "create {name} (inode {ino})"),
            Op::Write { ino, off, data } => {
                write!(f, "write inode {ino} @{off} +{}", data.len())
            }
            Op::Truncate { ino, len } => write!(f, "ftruncate inode {ino} to {len}"),
            Op::Sync { ino } => write!(f, "fsync inode {ino}"),
            Op::Rename { from, to } => write!(f, "rename {from} -> {to}"),
            Op::Unlink { name } => write!(f, "unlink {name}"),
            Op::SyncDir => write!(f, "fsync(DATA)"),
            Op::Ack(n) => write!(f, "ACK {n}"),
        }
    }
}

/// An operation and the line of the trace it came from.
#[derive(Clone, Debug)]
pub struct Step {
    pub op: Op,
    pub line: usize,
}

/// What a traced run did to the data directory.
#[derive(Debug)]
pub struct Recording {
    /// The data directory's files before the run (inodes 0..), all durable; None: it did not
    /// exist.
    pub initial: Option<Vec<(String, Vec<u8>)>>,
    pub steps: Vec<Step>,
    /// System calls in the trace (of every file, not only the data directory's).
    pub syscalls: usize,
    pub output: Output,
}

impl Recording {
    pub fn count(&self, pred: impl Fn(&Op) -> bool) -> usize {
        self.steps.iter().filter(|s| pred(&s.op)).count()
    }

    /// Appends an acknowledgement (a command's exit: what it did is acknowledged then).
    pub fn ack_at_end(&mut self, n: u64) {
        self.steps.push(Step {
            op: Op::Ack(n),
            line: 0,
        });
    }

    /// Puts an acknowledgement first (the state before a command is the acknowledged one).
    pub fn ack_at_start(&mut self, n: u64) {
        self.steps.insert(
            0,
            Step {
                op: Op::Ack(n),
                line: 0,
            },
        );
    }
}

/// Fails (never skips) when strace is missing.
pub fn require_strace() {
    let found = Command::new("strace").arg("-V").output();
    match found {
        Ok(o) if o.status.success() => {}
        _ => panic!(
            "strace is required by the power-cut drill and is not installed: apt-get install -y strace"
        ),
    }
}

/// Reads the regular files of `dir` (None if it does not exist), sorted by name.
pub fn read_dir_files(dir: &Path) -> Option<Vec<(String, Vec<u8>)>> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut files: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            let name = e.file_name().into_string().unwrap();
            let bytes = std::fs::read(e.path()).unwrap();
            (name, bytes)
        })
        .collect();
    files.sort();
    Some(files)
}

/// Runs `cmd` under strace, writing the trace to `trace`, and turns what it did to `data`
/// (a canonical path; it may not exist yet, its parent must) into steps. Checks the parser
/// against the disk: the files the model says the directory holds at the end, with the
/// bytes it says they hold, must be exactly the files there.
pub fn record(cmd: &Command, data: &Path, trace: &Path) -> Recording {
    let initial = read_dir_files(data);
    let mut strace = Command::new("strace");
    strace
        .args(["-f", "-qq", "-y", "-xx", "-s", "1000000000", "-e"])
        .arg(format!("trace={TRACED}"))
        .arg("-o")
        .arg(trace)
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => strace.env(k, v),
            None => strace.env_remove(k),
        };
    }
    let cwd = match cmd.get_current_dir() {
        Some(d) => d.to_path_buf(),
        None => std::env::current_dir().unwrap(),
    };
    strace.current_dir(&cwd).stdin(std::process::Stdio::null());
    let output = strace.output().expect("run strace");
    let text = std::fs::read_to_string(trace).expect("read the trace");
    let mut p = Parser::new(data, &cwd, initial.as_deref());
    for (i, line) in text.lines().enumerate() {
        p.feed(i + 1, line);
    }
    // The parser must agree with the disk.
    let on_disk = read_dir_files(data).unwrap_or_default();
    let modelled: Vec<(String, Vec<u8>)> = p
        .names
        .iter()
        .map(|(n, ino)| (n.clone(), p.contents[*ino].clone()))
        .collect();
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&modelled),
        names(&on_disk),
        "the trace {} does not explain the files of {}",
        trace.display(),
        data.display()
    );
    for ((name, want), (_, got)) in modelled.iter().zip(&on_disk) {
        assert!(
            want == got,
            "the trace {} does not explain the bytes of {name} ({} modelled, {} on disk)",
            trace.display(),
            want.len(),
            got.len()
        );
    }
    Recording {
        initial,
        steps: p.steps,
        syscalls: p.syscalls,
        output,
    }
}

// ---- the trace parser ------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Fd {
    File { ino: Ino, off: u64, append: bool },
    DataDir,
    Parent,
}

enum Class {
    Data,
    Parent,
    File(String),
    Other,
}

struct Parser {
    data: PathBuf,
    parent: PathBuf,
    cwd: PathBuf,
    /// The directory as the process sees it: name -> inode.
    names: BTreeMap<String, Ino>,
    /// Every inode's bytes as the process sees them.
    contents: Vec<Vec<u8>>,
    /// One table for all threads (kmsfs and the test child never fork).
    fds: HashMap<i64, Fd>,
    unfinished: HashMap<String, String>,
    steps: Vec<Step>,
    syscalls: usize,
}

const AT_FDCWD: i64 = -100;

impl Parser {
    fn new(data: &Path, cwd: &Path, initial: Option<&[(String, Vec<u8>)]>) -> Parser {
        let mut names = BTreeMap::new();
        let mut contents = Vec::new();
        for (name, bytes) in initial.unwrap_or_default() {
            names.insert(name.clone(), contents.len());
            contents.push(bytes.clone());
        }
        Parser {
            data: data.to_path_buf(),
            parent: data.parent().unwrap().to_path_buf(),
            cwd: cwd.to_path_buf(),
            names,
            contents,
            fds: HashMap::new(),
            unfinished: HashMap::new(),
            steps: Vec::new(),
            syscalls: 0,
        }
    }

    fn push(&mut self, line: usize, op: Op) {
        self.steps.push(Step { op, line });
    }

    fn feed(&mut self, lineno: usize, raw: &str) {
        let Some((pid, rest)) = raw.split_once(' ') else {
            return;
        };
        let rest = rest.trim_start();
        if rest.starts_with("---") || rest.starts_with("+++") {
            return;
        }
        if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            self.unfinished.insert(pid.to_string(), head.to_string());
            return;
        }
        let full = if rest.starts_with("<... ") {
            let head = self
                .unfinished
                .remove(pid)
                .unwrap_or_else(|| panic!("trace line {lineno}: resumed without a start: {raw}"));
            let (_, tail) = rest.split_once(" resumed>").expect("resumed");
            format!("{head}{tail}")
        } else {
            rest.to_string()
        };
        self.syscall(lineno, &full);
    }

    fn syscall(&mut self, line: usize, text: &str) {
        let Some(open) = text.find('(') else { return };
        let name = &text[..open];
        let Some((args, ret)) = text[open + 1..].rsplit_once(") = ") else {
            return;
        };
        self.syscalls += 1;
        let Some(ret) = parse_int(ret.trim()) else {
            return; // "?": the process exited inside the call
        };
        if ret < 0 {
            return; // failed: changed nothing
        }
        let a = split_args(args);
        match name {
            "openat" => {
                let base = self.base(&a[0]);
                self.open(line, &base, &a[1], &a[2], ret)
            }
            "open" => {
                let cwd = self.cwd.clone();
                self.open(line, &cwd, &a[0], &a[1], ret)
            }
            "creat" => {
                let cwd = self.cwd.clone();
                self.open(line, &cwd, &a[0], "O_WRONLY|O_CREAT|O_TRUNC", ret)
            }
            "write" => {
                let data = unquote(&a[1]);
                self.write(line, &a[0], &data[..ret as usize], None)
            }
            "pwrite64" => {
                let data = unquote(&a[1]);
                let off = parse_int(&a[3]).unwrap() as u64;
                self.write(line, &a[0], &data[..ret as usize], Some(off))
            }
            "writev" | "pwritev" | "pwritev2" => {
                let data: Vec<u8> = quoted_strings(&a[1]).concat();
                let off = (name != "writev").then(|| parse_int(&a[3]).unwrap() as u64);
                self.write(line, &a[0], &data[..ret as usize], off)
            }
            "lseek" => {
                if let Some(Fd::File { off, .. }) = self.fds.get_mut(&fd_num(&a[0])) {
                    *off = ret as u64;
                }
            }
            "ftruncate" => {
                if let Some(Fd::File { ino, .. }) = self.fds.get(&fd_num(&a[0])).cloned() {
                    let len = parse_int(&a[1]).unwrap() as u64;
                    self.contents[ino].resize(len as usize, 0);
                    self.push(line, Op::Truncate { ino, len });
                }
            }
            "fsync" | "fdatasync" => match self.fds.get(&fd_num(&a[0])) {
                Some(Fd::File { ino, .. }) => {
                    let ino = *ino;
                    self.push(line, Op::Sync { ino })
                }
                Some(Fd::DataDir) => self.push(line, Op::SyncDir),
                Some(Fd::Parent) => self.push(line, Op::SyncParent),
                None => {}
            },
            "close" => {
                self.fds.remove(&fd_num(&a[0]));
            }
            "dup" | "dup2" | "dup3" => self.dup(&a[0], ret),
            "fcntl" if a[1].starts_with("F_DUPFD") => self.dup(&a[0], ret),
            "fcntl" => {}
            "rename" => {
                let cwd = self.cwd.clone();
                self.rename(line, (&cwd, &a[0]), (&cwd, &a[1]))
            }
            "renameat" | "renameat2" => {
                let (b0, b2) = (self.base(&a[0]), self.base(&a[2]));
                if name == "renameat2" && a[4] != "0" {
                    panic!(
                        "trace line {line}: renameat2 with flags {} is not modelled",
                        a[4]
                    );
                }
                self.rename(line, (&b0, &a[1]), (&b2, &a[3]))
            }
            "unlink" => {
                let cwd = self.cwd.clone();
                self.unlink(line, &cwd, &a[0], false)
            }
            "unlinkat" => {
                let base = self.base(&a[0]);
                self.unlink(line, &base, &a[1], a[2].contains("AT_REMOVEDIR"))
            }
            "rmdir" => {
                let cwd = self.cwd.clone();
                self.unlink(line, &cwd, &a[0], true)
            }
            "mkdir" => {
                let cwd = self.cwd.clone();
                self.mkdir(line, &cwd, &a[0])
            }
            "mkdirat" => {
                let base = self.base(&a[0]);
                self.mkdir(line, &base, &a[1])
            }
            "truncate" => {
                let cwd = self.cwd.clone();
                if let Class::File(_) | Class::Data = self.classify(&resolve(&cwd, &a[0])) {
                    panic!("trace line {line}: truncate(2) by path is not modelled: {text}");
                }
            }
            "sync" => panic!("trace line {line}: sync(2) is not modelled"),
            // Anything else that writes or syncs through a descriptor of the data directory
            // would change bytes the model does not see.
            _ => {
                let fds: Vec<i64> = a.iter().take(3).map(|t| fd_num(t)).collect();
                if fds.iter().any(|fd| self.fds.contains_key(fd)) {
                    panic!("trace line {line}: {name} on a file of the data directory is not modelled: {text}");
                }
            }
        }
    }

    /// The directory a `*at` call's descriptor argument names (strace -y prints its path).
    fn base(&self, tok: &str) -> PathBuf {
        if let Some(p) = annotation(tok) {
            return PathBuf::from(p);
        }
        match fd_num(tok) {
            AT_FDCWD => self.cwd.clone(),
            fd => match self.fds.get(&fd) {
                Some(Fd::DataDir) => self.data.clone(),
                Some(Fd::Parent) => self.parent.clone(),
                _ => panic!("no path for descriptor {tok}"),
            },
        }
    }

    fn classify(&self, p: &Path) -> Class {
        if p == self.data {
            Class::Data
        } else if p == self.parent {
            Class::Parent
        } else if p.parent() == Some(&self.data) {
            Class::File(p.file_name().unwrap().to_str().unwrap().to_string())
        } else {
            Class::Other
        }
    }

    fn open(&mut self, line: usize, base: &Path, path: &str, flags: &str, fd: i64) {
        let p = resolve(base, path);
        let entry = match self.classify(&p) {
            Class::Data => Some(Fd::DataDir),
            Class::Parent => Some(Fd::Parent),
            Class::Other => None,
            Class::File(_) if flags.contains("O_DIRECTORY") => {
                panic!("trace line {line}: a directory inside the data directory is not modelled")
            }
            Class::File(name) => {
                let ino = match self.names.get(&name) {
                    Some(&ino) => {
                        let writable = flags.contains("O_WRONLY") || flags.contains("O_RDWR");
                        if flags.contains("O_TRUNC") && writable {
                            self.contents[ino].clear();
                            self.push(line, Op::Truncate { ino, len: 0 });
                        }
                        ino
                    }
                    None => {
                        assert!(
                            flags.contains("O_CREAT"),
                            "trace line {line}: {name} opened, but the model does not have it"
                        );
                        let ino = self.contents.len();
                        self.contents.push(Vec::new());
                        self.names.insert(name.clone(), ino);
                        self.push(line, Op::Create { name, ino });
                        ino
                    }
                };
                Some(Fd::File {
                    ino,
                    off: 0,
                    append: flags.contains("O_APPEND"),
                })
            }
        };
        match entry {
            Some(e) => self.fds.insert(fd, e),
            None => self.fds.remove(&fd),
        };
    }

    fn write(&mut self, line: usize, fd: &str, data: &[u8], at: Option<u64>) {
        if let Some(rest) = data.strip_prefix(ACK_MAGIC) {
            let n = String::from_utf8_lossy(rest);
            let n: u64 = n.trim().parse().expect("ACK number");
            self.push(line, Op::Ack(n));
        }
        let fd = fd_num(fd);
        let Some(Fd::File { ino, off, append }) = self.fds.get(&fd).cloned() else {
            return;
        };
        let start = match (at, append) {
            (Some(o), _) => o,
            (None, true) => self.contents[ino].len() as u64,
            (None, false) => off,
        };
        let content = &mut self.contents[ino];
        let end = start as usize + data.len();
        if content.len() < end {
            content.resize(end, 0);
        }
        content[start as usize..end].copy_from_slice(data);
        if at.is_none() {
            if let Some(Fd::File { off, .. }) = self.fds.get_mut(&fd) {
                *off = end as u64;
            }
        }
        self.push(
            line,
            Op::Write {
                ino,
                off: start,
                data: Arc::from(data),
            },
        );
    }

    fn dup(&mut self, old: &str, new: i64) {
        match self.fds.get(&fd_num(old)).cloned() {
            Some(e) => self.fds.insert(new, e),
            None => self.fds.remove(&new),
        };
    }

    fn rename(&mut self, line: usize, from: (&Path, &str), to: (&Path, &str)) {
        let (f, t) = (resolve(from.0, from.1), resolve(to.0, to.1));
        match (self.classify(&f), self.classify(&t)) {
            (Class::File(from), Class::File(to)) => {
                let ino = self.names.remove(&from).expect("renamed file is known");
                self.names.insert(to.clone(), ino);
                self.push(line, Op::Rename { from, to });
            }
            (Class::Other, Class::Other) => {}
            _ => panic!(
                "trace line {line}: a rename into, out of or of the data directory is not modelled: {} -> {}",
                f.display(),
                t.display()
            ),
        }
    }

    fn unlink(&mut self, line: usize, base: &Path, path: &str, dir: bool) {
        match self.classify(&resolve(base, path)) {
            Class::File(name) if !dir => {
                self.names.remove(&name).expect("removed file is known");
                self.push(line, Op::Unlink { name });
            }
            Class::Other => {}
            _ => panic!("trace line {line}: removing a directory of the drill is not modelled"),
        }
    }

    fn mkdir(&mut self, line: usize, base: &Path, path: &str) {
        match self.classify(&resolve(base, path)) {
            Class::Data => self.push(line, Op::MkdirData),
            Class::Other => {}
            _ => panic!("trace line {line}: a directory inside the data directory is not modelled"),
        }
    }
}

/// `name` (a strace string) relative to `base`, without `.` components.
fn resolve(base: &Path, name: &str) -> PathBuf {
    let name = PathBuf::from(String::from_utf8(unquote(name)).expect("UTF-8 path"));
    let joined = if name.is_absolute() {
        name
    } else {
        base.join(name)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

fn parse_int(s: &str) -> Option<i64> {
    let s = s.split([' ', '<']).next()?;
    if let Some(hex) = s.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok();
    }
    s.parse().ok()
}

/// The number of a descriptor argument (`3`, `3</path>`, `AT_FDCWD</path>`).
fn fd_num(tok: &str) -> i64 {
    if tok.starts_with("AT_FDCWD") {
        return AT_FDCWD;
    }
    let digits: String = tok.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().unwrap_or(i64::MIN)
}

/// The path strace -y prints after a descriptor (`3<\x2f...>`).
fn annotation(tok: &str) -> Option<String> {
    let start = tok.find('<')?;
    let end = tok.rfind('>')?;
    let bytes = unescape(&tok[start + 1..end]);
    Some(String::from_utf8(bytes).expect("UTF-8 path"))
}

/// The bytes of a strace string argument (`"\x41\x42"`, every byte in hex under -xx).
fn unquote(tok: &str) -> Vec<u8> {
    let inner = tok
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or_else(|| panic!("not a complete string (truncated by -s?): {tok:.80}"));
    unescape(inner)
}

fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len() / 4);
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') {
            let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 4;
        } else if b[i] == b'\\' {
            let c = b[i + 1];
            out.push(match c {
                b'n' => b'\n',
                b't' => b'\t',
                b'\\' => b'\\',
                b'"' => b'"',
                _ => panic!("unexpected escape \\{} in the trace", c as char),
            });
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Every string inside an argument (the buffers of an iovec array).
fn quoted_strings(tok: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = tok;
    while let Some(start) = rest.find('"') {
        let after = &rest[start + 1..];
        let end = after.find('"').expect("closing quote");
        out.push(unescape(&after[..end]));
        rest = &after[end + 1..];
    }
    out
}

/// Splits a call's arguments at the commas that are not inside a string, a path annotation
/// or brackets.
fn split_args(args: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut depth, mut in_str, mut in_angle) = (0i32, false, false);
    let mut chars = args.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_str => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                continue;
            }
            '"' => in_str = !in_str,
            '<' if !in_str => in_angle = true,
            '>' if !in_str => in_angle = false,
            '[' | '{' | '(' if !in_str && !in_angle => depth += 1,
            ']' | '}' | ')' if !in_str && !in_angle => depth -= 1,
            ',' if !in_str && !in_angle && depth == 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

// ---- the model -------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Pending {
    Write { off: u64, data: Arc<[u8]> },
    Truncate(u64),
}

#[derive(Clone, Debug, Default)]
struct FileState {
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

#[derive(Clone, Debug)]
enum DirOp {
    Link(String, Ino),
    Rename(String, String),
    Unlink(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Linked {
    Absent,
    Pending,
    Durable,
}

/// What a file may hold after a power cut, each with how it came about.
type Choices = Vec<(Arc<Vec<u8>>, String)>;

/// How many images to build at one crash point.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Up to this many combinations at a crash point, all of them are checked.
    pub exhaustive: usize,
    /// Above it, this many random ones (and the two extremes: nothing pending reached the
    /// disk, everything did).
    pub sample: usize,
    /// Random cut points per unsynced write, besides the structural ones.
    pub random_cuts: usize,
    /// Cut every unsynced write at every byte instead.
    pub every_byte: bool,
}

/// One possible content of the disk after a power cut.
#[derive(Clone, Debug)]
pub struct Image {
    /// The data directory's files; None: the directory itself is not there.
    pub files: Option<BTreeMap<String, Arc<Vec<u8>>>>,
    /// How it came about, for messages.
    pub what: String,
}

impl Image {
    /// Identifies the image's content.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        match &self.files {
            None => h.update(b"no directory"),
            Some(files) => {
                for (name, bytes) in files {
                    h.update((name.len() as u64).to_le_bytes());
                    h.update(name.as_bytes());
                    h.update((bytes.len() as u64).to_le_bytes());
                    h.update(&bytes[..]);
                }
            }
        }
        h.finalize().into()
    }

    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files.as_ref()?.get(name).map(|b| &b[..])
    }
}

/// The data directory as the disk holds it at some point of a recording: for each file what
/// is durable and what is not yet, and for the directory the entries made durable by its last
/// fsync and the changes since.
#[derive(Clone, Debug)]
pub struct Model {
    files: Vec<FileState>,
    dir: BTreeMap<String, Ino>,
    dir_pending: Vec<DirOp>,
    linked: Linked,
}

/// Whether kmsfs reads a file's bytes (byte-level tears are built only for those): the
/// backing files and the key files a key change keeps or leaves pending. Temporary files of
/// atomic writes (`.KMS_*.tmp`) are only ever removed, unread.
pub fn read_by_kmsfs(name: &str) -> bool {
    name.starts_with("KMS_")
}

/// Whether a file's presence matters to kmsfs (its directory entry is combined with the
/// others): what it reads, and the temporary files it must remove.
pub fn seen_by_kmsfs(name: &str) -> bool {
    read_by_kmsfs(name) || name.starts_with(".KMS_")
}

impl Model {
    pub fn new(rec: &Recording) -> Model {
        let mut files = Vec::new();
        let mut dir = BTreeMap::new();
        for (name, bytes) in rec.initial.iter().flatten() {
            dir.insert(name.clone(), files.len());
            files.push(FileState {
                durable: bytes.clone(),
                pending: Vec::new(),
            });
        }
        Model {
            files,
            dir,
            dir_pending: Vec::new(),
            linked: if rec.initial.is_some() {
                Linked::Durable
            } else {
                Linked::Absent
            },
        }
    }

    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::MkdirData => self.linked = Linked::Pending,
            Op::SyncParent => {
                if self.linked == Linked::Pending {
                    self.linked = Linked::Durable
                }
            }
            Op::Create { name, ino } => {
                if self.files.len() <= *ino {
                    self.files.resize(*ino + 1, FileState::default());
                }
                self.dir_pending.push(DirOp::Link(name.clone(), *ino));
            }
            Op::Write { ino, off, data } => self.files[*ino].pending.push(Pending::Write {
                off: *off,
                data: data.clone(),
            }),
            Op::Truncate { ino, len } => self.files[*ino].pending.push(Pending::Truncate(*len)),
            Op::Sync { ino } => {
                let f = &mut self.files[*ino];
                f.durable = current(f);
                f.pending.clear();
            }
            Op::Rename { from, to } => self
                .dir_pending
                .push(DirOp::Rename(from.clone(), to.clone())),
            Op::Unlink { name } => self.dir_pending.push(DirOp::Unlink(name.clone())),
            Op::SyncDir => {
                let pending = std::mem::take(&mut self.dir_pending);
                apply_dir(&mut self.dir, &pending);
            }
            Op::Ack(_) => {}
        }
    }

    /// The durable length and the current length of the file `name` has now (as the process
    /// sees the directory).
    pub fn lengths(&self, name: &str) -> Option<(usize, usize)> {
        let mut entries = self.dir.clone();
        apply_dir(&mut entries, &self.dir_pending);
        let f = &self.files[*entries.get(name)?];
        Some((f.durable.len(), current(f).len()))
    }

    /// The image in which everything durable and nothing else reached the disk, with the
    /// process's current view of `name` replaced by `bytes` (for damage drills).
    pub fn durable_image_with(&self, name: &str, bytes: Vec<u8>) -> Image {
        let mut img = self.extreme(false);
        if let Some(files) = img.files.as_mut() {
            files.insert(name.to_string(), Arc::new(bytes));
        }
        img
    }

    /// The bytes the process sees in `name` now.
    pub fn current(&self, name: &str) -> Option<Vec<u8>> {
        let mut entries = self.dir.clone();
        apply_dir(&mut entries, &self.dir_pending);
        Some(current(&self.files[*entries.get(name)?]))
    }

    /// Nothing pending reached the disk (false), or everything did (true).
    pub fn extreme(&self, all: bool) -> Image {
        let reach = if all {
            self.linked != Linked::Absent
        } else {
            self.linked == Linked::Durable
        };
        if !reach {
            return Image {
                files: None,
                what: "the data directory's entry did not reach the disk".into(),
            };
        }
        let mut entries = self.dir.clone();
        if all {
            apply_dir(&mut entries, &self.dir_pending);
        }
        let files = entries
            .iter()
            .map(|(n, &ino)| {
                let f = &self.files[ino];
                let bytes = if all { current(f) } else { f.durable.clone() };
                (n.clone(), Arc::new(bytes))
            })
            .collect();
        Image {
            files: Some(files),
            what: if all {
                "everything reached the disk".into()
            } else {
                "only what was synced reached the disk".into()
            },
        }
    }

    /// Every image a power cut now could leave (all combinations up to `budget.exhaustive`,
    /// else a random sample and the two extremes), distinct, and whether a sample was taken.
    /// Files whose presence does not matter to kmsfs are not combined: each image takes one
    /// of their possible contents (and of the directory prefixes that differ only in them)
    /// at random.
    pub fn images(&self, budget: &Budget, rng: &mut StdRng) -> (Vec<Image>, bool) {
        let mut sampled = false;
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let mut keep = |img: Image, out: &mut Vec<Image>| {
            if seen.insert(img.digest()) {
                out.push(img);
            }
        };
        if self.linked != Linked::Durable {
            keep(
                Image {
                    files: None,
                    what: "the data directory's entry did not reach the disk".into(),
                },
                &mut out,
            );
            if self.linked == Linked::Absent {
                return (out, false);
            }
        }
        keep(self.extreme(false), &mut out);
        keep(self.extreme(true), &mut out);
        // The directory: every prefix of its unsynced changes, one per distinct set of the
        // entries whose presence matters to kmsfs.
        let mut prefixes: BTreeMap<Vec<(String, Ino)>, Vec<usize>> = BTreeMap::new();
        for j in 0..=self.dir_pending.len() {
            let mut entries = self.dir.clone();
            apply_dir(&mut entries, &self.dir_pending[..j]);
            let read: Vec<(String, Ino)> = entries
                .into_iter()
                .filter(|(n, _)| seen_by_kmsfs(n))
                .collect();
            prefixes.entry(read).or_default().push(j);
        }
        let mut choices_of: HashMap<Ino, Choices> = HashMap::new();
        for js in prefixes.values() {
            let j = js[rng.gen_range(0..js.len())];
            let mut entries = self.dir.clone();
            apply_dir(&mut entries, &self.dir_pending[..j]);
            let dir_what = format!(
                "{j} of {} directory changes since its last fsync",
                self.dir_pending.len()
            );
            let names: Vec<(String, Ino, bool)> = entries
                .iter()
                .map(|(n, &i)| (n.clone(), i, seen_by_kmsfs(n)))
                .collect();
            for (name, ino, _) in &names {
                if !choices_of.contains_key(ino) {
                    let c = self.choices(*ino, read_by_kmsfs(name), budget, rng);
                    choices_of.insert(*ino, c);
                }
            }
            let read: Vec<&(String, Ino, bool)> = names.iter().filter(|e| e.2).collect();
            let unread: Vec<&(String, Ino, bool)> = names.iter().filter(|e| !e.2).collect();
            let total = read
                .iter()
                .fold(1usize, |acc, e| acc.saturating_mul(choices_of[&e.1].len()));
            let build = |pick: &[usize], rng: &mut StdRng| {
                let mut files = BTreeMap::new();
                let mut what = vec![dir_what.clone()];
                let picks = read.iter().zip(pick.iter().copied());
                let random = unread
                    .iter()
                    .map(|e| (e, rng.gen_range(0..choices_of[&e.1].len())))
                    .collect::<Vec<_>>();
                for (e, k) in picks.chain(random) {
                    let (bytes, label) = &choices_of[&e.1][k];
                    files.insert(e.0.clone(), bytes.clone());
                    if !label.is_empty() {
                        what.push(format!("{}: {label}", e.0));
                    }
                }
                Image {
                    files: Some(files),
                    what: what.join("; "),
                }
            };
            if total <= budget.exhaustive {
                let mut pick = vec![0; read.len()];
                loop {
                    keep(build(&pick, rng), &mut out);
                    // The next combination (mixed radix).
                    let mut k = 0;
                    while k < pick.len() {
                        pick[k] += 1;
                        if pick[k] < choices_of[&read[k].1].len() {
                            break;
                        }
                        pick[k] = 0;
                        k += 1;
                    }
                    if k == pick.len() {
                        break;
                    }
                }
            } else {
                sampled = true;
                for _ in 0..budget.sample {
                    let pick: Vec<usize> = read
                        .iter()
                        .map(|e| rng.gen_range(0..choices_of[&e.1].len()))
                        .collect();
                    keep(build(&pick, rng), &mut out);
                }
            }
        }
        (out, sampled)
    }

    /// What the file `ino` may hold after a power cut: its durable bytes with a prefix of its
    /// unsynced operations applied, the next one, if a write, torn (cut at a byte, or the size
    /// extended with zeros from the write's start or a 512-byte boundary of the file on).
    fn choices(&self, ino: Ino, tear: bool, budget: &Budget, rng: &mut StdRng) -> Choices {
        let f = &self.files[ino];
        let n = f.pending.len();
        let mut out: Choices = Vec::new();
        let mut seen = BTreeSet::new();
        let mut keep = |bytes: Vec<u8>, label: String, out: &mut Vec<_>| {
            let d: [u8; 32] = Sha256::digest(&bytes).into();
            if seen.insert(d) {
                out.push((Arc::new(bytes), label));
            }
        };
        let mut state = f.durable.clone();
        for k in 0..=n {
            let label = if n == 0 {
                String::new()
            } else {
                format!("{k} of {n} unsynced operations")
            };
            keep(state.clone(), label, &mut out);
            if k == n {
                break;
            }
            if !tear {
                // Only the extremes for files kmsfs does not read.
                for p in &f.pending[k..] {
                    apply_pending(&mut state, p);
                }
                keep(state, format!("{n} of {n} unsynced operations"), &mut out);
                break;
            }
            if let Pending::Write { off, data } = &f.pending[k] {
                let (off, len) = (*off as usize, data.len());
                let at: BTreeSet<usize> = if budget.every_byte {
                    (1..len).collect()
                } else {
                    cuts(off, len, budget.random_cuts, rng)
                };
                for c in at {
                    let mut b = state.clone();
                    let end = off + c;
                    if b.len() < end {
                        b.resize(end, 0);
                    }
                    b[off..end].copy_from_slice(&data[..c]);
                    keep(
                        b,
                        format!(
                            "{k} of {n} unsynced operations, then write @{off} cut at {c} of {len}"
                        ),
                        &mut out,
                    );
                }
                if off + len > state.len() {
                    // The size reached the disk (to the write's end, or to a block boundary
                    // short of it), the data only up to an earlier block boundary.
                    let boundaries: Vec<usize> = ((off + 1).next_multiple_of(512)..off + len)
                        .step_by(512)
                        .collect();
                    for z in std::iter::once(off).chain(boundaries.iter().copied()) {
                        let sizes = boundaries.iter().copied().filter(|&e| e > z);
                        for size in sizes.chain([off + len]) {
                            let mut b = state.clone();
                            b.resize(size.max(state.len()), 0);
                            let written = z - off;
                            b[off..z].copy_from_slice(&data[..written]);
                            keep(
                                b,
                                format!("{k} of {n} unsynced operations, then write @{off} of {len}: size extended to {}, zeros from {written}", size - off),
                                &mut out,
                            );
                        }
                    }
                }
            }
            apply_pending(&mut state, &f.pending[k]);
        }
        out
    }
}

/// Where an unsynced write of `len` bytes at `off` may be cut (strictly inside it): inside
/// and just after each field of the frame prefix (length, complement, sequence number), the
/// middle, the last byte, every 512-byte boundary of the file, and `random` more.
fn cuts(off: usize, len: usize, random: usize, rng: &mut StdRng) -> BTreeSet<usize> {
    let mut c: BTreeSet<usize> = [1, 3, 4, 5, 8, 9, 12, 15, 16, 17].into_iter().collect();
    c.extend([len / 2, len.saturating_sub(1)]);
    let mut b = (off + 1).next_multiple_of(512);
    while b < off + len {
        c.insert(b - off);
        b += 512;
    }
    if len > 1 {
        for _ in 0..random {
            c.insert(rng.gen_range(1..len));
        }
    }
    c.retain(|&x| x > 0 && x < len);
    c
}

fn apply_pending(b: &mut Vec<u8>, p: &Pending) {
    match p {
        Pending::Write { off, data } => {
            let (off, end) = (*off as usize, *off as usize + data.len());
            if b.len() < end {
                b.resize(end, 0);
            }
            b[off..end].copy_from_slice(data);
        }
        Pending::Truncate(len) => b.resize(*len as usize, 0),
    }
}

fn current(f: &FileState) -> Vec<u8> {
    let mut b = f.durable.clone();
    for p in &f.pending {
        apply_pending(&mut b, p);
    }
    b
}

fn apply_dir(entries: &mut BTreeMap<String, Ino>, ops: &[DirOp]) {
    for op in ops {
        match op {
            DirOp::Link(name, ino) => {
                entries.insert(name.clone(), *ino);
            }
            DirOp::Rename(from, to) => {
                let ino = entries.remove(from).expect("renamed entry");
                entries.insert(to.clone(), ino);
            }
            DirOp::Unlink(name) => {
                entries.remove(name);
            }
        }
    }
}

/// Puts `img` into `root/data` (emptied first); returns that path. A missing directory
/// leaves `root` empty.
pub fn write_image(img: &Image, root: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let data = root.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data).unwrap();
    }
    if let Some(files) = &img.files {
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        for (name, bytes) in files {
            let p = data.join(name);
            std::fs::write(&p, &bytes[..]).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    data
}
