//! Line building, the MAC and its key, the chain, reopening a log, the torn tail.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::key::genesis;
use super::line::{self, test_split_mac, test_with_mac};
use super::*;

fn key() -> AuditKey {
    AuditKey::derive(&[7; 32], "hmk test")
}

fn caller() -> Caller {
    Caller {
        uid: 1000,
        gid: 100,
        pid: 4242,
        process: Some("cat".into()),
        exe: Some("/usr/bin/cat".into()),
        client: None,
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().into()
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap()
}

fn sha_hex(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

/// A log in a fresh directory, with `n` events appended.
fn log_with(dir: &Path, n: usize) -> (PathBuf, AuditLog) {
    let path = dir.join(AUDIT_FILE);
    let log = AuditLog::open(&path, key()).unwrap();
    append_n(&log, n);
    (path, log)
}

fn append_n(log: &AuditLog, n: usize) {
    let c = caller();
    for i in 0..n {
        let ev = match i % 3 {
            0 => Event::record(&c, "open key", "pool", "k1", Some("9f0c"), Verdict::Allowed),
            1 => Event::group(&c, "mkdir", "pool", Verdict::Refused("pool exists")),
            _ => Event::keystore(&c, "quiesce", Verdict::Failed("cannot sync")),
        };
        log.append(&ev).unwrap();
    }
}

#[test]
fn a_line_is_built_deterministically_with_its_mac_last() {
    let k = key();
    let c = caller();
    let ev = Event::record(&c, "open key", "pool", "k1", Some("9f0c"), Verdict::Allowed);
    let prev = genesis("hmk test");
    let built = line::build(&k, 1, "2026-01-02T03:04:05.123456Z", &prev, &ev);
    let body = format!(
        concat!(
            r#"{{"seq":1,"time":"2026-01-02T03:04:05.123456Z","uid":1000,"gid":100,"pid":4242,"#,
            r#""process":"cat","exe":"/usr/bin/cat","operation":"open key","group":"pool","#,
            r#""record":"k1","key_tag":"9f0c","new_name":null,"result":"allowed","reason":null,"#,
            r#""prev":"{}"}}"#
        ),
        hex::encode(prev)
    );
    // The MAC key is HKDF-SHA256 (RFC 5869, no salt) of the HMK bytes, info = label NUL context.
    let prk = hmac(&[0; 32], &[7; 32]);
    let okm = hmac(&prk, b"kmsfs audit log v1\0hmk test\x01");
    let mac = hmac(&okm, body.as_bytes());
    let expected = format!(
        "{},\"mac\":\"{}\"}}",
        &body[..body.len() - 1],
        hex::encode(mac)
    );
    assert_eq!(String::from_utf8(built.clone()).unwrap(), expected);
    // As docs/audit.md says: the last 74 bytes are the mac field and the closing brace.
    assert_eq!(
        &built[..built.len() - 74],
        &body.as_bytes()[..body.len() - 1]
    );
    let (b, m) = test_split_mac(&built).unwrap();
    assert_eq!((b, m), (body.into_bytes(), mac));
    // The genesis is SHA-256 of a fixed string and the context.
    let mut g = b"kmsfs audit log v1 genesis\0".to_vec();
    g.extend_from_slice(b"hmk test");
    assert_eq!(prev, <[u8; 32]>::from(Sha256::digest(&g)));
    assert_ne!(genesis("hmk test"), genesis("hmk other"));
}

#[test]
fn renames_and_refusals_fill_their_fields() {
    let k = key();
    let c = Caller {
        process: None,
        exe: None,
        ..caller()
    };
    let ev = Event::rename_record(&c, "pool", "a", "b", None, Verdict::Refused("EPERM: no"));
    let v = json(std::str::from_utf8(&line::build(&k, 9, "t", &[0; 32], &ev)).unwrap());
    assert_eq!(v["operation"], "rename");
    assert_eq!(v["group"], "pool");
    assert_eq!(v["record"], "a");
    assert_eq!(v["new_name"], "b");
    assert_eq!(v["result"], "refused");
    assert_eq!(v["reason"], "EPERM: no");
    assert!(v["process"].is_null() && v["exe"].is_null() && v["key_tag"].is_null());
    let ev = Event::rename_group(&c, "old", "new", Verdict::Failed("EIO"));
    let v = json(std::str::from_utf8(&line::build(&k, 9, "t", &[0; 32], &ev)).unwrap());
    assert_eq!(
        (&v["group"], &v["new_name"], &v["result"]),
        (&"old".into(), &"new".into(), &"failed".into())
    );
    assert!(v["record"].is_null());
    // Exactly these fields, in this order, and nothing else.
    let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    let mut want = [
        "seq",
        "time",
        "uid",
        "gid",
        "pid",
        "process",
        "exe",
        "operation",
        "group",
        "record",
        "key_tag",
        "new_name",
        "result",
        "reason",
        "prev",
        "mac",
    ]
    .map(String::from)
    .to_vec();
    want.sort();
    let mut got = keys;
    got.sort();
    assert_eq!(got, want);
}

#[test]
fn long_fields_are_cut_and_a_line_stays_one_line() {
    let k = key();
    let c = Caller {
        exe: Some("/x".repeat(5000)),
        process: Some("a\nb".into()),
        ..caller()
    };
    let long = "é".repeat(3000);
    let control = "\u{1}".repeat(2000);
    let ev = Event::record(
        &c,
        "write state",
        &control,
        &long,
        Some(&long),
        Verdict::Refused(&long),
    );
    let built = line::build(&k, 1, "t", &[0; 32], &ev);
    assert!(built.len() <= MAX_LINE, "{}", built.len());
    assert!(!built.contains(&b'\n'));
    let v = json(std::str::from_utf8(&built).unwrap());
    assert!(v["exe"].as_str().unwrap().len() <= 4096);
    assert!(v["exe"].as_str().unwrap().ends_with("..."));
    assert!(v["record"].as_str().unwrap().len() <= 1024);
    assert!(v["reason"].as_str().unwrap().len() <= 512);
    assert_eq!(v["process"], "a\nb");
}

#[test]
fn every_byte_of_a_line_is_covered_by_its_mac() {
    let k = key();
    let c = caller();
    let ev = Event::record(&c, "open key", "pool", "k1", Some("tag"), Verdict::Allowed);
    let good = line::build(&k, 5, &line::now(), &[3; 32], &ev);
    assert!(line::parse(&good, Some(&k)).is_ok());
    for i in 0..good.len() {
        for mask in [0x01u8, 0x20, 0x80] {
            let mut bad = good.clone();
            bad[i] ^= mask;
            assert!(line::parse(&bad, Some(&k)).is_err(), "byte {i} ^ {mask:#x}");
        }
    }
    // Another keystore's key (or context) does not verify it.
    assert!(line::parse(&good, Some(&AuditKey::derive(&[8; 32], "hmk test"))).is_err());
    assert!(line::parse(&good, Some(&AuditKey::derive(&[7; 32], "hmk other"))).is_err());
}

#[test]
fn a_forged_line_needs_the_key() {
    // Someone who can write the file can rebuild the chain's hashes, not a MAC.
    let k = key();
    let c = caller();
    let ev = Event::record(&c, "open key", "pool", "k1", None, Verdict::Allowed);
    let good = line::build(&k, 1, &line::now(), &[0; 32], &ev);
    let (body, _) = test_split_mac(&good).unwrap();
    let forged_body = String::from_utf8(body).unwrap().replace("\"k1\"", "\"k2\"");
    let forged = test_with_mac(forged_body.as_bytes(), &[0; 32]);
    assert!(line::parse(&forged, None).is_ok(), "well formed");
    let err = line::parse(&forged, Some(&k)).unwrap_err();
    assert!(err.contains("MAC does not match"), "{err}");
}

#[test]
fn lines_not_in_the_exact_written_form_are_rejected() {
    let k = key();
    let c = caller();
    let ev = Event::group(&c, "mkdir", "pool", Verdict::Allowed);
    let good = String::from_utf8(line::build(&k, 1, &line::now(), &[0; 32], &ev)).unwrap();
    let cases = [
        good.replacen("{\"seq\":1,", "{\"seq\": 1,", 1),
        good.replacen("\"uid\":1000,\"gid\":100,", "\"gid\":100,\"uid\":1000,", 1),
        good.replacen("{\"seq\":1,", "{\"seq\":1,\"extra\":1,", 1),
        good.replacen("{\"seq\":1,", "{\"seq\":1,\"seq\":1,", 1),
        good.replacen("\"pool\"", "\"po\\u006fl\"", 1),
        good.replacen("\"result\":\"allowed\"", "\"result\":\"maybe\"", 1),
        good.replacen("\"seq\":1,", "\"seq\":0,", 1),
        good.replacen(
            "\"result\":\"allowed\",\"reason\":null",
            "\"result\":\"refused\",\"reason\":null",
            1,
        ),
        good[..good.len() - 1].to_string(),
        format!("{good} "),
        good.replacen(",\"mac\":\"", ",\"MAC\":\"", 1),
        good.to_uppercase(),
        String::new(),
        "{}".into(),
    ];
    for bad in cases {
        assert!(line::parse(bad.as_bytes(), None).is_err(), "{bad}");
    }
}

#[test]
fn time_is_rfc3339_utc_with_microseconds() {
    let t = line::now();
    assert_eq!(t.len(), "2026-01-02T03:04:05.123456Z".len(), "{t}");
    assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.', "{t}");
    time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).unwrap();
}

#[test]
fn the_key_is_redacted_and_deterministic() {
    let k = AuditKey::derive(&[0xab; 32], "hmk 0123");
    let d = format!("{k:?} {k:#?}");
    assert!(d.contains("<redacted>") && d.contains("hmk 0123"), "{d}");
    assert!(
        !d.contains("ab, ab") && !d.contains("171") && !d.contains("abab"),
        "{d}"
    );
    assert_eq!(k.context(), "hmk 0123");
    let body = b"{\"x\":1}";
    assert_eq!(
        k.mac(body),
        AuditKey::derive(&[0xab; 32], "hmk 0123").mac(body)
    );
    assert_ne!(
        k.mac(body),
        AuditKey::derive(&[0xab; 32], "hmk 0124").mac(body)
    );
    // from_hmk names the keystore by its HMK id.
    let hmk = crate::crypto::Hmk::random();
    let k = AuditKey::from_hmk(&hmk);
    assert_eq!(k.context(), format!("hmk {}", hmk.id()));
    assert_eq!(
        k.mac(body),
        AuditKey::derive(hmk.secret().expose(), k.context()).mac(body)
    );
}

#[test]
fn the_chain_links_each_line_to_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = log_with(dir.path(), 3);
    assert_eq!(log.next_seq(), 4);
    assert_eq!(log.health(), Ok(()));
    let ls = lines(&path);
    assert_eq!(ls.len(), 3);
    assert_eq!(json(&ls[0])["prev"], hex::encode(genesis("hmk test")));
    for i in 0..3 {
        assert_eq!(json(&ls[i])["seq"], i as u64 + 1);
        if i > 0 {
            assert_eq!(json(&ls[i])["prev"], sha_hex(&ls[i - 1]));
        }
    }
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    let r = verify(std::slice::from_ref(&path), Some(&key())).unwrap();
    assert_eq!(
        (r.files, r.lines, r.first_seq, r.last_seq, r.macs_checked),
        (1, 3, Some(1), Some(3), true)
    );
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    let r = verify(std::slice::from_ref(&path), None).unwrap();
    assert!(!r.macs_checked);
    assert!(r.notes[0].contains("without the key"), "{:?}", r.notes);
    // Another keystore's key: the first line's MAC fails.
    let other = AuditKey::derive(&[9; 32], "hmk test");
    let e = verify(&[path], Some(&other)).unwrap_err().to_string();
    assert!(e.ends_with(":1: the MAC does not match: the line was altered, or it was not written with this keystore's key"), "{e}");
}

#[test]
fn the_genesis_names_the_keystore() {
    // Same key bytes, another context: MACs differ anyway; and with the MAC forged away the
    // genesis still tells a chain of another keystore.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(AUDIT_FILE);
    let log = AuditLog::open(&path, AuditKey::derive(&[7; 32], "hmk other")).unwrap();
    append_n(&log, 1);
    let e = verify(std::slice::from_ref(&path), Some(&key()))
        .unwrap_err()
        .to_string();
    assert!(e.contains(":1: the MAC does not match"), "{e}");
}

#[test]
fn open_continues_the_chain_of_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = log_with(dir.path(), 2);
    drop(log);
    let log = AuditLog::open(&path, key()).unwrap();
    assert_eq!(log.next_seq(), 3);
    assert_eq!(log.torn_tail(), 0);
    append_n(&log, 1);
    let ls = lines(&path);
    assert_eq!(json(&ls[2])["seq"], 3);
    assert_eq!(json(&ls[2])["prev"], sha_hex(&ls[1]));
    assert_eq!(verify(&[path], Some(&key())).unwrap().lines, 3);
}

#[test]
fn open_finds_the_last_line_of_a_large_file_from_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = log_with(dir.path(), 300);
    drop(log);
    assert!(fs::metadata(&path).unwrap().len() > 3 * 8192);
    let log = AuditLog::open(&path, key()).unwrap();
    assert_eq!(log.next_seq(), 301);
    append_n(&log, 1);
    assert_eq!(verify(&[path], Some(&key())).unwrap().lines, 301);
}

#[test]
fn a_torn_tail_is_cut_back_at_open_and_noted_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = log_with(dir.path(), 2);
    drop(log);
    let whole = fs::metadata(&path).unwrap().len();
    let fragment = b"{\"seq\":3,\"time\":\"2026-";
    fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(fragment)
        .unwrap();
    // verify reads only: it notes the fragment at the end of the last file and passes.
    let r = verify(std::slice::from_ref(&path), Some(&key())).unwrap();
    assert_eq!(r.lines, 2);
    let noted = format!(":3: an incomplete last line ({} bytes", fragment.len());
    assert!(r.notes.iter().any(|n| n.contains(&noted)), "{:?}", r.notes);
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        whole + fragment.len() as u64
    );
    // open cuts it off; the next line takes seq 3.
    let log = AuditLog::open(&path, key()).unwrap();
    assert_eq!(log.torn_tail(), fragment.len() as u64);
    assert_eq!(fs::metadata(&path).unwrap().len(), whole);
    assert_eq!(log.next_seq(), 3);
    append_n(&log, 1);
    let r = verify(&[path], Some(&key())).unwrap();
    assert_eq!((r.lines, r.notes.len()), (3, 0), "{:?}", r.notes);
}

#[test]
fn a_torn_line_before_the_end_of_the_chain_fails_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = log_with(dir.path(), 2);
    drop(log);
    let old = dir.path().join("audit.log.1");
    fs::rename(&path, &old).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(&old)
        .unwrap()
        .write_all(b"{\"seq\":3")
        .unwrap();
    let log = AuditLog::open(&path, key()).unwrap();
    append_n(&log, 1);
    let e = verify(&[old, path], Some(&key())).unwrap_err();
    assert!(
        e.to_string().ends_with(
            "audit.log.1:3: an incomplete line (8 bytes, no newline) before the end of the chain"
        ),
        "{e}"
    );
}

#[test]
fn a_file_of_only_a_fragment_starts_a_new_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(AUDIT_FILE);
    fs::write(&path, b"{\"seq\":1,").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let log = AuditLog::open(&path, key()).unwrap();
    assert_eq!((log.torn_tail(), log.next_seq()), (9, 1));
    append_n(&log, 1);
    assert_eq!(verify(&[path], Some(&key())).unwrap().lines, 1);
}

#[test]
fn open_refuses_a_tail_it_cannot_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = log_with(dir.path(), 2);
    drop(log);
    // Another keystore's key.
    let e = AuditLog::open(&path, AuditKey::derive(&[1; 32], "hmk test")).unwrap_err();
    assert!(matches!(e, AuditError::Chain { .. }), "{e}");
    assert!(
        e.to_string().contains("its last line does not verify"),
        "{e}"
    );
    // An edited last line.
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replace("\"mkdir\"", "\"mkdiR\"")).unwrap();
    let e = AuditLog::open(&path, key()).unwrap_err();
    assert!(e.to_string().contains("MAC does not match"), "{e}");
    // Garbage with no newline, longer than any line: not an audit log.
    fs::write(&path, vec![b'x'; 3 * MAX_LINE]).unwrap();
    let e = AuditLog::open(&path, key()).unwrap_err();
    assert!(e.to_string().contains("no complete line"), "{e}");
}

#[test]
fn open_refuses_symlinks_and_files_that_are_not_safe() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    fs::write(&target, b"").unwrap();
    let link = dir.path().join("link.log");
    symlink(&target, &link).unwrap();
    let e = AuditLog::open(&link, key()).unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    let dangling = dir.path().join("dangling.log");
    symlink(dir.path().join("nowhere"), &dangling).unwrap();
    let e = AuditLog::open(&dangling, key()).unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    assert!(!dir.path().join("nowhere").exists());
    let e = AuditLog::open(dir.path(), key()).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    let fifo = dir.path().join("fifo.log");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let e = AuditLog::open(&fifo, key()).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    let open = dir.path().join("open.log");
    fs::write(&open, b"").unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o622)).unwrap();
    let e = AuditLog::open(&open, key()).unwrap_err();
    assert!(e.to_string().contains("writable by group or others"), "{e}");
    assert!(matches!(
        AuditLog::open(&link, key()),
        Err(AuditError::Unsafe { .. })
    ));
}

#[test]
fn an_empty_log_continues_the_chain_of_the_rotated_file() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = log_with(dir.path(), 2);
    drop(log);
    let old = dir.path().join("audit.log.1");
    fs::rename(&path, &old).unwrap();
    // logrotate's `create`: an empty file; then the daemon restarts before writing to it.
    fs::write(&path, b"").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let log = AuditLog::open(&path, key()).unwrap();
    assert_eq!(log.next_seq(), 3);
    append_n(&log, 1);
    let r = verify(&[old.clone(), path.clone()], Some(&key())).unwrap();
    assert_eq!((r.files, r.lines), (2, 3));
    // A rotated file that does not verify is not continued from.
    fs::write(&path, b"").unwrap();
    drop(log);
    let text = fs::read_to_string(&old).unwrap();
    fs::write(&old, text.replace("\"cat\"", "\"dog\"")).unwrap();
    let e = AuditLog::open(&path, key()).unwrap_err();
    assert!(
        e.to_string()
            .contains("audit.log.1: its last line does not verify"),
        "{e}"
    );
}

#[test]
fn reopen_continues_the_chain_into_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = log_with(dir.path(), 2);
    // SIGHUP without a rotation: nothing changes.
    log.reopen().unwrap();
    append_n(&log, 1);
    assert_eq!(lines(&path).len(), 3);
    let old = dir.path().join("audit.log.1");
    fs::rename(&path, &old).unwrap();
    // Between the rename and the SIGHUP, lines still go to the renamed file.
    append_n(&log, 1);
    log.reopen().unwrap();
    append_n(&log, 2);
    let (a, b) = (lines(&old), lines(&path));
    assert_eq!((a.len(), b.len()), (4, 2));
    assert_eq!(json(&b[0])["seq"], 5);
    assert_eq!(json(&b[0])["prev"], sha_hex(&a[3]));
    let r = verify(&[old.clone(), path.clone()], Some(&key())).unwrap();
    assert_eq!((r.files, r.lines, r.last_seq), (2, 6, Some(6)));
    // In the wrong order, the files do not verify.
    let e = verify(&[path.clone(), old.clone()], Some(&key())).unwrap_err();
    assert!(
        e.to_string()
            .contains("audit.log.1:1: seq 1 where 7 was expected"),
        "{e}"
    );
    // The new file alone: the chain starts at seq 5, noted.
    let r = verify(std::slice::from_ref(&path), Some(&key())).unwrap();
    assert!(r.notes[0].contains("starts at seq 5"), "{:?}", r.notes);
}

#[test]
fn reopen_refuses_a_file_that_does_not_continue_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = log_with(dir.path(), 2);
    let other_dir = tempfile::tempdir().unwrap();
    let (other, other_log) = log_with(other_dir.path(), 1);
    drop(other_log);
    let old = dir.path().join("audit.log.1");
    fs::rename(&path, &old).unwrap();
    fs::copy(&other, &path).unwrap();
    let e = log.reopen().unwrap_err();
    assert!(matches!(e, AuditError::Chain { .. }), "{e}");
    // Still writing, to the old file.
    append_n(&log, 1);
    assert_eq!(lines(&old).len(), 3);
    assert_eq!(verify(&[old], Some(&key())).unwrap().lines, 3);
    // A symlink at the path is refused too.
    fs::remove_file(&path).unwrap();
    symlink(&other, &path).unwrap();
    assert!(matches!(log.reopen(), Err(AuditError::Unsafe { .. })));
    assert_eq!(log.health(), Ok(()));
}

#[test]
fn appends_from_many_threads_form_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = log_with(dir.path(), 0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| append_n(&log, 50));
        }
    });
    let r = verify(&[path], Some(&key())).unwrap();
    assert_eq!(
        (r.lines, r.first_seq, r.last_seq),
        (400, Some(1), Some(400))
    );
}

#[test]
fn verify_names_the_first_line_that_breaks_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = log_with(dir.path(), 5);
    drop(log);
    let good = lines(&path);
    let check = |ls: &[String], with_key: bool, want: &str| {
        fs::write(&path, ls.join("\n") + "\n").unwrap();
        let k = key();
        let e = verify(std::slice::from_ref(&path), with_key.then_some(&k))
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{e}\nwanted: {want}");
    };
    // Removed: line 3 gone, so line 3 is now seq 4.
    let mut ls = good.clone();
    ls.remove(2);
    check(&ls, true, "audit.log:3: seq 4 where 3 was expected");
    check(&ls, false, "audit.log:3: seq 4 where 3 was expected");
    // Swapped: lines 2 and 3.
    let mut ls = good.clone();
    ls.swap(1, 2);
    check(&ls, true, "audit.log:2: seq 3 where 2 was expected");
    // Edited (the MAC names it; without the key, the next line's link does).
    let mut ls = good.clone();
    ls[3] = ls[3].replace("\"pool\"", "\"loop\"");
    check(&ls, true, "audit.log:4: the MAC does not match");
    check(
        &ls,
        false,
        "audit.log:5: its prev is not the hash of the line before it (",
    );
    // Not JSON.
    let mut ls = good.clone();
    ls[1] = "hello".into();
    check(&ls, false, "audit.log:2: not an audit line");
    // A copy of a line.
    let mut ls = good.clone();
    ls.insert(2, good[1].clone());
    check(&ls, false, "audit.log:3: seq 2 where 3 was expected");
    // The first lines cut off: not detectable as such (like rotated files not given), noted.
    let ls = &good[1..];
    fs::write(&path, ls.join("\n") + "\n").unwrap();
    let r = verify(std::slice::from_ref(&path), Some(&key())).unwrap();
    assert!(
        r.notes[0].contains("audit.log:1: the chain starts at seq 2"),
        "{:?}",
        r.notes
    );
}

#[test]
fn verify_refuses_compressed_and_special_files() {
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("audit.log.2.gz");
    fs::write(&gz, [0x1f, 0x8b, 8, 0, 0, 0]).unwrap();
    let e = verify(&[gz], None).unwrap_err().to_string();
    assert!(e.contains("gzip-compressed"), "{e}");
    let e = verify(&[dir.path().to_path_buf()], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a regular file"), "{e}");
    let e = verify(&[dir.path().join("missing")], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing: cannot open"), "{e}");
    assert!(matches!(verify(&[], None), Err(VerifyError::NoFiles)));
    let empty = dir.path().join("empty");
    fs::write(&empty, b"").unwrap();
    let r = verify(&[empty], None).unwrap();
    assert_eq!(r.lines, 0);
    assert!(r.notes[0].ends_with("empty: empty"), "{:?}", r.notes);
}

#[test]
fn caller_lookup_reads_proc() {
    let me = Caller::daemon();
    assert_eq!(me.pid, std::process::id());
    assert!(me.process.is_some());
    assert_eq!(
        me.exe.as_deref(),
        std::env::current_exe()
            .ok()
            .as_deref()
            .and_then(|p| p.to_str())
    );
    let gone = Caller::lookup(1, 2, 0);
    assert_eq!((gone.process, gone.exe), (None, None));
}

#[test]
fn the_log_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<AuditLog>();
    shared::<AuditKey>();
}

#[test]
fn unsaved_lines_are_handed_out_until_saved_or_synced() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = log_with(dir.path(), 3);
    let (unsaved, last) = log.unsaved();
    assert_eq!(unsaved, lines(&path));
    assert_eq!(last, 3);
    log.saved_through(2);
    let (unsaved, last) = log.unsaved();
    assert_eq!(unsaved, lines(&path)[2..]);
    assert_eq!(last, 3);
    append_n(&log, 1);
    log.saved_through(3);
    assert_eq!(log.unsaved().0, lines(&path)[3..]);
    log.sync().unwrap();
    assert_eq!(log.unsaved(), (Vec::new(), 0));
}

#[test]
fn the_log_syncs_itself_before_too_much_is_unsaved() {
    let dir = tempfile::tempdir().unwrap();
    let (_, log) = log_with(dir.path(), 0);
    let mut most = 0;
    for _ in 0..(2 * SYNC_EVERY / 200) {
        append_n(&log, 1);
        let bytes: usize = log.unsaved().0.iter().map(|l| l.len() + 1).sum();
        assert!(bytes < SYNC_EVERY, "{bytes}");
        most = most.max(bytes);
    }
    assert!(most > SYNC_EVERY / 2, "it synced far too often: {most}");
}

#[test]
fn restore_puts_back_what_a_crash_took_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = log_with(dir.path(), 5);
    let all = lines(&path);
    drop(log);
    // The crash kept the first two lines only.
    let keep: String = all[..2].iter().map(|l| format!("{l}\n")).collect();
    fs::write(&path, keep).unwrap();
    let log = AuditLog::open(&path, key()).unwrap();
    assert_eq!(log.restore(&all[1..]).unwrap(), 3);
    assert_eq!(lines(&path), all);
    assert_eq!(log.next_seq(), 6);
    // Nothing more to do a second time, and the chain goes on.
    assert_eq!(log.restore(&all).unwrap(), 0);
    append_n(&log, 1);
    drop(log);
    verify(std::slice::from_ref(&path), Some(&key())).unwrap();
}

#[test]
fn restore_never_forges_a_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (path, log) = log_with(dir.path(), 4);
    let all = lines(&path);
    drop(log);
    // The log was moved aside: a new file starts a new chain; old lines do not continue it.
    fs::rename(&path, dir.path().join("aside")).unwrap();
    let log = AuditLog::open(&path, key()).unwrap();
    assert_eq!(log.restore(&all[2..]).unwrap(), 0);
    assert!(lines(&path).is_empty());
    // A gap: lines 3 and 4 cannot follow line 1.
    fs::write(&path, format!("{}\n", all[0])).unwrap();
    let log = AuditLog::open(&path, key()).unwrap();
    assert_eq!(log.restore(&all[2..]).unwrap(), 0);
    // A line under another key is not put back.
    fs::write(&path, format!("{}\n", all[0])).unwrap();
    let other = AuditLog::open(&path, key()).unwrap();
    let mut forged = all[1].clone();
    forged = forged.replace("\"uid\":1000", "\"uid\":0");
    assert_eq!(other.restore(&[forged]).unwrap(), 0);
    assert_eq!(lines(&path), all[..1]);
}
