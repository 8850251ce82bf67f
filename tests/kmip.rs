//! KMIP against a real `kmsfs mount --kmip-listen`, with a real third-party client (PyKMIP's
//! ProxyKmipClient, through `examples/kmip_lifecycle.py`): every change it makes is checked
//! through the mount, and a change made through the mount is seen over KMIP. Then what is
//! refused: a certificate the client CA did not sign (in the handshake), a client without
//! rights (Permission Denied, audited), and changes while quiesced (Get still works).

mod support;

use std::fs;
use std::path::Path;

use sha2::{Digest, Sha256};
use support::daemon::Daemon;
use support::kmip::{connect, free_port, Pki, TlsStream};
use support::scratch::Scratch;

fn serve(s: &Scratch, pki: &Pki, port: u16, extra: &[String]) -> Daemon {
    let mut args: Vec<String> = vec!["--init".into()];
    args.extend(pki.mount_args(port));
    args.extend(extra.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start_with(&s.path("data"), &s.path("mnt"), &args)
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn state(d: &Daemon, record: &str) -> String {
    read(&d.p(&format!("{record}/state"))).trim().to_string()
}

fn record_json(d: &Daemon, record: &str) -> serde_json::Value {
    d.json(&format!("{record}/record.json"))
}

fn active(d: &Daemon, group: &str) -> Option<String> {
    fs::read_link(d.p(&format!("{group}/.active")))
        .ok()
        .map(|p| p.display().to_string())
}

fn key_sha(d: &Daemon, record: &str) -> String {
    hex::encode(Sha256::digest(
        fs::read(d.p(&format!("{record}/key"))).unwrap(),
    ))
}

/// `rel` no longer exists in the mount. Polled: until the service publishes every change to
/// the mount (which then invalidates the kernel's caches), a name the kernel looked up stays
/// for its entry TTL (docs/tree.md: 1 s) after KMIP removed it.
fn gone(d: &Daemon, rel: &str) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while d.p(rel).exists() {
        assert!(std::time::Instant::now() < until, "{rel} is still there");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn pykmip_runs_the_whole_lifecycle_and_the_mount_shows_each_change() {
    let s = Scratch::new();
    let pki = Pki::new(&s.path("pki"));
    let port = free_port();
    let d = serve(&s, &pki, port, &[]);
    let mut steps = pki.lifecycle(port, "client");

    let first = steps.next("create")["uid"].as_str().unwrap().to_string();
    assert_eq!(state(&d, "kmip/nbu-key-1"), "prelive");
    assert_eq!(record_json(&d, "kmip/nbu-key-1")["tag"], first.as_str());
    assert_eq!(read(&d.p("kmip/.cipher")), "AES_256\n");

    let tape = steps.next("create_in_group")["uid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(record_json(&d, "backup/tape-1")["tag"], tape.as_str());
    assert_eq!(
        read(&d.p("backup/.cipher")),
        "AES_128\n",
        "the group takes the key's cipher"
    );

    let registered = steps.next("register")["uid"].as_str().unwrap().to_string();
    assert_eq!(
        record_json(&d, "kmip/registered-1")["tag"],
        registered.as_str()
    );
    assert_eq!(state(&d, "kmip/registered-1"), "prelive");

    assert_eq!(steps.next("get_prelive")["refused"], "ILLEGAL_OPERATION");

    steps.next("activate");
    assert_eq!(state(&d, "kmip/nbu-key-1"), "active");
    assert_eq!(active(&d, "kmip").as_deref(), Some("nbu-key-1"));

    // Activating the other key demotes the first in the same change, as everywhere.
    steps.next("activate_other");
    assert_eq!(state(&d, "kmip/registered-1"), "active");
    assert_eq!(state(&d, "kmip/nbu-key-1"), "inactive");
    assert_eq!(active(&d, "kmip").as_deref(), Some("registered-1"));

    let got = steps.next("get");
    assert_eq!(
        fs::read(d.p("kmip/registered-1/key")).unwrap(),
        (0u8..32).collect::<Vec<_>>()
    );
    assert_eq!(got["sha256"], key_sha(&d, "kmip/registered-1"));
    assert_eq!(got["bits"], 256);
    let got = steps.next("get_inactive");
    assert_eq!(got["sha256"], key_sha(&d, "kmip/nbu-key-1"));

    let attrs = &steps.next("get_attributes")["attributes"];
    assert_eq!(attrs["Name"], "nbu-key-1");
    assert_eq!(attrs["Object Group"], "kmip");
    assert_eq!(attrs["State"], "DEACTIVATED");
    assert_eq!(attrs["Cryptographic Length"], 256);
    assert_eq!(attrs["Unique Identifier"], first.as_str());
    let names = steps.next("get_attribute_list")["names"].clone();
    assert!(names.as_array().unwrap().len() >= 8, "{names}");

    let found = steps.next("locate");
    assert_eq!(found["by_name"], serde_json::json!([first]));
    assert_eq!(found["by_group"], serde_json::json!([tape]));
    assert_eq!(found["by_state"], serde_json::json!([registered]));
    assert_eq!(found["by_length"], serde_json::json!([tape]));

    steps.next("rename");
    gone(&d, "kmip/nbu-key-1");
    assert_eq!(record_json(&d, "kmip/nbu-key-1-old")["tag"], first.as_str());
    assert_eq!(steps.next("delete_name")["refused"], "ILLEGAL_OPERATION");
    assert_eq!(
        record_json(&d, "kmip/nbu-key-1-old")["name"],
        "nbu-key-1-old"
    );

    // Changes through the mount, seen over KMIP.
    steps.next("seen_from_mount_before");
    fs::write(d.p("backup/tape-1/description"), "from the mount").unwrap();
    fs::write(d.p("backup/tape-1/state"), "active\n").unwrap();
    let seen = &steps.next("seen_from_mount")["attributes"];
    assert_eq!(seen["State"], "ACTIVE", "{seen}");
    assert_eq!(seen["x-description"], "from the mount", "{seen}");
    assert_eq!(seen["Name"], "tape-1");

    steps.next("revoke");
    assert_eq!(state(&d, "kmip/registered-1"), "inactive");
    assert_eq!(active(&d, "kmip"), None);
    steps.next("revoke_compromised");
    assert_eq!(state(&d, "kmip/nbu-key-1-old"), "deprecated");

    assert_eq!(steps.next("destroy")["state"], "DESTROYED");
    assert_eq!(state(&d, "kmip/nbu-key-1-old"), "terminated");
    assert_eq!(
        steps.next("get_destroyed")["refused"],
        "KEY_VALUE_NOT_PRESENT"
    );
    assert_eq!(steps.next("destroy_again")["refused"], "ITEM_NOT_FOUND");
    gone(&d, "kmip/nbu-key-1-old");
    steps.next("destroy_prelive");
    gone(&d, "kmip/never-used");
    steps.next("done");
    assert_eq!(steps.finish(), 0);

    // Every change was audited under the client certificate's subject.
    let audit = read(&s.path("data/audit.log"));
    let by_client = audit
        .lines()
        .filter(|l| l.contains(r#""client":"O=Example,CN=backup01""#))
        .count();
    assert!(
        by_client >= 15,
        "{by_client} lines name the client:\n{audit}"
    );
    // Never a key: the registered key's bytes (0..32), in hex, are in neither log.
    let registered_hex = hex::encode((0u8..32).collect::<Vec<_>>());
    assert!(!audit.contains(&registered_hex));
    assert!(!d.log_text().contains(&registered_hex), "{}", d.log_text());
    d.stop();
}

#[test]
fn a_certificate_the_client_ca_did_not_sign_is_refused_in_the_handshake() {
    let s = Scratch::new();
    let pki = Pki::new(&s.path("pki"));
    let port = free_port();
    let d = serve(&s, &pki, port, &[]);
    let (code, line) = pki.run(port, "rogue", &["create", "intruder"]);
    // Under TLS 1.3 the client learns of the refusal at its first read: the server checks
    // its certificate after the client has sent its last handshake message. The rogue CA has
    // the real CA's name, so the issuer is found and its signature does not verify.
    assert_eq!(code, 2, "{line}");
    assert!(line["error"].as_str().unwrap().contains("SSL"), "{line}");
    // Names only: a DirEntry kept alive keeps the directory open, and the mount busy.
    let names: Vec<String> = fs::read_dir(&d.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| n.starts_with('.')),
        "a group was made: {names:?}"
    );
    assert!(d.log_text().contains("TLS handshake"), "{}", d.log_text());
    d.stop();
}

#[test]
fn a_client_without_rights_gets_permission_denied_and_an_audit_line() {
    let s = Scratch::new();
    let pki = Pki::new(&s.path("pki"));
    let policy = s.file(
        "policy.json",
        r#"{"backup01": {"read": ["*"], "create": ["*"], "change": ["*"]},
            "reader": {"read": ["backup"]}}"#,
    );
    let port = free_port();
    let d = serve(
        &s,
        &pki,
        port,
        &["--kmip-policy".into(), policy.display().to_string()],
    );
    let (code, made) = pki.run(port, "client", &["create", "k", "backup"]);
    assert_eq!(code, 0, "{made}");
    let uid = made["uid"].as_str().unwrap();
    let before = read(&d.p("backup/k/record.json"));
    for (who, command) in [
        ("reader", vec!["create", "k2", "backup"]),
        ("reader", vec!["activate", uid]),
        ("stranger", vec!["attributes", uid]),
        ("stranger", vec!["create", "k3"]),
    ] {
        let (code, line) = pki.run(port, who, &command);
        assert_eq!(code, 1, "{who} {command:?}: {line}");
        assert_eq!(
            line["failed"], "PERMISSION_DENIED",
            "{who} {command:?}: {line}"
        );
    }
    assert_eq!(read(&d.p("backup/k/record.json")), before);
    assert!(!d.p("backup/k2").exists() && !d.p("kmip").exists());
    // What the reader may do, it does.
    let (code, line) = pki.run(port, "reader", &["attributes", uid]);
    assert_eq!(code, 0, "{line}");
    let audit = read(&s.path("data/audit.log"));
    let refusals: Vec<_> = audit
        .lines()
        .filter(|l| l.contains(r#""result":"refused""#) && l.contains(r#""client":"CN="#))
        .collect();
    assert_eq!(refusals.len(), 4, "{audit}");
    assert!(refusals
        .iter()
        .any(|l| l.contains("no entry in the KMIP policy")));
    d.stop();
}

#[test]
fn while_quiesced_kmip_changes_fail_and_get_works() {
    let s = Scratch::new();
    let pki = Pki::new(&s.path("pki"));
    let port = free_port();
    let d = serve(&s, &pki, port, &[]);
    let (_, made) = pki.run(port, "client", &["create", "k"]);
    let uid = made["uid"].as_str().unwrap().to_string();
    assert_eq!(pki.run(port, "client", &["activate", &uid]).0, 0);
    fs::write(d.p(".quiesce"), "quiesce\n").unwrap();
    let before = read(&d.p("kmip/k/record.json"));
    for command in [vec!["create", "k2"], vec!["revoke", &uid]] {
        let (code, line) = pki.run(port, "client", &command);
        assert_eq!(code, 1, "{command:?}: {line}");
        assert!(
            line["message"].as_str().unwrap().contains("quiesced"),
            "{command:?}: {line}"
        );
    }
    assert_eq!(read(&d.p("kmip/k/record.json")), before);
    assert!(!d.p("kmip/k2").exists());
    let (code, got) = pki.run(port, "client", &["get", &uid]);
    assert_eq!(code, 0, "{got}");
    assert_eq!(got["sha256"], key_sha(&d, "kmip/k"));
    fs::write(d.p(".quiesce"), "unquiesce\n").unwrap();
    assert_eq!(pki.run(port, "client", &["revoke", &uid]).0, 0);
    assert_eq!(state(&d, "kmip/k"), "inactive");
    d.stop();
}

/// Sends `bytes`, reads one response message.
fn exchange(tls: &mut TlsStream, bytes: &[u8]) -> kmsfs::kmip::ttlv::Ttlv {
    use std::io::{Read, Write};
    tls.write_all(bytes).unwrap();
    tls.flush().unwrap();
    let mut header = [0u8; 8];
    tls.read_exact(&mut header).unwrap();
    let len = kmsfs::kmip::ttlv::message_len(&header).unwrap();
    let mut msg = header.to_vec();
    msg.resize(len, 0);
    tls.read_exact(&mut msg[8..]).unwrap();
    kmsfs::kmip::ttlv::decode(&msg).unwrap()
}

/// The Result Reason of the response's first batch item (None: success).
fn reason(response: &kmsfs::kmip::ttlv::Ttlv) -> Option<u32> {
    use kmsfs::kmip::{tags, ttlv::Value};
    let item = response.child(tags::BATCH_ITEM).expect("a batch item");
    match item.child(tags::RESULT_REASON).map(|r| &r.value) {
        Some(Value::Enumeration(r)) => Some(*r),
        _ => None,
    }
}

/// Whether the server closed the connection: end of stream or a reset, not our own read
/// timeout (which means the server kept it open).
fn closed(tls: &mut TlsStream) -> bool {
    use std::io::{ErrorKind, Read};
    let mut b = [0u8; 1];
    match tls.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

fn discover_versions() -> Vec<u8> {
    use kmsfs::kmip::message::Version;
    use kmsfs::kmip::tags;
    use kmsfs::kmip::ttlv::{Ttlv, Value};
    let header = Ttlv::structure(
        tags::REQUEST_HEADER,
        vec![
            Version { major: 1, minor: 4 }.to_ttlv(),
            Ttlv::new(tags::BATCH_COUNT, Value::Integer(1)),
        ],
    );
    let item = Ttlv::structure(
        tags::BATCH_ITEM,
        vec![
            Ttlv::new(
                tags::OPERATION,
                Value::Enumeration(tags::op::DISCOVER_VERSIONS),
            ),
            Ttlv::structure(tags::REQUEST_PAYLOAD, vec![]),
        ],
    );
    Ttlv::structure(tags::REQUEST_MESSAGE, vec![header, item]).encode()
}

#[test]
fn hostile_messages_get_invalid_message_or_a_closed_connection_and_the_server_goes_on() {
    use kmsfs::kmip::tags::reason::INVALID_MESSAGE;
    let s = Scratch::new();
    let pki = Pki::new(&s.path("pki"));
    let port = free_port();
    let d = serve(&s, &pki, port, &[]);
    // A header announcing 1 GiB: refused from the header alone, then closed.
    let mut tls = connect(&pki, port, "client").unwrap();
    let r = exchange(&mut tls, &[0x42, 0x00, 0x78, 0x01, 0x40, 0, 0, 0]);
    assert_eq!(reason(&r), Some(INVALID_MESSAGE));
    assert!(closed(&mut tls));
    // A structure of the right length holding garbage.
    let mut tls = connect(&pki, port, "client").unwrap();
    let mut garbage = vec![0x42, 0x00, 0x78, 0x01, 0, 0, 0, 16];
    garbage.extend_from_slice(&[0xff; 16]);
    assert_eq!(reason(&exchange(&mut tls, &garbage)), Some(INVALID_MESSAGE));
    assert!(closed(&mut tls));
    // Not a structure at all.
    let mut tls = connect(&pki, port, "client").unwrap();
    let r = exchange(&mut tls, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(reason(&r), Some(INVALID_MESSAGE));
    // The server still answers, on a connection that stays open for the next request.
    let mut tls = connect(&pki, port, "client").unwrap();
    assert_eq!(reason(&exchange(&mut tls, &discover_versions())), None);
    assert_eq!(reason(&exchange(&mut tls, &discover_versions())), None);
    let names: Vec<String> = fs::read_dir(&d.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| n.starts_with('.')), "{names:?}");
    d.stop();
}

#[test]
fn connections_beyond_the_limit_are_closed_and_the_server_recovers() {
    use kmsfs::kmip::server::MAX_CONNECTIONS;
    let s = Scratch::new();
    let pki = Pki::new(&s.path("pki"));
    let port = free_port();
    let d = serve(&s, &pki, port, &[]);
    let mut open: Vec<TlsStream> = (0..MAX_CONNECTIONS)
        .map(|_| connect(&pki, port, "client").unwrap())
        .collect();
    // One more: accepted and closed at once, so its handshake fails.
    assert!(connect(&pki, port, "client").is_err());
    assert!(
        d.log_text().contains("connections open; refused"),
        "{}",
        d.log_text()
    );
    // Those open are served; once one closes, a new one is too.
    assert_eq!(reason(&exchange(&mut open[0], &discover_versions())), None);
    drop(open.pop());
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut again = loop {
        match connect(&pki, port, "client") {
            Ok(c) => break c,
            Err(_) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            Err(e) => panic!("no connection after one closed: {e}"),
        }
    };
    assert_eq!(reason(&exchange(&mut again, &discover_versions())), None);
    drop(open);
    d.stop();
}

#[test]
fn a_silent_or_stalled_client_is_cut_off_after_the_timeout() {
    use kmsfs::kmip::server::IO_TIMEOUT;
    use std::io::Write;
    let s = Scratch::new();
    let pki = Pki::new(&s.path("pki"));
    let port = free_port();
    let d = serve(&s, &pki, port, &[]);
    let mut silent = connect(&pki, port, "client").unwrap();
    let mut stalled = connect(&pki, port, "client").unwrap();
    // Half a message header, then nothing.
    stalled.write_all(&[0x42, 0x00, 0x78, 0x01]).unwrap();
    stalled.flush().unwrap();
    std::thread::sleep(IO_TIMEOUT + std::time::Duration::from_secs(2));
    assert!(
        closed(&mut silent),
        "an idle connection outlived the timeout"
    );
    assert!(
        closed(&mut stalled),
        "a stalled request outlived the timeout"
    );
    let mut fresh = connect(&pki, port, "client").unwrap();
    assert_eq!(reason(&exchange(&mut fresh, &discover_versions())), None);
    d.stop();
}
