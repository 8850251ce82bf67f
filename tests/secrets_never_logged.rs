//! Passphrases and key bytes never reach the daemon's log, `.errors`, `.status`, `.audit` or
//! the audit log, at any log level, and never the output of the commands that take
//! passphrase files (`init`, `export`, `import`, `regenerate`, `verify`), even at
//! `RUST_LOG=trace`.
//!
//! The daemon helper (`support::daemon`) always runs at `RUST_LOG=info`, so the mount is
//! spawned here at each level, its stdout and stderr in a file, with a guard that stops it
//! (SIGTERM, then SIGKILL) and lazily unmounts whatever it left, passed or not.
//!
//! Each search is made non-vacuous first: the log shows lines of the level asked for (fuser's
//! `WRITE fh ...` request lines at debug and trace; no WARN line at error), `.errors` and the
//! audit log hold the refusals the test provoked and the key reads it made.

mod support;

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::cli::{describe, failed, ok, text, BIN};
use support::keystore::{derived_record, group, key, record};
use support::mount::open_kms;
use support::scratch::Scratch;

/// The passphrase given to `.create`: distinctive, so that any copy of it is found.
const PASS: &str = "PASS-zebra-canary-7731";
/// The two halves of the split write: a leak of either half is a leak too.
const PASS_HEAD: &str = "PASS-zebra-";
const PASS_TAIL: &str = "canary-7731";
/// The value of a wrong-typed passphrase (a JSON number).
const WRONG_TYPED: &str = "123456789";

const HMK_PASS: &str = "HMK-PASS-walrus-4410";
const KPK_PASS: &str = "KPK-PASS-heron-5521";
const EXPORT_PASS: &str = "EXPORT-PASS-otter-9902";
const WRONG_PASS: &str = "WRONG-PASS-lynx-3308";
/// 11 characters: refused as a new passphrase, and the refusal must not show it.
const SHORT_PASS: &str = "SHRT-gnu-42";

const DEADLINE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// What a leak looks like

/// Standard base64, with padding (`url`: the URL-safe alphabet).
fn base64(bytes: &[u8], url: bool) -> String {
    let alphabet: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A secret and every rendering of it a careless log line might contain.
struct Secret {
    what: String,
    /// Text forms: searched in the text of each source.
    forms: Vec<String>,
    /// The raw bytes: searched in the bytes of each source.
    raw: Vec<u8>,
}

/// A passphrase: itself, and its bytes in hex or as a Debug list.
fn passphrase(what: &str, p: &str) -> Secret {
    Secret {
        what: what.to_string(),
        forms: vec![
            p.to_string(),
            hex::encode(p.as_bytes()),
            format!("{:?}", p.as_bytes()),
        ],
        raw: p.as_bytes().to_vec(),
    }
}

/// Key bytes: hex (either case, whole or its first 8 bytes), base64 (padded or not, both
/// alphabets), the Debug list of the bytes, and the raw bytes.
fn key_bytes(what: &str, k: &[u8]) -> Secret {
    assert!(k.len() >= 16, "{what}: a key of {} bytes", k.len());
    let b64 = base64(k, false);
    let url = base64(k, true);
    Secret {
        what: what.to_string(),
        forms: vec![
            hex::encode(k),
            hex::encode_upper(k),
            hex::encode(&k[..8]),
            hex::encode_upper(&k[..8]),
            b64.trim_end_matches('=').to_string(),
            url.trim_end_matches('=').to_string(),
            format!("{k:?}"),
        ],
        raw: k.to_vec(),
    }
}

/// The 32 key bytes of a key file (`magic(10) || version(2) || key(32) || sha256(32)`).
fn key_file(path: &Path) -> Vec<u8> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_eq!(bytes.len(), 76, "{}: not a key file", path.display());
    bytes[12..44].to_vec()
}

/// The HMK and the KPK of a data directory.
fn master_keys(data: &Path, label: &str) -> Vec<Secret> {
    vec![
        key_bytes(
            &format!("the HMK of {label}"),
            &key_file(&data.join("KMS_HMKF")),
        ),
        key_bytes(
            &format!("the KPK of {label}"),
            &key_file(&data.join("KMS_KPKF")),
        ),
    ]
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Fails, naming the source, the secret, the form and the line, if any secret is in any source.
#[track_caller]
fn assert_no_secret(sources: &[(String, Vec<u8>)], secrets: &[Secret]) {
    let mut leaks = Vec::new();
    for (name, bytes) in sources {
        let text = String::from_utf8_lossy(bytes);
        for s in secrets {
            let hit = s
                .forms
                .iter()
                .find_map(|f| text.find(f.as_str()).map(|at| (f.clone(), at)))
                .or_else(|| find(bytes, &s.raw).map(|at| ("its raw bytes".to_string(), at)));
            if let Some((form, at)) = hit {
                let start = text[..at.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
                let line = text[start..].lines().next().unwrap_or("");
                leaks.push(format!(
                    "{name} holds {} (as {form:?}) in the line:\n    {line}",
                    s.what
                ));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "SECRETS LEAKED:\n{}\n\n--- sources searched:\n{}",
        leaks.join("\n"),
        sources
            .iter()
            .map(|(n, b)| format!(
                "=== {n} ({} bytes)\n{}",
                b.len(),
                String::from_utf8_lossy(b)
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The search itself can fail: every form of a key and of a passphrase is found, alone in a
/// line of text, and a source without them passes.
#[test]
fn the_search_finds_every_form_of_a_secret() {
    assert_eq!(base64(b"Man", false), "TWFu");
    assert_eq!(base64(b"Ma", false), "TWE=");
    assert_eq!(base64(b"M", false), "TQ==");
    assert_eq!(base64(&[0xfb, 0xff], true), "-_8=");
    let k: Vec<u8> = (0xf0u8..=0xff).chain(0u8..16).collect();
    let secrets = [key_bytes("a key", &k), passphrase("a passphrase", PASS)];
    let mut planted: Vec<Vec<u8>> = secrets
        .iter()
        .flat_map(|s| s.forms.iter().map(|f| f.clone().into_bytes()))
        .collect();
    planted.push(k.clone());
    for leak in planted {
        let mut line = b"[2026-01-01T00:00:00Z WARN  kmsfs] refused: ".to_vec();
        line.extend_from_slice(&leak);
        let sources = [("a log".to_string(), line)];
        let caught = std::panic::catch_unwind(|| assert_no_secret(&sources, &secrets));
        assert!(
            caught.is_err(),
            "not found: {}",
            String::from_utf8_lossy(&leak)
        );
    }
    assert_no_secret(
        &[(
            "a log".to_string(),
            b"refused (EINVAL): .create: field \"passphrase\" must be a string".to_vec(),
        )],
        &secrets,
    );
}

// ---------------------------------------------------------------------------------------------
// The daemon, at a chosen log level

/// Lazy unmount: harmless where nothing is mounted.
fn detach(mnt: &Path) {
    let c = std::ffi::CString::new(mnt.as_os_str().as_bytes()).expect("no NUL in the path");
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

fn wait_exit(child: &mut Child, deadline: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `RUST_LOG=LEVEL kmsfs mount --data-dir DATA MNT`, stdout and stderr in `log`.
struct Daemon {
    child: Option<Child>,
    mnt: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn start(data: &Path, mnt: &Path, log: &Path, level: &str) -> Daemon {
        let out = File::create(log).expect("create the daemon's log");
        let child = Command::new(BIN)
            .arg("mount")
            .arg("--data-dir")
            .arg(data)
            .arg(mnt)
            .env("RUST_LOG", level)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn kmsfs mount");
        let mut d = Daemon {
            child: Some(child),
            mnt: mnt.to_path_buf(),
            log: log.to_path_buf(),
        };
        let until = Instant::now() + DEADLINE;
        while !mnt.join(".status").exists() {
            if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
                d.child = None;
                panic!(
                    "kmsfs mount exited with {status} before serving:\n{}",
                    d.log_text()
                );
            }
            assert!(
                Instant::now() < until,
                "kmsfs mount did not serve within {DEADLINE:?}:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// SIGTERM: the daemon must unmount and exit 0, so that its log is complete.
    fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM to kmsfs mount");
        match wait_exit(&mut child, DEADLINE) {
            Some(s) => assert!(
                s.success(),
                "kmsfs mount exited with {s}:\n{}",
                self.log_text()
            ),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "kmsfs mount did not exit after SIGTERM:\n{}",
                    self.log_text()
                );
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: as in `stop`.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            if wait_exit(&mut child, DEADLINE).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            if std::thread::panicking() {
                eprintln!("--- log of kmsfs mount:\n{}", self.log_text());
            }
        }
        detach(&self.mnt);
    }
}

// ---------------------------------------------------------------------------------------------
// Writes through the mount

/// One `write()` per chunk to one open file, then close; the error of the first refused
/// `write()`, if any.
fn write_chunks(path: &Path, chunks: &[&[u8]]) -> Result<(), std::io::Error> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    for chunk in chunks {
        let n = f.write(chunk)?;
        assert_eq!(n, chunk.len(), "a short write to {}", path.display());
    }
    Ok(())
}

#[track_caller]
fn write_ok(path: &Path, chunks: &[&[u8]]) {
    if let Err(e) = write_chunks(path, chunks) {
        panic!("write to {}: {e}", path.display());
    }
}

/// The write must be refused with `errno`.
#[track_caller]
fn write_refused(path: &Path, chunks: &[&[u8]], errno: i32) {
    match write_chunks(path, chunks) {
        Ok(()) => panic!("a write to {} was accepted", path.display()),
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(errno),
            "write to {}: {e}",
            path.display()
        ),
    }
}

fn json(path: &Path) -> serde_json::Value {
    let t = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&t).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Waits until `.errors` has a line whose operation is `op` (a close is reported after
/// `close()` has returned).
fn wait_for_error(d: &Daemon, op: &str) {
    let until = Instant::now() + DEADLINE;
    loop {
        let errors = fs::read_to_string(d.p(".errors")).unwrap();
        if errors
            .lines()
            .any(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["operation"] == op)
        {
            return;
        }
        assert!(
            Instant::now() < until,
            "no {op:?} line in .errors:\n{errors}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// The mount at each level

/// What a mount at `level` logs, shows and audits while records are created with passphrases
/// (accepted, refused, split over two writes, wrong-typed, left incomplete, refused while
/// quiesced, a recovery refused) and keys are read (and refused): never a passphrase or a key.
fn mount_at(level: &str) {
    let s = Scratch::new();
    let data = s.mkdir("data");
    let mnt = s.mkdir("mnt");
    let log = s.path("mount.log");
    let init = Command::new(BIN)
        .args([
            OsStr::new("init"),
            OsStr::new("--data-dir"),
            data.as_os_str(),
        ])
        .env("RUST_LOG", level)
        .stdin(Stdio::null())
        .output()
        .expect("run kmsfs init");
    let init_out = format!("{}{}", text(&init.stdout), text(&init.stderr));
    ok("kmsfs init", init);

    let d = Daemon::start(&data, &mnt, &log, level);
    fs::create_dir(d.p("pool")).unwrap();
    let create = d.p("pool/.create");

    // Accepted: one write, and one object split over two writes (the passphrase cut in two).
    let k1 = format!(r#"{{"name":"k1","state":"active","passphrase":"{PASS}"}}"#);
    write_ok(&create, &[k1.as_bytes()]);
    let head = format!(r#"{{"name":"k2","description":"split","passphrase":"{PASS_HEAD}"#);
    let tail = format!(r#"{PASS_TAIL}"}}"#);
    assert_eq!(format!("{PASS_HEAD}{PASS_TAIL}"), PASS);
    write_ok(&create, &[head.as_bytes(), tail.as_bytes()]);
    fs::write(d.p("pool/k2/state"), "active").unwrap();

    // Refused: a state a record cannot be created in, a name already taken, a passphrase
    // that is a number, an object left incomplete at close, a create while quiesced, and a
    // recovery (passphrase, salt and tag) of a tag that is taken.
    let bad_state = format!(r#"{{"name":"k3","state":"inactive","passphrase":"{PASS}"}}"#);
    write_refused(&create, &[bad_state.as_bytes()], libc::EINVAL);
    let taken = format!(r#"{{"name":"k1","passphrase":"{PASS}"}}"#);
    write_refused(&create, &[taken.as_bytes()], libc::EEXIST);
    let wrong_typed = format!(r#"{{"name":"k","passphrase":{WRONG_TYPED}}}"#);
    write_refused(&create, &[wrong_typed.as_bytes()], libc::EINVAL);
    let incomplete = format!(r#"{{"name":"k4","passphrase":"{PASS}""#);
    write_ok(&create, &[incomplete.as_bytes()]);
    wait_for_error(&d, "close");
    fs::write(d.p(".quiesce"), "quiesce").unwrap();
    let frozen = format!(r#"{{"name":"k5","passphrase":"{PASS}"}}"#);
    write_refused(&create, &[frozen.as_bytes()], libc::EROFS);
    fs::write(d.p(".quiesce"), "unquiesce").unwrap();
    let r1 = json(&d.p("pool/k1/record.json"));
    let (salt, tag) = (r1["salt"].as_str().unwrap(), r1["tag"].as_str().unwrap());
    fs::create_dir(d.p("again")).unwrap();
    let recover = format!(r#"{{"name":"k1","passphrase":"{PASS}","salt":"{salt}","tag":"{tag}"}}"#);
    write_refused(&d.p("again/.create"), &[recover.as_bytes()], libc::EEXIST);

    // Keys: two derived from the passphrase, two random; one refused while prelive.
    fs::create_dir(d.p("rand")).unwrap();
    fs::create_dir(d.p("rand/r1")).unwrap();
    fs::write(d.p("rand/r1/state"), "active").unwrap();
    fs::create_dir(d.p("rand/r2")).unwrap();
    let refused = fs::read(d.p("rand/r2/key")).expect_err("a prelive key was read");
    assert_eq!(refused.kind(), ErrorKind::PermissionDenied, "{refused}");
    fs::write(d.p("rand/r2/state"), "active").unwrap();
    let mut secrets = vec![
        passphrase("the passphrase", PASS),
        passphrase("the first half of the split passphrase", PASS_HEAD),
        passphrase("the second half of the split passphrase", PASS_TAIL),
        passphrase("the wrong-typed passphrase", WRONG_TYPED),
    ];
    for rec in ["pool/k1", "pool/k2", "rand/r1", "rand/r2"] {
        let k = fs::read(d.p(&format!("{rec}/key"))).unwrap();
        assert_eq!(k.len(), 32, "{rec}/key");
        secrets.push(key_bytes(&format!("the key of {rec}"), &k));
    }
    assert_eq!(
        fs::read(d.p("pool/k1/key")).unwrap(),
        fs::read(d.p("pool/k1/key")).unwrap()
    );
    assert_ne!(
        fs::read(d.p("pool/k1/key")).unwrap(),
        fs::read(d.p("pool/k2/key")).unwrap(),
        "two records derived from one passphrase have different salts"
    );
    secrets.extend(master_keys(&data, "the keystore"));

    let errors = fs::read(d.p(".errors")).unwrap();
    let status = fs::read(d.p(".status")).unwrap();
    let audit_view = fs::read(d.p(".audit")).unwrap();
    d.stop();
    let log_bytes = fs::read(&log).unwrap();
    let log_text = String::from_utf8_lossy(&log_bytes).into_owned();
    let audit_path = data.join("audit.log");
    let audit = fs::read(&audit_path)
        .unwrap_or_else(|e| panic!("the mount wrote no audit log {}: {e}", audit_path.display()));

    // Not vacuous: the refusals are in `.errors` and the audit log, so are the key reads; the
    // log is at the level asked for.
    let errors_text = String::from_utf8_lossy(&errors);
    for errno in ["EINVAL", "EEXIST", "EROFS", "EACCES"] {
        assert!(
            errors_text.contains(errno),
            ".errors has no {errno} line:\n{errors_text}"
        );
    }
    assert!(errors_text.contains("\"close\""), "{errors_text}");
    let audit_text = String::from_utf8_lossy(&audit);
    let opened = audit_text
        .lines()
        .filter(|l| l.contains(r#""operation":"open key""#) && l.contains(r#""result":"allowed""#))
        .count();
    assert!(
        opened >= 4,
        "{opened} key reads in the audit log:\n{audit_text}"
    );
    assert!(
        audit_text.contains(r#""result":"refused""#),
        "no refusal in the audit log:\n{audit_text}"
    );
    let has = |word: &str| log_text.lines().any(|l| l.contains(word));
    match level {
        "error" => assert!(!has(" WARN ") && !has(" INFO "), "{log_text}"),
        "warn" => assert!(has(" WARN ") && !has(" INFO "), "{log_text}"),
        "info" => assert!(
            has(" WARN ") && has(" INFO ") && !has(" DEBUG "),
            "{log_text}"
        ),
        "debug" | "trace" => assert!(
            has(" DEBUG ") && has("WRITE fh") && has("refused (EINVAL)"),
            "no request lines at {level}:\n{log_text}"
        ),
        other => panic!("no such level: {other}"),
    }

    assert_no_secret(
        &[
            (format!("the daemon's log at RUST_LOG={level}"), log_bytes),
            (
                format!("kmsfs init's output at RUST_LOG={level}"),
                init_out.into_bytes(),
            ),
            (".errors".into(), errors),
            (".status".into(), status),
            (".audit".into(), audit_view),
            (format!("{}", audit_path.display()), audit),
        ],
        &secrets,
    );
}

#[test]
fn the_mount_logs_no_secret_at_error() {
    mount_at("error");
}

#[test]
fn the_mount_logs_no_secret_at_warn() {
    mount_at("warn");
}

#[test]
fn the_mount_logs_no_secret_at_info() {
    mount_at("info");
}

#[test]
fn the_mount_logs_no_secret_at_debug() {
    mount_at("debug");
}

#[test]
fn the_mount_logs_no_secret_at_trace() {
    mount_at("trace");
}

// ---------------------------------------------------------------------------------------------
// The commands that take passphrase files

/// `RUST_LOG=trace kmsfs ARGS`, stdin closed.
fn kmsfs_trace<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .output()
        .expect("run kmsfs")
}

/// Keeps what a command printed, both streams, as one source to search.
fn output(sources: &mut Vec<(String, Vec<u8>)>, what: &str, out: &Output) {
    sources.push((format!("stdout of {what}"), out.stdout.clone()));
    sources.push((format!("stderr of {what}"), out.stderr.clone()));
}

#[test]
fn init_export_import_and_regenerate_print_no_passphrase_at_trace() {
    let s = Scratch::new();
    let hmk_file = s.file("hmk.pass", &format!("{HMK_PASS}\n"));
    let kpk_file = s.file("kpk.pass", &format!("{KPK_PASS}\n"));
    let export_file = s.file("export.pass", &format!("{EXPORT_PASS}\n"));
    let wrong_file = s.file("wrong.pass", &format!("{WRONG_PASS}\n"));
    let short_file = s.file("short.pass", &format!("{SHORT_PASS}\n"));
    let data = s.path("data");
    let target = s.path("target");
    let container = s.path("keys.kmsx");
    let mut sources = Vec::new();
    let arg = |p: &Path| p.as_os_str().to_owned();

    // init: a passphrase too short is refused (without showing it), then both derived.
    let what = "kmsfs init with a short HMK passphrase";
    let out = kmsfs_trace([
        "init".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--hmk-passphrase-file".as_ref(),
        short_file.as_os_str(),
        "--kpk-passphrase-file".as_ref(),
        kpk_file.as_os_str(),
    ]);
    assert!(
        failed(what, out.clone()).contains("too short"),
        "{}",
        describe(what, &out)
    );
    output(&mut sources, what, &out);
    let what = "kmsfs init --hmk-passphrase-file F --kpk-passphrase-file G";
    let out = kmsfs_trace([
        "init".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--hmk-passphrase-file".as_ref(),
        hmk_file.as_os_str(),
        "--kpk-passphrase-file".as_ref(),
        kpk_file.as_os_str(),
    ]);
    assert!(ok(what, out.clone()).contains("from a passphrase"));
    output(&mut sources, what, &out);

    // Records, through the service: derived from the passphrase and random.
    let mut secrets = master_keys(&data, "the keystore");
    {
        let kms = open_kms(&data);
        group(&kms, "pool");
        let tags = [
            derived_record(&kms, "pool", "d1", PASS, None, "derived"),
            record(&kms, "pool", "r1", "active", "random"),
            record(&kms, "pool", "r2", "inactive", "random"),
        ];
        for (i, t) in tags.iter().enumerate() {
            secrets.push(key_bytes(&format!("record key #{i}"), &key(&kms, t)));
        }
    }

    // export: a short passphrase refused, then the container.
    let what = "kmsfs export with a short passphrase";
    let out = kmsfs_trace([
        "export".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--out".as_ref(),
        container.as_os_str(),
        "--passphrase-file".as_ref(),
        short_file.as_os_str(),
    ]);
    failed(what, out.clone());
    output(&mut sources, what, &out);
    let what = "kmsfs export --passphrase-file F";
    let out = kmsfs_trace([
        "export".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--out".as_ref(),
        container.as_os_str(),
        "--passphrase-file".as_ref(),
        export_file.as_os_str(),
    ]);
    assert!(
        ok(what, out.clone()).contains("3 record(s)"),
        "{}",
        describe(what, &out)
    );
    output(&mut sources, what, &out);

    // import into another keystore: a wrong passphrase, a preview, the import.
    let what = "kmsfs init (the import's target)";
    let out = kmsfs_trace(["init".as_ref(), "--data-dir".as_ref(), target.as_os_str()]);
    ok(what, out.clone());
    output(&mut sources, what, &out);
    secrets.extend(master_keys(&target, "the import's target"));
    for (what, pass, preview, succeeds) in [
        (
            "kmsfs import with a wrong passphrase",
            &wrong_file,
            false,
            false,
        ),
        ("kmsfs import --preview", &export_file, true, true),
        ("kmsfs import", &export_file, false, true),
    ] {
        let mut args = vec![
            "import".into(),
            "--data-dir".into(),
            arg(&target),
            "--passphrase-file".into(),
            arg(pass),
        ];
        if preview {
            args.push("--preview".into());
        }
        args.push(arg(&container));
        let out = kmsfs_trace(&args);
        if succeeds {
            ok(what, out.clone());
        } else {
            assert!(
                failed(what, out.clone()).contains("wrong passphrase"),
                "{}",
                describe(what, &out)
            );
        }
        output(&mut sources, what, &out);
    }

    // regenerate a lost KMS_HMKF: a wrong passphrase writes nothing, the right one rebuilds.
    let hmkf = data.join("KMS_HMKF");
    let original = fs::read(&hmkf).unwrap();
    fs::remove_file(&hmkf).unwrap();
    for (what, pass, succeeds) in [
        (
            "kmsfs regenerate with a wrong passphrase",
            &wrong_file,
            false,
        ),
        ("kmsfs regenerate --hmk-passphrase-file F", &hmk_file, true),
    ] {
        let out = kmsfs_trace([
            "regenerate".as_ref(),
            "--data-dir".as_ref(),
            data.as_os_str(),
            "--hmk-passphrase-file".as_ref(),
            pass.as_os_str(),
        ]);
        if succeeds {
            ok(what, out.clone());
        } else {
            failed(what, out.clone());
        }
        output(&mut sources, what, &out);
    }
    assert_eq!(
        fs::read(&hmkf).unwrap(),
        original,
        "regenerate rebuilt another key"
    );
    for dir in [&data, &target] {
        let what = format!("kmsfs verify --data-dir {}", dir.display());
        let out = kmsfs_trace(["verify".as_ref(), "--data-dir".as_ref(), dir.as_os_str()]);
        ok(&what, out.clone());
        output(&mut sources, &what, &out);
    }

    // Not vacuous: the refusals said why.
    let all: String = sources.iter().map(|(_, b)| text(b)).collect();
    assert!(all.contains("too short"), "{all}");
    assert!(all.contains("wrong passphrase"), "{all}");

    for (what, p) in [
        ("the HMK passphrase", HMK_PASS),
        ("the KPK passphrase", KPK_PASS),
        ("the export passphrase", EXPORT_PASS),
        ("the wrong passphrase", WRONG_PASS),
        ("the too-short passphrase", SHORT_PASS),
        ("the record passphrase", PASS),
    ] {
        secrets.push(passphrase(what, p));
    }
    assert_no_secret(&sources, &secrets);
}
