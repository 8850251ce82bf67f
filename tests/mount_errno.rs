//! The errno table of `docs/errors.md`, one real system call per row, each
//! refusal changing nothing and leaving its reason in `.errors`.

mod support;

use support::cli::errno;
use support::mount::Mounted;

type Case<'a> = (
    &'a str,
    i32,
    Box<dyn Fn(&Mounted) -> std::io::Result<()> + 'a>,
);

#[test]
fn every_errno_of_the_contract() {
    let m = Mounted::new();
    m.bash_ok(
        "mkdir pool other pool/prelive pool/active \
         && echo active > pool/active/state && mkdir other/k",
    );
    let status_before = m.read(".status");
    let cases: Vec<Case> = vec![
        // malformed input
        (
            "unknown state",
            libc::EINVAL,
            Box::new(|m| m.write("pool/prelive/state", "on")),
        ),
        (
            "bad JSON",
            libc::EINVAL,
            Box::new(|m| m.write("pool/.create", "{\"name\" 1}")),
        ),
        (
            "bad cipher",
            libc::EINVAL,
            Box::new(|m| m.write("pool/.cipher", "DES")),
        ),
        (
            "bad name",
            libc::EINVAL,
            Box::new(|m| std::fs::create_dir(m.p("pool/.x"))),
        ),
        // not allowed
        (
            "transition",
            libc::EPERM,
            Box::new(|m| m.write("pool/active/state", "prelive")),
        ),
        (
            "delete active",
            libc::EPERM,
            Box::new(|m| std::fs::remove_dir(m.p("pool/active"))),
        ),
        (
            "cipher with records",
            libc::EPERM,
            Box::new(|m| m.write("pool/.cipher", "AES_128")),
        ),
        (
            "move to another group",
            libc::EPERM,
            Box::new(|m| std::fs::rename(m.p("pool/prelive"), m.p("other/prelive"))),
        ),
        // name already used
        (
            "rename onto a record",
            libc::EEXIST,
            Box::new(|m| std::fs::rename(m.p("pool/prelive"), m.p("pool/active"))),
        ),
        (
            "rename onto a group",
            libc::EEXIST,
            Box::new(|m| std::fs::rename(m.p("pool"), m.p("other"))),
        ),
        (
            "create a taken name",
            libc::EEXIST,
            Box::new(|m| m.write("pool/.create", "{\"name\": \"active\"}")),
        ),
        // group not empty
        (
            "rmdir a group with records",
            libc::ENOTEMPTY,
            Box::new(|m| std::fs::remove_dir(m.p("pool"))),
        ),
        // key of a record whose state forbids use
        (
            "key of prelive",
            libc::EACCES,
            Box::new(|m| std::fs::read(m.p("pool/prelive/key")).map(drop)),
        ),
        // name too long
        (
            "long name",
            libc::ENAMETOOLONG,
            Box::new(|m| std::fs::create_dir(m.p(&"n".repeat(256)))),
        ),
        // stray files, writing read-only files
        (
            "stray file",
            libc::EPERM,
            Box::new(|m| std::fs::write(m.p("pool/notes.txt"), "x")),
        ),
        (
            "stray directory",
            libc::EPERM,
            Box::new(|m| std::fs::create_dir(m.p("pool/active/sub"))),
        ),
        (
            "read-only file",
            libc::EACCES,
            Box::new(|m| m.write("pool/active/record.json", "{}")),
        ),
    ];
    for (what, want, call) in &cases {
        let before = m.read(".errors").lines().count();
        assert_eq!(errno(call(&m)), *want, "{what}");
        let lines = m.read(".errors");
        assert_eq!(
            lines.lines().count(),
            before + 1,
            "{what}: one line in .errors"
        );
        let last: serde_json::Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
        assert!(!last["reason"].as_str().unwrap().is_empty(), "{what}");
    }
    // While quiesced, changes that would succeed: EROFS.
    m.write(".quiesce", "quiesce").unwrap();
    let frozen: Vec<Case> = vec![
        (
            "mkdir",
            libc::EROFS,
            Box::new(|m| std::fs::create_dir(m.p("pool/new"))),
        ),
        (
            "state",
            libc::EROFS,
            Box::new(|m| m.write("pool/prelive/state", "active")),
        ),
        (
            "rmdir",
            libc::EROFS,
            Box::new(|m| std::fs::remove_dir(m.p("pool/prelive"))),
        ),
        (
            "rename",
            libc::EROFS,
            Box::new(|m| std::fs::rename(m.p("other"), m.p("third"))),
        ),
        (
            "description",
            libc::EROFS,
            Box::new(|m| m.write("pool/.description", "x")),
        ),
    ];
    for (what, want, call) in &frozen {
        assert_eq!(errno(call(&m)), *want, "quiesced {what}");
        assert_eq!(m.last_error()["errno"], "EROFS");
    }
    m.write(".quiesce", "unquiesce").unwrap();
    // Nothing of all that changed anything.
    assert_eq!(m.read(".status"), status_before);
    assert_eq!(m.state("pool/active"), "active");
    assert_eq!(m.state("pool/prelive"), "prelive");
    assert_eq!(m.read("pool/.cipher"), "AES_256\n");
}
