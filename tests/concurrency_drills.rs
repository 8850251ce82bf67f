//! Concurrency drills through a real mount (`kmsfs mount` as a child process): many threads
//! and processes change and read one keystore at once for a bounded time. Every test prints
//! what it did (workers, seconds, acknowledged changes, reads, kills, seed) and fails loudly
//! when a change is lost, two views disagree, or a call gets an errno that docs/errors.md does
//! not give for it. `tests/mount_crash.rs` (one shell loop, SIGKILL) and
//! `tests/description_races.rs` (the shell's truncation) are not repeated here.
//!
//! Bounded for CI (a couple of seconds of load per test); longer by hand, e.g.
//!
//! ```text
//! KMSFS_DRILL_SECONDS=120 KMSFS_DRILL_WORKERS=8 KMSFS_DRILL_ROUNDS=20 KMSFS_DRILL_SEED=7 \
//!   cargo test --test concurrency_drills -- --nocapture --test-threads 1
//! ```
//!
//! - `KMSFS_DRILL_SECONDS`: seconds of load per test (default 2), per round for the crash drill;
//! - `KMSFS_DRILL_WORKERS`: writer threads or processes per test (default 4);
//! - `KMSFS_DRILL_ROUNDS`: kill -9 rounds of the crash drill (default 2);
//! - `KMSFS_DRILL_SEED`: the seed of every random choice (default: the clock); each test prints
//!   the seed it used, so a failure can be replayed (the schedule itself is the kernel's).
//!
//! What is a fair assertion when every read is its own system call: a read of one file is one
//! snapshot (the daemon renders it under one read lock, at open), but a pass over several files
//! is not. A pass that reads `k0/state` (active), then `k1/state` (active) has seen two active
//! records without anything being wrong, if `k1` was activated in between; and a pass can see
//! none the same way. So the writers count, in the test process, the activations they have
//! started (before the system call) and completed (after it returned), and a reader takes
//! `completed` before its pass and `started` after it. At most `started - completed` switches
//! can have taken effect during the pass, so the pass may see at most `1 + that` active
//! records, and may see none only if that is at least 1. When it is 0 (no activation was in
//! flight during the whole pass; the writers pause now and then so that this happens), the
//! pass is as good as one snapshot: exactly one record is active, and `.active`,
//! `.group.json`, every `record.json` and every `state` name the same one. Files that are one
//! snapshot by themselves (`.group.json`, the `.active` link) must always name exactly one.
//! The same counting decides when a read after a write must show that write (no stale read):
//! when every activation started before it had returned by its start, and none was started
//! from then until the read's end (one started earlier may take effect after it).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use support::cli::{ok, verify};
use support::daemon::Daemon;
use support::knobs::{env_or, seed};
use support::scratch::Scratch;

// ---- knobs, failures, helpers ------------------------------------------------------------

struct Knobs {
    seconds: f64,
    workers: usize,
    rounds: usize,
    seed: u64,
}

fn knobs() -> Knobs {
    Knobs {
        seconds: env_or("KMSFS_DRILL_SECONDS", 2.0),
        workers: env_or("KMSFS_DRILL_WORKERS", 4usize).max(2),
        rounds: env_or("KMSFS_DRILL_ROUNDS", 2usize).max(1),
        seed: seed(),
    }
}

impl Knobs {
    fn load(&self) -> Duration {
        Duration::from_secs_f64(self.seconds)
    }

    /// A generator for worker `n`, reproducible from the seed.
    fn rng(&self, n: u64) -> StdRng {
        StdRng::seed_from_u64(self.seed.wrapping_mul(1_000_003).wrapping_add(n))
    }

    /// The end of the load as microseconds since the epoch, for shell loops
    /// (`${EPOCHREALTIME/[.,]/}`).
    fn end_us(&self) -> String {
        let end = SystemTime::now() + self.load();
        end.duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros()
            .to_string()
    }
}

/// What went wrong anywhere in a drill: every worker reports here and stops the others; the
/// test then fails with the first messages.
#[derive(Default)]
struct Failures {
    stop: AtomicBool,
    list: Mutex<Vec<String>>,
}

impl Failures {
    fn fail(&self, msg: String) {
        self.stop.store(true, SeqCst);
        let mut l = self.list.lock().unwrap();
        if l.len() < 50 {
            l.push(msg);
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(SeqCst)
    }

    #[track_caller]
    fn assert_none(&self, what: &str) {
        let l = self.list.lock().unwrap();
        assert!(
            l.is_empty(),
            "{what}: {} failure(s), the first:\n  {}",
            l.len(),
            l.iter().take(10).cloned().collect::<Vec<_>>().join("\n  ")
        );
    }
}

/// A child process killed and reaped when dropped, so that a failing test leaves nothing
/// running (and holding the mount busy).
struct Killed(Option<Child>);

impl Killed {
    /// Waits (at most `limit`) and returns the exit status and stdout, stderr.
    fn finish(mut self, limit: Duration) -> (std::process::ExitStatus, String, String) {
        let mut child = self.0.take().unwrap();
        let until = Instant::now() + limit;
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() > until {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "a worker process did not finish within {limit:?}; stderr:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `bash -c script` in the background, with `$M` the mount and `env` set.
fn spawn_bash(mnt: &Path, script: &str, env: &[(&str, String)]) -> Killed {
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(script)
        .current_dir(mnt)
        .env("M", mnt)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    Killed(Some(c.spawn().expect("spawn bash")))
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

/// One `write()` on a fresh open for writing (a command file takes one command per write).
fn write_once(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    let n = f.write(bytes)?;
    assert_eq!(n, bytes.len(), "a short write to {}", path.display());
    Ok(())
}

/// A description written and committed: `fsync()` returns the commit's errno.
fn write_text(path: &Path, text: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).truncate(true).open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

fn json(path: &Path) -> Result<serde_json::Value, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{} is not JSON ({e}): {text:?}", path.display()))
}

fn state_of(path: &Path) -> Result<String, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    match text.strip_suffix('\n') {
        Some(s) if !s.contains('\n') => Ok(s.to_string()),
        _ => Err(format!("{} reads {text:?}", path.display())),
    }
}

/// The names of a group's records, from one listing.
fn record_names(group: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(group)
        .unwrap_or_else(|e| panic!("list {}: {e}", group.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// A fresh keystore and its mount: the daemon is dropped (stopped) before the scratch
/// directory goes.
struct Drill {
    daemon: Daemon,
    scratch: Scratch,
}

impl Drill {
    fn new() -> Drill {
        let scratch = Scratch::new();
        let daemon = Daemon::start_init(&scratch.path("data"), &scratch.path("mnt"));
        Drill { daemon, scratch }
    }

    /// Stops the daemon (SIGTERM: it must unmount and exit 0) and checks the keystore offline.
    fn finish(self) {
        let data = self.daemon.data.clone();
        self.daemon.stop();
        ok("kmsfs verify", verify(&data));
        drop(self.scratch);
    }
}

// ---- 1. activations -----------------------------------------------------------------------

const RECORDS: [&str; 4] = ["k0", "k1", "k2", "k3"];

/// Activations started (before the system call) and completed (after it returned).
#[derive(Default)]
struct Switches {
    started: AtomicU64,
    completed: AtomicU64,
}

/// What one pass of a reader saw.
struct Pass {
    link: String,
    group_active: String,
    states: Vec<String>,
    json_states: Vec<String>,
}

fn read_pass(mnt: &Path) -> Result<Pass, String> {
    let pool = mnt.join("pool");
    let link = fs::read_link(pool.join(".active"))
        .map_err(|e| {
            format!(".active is missing in a group that always has an active record: {e}")
        })?
        .to_string_lossy()
        .into_owned();
    let group = json(&pool.join(".group.json"))?;
    let group_active = match group["active"].as_str() {
        Some(a) => a.to_string(),
        None => return Err(format!(".group.json shows no active record: {group}")),
    };
    let mut states = Vec::new();
    let mut json_states = Vec::new();
    for r in RECORDS {
        let s = state_of(&pool.join(r).join("state"))?;
        if s != "active" && s != "inactive" {
            return Err(format!("{r}/state reads {s:?}"));
        }
        states.push(s);
        let j = json(&pool.join(r).join("record.json"))?;
        if j["name"] != r {
            return Err(format!("{r}/record.json names {}", j["name"]));
        }
        json_states.push(j["state"].as_str().unwrap_or("?").to_string());
    }
    for one in [&link, &group_active] {
        if !RECORDS.contains(&one.as_str()) {
            return Err(format!("the active record is {one:?}"));
        }
    }
    Ok(Pass {
        link,
        group_active,
        states,
        json_states,
    })
}

fn actives(states: &[String]) -> Vec<&'static str> {
    RECORDS
        .iter()
        .zip(states)
        .filter(|(_, s)| *s == "active")
        .map(|(r, _)| *r)
        .collect()
}

/// Every view of the group names exactly `one` active record.
fn all_agree(p: &Pass) -> Result<String, String> {
    let by_state = actives(&p.states);
    let by_json = actives(&p.json_states);
    if by_state.len() == 1
        && by_json == by_state
        && p.link == by_state[0]
        && p.group_active == p.link
    {
        Ok(p.link.clone())
    } else {
        Err(format!(
            "the views disagree: state files {by_state:?}, record.json {by_json:?}, .active {:?}, .group.json {:?}",
            p.link, p.group_active
        ))
    }
}

#[test]
fn parallel_activations_keep_exactly_one_active_record() {
    let k = knobs();
    let d = Drill::new();
    let mnt = d.daemon.mnt.clone();
    d.daemon.sh_ok(
        "mkdir pool && for r in k0 k1 k2 k3; do mkdir pool/$r && echo active > pool/$r/state; done",
    );
    let sw = Switches::default();
    let f = Failures::default();
    let pause = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let (acks, fresh, passes, quiet) = (
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    );
    // Shell readers in processes of their own: the two files that are one snapshot each must
    // always name one active record.
    let shell_readers: Vec<Killed> = (0..2)
        .map(|_| {
            spawn_bash(
                &mnt,
                r#"n=0
                while (( ${EPOCHREALTIME/[.,]/} < END_US )); do
                  t=$(readlink "$M/pool/.active") || { echo "no .active after $n reads" >&2; exit 1; }
                  [[ $t == k[0-3] ]] || { echo "bad .active: $t" >&2; exit 1; }
                  g=$(<"$M/pool/.group.json") || exit 1
                  [[ $g == *'"active": "k'[0-3]'"'* ]] || { echo "no active in .group.json: $g" >&2; exit 1; }
                  n=$((n+1))
                done
                echo $n"#,
                &[("END_US", k.end_us())],
            )
        })
        .collect();
    let deadline = Instant::now() + k.load();
    std::thread::scope(|s| {
        for w in 0..k.workers {
            let (sw, f, pause, acks, fresh, mnt) = (&sw, &f, &pause, &acks, &fresh, &mnt);
            let mut rng = k.rng(w as u64);
            s.spawn(move || {
                let pool = mnt.join("pool");
                while Instant::now() < deadline && !f.stopped() {
                    if pause.load(SeqCst) {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    let r = RECORDS[rng.gen_range(0..RECORDS.len())];
                    let ticket = sw.started.fetch_add(1, SeqCst);
                    // Every activation started before this one had returned by now, if this
                    // count is the ticket: none of them can take effect after this one.
                    let settled = sw.completed.load(SeqCst) == ticket;
                    let res = write_once(&pool.join(r).join("state"), b"active");
                    sw.completed.fetch_add(1, SeqCst);
                    if let Err(e) = res {
                        f.fail(format!("activating {r}: {e}"));
                        return;
                    }
                    acks.fetch_add(1, SeqCst);
                    // No stale read: with nothing else in flight from the start of this
                    // activation to the end of the reads after it, every view must show it.
                    let seen = read_pass(mnt);
                    if settled && sw.started.load(SeqCst) == ticket + 1 {
                        fresh.fetch_add(1, SeqCst);
                        match seen.and_then(|p| all_agree(&p)) {
                            Ok(a) if a == r => {}
                            Ok(a) => f.fail(format!("activated {r}, then read {a} as active")),
                            Err(e) => f.fail(format!("right after activating {r}: {e}")),
                        }
                    }
                }
            });
        }
        for _ in 0..2 {
            let (sw, f, passes, quiet, mnt, done) = (&sw, &f, &passes, &quiet, &mnt, &done);
            s.spawn(move || {
                while !done.load(SeqCst) && !f.stopped() {
                    let before = sw.completed.load(SeqCst);
                    let pass = read_pass(mnt);
                    let changes = sw.started.load(SeqCst) - before;
                    passes.fetch_add(1, SeqCst);
                    let pass = match pass {
                        Ok(p) => p,
                        Err(e) => return f.fail(e),
                    };
                    for (view, states) in [("state", &pass.states), ("record.json", &pass.json_states)] {
                        let n = actives(states).len() as u64;
                        if n > 1 + changes || (n == 0 && changes == 0) {
                            f.fail(format!(
                                "a pass over every {view} saw {n} active records with at most {changes} switch(es) during it: {states:?}"
                            ));
                        }
                    }
                    if changes == 0 {
                        quiet.fetch_add(1, SeqCst);
                        if let Err(e) = all_agree(&pass) {
                            f.fail(format!("with no activation in flight: {e}"));
                        }
                    }
                }
            });
        }
        // Now and then the writers pause, so that some passes see a keystore at rest; until
        // one has, for longer (on a loaded machine one activation can outlast a short pause).
        while Instant::now() < deadline && !f.stopped() {
            std::thread::sleep(Duration::from_millis(120));
            pause.store(true, SeqCst);
            let before = quiet.load(SeqCst);
            let rest = if before == 0 { 500 } else { 30 };
            let until = Instant::now() + Duration::from_millis(rest);
            while Instant::now() < until && (before > 0 || quiet.load(SeqCst) == before) {
                std::thread::sleep(Duration::from_millis(5));
            }
            pause.store(false, SeqCst);
        }
        // The readers stop once the writers have.
        while Instant::now() < deadline + Duration::from_millis(50) {
            std::thread::sleep(Duration::from_millis(10));
        }
        done.store(true, SeqCst);
    });
    let mut shell_reads = 0u64;
    for r in shell_readers {
        let (status, out, err) = r.finish(Duration::from_secs(30));
        if !status.success() {
            f.fail(format!("a shell reader failed: {err}"));
        }
        shell_reads += out.trim().parse::<u64>().unwrap_or(0);
    }
    f.assert_none("parallel activations");
    // At rest: exactly one active, and every view agrees.
    let last = read_pass(&mnt).and_then(|p| all_agree(&p));
    let last = last.unwrap_or_else(|e| panic!("after the writers stopped: {e}"));
    // And alone: every activation shows at once in every view.
    for r in RECORDS.iter().chain(RECORDS.iter().rev()) {
        write_once(&mnt.join("pool").join(r).join("state"), b"active").unwrap();
        let now = read_pass(&mnt).and_then(|p| all_agree(&p));
        assert_eq!(now.as_deref(), Ok(*r), "right after activating {r} alone");
    }
    eprintln!(
        "activations: seed {}, {} writer threads + 2 reader threads + 2 shell reader processes for {:.1} s: \
         {} activations acknowledged, {} checked fresh right after their return (and 8 alone afterwards), {} reader passes \
         ({} with no activation in flight), {} shell reads; {last} active at the end",
        k.seed,
        k.workers,
        k.seconds,
        acks.load(SeqCst),
        fresh.load(SeqCst),
        passes.load(SeqCst),
        quiet.load(SeqCst),
        shell_reads
    );
    assert!(acks.load(SeqCst) > 0, "no activation was made");
    assert!(
        quiet.load(SeqCst) > 0,
        "no reader pass ran with the keystore at rest: the strict check never ran"
    );
    d.finish();
}

// ---- 2. one name, many creators -------------------------------------------------------------

#[test]
fn parallel_creates_of_one_name_have_exactly_one_winner() {
    let k = knobs();
    let d = Drill::new();
    let mnt = d.daemon.mnt.clone();
    fs::create_dir(mnt.join("pool")).unwrap();
    let n = k.workers;
    let barrier = Barrier::new(n);
    let finished = AtomicBool::new(false);
    // round -> (worker, how, result)
    type Outcome = (usize, &'static str, Result<(), i32>);
    let results: Mutex<BTreeMap<usize, Vec<Outcome>>> = Mutex::default();
    let deadline = Instant::now() + k.load();
    std::thread::scope(|s| {
        for w in 0..n {
            let (barrier, finished, results, mnt) = (&barrier, &finished, &results, &mnt);
            s.spawn(move || {
                for round in 0.. {
                    // Every third round races groups at the top; the others, records.
                    let group_round = round % 3 == 2;
                    let how = match (group_round, (w + round) % 3) {
                        (true, _) => "mkdir group",
                        (false, 0) => "mkdir",
                        (false, 1) => ".create",
                        (false, _) => ".create active",
                    };
                    let name = format!("same-{round}");
                    // `.create` is opened before the start, so that the writes race closely.
                    let create = how.starts_with(".create").then(|| {
                        OpenOptions::new()
                            .write(true)
                            .open(mnt.join("pool/.create"))
                            .expect("open .create")
                    });
                    barrier.wait();
                    let r = match how {
                        "mkdir group" => fs::create_dir(mnt.join(&name)),
                        "mkdir" => fs::create_dir(mnt.join("pool").join(&name)),
                        _ => {
                            let state = if how == ".create active" {
                                "active"
                            } else {
                                "prelive"
                            };
                            let obj = format!(r#"{{"name": "{name}", "state": "{state}"}}"#);
                            create.unwrap().write(obj.as_bytes()).map(drop)
                        }
                    };
                    results.lock().unwrap().entry(round).or_default().push((
                        w,
                        how,
                        r.map_err(|e| errno(&e)),
                    ));
                    if barrier.wait().is_leader() && Instant::now() > deadline {
                        finished.store(true, SeqCst);
                    }
                    barrier.wait();
                    if finished.load(SeqCst) {
                        return;
                    }
                }
            });
        }
    });
    let results = results.into_inner().unwrap();
    let (mut groups, mut records) = (BTreeSet::new(), BTreeSet::new());
    let mut eexist = 0;
    for (round, outcomes) in &results {
        let winners: Vec<_> = outcomes.iter().filter(|o| o.2.is_ok()).collect();
        let wrong: Vec<_> = outcomes
            .iter()
            .filter(|o| matches!(o.2, Err(e) if e != libc::EEXIST))
            .collect();
        assert!(
            winners.len() == 1 && wrong.is_empty(),
            "round {round}: {} winner(s), and errnos other than EEXIST: {outcomes:?}",
            winners.len()
        );
        eexist += outcomes.len() - 1;
        let name = format!("same-{round}");
        if winners[0].1 == "mkdir group" {
            groups.insert(name);
        } else {
            records.insert(name);
        }
    }
    // Each name exactly once, as what won.
    let listed: BTreeSet<String> = record_names(&mnt.join("pool")).into_iter().collect();
    assert_eq!(listed, records, "the records of pool");
    let top: BTreeSet<String> = record_names(&mnt)
        .into_iter()
        .filter(|g| g != "pool")
        .collect();
    assert_eq!(top, groups, "the groups");
    let status = d.daemon.json(".status");
    assert_eq!(status["records"], records.len());
    assert_eq!(status["groups"], groups.len() + 1);
    let actives = records
        .iter()
        .filter(|r| d.daemon.read(&format!("pool/{r}/state")) == "active\n")
        .count();
    assert!(actives <= 1, "{actives} active records");
    eprintln!(
        "one name, many creators: seed {}, {n} threads for {:.1} s: {} rounds ({} records by mkdir or .create, {} groups by mkdir), \
         each with one winner and {eexist} EEXIST in all",
        k.seed,
        k.seconds,
        results.len(),
        records.len(),
        groups.len()
    );
    d.finish();
}

// ---- 3. many names, many creators ------------------------------------------------------------

#[test]
fn parallel_creates_of_different_names_all_land() {
    let k = knobs();
    let d = Drill::new();
    let mnt = d.daemon.mnt.clone();
    fs::create_dir(mnt.join("pool")).unwrap();
    let acks_dir = d.scratch.mkdir("acks");
    // Processes: half keep one `.create` open and write one object after another to it (the
    // same open file takes the next object once one is complete), half use mkdir.
    let procs: Vec<(String, Killed)> = (0..k.workers)
        .map(|p| {
            let (who, script) = if p % 2 == 0 {
                (
                    format!("b{p}"),
                    r#"exec 3>"$M/pool/.create" || exit 1
                    i=0
                    while (( ${EPOCHREALTIME/[.,]/} < END_US )); do
                      printf '{"name": "%s-%d", "description": "by %s %d"}\n' "$WHO" $i "$WHO" $i >&3 \
                        || { echo "create $WHO-$i failed" >&2; exit 1; }
                      echo "$WHO-$i" >> "$ACKS"
                      i=$((i+1))
                    done"#,
                )
            } else {
                (
                    format!("m{p}"),
                    r#"i=0
                    while (( ${EPOCHREALTIME/[.,]/} < END_US )); do
                      mkdir "$M/pool/$WHO-$i" || exit 1
                      echo "$WHO-$i" >> "$ACKS"
                      i=$((i+1))
                    done"#,
                )
            };
            let acks = acks_dir.join(&who).to_string_lossy().into_owned();
            let child = spawn_bash(
                &mnt,
                script,
                &[("END_US", k.end_us()), ("WHO", who.clone()), ("ACKS", acks)],
            );
            (who, child)
        })
        .collect();
    // And threads, each opening `.create` afresh for every record.
    let f = Failures::default();
    let thread_acks: Mutex<Vec<String>> = Mutex::default();
    let deadline = Instant::now() + k.load();
    std::thread::scope(|s| {
        for t in 0..k.workers / 2 {
            let (f, thread_acks, mnt) = (&f, &thread_acks, &mnt);
            s.spawn(move || {
                for i in 0.. {
                    if Instant::now() > deadline || f.stopped() {
                        return;
                    }
                    let name = format!("t{t}-{i}");
                    let obj = format!(r#"{{"name": "{name}", "description": "by t{t} {i}"}}"#);
                    match write_once(&mnt.join("pool/.create"), obj.as_bytes()) {
                        Ok(()) => thread_acks.lock().unwrap().push(name),
                        Err(e) => f.fail(format!("create {name}: {e}")),
                    }
                }
            });
        }
    });
    let mut acked: BTreeSet<String> = thread_acks.into_inner().unwrap().into_iter().collect();
    for (who, child) in procs {
        let (status, _, err) = child.finish(Duration::from_secs(30));
        assert!(status.success(), "process {who} failed: {status}: {err}");
        let text = fs::read_to_string(acks_dir.join(&who)).unwrap_or_default();
        acked.extend(text.lines().map(str::to_string));
    }
    f.assert_none("creates of different names");
    let listed: BTreeSet<String> = record_names(&mnt.join("pool")).into_iter().collect();
    let lost: Vec<_> = acked.difference(&listed).take(5).collect();
    let extra: Vec<_> = listed.difference(&acked).take(5).collect();
    assert!(
        lost.is_empty() && extra.is_empty(),
        "{} acknowledged records are missing (e.g. {lost:?}); {} records nobody acknowledged (e.g. {extra:?})",
        acked.difference(&listed).count(),
        listed.difference(&acked).count()
    );
    for name in &acked {
        let j = json(&mnt.join("pool").join(name).join("record.json")).unwrap();
        assert_eq!(j["name"], name.as_str());
        assert_eq!(j["state"], "prelive", "{name}");
        let (who, i) = name.split_once('-').unwrap();
        let want = if who.starts_with('m') {
            String::new()
        } else {
            format!("by {who} {i}")
        };
        assert_eq!(j["description"], want.as_str(), "{name}");
    }
    assert_eq!(d.daemon.json(".status")["records"], acked.len());
    eprintln!(
        "many names: seed {}, {} processes (.create on one open file, mkdir) + {} threads (.create each) for {:.1} s: \
         {} records acknowledged, all present once, none else",
        k.seed,
        k.workers,
        k.workers / 2,
        k.seconds,
        acked.len()
    );
    d.finish();
}

// ---- 4. renames racing state changes ----------------------------------------------------------

const NAMES: [&str; 3] = ["n0", "n1", "n2"];

/// The current name of the record with this tag, through `.by-tag`.
fn name_by_tag(mnt: &Path, tag: &str) -> Result<String, String> {
    let target = fs::read_link(mnt.join(".by-tag").join(tag))
        .map_err(|e| format!("readlink .by-tag/{tag}: {e}"))?;
    let target = target.to_string_lossy();
    match target.strip_prefix("../pool/") {
        Some(n) if NAMES.contains(&n) => Ok(n.to_string()),
        _ => Err(format!(".by-tag/{tag} points to {target}")),
    }
}

#[test]
fn renames_racing_state_changes_keep_one_name_and_one_state() {
    let k = knobs();
    let d = Drill::new();
    let mnt = d.daemon.mnt.clone();
    d.daemon.sh_ok(
        "mkdir pool pool/n0 pool/n1 && echo active > pool/n1/state && echo active > pool/n0/state",
    );
    let tags: Vec<String> = ["n0", "n1"]
        .iter()
        .map(|n| {
            d.daemon.json(&format!("pool/{n}/record.json"))["tag"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let f = Failures::default();
    let (renames, rename_refusals, states, state_enoent, listings) = (
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    );
    // A shell process renames too, with GNU mv.
    let mv = spawn_bash(
        &mnt,
        r#"n=0
        while (( ${EPOCHREALTIME/[.,]/} < END_US )); do
          for t in $TAGS; do
            cur=$(readlink "$M/.by-tag/$t") || { echo "readlink .by-tag/$t failed" >&2; exit 1; }
            cur=${cur#../pool/}
            dst=n$((RANDOM % 3))
            [[ $dst == "$cur" ]] && continue
            mv -T "$M/pool/$cur" "$M/pool/$dst" 2>>"$ERRS" && n=$((n+1))
          done
        done
        echo $n"#,
        &[
            ("END_US", k.end_us()),
            ("TAGS", tags.join(" ")),
            (
                "ERRS",
                d.scratch.path("mv.err").to_string_lossy().into_owned(),
            ),
        ],
    );
    let deadline = Instant::now() + k.load();
    std::thread::scope(|s| {
        // Renamers: the name is read, then renamed; another renamer may have moved it in
        // between (ENOENT), or the other record may hold the target name (EEXIST).
        for w in 0..k.workers / 2 {
            let (f, tags, mnt, renames, rename_refusals) =
                (&f, &tags, &mnt, &renames, &rename_refusals);
            let mut rng = k.rng(w as u64);
            s.spawn(move || {
                while Instant::now() < deadline && !f.stopped() {
                    let tag = &tags[rng.gen_range(0..2)];
                    let cur = match name_by_tag(mnt, tag) {
                        Ok(c) => c,
                        Err(e) => return f.fail(e),
                    };
                    let dst = NAMES[rng.gen_range(0..3)];
                    if dst == cur {
                        continue;
                    }
                    match fs::rename(mnt.join("pool").join(&cur), mnt.join("pool").join(dst)) {
                        Ok(()) => renames.fetch_add(1, SeqCst),
                        Err(e) if matches!(errno(&e), libc::ENOENT | libc::EEXIST) => {
                            rename_refusals.fetch_add(1, SeqCst)
                        }
                        Err(e) => return f.fail(format!("rename {cur} -> {dst}: {e}")),
                    };
                }
            });
        }
        // State changers: through a file opened once (it follows its record through every
        // rename: no error at all), and through the path of the moment (ENOENT if the record
        // moved between the readlink and the open).
        for w in 0..k.workers / 2 {
            let (f, tags, mnt, states, state_enoent) = (&f, &tags, &mnt, &states, &state_enoent);
            let mut rng = k.rng(100 + w as u64);
            s.spawn(move || {
                let mut held: Vec<fs::File> = tags
                    .iter()
                    .map(|t| {
                        OpenOptions::new()
                            .write(true)
                            .open(mnt.join(".by-tag").join(t).join("state"))
                            .expect("open state")
                    })
                    .collect();
                while Instant::now() < deadline && !f.stopped() {
                    let i = rng.gen_range(0..2);
                    let word: &[u8] = if rng.gen_bool(0.5) {
                        b"active"
                    } else {
                        b"inactive"
                    };
                    let what = String::from_utf8_lossy(word);
                    if rng.gen_bool(0.5) {
                        if let Err(e) = held[i].write(word) {
                            return f.fail(format!("{what} through an open state file: {e}"));
                        }
                    } else {
                        let via = if rng.gen_bool(0.5) {
                            mnt.join(".by-tag").join(&tags[i]).join("state")
                        } else {
                            match name_by_tag(mnt, &tags[i]) {
                                Ok(n) => mnt.join("pool").join(n).join("state"),
                                Err(e) => return f.fail(e),
                            }
                        };
                        match write_once(&via, word) {
                            Ok(()) => {}
                            Err(e) if errno(&e) == libc::ENOENT => {
                                state_enoent.fetch_add(1, SeqCst);
                                continue;
                            }
                            Err(e) => return f.fail(format!("{what} > {}: {e}", via.display())),
                        }
                    }
                    states.fetch_add(1, SeqCst);
                }
            });
        }
        // A reader: every name is a record directory or nothing, and every listing (one
        // snapshot) shows both records, each under one name.
        {
            let (f, mnt, listings) = (&f, &mnt, &listings);
            s.spawn(move || {
                while Instant::now() < deadline && !f.stopped() {
                    for n in NAMES {
                        match fs::symlink_metadata(mnt.join("pool").join(n)) {
                            Ok(m) if m.is_dir() => {}
                            Err(e) if errno(&e) == libc::ENOENT => {}
                            other => return f.fail(format!("lstat pool/{n}: {other:?}")),
                        }
                    }
                    let names = record_names(&mnt.join("pool"));
                    listings.fetch_add(1, SeqCst);
                    let distinct: BTreeSet<&String> = names.iter().collect();
                    if names.len() != 2
                        || distinct.len() != 2
                        || names.iter().any(|n| !NAMES.contains(&n.as_str()))
                    {
                        return f.fail(format!("a listing of pool shows {names:?}"));
                    }
                }
            });
        }
    });
    let (status, out, err) = mv.finish(Duration::from_secs(30));
    assert!(status.success(), "the mv loop failed: {err}");
    let mv_renames: u64 = out.trim().parse().unwrap_or(0);
    let mv_errors = fs::read_to_string(d.scratch.path("mv.err")).unwrap_or_default();
    // ENOENT and EEXIST, as for the threads; and two messages of coreutils 9's own checks,
    // which race with the renamers: it stats the source and then the target, and a renamer
    // that moves the same record in between makes them one inode ("are the same file"); and
    // when its renameat2 said EEXIST but the target is gone by its fstatat, it goes on with a
    // stat buffer it never filled (copy.c, `rename_errno == EEXIST` after `new_dst = true`),
    // which reads as a non-directory. The lister's lstat of every name checks the mount's
    // side of that: a name is a record directory or absent, never anything else.
    let odd: Vec<&str> = mv_errors
        .lines()
        .filter(|l| {
            !l.ends_with("No such file or directory")
                && !l.ends_with("File exists")
                && !l.ends_with("are the same file")
                && !l.contains("cannot overwrite non-directory")
        })
        .collect();
    f.assert_none("renames racing state changes");
    assert!(
        odd.is_empty(),
        "mv failed otherwise than ENOENT or EEXIST: {odd:?}"
    );
    // At rest: each record under exactly one name, and every view agrees.
    let names = record_names(&mnt.join("pool"));
    assert_eq!(names.len(), 2, "{names:?}");
    let mut active = Vec::new();
    for tag in &tags {
        let name = name_by_tag(&mnt, tag).unwrap();
        assert!(
            names.contains(&name),
            "{tag} is {name}, not listed in {names:?}"
        );
        let j = json(&mnt.join("pool").join(&name).join("record.json")).unwrap();
        assert_eq!(j["name"], name.as_str());
        assert_eq!(j["tag"], tag.as_str());
        let state = state_of(&mnt.join("pool").join(&name).join("state")).unwrap();
        assert_eq!(j["state"], state.as_str(), "{name}");
        if state == "active" {
            active.push(name);
        }
    }
    assert!(active.len() <= 1, "{active:?} are active");
    let link = fs::read_link(mnt.join("pool/.active")).ok();
    assert_eq!(
        link.map(|l| l.to_string_lossy().into_owned()),
        active.first().cloned(),
        ".active"
    );
    assert_eq!(
        d.daemon.json("pool/.group.json")["active"].as_str(),
        active.first().map(|s| s.as_str())
    );
    eprintln!(
        "renames vs states: seed {}, {} renamer threads + 1 mv process, {} state threads, 1 lister, for {:.1} s: \
         {} renames ({} by mv, {} mv refusals), {} refused ENOENT/EEXIST, {} state writes ({} ENOENT on a moving path), \
         {} listings; ends as {names:?} with {active:?} active",
        k.seed,
        k.workers / 2,
        k.workers / 2,
        k.seconds,
        renames.load(SeqCst) + mv_renames,
        mv_renames,
        mv_errors.lines().count(),
        rename_refusals.load(SeqCst),
        states.load(SeqCst),
        state_enoent.load(SeqCst),
        listings.load(SeqCst)
    );
    d.finish();
}

// ---- 5. quiesce from many processes -------------------------------------------------------------

/// A holder's progress: incremented at every step, so `value % 4` is the phase (0 idle,
/// 1 asking for a hold, 2 holding, 3 releasing) and an unchanged value means it did not move.
type Phase = AtomicU64;

#[test]
fn quiesce_holds_from_many_processes_are_counted_exactly() {
    let k = knobs();
    let d = Drill::new();
    let mnt = d.daemon.mnt.clone();
    d.daemon
        .sh_ok("mkdir pool pool/k && echo before > pool/k/description");
    let before = support::snapshot::snapshot(&d.daemon);
    let f = Failures::default();
    let phases: Vec<Phase> = (0..k.workers).map(|_| Phase::new(0)).collect();
    let (holds_taken, probes, reads) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let max_seen = AtomicUsize::new(0);
    // Shell processes hold and release too; the counting treats them as "maybe holding" at
    // every moment.
    let shells = 2;
    let shell_holders: Vec<Killed> = (0..shells)
        .map(|_| {
            spawn_bash(
                &mnt,
                r#"n=0
                while (( ${EPOCHREALTIME/[.,]/} < END_US )); do
                  echo quiesce 600 > "$M/.quiesce" || { echo "quiesce failed" >&2; exit 1; }
                  if err=$(mkdir "$M/pool/from-shell" 2>&1); then echo "mkdir while frozen worked" >&2; exit 1; fi
                  [[ $err == *"Read-only file system"* ]] || { echo "mkdir while frozen: $err" >&2; exit 1; }
                  echo unquiesce > "$M/.quiesce" || { echo "unquiesce failed" >&2; exit 1; }
                  n=$((n+1))
                done
                echo $n"#,
                &[("END_US", k.end_us())],
            )
        })
        .collect();
    let deadline = Instant::now() + k.load();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        for w in 0..k.workers {
            let (f, phases, mnt, holds_taken, probes) = (&f, &phases, &mnt, &holds_taken, &probes);
            let mut rng = k.rng(w as u64);
            s.spawn(move || {
                let phase = &phases[w];
                let q = mnt.join(".quiesce");
                while Instant::now() < deadline && !f.stopped() {
                    let cmd: &[u8] = if rng.gen_bool(0.5) {
                        b"quiesce"
                    } else {
                        b"quiesce 600"
                    };
                    phase.fetch_add(1, SeqCst); // 1: asking
                    if let Err(e) = write_once(&q, cmd) {
                        return f.fail(format!("{}: {e}", String::from_utf8_lossy(cmd)));
                    }
                    holds_taken.fetch_add(1, SeqCst);
                    phase.fetch_add(1, SeqCst); // 2: holding
                                                // This hold is there: every change is EROFS, whatever the others do.
                    let probe = match rng.gen_range(0..4) {
                        0 => fs::create_dir(mnt.join("pool/probe")),
                        1 => write_once(&mnt.join("pool/k/state"), b"active"),
                        2 => write_text(&mnt.join("pool/k/description"), "during\n"),
                        _ => write_once(&mnt.join("pool/.create"), br#"{"name": "probe"}"#),
                    };
                    probes.fetch_add(1, SeqCst);
                    match probe {
                        Err(e) if errno(&e) == libc::EROFS => {}
                        other => {
                            return f.fail(format!("a change while holding: {other:?}, not EROFS"))
                        }
                    }
                    match json(&q) {
                        Ok(v) if v["quiesced"] == true && v["holds"].as_u64() >= Some(1) => {}
                        other => return f.fail(format!(".quiesce while holding: {other:?}")),
                    }
                    if rng.gen_bool(0.5) {
                        std::thread::sleep(Duration::from_millis(rng.gen_range(0..3)));
                    }
                    phase.fetch_add(1, SeqCst); // 3: releasing
                    if let Err(e) = write_once(&q, b"unquiesce") {
                        return f.fail(format!("unquiesce: {e}"));
                    }
                    phase.fetch_add(1, SeqCst); // 0: idle
                    if rng.gen_bool(0.3) {
                        std::thread::sleep(Duration::from_millis(rng.gen_range(0..3)));
                    }
                }
            });
        }
        for _ in 0..2 {
            let (f, phases, mnt, reads, max_seen, done) =
                (&f, &phases, &mnt, &reads, &max_seen, &done);
            s.spawn(move || {
                while !done.load(SeqCst) && !f.stopped() {
                    let p0: Vec<u64> = phases.iter().map(|p| p.load(SeqCst)).collect();
                    let v = match json(&mnt.join(".quiesce")) {
                        Ok(v) => v,
                        Err(e) => return f.fail(e),
                    };
                    let p1: Vec<u64> = phases.iter().map(|p| p.load(SeqCst)).collect();
                    reads.fetch_add(1, SeqCst);
                    let sure = p0.iter().zip(&p1).filter(|(a, b)| a == b && *a % 4 == 2).count();
                    let maybe = shells
                        + p0.iter()
                            .zip(&p1)
                            .filter(|(a, b)| a != b || *a % 4 == 1 || *a % 4 == 3)
                            .count();
                    let holds = v["holds"].as_u64().unwrap_or(u64::MAX) as usize;
                    max_seen.fetch_max(holds, SeqCst);
                    let leases = v["leases"].as_array().map_or(usize::MAX, Vec::len);
                    let consistent = v["quiesced"] == (holds > 0)
                        && v["since"].is_null() == (holds == 0)
                        && leases <= holds;
                    if holds < sure || holds > sure + maybe || !consistent {
                        return f.fail(format!(
                            ".quiesce shows {v} while {sure} thread(s) surely held and {maybe} more may have"
                        ));
                    }
                }
            });
        }
        while Instant::now() < deadline + Duration::from_millis(50) {
            std::thread::sleep(Duration::from_millis(10));
        }
        done.store(true, SeqCst);
    });
    let mut shell_holds = 0u64;
    for s in shell_holders {
        let (status, out, err) = s.finish(Duration::from_secs(30));
        assert!(status.success(), "a shell holder failed: {err}");
        shell_holds += out.trim().parse::<u64>().unwrap_or(0);
    }
    f.assert_none("quiesce from many processes");
    // Every hold was released: not frozen, the files writable again, and nothing changed.
    let q = d.daemon.quiesce();
    assert_eq!(q["holds"], 0, "{q}");
    assert_eq!(q["quiesced"], false, "{q}");
    assert!(
        q["since"].is_null() && q["leases"] == serde_json::json!([]),
        "{q}"
    );
    assert_eq!(d.daemon.json(".status")["quiesced"], false);
    assert_eq!(support::snapshot::modes(&d.daemon.data), vec![0o600; 3]);
    assert_eq!(
        support::snapshot::snapshot(&d.daemon),
        before,
        "a change got through a freeze"
    );
    fs::create_dir(mnt.join("pool/after")).expect("changes resume after the last release");
    eprintln!(
        "quiesce: seed {}, {} holder threads + {shells} shell holder processes + 2 reader threads for {:.1} s: \
         {} holds taken and released by threads, {shell_holds} by shells, {} changes tried while holding (all EROFS), \
         {} reads of .quiesce within bounds (most holds seen at once: {})",
        k.seed,
        k.workers,
        k.seconds,
        holds_taken.load(SeqCst),
        probes.load(SeqCst),
        reads.load(SeqCst),
        max_seen.load(SeqCst)
    );
    d.finish();
}

// ---- 6. readers during writes -----------------------------------------------------------------------

/// A description that shows whether it arrived whole: `seq N len L` and a body derived from N
/// with characters JSON must escape, then `end N`.
fn description(n: u64) -> String {
    let body: String = "é🔑\"\\\t\n<>&"
        .chars()
        .cycle()
        .skip((n % 7) as usize)
        .take(50 + (n as usize * 37) % 900)
        .collect();
    format!("seq {n} len {} {body} end {n}\n", body.len())
}

/// The N of a description written by `description(N)`, checking that it is whole.
fn parse_description(text: &str) -> Result<u64, String> {
    let bad = || format!("a torn or foreign description: {text:?}");
    let rest = text.strip_prefix("seq ").ok_or_else(bad)?;
    let (n, _) = rest.split_once(' ').ok_or_else(bad)?;
    let n: u64 = n.parse().map_err(|_| bad())?;
    if text == description(n) {
        Ok(n)
    } else {
        Err(bad())
    }
}

/// One writer's progress on its record: the last write started and the last one returned.
#[derive(Default)]
struct Progress {
    started: AtomicU64,
    done: AtomicU64,
}

/// After `done` returned and before `started` began, a read may see any write from `done`
/// to `started` (the one in flight), never an older one (stale) and never a newer one.
fn fresh(what: &str, seen: u64, done: u64, started: u64) -> Result<(), String> {
    if seen < done {
        Err(format!(
            "{what}: a stale read: write {done} had returned, the read shows {seen}"
        ))
    } else if seen > started {
        Err(format!(
            "{what}: shows write {seen}, only {started} was started"
        ))
    } else {
        Ok(())
    }
}

fn state_for(n: u64) -> &'static str {
    if n % 2 == 1 {
        "active"
    } else {
        "inactive"
    }
}

#[test]
fn reads_after_a_write_never_show_the_old_value_and_are_never_torn() {
    let k = knobs();
    let d = Drill::new();
    let mnt = d.daemon.mnt.clone();
    let records = k.workers;
    // One record per group, so that an activation moves nothing else; write 0 is the start.
    for r in 0..records {
        fs::create_dir_all(mnt.join(format!("g{r}/k"))).unwrap();
        write_text(&mnt.join(format!("g{r}/k/description")), &description(0)).unwrap();
        write_once(&mnt.join(format!("g{r}/k/state")), b"active").unwrap();
        write_once(&mnt.join(format!("g{r}/k/state")), b"inactive").unwrap();
    }
    let descs: Vec<Progress> = (0..records).map(|_| Progress::default()).collect();
    let states: Vec<Progress> = (0..records).map(|_| Progress::default()).collect();
    let f = Failures::default();
    let (writes, reads, chunked) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let done = AtomicBool::new(false);
    // Shell readers: every JSON file parses, whatever is being written.
    let shell_readers: Vec<Killed> = (0..2)
        .map(|_| {
            spawn_bash(
                &mnt,
                r#"n=0
                while (( ${EPOCHREALTIME/[.,]/} < END_US )); do
                  for r in "$M"/g*/k; do
                    jq -e .name "$r/record.json" >/dev/null || { echo "$r/record.json is not JSON" >&2; exit 1; }
                  done
                  jq -e . "$M/.status" "$M/.quiesce" "$M"/g*/.group.json >/dev/null || { echo "a JSON file is not JSON" >&2; exit 1; }
                  n=$((n+1))
                done
                echo $n"#,
                &[("END_US", k.end_us())],
            )
        })
        .collect();
    let deadline = Instant::now() + k.load();
    std::thread::scope(|s| {
        for r in 0..records {
            let (f, mnt, desc, state, writes) = (&f, &mnt, &descs[r], &states[r], &writes);
            s.spawn(move || {
                let dir = mnt.join(format!("g{r}/k"));
                for n in 1.. {
                    if Instant::now() > deadline || f.stopped() {
                        return;
                    }
                    desc.started.store(n, SeqCst);
                    if let Err(e) = write_text(&dir.join("description"), &description(n)) {
                        return f.fail(format!("g{r}: description {n}: {e}"));
                    }
                    desc.done.store(n, SeqCst);
                    state.started.store(n, SeqCst);
                    if let Err(e) = write_once(&dir.join("state"), state_for(n).as_bytes()) {
                        return f.fail(format!("g{r}: state {n}: {e}"));
                    }
                    state.done.store(n, SeqCst);
                    writes.fetch_add(2, SeqCst);
                }
            });
        }
        for t in 0..2 {
            let (f, mnt, descs, states, reads, chunked, done) =
                (&f, &mnt, &descs, &states, &reads, &chunked, &done);
            let mut rng = k.rng(200 + t);
            s.spawn(move || {
                while !done.load(SeqCst) && !f.stopped() {
                    let r = rng.gen_range(0..records);
                    let dir = mnt.join(format!("g{r}/k"));
                    let in_pieces = rng.gen_bool(0.25);
                    let check = || -> Result<(), String> {
                        // description, whole, and not older than the last write returned.
                        let (d0, text, d1) = (
                            descs[r].done.load(SeqCst),
                            fs::read_to_string(dir.join("description")).map_err(|e| e.to_string())?,
                            descs[r].started.load(SeqCst),
                        );
                        fresh(&format!("g{r}/k/description"), parse_description(&text)?, d0, d1)?;
                        // record.json: valid JSON, and its description likewise.
                        let d0 = descs[r].done.load(SeqCst);
                        let j = json(&dir.join("record.json"))?;
                        let d1 = descs[r].started.load(SeqCst);
                        let jd = j["description"].as_str().ok_or("no description in record.json")?;
                        fresh(&format!("g{r}/k/record.json"), parse_description(jd)?, d0, d1)?;
                        // state: when no write was in flight, exactly the last one written.
                        let (s0, st, s1) = (
                            states[r].done.load(SeqCst),
                            state_of(&dir.join("state"))?,
                            states[r].started.load(SeqCst),
                        );
                        if s1 == s0 && st != state_for(s0) {
                            return Err(format!("g{r}/k/state: write {s0} ({}) had returned, the read shows {st}", state_for(s0)));
                        }
                        if s1 == s0 + 1 && st != state_for(s0) && st != state_for(s1) {
                            return Err(format!("g{r}/k/state reads {st}"));
                        }
                        let (s0, j, s1) = (
                            states[r].done.load(SeqCst),
                            json(&dir.join("record.json"))?,
                            states[r].started.load(SeqCst),
                        );
                        if s1 == s0 && j["state"] != state_for(s0) {
                            return Err(format!("g{r}/k/record.json: state write {s0} ({}) had returned, it shows {}", state_for(s0), j["state"]));
                        }
                        if !in_pieces {
                            return Ok(());
                        }
                        // One open file, read in small pieces while the writer goes on: one
                        // version, whole, from the open.
                        let d0 = descs[r].done.load(SeqCst);
                        let mut file = fs::File::open(dir.join("description")).map_err(|e| e.to_string())?;
                        let d1 = descs[r].started.load(SeqCst);
                        let mut bytes = Vec::new();
                        let mut piece = [0u8; 97];
                        loop {
                            let n = file.read_at(&mut piece, bytes.len() as u64).map_err(|e| e.to_string())?;
                            if n == 0 {
                                break;
                            }
                            bytes.extend_from_slice(&piece[..n]);
                            std::thread::sleep(Duration::from_micros(200));
                        }
                        let text = String::from_utf8(bytes).map_err(|_| "pieces of a description are not UTF-8".to_string())?;
                        fresh(&format!("g{r}/k/description in pieces"), parse_description(&text)?, d0, d1)?;
                        // The same open file read again: the same version.
                        let mut again = Vec::new();
                        file.read_to_end(&mut again).map_err(|e| e.to_string())?;
                        if again != text.as_bytes() {
                            return Err(format!("g{r}/k/description: one open file read two versions"));
                        }
                        chunked.fetch_add(1, SeqCst);
                        Ok(())
                    };
                    if let Err(e) = check() {
                        return f.fail(e);
                    }
                    reads.fetch_add(1, SeqCst);
                }
            });
        }
        while Instant::now() < deadline + Duration::from_millis(50) {
            std::thread::sleep(Duration::from_millis(10));
        }
        done.store(true, SeqCst);
    });
    let mut shell_reads = 0u64;
    for r in shell_readers {
        let (status, out, err) = r.finish(Duration::from_secs(30));
        assert!(status.success(), "a shell reader failed: {err}");
        shell_reads += out.trim().parse::<u64>().unwrap_or(0);
    }
    f.assert_none("readers during writes");
    // At rest, every record shows its last write in every view.
    for r in 0..records {
        let n = descs[r].done.load(SeqCst);
        let s = states[r].done.load(SeqCst);
        let dir = mnt.join(format!("g{r}/k"));
        assert_eq!(
            fs::read_to_string(dir.join("description")).unwrap(),
            description(n)
        );
        let j = json(&dir.join("record.json")).unwrap();
        assert_eq!(j["description"], description(n).as_str());
        assert_eq!(j["state"], state_for(s));
        assert_eq!(state_of(&dir.join("state")).unwrap(), state_for(s));
    }
    eprintln!(
        "readers during writes: seed {}, {records} writer threads (one record each) + 2 reader threads + 2 jq processes \
         for {:.1} s: {} writes acknowledged, {} checked read rounds ({} of them a description in 97-byte pieces), \
         {shell_reads} jq rounds; no stale, torn or invalid read",
        k.seed,
        k.seconds,
        writes.load(SeqCst),
        reads.load(SeqCst),
        chunked.load(SeqCst)
    );
    d.finish();
}

// ---- 7. kill -9 in a busy multi-process run ---------------------------------------------------------

/// The three kinds of worker process, each in a group of its own, each line of its ack file
/// written only after the change's system call returned success:
/// - `mk`: `mkdir rI` (ack `create rI`), `echo active > rI/state` (ack `active rI`);
/// - `cr`: one `.create` kept open, `{"name": "cI", "state": "active", "description": "dI"}`
///   (ack `create cI`); every third one is renamed `mv cI mI` (ack `rename cI mI`);
/// - `ds`: one record's description rewritten with `dd conv=fsync` (which reports the commit):
///   `attempt N` before, `ack N` after; and a second record's state toggled (`attempt S`,
///   `ack S`).
const CRASH_WORKER: &str = r#"
G="$M/$WHO"
# Runs one change; stops quietly once the daemon is dead (ENOTCONN, or ECONNABORTED for a
# request in flight at the kill), loudly on any other failure.
try() {
  local out
  out=$(eval "$1" 2>&1) && return 0
  case $out in
    *"not connected"*|*"connection abort"*) exit 0 ;;
    *) echo "$WHO: $1: $out" >&2; exit 1 ;;
  esac
}
case $KIND in
mk)
  i=0
  while :; do
    try 'mkdir "$G/r$i"'
    echo "create r$i" >> "$ACKS"
    try 'echo active > "$G/r$i/state"'
    echo "active r$i" >> "$ACKS"
    i=$((i+1))
  done ;;
cr)
  exec 3>"$G/.create" || exit 1
  i=0
  while :; do
    try 'printf "{\"name\": \"c%d\", \"state\": \"active\", \"description\": \"d%d\"}" $i $i >&3'
    echo "create c$i" >> "$ACKS"
    if (( i % 3 == 0 )); then
      echo "try-rename c$i m$i" >> "$ACKS"
      try 'mv -T "$G/c$i" "$G/m$i"'
      echo "rename c$i m$i" >> "$ACKS"
    fi
    i=$((i+1))
  done ;;
ds)
  i=1
  while :; do
    echo "attempt desc $i" >> "$ACKS"
    try 'printf "text %d\n" $i | dd of="$G/d/description" conv=fsync status=none'
    echo "ack desc $i" >> "$ACKS"
    if (( i % 2 )); then s=active; else s=inactive; fi
    echo "attempt state $s" >> "$ACKS"
    try 'echo $s > "$G/s/state"'
    echo "ack state $s" >> "$ACKS"
    i=$((i+1))
  done ;;
esac
"#;

/// Checks one worker's group against what it saw acknowledged; returns the acks checked.
fn check_worker(mnt: &Path, who: &str, kind: &str, acks: &str) -> usize {
    let g = mnt.join(who);
    let names: BTreeSet<String> = record_names(&g).into_iter().collect();
    let state = |name: &str| {
        state_of(&g.join(name).join("state"))
            .unwrap_or_else(|e| panic!("{who}: acknowledged record {name} is lost: {e}"))
    };
    let lines: Vec<(&str, &str)> = acks
        .lines()
        .map(|l| l.split_once(' ').unwrap_or((l, "")))
        .collect();
    let mut checked = 0;
    match kind {
        "mk" => {
            for (what, name) in &lines {
                let now = state(name);
                checked += 1;
                // A later activation may have demoted it, never undone it.
                if *what == "active" {
                    assert!(
                        now == "active" || now == "inactive",
                        "{who}: {name} was activated, is {now}"
                    );
                }
            }
        }
        "cr" => {
            let renamed: BTreeSet<&str> = lines
                .iter()
                .filter(|(w, _)| *w == "rename")
                .map(|(_, a)| a.split_once(' ').unwrap().0)
                .collect();
            let tried: BTreeSet<&str> = lines
                .iter()
                .filter(|(w, _)| *w == "try-rename")
                .map(|(_, a)| a.split_once(' ').unwrap().0)
                .collect();
            for (what, name) in &lines {
                if *what != "create" {
                    continue;
                }
                checked += 1;
                let moved = format!("m{}", &name[1..]);
                let here = match (names.contains(*name), names.contains(&moved)) {
                    (true, false) if !renamed.contains(name) => name.to_string(),
                    (false, true) if tried.contains(name) => moved,
                    other => panic!(
                        "{who}: acknowledged {name} (renamed: {}, tried: {}) is found as {other:?} (as {name}, as {moved})",
                        renamed.contains(name),
                        tried.contains(name)
                    ),
                };
                let j = json(&g.join(&here).join("record.json")).unwrap();
                assert_eq!(j["description"], format!("d{}", &name[1..]), "{who}/{here}");
                let st = state(&here);
                assert!(st == "active" || st == "inactive", "{who}/{here} is {st}");
                assert_eq!(j["state"], st.as_str());
            }
        }
        _ => {
            let last = |what: &str| {
                let mut acked = None;
                let mut attempt = None;
                for (w, rest) in &lines {
                    let Some(v) = rest.strip_prefix(what) else {
                        continue;
                    };
                    let v = v.trim().to_string();
                    match *w {
                        "attempt" => attempt = Some(v),
                        _ => acked = Some(v),
                    }
                }
                (acked, attempt)
            };
            let (acked, attempt) = last("desc");
            let text = fs::read_to_string(g.join("d/description")).unwrap();
            let allowed: Vec<String> = [acked.clone(), attempt]
                .into_iter()
                .flatten()
                .map(|n| format!("text {n}\n"))
                .collect();
            if acked.is_some() {
                checked += 1;
                assert!(
                    allowed.contains(&text),
                    "{who}: the description is {text:?}, acknowledged {acked:?}: one of {allowed:?}"
                );
            }
            let (acked, attempt) = last("state");
            let now = state("s");
            if let Some(a) = &acked {
                checked += 1;
                assert!(
                    &now == a || Some(&now) == attempt.as_ref(),
                    "{who}: state {now}, acknowledged {a}, attempted {attempt:?}"
                );
            }
        }
    }
    // Never two active in a group, and `.active` agrees.
    let active: Vec<String> = names
        .iter()
        .filter(|n| state_of(&g.join(n).join("state")).unwrap() == "active")
        .cloned()
        .collect();
    assert!(active.len() <= 1, "{who}: {active:?} are active");
    let link = fs::read_link(g.join(".active"))
        .ok()
        .map(|l| l.to_string_lossy().into_owned());
    assert_eq!(link, active.first().cloned(), "{who}/.active");
    checked
}

#[test]
fn sigkill_in_a_busy_multi_process_run_loses_no_acknowledged_change() {
    let k = knobs();
    let scratch = Scratch::new();
    let (data, mnt) = (scratch.path("data"), scratch.path("mnt"));
    let mut daemon = Daemon::start_init(&data, &mnt);
    let mnt = daemon.mnt.clone();
    let kinds = ["mk", "cr", "ds"];
    let mut rng = k.rng(0);
    let mut total_acks = 0;
    let mut total_checked = 0;
    let mut busy = Vec::new();
    for round in 0..k.rounds {
        let acks_dir = scratch.mkdir(&format!("acks{round}"));
        let workers: Vec<(String, &str)> = (0..k.workers.max(3))
            .map(|w| (format!("r{round}w{w}"), kinds[w % 3]))
            .collect();
        for (who, kind) in &workers {
            fs::create_dir(mnt.join(who)).unwrap();
            if *kind == "ds" {
                fs::create_dir(mnt.join(who).join("d")).unwrap();
                fs::create_dir(mnt.join(who).join("s")).unwrap();
            }
        }
        let procs: Vec<Killed> = workers
            .iter()
            .map(|(who, kind)| {
                spawn_bash(
                    &mnt,
                    CRASH_WORKER,
                    &[
                        ("WHO", who.clone()),
                        ("KIND", kind.to_string()),
                        ("ACKS", acks_dir.join(who).to_string_lossy().into_owned()),
                    ],
                )
            })
            .collect();
        // Kill at a random moment of the load, once the workers are surely busy.
        let at = Duration::from_secs_f64(k.seconds * rng.gen_range(0.4..1.0));
        std::thread::sleep(at);
        busy.push(format!("{:.2}", at.as_secs_f64()));
        daemon.crash();
        // As after a real crash: the mount is there, dead.
        let e = fs::metadata(mnt.join(".status")).unwrap_err();
        assert_eq!(errno(&e), libc::ENOTCONN, "the dead mount: {e}");
        // Every worker notices (ENOTCONN) and stops; none hangs.
        for p in procs {
            let (status, _, err) = p.finish(Duration::from_secs(30));
            assert!(status.success(), "a worker failed: {err}");
        }
        drop(daemon); // detaches the dead mount
        daemon = Daemon::start(&data, &mnt);
        let mut acks = 0;
        for (who, kind) in &workers {
            let text = fs::read_to_string(acks_dir.join(who)).unwrap_or_default();
            acks += text
                .lines()
                .filter(|l| !l.starts_with("attempt") && !l.starts_with("try"))
                .count();
            total_checked += check_worker(&mnt, who, kind, &text);
        }
        assert!(
            acks > 0,
            "round {round}: nothing was acknowledged before the kill"
        );
        total_acks += acks;
        // The remounted keystore takes changes at once.
        fs::create_dir(mnt.join(format!("after{round}"))).unwrap();
    }
    eprintln!(
        "kill -9 while busy: seed {}, {} rounds of {} worker processes (mkdir+activate, .create+mv, dd conv=fsync+state), \
         killed after {:?} s: {total_acks} changes acknowledged, {total_checked} checked present after the remount",
        k.seed,
        k.rounds,
        k.workers.max(3),
        busy
    );
    let data = daemon.data.clone();
    daemon.stop();
    ok("kmsfs verify", verify(&data));
}

// ---- 8. an exec while a description is open ---------------------------------------------------------

/// A process writes a description and, before closing it, starts a program (`Command`, like
/// Python's and Go's, relies on close-on-exec). The child's `execve` closes its copy of the
/// file, and the kernel sends that FLUSH while the child holds the lock that reading its
/// `/proc/PID/exe` takes. The daemon must answer it without looking: it once waited for the
/// exec, which waited for the daemon, with the keystore's write lock held (nothing answered
/// any more, and the child could not be killed).
#[test]
fn an_exec_while_a_description_is_open_does_not_hang_the_daemon() {
    let Drill {
        mut daemon,
        scratch,
    } = Drill::new();
    let mnt = daemon.mnt.clone();
    fs::create_dir_all(mnt.join("pool/k")).unwrap();
    // A text the child's flush commits, and one it refuses (ending inside a character).
    let cases: [(&str, &[u8]); 2] = [
        ("a text", b"written, not closed\n"),
        ("a text ending inside a character", b"caf\xc3"),
    ];
    for (what, text) in cases {
        let mut f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(mnt.join("pool/k/description"))
            .unwrap();
        f.write_all(text).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let child = std::thread::spawn(move || {
            let _ = tx.send(Command::new("true").status().map(|s| s.success()));
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(true)) => {}
            Ok(other) => panic!("{what}: the child failed: {other:?}"),
            Err(_) => {
                // Only SIGKILL of the daemon frees the child: its FLUSH cannot be interrupted.
                daemon.crash();
                child.join().unwrap();
                panic!(
                    "{what}: the exec of a child holding a written description (close-on-exec) \
                     did not finish within 10 s: the daemon hung on its flush"
                );
            }
        }
        child.join().unwrap();
        // The daemon still answers, and takes changes.
        assert!(json(&mnt.join(".status")).is_ok(), "{what}");
        fs::create_dir(mnt.join(format!("pool/after {what}"))).unwrap();
        drop(f);
    }
    // The first text was committed at the child's flush; the second was refused there.
    assert_eq!(
        fs::read_to_string(mnt.join("pool/k/description")).unwrap(),
        "written, not closed\n"
    );
    // The audit log: the child's flush names no executable (it was not the writer, and its
    // /proc/PID/exe could not be read); a writer's own close still names its executable.
    daemon.sh_ok("echo by-bash > pool/k/description");
    let audit = fs::read_to_string(daemon.data.join("audit.log")).unwrap();
    let describes: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["operation"] == "describe record")
        .collect();
    let exes: Vec<Option<&str>> = describes.iter().map(|v| v["exe"].as_str()).collect();
    assert_eq!(describes.len(), 2, "{describes:?}");
    assert_eq!(exes[0], None, "the child's flush: {:?}", describes[0]);
    assert!(
        exes[1].is_some_and(|e| e.ends_with("/bash")),
        "echo's own close: {:?}",
        describes[1]
    );
    eprintln!(
        "exec with a description open: {} children started while this process held a written \
         description; the daemon answered the flush of each execve",
        cases.len()
    );
    let data = daemon.data.clone();
    daemon.stop();
    ok("kmsfs verify", verify(&data));
    drop(scratch);
}
