//! Kills a process that changes the HMK and the KPK over and over with SIGKILL at random
//! instants, many times: the data directory always opens afterwards, with the pair of key
//! files of the last acknowledged change or of the one under way (never an older pair, never
//! a KMS_DATA that no key file on disk opens), every record's key byte for byte the same,
//! no pending key file left behind, and `kmsfs verify` passing.
//!
//! The test re-runs its own binary as the changer (selected by an environment variable), so
//! the kill lands in a real process at an arbitrary instant, possibly between two renames.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use kmsfs::crypto::KeyFileKind;
use kmsfs::service::Kms;
use kmsfs::store::{self, InitOptions, NewMasterKey};
use support::cli::{ok, verify};
use support::keystore::{group, key, record};

const CHILD_ENV: &str = "KMSFS_CHANGE_KEY_CHILD_DIR";
const ROUNDS: usize = 25;

/// The changer: HMK, KPK, HMK, ... forever, printing each acknowledged new id.
fn changer(dir: &Path) -> ! {
    let kms = Kms::open(dir).unwrap();
    let mut out = std::io::stdout();
    for i in 0.. {
        let kind = if i % 2 == 0 {
            KeyFileKind::Hmk
        } else {
            KeyFileKind::Kpk
        };
        let c = kms
            .change_master_key(kind, &NewMasterKey::default())
            .unwrap();
        use std::io::Write;
        writeln!(out, "ACK {} {}", kind.label(), c.new_id).unwrap();
        out.flush().unwrap();
    }
    unreachable!()
}

fn all_keys(kms: &Kms) -> BTreeMap<String, Vec<u8>> {
    let tags: Vec<_> = kms.read().records().map(|r| r.tag.clone()).collect();
    tags.iter().map(|t| (t.to_string(), key(kms, t))).collect()
}

fn ids(dir: &Path) -> (String, String) {
    let h = store::read_header(dir).unwrap();
    (h.hmk_id.to_string(), h.kpk_id.to_string())
}

#[test]
fn sigkill_mid_key_change_leaves_the_old_pair_or_the_new_one() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        changer(Path::new(&dir));
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    store::init(&dir, InitOptions::default()).unwrap();
    let keys = {
        let kms = Kms::open(&dir).unwrap();
        group(&kms, "pool");
        for i in 0..20 {
            record(&kms, "pool", &format!("r{i}"), "active", "");
        }
        all_keys(&kms)
    };
    // Every id ever acknowledged, per key, in order.
    let mut acked: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let (h0, k0) = ids(&dir);
    acked.entry("HMK").or_default().push(h0);
    acked.entry("KPK").or_default().push(k0);
    let mut kills_mid_change = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sigkill_mid_key_change_leaves_the_old_pair_or_the_new_one",
                "--nocapture",
            ])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| {
                    let mut w = l.strip_prefix("ACK ")?.split(' ');
                    Some((w.next()?.to_string(), w.next()?.to_string()))
                })
                .collect::<Vec<_>>()
        });
        // Opening takes some milliseconds, each change a few more: spread the kills over
        // the first changes and the ones after.
        let wait = 5 + (round as u64 * 37) % 120 + rand::random::<u64>() % 20;
        std::thread::sleep(Duration::from_millis(wait));
        child.kill().unwrap();
        child.wait().unwrap();
        let changes = reader.join().unwrap();
        for (kind, id) in &changes {
            acked
                .entry(if kind == "HMK" { "HMK" } else { "KPK" })
                .or_default()
                .push(id.clone());
        }

        // What is on disk now: a key change that was under way is finished or undone by
        // the next open (read-only `verify` first: it must see a consistent pair as it is).
        let pending: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".next."))
            .collect();
        if !pending.is_empty() {
            kills_mid_change += 1;
        }
        ok("verify", verify(&dir));
        let kms = Kms::open(&dir)
            .unwrap_or_else(|e| panic!("round {round}: the keystore does not open: {e}"));
        assert_eq!(all_keys(&kms), keys, "round {round}: a key changed");
        drop(kms);
        let (h, k) = ids(&dir);
        for (label, id) in [("HMK", &h), ("KPK", &k)] {
            let seen = &acked[label];
            let last = seen.last().unwrap();
            // The last acknowledged id, or a newer one not yet acknowledged: never older.
            assert!(
                id == last || !seen.contains(id),
                "round {round}: the {label} went back to an older key"
            );
        }
        let left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".next."))
            .collect();
        assert!(left.is_empty(), "round {round}: left behind: {left:?}");
        acked.get_mut("HMK").unwrap().push(h);
        acked.get_mut("KPK").unwrap().push(k);
    }
    let total: usize = acked.values().map(Vec::len).sum();
    assert!(
        total > 2 * ROUNDS + 20,
        "the changer hardly got to change keys ({total} ids): the test proves little"
    );
    eprintln!("{kills_mid_change} of {ROUNDS} kills left a key change under way");
}
