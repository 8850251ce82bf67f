//! The benchmark command of the README (`examples/bench.rs`) runs every workload at its tiny
//! scale and reports each one, in the table and in the JSON line. No timing is checked: only
//! that the command works, and the request counts, which are deterministic.

use std::path::PathBuf;
use std::process::Command;

/// The example's binary beside this test's (`cargo test` builds examples); built here when
/// only this test was built (`cargo test --test bench_command`).
fn bench_binary() -> PathBuf {
    let me = std::env::current_exe().unwrap();
    let profile_dir = me.parent().unwrap().parent().unwrap();
    let bin = profile_dir.join("examples").join("bench");
    if !bin.exists() {
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "--example", "bench"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build --example bench failed");
    }
    bin
}

#[test]
fn bench_tiny_runs_every_workload() {
    let out = Command::new(bench_binary())
        .args(["--scale", "tiny"])
        .output()
        .expect("run bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench --scale tiny failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("some output");
    let report: serde_json::Value = serde_json::from_str(last).expect("the last line is JSON");
    assert_eq!(report["scale"], "tiny");
    let rows = report["rows"].as_array().expect("rows");
    let row = |op: &str| {
        rows.iter()
            .find(|r| r["op"].as_str().is_some_and(|o| o.starts_with(op)))
            .unwrap_or_else(|| panic!("no row {op:?} in {last}"))
    };
    for op in [
        "read record.json (warm)",
        "read state (warm)",
        "read key (warm)",
        "jq -s .",
        "ls -l .by-tag",
        "ls -l pool",
        "change description (durable), 1 writer",
        "change description (durable), 8 writers",
        "read key, 8 readers",
        "read key, 1 reader + 1 writer",
        "read record.json, 8 readers",
        "echo quiesce",
        "mount start-up",
        "mount resident memory",
        "growth per record",
    ] {
        let r = row(op);
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("| {op}"))),
            "{op:?} missing from the table"
        );
        for key in ["median_us", "p95_us", "baseline_us", "ratio", "requests"] {
            assert!(r.get(key).is_some(), "{op:?} has no {key}");
        }
    }
    // Every tree operation counted its FUSE requests (at least the OPEN or OPENDIR: how many
    // more depends on what the kernel caches).
    for op in ["read record.json", "read state", "ls -l .by-tag", "jq -s ."] {
        let n = row(op)["requests"].as_f64().expect("requests counted");
        assert!(n >= 1.0, "{op}: {n} requests");
    }
    assert_eq!(row("echo quiesce")["frozen"], true);
}
