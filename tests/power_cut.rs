//! Power loss, not just process death: a drill that cuts the power at every write boundary of
//! the storage layer and checks every disk image the cut could leave.
//!
//! A SIGKILL (tests/crash.rs, tests/change_key_crash.rs) cannot find a missing fsync: the page
//! cache survives the process. Here real kmsfs processes (the built `kmsfs` binary, or this
//! test binary re-run as a child that drives `kmsfs::service::Kms`) run under
//! `strace -f -y -xx`, and the system calls that touch the data directory are replayed
//! offline (`support::powercut`) as a sequence of operations: create, write at an offset
//! (offsets of write(2) tracked through lseek and O_APPEND), ftruncate, fsync/fdatasync of a
//! file, rename, unlink, mkdir of the data directory, fsync of the directory or of its parent.
//! The recording is checked against the disk: the files and bytes the model ends with are
//! exactly those the process left.
//!
//! # The model (what a power cut may leave)
//!
//! - Before the recording, everything in the data directory is durable.
//! - A file's bytes are durable up to its last fsync/fdatasync. Its later operations reach the
//!   disk in order, as any prefix of them, and the first one left out, if a write, may be
//!   torn: cut at any byte (the size covers what was written), or the size extended (to the
//!   write's end, or to a 512-byte boundary short of it) while the data only reached the
//!   disk up to the write's start or an earlier 512-byte boundary of the file (the rest
//!   reads as zeros). These are the shapes `is_torn_tail` in src/store/datafile.rs promises
//!   to tolerate. Every file is torn independently of the
//!   others and of the directory.
//! - A directory entry change (create, rename, unlink) is durable once the directory was
//!   fsynced; before that, any prefix of the changes since the last fsync may have reached
//!   the disk (so a rename may become durable early, as on ext4, or not). The data
//!   directory's own entry (`mkdir`) is durable once its parent was fsynced.
//! - Bytes kmsfs never reads are not torn: temporary files (`.KMS_*.tmp`, which the next
//!   open removes unread) hold none or all of their unsynced writes; files whose presence
//!   does not matter either (kmsfs.lock, audit.log) get one of those at random per image,
//!   and their directory entries too.
//!
//! Not covered: writes reordered within a file (a later page of an unsynced write reaching
//! the disk before an earlier one, which leaves zeros followed by data: `is_torn_tail` calls
//! that damage), directory changes reaching the disk out of order, metadata only changes
//! (file modes), a disk that lies about fsync or corrupts synced sectors (that is the damage
//! drill below: it must be reported, not survived).
//!
//! # Crash points and checks
//!
//! A crash point is the moment after each operation (and before the first). At each, the
//! model lists the images: every prefix of the directory's unsynced changes, combined with
//! every choice for each file kmsfs reads: none, some or all of its unsynced operations, the
//! next one torn at the structural cut points (inside and just after each field of the frame
//! prefix, the middle, the last byte, every 512-byte boundary) plus random ones, and every
//! zero extension. All combinations are checked up to 256 per crash point, else a sample of
//! 48 (the output says how many crash points were sampled).
//!
//! The driving process acknowledges each call once it returned with a marker, a write of
//! `POWERCUT-ACK N` to /dev/null that the trace records in order with everything else, and
//! prints what the keystore holds then (`STATE N`: every group and record by name, state and
//! description, every key's bytes, the master key ids); a command's acknowledgement is its
//! exit. At a crash point after acknowledgement N the image must hold state N or, the call
//! under way, state N+1, exactly: nothing acknowledged is lost, nothing is half-applied.
//! Each image is written into a scratch data directory and must pass
//! `kmsfs verify --allow-torn-tail` (the same code in-process for every image) and open
//! read-write as the next start would (cutting off a torn tail, removing temporary files,
//! settling a key change: afterwards KMS_DATA holds exactly its whole frames and no temporary
//! or pending file is left). For a random sample of images the `kmsfs` binary itself runs
//! `verify --allow-torn-tail`, and a strict `verify` after that open. Images are checked
//! once per distinct content. The compaction history opens only 3 of the images that hold
//! the 4,100-frame log (at least one beside a temporary file): each takes seconds to read in
//! an unoptimised build.
//!
//! Histories: appends (groups, records, states, descriptions, renames, deletes, rotation),
//! a start after a power cut left a torn tail, compaction (the log reaches its threshold),
//! the format 1 to 2 rewrite, `kmsfs init` (of a directory it creates), `kmsfs import`,
//! `kmsfs regenerate`, `kmsfs change-key hmk` and `kpk` (either the old key pair or the new
//! one opens, every record key the same). And a damage drill: KMS_DATA cut or altered past
//! the durable point loads the durable state (or, if the frame's prefix is altered, is
//! reported naming KMS_DATA); a durable byte altered fails `kmsfs verify` naming KMS_DATA.
//!
//! # What the drill found
//!
//! - An append torn with zeros from a 512-byte boundary 10 to 15 bytes into its frame (the
//!   sequence number's high bytes, zero, were written before the boundary) was called damage,
//!   and the keystore refused to start: `is_torn_tail` took the zeros to start at the last
//!   byte that is not zero. It now starts them at the next boundary, provided the zeros
//!   before it are the prefix's own or at most 8 bytes of the sealed part (which ends in
//!   zeros by chance). `a_torn_append_whose_written_bytes_end_in_zeros_is_a_torn_tail`
//!   replays both.
//! - `kmsfs init` of a directory it creates never fsynced the parent: a power cut after
//!   `init` reported success could take the directory's name, keystore and all
//!   (`init_survives_every_power_cut`).
//!
//! # Running longer
//!
//! Each test prints what it did (ops, crash points, images, time) and the seed of its random
//! choices. `KMSFS_DRILL_SEED=N` repeats a run; `KMSFS_DRILL_ROUNDS=N` (default 1) multiplies
//! the random cuts, samples, costly images and damage trials; `KMSFS_DRILL_EVERY_BYTE=1` cuts
//! every unsynced write at every byte. For example
//! `KMSFS_DRILL_ROUNDS=10 KMSFS_DRILL_EVERY_BYTE=1 cargo test --test power_cut -- --nocapture`
//! (minutes). strace must be installed (`apt-get install -y strace`): without it the tests
//! fail, they never skip.

mod support;

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use kmsfs::cli::{run_verify, UnlockArgs, VerifyArgs};
use kmsfs::crypto::Passphrase;
use kmsfs::keystore::{Cipher, KeyRecord, Keystore, Period, Rotation, State};
use kmsfs::service::{KeySource, Kms, NewRecord};
use kmsfs::store::{self, Access, Header, InitOptions, Store, StoreError};
use support::cli::{describe, kmsfs, ok, BIN};
use support::keystore::{group, group_tag, name, record};
use support::powercut::{self, write_image, Budget, Image, Model, Op, Recording};

const CHILD_ENV: &str = "KMSFS_POWERCUT_CHILD";
const DATA_ENV: &str = "KMSFS_POWERCUT_DATA";
/// `COMPACT_SLACK` in src/store/mod.rs.
const COMPACT_SLACK: u64 = 4096;

// ---- settings --------------------------------------------------------------------------------

struct Settings {
    seed: u64,
    rounds: usize,
    every_byte: bool,
}

fn settings(test: &str) -> Settings {
    let seed = support::knobs::seed();
    let rounds = support::knobs::env_or("KMSFS_DRILL_ROUNDS", 1usize);
    let every_byte = std::env::var_os("KMSFS_DRILL_EVERY_BYTE").is_some_and(|v| v == "1");
    eprintln!(
        "{test}: seed {seed} (KMSFS_DRILL_SEED={seed} repeats it), rounds {rounds}{}",
        if every_byte { ", every byte cut" } else { "" }
    );
    Settings {
        seed,
        rounds,
        every_byte,
    }
}

fn budget(s: &Settings) -> Budget {
    Budget {
        exhaustive: 256 * s.rounds,
        sample: 48 * s.rounds,
        random_cuts: 2 * s.rounds,
        every_byte: s.every_byte,
    }
}

/// A private scratch directory, on tmpfs where there is one (fsync costs nothing there; the
/// drill never relies on the real disk's durability, only on the recorded calls).
fn scratch() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let base = Path::new("/dev/shm");
    let t = if base.is_dir() {
        tempfile::Builder::new()
            .prefix("kmsfs-powercut")
            .tempdir_in(base)
    } else {
        tempfile::Builder::new().prefix("kmsfs-powercut").tempdir()
    }
    .unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let root = t.path().canonicalize().unwrap();
    (t, root)
}

// ---- what a keystore holds -------------------------------------------------------------------

/// Everything a keystore holds that a change can touch, one line each, sorted: the master key
/// ids, every group and every record with its state, description and key bytes.
fn summarize(header: &Header, ks: &Keystore, mut key: impl FnMut(&KeyRecord) -> Vec<u8>) -> String {
    let mut lines = vec![format!("HMK {} KPK {}", header.hmk_id, header.kpk_id)];
    for g in ks.groups() {
        lines.push(format!(
            "group {:?} cipher {} rotation {:?} description {:?}",
            g.name.to_string(),
            g.cipher,
            g.rotation,
            g.description
        ));
    }
    for r in ks.records() {
        let g = ks.group(&r.group).expect("a record's group exists");
        lines.push(format!(
            "record {:?}/{:?} tag {} state {} description {:?} key {}",
            g.name.to_string(),
            r.name.to_string(),
            r.tag,
            r.state.as_str(),
            r.description,
            hex::encode(key(r))
        ));
    }
    lines.sort();
    lines.join("\n")
}

/// What the service holds, as the child reports it.
fn summarize_kms(kms: &Kms) -> String {
    let header = store::read_header(kms.data_dir()).unwrap();
    let ks: Keystore = kms.read().clone();
    summarize(&header, &ks, |r| {
        kms.unwrap_key(&r.tag).unwrap().expose().to_vec()
    })
}

// ---- the child: drives the keystore through the library ----------------------------------------

/// Acknowledges each call: the marker in the trace, then the state on stdout.
struct Acker {
    marker: File,
    n: u64,
}

impl Acker {
    fn new() -> Acker {
        let marker = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap();
        Acker { marker, n: 0 }
    }

    fn ack(&mut self, kms: &Kms) {
        let mark = format!("POWERCUT-ACK {}\n", self.n);
        self.marker.write_all(mark.as_bytes()).unwrap();
        let state = summarize_kms(kms);
        println!(
            "STATE {} {}",
            self.n,
            serde_json::to_string(&state).unwrap()
        );
        std::io::stdout().flush().unwrap();
        self.n += 1;
    }
}

/// If this process is a child (the environment says which history), runs it and exits.
fn child_entry() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(DATA_ENV).unwrap());
    let kms = Kms::open(&dir).unwrap();
    let mut a = Acker::new();
    a.ack(&kms);
    match mode.as_str() {
        "appends" => appends(&kms, &mut a),
        "short" => {
            let g = kms.create_group(name("pool")).unwrap();
            a.ack(&kms);
            for i in 0..4 {
                let mut req = NewRecord::prelive(name(&format!("k{i}")));
                req.description = "d".repeat(200 + 300 * i);
                let t = kms.create_record(&g, req).unwrap();
                a.ack(&kms);
                kms.set_state(&t, State::Active).unwrap();
                a.ack(&kms);
            }
        }
        "reopen" => {
            let g = group_tag(&kms, "pool");
            kms.describe_group(&g, "after the power cut").unwrap();
            a.ack(&kms);
            record(&kms, "pool", "after", "prelive", "");
            a.ack(&kms);
        }
        "compaction" => {
            let g = group_tag(&kms, "pool");
            let tags: Vec<_> = kms.read().records().map(|r| r.tag.clone()).collect();
            for (i, t) in tags.iter().cycle().take(3).enumerate() {
                kms.describe_record(t, &format!("traced {i}")).unwrap();
                a.ack(&kms);
            }
            kms.describe_group(&g, "after compaction").unwrap();
            a.ack(&kms);
        }
        "upgrade" => {
            let g = group_tag(&kms, "pool");
            let rotation = Rotation {
                period: Some(Period::from_secs(90 * 86_400).unwrap()),
                retire_after: None,
            };
            kms.set_rotation(&g, rotation).unwrap();
            a.ack(&kms);
            kms.describe_group(&g, "rotated every 90 days").unwrap();
            a.ack(&kms);
        }
        other => panic!("no child history {other}"),
    }
    std::process::exit(0);
}

/// Every kind of change, descriptions of varying length so that frames end on both sides of
/// 512-byte boundaries.
fn appends(kms: &Kms, a: &mut Acker) {
    let pool = kms.create_group(name("pool")).unwrap();
    a.ack(kms);
    let spare = kms.create_group(name("spare")).unwrap();
    a.ack(kms);
    kms.describe_group(&pool, &"nightly backups ".repeat(40))
        .unwrap();
    a.ack(kms);
    kms.set_group_cipher(&spare, "AES_128".parse::<Cipher>().unwrap())
        .unwrap();
    a.ack(kms);
    let mut tags = Vec::new();
    for i in 0..5 {
        let mut req = NewRecord::prelive(name(&format!("k{i}")));
        req.description = "x".repeat(i * 350);
        tags.push(kms.create_record(&pool, req).unwrap());
        a.ack(kms);
    }
    kms.set_state(&tags[0], State::Active).unwrap();
    a.ack(kms);
    // Activating another demotes k0 in the same change.
    kms.set_state(&tags[1], State::Active).unwrap();
    a.ack(kms);
    kms.describe_record(&tags[0], &"rotated out ".repeat(100))
        .unwrap();
    a.ack(kms);
    kms.set_state(&tags[0], State::Deprecated).unwrap();
    a.ack(kms);
    kms.set_state(&tags[0], State::Terminated).unwrap();
    a.ack(kms);
    kms.delete_record(&tags[0]).unwrap();
    a.ack(kms);
    kms.rename_record(&tags[2], &pool, name("k2-renamed"))
        .unwrap();
    a.ack(kms);
    kms.delete_record(&tags[3]).unwrap();
    a.ack(kms);
    let mut req = NewRecord::prelive(name("derived"));
    req.key = KeySource::Passphrase {
        passphrase: Passphrase::new("a record passphrase".into()),
        salt: None,
    };
    kms.create_record(&spare, req).unwrap();
    a.ack(kms);
    let mut req = NewRecord::prelive(name("born-active"));
    req.state = State::Active;
    req.description = "y".repeat(1500);
    kms.create_record(&pool, req).unwrap();
    a.ack(kms);
    let rotation = Rotation {
        period: Some(Period::from_secs(30 * 86_400).unwrap()),
        retire_after: Some(Period::from_secs(60 * 86_400).unwrap()),
    };
    kms.set_rotation(&pool, rotation).unwrap();
    a.ack(kms);
    let empty = kms.create_group(name("empty")).unwrap();
    a.ack(kms);
    kms.rename_group(&empty, name("emptied")).unwrap();
    a.ack(kms);
    kms.delete_group(&empty).unwrap();
    a.ack(kms);
}

/// Runs `history` of this test binary as a traced child on `data`.
fn record_child(
    test: &str,
    history: &str,
    data: &Path,
    trace: &Path,
) -> (Recording, Vec<Option<String>>) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, history)
        .env(DATA_ENV, data);
    let rec = powercut::record(&cmd, data, trace);
    assert!(
        rec.output.status.success(),
        "{}",
        describe(&format!("child {history}"), &rec.output)
    );
    let mut states = Vec::new();
    for line in String::from_utf8_lossy(&rec.output.stdout).lines() {
        // libtest may have printed `test NAME ... ` on the same line first.
        let Some(at) = line.find("STATE ") else {
            continue;
        };
        let rest = &line[at + "STATE ".len()..];
        let (n, json) = rest.split_once(' ').unwrap();
        assert_eq!(n.parse::<usize>().unwrap(), states.len());
        states.push(Some(serde_json::from_str::<String>(json).unwrap()));
    }
    let acks = rec.count(|op| matches!(op, Op::Ack(_)));
    assert_eq!(acks, states.len(), "every acknowledgement is in the trace");
    (rec, states)
}

/// Runs a `kmsfs` command traced on `data`; its acknowledgement is its exit.
fn record_command(args: &[&std::ffi::OsStr], data: &Path, trace: &Path) -> Recording {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    let mut rec = powercut::record(&cmd, data, trace);
    assert!(
        rec.output.status.success(),
        "{}",
        describe("traced kmsfs", &rec.output)
    );
    rec.ack_at_start(0);
    rec.ack_at_end(1);
    rec
}

// ---- checking images ---------------------------------------------------------------------------

/// What an image loads as: None when it holds no keystore (KMS_DATA absent), else its summary;
/// Err: why it does not verify or open.
type Outcome = Result<Option<String>, String>;

fn leftovers(data: &Path) -> Vec<String> {
    std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp") || n.contains(".next."))
        .collect()
}

/// Record keys already unwrapped, by KPK id, tag and wrapped bytes: one unwrap per key, not
/// per image (each unwrap in an unoptimised build costs a 32 KiB stack wipe).
type KeyCache = HashMap<(String, String, Vec<u8>), Vec<u8>>;

/// Verifies and opens the data directory `data` as the next start after the power cut would:
/// `kmsfs verify --allow-torn-tail` (in-process), then a read-write open (which cuts off a
/// torn tail, removes temporary files, settles a key change), after which the file must hold
/// exactly the whole frames and no temporary or pending file may be left.
/// `hmk_pass`: the HMK passphrase file, used when the image has no KMS_HMKF.
fn open_image(data: &Path, hmk_pass: Option<&Path>, keys: &mut KeyCache) -> Outcome {
    if !data.join(store::DATA_FILE).exists() {
        // No keystore: opening must say exactly that, never find half of one.
        return match Store::open(data, Access::ReadOnly) {
            Err(StoreError::NoKeystore(_)) => Ok(None),
            Err(e) => Err(format!("no KMS_DATA, but opening says: {e}")),
            Ok(_) => Err("no KMS_DATA, but it opens".into()),
        };
    }
    let unlock_args = unlock_args(data, hmk_pass);
    let needs_pass = unlock_args.hmk_passphrase_file.is_some();
    run_verify(&VerifyArgs {
        data_dir: data.to_path_buf(),
        allow_torn_tail: true,
        unlock: unlock_args.clone(),
    })
    .map_err(|e| format!("kmsfs verify --allow-torn-tail: {}", e.0))?;
    let unlock = unlock_args.unlock(data).map_err(|e| e.0)?;
    let len = std::fs::metadata(data.join(store::DATA_FILE))
        .unwrap()
        .len();
    let (summary, report) = {
        let (store, ks, kpk, report) = Store::open_with(data, Access::ReadWrite, &unlock)
            .map_err(|e| format!("opening read-write: {e}"))?;
        let kpk_id = store.header().kpk_id.to_string();
        let s = summarize(store.header(), &ks, |r| {
            let k = (kpk_id.clone(), r.tag.to_string(), r.wrapped_key.0.clone());
            keys.entry(k)
                .or_insert_with(|| {
                    let key = kpk.unwrap(&r.wrapped_key.0, r.tag.as_str()).unwrap();
                    key.expose().to_vec()
                })
                .clone()
        });
        (s, report)
    };
    let after = std::fs::metadata(data.join(store::DATA_FILE))
        .unwrap()
        .len();
    if after != len - report.torn_tail {
        return Err(format!(
            "the next open left {after} bytes of KMS_DATA, not the {} of its whole frames",
            len - report.torn_tail
        ));
    }
    let left = leftovers(data);
    if !left.is_empty() {
        return Err(format!("after the next open, left behind: {left:?}"));
    }
    Ok(Some(if needs_pass {
        format!("(opened with the HMK passphrase)\n{summary}")
    } else {
        summary
    }))
}

/// What opening `data` needs: the HMK passphrase file when there is one and no KMS_HMKF.
fn unlock_args(data: &Path, hmk_pass: Option<&Path>) -> UnlockArgs {
    let needs_pass = !data.join("KMS_HMKF").exists();
    UnlockArgs {
        hmk_passphrase_file: hmk_pass.filter(|_| needs_pass).map(Path::to_path_buf),
        ..UnlockArgs::default()
    }
}

/// Opens images once per distinct content, in a scratch directory of its own, and keeps a
/// random sample of them for the real binary.
struct Checker {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    hmk_pass: Option<PathBuf>,
    memo: HashMap<[u8; 32], Outcome>,
    keys: KeyCache,
    sample: Vec<Image>,
    sample_size: usize,
    with_keystore: usize,
}

impl Checker {
    fn new(hmk_pass: Option<PathBuf>, sample_size: usize) -> Checker {
        let (tmp, root) = scratch();
        Checker {
            _tmp: tmp,
            root,
            hmk_pass,
            memo: HashMap::new(),
            keys: HashMap::new(),
            sample: Vec::new(),
            sample_size,
            with_keystore: 0,
        }
    }

    fn check(&mut self, img: &Image, rng: &mut StdRng) -> Outcome {
        let d = img.digest();
        if let Some(o) = self.memo.get(&d) {
            return o.clone();
        }
        let data = write_image(img, &self.root);
        let outcome = open_image(&data, self.hmk_pass.as_deref(), &mut self.keys);
        let costly = img
            .file(store::DATA_FILE)
            .is_some_and(|b| b.len() > COSTLY_BYTES);
        if let (Ok(Some(_)), false) = (&outcome, costly) {
            // Reservoir sampling: every image with a keystore equally likely (but those that
            // take seconds to read).
            self.with_keystore += 1;
            if self.sample.len() < self.sample_size {
                self.sample.push(img.clone());
            } else {
                let j = rng.gen_range(0..self.with_keystore);
                if j < self.sample_size {
                    self.sample[j] = img.clone();
                }
            }
        }
        self.memo.insert(d, outcome.clone());
        outcome
    }

    /// The real binary on the sampled images: `kmsfs verify --allow-torn-tail`, then, after
    /// the read-write open the next start makes, a strict `kmsfs verify`.
    fn verify_sample_with_binary(&self) -> usize {
        for img in &self.sample {
            let data = write_image(img, &self.root);
            let args = unlock_args(&data, self.hmk_pass.as_deref());
            let mut argv: Vec<std::ffi::OsString> =
                vec!["verify".into(), "--data-dir".into(), data.clone().into()];
            if let Some(p) = &args.hmk_passphrase_file {
                argv.push("--hmk-passphrase-file".into());
                argv.push(p.clone().into());
            }
            let mut torn = argv.clone();
            torn.push("--allow-torn-tail".into());
            let out = kmsfs(&torn);
            assert!(
                out.status.success(),
                "{}\nimage: {}",
                describe("kmsfs verify --allow-torn-tail", &out),
                img.what
            );
            let unlock = args.unlock(&data).unwrap();
            drop(Store::open_with(&data, Access::ReadWrite, &unlock).unwrap());
            let out = kmsfs(&argv);
            assert!(
                out.status.success(),
                "{}\nimage: {}",
                describe("kmsfs verify, after the next open", &out),
                img.what
            );
        }
        self.sample.len()
    }

    /// What the directory `dir` holds, opened as `open_image` opens it (on a copy).
    fn summary_of(&mut self, dir: &Path) -> Option<String> {
        let files = powercut::read_dir_files(dir).map(|files| {
            files
                .into_iter()
                .map(|(n, b)| (n, std::sync::Arc::new(b)))
                .collect()
        });
        let img = Image {
            files,
            what: format!("a copy of {}", dir.display()),
        };
        let data = write_image(&img, &self.root);
        open_image(&data, self.hmk_pass.as_deref(), &mut self.keys)
            .unwrap_or_else(|e| panic!("{} does not open: {e}", dir.display()))
    }
}

// ---- the drill ---------------------------------------------------------------------------------

/// One recorded history and what each acknowledgement promised.
struct History<'a> {
    name: String,
    rec: &'a Recording,
    /// State N: what the keystore holds once call N is acknowledged.
    states: &'a [Option<String>],
    budget: Budget,
    /// At most this many images with a KMS_DATA over `COSTLY_BYTES` (None: no bound).
    costly: Option<usize>,
}

/// Images whose KMS_DATA is larger than this (the log just below its compaction threshold)
/// take seconds each to open in an unoptimised build: `History::costly` bounds them.
const COSTLY_BYTES: usize = 256 * 1024;

/// Cuts the power after every operation of the history and checks every image. Fails with
/// the first losses found.
fn drill(h: &History<'_>, checker: &mut Checker, rng: &mut StdRng) {
    let started = Instant::now();
    let mut model = Model::new(h.rec);
    let mut last_ack: Option<u64> = None;
    let (mut images, mut failures) = (0usize, Vec::new());
    let opened_before = checker.memo.len();
    let steps = &h.rec.steps;
    // Costly images: one per crash point, at random, checked afterwards up to the bound.
    let mut deferred: Vec<(usize, Option<u64>, Image)> = Vec::new();
    let mut costly_seen = 0usize;
    let mut sampled_points = 0usize;
    for point in 0..=steps.len() {
        if point > 0 {
            let op = &steps[point - 1].op;
            model.apply(op);
            if let Op::Ack(n) = op {
                last_ack = Some(*n);
            }
        }
        let mut here: Vec<Image> = Vec::new();
        let (all, sampled) = model.images(&h.budget, rng);
        sampled_points += sampled as usize;
        for img in all {
            let large = img
                .file(store::DATA_FILE)
                .is_some_and(|b| b.len() > COSTLY_BYTES);
            if large && h.costly.is_some() {
                costly_seen += 1;
                here.push(img);
                continue;
            }
            images += 1;
            check_at(h, checker, rng, point, last_ack, &img, &mut failures);
        }
        if !here.is_empty() {
            let pick = here.swap_remove(rng.gen_range(0..here.len()));
            deferred.push((point, last_ack, pick));
        }
    }
    let mut costly_checked = 0;
    if let Some(limit) = h.costly {
        // The first with a temporary file beside the old KMS_DATA if there is one (a rewrite
        // under way), then any.
        let temp = |img: &Image| img.files.iter().flatten().any(|(n, _)| n.ends_with(".tmp"));
        deferred.sort_by_key(|(_, _, img)| !temp(img));
        let with_temp = deferred.iter().filter(|(_, _, img)| temp(img)).count();
        while costly_checked < limit && !deferred.is_empty() {
            let i = match (costly_checked, with_temp) {
                (0, n) if n > 0 => rng.gen_range(0..n),
                _ => rng.gen_range(0..deferred.len()),
            };
            let (point, ack, img) = deferred.swap_remove(i);
            images += 1;
            costly_checked += 1;
            check_at(h, checker, rng, point, ack, &img, &mut failures);
        }
    }
    let ops = steps.iter().filter(|s| !matches!(s.op, Op::Ack(_))).count();
    let kinds = |f: fn(&Op) -> bool| h.rec.count(f);
    let costly = match h.costly {
        None => String::new(),
        Some(_) => format!(
            " (of the {costly_seen} images holding a KMS_DATA over {} KiB, {costly_checked} at random crash points)",
            COSTLY_BYTES / 1024
        ),
    };
    eprintln!(
        "{}: {} system calls traced, {ops} ops ({} writes, {} truncates, {} file syncs, {} creates, {} renames, {} unlinks, {} directory syncs, {} mkdirs, {} parent syncs), {} acknowledgements, {} crash points ({sampled_points} of them sampled: over {} combinations), {images} images checked{costly}, {} distinct opened, {} failures, {:.1}s",
        h.name,
        h.rec.syscalls,
        kinds(|o| matches!(o, Op::Write { .. })),
        kinds(|o| matches!(o, Op::Truncate { .. })),
        kinds(|o| matches!(o, Op::Sync { .. })),
        kinds(|o| matches!(o, Op::Create { .. })),
        kinds(|o| matches!(o, Op::Rename { .. })),
        kinds(|o| matches!(o, Op::Unlink { .. })),
        kinds(|o| matches!(o, Op::SyncDir)),
        kinds(|o| matches!(o, Op::MkdirData)),
        kinds(|o| matches!(o, Op::SyncParent)),
        kinds(|o| matches!(o, Op::Ack(_))),
        steps.len() + 1,
        h.budget.exhaustive,
        checker.memo.len() - opened_before,
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        for f in failures.iter().take(5) {
            eprintln!("LOST OR BROKEN: {f}\n");
        }
        panic!(
            "{}: {} power-cut images do not load as an acknowledged state (the first 5 are above)",
            h.name,
            failures.len()
        );
    }
}

/// Checks one image of crash point `point` (after `steps[point - 1]`) against what the
/// acknowledgements so far promise: state N after acknowledgement N, or state N+1 (the call
/// under way); before any, state 0.
fn check_at(
    h: &History<'_>,
    checker: &mut Checker,
    rng: &mut StdRng,
    point: usize,
    last_ack: Option<u64>,
    img: &Image,
    failures: &mut Vec<String>,
) {
    let allowed: &[Option<String>] = match last_ack {
        None => &h.states[..1],
        Some(n) => {
            let n = n as usize;
            &h.states[n..(n + 2).min(h.states.len())]
        }
    };
    let outcome = checker.check(img, rng);
    if matches!(&outcome, Ok(s) if allowed.contains(s)) {
        return;
    }
    let steps = &h.rec.steps;
    let after = match point {
        0 => "before the first operation".to_string(),
        p => format!(
            "after op {p} `{}` (trace line {})",
            steps[p - 1].op,
            steps[p - 1].line
        ),
    };
    let got = match &outcome {
        Ok(None) => "no keystore".to_string(),
        Ok(Some(s)) => differences(s, allowed),
        Err(e) => format!("an error: {e}"),
    };
    failures.push(format!(
        "{}: power cut {after}, last acknowledged call {last_ack:?}\n  image: {}\n  loads as {got}",
        h.name, img.what
    ));
}

/// How the summary `got` differs from each allowed state, line by line.
fn differences(got: &str, allowed: &[Option<String>]) -> String {
    let mut out = String::from("a keystore that is none of the acknowledged states:");
    for (i, want) in allowed.iter().enumerate() {
        let Some(want) = want else {
            out.push_str(&format!("\n    vs state {i}: (no keystore)"));
            continue;
        };
        let w: Vec<&str> = want.lines().collect();
        let g: Vec<&str> = got.lines().collect();
        let short = |l: &str| l.chars().take(160).collect::<String>();
        for l in g.iter().filter(|l| !w.contains(l)) {
            out.push_str(&format!("\n    vs state {i}: extra   {}", short(l)));
        }
        for l in w.iter().filter(|l| !g.contains(l)) {
            out.push_str(&format!("\n    vs state {i}: missing {}", short(l)));
        }
    }
    out
}

/// The ops between two acknowledgements include a rename over KMS_DATA (a rewrite).
fn rewrites_between(rec: &Recording, from: u64, to: u64) -> usize {
    let mut inside = false;
    let mut n = 0;
    for s in &rec.steps {
        match &s.op {
            Op::Ack(a) if *a == from => inside = true,
            Op::Ack(a) if *a == to => inside = false,
            Op::Rename { to, .. } if inside && to == store::DATA_FILE => n += 1,
            _ => {}
        }
    }
    n
}

fn finish(test: &str, checker: &Checker, started: Instant) {
    let n = checker.verify_sample_with_binary();
    eprintln!(
        "{test}: {} distinct images opened, {n} of them also through the kmsfs binary; {:.1}s in all",
        checker.memo.len(),
        started.elapsed().as_secs_f64()
    );
}

// ---- the tests ---------------------------------------------------------------------------------

const APPENDS: &str = "appends_and_a_start_after_a_torn_append_survive_every_power_cut";

#[test]
fn appends_and_a_start_after_a_torn_append_survive_every_power_cut() {
    child_entry();
    powercut::require_strace();
    let started = Instant::now();
    let s = settings(APPENDS);
    let mut rng = StdRng::seed_from_u64(s.seed);
    let (_tmp, root) = scratch();
    let data = root.join("data");
    store::init(&data, InitOptions::default()).unwrap();
    let mut checker = Checker::new(None, 12);

    let (rec, states) = record_child(APPENDS, "appends", &data, &root.join("appends.trace"));
    assert_eq!(
        states.last().unwrap(),
        &checker.summary_of(&data),
        "the child's last state is on disk"
    );
    let h = History {
        name: "appends".into(),
        rec: &rec,
        states: &states,
        budget: budget(&s),
        costly: None,
    };
    drill(&h, &mut checker, &mut rng);

    // A start after a power cut cut the last append short: the next open cuts the tail off
    // (ftruncate, fsync) before anything is appended. Build that directory from the model:
    // the last append half written.
    let mut model = Model::new(&rec);
    let mut torn = None;
    for step in &rec.steps {
        model.apply(&step.op);
        if let Some((durable, current)) = model.lengths(store::DATA_FILE) {
            if current > durable {
                let bytes = model.current(store::DATA_FILE).unwrap();
                let cut = durable + (current - durable) / 2;
                torn = Some(model.durable_image_with(store::DATA_FILE, bytes[..cut].to_vec()));
            }
        }
    }
    let torn = torn.expect("appends leave KMS_DATA unsynced at some point");
    std::fs::create_dir(root.join("torn")).unwrap();
    let data2 = write_image(&torn, &root.join("torn"));
    let (rec2, states2) = record_child(APPENDS, "reopen", &data2, &root.join("reopen.trace"));
    assert!(
        rec2.steps
            .iter()
            .take_while(|s| !matches!(s.op, Op::Ack(0)))
            .any(|s| matches!(s.op, Op::Truncate { len, .. } if len > 0)),
        "the start cut the torn tail off (the lock file's truncation is to 0)"
    );
    assert_eq!(
        states2[0],
        states[states.len() - 2],
        "the torn append is not applied"
    );
    let h = History {
        name: "start after a torn append".into(),
        rec: &rec2,
        states: &states2,
        budget: budget(&s),
        costly: None,
    };
    drill(&h, &mut checker, &mut rng);
    finish(APPENDS, &checker, started);
}

/// Found by the drill (appends): an append whose size reached the disk while its data did
/// only up to a 512-byte boundary 10 to 15 bytes into the frame. The bytes written end in the
/// zero high bytes of the sequence number, so the zeros start before the boundary; kmsfs
/// called that damage ("frame N fails authentication") and refused to start, where the
/// README promises to discard it as a torn tail. The same holds where the sealed part
/// written before a boundary ends in zero bytes by chance (up to 8 of them: 9 have odds of
/// 2^-72, and more are a frame zeroed from inside a block, which stays damage).
#[test]
fn a_torn_append_whose_written_bytes_end_in_zeros_is_a_torn_tail() {
    let started = Instant::now();
    let (_tmp, root) = scratch();
    let data = root.join("data");
    store::init(&data, InitOptions::default()).unwrap();
    let kms = Kms::open(&data).unwrap();
    let g = group(&kms, "pool");
    let len = || {
        std::fs::metadata(data.join(store::DATA_FILE))
            .unwrap()
            .len() as usize
    };
    let mut checker = Checker::new(None, 0);
    let mut rng = StdRng::seed_from_u64(0);
    // The directory as it is, KMS_DATA replaced by `bytes`.
    let image = |bytes: Vec<u8>, what: String| {
        let mut files: std::collections::BTreeMap<_, _> = powercut::read_dir_files(&data)
            .unwrap()
            .into_iter()
            .map(|(n, b)| (n, std::sync::Arc::new(b)))
            .collect();
        files.insert(store::DATA_FILE.to_string(), std::sync::Arc::new(bytes));
        Image {
            files: Some(files),
            what,
        }
    };
    // A description's frame grows by one byte per byte of text.
    let l0 = len();
    kms.describe_group(&g, "a").unwrap();
    let base = len() - l0 - 1;
    let mut checked = 0;
    for k in 10..16usize {
        // The next frame is made to start k bytes before a 512-byte boundary.
        let c = if k % 2 == 0 { "p" } else { "q" };
        let d = match (512 - (len() + base + k) % 512) % 512 {
            0 => 512,
            d => d,
        };
        kms.describe_group(&g, &c.repeat(d)).unwrap();
        let start = len();
        if (start + k) % 512 != 0 {
            continue; // a timestamp grew a digit: try the next k
        }
        let want = checker.summary_of(&data);
        kms.describe_group(&g, &format!("cut {k} bytes in"))
            .unwrap();
        let mut bytes = std::fs::read(data.join(store::DATA_FILE)).unwrap();
        assert_eq!(bytes[start + k - 1], 0, "the sequence number's high bytes");
        bytes[start + k..].fill(0);
        let img = image(
            bytes,
            format!("zeros from byte {k} of the last frame (a boundary) on"),
        );
        assert_eq!(checker.check(&img, &mut rng), Ok(want), "{}", img.what);
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} offsets could be placed");
    // The sealed part ending in zeros before a boundary of a long frame.
    let want = checker.summary_of(&data);
    let start = len();
    kms.describe_group(&g, &"s".repeat(3000)).unwrap();
    let bytes = std::fs::read(data.join(store::DATA_FILE)).unwrap();
    let boundary = (start + 64).next_multiple_of(512);
    let boundary = (boundary..bytes.len() - 1)
        .step_by(512)
        .find(|&b| bytes[b - 10] != 0)
        .expect("a boundary after a byte that is not zero");
    for j in 1..=9 {
        let mut b = bytes.clone();
        b[boundary - j..].fill(0);
        let what = format!("zeros from {j} bytes before a boundary inside the sealed part");
        let outcome = checker.check(&image(b, what.clone()), &mut rng);
        if j <= 8 {
            assert_eq!(outcome, Ok(want.clone()), "{what}");
            checked += 1;
        } else {
            assert!(
                matches!(&outcome, Err(e) if e.contains("KMS_DATA")),
                "{what}: {outcome:?}"
            );
        }
    }
    eprintln!(
        "torn appends whose written bytes end in zeros before a block boundary: {checked} images load the state before them, and 9 zeros of the sealed part are damage; {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

const COMPACTION: &str = "compaction_survives_every_power_cut";

#[test]
fn compaction_survives_every_power_cut() {
    child_entry();
    powercut::require_strace();
    let started = Instant::now();
    let s = settings(COMPACTION);
    let mut rng = StdRng::seed_from_u64(s.seed);
    let (_tmp, root) = scratch();
    let data = root.join("data");
    store::init(&data, InitOptions::default()).unwrap();
    {
        // Untraced, the log is brought to two changes short of its compaction.
        let kms = Kms::open(&data).unwrap();
        group(&kms, "pool");
        record(&kms, "pool", "k1", "prelive", "");
        record(&kms, "pool", "k2", "prelive", "");
        let (live, frames) = (3, 4); // the snapshot and three changes
        let t = group_tag(&kms, "pool");
        // Compaction follows the change after which the log holds more than live + slack
        // frames: leave it at live + slack - 1, so that the second traced change compacts.
        for i in frames..live + COMPACT_SLACK - 1 {
            kms.describe_group(&t, &format!("untraced {i}")).unwrap();
        }
    }
    eprintln!(
        "{COMPACTION}: the log holds {} frames ({} bytes) before the trace (set up in {:.1}s)",
        3 + COMPACT_SLACK - 1,
        std::fs::metadata(data.join(store::DATA_FILE))
            .unwrap()
            .len(),
        started.elapsed().as_secs_f64()
    );
    let mut checker = Checker::new(None, 8);
    let (rec, states) = record_child(COMPACTION, "compaction", &data, &root.join("c.trace"));
    assert_eq!(
        rewrites_between(&rec, 1, 2),
        1,
        "the second traced change compacts (COMPACT_SLACK is still {COMPACT_SLACK}?)"
    );
    assert_eq!(
        rec.count(|o| matches!(o, Op::Rename { .. })),
        1,
        "one compaction"
    );
    assert_eq!(states.last().unwrap(), &checker.summary_of(&data));
    // Images holding the 4,100-frame log are bounded by `costly` below.
    let h = History {
        name: "compaction".into(),
        rec: &rec,
        states: &states,
        budget: budget(&s),
        costly: Some(3 * s.rounds),
    };
    drill(&h, &mut checker, &mut rng);
    finish(COMPACTION, &checker, started);
}

const UPGRADE: &str = "the_format_1_rewrite_survives_every_power_cut";

#[test]
fn the_format_1_rewrite_survives_every_power_cut() {
    child_entry();
    powercut::require_strace();
    let started = Instant::now();
    let s = settings(UPGRADE);
    let mut rng = StdRng::seed_from_u64(s.seed);
    let (_tmp, root) = scratch();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1/data");
    let img = Image {
        files: powercut::read_dir_files(&golden).map(|f| {
            f.into_iter()
                .map(|(n, b)| (n, std::sync::Arc::new(b)))
                .collect()
        }),
        what: "tests/golden/v1".into(),
    };
    let data = write_image(&img, &root);
    assert_eq!(store::read_format(&data).unwrap(), 1);
    let mut checker = Checker::new(None, 8);
    let (rec, states) = record_child(UPGRADE, "upgrade", &data, &root.join("u.trace"));
    assert_eq!(store::read_format(&data).unwrap(), store::FORMAT_VERSION);
    assert_eq!(
        rewrites_between(&rec, 0, 1),
        1,
        "the rotation rewrote the file first"
    );
    assert_eq!(states.last().unwrap(), &checker.summary_of(&data));
    let h = History {
        name: "format 1 -> 2 rewrite".into(),
        rec: &rec,
        states: &states,
        budget: budget(&s),
        costly: None,
    };
    drill(&h, &mut checker, &mut rng);
    finish(UPGRADE, &checker, started);
}

#[test]
fn init_survives_every_power_cut() {
    let test = "init_survives_every_power_cut";
    powercut::require_strace();
    let started = Instant::now();
    let s = settings(test);
    let mut rng = StdRng::seed_from_u64(s.seed);
    let (_tmp, root) = scratch();
    let mut checker = Checker::new(None, 8);
    // The data directory does not exist yet: init makes it.
    let data = root.join("data");
    let rec = record_command(
        &["init".as_ref(), "--data-dir".as_ref(), data.as_os_str()],
        &data,
        &root.join("init.trace"),
    );
    assert_eq!(rec.count(|o| matches!(o, Op::MkdirData)), 1);
    let states = [None, checker.summary_of(&data)];
    assert!(states[1].is_some());
    let h = History {
        name: "kmsfs init".into(),
        rec: &rec,
        states: &states,
        budget: budget(&s),
        costly: None,
    };
    drill(&h, &mut checker, &mut rng);
    finish(test, &checker, started);
}

#[test]
fn import_survives_every_power_cut() {
    let test = "import_survives_every_power_cut";
    powercut::require_strace();
    let started = Instant::now();
    let s = settings(test);
    let mut rng = StdRng::seed_from_u64(s.seed);
    let (_tmp, root) = scratch();
    let pass = root.join("pass");
    std::fs::write(&pass, "an export passphrase\n").unwrap();
    let src = root.join("src");
    store::init(&src, InitOptions::default()).unwrap();
    {
        let kms = Kms::open(&src).unwrap();
        group(&kms, "exported");
        record(&kms, "exported", "a", "active", "the active one");
        record(&kms, "exported", "b", "inactive", &"z".repeat(900));
        record(&kms, "exported", "c", "prelive", "");
    }
    let container = root.join("export.kmsx");
    ok(
        "kmsfs export",
        kmsfs([
            "export".as_ref(),
            "--data-dir".as_ref(),
            src.as_os_str(),
            "--out".as_ref(),
            container.as_os_str(),
            "--passphrase-file".as_ref(),
            pass.as_os_str(),
        ]),
    );
    let data = root.join("data");
    store::init(&data, InitOptions::default()).unwrap();
    {
        let kms = Kms::open(&data).unwrap();
        group(&kms, "local");
        record(&kms, "local", "mine", "active", "");
    }
    let mut checker = Checker::new(None, 8);
    let before = checker.summary_of(&data);
    let rec = record_command(
        &[
            "import".as_ref(),
            "--data-dir".as_ref(),
            data.as_os_str(),
            "--passphrase-file".as_ref(),
            pass.as_os_str(),
            container.as_os_str(),
        ],
        &data,
        &root.join("import.trace"),
    );
    let after = checker.summary_of(&data);
    assert_ne!(before, after, "the import changed the keystore");
    assert!(after.as_ref().unwrap().contains("state inactive"));
    let states = [before, after];
    let h = History {
        name: "kmsfs import".into(),
        rec: &rec,
        states: &states,
        budget: budget(&s),
        costly: None,
    };
    drill(&h, &mut checker, &mut rng);
    finish(test, &checker, started);
}

#[test]
fn regenerate_survives_every_power_cut() {
    let test = "regenerate_survives_every_power_cut";
    powercut::require_strace();
    let started = Instant::now();
    let s = settings(test);
    let mut rng = StdRng::seed_from_u64(s.seed);
    let (_tmp, root) = scratch();
    let pass = root.join("hmk.pass");
    std::fs::write(&pass, "the HMK passphrase").unwrap();
    let data = root.join("data");
    store::init(
        &data,
        InitOptions {
            hmk_passphrase: Some(Passphrase::new("the HMK passphrase".into())),
            kpk_passphrase: None,
        },
    )
    .unwrap();
    {
        let kms = Kms::open(&data).unwrap();
        group(&kms, "pool");
        record(&kms, "pool", "k", "active", "");
    }
    // KMS_HMKF lost: regenerate rebuilds it from the passphrase.
    std::fs::remove_file(data.join("KMS_HMKF")).unwrap();
    let mut checker = Checker::new(Some(pass.clone()), 4);
    let before = checker.summary_of(&data);
    let rec = record_command(
        &[
            "regenerate".as_ref(),
            "--data-dir".as_ref(),
            data.as_os_str(),
            "--hmk-passphrase-file".as_ref(),
            pass.as_os_str(),
        ],
        &data,
        &root.join("regenerate.trace"),
    );
    let after = checker.summary_of(&data);
    assert!(before
        .as_ref()
        .unwrap()
        .starts_with("(opened with the HMK passphrase)"));
    assert!(!after.as_ref().unwrap().starts_with("(opened with"));
    let states = [before, after];
    let h = History {
        name: "kmsfs regenerate".into(),
        rec: &rec,
        states: &states,
        budget: budget(&s),
        costly: None,
    };
    drill(&h, &mut checker, &mut rng);
    finish(test, &checker, started);
}

#[test]
fn master_key_changes_survive_every_power_cut() {
    let test = "master_key_changes_survive_every_power_cut";
    powercut::require_strace();
    let started = Instant::now();
    let s = settings(test);
    let mut rng = StdRng::seed_from_u64(s.seed);
    let (_tmp, root) = scratch();
    let data = root.join("data");
    store::init(&data, InitOptions::default()).unwrap();
    {
        let kms = Kms::open(&data).unwrap();
        group(&kms, "pool");
        record(&kms, "pool", "a", "active", "");
        record(&kms, "pool", "b", "inactive", &"q".repeat(700));
        record(&kms, "pool", "c", "prelive", "");
    }
    let mut checker = Checker::new(None, 8);
    let keys_only = |s: &Option<String>| -> String {
        s.as_ref()
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("HMK "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for key in ["hmk", "kpk"] {
        let before = checker.summary_of(&data);
        let rec = record_command(
            &[
                "change-key".as_ref(),
                "--data-dir".as_ref(),
                data.as_os_str(),
                key.as_ref(),
            ],
            &data,
            &root.join(format!("{key}.trace")),
        );
        let after = checker.summary_of(&data);
        assert_ne!(before, after, "the {key} changed");
        assert_eq!(
            keys_only(&before),
            keys_only(&after),
            "every key stayed the same"
        );
        let states = [before, after];
        let h = History {
            name: format!("kmsfs change-key {key}"),
            rec: &rec,
            states: &states,
            budget: budget(&s),
            costly: None,
        };
        drill(&h, &mut checker, &mut rng);
    }
    finish(test, &checker, started);
}

const DAMAGE: &str = "damage_past_the_durable_point_is_a_torn_tail_and_before_it_is_reported";

#[test]
fn damage_past_the_durable_point_is_a_torn_tail_and_before_it_is_reported() {
    child_entry();
    powercut::require_strace();
    let started = Instant::now();
    let s = settings(DAMAGE);
    let mut rng = StdRng::seed_from_u64(s.seed);
    let (_tmp, root) = scratch();
    let data = root.join("data");
    store::init(&data, InitOptions::default()).unwrap();
    let (rec, states) = record_child(DAMAGE, "short", &data, &root.join("short.trace"));
    let mut checker = Checker::new(None, 0);
    let mut model = Model::new(&rec);
    let mut last_ack = 0usize;
    let (mut cut, mut payload, mut prefix) = (0, 0, 0);
    let expect = |outcome: Outcome, want: &Option<String>, what: &str| {
        assert!(
            matches!(&outcome, Ok(s) if s == want),
            "{what}: loads as {outcome:?}, not as the last durable state"
        );
    };
    for step in &rec.steps {
        model.apply(&step.op);
        if let Op::Ack(n) = step.op {
            last_ack = n as usize;
        }
        let Some((durable, current)) = model.lengths(store::DATA_FILE) else {
            continue;
        };
        if current <= durable {
            continue;
        }
        let bytes = model.current(store::DATA_FILE).unwrap();
        let want = &states[last_ack];
        for _ in 0..4 * s.rounds {
            // Cut anywhere past the durable point: the durable state.
            let o = rng.gen_range(durable..current);
            let img = model.durable_image_with(store::DATA_FILE, bytes[..o].to_vec());
            expect(checker.check(&img, &mut rng), want, &format!("cut at {o}"));
            cut += 1;
            // Altered inside the frame's sealed part, which the cut left incomplete: the same.
            if o > durable + 16 {
                let mut b = bytes[..o].to_vec();
                let at = rng.gen_range(durable + 16..o);
                b[at] ^= rng.gen_range(1..=255u8);
                let img = model.durable_image_with(store::DATA_FILE, b);
                expect(
                    checker.check(&img, &mut rng),
                    want,
                    &format!("cut at {o}, byte {at} altered"),
                );
                payload += 1;
            }
            // Altered in the frame's length, complement or sequence number (where what
            // follows in the tail can contradict it): damage, named.
            let tail = o - durable;
            let candidates: Vec<usize> = (0..16.min(tail))
                .filter(|&i| i >= 4 || tail > i + 4)
                .collect();
            if !candidates.is_empty() {
                let i = candidates[rng.gen_range(0..candidates.len())];
                let mut b = bytes[..o].to_vec();
                let old = b[durable + i];
                let mut new = rng.gen::<u8>();
                while new == old || new == 0 {
                    new = rng.gen::<u8>();
                }
                b[durable + i] = new;
                let img = model.durable_image_with(store::DATA_FILE, b);
                let outcome = checker.check(&img, &mut rng);
                assert!(
                    matches!(&outcome, Err(e) if e.contains("KMS_DATA")),
                    "cut at {o}, prefix byte {i} altered: {outcome:?}"
                );
                prefix += 1;
            }
        }
    }
    assert!(cut > 0 && payload > 0 && prefix > 0);
    // A durable byte altered: `kmsfs verify` fails naming KMS_DATA (the binary for some,
    // the same code in-process for more).
    let final_bytes = std::fs::read(data.join(store::DATA_FILE)).unwrap();
    std::fs::create_dir(root.join("flip")).unwrap();
    let (flips, binary) = (100 * s.rounds, 10 * s.rounds);
    for k in 0..flips {
        let at = rng.gen_range(0..final_bytes.len());
        let mut b = final_bytes.clone();
        b[at] ^= rng.gen_range(1..=255u8);
        let img = model.durable_image_with(store::DATA_FILE, b);
        let dir = write_image(&img, &root.join("flip"));
        if k < binary {
            let out = kmsfs(["verify".as_ref(), "--data-dir".as_ref(), dir.as_os_str()]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && err.contains("KMS_DATA"),
                "byte {at} of {} altered: {}",
                final_bytes.len(),
                describe("kmsfs verify", &out)
            );
        } else {
            let r = run_verify(&VerifyArgs {
                data_dir: dir.clone(),
                allow_torn_tail: false,
                unlock: UnlockArgs::default(),
            });
            assert!(
                matches!(&r, Err(e) if e.0.contains("KMS_DATA")),
                "byte {at} altered: {r:?}"
            );
        }
    }
    eprintln!(
        "{DAMAGE}: {} ops; {cut} cuts and {payload} alterations past the durable point load the durable state, {prefix} altered frame prefixes and {flips} altered durable bytes ({binary} through the binary) are reported naming KMS_DATA; {:.1}s",
        rec.steps.len(),
        started.elapsed().as_secs_f64()
    );
}
