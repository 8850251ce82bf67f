//! Descriptions written by several processes at once through a real mount: the shell's
//! truncation (which the kernel sends without a file handle) belongs to the process that
//! opened, never to the edits other processes hold open.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::mount::Mounted;

/// A child process killed and reaped when dropped, so that a failing test leaves nothing
/// running (and holding the mount busy).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How long the writers may take before the test gives up (they take under a second).
const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn concurrent_echoes_never_leave_a_description_empty() {
    let m = Mounted::new();
    m.bash_ok("mkdir pool pool/k1 && echo from-0 > pool/k1/description");
    let rel = "pool/k1/description";
    let written = ["from-0\n", "from-1\n", "from-2\n", "from-3\n"];
    // One process holds the description open for writing and writes nothing: `>>` opens it
    // with O_APPEND and sends no truncation (`3>` would truncate).
    let mut holder = Killed(
        Command::new("bash")
            .arg("-c")
            .arg(format!("exec 3>>{rel}; echo open; exec sleep 60"))
            .current_dir(m.mnt())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run the holder"),
    );
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(holder.0.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "open\n", "the holder did not open the description");
    }
    // Three writers, 100 echoes each, while this thread reads.
    let script = format!(
        "for n in 1 2 3; do
           (for i in $(seq 100); do echo from-$n > {rel} || exit 1; done) &
         done
         fail=0
         for j in $(jobs -p); do wait $j || fail=1; done
         exit $fail"
    );
    let mut writers = Killed(
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(m.mnt())
            .spawn()
            .expect("run the writers"),
    );
    let start = Instant::now();
    let mut reads = 0;
    let mut wrong = Vec::new();
    let status = loop {
        let text = m.read(rel);
        reads += 1;
        if !written.contains(&text.as_str()) {
            wrong.push(text);
        }
        if let Some(status) = writers.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < LIMIT,
            "the writers took longer than {LIMIT:?}"
        );
    };
    assert!(status.success(), "an echo failed: {status}");
    assert!(reads >= 10, "only {reads} reads while the writers ran");
    assert!(
        wrong.is_empty(),
        "{} of {reads} reads were none of the texts written: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    let last = m.read(rel);
    assert!(written[1..].contains(&last.as_str()), "{last:?}");
    // The holder's close (it wrote nothing) commits nothing.
    drop(holder);
    // Its release reaches the daemon just after the process is gone: give it a moment.
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        assert_eq!(m.read(rel), last, "the holder's close changed the text");
        std::thread::sleep(Duration::from_millis(10));
    }
}
