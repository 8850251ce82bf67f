//! Shared by the benchmark examples (`bench`, `bench_mount`, `bench_parallel`, `bench_store`):
//! large keystores built fast, the same tree on tmpfs, the in-process mount, the FUSE request
//! counter, paired timing, raw fdatasync baselines, parallel readers and writers, statistics.
//!
//! Each example includes this file as its own module (`#[path = "support/mod.rs"] mod
//! support;`) and uses only part of it.
#![allow(dead_code)]

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kmsfs::crypto::KeyMaterial;
use kmsfs::keystore::{Change, Cipher, GroupTag, KeyTag, Name, State, Timestamp, WrappedKey};
use kmsfs::service::Kms;
use kmsfs::store::{self, Access, InitOptions, Store};

// ---------------------------------------------------------------------------------------------
// Statistics

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The `p` quantile (0..=1) of sorted samples, nearest rank; zero for none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Median, p95, p99 and maximum of a set of samples.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub median: Duration,
    pub p95: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub count: usize,
}

impl Stats {
    pub fn of(mut v: Vec<Duration>) -> Stats {
        v.sort();
        Stats {
            median: percentile(&v, 0.5),
            p95: percentile(&v, 0.95),
            p99: percentile(&v, 0.99),
            max: v.last().copied().unwrap_or_default(),
            count: v.len(),
        }
    }
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub fn fmt_dur(d: Duration) -> String {
    let us = us(d);
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 10_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else if us >= 1_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.1} µs")
    }
}

/// A count with one decimal only where it has a fraction worth showing.
pub fn fmt_count(x: f64) -> String {
    if x >= 100.0 || x.fract() < 0.05 || x.fract() > 0.95 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// This process's resident memory (VmRSS), in bytes.
pub fn vm_rss() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

/// Flush requests completed by the block device that holds `path` (the 16th field of
/// /sys/dev/block/MAJ:MIN/stat, kernel 5.5 and later): machine-wide, so other processes' syncs
/// count too. None where the device or the field is missing.
pub fn device_flushes(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let dev = fs::metadata(path).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let stat = fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat")).ok()?;
    stat.split_whitespace().nth(15)?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Keystores built as one snapshot

/// A new keystore in `dir` whose group `group` holds `records` records named
/// `record-NNNNNN` (the one numbered `active`, if any, active; the rest prelive), written as one
/// snapshot: a benchmark needs 100,000 records in seconds, not 100,000 fsyncs.
/// Returns the group's tag and the records' names and tags.
pub fn build_keystore(
    dir: &Path,
    group: &str,
    records: usize,
    active: Option<usize>,
) -> (GroupTag, Vec<(String, KeyTag)>) {
    build_keystore_groups(dir, &[group.to_string()], records, active)
        .pop()
        .unwrap()
}

/// Like [`build_keystore`], with `records` records in each of `groups`; returns each group's tag
/// and records, in the order given.
pub fn build_keystore_groups(
    dir: &Path,
    groups: &[String],
    records: usize,
    active: Option<usize>,
) -> Vec<(GroupTag, Vec<(String, KeyTag)>)> {
    store::init(dir, InitOptions::default()).unwrap();
    let (mut st, mut ks, kpk, _) = Store::open(dir, Access::ReadWrite).unwrap();
    let at = Timestamp::now();
    let mut all = Vec::with_capacity(groups.len());
    for group in groups {
        let g = GroupTag::random();
        ks.apply(&Change::CreateGroup {
            tag: g.clone(),
            name: Name::parse(group).unwrap(),
            cipher: Cipher::Aes256,
            description: String::new(),
            at,
        })
        .unwrap();
        let mut out = Vec::with_capacity(records);
        for i in 0..records {
            let tag = KeyTag::random();
            let key = KeyMaterial::random(32);
            let name = format!("record-{i:06}");
            ks.apply(&Change::CreateRecord {
                wrapped_key: WrappedKey(kpk.wrap(&key, tag.as_str())),
                tag: tag.clone(),
                group: g.clone(),
                name: Name::parse(&name).unwrap(),
                state: if active == Some(i) {
                    State::Active
                } else {
                    State::Prelive
                },
                description: "a typical description of a key".into(),
                key_len: 32,
                derivation: None,
                at,
            })
            .unwrap();
            out.push((name, tag));
        }
        all.push((g, out));
    }
    st.compact(&ks).unwrap();
    all
}

// ---------------------------------------------------------------------------------------------
// Mounting in process

/// Opens the keystore in `data` and mounts it at `mnt` (created if missing) with `opts`;
/// returns once `.status` answers.
/// Every mount counts its requests into the process's one `RequestCounts` ([`count_requests`]).
pub fn mount(data: &Path, mnt: &Path, opts: &kmsfs::fs::MountOptions) -> fuser::BackgroundSession {
    let kms = Kms::open(data).unwrap();
    fs::create_dir_all(mnt).unwrap();
    let opts = kmsfs::fs::MountOptions {
        request_counts: Some(request_counts().clone()),
        ..opts.clone()
    };
    let session = kmsfs::fs::spawn(kms, mnt, &opts).expect("mount");
    wait_for_status(mnt);
    session
}

/// Waits (at most 60 s) until `MNT/.status` can be read.
pub fn wait_for_status(mnt: &Path) {
    let t = Instant::now();
    while fs::read(mnt.join(".status")).is_err() {
        assert!(t.elapsed() < Duration::from_secs(60), "mount not ready");
        std::thread::sleep(Duration::from_micros(200));
    }
}

// ---------------------------------------------------------------------------------------------
// Counting FUSE requests

static MUTED: AtomicBool = AtomicBool::new(false);
static MUTED_COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The requests of every mount of this process, counted by the daemon itself
/// (`kmsfs::fs::RequestCounts`).
fn request_counts() -> &'static std::sync::Arc<kmsfs::fs::RequestCounts> {
    static COUNTS: std::sync::OnceLock<std::sync::Arc<kmsfs::fs::RequestCounts>> =
        std::sync::OnceLock::new();
    COUNTS.get_or_init(Default::default)
}

/// Passes warnings and errors to stderr, or counts them while muted.
struct Logger;

impl log::Log for Logger {
    fn enabled(&self, meta: &log::Metadata) -> bool {
        meta.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record) {
        if MUTED.load(Ordering::Relaxed) {
            MUTED_COUNT.fetch_add(1, Ordering::Relaxed);
        } else if record.level() <= log::Level::Warn {
            eprintln!("{} {}: {}", record.level(), record.target(), record.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Installs the process's logger: warnings to stderr (see [`mute_warnings`]).
pub fn install_logger() {
    log::set_logger(&LOGGER).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
}

/// Counts the daemon's warnings instead of printing them while `mute` is on (the refusals a
/// quiesce provokes by design); returns how many were muted since the last call.
pub fn mute_warnings(mute: bool) -> u64 {
    MUTED.store(mute, Ordering::SeqCst);
    MUTED_COUNT.swap(0, Ordering::SeqCst)
}

/// Waits until every file the mounts opened is released (those requests come after
/// `close()` returns).
fn settle() {
    let t = Instant::now();
    while !request_counts().settled() && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs `op` `reps` times and counts the requests it costs the mounts of this process;
/// returns requests per operation and the per-opcode breakdown (per operation).
pub fn count_requests(reps: usize, mut op: impl FnMut()) -> (f64, String) {
    settle();
    request_counts().reset();
    for _ in 0..reps {
        op();
    }
    settle();
    let counts = request_counts().snapshot();
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    let breakdown = counts
        .iter()
        .map(|(op, n)| format!("{op} {}", fmt_count(*n as f64 / reps as f64)))
        .collect::<Vec<_>>()
        .join(", ");
    (total as f64 / reps as f64, breakdown)
}

// ---------------------------------------------------------------------------------------------
// Timing and the client operations

/// Times `a` and `b` alternately, `samples` times each; returns both sets of samples.
pub fn paired(
    samples: usize,
    mut a: impl FnMut(),
    mut b: impl FnMut(),
) -> (Vec<Duration>, Vec<Duration>) {
    let (mut ta, mut tb) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    for _ in 0..samples {
        let t = Instant::now();
        a();
        ta.push(t.elapsed());
        let t = Instant::now();
        b();
        tb.push(t.elapsed());
    }
    (ta, tb)
}

/// `ls -l DIR` as a process, its output to /dev/null.
pub fn ls_l(dir: &Path) {
    let status = Command::new("ls")
        .arg("-l")
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .expect("run ls");
    assert!(status.success(), "ls -l {} failed", dir.display());
}

/// `sh -c SCRIPT` in `dir`, its output to /dev/null; panics unless it succeeds.
pub fn sh_in(dir: &Path, script: &str) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .stdout(Stdio::null())
        .status()
        .expect("run sh");
    assert!(status.success(), "`{script}` in {} failed", dir.display());
}

/// `std::fs::read`, which must return something.
pub fn read(path: &Path) {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(!bytes.is_empty(), "{} read back empty", path.display());
}

/// The floor of a durable change: a frame-sized (400-byte) append to a file in the data
/// directory, then fdatasync. The file is removed on drop.
pub struct RawSync {
    path: PathBuf,
    file: fs::File,
}

impl RawSync {
    pub fn new(dir: &Path) -> RawSync {
        let path = dir.join("baseline.log");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        RawSync { path, file }
    }

    pub fn once(&mut self) {
        self.file.write_all(&[0x5a; 400]).unwrap();
        self.file.sync_data().unwrap();
    }

    /// `reps` timed appends + fdatasyncs.
    pub fn times(&mut self, reps: usize) -> Vec<Duration> {
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                self.once();
                t.elapsed()
            })
            .collect()
    }
}

impl Drop for RawSync {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// `threads` readers, each reading its share of `files` in turn (with `fs::read`) for `secs`;
/// returns reads per second and every read's latency.
pub fn readers(files: &[PathBuf], threads: usize, secs: f64) -> (f64, Vec<Duration>) {
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let mine: Vec<PathBuf> = files.iter().skip(t).step_by(threads).cloned().collect();
            assert!(!mine.is_empty(), "fewer files than readers");
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let bytes = fs::read(&mine[i % mine.len()]).unwrap();
                    lat.push(t0.elapsed());
                    assert!(!bytes.is_empty());
                    i += 1;
                }
                lat
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().unwrap());
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    (rate, all)
}

/// Writers, one thread per file in `files`, each writing `words` to its file in turn (a
/// durable change each) until stopped. Refused writes (EROFS while frozen) are counted apart
/// and the writer keeps trying.
pub struct Writers {
    stop: Arc<AtomicBool>,
    handles: Vec<std::thread::JoinHandle<(Vec<Duration>, usize)>>,
    start: Instant,
}

/// What [`Writers`] did: accepted changes per second, their latencies, and refusals.
pub struct WriterReport {
    pub rate: f64,
    pub latencies: Vec<Duration>,
    pub refused: usize,
}

impl Writers {
    pub fn start(files: &[PathBuf], words: &'static [&'static str]) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = files
            .iter()
            .cloned()
            .map(|file| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let (mut lat, mut refused, mut i) = (Vec::new(), 0, 0usize);
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        match fs::write(&file, words[i % words.len()]) {
                            Ok(()) => lat.push(t.elapsed()),
                            Err(_) => refused += 1,
                        }
                        i += 1;
                    }
                    (lat, refused)
                })
            })
            .collect();
        Writers {
            stop,
            handles,
            start: Instant::now(),
        }
    }

    pub fn stop(self) -> WriterReport {
        self.stop.store(true, Ordering::Relaxed);
        let secs = self.start.elapsed().as_secs_f64();
        let (mut latencies, mut refused) = (Vec::new(), 0);
        for h in self.handles {
            let (l, r) = h.join().unwrap();
            latencies.extend(l);
            refused += r;
        }
        WriterReport {
            rate: latencies.len() as f64 / secs,
            latencies,
            refused,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tmpfs baseline

/// A tmpfs mounted on a fresh directory, unmounted on drop; or /dev/shm when mounting fails.
pub struct Baseline {
    pub dir: PathBuf,
    mounted: bool,
    _shm: Option<tempfile::TempDir>,
}

impl Baseline {
    pub fn new(work: &Path) -> Baseline {
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
            .prefix("kmsfs-bench")
            .tempdir_in("/dev/shm")
            .unwrap();
        Baseline {
            dir: shm.path().to_path_buf(),
            mounted: false,
            _shm: Some(shm),
        }
    }

    pub fn describe(&self) -> String {
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

/// The same directories and files as the mount (group `group` of records, each with
/// record.json, state, description and a 0400 key, and `.by-tag` symlinks) under `root`. Every
/// record.json holds the bytes of one record.json read from the mount (same size); the
/// group's own dot files and `.active` link are copied from the mount's group directory.
pub fn build_baseline(
    root: &Path,
    group_name: &str,
    mount_group: &Path,
    records: &[(String, KeyTag)],
    json: &[u8],
    description: &[u8],
) {
    let group = root.join(group_name);
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
        symlink(format!("../{group_name}/{name}"), by_tag.join(tag.as_str())).unwrap();
    }
}

/// One keystore of `n` records in group `group` (the middle one active), mounted, and its
/// tmpfs twin.
pub struct Twin {
    pub n: usize,
    pub data: PathBuf,
    pub mnt: PathBuf,
    pub session: fuser::BackgroundSession,
    pub records: Vec<(String, KeyTag)>,
    /// The mount's group directory, `.by-tag`, and the active record's directory.
    pub k_group: PathBuf,
    pub k_tags: PathBuf,
    pub k_rec: PathBuf,
    /// The same on tmpfs.
    pub b_root: PathBuf,
    pub b_group: PathBuf,
    pub b_tags: PathBuf,
    pub b_rec: PathBuf,
}

impl Twin {
    pub fn new(
        work: &Path,
        baseline: &Path,
        group: &str,
        n: usize,
        opts: &kmsfs::fs::MountOptions,
    ) -> Twin {
        let data = work.join(format!("ks{n}"));
        let target = n / 2;
        let (_, records) = build_keystore(&data, group, n, Some(target));
        let mnt = work.join(format!("mnt{n}"));
        let session = mount(&data, &mnt, opts);
        let k_group = mnt.join(group);
        let k_rec = k_group.join(&records[target].0);
        let json = fs::read(k_rec.join("record.json")).unwrap();
        let description = fs::read(k_rec.join("description")).unwrap();
        let b_root = baseline.join(format!("n{n}"));
        build_baseline(&b_root, group, &k_group, &records, &json, &description);
        let b_group = b_root.join(group);
        let t = Twin {
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
            mnt,
            records,
        };
        let count = |dir: &Path| fs::read_dir(dir).unwrap().count();
        assert_eq!(count(&t.k_group), count(&t.b_group));
        assert_eq!(count(&t.k_tags), n);
        assert_eq!(count(&t.b_tags), n);
        assert_eq!(fs::read(t.k_rec.join("state")).unwrap(), b"active\n");
        t
    }

    /// Unmounts and removes both trees.
    pub fn remove(self) {
        self.session.umount_and_join().expect("unmount");
        fs::remove_dir_all(&self.b_root).unwrap();
        fs::remove_dir_all(&self.data).unwrap();
    }
}
