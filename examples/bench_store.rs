//! How the cost of one durable change grows with the size of the keystore (it must not), and
//! what loading and compaction cost, against a raw append + fdatasync baseline measured in
//! the same run on the same file system.
//!
//! cargo run --release --example bench_store -- [DIR] [SAMPLES]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kmsfs::service::Kms;
use kmsfs::store::{Access, Store};

#[path = "support/mod.rs"]
mod support;

use support::us;

/// The floor: `samples` frame-sized appends + fdatasyncs in `dir`; their median.
fn raw_append(dir: &Path, samples: usize) -> Duration {
    support::median(support::RawSync::new(dir).times(samples))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let base: PathBuf = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let samples: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(300);
    let work = tempfile::Builder::new()
        .prefix("kmsfs-bench")
        .tempdir_in(&base)
        .unwrap();
    println!("dir {}  samples {samples}", work.path().display());
    println!(
        "{:>9} {:>12} {:>12} {:>8} {:>12} {:>12}",
        "records", "change_us", "raw_sync_us", "ratio", "open_ms", "compact_ms"
    );
    for records in [0usize, 1_000, 10_000, 100_000] {
        let dir = work.path().join(format!("ks{records}"));
        let (g, _) = support::build_keystore(&dir, "pool", records, None);
        let t = Instant::now();
        let kms = Kms::open(&dir).unwrap();
        let open = t.elapsed();
        let tag = kms
            .create_record(
                &g,
                kmsfs::service::NewRecord::prelive(kmsfs::keystore::Name::parse("bench").unwrap()),
            )
            .unwrap();
        let baseline = raw_append(&dir, samples);
        let times = (0..samples)
            .map(|i| {
                let t = Instant::now();
                kms.describe_record(&tag, &format!("sample {i}")).unwrap();
                t.elapsed()
            })
            .collect();
        let change = support::median(times);
        drop(kms);
        let (mut st, ks, _, _) = Store::open(&dir, Access::ReadWrite).unwrap();
        let t = Instant::now();
        st.compact(&ks).unwrap();
        let compact = t.elapsed();
        println!(
            "{records:>9} {:>12.0} {:>12.0} {:>8.2} {:>12.1} {:>12.1}",
            us(change),
            us(baseline),
            change.as_secs_f64() / baseline.as_secs_f64(),
            open.as_secs_f64() * 1e3,
            compact.as_secs_f64() * 1e3
        );
        drop(st);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    audited(work.path(), samples);
}

/// The same change with the audit log on (what `kmsfs mount` runs): one synced audit line,
/// then the synced frame. Measured in blocks alternating with the log off, on one keystore.
fn audited(base: &Path, samples: usize) {
    let dir = base.join("audited");
    let (g, _) = support::build_keystore(&dir, "pool", 1_000, None);
    let log = dir.join("audit.log");
    let mut plain = Vec::new();
    let mut logged = Vec::new();
    for round in 0..6 {
        let audit = round % 2 == 1;
        let kms = if audit {
            Kms::open_audited(&dir, Some(&log)).unwrap()
        } else {
            Kms::open(&dir).unwrap()
        };
        let tag = kms
            .create_record(
                &g,
                kmsfs::service::NewRecord::prelive(
                    kmsfs::keystore::Name::parse(&format!("bench{round}")).unwrap(),
                ),
            )
            .unwrap();
        for i in 0..samples / 3 {
            let t = Instant::now();
            kms.describe_record(&tag, &format!("sample {i}")).unwrap();
            let d = t.elapsed();
            if audit {
                logged.push(d);
            } else {
                plain.push(d);
            }
        }
        drop(kms);
        // The lock is released with the last reference; wait for it.
        std::thread::sleep(Duration::from_millis(300));
    }
    let raw = raw_append(&dir, samples);
    let (plain, logged) = (support::median(plain), support::median(logged));
    println!(
        "audit log on, 1000 records: change {:.0} us (off: {:.0} us, raw sync {:.0} us): {:.2}x the change without it",
        us(logged),
        us(plain),
        us(raw),
        logged.as_secs_f64() / plain.as_secs_f64()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
