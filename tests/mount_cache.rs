//! The kernel's caches through a real mount: metadata is served from the page cache until it
//! changes, and a read right after a change shows it, whoever made the change (a shell in
//! another process, or the service itself, as the rotation timer and other front ends do).
//! Request counts are deterministic, so they are asserted; timings are in `examples/`.

mod support;

use std::sync::Arc;

use kmsfs::fs::{MountOptions, RequestCounts};
use kmsfs::keystore::{KeyTag, State};
use support::mount::Mounted;

fn counted() -> (Mounted, Arc<RequestCounts>) {
    let counts = Arc::new(RequestCounts::default());
    let m = Mounted::with_options(MountOptions {
        request_counts: Some(counts.clone()),
        ..MountOptions::default()
    });
    (m, counts)
}

fn tag_of(m: &Mounted, record: &str) -> KeyTag {
    let tag = m.json(&format!("{record}/record.json"))["tag"]
        .as_str()
        .unwrap()
        .to_string();
    KeyTag::parse(&tag).unwrap()
}

/// The requests since `reset`, once every file and directory opened has been released.
fn settled(counts: &RequestCounts) -> Vec<(&'static str, u64)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !counts.settled() {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            counts.snapshot()
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    counts.snapshot()
}

#[test]
fn metadata_is_stat_from_the_cache_and_read_in_five_requests() {
    let (m, counts) = counted();
    m.bash_ok("mkdir pool pool/k1 && echo active > pool/k1/state && echo d > pool/k1/description");
    for file in [
        "pool/k1/record.json",
        "pool/k1/state",
        "pool/k1/description",
        "pool/.group.json",
    ] {
        std::fs::read(m.p(file)).unwrap();
        settled(&counts);
        counts.reset();
        // `std::fs::read`: OPEN; `statx` for the size (a READ made the kernel forget the
        // atime, which `statx` asks for); READ, and READ again to find the end (direct I/O);
        // RELEASE, and no FLUSH.
        let bytes = std::fs::read(m.p(file)).unwrap();
        assert_eq!(
            settled(&counts),
            vec![("GETATTR", 1), ("OPEN", 1), ("READ", 2), ("RELEASE", 1)],
            "a read of {file}"
        );
        assert_eq!(
            bytes.len() as u64,
            std::fs::metadata(m.p(file)).unwrap().len()
        );
        // `stat` of a cached file asks nothing.
        counts.reset();
        std::fs::metadata(m.p(file)).unwrap();
        std::fs::symlink_metadata(m.p(file)).unwrap();
        assert_eq!(counts.total(), 0, "stat {file}");
    }
    // `ls -l` of the group, a record and `.by-tag`, twice: the second asks for the listings,
    // each directory's own attributes (a listing makes the kernel forget its atime) and the
    // link's target, and nothing per entry.
    let ls = "ls -l pool pool/k1 .by-tag >/dev/null";
    m.bash_ok(ls);
    settled(&counts);
    counts.reset();
    m.bash_ok(ls);
    settled(&counts);
    assert_eq!(counts.get("LOOKUP"), 0, "{:?}", counts.snapshot());
    assert!(counts.get("GETATTR") <= 3, "{:?}", counts.snapshot());
    assert_eq!(counts.get("READLINK"), 1, "{:?}", counts.snapshot());
    // The links resolve from cached names and attributes; only the target is asked.
    std::fs::read_link(m.p("pool/.active")).unwrap();
    counts.reset();
    assert_eq!(
        std::fs::read_link(m.p("pool/.active")).unwrap(),
        std::path::Path::new("k1")
    );
    assert_eq!(counts.snapshot(), vec![("READLINK", 1)]);
}

#[test]
fn a_read_right_after_a_shell_change_shows_it() {
    let m = Mounted::new();
    m.bash_ok("mkdir pool pool/k1 pool/k2 && echo active > pool/k1/state");
    for round in 0..20 {
        let (on, off) = if round % 2 == 0 {
            ("k2", "k1")
        } else {
            ("k1", "k2")
        };
        // Warm every cache the change will touch.
        for f in [
            "k1/state",
            "k2/state",
            "k1/record.json",
            "k2/record.json",
            ".group.json",
            "k1/key",
        ] {
            let _ = std::fs::read(m.p(&format!("pool/{f}")));
        }
        let _ = std::fs::read_link(m.p("pool/.active"));
        // Another process makes the change; this one and a third read at once.
        m.bash_ok(&format!("echo active > pool/{on}/state"));
        assert_eq!(
            m.read(&format!("pool/{off}/state")),
            "inactive\n",
            "round {round}"
        );
        assert_eq!(
            m.json(&format!("pool/{off}/record.json"))["state"],
            "inactive"
        );
        assert_eq!(m.json("pool/.group.json")["active"], on);
        let shell = m.bash_ok(&format!(
            "cat pool/{on}/state; readlink pool/.active; jq -r .state pool/{off}/record.json"
        ));
        assert_eq!(shell, format!("active\n{on}\ninactive\n"), "round {round}");
        // The demoted key's size follows its state at once (`ls -l` shows what `cat` gives).
        assert_eq!(
            std::fs::metadata(m.p(&format!("pool/{off}/key")))
                .unwrap()
                .len(),
            32
        );
    }
    // A description read back by the writer and by another process.
    m.bash_ok("cat pool/k1/description; echo first > pool/k1/description");
    assert_eq!(
        m.bash_ok("echo second > pool/k1/description; cat pool/k1/description"),
        "second\n"
    );
    assert_eq!(m.read("pool/k1/description"), "second\n");
}

#[test]
fn a_read_right_after_a_change_by_the_service_shows_it() {
    // The service changing things itself is what the rotation timer and other front ends do:
    // no request of this mount is involved.
    let m = Mounted::new();
    m.bash_ok("mkdir pool pool/k1 pool/k2 pool/gone && echo active > pool/k1/state");
    let kms = m.kms();
    let (k1, k2, gone) = (
        tag_of(&m, "pool/k1"),
        tag_of(&m, "pool/k2"),
        tag_of(&m, "pool/gone"),
    );
    let warm = |m: &Mounted| {
        for f in [
            "pool/k1/state",
            "pool/k2/state",
            "pool/k1/record.json",
            "pool/.group.json",
        ] {
            let _ = std::fs::read(m.p(f));
        }
        let _ = std::fs::symlink_metadata(m.p("pool/.active"));
    };
    warm(&m);
    kms.set_state(&k2, State::Active).unwrap();
    assert_eq!(m.read("pool/k1/state"), "inactive\n");
    assert_eq!(m.read("pool/k2/state"), "active\n");
    assert_eq!(m.json("pool/k1/record.json")["state"], "inactive");
    // Same size before and after (`deprecated`, `terminated`): only the pages can tell.
    kms.set_state(&k1, State::Deprecated).unwrap();
    warm(&m);
    let before = std::fs::metadata(m.p("pool/k1/record.json")).unwrap().len();
    kms.set_state(&k1, State::Terminated).unwrap();
    assert_eq!(m.read("pool/k1/state"), "terminated\n");
    let json = m.read("pool/k1/record.json");
    assert_eq!(json.len() as u64, before, "the same size: {json}");
    assert!(json.contains("\"terminated\""), "{json}");
    // `.active` goes at once when the active record is deactivated.
    warm(&m);
    kms.set_state(&k2, State::Inactive).unwrap();
    let active = std::fs::symlink_metadata(m.p("pool/.active"));
    assert_eq!(active.unwrap_err().kind(), std::io::ErrorKind::NotFound);
    assert!(m.json("pool/.group.json")["active"].is_null());
    // A deleted record is gone at once, by its name and by its tag.
    let link = m.p(&format!(".by-tag/{gone}"));
    std::fs::symlink_metadata(&link).unwrap();
    std::fs::metadata(m.p("pool/gone/state")).unwrap();
    kms.delete_record(&gone).unwrap();
    for p in [link, m.p("pool/gone"), m.p("pool/gone/state")] {
        let e = std::fs::symlink_metadata(&p).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{}", p.display());
    }
    assert_eq!(m.json("pool/.group.json")["records"], 2);
    assert_eq!(
        std::fs::read_dir(m.p("pool"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() == "gone")
            .count(),
        0
    );
}
