//! `kmsfs export` and `kmsfs import` through the real binary: round trips keep everything
//! byte for byte, the container gives nothing away and refuses any edit, and an import is
//! all or nothing, skips what is already there, never makes two records active, and keeps
//! off a keystore that is in use.

mod support;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Output;

use kmsfs::keystore::{KeyTag, State};
use kmsfs::service::Kms;
use kmsfs::store::{self, InitOptions};
use support::cli::{failed, kmsfs, ok, text, verify};
use support::keystore::{derived_record, group, record};
use support::scratch::Scratch;

const EXPORT_PASS: &str = "export passphrase, kept apart";
const RECORD_PASS: &str = "correct horse battery staple";

/// A scratch area holding the export passphrase in `pass` and another one in `wrong`; data
/// directories and containers are paths below it.
fn scratch() -> Scratch {
    let s = Scratch::new();
    s.file("pass", &format!("{EXPORT_PASS}\n"));
    s.file("wrong", "not the passphrase\n");
    s
}

/// Everything an export must carry for one record, as the keystore reports it.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Seen {
    group: String,
    name: String,
    state: State,
    description: String,
    salt: Option<Vec<u8>>,
    key: Vec<u8>,
}

fn seen(dir: &Path) -> BTreeMap<KeyTag, Seen> {
    let kms = Kms::open(dir).unwrap();
    let ks = kms.read();
    let out = ks
        .records()
        .map(|r| {
            let seen = Seen {
                group: ks.group(&r.group).unwrap().name.to_string(),
                name: r.name.to_string(),
                state: r.state,
                description: r.description.clone(),
                salt: r.derivation.as_ref().map(|d| d.salt.clone()),
                key: Vec::new(),
            };
            (r.tag.clone(), seen)
        })
        .collect::<BTreeMap<_, _>>();
    drop(ks);
    out.into_iter()
        .map(|(t, mut s)| {
            s.key = kms.unwrap_key(&t).unwrap().expose().to_vec();
            (t, s)
        })
        .collect()
}

/// Two groups (AES_256 and AES_128), records in every state, descriptions everywhere, and
/// (if `derived`) one passphrase-derived record.
fn populated(dir: &Path, derived: bool) {
    store::init(dir, InitOptions::default()).unwrap();
    let kms = Kms::open(dir).unwrap();
    let pool = group(&kms, "pool");
    kms.describe_group(&pool, "pool: nightly backups").unwrap();
    let legacy = group(&kms, "legacy");
    kms.set_group_cipher(&legacy, "AES_128".parse().unwrap())
        .unwrap();
    kms.describe_group(&legacy, "legacy: tape archive").unwrap();
    for (i, state) in ["prelive", "inactive", "deprecated", "terminated", "active"]
        .iter()
        .enumerate()
    {
        record(
            &kms,
            "pool",
            &format!("p{i}"),
            state,
            &format!("pool record {i} notes"),
        );
    }
    record(&kms, "legacy", "old", "inactive", "legacy record notes");
    if derived {
        derived_record(
            &kms,
            "pool",
            "derived",
            RECORD_PASS,
            None,
            "derived record notes",
        );
    }
}

fn export(s: &Scratch, src: &Path, out: &str, groups: &[&str]) -> Output {
    let out = s.path(out);
    let pass = s.path("pass");
    let mut args = vec![
        OsStr::new("export"),
        OsStr::new("--data-dir"),
        src.as_os_str(),
        OsStr::new("--out"),
        out.as_os_str(),
        OsStr::new("--passphrase-file"),
        pass.as_os_str(),
    ];
    for g in groups {
        args.extend([OsStr::new("--group"), OsStr::new(g)]);
    }
    kmsfs(args)
}

fn import(s: &Scratch, dst: &Path, file: &str, pass: &str, flags: &[&str]) -> Output {
    let pass = s.path(pass);
    let file = s.path(file);
    let mut args = vec![
        OsStr::new("import"),
        OsStr::new("--data-dir"),
        dst.as_os_str(),
        OsStr::new("--passphrase-file"),
        pass.as_os_str(),
    ];
    args.extend(flags.iter().map(OsStr::new));
    args.push(file.as_os_str());
    kmsfs(args)
}

/// The failure's one line of stderr.
#[track_caller]
fn refused(out: Output) -> String {
    let err = failed("kmsfs", out);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    err
}

fn digest(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// The backup set of a data directory, as digests. (A refused import may rewrite the lock
/// file: it holds the pid of the last process that opened the keystore.)
fn files(dir: &Path) -> BTreeMap<String, String> {
    store::BACKUP_SET
        .iter()
        .map(|f| (f.to_string(), digest(&dir.join(f))))
        .collect()
}

/// Every file of a data directory, the lock file included, as digests.
fn everything(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                digest(&e.path()),
            )
        })
        .collect()
}

/// `NAME_YYYYMMDDTHHMMSSZ`.
fn is_renamed(name: &str, source: &str) -> bool {
    let Some(stamp) = name.strip_prefix(&format!("{source}_")) else {
        return false;
    };
    let b = stamp.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

#[test]
fn a_round_trip_keeps_everything_byte_for_byte() {
    let s = scratch();
    let src = s.path("src");
    populated(&src, true);
    let before = seen(&src);
    let out = ok("export", export(&s, &src, "all.kmsx", &[]));
    assert!(out.contains("exported 2 group(s), 7 record(s)"), "{out}");

    let renamed = s.path("renamed");
    store::init(&renamed, InitOptions::default()).unwrap();
    let report = ok("import", import(&s, &renamed, "all.kmsx", "pass", &[]));
    assert!(
        report.contains("imported 7 record(s), skipped 0; created 2 group(s)"),
        "{report}"
    );
    let after = seen(&renamed);
    assert_eq!(after.len(), before.len());
    for (tag, was) in &before {
        let now = after
            .get(tag)
            .unwrap_or_else(|| panic!("tag {tag} is missing"));
        assert!(
            is_renamed(&now.group, &was.group),
            "{} for {}",
            now.group,
            was.group
        );
        let now = Seen {
            group: was.group.clone(),
            ..now.clone()
        };
        assert_eq!(&now, was);
    }
    assert!(before.values().any(|r| r.salt.is_some()));

    let exact = s.path("exact");
    store::init(&exact, InitOptions::default()).unwrap();
    ok(
        "import",
        import(&s, &exact, "all.kmsx", "pass", &["--preserve-names"]),
    );
    assert_eq!(seen(&exact), before);
    let kms = Kms::open(&exact).unwrap();
    let ks = kms.read();
    let pool = ks.group_by_name("pool").unwrap();
    assert_eq!(pool.description, "pool: nightly backups");
    assert_eq!(
        ks.group_by_name("legacy").unwrap().cipher.as_str(),
        "AES_128"
    );
    drop(ks);
    drop(kms);
    ok("verify", verify(&exact));
}

#[test]
fn group_selection_and_unknown_groups() {
    let s = scratch();
    let src = s.path("src");
    populated(&src, false);
    let err = refused(export(&s, &src, "x.kmsx", &["legacy", "nope"]));
    assert!(err.contains("no group named \"nope\""), "{err}");
    assert!(!s.path("x.kmsx").exists(), "a refused export wrote a file");

    let out = ok("export", export(&s, &src, "legacy.kmsx", &["legacy"]));
    assert!(out.contains("exported 1 group(s), 1 record(s)"), "{out}");
    let dst = s.path("dst");
    store::init(&dst, InitOptions::default()).unwrap();
    ok(
        "import",
        import(&s, &dst, "legacy.kmsx", "pass", &["--preserve-names"]),
    );
    let got = seen(&dst);
    assert_eq!(got.len(), 1);
    assert_eq!(got.values().next().unwrap().group, "legacy");
}

#[test]
fn a_wrong_passphrase_or_an_edited_byte_is_refused_clearly() {
    let s = scratch();
    let src = s.path("src");
    populated(&src, false);
    ok("export", export(&s, &src, "c.kmsx", &[]));
    let dst = s.path("dst");
    store::init(&dst, InitOptions::default()).unwrap();
    let untouched = files(&dst);
    let container = s.path("c.kmsx");

    let err = refused(import(&s, &dst, "c.kmsx", "wrong", &[]));
    let expected = format!(
        "cannot open {}: wrong passphrase, or the file was altered",
        container.display()
    );
    assert!(err.contains(&expected), "{err}");

    let original = std::fs::read(&container).unwrap();
    let n = original.len();
    for pos in [0, 14, n / 2, n - 1] {
        let mut bytes = original.clone();
        bytes[pos] ^= 0x04;
        std::fs::write(&container, &bytes).unwrap();
        let err = refused(import(&s, &dst, "c.kmsx", "pass", &[]));
        assert!(
            err.contains(&format!("cannot open {}", container.display()))
                && err.contains("altered"),
            "byte {pos} of {n}: {err}"
        );
    }
    assert_eq!(
        files(&dst),
        untouched,
        "a refused import changed the keystore"
    );
}

#[test]
fn importing_twice_skips_everything_the_second_time() {
    let s = scratch();
    let src = s.path("src");
    populated(&src, false);
    ok("export", export(&s, &src, "c.kmsx", &[]));
    let dst = s.path("dst");
    store::init(&dst, InitOptions::default()).unwrap();
    ok("import", import(&s, &dst, "c.kmsx", "pass", &[]));
    let first = seen(&dst);
    let report = ok("import", import(&s, &dst, "c.kmsx", "pass", &[]));
    assert!(
        report.contains("imported 0 record(s), skipped 6; created 0 group(s)"),
        "{report}"
    );
    assert_eq!(
        report.matches("its tag is in use here").count(),
        6,
        "{report}"
    );
    assert!(
        report.contains("not created: nothing in it is new here"),
        "{report}"
    );
    assert_eq!(seen(&dst), first);
    // Importing into the keystore it came from is the same: nothing is new.
    let report = ok(
        "import",
        import(&s, &src, "c.kmsx", "pass", &["--preserve-names"]),
    );
    assert!(
        report.contains("imported 0 record(s), skipped 6"),
        "{report}"
    );
}

#[test]
fn merging_skips_known_keys_and_taken_names_and_never_makes_two_active() {
    let s = scratch();
    let src = s.path("src");
    populated(&src, true);
    let derived_salt = seen(&src).into_values().find_map(|r| r.salt).unwrap();
    ok("export", export(&s, &src, "c.kmsx", &[]));

    let dst = s.path("dst");
    store::init(&dst, InitOptions::default()).unwrap();
    let kms = Kms::open(&dst).unwrap();
    group(&kms, "pool");
    record(&kms, "pool", "mine", "active", "");
    record(&kms, "pool", "p0", "prelive", "");
    // The same passphrase and salt give the same key, under another tag.
    derived_record(
        &kms,
        "pool",
        "same-key",
        RECORD_PASS,
        Some(derived_salt.clone()),
        "",
    );
    drop(kms);

    let report = ok(
        "import",
        import(&s, &dst, "c.kmsx", "pass", &["--preserve-names"]),
    );
    assert!(
        report.contains("group \"pool\" -> existing group \"pool\""),
        "{report}"
    );
    assert!(
        report.contains("\"p4\"")
            && report.contains("inactive, not active: \"mine\" stays the group's active record"),
        "{report}"
    );
    assert!(
        report.contains("group \"pool\" already has a record of that name"),
        "{report}"
    );
    assert!(
        report.contains("its key is already here as \"pool/same-key\""),
        "{report}"
    );
    assert!(
        report.contains("imported 5 record(s) (1 made inactive), skipped 2"),
        "{report}"
    );
    let got: BTreeMap<String, State> = seen(&dst)
        .into_values()
        .filter(|r| r.group == "pool")
        .map(|r| (r.name, r.state))
        .collect();
    assert_eq!(got["mine"], State::Active);
    assert_eq!(got["p4"], State::Inactive);
    assert_eq!(got["p1"], State::Inactive);
    assert_eq!(got.values().filter(|s| **s == State::Active).count(), 1);
}

#[test]
fn a_cipher_mismatch_refuses_the_whole_import() {
    let s = scratch();
    let src = s.path("src");
    populated(&src, false);
    ok("export", export(&s, &src, "c.kmsx", &[]));
    let dst = s.path("dst");
    store::init(&dst, InitOptions::default()).unwrap();
    group(&Kms::open(&dst).unwrap(), "legacy");
    let untouched = files(&dst);
    let err = refused(import(&s, &dst, "c.kmsx", "pass", &["--preserve-names"]));
    assert!(
        err.contains("group \"legacy\" exists here with cipher AES_256"),
        "{err}"
    );
    assert_eq!(
        files(&dst),
        untouched,
        "pool was imported although legacy was refused"
    );
}

#[test]
fn a_preview_changes_nothing_and_says_what_would_happen() {
    let s = scratch();
    let src = s.path("src");
    populated(&src, false);
    ok("export", export(&s, &src, "c.kmsx", &[]));
    let dst = s.path("dst");
    store::init(&dst, InitOptions::default()).unwrap();
    let kms = Kms::open(&dst).unwrap();
    group(&kms, "pool");
    record(&kms, "pool", "mine", "active", "");
    drop(kms);
    let before = everything(&dst);
    let report = ok(
        "import",
        import(
            &s,
            &dst,
            "c.kmsx",
            "pass",
            &["--preview", "--preserve-names"],
        ),
    );
    assert_eq!(everything(&dst), before, "the preview changed a file");
    assert!(
        report.contains("group \"pool\" -> existing group \"pool\""),
        "{report}"
    );
    assert!(
        report.contains("group \"legacy\" -> new group \"legacy\""),
        "{report}"
    );
    assert!(
        report.contains("\"mine\" stays the group's active record"),
        "{report}"
    );
    assert!(
        report.contains("preview, nothing was changed: would import 6 record(s) (1 made inactive) and skip 0; would create 1 group(s) and merge into 1"),
        "{report}"
    );
    let report = ok("import", import(&s, &dst, "c.kmsx", "pass", &["--preview"]));
    let line = report
        .lines()
        .find(|l| l.starts_with("group \"pool\""))
        .unwrap();
    let name = line.split('"').nth(3).unwrap();
    assert!(is_renamed(name, "pool"), "{line}");
    assert_eq!(everything(&dst), before);
}

#[test]
fn an_import_is_refused_while_the_keystore_is_in_use() {
    let s = scratch();
    let src = s.path("src");
    populated(&src, false);
    // Export works beside a running daemon (it only reads).
    let daemon = Kms::open(&src).unwrap();
    ok("export", export(&s, &src, "c.kmsx", &[]));
    let dst = s.path("dst");
    store::init(&dst, InitOptions::default()).unwrap();
    let holder = Kms::open(&dst).unwrap();
    let before = files(&dst);
    let err = refused(import(&s, &dst, "c.kmsx", "pass", &[]));
    let expected = format!(
        "{} is in use by a running kmsfs (pid {}): unmount it first",
        dst.display(),
        std::process::id()
    );
    assert!(err.contains(&expected), "{err}");
    // A preview only reads, so it may run beside the daemon.
    let quiet = everything(&dst);
    let report = ok("import", import(&s, &dst, "c.kmsx", "pass", &["--preview"]));
    assert!(report.contains("would import 6 record(s)"), "{report}");
    assert_eq!(everything(&dst), quiet);
    assert_eq!(files(&dst), before);
    drop(holder);
    drop(daemon);
    ok("import", import(&s, &dst, "c.kmsx", "pass", &[]));
    assert_eq!(seen(&dst).len(), 6);
}

#[test]
fn the_container_gives_nothing_away_and_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let s = scratch();
    let src = s.path("src");
    populated(&src, true);
    ok("export", export(&s, &src, "c.kmsx", &[]));
    let container = s.path("c.kmsx");
    let mode = std::fs::metadata(&container).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let bytes = std::fs::read(&container).unwrap();
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(bytes.starts_with(b"KMSFS-EXPORT\n"));
    let mut secrets: Vec<Vec<u8>> = vec![
        EXPORT_PASS.into(),
        RECORD_PASS.into(),
        b"nightly backups".to_vec(),
        b"record notes".to_vec(),
        b"legacy".to_vec(),
        b"derived".to_vec(),
    ];
    for r in seen(&src).values() {
        secrets.push(r.key.clone());
        secrets.push(hex::encode(&r.key).into_bytes());
    }
    for needle in &secrets {
        assert!(
            !contains(needle),
            "the container holds {:?} in plaintext",
            text(needle)
        );
    }
    // Never overwritten.
    let err = refused(export(&s, &src, "c.kmsx", &[]));
    assert!(
        err.contains("already exists; refusing to overwrite it"),
        "{err}"
    );
    assert_eq!(std::fs::read(&container).unwrap(), bytes);
}
