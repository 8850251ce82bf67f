//! Parallel reads through a real mount, with and without a writer: key reads per second with 1
//! and with 8 reader threads, and the latency of a read while a writer keeps changing another
//! record's state durably (each change one fdatasync). Readers never take the writer's lock, so
//! a read should not wait for a writer's fdatasync: its latency with the writer running should
//! stay far below the fdatasync it would otherwise wait for (measured in the same run: a raw
//! append + fdatasync in the data directory).
//!
//!   cargo run --release --example bench_parallel [SECONDS_PER_ROUND]   (default 2)

#[path = "support/mod.rs"]
mod support;

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::{percentile, readers, us, Writers};

const GROUP: &str = "pool";
const RECORDS: usize = 64;
/// A writer flips its record's state between these.
const FLIP: &[&str] = &["inactive", "active"];

fn main() {
    log::set_max_level(log::LevelFilter::Warn);
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let work = tempfile::Builder::new()
        .prefix("kmsfs-bench-parallel")
        .tempdir()
        .unwrap();
    let data = work.path().join("ks");
    let (_, records) = support::build_keystore(&data, GROUP, RECORDS + 1, None);
    let mnt = work.path().join("mnt");
    let opts = kmsfs::fs::MountOptions {
        threads: 8,
        ..Default::default()
    };
    let session = support::mount(&data, &mnt, &opts);
    let group = mnt.join(GROUP);
    // Activating each in turn leaves one active and the others inactive: all readable. The
    // last one is the writer's.
    for (name, _) in &records {
        fs::write(group.join(name).join("state"), "active").unwrap();
    }
    let (writer_rec, _) = records.last().unwrap().clone();
    let keys: Vec<PathBuf> = records[..RECORDS]
        .iter()
        .map(|(n, _)| group.join(n).join("key"))
        .collect();
    let sync = support::median(support::RawSync::new(&data).times(200));
    println!(
        "{} s per round, {RECORDS} records, 8 serving threads, {} vCPUs; raw append+fdatasync median {:.0} us",
        secs,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        us(sync)
    );
    println!(
        "{:<34} {:>12} {:>10} {:>10} {:>10}",
        "workload", "reads/s", "p50_us", "p99_us", "max_us"
    );
    let mut json = Vec::new();
    let mut row = |name: &str, rate: f64, lat: &[Duration], extra: String| {
        let (p50, p99, max) = (
            percentile(lat, 0.5),
            percentile(lat, 0.99),
            lat.last().copied().unwrap_or_default(),
        );
        println!(
            "{name:<34} {rate:>12.0} {:>10.0} {:>10.0} {:>10.0}{extra}",
            us(p50),
            us(p99),
            us(max)
        );
        json.push(format!(
            r#"{{"workload":"{name}","reads_per_s":{rate:.0},"p50_us":{:.1},"p99_us":{:.1}}}"#,
            us(p50),
            us(p99)
        ));
    };
    let _ = readers(&keys, 8, 0.5); // warm-up
    let (r1, mut l1) = readers(&keys, 1, secs);
    l1.sort();
    row("1 reader", r1, &l1, String::new());
    let (r8, mut l8) = readers(&keys, 8, secs);
    l8.sort();
    row("8 readers", r8, &l8, format!("   {:.2}x 1 reader", r8 / r1));
    for threads in [1, 8] {
        let w = Writers::start(&[group.join(&writer_rec).join("state")], FLIP);
        let (r, mut l) = readers(&keys, threads, secs);
        l.sort();
        let changes = w.stop().rate;
        let base = if threads == 1 { r1 } else { r8 };
        row(
            &format!("{threads} reader(s) + 1 writer"),
            r,
            &l,
            format!(
                "   {:.2}x without the writer; writer {:.0} changes/s",
                r / base,
                changes
            ),
        );
    }
    // Quiesce under load: 8 writers, each flipping its own record, and `echo quiesce` timed
    // until it returns (the files are then frozen), 10 times.
    let mut quiesce = Vec::new();
    for round in 0..10u64 {
        // Refused (EROFS) while frozen: the writers keep trying.
        let states: Vec<PathBuf> = records[..8]
            .iter()
            .map(|(n, _)| group.join(n).join("state"))
            .collect();
        let writers = Writers::start(&states, FLIP);
        std::thread::sleep(Duration::from_millis(200 + 10 * round));
        let t = Instant::now();
        fs::write(mnt.join(".quiesce"), "quiesce").unwrap();
        quiesce.push(t.elapsed());
        let frozen = fs::read(data.join("KMS_DATA")).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            fs::read(data.join("KMS_DATA")).unwrap(),
            frozen,
            "changed while frozen"
        );
        fs::write(mnt.join(".quiesce"), "unquiesce").unwrap();
        writers.stop();
    }
    quiesce.sort();
    let (q50, qmax) = (percentile(&quiesce, 0.5), *quiesce.last().unwrap());
    println!(
        "{:<34} {:>12} {:>10.0} {:>10} {:>10.0}   10 rounds; KMS_DATA unchanged while frozen",
        "quiesce with 8 writers",
        "-",
        us(q50),
        "-",
        us(qmax)
    );
    json.push(format!(
        r#"{{"workload":"quiesce with 8 writers","p50_us":{:.1},"max_us":{:.1}}}"#,
        us(q50),
        us(qmax)
    ));
    println!(
        "{{\"bench\":\"parallel\",\"fdatasync_us\":{:.1},\"rows\":[{}]}}",
        us(sync),
        json.join(",")
    );
    session.umount_and_join().expect("unmount");
}
