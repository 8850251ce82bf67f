//! The built `kmsfs` binary and shell commands: running them, and judging what they did.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The `kmsfs` binary that cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_kmsfs");

/// `PATH` with the directory of the built `kmsfs` first, so that scripts find it.
pub fn path_with_kmsfs() -> OsString {
    let bin_dir = Path::new(BIN).parent().expect("binary has a directory");
    let mut path = OsString::from(bin_dir);
    if let Some(old) = std::env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    path
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Describes a finished command for assertion messages.
pub fn describe(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Runs `bash -c script` with the built binary first on PATH, in `cwd`, with `env` set.
pub fn bash_in(cwd: &Path, script: &str, env: &[(&str, &OsStr)]) -> Output {
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(script)
        .current_dir(cwd)
        .env("PATH", path_with_kmsfs())
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run bash")
}

/// The command must succeed; returns its stdout.
#[track_caller]
pub fn ok(what: &str, out: Output) -> String {
    assert!(out.status.success(), "{}", describe(what, &out));
    text(&out.stdout)
}

/// The command must fail; returns its stderr.
#[track_caller]
pub fn failed(what: &str, out: Output) -> String {
    assert!(
        !out.status.success(),
        "should have failed: {}",
        describe(what, &out)
    );
    text(&out.stderr)
}

/// Runs the built `kmsfs` with these arguments (stdin closed: never interactive).
pub fn kmsfs<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run kmsfs")
}

/// `kmsfs verify --data-dir DATA`.
pub fn verify(data: &Path) -> Output {
    kmsfs([
        OsStr::new("verify"),
        OsStr::new("--data-dir"),
        data.as_os_str(),
    ])
}

/// The errno of a failed std::fs call (a panic, at the caller's line, if it succeeded).
#[track_caller]
pub fn errno<T: std::fmt::Debug>(r: io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("not an OS error: {e}")),
    }
}

/// Runs `kmsfs ARGS` on a pseudo-terminal (util-linux `script`), typing `input`.
pub fn on_a_terminal(args: &[&OsStr], input: &str) -> Output {
    let mut line = shell_quote(OsStr::new(BIN));
    for a in args {
        line.push(' ');
        line.push_str(&shell_quote(a));
    }
    let mut child = Command::new("script")
        .args([
            OsStr::new("-qec"),
            OsStr::new(&line),
            OsStr::new("/dev/null"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux script runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn shell_quote(s: &OsStr) -> String {
    format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"))
}
