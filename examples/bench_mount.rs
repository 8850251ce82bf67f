//! What the mount costs a client: `ls -l` of a group and of `.by-tag`, reading `record.json`,
//! `state` and `key`, and writing `state`, each against the same operation on an equivalent
//! tree on tmpfs (or, for the durable state write, a raw append + fdatasync in the data
//! directory) measured in the same run, interleaved sample by sample.
//!
//! cargo run --release --example bench_mount -- [SAMPLES]
//!
//! SAMPLES (default 20) is the number of timed listings per row; the small operations take
//! 25 times as many (default 500). Needs root (FUSE without `fusermount`, and a tmpfs mount;
//! it falls back to /dev/shm if that mount fails).
//!
//! The `req/op` column counts the FUSE requests one operation costs, seen by the daemon in a
//! separate pass before the timed one (fuser logs each request at debug level; a counting
//! logger is switched on only for that pass), so the timings carry no logging cost.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kmsfs::keystore::KeyTag;
use kmsfs::service::Kms;

#[path = "support/mod.rs"]
mod support;

const GROUP: &str = "pool";

// ---------------------------------------------------------------------------------------------
// Counting FUSE requests

static COUNTING: AtomicBool = AtomicBool::new(false);
static COUNTS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// Counts fuser's per-request debug lines by opcode while `COUNTING` is on; passes warnings
/// and errors of everything else to stderr.
struct RequestCounter;

impl log::Log for RequestCounter {
    fn enabled(&self, meta: &log::Metadata) -> bool {
        meta.level() <= log::Level::Warn || meta.target().starts_with("fuser::request")
    }

    fn log(&self, record: &log::Record) {
        if record.target().starts_with("fuser::request") {
            if COUNTING.load(Ordering::Relaxed) {
                // "FUSE(  7) ino 0x0000000000000001 LOOKUP parent ..."
                let line = record.args().to_string();
                let op = line
                    .split_once(" ino ")
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .unwrap_or("?")
                    .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                    .to_string();
                *COUNTS.lock().unwrap().entry(op).or_default() += 1;
            }
        } else if record.level() <= log::Level::Warn {
            eprintln!("{} {}: {}", record.level(), record.target(), record.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: RequestCounter = RequestCounter;

/// Runs `op` `reps` times with request counting on; returns requests per operation and the
/// per-opcode breakdown (per operation).
fn count_requests(reps: usize, mut op: impl FnMut()) -> (f64, String) {
    COUNTS.lock().unwrap().clear();
    log::set_max_level(log::LevelFilter::Debug);
    COUNTING.store(true, Ordering::SeqCst);
    for _ in 0..reps {
        op();
    }
    // Let the daemon threads log what they were answering (FORGETs arrive asynchronously).
    std::thread::sleep(Duration::from_millis(50));
    COUNTING.store(false, Ordering::SeqCst);
    log::set_max_level(log::LevelFilter::Warn);
    let counts = std::mem::take(&mut *COUNTS.lock().unwrap());
    let total: u64 = counts.values().sum();
    let breakdown = counts
        .iter()
        .map(|(op, n)| format!("{op} {}", fmt_count(*n as f64 / reps as f64)))
        .collect::<Vec<_>>()
        .join(", ");
    (total as f64 / reps as f64, breakdown)
}

fn fmt_count(x: f64) -> String {
    if x >= 100.0 || x.fract() < 0.05 || x.fract() > 0.95 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

// ---------------------------------------------------------------------------------------------
// Timing

/// Times `a` and `b` alternately, `samples` times each; returns both medians.
fn paired(samples: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (Duration, Duration) {
    let (mut ta, mut tb) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    for _ in 0..samples {
        let t = Instant::now();
        a();
        ta.push(t.elapsed());
        let t = Instant::now();
        b();
        tb.push(t.elapsed());
    }
    (support::median(ta), support::median(tb))
}

fn ls_l(dir: &Path) {
    let status = Command::new("ls")
        .arg("-l")
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .expect("run ls");
    assert!(status.success(), "ls -l {} failed", dir.display());
}

fn read(path: &Path) {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(!bytes.is_empty(), "{} read back empty", path.display());
}

/// Pins this process's threads: the calling (main) thread to `main`, every other thread
/// (the daemons' serving threads: fuser starts them all at mount time) to `others`. Returns
/// how many threads it pinned.
fn pin_threads(main: &[usize], others: &[usize]) -> usize {
    let set_of = |cpus: &[usize]| {
        // SAFETY: cpu_set_t is plain data, for which all zeroes is the empty set; CPU_SET
        // only sets a bit inside it (it checks the index).
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &c in cpus {
            unsafe { libc::CPU_SET(c, &mut set) };
        }
        set
    };
    let (main_set, others_set) = (set_of(main), set_of(others));
    let me = std::process::id() as libc::pid_t;
    let mut pinned = 0;
    for task in fs::read_dir("/proc/self/task").unwrap() {
        let Ok(tid) = task
            .unwrap()
            .file_name()
            .to_string_lossy()
            .parse::<libc::pid_t>()
        else {
            continue;
        };
        let set = if tid == me { &main_set } else { &others_set };
        // SAFETY: set is a valid cpu_set_t of the size given.
        let rc =
            unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), set) };
        let err = std::io::Error::last_os_error();
        assert!(
            rc == 0 || err.raw_os_error() == Some(libc::ESRCH),
            "sched_setaffinity: {err}"
        );
        pinned += usize::from(rc == 0);
    }
    pinned
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn all_cpus() -> Vec<usize> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..n).collect()
}

// ---------------------------------------------------------------------------------------------
// The two trees

/// The same directories and files as the mount (a group of records, each with
/// record.json, state, description and a 0400 key, and `.by-tag` symlinks) on tmpfs. Every
/// record.json holds the bytes of one record.json read from the mount (same size); the
/// group's own dot files and `.active` link are copied from the mount's group directory.
fn build_baseline(
    root: &Path,
    mount_group: &Path,
    records: &[(String, KeyTag)],
    json: &[u8],
    description: &[u8],
) {
    let group = root.join(GROUP);
    let by_tag = root.join(".by-tag");
    fs::create_dir_all(&group).unwrap();
    fs::create_dir_all(&by_tag).unwrap();
    for entry in fs::read_dir(mount_group).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with('.') {
            continue;
        }
        if entry.file_type().unwrap().is_symlink() {
            symlink(fs::read_link(entry.path()).unwrap(), group.join(&name)).unwrap();
        } else {
            // `.create` is write-only: an empty file stands for it.
            fs::write(
                group.join(&name),
                fs::read(entry.path()).unwrap_or_default(),
            )
            .unwrap();
        }
    }
    for (name, tag) in records {
        let dir = group.join(name);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("record.json"), json).unwrap();
        fs::write(dir.join("state"), "prelive\n").unwrap();
        fs::write(dir.join("description"), description).unwrap();
        let key = dir.join("key");
        fs::write(&key, rand::random::<[u8; 32]>()).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o400)).unwrap();
        symlink(format!("../{GROUP}/{name}"), by_tag.join(tag.as_str())).unwrap();
    }
}

/// A tmpfs mounted on a fresh directory, unmounted on drop; or /dev/shm when mounting fails.
struct Baseline {
    dir: PathBuf,
    mounted: bool,
    _shm: Option<tempfile::TempDir>,
}

impl Baseline {
    fn new(work: &Path) -> Baseline {
        let dir = work.join("tmpfs");
        fs::create_dir(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "none"])
            .arg(&dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Baseline {
                dir,
                mounted: true,
                _shm: None,
            };
        }
        eprintln!("mount -t tmpfs failed; using /dev/shm for the baseline");
        let shm = tempfile::Builder::new()
            .prefix("kmsfs-bench-mount")
            .tempdir_in("/dev/shm")
            .unwrap();
        Baseline {
            dir: shm.path().to_path_buf(),
            mounted: false,
            _shm: Some(shm),
        }
    }

    fn describe(&self) -> String {
        if self.mounted {
            format!("tmpfs at {}", self.dir.display())
        } else {
            format!("/dev/shm ({})", self.dir.display())
        }
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        if self.mounted {
            let ok = Command::new("umount")
                .arg(&self.dir)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("could not unmount {}", self.dir.display());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The report

struct Row {
    op: String,
    n: usize,
    kms: Duration,
    base: Duration,
    base_name: &'static str,
    requests: f64,
    breakdown: String,
}

fn fmt_dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else if us >= 1_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.1} µs")
    }
}

fn print_header() {
    println!(
        "| {:<40} | {:>6} | {:>10} | {:>10} | {:>6} | {:>6} | {:<16} |",
        "operation", "N", "kmsfs", "baseline", "ratio", "req/op", "baseline is"
    );
    println!(
        "|{:-<42}|{:->8}|{:->12}|{:->12}|{:->8}|{:->8}|{:-<18}|",
        "", ":", ":", ":", ":", ":", ""
    );
}

fn print_row(r: &Row) {
    println!(
        "| {:<40} | {:>6} | {:>10} | {:>10} | {:>6.2} | {:>6} | {:<16} |",
        r.op,
        format!("{}", r.n),
        fmt_dur(r.kms),
        fmt_dur(r.base),
        r.kms.as_secs_f64() / r.base.as_secs_f64(),
        fmt_count(r.requests),
        r.base_name,
    );
}

/// One keystore of `n` records, mounted, and its tmpfs twin.
struct Setup {
    n: usize,
    data: PathBuf,
    session: fuser::BackgroundSession,
    k_group: PathBuf,
    k_tags: PathBuf,
    k_rec: PathBuf,
    b_root: PathBuf,
    b_group: PathBuf,
    b_tags: PathBuf,
    b_rec: PathBuf,
}

fn setup(work: &Path, baseline: &Path, n: usize) -> Setup {
    let data = work.join(format!("ks{n}"));
    let target = n / 2;
    let (_, records) = support::build_keystore(&data, GROUP, n, Some(target));
    let kms = Kms::open(&data).unwrap();
    let mnt = work.join(format!("mnt{n}"));
    fs::create_dir(&mnt).unwrap();
    let session = kmsfs::fs::spawn(kms, &mnt, &kmsfs::fs::MountOptions::default()).expect("mount");
    let t = Instant::now();
    while !mnt.join(".status").exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "mount not ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    let k_group = mnt.join(GROUP);
    let k_rec = k_group.join(&records[target].0);
    let json = fs::read(k_rec.join("record.json")).unwrap();
    let description = fs::read(k_rec.join("description")).unwrap();
    let b_root = baseline.join(format!("n{n}"));
    build_baseline(&b_root, &k_group, &records, &json, &description);
    let b_group = b_root.join(GROUP);
    let s = Setup {
        n,
        data,
        session,
        k_tags: mnt.join(".by-tag"),
        k_rec,
        k_group,
        b_tags: b_root.join(".by-tag"),
        b_rec: b_group.join(&records[target].0),
        b_group,
        b_root,
    };
    let count = |dir: &Path| fs::read_dir(dir).unwrap().count();
    assert_eq!(count(&s.k_group), count(&s.b_group));
    assert_eq!(count(&s.k_tags), n);
    assert_eq!(count(&s.b_tags), n);
    assert_eq!(fs::read(s.k_rec.join("state")).unwrap(), b"active\n");
    s
}

fn teardown(s: Setup) {
    s.session.umount_and_join().expect("unmount");
    fs::remove_dir_all(&s.b_root).unwrap();
    fs::remove_dir_all(&s.data).unwrap();
}

#[derive(Default)]
struct Bench {
    rows: Vec<Row>,
}

impl Bench {
    /// Warms both sides, counts the FUSE requests of `a`, then times `a` and `b` alternately.
    fn row(
        &mut self,
        op: &str,
        n: usize,
        samples: usize,
        base_name: &'static str,
        a: &mut dyn FnMut(),
        b: &mut dyn FnMut(),
    ) {
        let warmup = (samples / 10).max(2);
        let reps = if samples >= 100 { 20 } else { 3 };
        // Warm both sides first, so that the counted pass sees the steady state too.
        for _ in 0..warmup {
            a();
            b();
        }
        let (requests, breakdown) = count_requests(reps, &mut *a);
        let (kms, base) = paired(samples, &mut *a, &mut *b);
        let r = Row {
            op: op.to_string(),
            n,
            kms,
            base,
            base_name,
            requests,
            breakdown,
        };
        print_row(&r);
        self.rows.push(r);
    }
}

fn main() {
    log::set_logger(&LOGGER).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
    let list_samples: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
        .max(1);
    let op_samples = list_samples * 25;

    let work = tempfile::Builder::new()
        .prefix("kmsfs-bench-mount")
        .tempdir()
        .unwrap();
    let baseline = Baseline::new(work.path());
    println!(
        "data and mount points under {}, baseline on {}",
        work.path().display(),
        baseline.describe()
    );
    println!("samples: {list_samples} per listing, {op_samples} per small operation");
    println!("load average at start: {}", loadavg());
    // Both keystores stay mounted throughout, so that the unpinned rows all run before any
    // thread is pinned (once pinned together, threads tend to stay together afterwards).
    let setups: Vec<Setup> = [1_000, 10_000]
        .into_iter()
        .map(|n| setup(work.path(), &baseline.dir, n))
        .collect();

    print_header();
    let mut bench = Bench::default();
    for s in &setups {
        let n = s.n;
        bench.row(
            "ls -l pool",
            n,
            list_samples,
            "tmpfs",
            &mut || ls_l(&s.k_group),
            &mut || ls_l(&s.b_group),
        );
        bench.row(
            "ls -l .by-tag",
            n,
            list_samples,
            "tmpfs",
            &mut || ls_l(&s.k_tags),
            &mut || ls_l(&s.b_tags),
        );
        for (file, op) in [
            ("record.json", "read record.json"),
            ("state", "read state"),
            ("key", "read key"),
        ] {
            let (k, b) = (s.k_rec.join(file), s.b_rec.join(file));
            bench.row(op, n, op_samples, "tmpfs", &mut || read(&k), &mut || {
                read(&b)
            });
        }
        // A state change appends one sealed frame to KMS_DATA and fdatasyncs it; the floor is
        // a raw append + fdatasync on a file in the data directory.
        let raw_path = s.data.join("baseline.log");
        let mut raw = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&raw_path)
            .unwrap();
        let frame = vec![0x5a; 400];
        let state = s.k_rec.join("state");
        let mut flip = 0usize;
        bench.row(
            "write state (durable)",
            n,
            op_samples,
            "append+fdatasync",
            &mut || {
                flip += 1;
                let word = if flip % 2 == 1 { "inactive" } else { "active" };
                fs::write(&state, word).unwrap();
            },
            &mut || {
                raw.write_all(&frame).unwrap();
                raw.sync_data().unwrap();
            },
        );
        drop(raw);
        fs::remove_file(&raw_path).unwrap();
        let expect = if flip % 2 == 1 {
            "inactive\n"
        } else {
            "active\n"
        };
        assert_eq!(fs::read_to_string(&state).unwrap(), expect);
    }
    // The same read with the client and the daemon forced onto one vCPU, then onto two.
    let mut placements = vec![("read record.json, same CPU", [0], [0])];
    if all_cpus().len() >= 2 {
        placements.push(("read record.json, client/daemon CPU 0/1", [0], [1]));
    }
    for (op, main_cpus, daemon_cpus) in placements {
        let threads = pin_threads(&main_cpus, &daemon_cpus);
        assert!(threads >= 9, "pinned only {threads} threads");
        for s in &setups {
            let (k, b) = (s.k_rec.join("record.json"), s.b_rec.join("record.json"));
            bench.row(op, s.n, op_samples, "tmpfs", &mut || read(&k), &mut || {
                read(&b)
            });
        }
    }
    pin_threads(&all_cpus(), &all_cpus());
    println!("load average at end: {}", loadavg());

    for s in setups {
        teardown(s);
    }
    drop(baseline);

    // The same figures grouped by operation, and what each operation asked of the daemon.
    let mut order: Vec<String> = Vec::new();
    for r in &bench.rows {
        if !order.contains(&r.op) {
            order.push(r.op.clone());
        }
    }
    bench
        .rows
        .sort_by_key(|r| (order.iter().position(|o| *o == r.op), r.n));
    println!();
    print_header();
    for r in &bench.rows {
        print_row(r);
    }
    println!("\nFUSE requests per operation (counted by the daemon):");
    for r in &bench.rows {
        println!("  {:<40} N={:<6} {}", r.op, r.n, r.breakdown);
    }
}
