//! The shape of the mounted tree: groups and records as directories, renames, `.by-tag`,
//! modes and sizes as `ls -l` shows them, stray files, and the usual tools over it.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use support::cli::errno;
use support::keystore::{group, record};
use support::mount::{open_kms, Mounted};

#[test]
fn ls_shows_sane_modes_sizes_and_owners() {
    let m = Mounted::new();
    m.bash_ok("mkdir pool pool/k1 && echo active > pool/k1/state");
    let mode = |rel: &str| {
        std::fs::symlink_metadata(m.p(rel))
            .unwrap()
            .permissions()
            .mode()
    };
    assert_eq!(mode("pool/k1/key"), 0o100440);
    assert_eq!(mode("pool/k1/state"), 0o100640);
    assert_eq!(mode("pool/k1/description"), 0o100640);
    assert_eq!(mode("pool/k1/record.json"), 0o100440);
    assert_eq!(mode("pool/.create"), 0o100200);
    assert_eq!(mode("pool/.cipher"), 0o100640);
    assert_eq!(mode("pool/.group.json"), 0o100440);
    assert_eq!(mode("pool/.active") & 0o170000, 0o120000);
    assert_eq!(mode(".status"), 0o100440);
    assert_eq!(mode(".quiesce"), 0o100640);
    assert_eq!(mode("pool") & 0o170000, 0o040000);
    assert_eq!(mode("pool") & 0o7777, 0o750);
    // Sizes are exact, so tools that trust st_size (tar) read everything.
    for rel in [
        "pool/k1/state",
        "pool/k1/record.json",
        "pool/.group.json",
        "pool/.cipher",
        ".status",
        ".quiesce",
    ] {
        let meta = std::fs::metadata(m.p(rel)).unwrap();
        assert_eq!(meta.len() as usize, m.read(rel).len(), "{rel}");
        assert_eq!(meta.uid(), unsafe { libc::geteuid() }, "{rel}");
    }
    assert_eq!(std::fs::metadata(m.p("pool/k1/key")).unwrap().len(), 32);
    // Group and record times come from the keystore.
    let created = std::fs::metadata(m.p("pool/k1"))
        .unwrap()
        .modified()
        .unwrap();
    let age = std::time::SystemTime::now()
        .duration_since(created)
        .unwrap();
    assert!(
        age.as_secs() < 60,
        "mtime is the record's modification time"
    );
    let listing = m.bash_ok("ls -l pool/k1");
    let key_line = listing.lines().find(|l| l.ends_with(" key")).unwrap();
    assert!(key_line.starts_with("-r--r----- 1 root root"), "{listing}");
    assert!(key_line.contains(" 32 "), "{listing}");
    let state_line = listing.lines().find(|l| l.ends_with(" state")).unwrap();
    assert!(
        state_line.starts_with("-rw-r----- 1 root root"),
        "{listing}"
    );
    assert!(
        state_line.contains(" 7 "),
        "the size of \"active\\n\": {listing}"
    );
    let listing = m.bash_ok("ls -la pool");
    assert!(listing.contains(".active -> k1"), "{listing}");
    // stat and find behave.
    m.bash_ok("stat pool/k1/record.json >/dev/null && stat -L pool/.active >/dev/null");
    let found = m.bash_ok("find . -name record.json | sort");
    assert_eq!(found, "./pool/k1/record.json\n");
}

#[test]
fn json_files_are_valid_and_current() {
    let m = Mounted::new();
    m.bash_ok("mkdir pool pool/k1 pool/k2 && echo active > pool/k1/state");
    m.bash_ok("jq -e . .status .quiesce pool/.group.json pool/k1/record.json >/dev/null");
    let status = m.json(".status");
    assert_eq!(status["groups"], 1);
    assert_eq!(status["records"], 2);
    let g = m.json("pool/.group.json");
    for key in [
        "name",
        "tag",
        "cipher",
        "description",
        "created",
        "modified",
        "records",
        "active",
    ] {
        assert!(g.get(key).is_some(), ".group.json lacks {key}");
    }
    assert_eq!(g["records"], 2);
    assert_eq!(g["cipher"], "AES_256");
    let r = m.json("pool/k1/record.json");
    for key in [
        "name",
        "tag",
        "group",
        "group_tag",
        "state",
        "cipher",
        "description",
        "created",
        "modified",
        "passphrase_derived",
    ] {
        assert!(r.get(key).is_some(), "record.json lacks {key}");
    }
    assert_eq!(r["group_tag"], g["tag"]);
    let tag = r["tag"].as_str().unwrap();
    assert!(tag
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert!(r["created"].as_str().unwrap().ends_with('Z'));
    assert!(m.read("pool/k1/record.json").ends_with("}\n"));
    // Current right after a change.
    m.bash_ok("mkdir pool/k3");
    assert_eq!(m.json("pool/.group.json")["records"], 3);
    assert_eq!(m.json(".status")["records"], 3);
}

#[test]
fn by_tag_links_reach_their_records() {
    let m = Mounted::new();
    m.bash_ok("mkdir pool pool/k1 other other/k2");
    let tag = m.json("pool/k1/record.json")["tag"]
        .as_str()
        .unwrap()
        .to_string();
    let tag2 = m.json("other/k2/record.json")["tag"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        std::fs::read_link(m.p(&format!(".by-tag/{tag}"))).unwrap(),
        Path::new("../pool/k1")
    );
    assert_eq!(m.read(&format!(".by-tag/{tag}/state")), "prelive\n");
    let mut listed = m
        .bash_ok("ls .by-tag")
        .lines()
        .map(String::from)
        .collect::<Vec<_>>();
    listed.sort();
    let mut want = vec![tag.clone(), tag2];
    want.sort();
    assert_eq!(listed, want);
    // Follows renames; gone with the record.
    m.bash_ok("mv pool pool2 && mv pool2/k1 pool2/k9");
    assert_eq!(
        std::fs::read_link(m.p(&format!(".by-tag/{tag}"))).unwrap(),
        Path::new("../pool2/k9")
    );
    m.bash_ok("rmdir pool2/k9");
    assert!(std::fs::symlink_metadata(m.p(&format!(".by-tag/{tag}"))).is_err());
    // Unknown or malformed tags are simply absent.
    assert!(!m.p(".by-tag/00112233").exists());
    assert!(!m.p(".by-tag/XYZ").exists());
}

#[test]
fn renames_of_groups_and_records() {
    let m = Mounted::new();
    m.bash_ok("mkdir pool pool/k1 pool/k2 other && echo active > pool/k1/state");
    m.bash_ok("mv pool main");
    assert!(m.p("main/k1").is_dir() && !m.p("pool").exists());
    assert_eq!(m.json("main/k1/record.json")["group"], "main");
    m.bash_ok("mv main/k1 main/current");
    assert_eq!(
        std::fs::read_link(m.p("main/.active")).unwrap(),
        Path::new("current")
    );
    assert_eq!(m.json("main/current/record.json")["name"], "current");
    // To another group: EPERM, never EXDEV (mv would then copy the key).
    let err = m.bash_err("mv main/k2 other/k2");
    assert!(err.contains("Operation not permitted"), "{err}");
    assert!(m.p("main/k2").is_dir() && !m.p("other/k2").exists());
    assert_eq!(
        errno(std::fs::rename(m.p("main/k2"), m.p("other/k2"))),
        libc::EPERM
    );
    assert_eq!(
        errno(std::fs::rename(m.p("main/k2"), m.p("k2"))),
        libc::EPERM
    );
    assert_eq!(
        errno(std::fs::rename(m.p("other"), m.p("main/other"))),
        libc::EPERM
    );
    // Onto an existing name: EEXIST (after mv's RENAME_NOREPLACE try, a plain rename).
    assert_eq!(
        errno(std::fs::rename(m.p("main/k2"), m.p("main/current"))),
        libc::EEXIST
    );
    assert_eq!(
        errno(std::fs::rename(m.p("other"), m.p("main"))),
        libc::EEXIST
    );
    let err = m.bash_err("mv -T other main");
    assert!(!err.is_empty());
    // Files are not renamable; bad and long names are refused.
    assert_eq!(
        errno(std::fs::rename(m.p("main/k2/state"), m.p("main/k2/st"))),
        libc::EPERM
    );
    assert_eq!(
        errno(std::fs::rename(m.p("other"), m.p(".other"))),
        libc::EINVAL
    );
    assert_eq!(
        errno(std::fs::rename(m.p("other"), m.p(&"x".repeat(256)))),
        libc::ENAMETOOLONG
    );
    // Renaming to the same name changes nothing and succeeds.
    std::fs::rename(m.p("other"), m.p("other")).unwrap();
}

fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let from = std::ffi::CString::new(from.as_os_str().as_bytes()).unwrap();
    let to = std::ffi::CString::new(to.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid NUL-terminated paths, AT_FDCWD.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn rename_flags() {
    let m = Mounted::new();
    m.bash_ok("mkdir a b a/k1 a/k2");
    assert_eq!(
        errno(renameat2(&m.p("a"), &m.p("b"), libc::RENAME_EXCHANGE)),
        libc::EINVAL
    );
    assert_eq!(
        errno(renameat2(
            &m.p("a/k1"),
            &m.p("a/k2"),
            libc::RENAME_NOREPLACE
        )),
        libc::EEXIST
    );
    renameat2(&m.p("a/k1"), &m.p("a/k3"), libc::RENAME_NOREPLACE).unwrap();
    assert!(m.p("a/k3").is_dir());
    assert_eq!(
        errno(renameat2(&m.p("a/k3"), &m.p("a/k4"), libc::RENAME_WHITEOUT)),
        libc::EINVAL
    );
}

#[test]
fn rmdir_of_groups() {
    let m = Mounted::new();
    m.bash_ok("mkdir pool pool/k1 empty");
    assert_eq!(errno(std::fs::remove_dir(m.p("pool"))), libc::ENOTEMPTY);
    let err = m.bash_err("rmdir pool");
    assert!(err.contains("not empty"), "{err}");
    std::fs::remove_dir(m.p("empty")).unwrap();
    m.bash_ok("rmdir pool/k1 && rmdir pool");
    assert!(!m.p("pool").exists());
    assert_eq!(errno(std::fs::remove_dir(m.p(".by-tag"))), libc::EPERM);
}

#[test]
fn stray_files_are_refused_everywhere() {
    let m = Mounted::new();
    m.bash_ok("mkdir pool pool/k1");
    for dir in ["", "pool/", "pool/k1/", ".by-tag/"] {
        let f = m.p(&format!("{dir}stray"));
        assert_eq!(
            errno(std::fs::write(&f, "x")),
            libc::EPERM,
            "create in {dir:?}"
        );
        assert_eq!(
            errno(std::os::unix::fs::symlink("x", &f)),
            libc::EPERM,
            "symlink in {dir:?}"
        );
        assert_eq!(
            errno(std::fs::hard_link(m.p("pool/k1/state"), &f)),
            libc::EPERM,
            "link in {dir:?}"
        );
    }
    assert_eq!(errno(std::fs::create_dir(m.p("pool/k1/sub"))), libc::EPERM);
    assert_eq!(errno(std::fs::create_dir(m.p(".by-tag/sub"))), libc::EPERM);
    m.bash_err("mkfifo pool/fifo");
    m.bash_err("touch pool/k1/new");
    assert!(!m.p("pool/fifo").exists() && !m.p("pool/k1/new").exists());
    // The mount's own files cannot be removed or have their modes changed.
    assert_eq!(
        errno(std::fs::remove_file(m.p("pool/k1/state"))),
        libc::EPERM
    );
    assert_eq!(errno(std::fs::remove_file(m.p(".status"))), libc::EPERM);
    let tag = m.json("pool/k1/record.json")["tag"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        errno(std::fs::remove_file(m.p(&format!(".by-tag/{tag}")))),
        libc::EPERM
    );
    assert_eq!(
        errno(std::fs::set_permissions(
            m.p("pool/k1/key"),
            std::fs::Permissions::from_mode(0o644)
        )),
        libc::EPERM
    );
    m.bash_err("chown nobody pool/k1/state");
    // Read-only files refuse writing, root included.
    for ro in [
        "pool/k1/record.json",
        "pool/.group.json",
        ".status",
        ".errors",
    ] {
        assert_eq!(errno(m.write(ro, "x")), libc::EACCES, "{ro}");
    }
    m.write("pool/k1/state", "active").unwrap();
    assert_eq!(errno(m.write("pool/k1/key", "x")), libc::EACCES);
    assert_eq!(
        errno(
            std::fs::OpenOptions::new()
                .append(true)
                .open(m.p("pool/k1/key"))
        ),
        libc::EACCES
    );
    // Every refusal is recorded.
    assert!(m.read(".errors").lines().count() >= 20);
}

#[test]
fn names_are_checked() {
    let m = Mounted::new();
    assert_eq!(errno(std::fs::create_dir(m.p(".hidden"))), libc::EINVAL);
    assert_eq!(
        errno(std::fs::create_dir(m.p(&"g".repeat(256)))),
        libc::ENAMETOOLONG
    );
    std::fs::create_dir(m.p(&"g".repeat(255))).unwrap();
    std::fs::create_dir(m.p("pool")).unwrap();
    assert_eq!(errno(std::fs::create_dir(m.p("pool/.k"))), libc::EINVAL);
    assert_eq!(
        errno(std::fs::create_dir(
            m.p(&format!("pool/{}", "k".repeat(300)))
        )),
        libc::ENAMETOOLONG
    );
    assert_eq!(errno(std::fs::create_dir(m.p("pool/a\nb"))), libc::EINVAL);
    std::fs::create_dir(m.p("pool/with space")).unwrap();
    // The kernel answers an existing name itself.
    assert_eq!(errno(std::fs::create_dir(m.p("pool"))), libc::EEXIST);
    let err = m.bash_err("mkdir .x");
    assert!(err.contains("Invalid argument"), "{err}");
}

#[test]
fn cp_tar_and_find_over_the_mount() {
    let m = Mounted::new();
    m.bash_ok(
        "mkdir pool pool/k1 pool/k2 && echo active > pool/k1/state && echo hello > pool/k1/description",
    );
    let out = m.dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // cp -r of a record whose key may be read.
    m.bash_ok(&format!(
        "cp -r pool/k1 {0}/k1 && cmp pool/k1/key {0}/k1/key",
        out.display()
    ));
    assert_eq!(
        std::fs::read_to_string(out.join("k1/record.json")).unwrap(),
        m.read("pool/k1/record.json")
    );
    assert_eq!(
        std::fs::read_to_string(out.join("k1/description")).unwrap(),
        "hello\n"
    );
    // tar of the metadata, leaving out keys (a prelive key cannot be read).
    m.bash_ok(&format!(
        "tar -c --exclude=key -f {0}/meta.tar . && tar -x -C {0} -f {0}/meta.tar",
        out.display()
    ));
    assert_eq!(
        std::fs::read_to_string(out.join("pool/k2/state")).unwrap(),
        "prelive\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("pool/.group.json")).unwrap(),
        m.read("pool/.group.json")
    );
    // cp -r of the whole group fails only on the unreadable prelive key.
    let err = m.bash_err(&format!("cp -r pool {}/pool-copy", out.display()));
    assert!(
        err.contains("k2/key") && err.contains("Permission denied"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let listed = m.bash_ok("find . -type f -name state | sort | xargs cat");
    assert_eq!(listed, "active\nprelive\n");
}

#[test]
fn many_records_list_quickly_and_in_order() {
    let mut m = Mounted::new();
    m.unmount();
    {
        let kms = open_kms(&m.data());
        group(&kms, "big");
        for i in 0..2000 {
            record(&kms, "big", &format!("k{i:05}"), "prelive", "");
        }
    }
    m.mount();
    let t = std::time::Instant::now();
    let out = m.bash_ok("ls -lA big | tail -n +2 | wc -l");
    let took = t.elapsed();
    assert_eq!(
        out.trim(),
        "2005",
        "2000 records and 5 group files (no .active)"
    );
    assert!(took.as_secs() < 10, "ls -l took {took:?}");
    // Listing order is creation order, stable across pages.
    let names: Vec<String> = std::fs::read_dir(m.p("big"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(names.len(), 2000);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(m.bash_ok("ls .by-tag | wc -l").trim(), "2000");
}

/// Names that would make a listing lie (a right-to-left override turning `gpj.key` into
/// `yek.jpg`, zero-width characters, a byte order mark, non-ASCII spaces) are refused by the
/// mkdir and mv themselves, and nothing is created.
#[test]
fn names_that_would_spoof_a_listing_are_refused() {
    let m = Mounted::new();
    m.bash_ok("mkdir pool");
    for bad in [
        "evil\u{202e}gpj.key",
        "zero\u{200b}width",
        "\u{feff}bom",
        "no\u{a0}break",
    ] {
        assert_eq!(
            errno(std::fs::create_dir(m.p(bad))),
            libc::EINVAL,
            "{bad:?}"
        );
        assert_eq!(
            errno(std::fs::create_dir(m.p(&format!("pool/{bad}")))),
            libc::EINVAL,
            "{bad:?}"
        );
        assert_eq!(
            errno(std::fs::rename(m.p("pool"), m.p(bad))),
            libc::EINVAL,
            "{bad:?}"
        );
        let reason = m.last_error()["reason"].as_str().unwrap().to_string();
        assert!(
            reason.contains("\\u{"),
            "the reason shows the character: {reason}"
        );
    }
    assert_eq!(m.bash_ok("ls"), "pool\n");
    assert_eq!(m.bash_ok("ls pool"), "");
}
