//! Installing kmsfs like any other service: `make install` into a staging root, the files and
//! modes it leaves, the installed binary and scripts working together, `make uninstall`; and
//! what `make install` installs from the binary itself: `--version`, the man page and the
//! shell completions.
//!
//! The install test runs the real `install` target with `CARGO=true KMSFS_BIN=<the binary
//! cargo built for these tests>`: every step of `make install` runs except the release build
//! (`true build --release --locked`), which would take minutes and fight `cargo test` for the
//! build directory. `make -n install` shows that build step is `cargo build --release --locked`.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::cli::{describe, ok, BIN};
use support::daemon::Daemon;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `make -C ROOT ARGS` as an administrator runs it (without the CARGO and CARGO_TARGET_DIR
/// that cargo sets for tests, which make would take as its variables).
fn make(args: &[&str]) -> Output {
    Command::new("make")
        .env_remove("CARGO")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("MAKEFLAGS")
        .arg("-C")
        .arg(ROOT)
        .arg("--no-print-directory")
        .args(args)
        .output()
        .expect("run make (is it installed?)")
}

/// A staging root with kmsfs installed in it (`PREFIX=/usr`), like a package build does.
struct Staged {
    dir: tempfile::TempDir,
}

impl Staged {
    fn install() -> Staged {
        let dir = tempfile::tempdir().unwrap();
        let staged = Staged { dir };
        let out = make(&[
            "install",
            "CARGO=true",
            &format!("KMSFS_BIN={BIN}"),
            &format!("DESTDIR={}", staged.root().display()),
            "PREFIX=/usr",
            &format!("GENDIR={}", staged.dir.path().join("gen").display()),
        ]);
        ok("make install", out);
        staged
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// `rel` (an absolute installed path, like /usr/sbin/kmsfs) inside the staging root.
    fn p(&self, installed: &str) -> PathBuf {
        self.root().join(installed.trim_start_matches('/'))
    }

    /// Every file (not directory) below the staging root, with its mode.
    fn files(&self) -> BTreeMap<String, u32> {
        fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, u32>) {
            for e in fs::read_dir(dir).unwrap() {
                let e = e.unwrap();
                let meta = fs::symlink_metadata(e.path()).unwrap();
                if meta.is_dir() {
                    assert_eq!(
                        meta.mode() & 0o7777,
                        0o755,
                        "directory {}",
                        e.path().display()
                    );
                    walk(&e.path(), root, out);
                } else {
                    let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                    out.insert(format!("/{rel}"), meta.mode());
                }
            }
        }
        let mut out = BTreeMap::new();
        if self.root().exists() {
            walk(&self.root(), &self.root(), &mut out);
        }
        out
    }
}

/// What `make install PREFIX=/usr` must install, and each file's mode (all regular files).
const EXPECTED: &[(&str, u32)] = &[
    ("/usr/lib/systemd/system/kmsfs.service", 0o644),
    ("/usr/sbin/kmsfs", 0o755),
    ("/usr/sbin/kmsfs-backup", 0o755),
    ("/usr/sbin/kmsfs-restore-drill", 0o755),
    ("/usr/sbin/kmsfs-rotate", 0o755),
    ("/usr/share/bash-completion/completions/kmsfs", 0o644),
    ("/usr/share/fish/vendor_completions.d/kmsfs.fish", 0o644),
    ("/usr/share/man/man1/kmsfs.1", 0o644),
    ("/usr/share/zsh/site-functions/_kmsfs", 0o644),
];

fn expected_version() -> String {
    format!(
        "kmsfs {} (KMS_DATA format 1..={})\n",
        env!("CARGO_PKG_VERSION"),
        kmsfs::store::FORMAT_VERSION
    )
}

#[test]
fn make_install_puts_every_file_in_place_and_uninstall_removes_them() {
    let staged = Staged::install();
    let want: BTreeMap<String, u32> = EXPECTED
        .iter()
        .map(|(p, m)| (p.to_string(), 0o100000 | m))
        .collect();
    assert_eq!(staged.files(), want, "installed files and their modes");

    // The installed binary runs and is the one that was built.
    let out = Command::new(staged.p("/usr/sbin/kmsfs"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(ok("installed kmsfs --version", out), expected_version());
    assert_eq!(
        fs::read(staged.p("/usr/sbin/kmsfs")).unwrap(),
        fs::read(BIN).unwrap()
    );
    // The scripts are the examples, unchanged.
    for s in ["backup", "restore-drill", "rotate"] {
        assert_eq!(
            fs::read(staged.p(&format!("/usr/sbin/kmsfs-{s}"))).unwrap(),
            fs::read(format!("{ROOT}/examples/{s}.sh")).unwrap(),
            "kmsfs-{s}"
        );
    }
    // The unit starts the installed binary.
    let unit = fs::read_to_string(staged.p("/usr/lib/systemd/system/kmsfs.service")).unwrap();
    assert!(
        unit.contains("\nExecStart=/usr/sbin/kmsfs mount --data-dir /var/lib/kmsfs /mnt/kms\n"),
        "{unit}"
    );
    assert!(!unit.contains("/usr/local/"), "{unit}");
    // The man page is kmsfs(1) as `kmsfs generate man` prints it; man finds it on MANPATH.
    let page = fs::read(staged.p("/usr/share/man/man1/kmsfs.1")).unwrap();
    assert_eq!(page, kmsfs::cli::man_page().unwrap());
    let out = Command::new("man")
        .args(["-w", "kmsfs"])
        .env("MANPATH", staged.p("/usr/share/man"))
        .output()
        .expect("run man (is man-db installed?)");
    assert_eq!(
        ok("man -w kmsfs", out).trim(),
        staged
            .p("/usr/share/man/man1/kmsfs.1")
            .display()
            .to_string()
    );
    // systemd accepts the installed unit (its binary moved into the staging root; man finds
    // its Documentation= page there).
    let unit_dir = staged.dir.path().join("verify");
    fs::create_dir(&unit_dir).unwrap();
    let staged_bin = staged.p("/usr/sbin/kmsfs");
    let copy = unit_dir.join("kmsfs.service");
    fs::write(
        &copy,
        unit.replace("/usr/sbin/kmsfs", staged_bin.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .env("MANPATH", staged.p("/usr/share/man"))
        .output()
        .expect("run systemd-analyze (is systemd installed?)");
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "{}",
        describe("systemd-analyze verify (installed unit)", &out)
    );

    // uninstall leaves nothing behind but directories.
    let out = make(&[
        "uninstall",
        &format!("DESTDIR={}", staged.root().display()),
        "PREFIX=/usr",
    ]);
    ok("make uninstall", out);
    assert_eq!(staged.files(), BTreeMap::new(), "left after make uninstall");
}

#[test]
fn make_install_builds_with_cargo_release_locked_first() {
    let out = make(&["-n", "install", "DESTDIR=/nonexistent", "PREFIX=/usr"]);
    let plan = ok("make -n install", out);
    let lines: Vec<&str> = plan.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"cargo build --release --locked"),
        "{plan}"
    );
    let build = plan.find("cargo build --release --locked").unwrap();
    let install = plan
        .find("target/release/kmsfs\" \"/nonexistent/usr/sbin/kmsfs\"")
        .unwrap_or_else(|| panic!("does not install target/release/kmsfs:\n{plan}"));
    assert!(build < install, "{plan}");
    // The default PREFIX is /usr/local, and the unit then starts /usr/local/sbin/kmsfs.
    let plan = ok("make -n install-only", make(&["-n", "install-only"]));
    assert!(plan.contains("\"/usr/local/sbin/kmsfs\""), "{plan}");
    assert!(
        plan.contains("\"/usr/local/lib/systemd/system/kmsfs.service\""),
        "{plan}"
    );
    assert!(
        plan.contains("s|/usr/local/sbin/kmsfs|/usr/local/sbin/kmsfs|g"),
        "{plan}"
    );
    // install-only refuses to install a binary that is not there.
    let out = make(&[
        "install-only",
        "KMSFS_BIN=/nonexistent/kmsfs",
        "DESTDIR=/nonexistent",
    ]);
    let err = support::cli::failed("make install-only without a binary", out);
    assert!(err.contains("/nonexistent/kmsfs is not built"), "{err}");
}

#[test]
fn installed_backup_script_finds_the_installed_kmsfs_on_path() {
    let staged = Staged::install();
    let sbin = staged.p("/usr/sbin");
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let mnt = work.path().join("mnt");
    let backups = work.path().join("backups");
    let daemon = Daemon::start_init(&data, &mnt);

    // PATH as cron would have it plus the install's sbin, and no KMSFS: the script can only
    // have found the installed kmsfs (the built one is not on this PATH).
    let backup = |path: &str| {
        Command::new(sbin.join("kmsfs-backup"))
            .arg(&daemon.mnt)
            .arg(&data)
            .arg(&backups)
            .env("PATH", path)
            .env_remove("KMSFS")
            .env("KMSFS_KEYS_DIR", "none")
            .output()
            .unwrap()
    };
    let out = backup(&format!("{}:/usr/bin:/bin", sbin.display()));
    let said = ok("installed kmsfs-backup", out);
    assert!(said.contains("backup complete"), "{said}");
    assert!(said.contains("kmsfs-backup: "), "{said}");
    let made: Vec<_> = fs::read_dir(&backups).unwrap().collect();
    assert_eq!(made.len(), 1);

    // Without the install's sbin on PATH it says what is missing, and changes nothing.
    let out = backup("/usr/bin:/bin");
    let err = support::cli::failed("kmsfs-backup without kmsfs on PATH", out);
    assert!(
        err.contains("kmsfs is not installed (or not on PATH)"),
        "{err}"
    );
    assert_eq!(fs::read_dir(&backups).unwrap().count(), 1);
    assert_eq!(daemon.quiesce()["holds"], 0);
    daemon.stop();
}

#[test]
fn version_names_the_crate_and_the_format_versions_it_reads() {
    for flag in ["--version", "-V"] {
        let out = support::cli::kmsfs([flag]);
        assert_eq!(ok(flag, out), expected_version());
    }
    assert_eq!(
        format!("kmsfs {}\n", kmsfs::cli::version()),
        expected_version()
    );
}

/// Every subcommand (and sub-subcommand) with its bin name, `kmsfs mount` say.
fn subcommands(cmd: &clap::Command, prefix: &str, out: &mut Vec<(String, clap::Command)>) {
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("{prefix} {}", sub.get_name());
        out.push((name.clone(), sub.clone()));
        subcommands(sub, &name, out);
    }
}

#[test]
fn man_page_covers_every_subcommand_and_option() {
    let out = support::cli::kmsfs(["generate", "man"]);
    let page = ok("kmsfs generate man", out);
    assert!(page.contains(".TH KMSFS 1 "), "{page}");
    let mut subs = Vec::new();
    subcommands(&kmsfs::cli::command(), "kmsfs", &mut subs);
    assert!(subs.len() >= 9, "{subs:?}");
    for (name, sub) in &subs {
        assert!(
            page.contains(&format!(".SS \"{name}\"\n")),
            "no section for {name}"
        );
        for arg in sub.get_arguments() {
            if let Some(long) = arg.get_long() {
                let roff = format!("\\-\\-{}", long.replace('-', "\\-"));
                assert!(page.contains(&roff), "{name} --{long} is not in the page");
            }
        }
    }
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "COMMANDS",
        "FILES",
        "ENVIRONMENT",
    ] {
        assert!(page.contains(&format!(".SH {section}\n")), "no {section}");
    }
    // groff typesets it without a single warning (man -l would hide them), and man shows it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kmsfs.1");
    fs::write(&file, &page).unwrap();
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(&file)
        .output()
        .expect("run groff (is groff-base installed?)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        describe("groff -ww kmsfs.1", &out)
    );
    let out = Command::new("man")
        .arg("-l")
        .arg(&file)
        .env("MANWIDTH", "100")
        .output()
        .expect("run man (is man-db installed?)");
    let shown = ok("man -l kmsfs.1", out);
    assert!(shown.contains("kmsfs mount"), "{shown}");
    assert!(shown.contains("--log-file"), "{shown}");
}

#[test]
fn completion_scripts_are_valid_and_complete_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("kmsfs.bash");
    let bash = ok(
        "kmsfs generate completions bash",
        support::cli::kmsfs(["generate", "completions", "bash"]),
    );
    fs::write(&script, &bash).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("run bash");
    ok("bash -n kmsfs.bash", out);
    // Sourced, it completes `kmsfs mo` to `mount` and `kmsfs mount --log` to `--log-file`.
    let probe = r#"source "$1"
complete -p kmsfs >/dev/null || exit 3
COMP_WORDS=(kmsfs mo); COMP_CWORD=1; COMP_LINE="kmsfs mo"; COMP_POINT=${#COMP_LINE}
_kmsfs kmsfs mo kmsfs; printf '%s\n' "${COMPREPLY[@]}"
COMP_WORDS=(kmsfs mount --log); COMP_CWORD=2; COMP_LINE="kmsfs mount --log"; COMP_POINT=${#COMP_LINE}
_kmsfs kmsfs --log mount; printf '%s\n' "${COMPREPLY[@]}""#;
    let out = Command::new("bash")
        .args(["-c", probe, "probe"])
        .arg(&script)
        .output()
        .unwrap();
    let words = ok("bash completion probe", out);
    let words: Vec<&str> = words.lines().collect();
    assert!(words.contains(&"mount"), "{words:?}");
    assert!(words.contains(&"--log-file"), "{words:?}");

    let zsh = ok(
        "kmsfs generate completions zsh",
        support::cli::kmsfs(["generate", "completions", "zsh"]),
    );
    assert!(zsh.starts_with("#compdef kmsfs\n"), "{zsh}");
    assert!(zsh.contains("--log-file"), "{zsh}");
    let fish = ok(
        "kmsfs generate completions fish",
        support::cli::kmsfs(["generate", "completions", "fish"]),
    );
    assert!(fish.contains("complete -c kmsfs"), "{fish}");
    assert!(fish.contains("log-file"), "{fish}");
    // Other shells are refused with the list of those offered.
    let out = support::cli::kmsfs(["generate", "completions", "tcsh"]);
    let err = support::cli::failed("completions for tcsh", out);
    assert!(err.contains("bash, zsh, fish"), "{err}");
}
