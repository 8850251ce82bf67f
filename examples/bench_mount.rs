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
//! The `req/op` column counts the FUSE requests one operation costs, counted by the daemon
//! itself (`kmsfs::fs::RequestCounts`) in a separate pass before the timed one.

use std::fs;
use std::time::Duration;

#[path = "support/mod.rs"]
mod support;

use support::{count_requests, fmt_count, fmt_dur, loadavg, ls_l, paired, read, Baseline, Twin};

const GROUP: &str = "pool";

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

fn all_cpus() -> Vec<usize> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..n).collect()
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
        let (kms, base) = (support::median(kms), support::median(base));
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
    support::install_logger();
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
    let opts = kmsfs::fs::MountOptions::default();
    let setups: Vec<Twin> = [1_000, 10_000]
        .into_iter()
        .map(|n| Twin::new(work.path(), &baseline.dir, GROUP, n, &opts))
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
        let mut raw = support::RawSync::new(&s.data);
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
            &mut || raw.once(),
        );
        drop(raw);
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
        s.remove();
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
