//! The reference in `docs/` against the code: the table of `docs/tree.md` must list exactly the
//! entries of a real mount, with their types and modes, and the table of `docs/lifecycle.md`
//! must be the lifecycle that `State` enforces. A row edited, added or dropped in either
//! document fails here.

mod support;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kmsfs::keystore::State;
use support::mount::Mounted;

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")
}

fn doc(name: &str) -> String {
    let path = docs_dir().join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// One markdown table: the header's cells, then each body row's cells (trimmed).
struct Table {
    line: usize,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// Splits `| a | b |` into its cells. Panics on a row that does not end with `|`.
fn cells(doc: &str, number: usize, line: &str) -> Vec<String> {
    let line = line.trim();
    let inner = line
        .strip_prefix('|')
        .and_then(|l| l.strip_suffix('|'))
        .unwrap_or_else(|| panic!("{doc}:{number}: a table row must start and end with '|'"));
    inner.split('|').map(|c| c.trim().to_string()).collect()
}

fn is_separator(cell: &str) -> bool {
    let dashes = cell.trim_start_matches(':').trim_end_matches(':');
    dashes.len() >= 3 && dashes.bytes().all(|b| b == b'-')
}

/// Every table of a markdown document (outside fenced code blocks), checked for shape: a
/// header, a separator row, and body rows with as many cells as the header.
fn tables(doc: &str, text: &str) -> Vec<Table> {
    let mut out: Vec<Table> = Vec::new();
    let mut in_fence = false;
    let mut current: Option<Table> = None;
    let mut separator_seen = false;
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        }
        let is_row = !in_fence && line.trim_start().starts_with('|');
        if !is_row {
            if let Some(t) = current.take() {
                assert!(
                    separator_seen,
                    "{doc}:{}: table without a separator",
                    t.line
                );
                out.push(t);
            }
            continue;
        }
        let row = cells(doc, number, line);
        match current.as_mut() {
            None => {
                current = Some(Table {
                    line: number,
                    header: row,
                    rows: Vec::new(),
                });
                separator_seen = false;
            }
            Some(t) => {
                assert_eq!(
                    row.len(),
                    t.header.len(),
                    "{doc}:{number}: {} cells, the header has {}",
                    row.len(),
                    t.header.len()
                );
                if !separator_seen {
                    assert!(
                        row.iter().all(|c| is_separator(c)),
                        "{doc}:{number}: the second row of a table must be its separator"
                    );
                    separator_seen = true;
                } else {
                    t.rows.push(row);
                }
            }
        }
    }
    if let Some(t) = current.take() {
        assert!(
            separator_seen,
            "{doc}:{}: table without a separator",
            t.line
        );
        out.push(t);
    }
    out
}

/// The one table of a document, with exactly this header.
fn the_table(doc_name: &str, header: &[String]) -> Table {
    let mut all = tables(doc_name, &doc(doc_name));
    assert_eq!(
        all.len(),
        1,
        "{doc_name} must hold exactly one table, found {}",
        all.len()
    );
    let t = all.remove(0);
    assert_eq!(
        t.header, header,
        "{doc_name}:{}: the table's header",
        t.line
    );
    assert!(!t.rows.is_empty(), "{doc_name}: the table is empty");
    t
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
}

/// What the tree's table says about one path, or what the mount shows.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Entry {
    kind: Kind,
    mode: u32,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {:04o}", self.kind, self.mode)
    }
}

/// The table of docs/tree.md: documented path (`/GROUP/RECORD/key`) to type and mode.
fn documented_tree() -> BTreeMap<String, Entry> {
    let header: Vec<String> = ["path", "type", "mode", "reads", "writes"]
        .map(String::from)
        .to_vec();
    let table = the_table("tree.md", &header);
    let mut out = BTreeMap::new();
    for row in &table.rows {
        let raw = row[0].as_str();
        let path = raw
            .strip_prefix('`')
            .and_then(|p| p.strip_suffix('`'))
            .unwrap_or(raw);
        assert!(
            path.starts_with('/'),
            "tree.md: path {raw:?} must start with '/'"
        );
        let kind = match row[1].as_str() {
            "dir" => Kind::Dir,
            "file" => Kind::File,
            "symlink" => Kind::Symlink,
            other => panic!("tree.md: {path}: type {other:?} is not dir, file or symlink"),
        };
        assert_eq!(
            kind == Kind::Dir,
            path.ends_with('/'),
            "tree.md: {path}: directories, and only they, end with '/'"
        );
        let mode = row[2].as_str();
        assert!(
            mode.len() == 4
                && mode.starts_with('0')
                && mode.bytes().all(|b| (b'0'..=b'7').contains(&b)),
            "tree.md: {path}: mode {mode:?} is not four octal digits such as 0644"
        );
        let mode = u32::from_str_radix(mode, 8).expect("octal digits");
        for (i, column) in ["reads", "writes"].iter().enumerate() {
            assert!(
                !row[3 + i].is_empty(),
                "tree.md: {path}: the {column} cell is empty"
            );
        }
        let previous = out.insert(path.to_string(), Entry { kind, mode });
        assert!(previous.is_none(), "tree.md: {path} is listed twice");
    }
    out
}

/// The real names that the tree's placeholders stand for.
struct Names {
    group: String,
    record: String,
    tag: String,
}

/// The placeholder for `name` in the documented directory `parent`, or the name itself.
fn placeholder<'a>(names: &'a Names, parent: &str, name: &'a str) -> &'a str {
    match parent {
        "/" if name == names.group => "GROUP",
        "/GROUP/" if name == names.record => "RECORD",
        "/.by-tag/" if name == names.tag => "TAG",
        _ => name,
    }
}

fn entry_of(path: &Path) -> Entry {
    let meta = fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("cannot lstat {}: {e}", path.display()));
    let t = meta.file_type();
    let kind = if t.is_symlink() {
        Kind::Symlink
    } else if t.is_dir() {
        Kind::Dir
    } else if t.is_file() {
        Kind::File
    } else {
        panic!(
            "{} is neither a file, a directory nor a symlink",
            path.display()
        )
    };
    Entry {
        kind,
        mode: meta.permissions().mode() & 0o7777,
    }
}

/// Walks the real directory `real`, documented as `doc_dir`, without following symlinks.
fn walk(names: &Names, real: &Path, doc_dir: &str, out: &mut BTreeMap<String, Entry>) {
    let mut children: Vec<_> = fs::read_dir(real)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", real.display()))
        .map(|e| e.expect("a directory entry"))
        .collect();
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let name = child
            .file_name()
            .into_string()
            .expect("names in the mount are UTF-8");
        let entry = entry_of(&child.path());
        let shown = placeholder(names, doc_dir, &name);
        let doc_path = match entry.kind {
            Kind::Dir => format!("{doc_dir}{shown}/"),
            _ => format!("{doc_dir}{shown}"),
        };
        let previous = out.insert(doc_path.clone(), entry);
        assert!(
            previous.is_none(),
            "two entries of the mount map to {doc_path}"
        );
        if entry.kind == Kind::Dir {
            walk(names, &child.path(), &doc_path, out);
        }
    }
}

#[test]
fn tree_table_matches_a_real_mount() {
    let documented = documented_tree();

    let m = Mounted::new();
    // One group with one active record, so that `.active` and a `.by-tag` link exist.
    m.bash_ok("mkdir g g/r && echo active > g/r/state");
    let tag = m.json("g/r/record.json")["tag"]
        .as_str()
        .expect("record.json has a tag")
        .to_string();
    let names = Names {
        group: "g".into(),
        record: "r".into(),
        tag,
    };
    let mut real = BTreeMap::new();
    real.insert("/".to_string(), entry_of(&m.mnt()));
    walk(&names, &m.mnt(), "/", &mut real);

    let mut problems = Vec::new();
    for (path, got) in &real {
        match documented.get(path) {
            None => problems.push(format!(
                "{path} ({got:?}) is in the mount but not in tree.md"
            )),
            Some(want) if want != got => problems.push(format!(
                "{path}: tree.md says {want:?}, the mount shows {got:?}"
            )),
            Some(_) => {}
        }
    }
    for (path, want) in &documented {
        if !real.contains_key(path) {
            problems.push(format!(
                "{path} ({want:?}) is in tree.md but not in the mount"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/tree.md disagrees with the mount:\n{}",
        problems.join("\n")
    );
}

#[test]
fn lifecycle_table_matches_the_code() {
    let mut header = vec!["from \\ to".to_string()];
    header.extend(State::ALL.iter().map(|s| s.as_str().to_string()));
    header.push("delete".to_string());
    let table = the_table("lifecycle.md", &header);
    assert_eq!(
        table.rows.len(),
        State::ALL.len(),
        "lifecycle.md: one row per state"
    );
    let word = |allowed: bool| if allowed { "yes" } else { "no" };
    for (row, from) in table.rows.iter().zip(State::ALL) {
        assert_eq!(
            row[0],
            from.as_str(),
            "lifecycle.md: rows in the order of State::ALL"
        );
        for (cell, to) in row[1..].iter().zip(State::ALL) {
            // An en dash: staying in a state is not a move.
            let want = if from == to {
                "\u{2013}"
            } else {
                word(from.may_move_to(to))
            };
            assert_eq!(cell, want, "lifecycle.md: {from} -> {to}");
        }
        let delete = &row[State::ALL.len() + 1];
        assert_eq!(
            delete,
            word(from.may_be_deleted()),
            "lifecycle.md: deleting a {from} record"
        );
    }
}

#[test]
fn docs_stand_alone() {
    let mut pages = Vec::new();
    for entry in fs::read_dir(docs_dir()).expect("docs/ exists") {
        let path = entry.expect("a directory entry").path();
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        for outside in ["shared/", "interface.md"] {
            assert!(
                !text.contains(outside),
                "{} mentions {outside:?}, which a clone of the repository does not have",
                path.display()
            );
        }
        pages.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    // The index lists every page, and every page it links to exists.
    let index = doc("README.md");
    for page in &pages {
        if page != "README.md" {
            assert!(
                index.contains(&format!("]({page})")),
                "docs/README.md does not list {page}"
            );
        }
    }
    for link in index.split("](").skip(1) {
        let target = link.split(')').next().unwrap_or_default();
        // A page of the repository outside docs/ (SECURITY.md) must exist too.
        let exists = pages.iter().any(|p| p == target) || docs_dir().join(target).is_file();
        assert!(
            exists,
            "docs/README.md links to {target}, which the repository does not have"
        );
    }
}

/// The README's first command must not put the keystore, and so both key files, inside the
/// git checkout, where one `git add -A` would commit every key.
#[test]
fn the_readme_mount_command_keeps_the_keys_out_of_the_checkout() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mount = readme
        .lines()
        .find(|l| l.contains(" mount ") && l.contains("--data-dir"))
        .expect("the README shows the mount command");
    let dir = mount
        .split_whitespace()
        .skip_while(|w| *w != "--data-dir")
        .nth(1)
        .expect("a data directory after --data-dir");
    assert!(
        dir.starts_with('/') && !Path::new(dir).starts_with(root),
        "the README's data directory {dir} is inside the checkout: {mount}"
    );
    let ignore = std::fs::read_to_string(root.join(".gitignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "kms-data/"), "{ignore}");
}
