//! Every workload of the speed issue in one run, each side by side with its baseline measured
//! in the same run (interleaved sample by sample, or round by round, where the two can
//! alternate), printed as one table and then one JSON line.
//!
//!   cargo run --release --example bench -- --scale tiny|small|full|huge [--dir DIR] [--only 1,2,..]
//!
//! Needs root (FUSE without `fusermount`, and a tmpfs mounted for the baseline; it falls back
//! to /dev/shm if that mount fails). Keystores are built as one snapshot each, under DIR
//! (default $TMPDIR; it should be a real disk: the durable rows time its fdatasync), and
//! mounted in this process with `kmsfs::fs::spawn`.
//!
//! The workloads (`--only` takes their numbers):
//! 1. warm reads of `record.json`, `state` and `key` (`std::fs::read`) vs the same on tmpfs;
//! 2. `jq -s . pool/*/record.json` over N records vs tmpfs;
//! 3. `ls -l .by-tag` of N links and `ls -l` of an N-record group vs tmpfs;
//! 4. durable changes (a record's `description`): one writer vs a raw 400-byte `write` +
//!    `fdatasync` in the data directory, and 8 writers on 8 records vs 1 writer (change rates);
//! 5. 8 readers of `key` and of `record.json` in parallel vs 1 reader, and 1 reader with a
//!    writer running vs without;
//! 6. `quiesce` written to `.quiesce` with 8 writers running, and KMS_DATA unchanged while frozen;
//! 7. mount start-up (open + the first `.status` answered) and resident memory at growing
//!    keystores (groups of 100 records), each in a fresh child process, and the growth per
//!    record.
//!
//! Scales: `tiny` (seconds, for the test), `small` (1,000 records in the tree workloads, 10,000
//! at the largest scale point; a few minutes), `full` (10,000 and 100,000), `huge` (`full` plus a
//! 1,000,000-record scale point).
//!
//! `req/op` counts the FUSE requests one operation costs, counted by the daemon itself
//! (`kmsfs::fs::RequestCounts`, as `tests/mount_cache.rs` asserts them) in a separate, untimed
//! pass.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "support/mod.rs"]
mod support;

use support::{
    count_requests, fmt_count, fmt_dur, loadavg, ls_l, paired, read, readers, sh_in, us, vm_rss,
    Baseline, RawSync, Stats, Twin, Writers,
};

const GROUP: &str = "pool";

/// How big and how long each workload is.
struct Scale {
    name: &'static str,
    /// Records in the tree workloads (1–3).
    tree: usize,
    /// Timed samples: listings, small operations, jq runs, durable changes.
    list_samples: usize,
    op_samples: usize,
    jq_samples: usize,
    change_samples: usize,
    /// Throughput rounds (each configuration once per round) and their length.
    rounds: usize,
    round_secs: f64,
    quiesce_rounds: usize,
    /// Scale points: groups of 100 records each; start-ups per point.
    scale_groups: &'static [usize],
    scale_reps: usize,
}

fn scale(name: &str) -> Scale {
    match name {
        "tiny" => Scale {
            name: "tiny",
            tree: 100,
            list_samples: 3,
            op_samples: 30,
            jq_samples: 2,
            change_samples: 10,
            rounds: 1,
            round_secs: 0.2,
            quiesce_rounds: 2,
            scale_groups: &[2, 5],
            scale_reps: 1,
        },
        "small" => Scale {
            name: "small",
            tree: 1_000,
            list_samples: 20,
            op_samples: 500,
            jq_samples: 10,
            change_samples: 300,
            rounds: 5,
            round_secs: 1.0,
            quiesce_rounds: 10,
            scale_groups: &[10, 100],
            scale_reps: 3,
        },
        "full" | "huge" => Scale {
            name: if name == "full" { "full" } else { "huge" },
            tree: 10_000,
            list_samples: 20,
            op_samples: 1_000,
            jq_samples: 10,
            change_samples: 500,
            rounds: 5,
            round_secs: 2.0,
            quiesce_rounds: 20,
            scale_groups: if name == "full" {
                &[100, 1_000]
            } else {
                &[100, 1_000, 10_000]
            },
            scale_reps: 3,
        },
        other => {
            eprintln!("unknown scale {other:?}: tiny, small, full or huge");
            std::process::exit(2);
        }
    }
}

const PER_GROUP: usize = 100;

// ---------------------------------------------------------------------------------------------
// The report: one table row and one JSON object per measured figure

struct Row {
    op: String,
    n: usize,
    kms: String,
    p95: String,
    base: String,
    ratio: String,
    req: String,
    note: String,
    json: Value,
}

fn opt_us(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| json!((us(d) * 10.0).round() / 10.0))
}

fn round3(x: f64) -> Value {
    json!((x * 1000.0).round() / 1000.0)
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
}

impl Report {
    /// A timed row: kmsfs `k` against the baseline `b` (if any), ratio = median / median.
    #[allow(clippy::too_many_arguments)]
    fn time(
        &mut self,
        op: &str,
        n: usize,
        k: &Stats,
        b: Option<&Stats>,
        baseline: &str,
        requests: Option<(f64, String)>,
        note: String,
        extra: Value,
    ) {
        let ratio = b.map(|b| k.median.as_secs_f64() / b.median.as_secs_f64());
        let mut json = json!({
            "op": op,
            "n": n,
            "median_us": opt_us(Some(k.median)),
            "p95_us": opt_us(Some(k.p95)),
            "baseline": baseline,
            "baseline_us": opt_us(b.map(|b| b.median)),
            "baseline_p95_us": opt_us(b.map(|b| b.p95)),
            "ratio": ratio.map_or(Value::Null, round3),
            "requests": requests.as_ref().map_or(Value::Null, |(r, _)| json!(r)),
            "requests_by_op": requests.as_ref().map_or(Value::Null, |(_, s)| json!(s)),
            "samples": k.count,
        });
        merge(&mut json, extra);
        let note = match (baseline.is_empty(), note.is_empty()) {
            (true, _) => note,
            (false, true) => format!("vs {baseline}"),
            (false, false) => format!("vs {baseline}; {note}"),
        };
        self.push(Row {
            op: op.into(),
            n,
            kms: fmt_dur(k.median),
            p95: fmt_dur(k.p95),
            base: b.map_or("–".into(), |b| fmt_dur(b.median)),
            ratio: ratio.map_or("–".into(), |r| format!("{r:.2}")),
            req: requests.map_or("–".into(), |(r, _)| fmt_count(r)),
            note,
            json,
        });
    }

    /// A row that is not a time (memory, growth): shown as `shown`, its figures in `extra`.
    fn value(&mut self, op: &str, n: usize, shown: String, note: String, extra: Value) {
        let mut json = json!({
            "op": op, "n": n, "median_us": null, "p95_us": null, "baseline_us": null,
            "ratio": null, "requests": null,
        });
        merge(&mut json, extra);
        self.push(Row {
            op: op.into(),
            n,
            kms: shown,
            p95: "–".into(),
            base: "–".into(),
            ratio: "–".into(),
            req: "–".into(),
            note,
            json,
        });
    }

    fn push(&mut self, r: Row) {
        // Progress on stderr, so that stdout holds only the report.
        eprintln!(
            "  {} (N={}): {} p95 {} | {} {} | {}",
            r.op, r.n, r.kms, r.p95, r.base, r.ratio, r.note
        );
        self.rows.push(r);
    }

    fn print_table(&self) {
        let w = self
            .rows
            .iter()
            .map(|r| r.op.chars().count())
            .max()
            .unwrap_or(9);
        println!(
            "| {:<w$} | {:>9} | {:>10} | {:>10} | {:>10} | {:>6} | {:>6} | note",
            "operation", "N", "kmsfs", "p95", "baseline", "ratio", "req/op"
        );
        println!(
            "|{:-<w2$}|{:->11}|{:->12}|{:->12}|{:->12}|{:->8}|{:->8}|------",
            "",
            ":",
            ":",
            ":",
            ":",
            ":",
            ":",
            w2 = w + 2
        );
        for r in &self.rows {
            println!(
                "| {:<w$} | {:>9} | {:>10} | {:>10} | {:>10} | {:>6} | {:>6} | {}",
                r.op,
                thousands(r.n),
                r.kms,
                r.p95,
                r.base,
                r.ratio,
                r.req,
                r.note
            );
        }
    }
}

fn merge(into: &mut Value, extra: Value) {
    if let (Value::Object(into), Value::Object(extra)) = (into, extra) {
        into.extend(extra);
    }
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Workloads 1–3: one tree of N records, mounted, and its twin on tmpfs

/// Warms both sides, counts the FUSE requests of `a`, then times `a` and `b` alternately.
fn paired_row(
    report: &mut Report,
    op: &str,
    n: usize,
    samples: usize,
    a: &mut dyn FnMut(),
    b: &mut dyn FnMut(),
) {
    let warmup = (samples / 10).max(2);
    let reps = samples.clamp(1, 20);
    for _ in 0..warmup {
        a();
        b();
    }
    let requests = count_requests(reps, &mut *a);
    let (ka, kb) = paired(samples, &mut *a, &mut *b);
    report.time(
        op,
        n,
        &Stats::of(ka),
        Some(&Stats::of(kb)),
        "tmpfs",
        Some(requests),
        String::new(),
        json!({}),
    );
}

fn tree_workloads(report: &mut Report, sc: &Scale, only: &dyn Fn(u32) -> bool, t: &Twin) {
    let n = t.n;
    if only(1) {
        for file in ["record.json", "state", "key"] {
            let (k, b) = (t.k_rec.join(file), t.b_rec.join(file));
            paired_row(
                report,
                &format!("read {file} (warm)"),
                n,
                sc.op_samples,
                &mut || read(&k),
                &mut || read(&b),
            );
        }
    }
    if only(2) {
        let script = format!("jq -s . {GROUP}/*/record.json >/dev/null");
        // Both sides must see every record.
        for root in [&t.mnt, &t.b_root] {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("jq -s length {GROUP}/*/record.json"))
                .current_dir(root)
                .output()
                .expect("run jq");
            assert!(out.status.success(), "jq failed in {}", root.display());
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), n.to_string());
        }
        paired_row(
            report,
            &format!("jq -s . {GROUP}/*/record.json"),
            n,
            sc.jq_samples,
            &mut || sh_in(&t.mnt, &script),
            &mut || sh_in(&t.b_root, &script),
        );
    }
    if only(3) {
        paired_row(
            report,
            "ls -l .by-tag",
            n,
            sc.list_samples,
            &mut || ls_l(&t.k_tags),
            &mut || ls_l(&t.b_tags),
        );
        paired_row(
            report,
            &format!("ls -l {GROUP} (one group)"),
            n,
            sc.list_samples,
            &mut || ls_l(&t.k_group),
            &mut || ls_l(&t.b_group),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads 4–6: a small keystore mounted with 8 serving threads

const READERS: usize = 64;
const WRITERS: usize = 8;
/// Writers alternate their record's description between these (each write a durable change).
const WORDS: &[&str] = &["written by the benchmark", "written by the benchmark again"];

/// Runs each of `configs` (each one timed round: a rate, its latencies and something of its
/// own) in turn, `rounds` times over, so that the machine's other load falls on all of them
/// alike; returns per configuration its round rates, all its latencies and its extras.
fn rounds<T>(
    rounds: usize,
    configs: &mut [&mut dyn FnMut() -> (f64, Vec<Duration>, T)],
) -> Vec<(Rates, Vec<Duration>, Vec<T>)> {
    let mut out: Vec<(Vec<f64>, Vec<Duration>, Vec<T>)> = configs
        .iter()
        .map(|_| (Vec::new(), Vec::new(), Vec::new()))
        .collect();
    for _ in 0..rounds {
        for (c, o) in configs.iter_mut().zip(out.iter_mut()) {
            let (rate, lat, extra) = c();
            o.0.push(rate);
            o.1.extend(lat);
            o.2.push(extra);
        }
    }
    out.into_iter()
        .map(|(rates, lat, extra)| (Rates(rates), lat, extra))
        .collect()
}

/// One rate per round.
struct Rates(Vec<f64>);

impl Rates {
    fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// "1234-2345/s": the slowest and the fastest round (one figure for one round).
    fn spread(&self) -> String {
        let min = self.0.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.0.iter().copied().fold(0.0, f64::max);
        if self.0.len() == 1 {
            format!("{min:.0}/s")
        } else {
            format!("{min:.0}-{max:.0}/s")
        }
    }

    fn json(&self) -> Value {
        json!(self.0.iter().map(|r| r.round()).collect::<Vec<_>>())
    }
}

fn parallel_workloads(report: &mut Report, sc: &Scale, only: &dyn Fn(u32) -> bool, work: &Path) {
    let data = work.join("ks-parallel");
    let total = READERS + WRITERS + 1;
    let (_, records) = support::build_keystore(&data, GROUP, total, None);
    let mnt = work.join("mnt-parallel");
    let opts = kmsfs::fs::MountOptions {
        threads: 8,
        ..Default::default()
    };
    let session = support::mount(&data, &mnt, &opts);
    let group = mnt.join(GROUP);
    let rec = |i: usize| group.join(&records[i].0);
    // Activating each in turn leaves one active and the others inactive: all keys readable.
    for i in 0..READERS {
        fs::write(rec(i).join("state"), "active").unwrap();
    }
    let descriptions: Vec<PathBuf> = (READERS..READERS + WRITERS)
        .map(|i| rec(i).join("description"))
        .collect();
    let lone_writer = vec![rec(total - 1).join("description")];
    let secs = sc.round_secs;
    let threads = format!("{} serving threads, {} vCPUs", opts.threads, vcpus());

    if only(4) {
        // One writer against the floor, change by change.
        let mut raw = RawSync::new(&data);
        let desc = &descriptions[0];
        let mut i = 0usize;
        let mut change = || {
            i += 1;
            fs::write(desc, WORDS[i % 2]).unwrap();
        };
        for _ in 0..10 {
            change();
            raw.once();
        }
        let requests = count_requests(10, &mut change);
        let (k, b) = paired(sc.change_samples, &mut change, || raw.once());
        drop(raw);
        report.time(
            "change description (durable), 1 writer",
            1,
            &Stats::of(k),
            Some(&Stats::of(b)),
            "write+fdatasync",
            Some(requests),
            "raw 400-byte append + fdatasync in the data dir".into(),
            json!({}),
        );
        // 8 writers on 8 records against 1 writer, round by round.
        // The block device's flush count says whether changes shared a sync (group commit)
        // or each paid its own.
        let run = |writers: &[PathBuf]| {
            let f0 = support::device_flushes(&data);
            let w = Writers::start(writers, WORDS);
            std::thread::sleep(Duration::from_secs_f64(secs));
            let r = w.stop();
            let flushes = f0.zip(support::device_flushes(&data)).map(|(a, b)| b - a);
            let changes = r.latencies.len();
            (r.rate, r.latencies, flushes.map(|f| (f, changes)))
        };
        let mut one = || run(&descriptions[..1]);
        let mut eight = || run(&descriptions);
        let res = rounds(sc.rounds, &mut [&mut one, &mut eight]);
        let (rates1, l1, f1) = &res[0];
        let (rates8, l8, f8) = &res[1];
        let (r1, r8) = (rates1.median(), rates8.median());
        let per_change = |f: &[Option<(u64, usize)>]| {
            let (mut flushes, mut changes) = (0, 0);
            for &(fl, ch) in f.iter().flatten() {
                flushes += fl;
                changes += ch;
            }
            (changes > 0 && f.iter().all(Option::is_some)).then(|| flushes as f64 / changes as f64)
        };
        let (fpc1, fpc8) = (per_change(f1), per_change(f8));
        let flush_note = match (fpc1, fpc8) {
            (Some(a), Some(b)) => format!("; device flushes per change {b:.2} vs {a:.2}"),
            _ => String::new(),
        };
        report.time(
            "change description (durable), 8 writers",
            WRITERS,
            &Stats::of(l8.clone()),
            Some(&Stats::of(l1.clone())),
            "1 writer",
            None,
            format!(
                "change rate 8:1 = {:.2}x (medians {:.0}/s vs {:.0}/s; rounds {} vs {}; {} rounds of {secs} s){flush_note}",
                r8 / r1,
                r8,
                r1,
                rates8.spread(),
                rates1.spread(),
                sc.rounds
            ),
            json!({"rate_per_s": r8.round(), "baseline_rate_per_s": r1.round(),
                   "rate_ratio": round3(r8 / r1), "rates_per_round": rates8.json(),
                   "baseline_rates_per_round": rates1.json(),
                   "flushes_per_change": fpc8.map(round3), "baseline_flushes_per_change": fpc1.map(round3)}),
        );
    }

    if only(5) {
        let sync = support::median(RawSync::new(&data).times(50));
        for file in ["key", "record.json"] {
            let files: Vec<PathBuf> = (0..READERS).map(|i| rec(i).join(file)).collect();
            let _ = readers(&files, 8, secs.min(0.5)); // warm-up
            let mut one = || {
                let (r, l) = readers(&files, 1, secs);
                (r, l, 0.0)
            };
            let mut eight = || {
                let (r, l) = readers(&files, 8, secs);
                (r, l, 0.0)
            };
            let mut with_writer = || {
                let w = Writers::start(&lone_writer, WORDS);
                let (r, l) = readers(&files, 1, secs);
                (r, l, w.stop().rate)
            };
            let res = rounds(sc.rounds, &mut [&mut one, &mut eight, &mut with_writer]);
            let (rates1, l1, _) = &res[0];
            let (rates8, l8, _) = &res[1];
            let (ratesw, lw, wrates) = &res[2];
            let (r1, r8, rw) = (rates1.median(), rates8.median(), ratesw.median());
            let s1 = Stats::of(l1.clone());
            let sw = Stats::of(lw.clone());
            report.time(
                &format!("read {file}, 8 readers in parallel"),
                READERS,
                &Stats::of(l8.clone()),
                Some(&s1),
                "1 reader",
                None,
                format!(
                    "reads/s 8:1 = {:.2}x (medians {:.0}/s vs {:.0}/s; rounds {} vs {}; {threads})",
                    r8 / r1,
                    r8,
                    r1,
                    rates8.spread(),
                    rates1.spread()
                ),
                json!({"rate_per_s": r8.round(), "baseline_rate_per_s": r1.round(),
                       "rate_ratio": round3(r8 / r1), "rates_per_round": rates8.json(),
                       "baseline_rates_per_round": rates1.json()}),
            );
            let mut wrates = wrates.clone();
            wrates.sort_by(f64::total_cmp);
            report.time(
                &format!("read {file}, 1 reader + 1 writer"),
                READERS,
                &sw,
                Some(&s1),
                "no writer",
                None,
                format!(
                    "p99 {} (no writer {}; fdatasync {}); {:.0} reads/s, writer {:.0} changes/s",
                    fmt_dur(sw.p99),
                    fmt_dur(s1.p99),
                    fmt_dur(sync),
                    rw,
                    wrates[wrates.len() / 2]
                ),
                json!({"p99_us": opt_us(Some(sw.p99)), "baseline_p99_us": opt_us(Some(s1.p99)),
                       "fdatasync_us": opt_us(Some(sync)), "rate_per_s": rw.round()}),
            );
        }
    }

    if only(6) {
        let kms_data = data.join("KMS_DATA");
        let mut times = Vec::new();
        let mut refused = 0;
        let mut changed_rounds = 0;
        support::mute_warnings(true);
        for round in 0..sc.quiesce_rounds {
            let w = Writers::start(&descriptions, WORDS);
            std::thread::sleep(Duration::from_millis(100 + 10 * round as u64));
            let t = Instant::now();
            fs::write(mnt.join(".quiesce"), "quiesce").unwrap();
            times.push(t.elapsed());
            let (len, bytes) = (
                fs::metadata(&kms_data).unwrap().len(),
                fs::read(&kms_data).unwrap(),
            );
            std::thread::sleep(Duration::from_millis(50));
            let frozen = fs::metadata(&kms_data).unwrap().len() == len
                && fs::read(&kms_data).unwrap() == bytes;
            changed_rounds += usize::from(!frozen);
            fs::write(mnt.join(".quiesce"), "unquiesce").unwrap();
            refused += w.stop().refused;
        }
        support::mute_warnings(false);
        let st = Stats::of(times);
        let verdict = if changed_rounds == 0 {
            format!(
                "KMS_DATA unchanged in the 50 ms after it returned, all {} rounds",
                sc.quiesce_rounds
            )
        } else {
            format!(
                "KMS_DATA CHANGED while frozen in {changed_rounds} of {} rounds",
                sc.quiesce_rounds
            )
        };
        report.time(
            "echo quiesce > .quiesce, 8 writers running",
            WRITERS,
            &st,
            None,
            "",
            None,
            format!(
                "max {}; {verdict}; {refused} writes refused while frozen",
                fmt_dur(st.max)
            ),
            json!({"max_us": opt_us(Some(st.max)), "frozen": changed_rounds == 0,
                   "refused_writes": refused}),
        );
        assert_eq!(changed_rounds, 0, "KMS_DATA changed while frozen");
    }
    session.umount_and_join().expect("unmount");
    fs::remove_dir_all(&data).unwrap();
}

fn vcpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

// ---------------------------------------------------------------------------------------------
// Workload 7: start-up and memory, each start-up in a fresh child process

/// The child: opens DATA, mounts it at MNT, reads `.status`; prints the time that took, VmRSS
/// before and after, and VmRSS once malloc has given back the free memory it can
/// (`malloc_trim`: what loading freed but malloc kept); then unmounts.
fn probe(data: &Path, mnt: &Path) {
    let before = vm_rss();
    let t = Instant::now();
    let session = support::mount(data, mnt, &kmsfs::fs::MountOptions::default());
    let startup = t.elapsed();
    let after = vm_rss();
    // SAFETY: malloc_trim only tidies glibc's own heap; no pointer is passed.
    unsafe { libc::malloc_trim(0) };
    let trimmed = vm_rss();
    println!(
        "{}",
        json!({"startup_us": us(startup), "rss_before": before, "rss_after": after,
               "rss_after_trim": trimmed})
    );
    session.umount_and_join().expect("unmount");
}

fn scale_workload(report: &mut Report, sc: &Scale, work: &Path) {
    let exe = std::env::current_exe().unwrap();
    let mut points: Vec<(usize, Duration, u64)> = Vec::new();
    for &groups in sc.scale_groups {
        let n = groups * PER_GROUP;
        let data = work.join(format!("ks-scale{n}"));
        let names: Vec<String> = (0..groups).map(|g| format!("group-{g:05}")).collect();
        let t = Instant::now();
        // The same as `bench --build DATA GROUPS`.
        drop(support::build_keystore_groups(
            &data, &names, PER_GROUP, None,
        ));
        let size = fs::metadata(data.join("KMS_DATA")).unwrap().len();
        eprintln!(
            "  built {n} records in {groups} groups in {:.1} s (KMS_DATA {:.1} MiB)",
            t.elapsed().as_secs_f64(),
            size as f64 / 1048576.0
        );
        let mnt = work.join(format!("mnt-scale{n}"));
        let (mut startups, mut rss, mut trimmed) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..sc.scale_reps {
            let out = Command::new(&exe)
                .arg("--probe")
                .arg(&data)
                .arg(&mnt)
                .output()
                .expect("run the probe");
            assert!(
                out.status.success(),
                "probe failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: Value = serde_json::from_slice(&out.stdout).expect("probe output");
            startups.push(Duration::from_secs_f64(
                v["startup_us"].as_f64().unwrap() / 1e6,
            ));
            let before = v["rss_before"].as_u64().unwrap();
            rss.push(v["rss_after"].as_u64().unwrap() - before);
            trimmed.push(v["rss_after_trim"].as_u64().unwrap().saturating_sub(before));
        }
        let mid = |mut v: Vec<u64>| {
            v.sort();
            v[v.len() / 2]
        };
        let (rss, trimmed) = (mid(rss), mid(trimmed));
        let mib = |b: u64| b as f64 / 1048576.0;
        let st = Stats::of(startups);
        report.time(
            "mount start-up (open + first .status)",
            n,
            &st,
            None,
            "",
            None,
            format!(
                "{groups} groups of {PER_GROUP}; KMS_DATA {:.1} MiB; {} start-ups, each a fresh process",
                size as f64 / 1048576.0,
                sc.scale_reps
            ),
            json!({"groups": groups, "kms_data_bytes": size}),
        );
        report.value(
            "mount resident memory (VmRSS after - before)",
            n,
            format!("{:.1} MiB", mib(rss)),
            format!(
                "{:.0} bytes per record; {:.1} MiB after malloc_trim (the rest: freed by loading, kept by malloc)",
                rss as f64 / n as f64,
                mib(trimmed)
            ),
            json!({"rss_bytes": rss, "groups": groups, "rss_after_trim_bytes": trimmed}),
        );
        points.push((n, st.median, rss));
        fs::remove_dir_all(&data).unwrap();
    }
    // Growth between consecutive points, and where it leads at 1,000,000 records.
    for w in points.windows(2) {
        let ((n0, t0, m0), (n1, t1, m1)) = (w[0], w[1]);
        let dn = (n1 - n0) as f64;
        let per_us = (us(t1) - us(t0)) / dn;
        let per_bytes = (m1 as f64 - m0 as f64) / dn;
        let (at_m_s, at_m_mib) = if n1 < 1_000_000 {
            let rest = (1_000_000 - n1) as f64;
            (
                (us(t1) + per_us * rest) / 1e6,
                (m1 as f64 + per_bytes * rest) / 1048576.0,
            )
        } else {
            (us(t1) / 1e6, m1 as f64 / 1048576.0)
        };
        let projection = if n1 < 1_000_000 {
            format!("at that rate 1,000,000 records: {at_m_s:.1} s, {at_m_mib:.0} MiB")
        } else {
            "measured".into()
        };
        report.value(
            &format!("growth per record, {} to {}", thousands(n0), thousands(n1)),
            n1,
            format!("{per_us:.2} µs"),
            format!("{per_bytes:.0} bytes of memory per record; {projection}"),
            json!({"startup_us_per_record": round3(per_us), "rss_bytes_per_record": per_bytes.round(),
                   "from": n0, "to": n1}),
        );
    }
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Two steps of workload 7 on their own, for profiling start-up (BENCHMARKS.md):
    // `bench --build DATA GROUPS` builds GROUPS groups of 100 records in DATA (a new directory);
    // `bench --probe DATA MNT` mounts it once, prints the start-up time and memory as JSON.
    match args.first().map(String::as_str) {
        Some("--probe") if args.len() == 3 => {
            probe(Path::new(&args[1]), Path::new(&args[2]));
            return;
        }
        Some("--build") if args.len() == 3 => {
            let groups: usize = args[2].parse().expect("--build DATA GROUPS");
            let names: Vec<String> = (0..groups).map(|g| format!("group-{g:05}")).collect();
            drop(support::build_keystore_groups(
                Path::new(&args[1]),
                &names,
                PER_GROUP,
                None,
            ));
            return;
        }
        _ => {}
    }
    let mut scale_name = "small".to_string();
    let mut dir = std::env::temp_dir();
    let mut only: Option<Vec<u32>> = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next().unwrap_or_else(|| {
                eprintln!("{a} needs a value");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--scale" => scale_name = value(),
            "--dir" => dir = PathBuf::from(value()),
            "--only" => {
                only = Some(
                    value()
                        .split(',')
                        .map(|s| s.trim().parse().expect("--only 1,2,..,7"))
                        .collect(),
                )
            }
            _ => {
                eprintln!(
                    "usage: bench [--scale tiny|small|full|huge] [--dir DIR] [--only 1,2,..,7]"
                );
                std::process::exit(2);
            }
        }
    }
    let sc = scale(&scale_name);
    let only = move |w: u32| only.as_ref().is_none_or(|o| o.contains(&w));
    support::install_logger();

    let started = Instant::now();
    let load_start = loadavg();
    let work = tempfile::Builder::new()
        .prefix("kmsfs-bench")
        .tempdir_in(&dir)
        .unwrap();
    let baseline = Baseline::new(work.path());
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "kmsfs bench, scale {}: {date}, {} vCPUs, load average {load_start} at start",
        sc.name,
        vcpus()
    );
    println!(
        "data and mount points under {}, baseline on {}",
        work.path().display(),
        baseline.describe()
    );

    let mut report = Report::default();
    if (1..=3).any(&only) {
        eprintln!("workloads 1-3: a tree of {} records", sc.tree);
        let twin = Twin::new(
            work.path(),
            &baseline.dir,
            GROUP,
            sc.tree,
            &kmsfs::fs::MountOptions::default(),
        );
        tree_workloads(&mut report, &sc, &only, &twin);
        twin.remove();
    }
    if (4..=6).any(&only) {
        eprintln!("workloads 4-6: writers and readers");
        parallel_workloads(&mut report, &sc, &only, work.path());
    }
    if only(7) {
        eprintln!("workload 7: start-up and memory");
        scale_workload(&mut report, &sc, work.path());
    }
    drop(baseline);
    let load_end = loadavg();
    let elapsed = started.elapsed().as_secs_f64();

    println!();
    report.print_table();
    println!("\nload average {load_start} at start, {load_end} at end; {elapsed:.0} s in all");
    println!("FUSE requests per operation (counted by the daemon):");
    for r in &report.rows {
        if let Some(s) = r.json["requests_by_op"].as_str() {
            println!("  {:<44} {s}", r.op);
        }
    }
    let line = json!({
        "scale": sc.name,
        "date": date,
        "vcpus": vcpus(),
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "seconds": elapsed.round(),
        "rows": report.rows.iter().map(|r| r.json.clone()).collect::<Vec<_>>(),
    });
    println!("{line}");
}
