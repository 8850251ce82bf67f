//! The master keys and the keys handed out live on pages marked `MADV_DONTDUMP`: a dump of the
//! running daemon that root takes anyway (`gcore`, a debugger, a `core_pattern` pipe with
//! `fs.suid_dumpable = 2`) holds none of them. Checked by dumping a real daemon with gdb's
//! `gcore` while it serves, after it unwrapped and handed out keys, and searching the dump.

mod support;

use std::path::Path;
use std::process::Command;

use support::daemon::Daemon;

fn contains(hay: &[u8], needle: &[u8]) -> usize {
    memchr::memmem::find_iter(hay, needle).count()
}

/// `gcore` of the process `pid` into `out`; the dump's bytes.
fn gcore(pid: &str, out: &Path) -> Vec<u8> {
    let st = Command::new("gcore")
        .arg("-o")
        .arg(out)
        .arg(pid)
        .output()
        .expect("gcore (Debian package gdb) is needed by this test");
    assert!(
        st.status.success(),
        "gcore failed: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let file = format!("{}.{pid}", out.display());
    let bytes = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    bytes
}

#[test]
fn a_dump_of_the_running_daemon_holds_no_master_key_and_no_key_it_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = Daemon::start_init(&data, &dir.path().join("mnt"));
    d.sh_ok(
        "mkdir pool pool/k1 pool/k2 && echo active > pool/k1/state && echo active > pool/k2/state",
    );
    // Keys unwrapped and handed out, a change sealed under the HMK, a KPK wrap.
    let k1 = std::fs::read(d.p("pool/k1/key")).unwrap();
    let k2 = std::fs::read(d.p("pool/k2/key")).unwrap();
    d.sh_ok("cat pool/k1/key pool/k2/key > /dev/null && mkdir pool/k3 && echo 'notes' > pool/k3/description");
    // Many frames sealed, keys wrapped and unwrapped, and both master keys changed (new
    // schedules, new ids hashed) before the dump.
    d.sh_ok(
        "for i in $(seq 1 60); do mkdir pool/r$i && echo active > pool/r$i/state && cat pool/r$i/key > /dev/null; done
         echo kpk > .change-key && echo hmk > .change-key && cat pool/r1/key > /dev/null",
    );
    // Passphrases written to the mount: a record's, and a new KPK's.
    const RECORD_PASS: &str = "record passphrase 7f3a9c";
    const KPK_PASS: &str = "kpk passphrase 51be0d";
    d.sh_ok(&format!(
        r#"jq -n '{{name: "p1", state: "active", passphrase: "{RECORD_PASS}"}}' > pool/.create
jq -n '{{key: "kpk", passphrase: "{KPK_PASS}"}}' > .change-key
cat pool/p1/key > /dev/null"#
    ));
    let hmk = std::fs::read(data.join("KMS_HMKF")).unwrap()[12..44].to_vec();
    let kpk = std::fs::read(data.join("KMS_KPKF")).unwrap()[12..44].to_vec();
    let status = d.json(".status");
    assert_eq!(
        status["hardening"]["secrets_out_of_dumps"], true,
        "{status}"
    );

    let pid = std::fs::read_to_string(data.join("kmsfs.lock")).unwrap();
    let core = gcore(pid.trim(), &dir.path().join("core"));
    // The dump is real: it holds what the daemon holds that is not secret.
    assert!(core.len() > 1 << 20, "a dump of {} bytes", core.len());
    assert!(
        contains(&core, data.to_str().unwrap().as_bytes()) > 0,
        "the data directory's path is not in the dump: the search proves nothing"
    );
    let p1 = std::fs::read(d.p("pool/p1/key")).unwrap();
    for (what, secret) in [
        ("the HMK", &hmk[..]),
        ("the KPK", &kpk[..]),
        ("k1's key", &k1[..]),
        ("k2's key", &k2[..]),
        ("p1's key", &p1[..]),
        ("the record passphrase", RECORD_PASS.as_bytes()),
        ("the KPK passphrase", KPK_PASS.as_bytes()),
    ] {
        assert_eq!(contains(&core, secret), 0, "{what} is in the dump");
    }
    d.stop();
}
