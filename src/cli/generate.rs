//! `kmsfs generate man` and `kmsfs generate completions SHELL`: documentation generated from
//! the clap definitions themselves (`args::command`), so it always lists the real options.
//! `make install` installs their output; packagers can run them the same way.

use std::io::{self, Write};

use clap::{Args, Subcommand, ValueEnum};
use clap_mangen::roff::{roman, Roff};
use clap_mangen::Man;

use super::CliError;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(subcommand)]
    pub what: Generated,
}

#[derive(Subcommand, Debug)]
pub enum Generated {
    /// The man page kmsfs(1), covering every subcommand, as roff on stdout.
    Man,
    /// A completion script for SHELL on stdout.
    Completions {
        /// The shell the script is for.
        #[arg(value_enum)]
        shell: CompletionShell,
    },
}

/// The shells `make install` installs completions for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

pub fn run_generate(args: &GenerateArgs) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    match args.what {
        Generated::Man => out.write_all(&man_page()?)?,
        Generated::Completions { shell } => {
            let shell = match shell {
                CompletionShell::Bash => clap_complete::Shell::Bash,
                CompletionShell::Zsh => clap_complete::Shell::Zsh,
                CompletionShell::Fish => clap_complete::Shell::Fish,
            };
            // Into a buffer first: clap_complete panics on a write error (a closed pipe).
            let mut cmd = super::args::command();
            cmd.set_bin_name("kmsfs");
            cmd.build();
            let mut script = Vec::new();
            clap_complete::Generator::generate(&shell, &cmd, &mut script);
            out.write_all(&script)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// The preamble every clap_mangen render starts with (it defines `\*(Aq`, an apostrophe);
/// the page keeps the first one only.
const PREAMBLE: [&str; 2] = [".ie \\n(.g .ds Aq \\(aq", ".el .ds Aq '"];

/// One rendered part of a page, without the preamble, and without its `.SH` heading when
/// `keep_heading` is false (so that a subcommand's synopsis and options can sit under a
/// `.SS` of the one page).
fn part(
    keep_heading: bool,
    render: impl FnOnce(&mut Vec<u8>) -> io::Result<()>,
) -> io::Result<String> {
    let mut buf = Vec::new();
    render(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf)
        .lines()
        .filter(|l| !PREAMBLE.contains(l) && (keep_heading || !l.starts_with(".SH")))
        .map(|l| format!("{l}\n"))
        .collect())
}

/// The subcommands a page documents (clap's own `help` is left out).
fn subcommands(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

/// One `.SS` per subcommand (and per sub-subcommand): synopsis, description, options.
fn commands_section(cmd: &clap::Command, page: &mut String) -> io::Result<()> {
    for sub in subcommands(cmd) {
        let name = sub.get_bin_name().unwrap_or_else(|| sub.get_name());
        page.push_str(&Roff::new().control("SS", [name]).to_roff());
        let man = Man::new(sub.clone());
        page.push_str(&part(false, |w| man.render_synopsis_section(w))?);
        page.push_str(".PP\n");
        page.push_str(&part(false, |w| man.render_description_section(w))?);
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            page.push_str(&part(false, |w| man.render_options_section(w))?);
        }
        commands_section(sub, page)?;
    }
    Ok(())
}

/// A section of prose: a heading (none if empty), then one paragraph per entry.
fn prose(title: &str, paragraphs: &[&str]) -> String {
    let mut roff = Roff::new();
    if !title.is_empty() {
        roff.control("SH", [title]);
    }
    for (i, p) in paragraphs.iter().enumerate() {
        if i > 0 || title.is_empty() {
            roff.control("PP", []);
        }
        roff.text([roman(*p)]);
    }
    roff.to_roff()
}

/// kmsfs(1), one page: the top-level synopsis and options, every subcommand under
/// COMMANDS, then the files, the environment and the service.
pub fn man_page() -> io::Result<Vec<u8>> {
    let mut cmd = super::args::command();
    cmd.build();
    let man = Man::new(cmd.clone())
        .title("KMSFS")
        .section("1")
        .manual("kmsfs manual");
    let mut page = String::new();
    page.push_str(&part(true, |w| man.render_title(w))?);
    for line in PREAMBLE.iter().rev() {
        page.insert_str(0, &format!("{line}\n"));
    }
    page.push_str(&part(true, |w| man.render_name_section(w))?);
    page.push_str(&part(true, |w| man.render_synopsis_section(w))?);
    page.push_str(&part(true, |w| man.render_description_section(w))?);
    page.push_str(&prose(
        "",
        &[
            "kmsfs serves a keystore (the three files KMS_DATA, KMS_HMKF and KMS_KPKF of a \
           data directory) as a file system: key groups are directories, key records are \
           directories of JSON metadata, writing a record's state file moves it through its \
           lifecycle, and writing .quiesce freezes the files for a backup.",
        ],
    ));
    page.push_str(&part(true, |w| man.render_options_section(w))?);
    page.push_str(".SH COMMANDS\n");
    commands_section(&cmd, &mut page)?;
    page.push_str(&prose(
        "FILES",
        &[
            "DATA/KMS_DATA, DATA/KMS_HMKF, DATA/KMS_KPKF: the keystore, the host master key and \
             the key protection key (DATA is --data-dir; the service uses /var/lib/kmsfs).",
            "DATA/kmsfs.lock: the lock that keeps a second mount, or an import, out.",
            "MOUNTPOINT/.status, MOUNTPOINT/.errors, MOUNTPOINT/.quiesce: the state of the \
             mount, its latest refusals, and the backup freeze.",
            "kmsfs.service: the systemd unit (Type=notify) serving /var/lib/kmsfs at /mnt/kms.",
        ],
    ));
    page.push_str(&prose(
        "ENVIRONMENT",
        &[
            "RUST_LOG: the log level (default info; debug shows every request). The log goes to \
             stderr (the journal, under systemd), or to the file of kmsfs mount --log-file.",
            "NOTIFY_SOCKET: set by systemd for Type=notify; kmsfs mount sends READY=1 once the \
             mount answers.",
        ],
    ));
    page.push_str(&prose(
        "SEE ALSO",
        &[
            "kmsfs-backup, kmsfs-restore-drill and kmsfs-rotate (the admin scripts installed with \
           kmsfs), systemctl(1), journalctl(1), umount(8), and the README of kmsfs.",
        ],
    ));
    page.push_str(&part(true, |w| man.render_version_section(w))?);
    Ok(page.into_bytes())
}
