//! Defects of the store, each pinned by a test that failed before its fix:
//!
//! - a zero-filled tail (what XFS or ext4 `data=writeback` leave after a power cut) loads as a
//!   torn append; any other tail is still damage;
//! - `verify` of a copy fails when KMS_DATA ends torn (a frozen copy never does), and never
//!   says the discarded bytes "hold no acknowledged change"; `--allow-torn-tail` is for a live
//!   keystore's data directory;
//! - `init` is all or nothing (a full disk leaves none of the three files behind);
//! - `regenerate` is refused while a daemon holds the keystore (a frozen one above all).

mod support;

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kmsfs::crypto::Passphrase;
use kmsfs::service::Kms;
use kmsfs::store::{self, Access, InitOptions, Store};
use support::cli::{describe, kmsfs, text, verify};
use support::daemon::Daemon;
use support::keystore::{group, record};
use support::scratch::Scratch;

const TORN_COPY: &str = "bytes of an interrupted append: a copy taken while frozen never does; it may be a damaged or incomplete copy, and what those bytes held cannot be known";

/// `kmsfs verify --allow-torn-tail --data-dir DIR`.
fn verify_live(dir: &Path) -> Output {
    kmsfs([
        OsStr::new("verify"),
        OsStr::new("--allow-torn-tail"),
        OsStr::new("--data-dir"),
        dir.as_os_str(),
    ])
}

fn data_len(dir: &Path) -> u64 {
    fs::metadata(dir.join("KMS_DATA")).unwrap().len()
}

fn append(dir: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(dir.join("KMS_DATA"))
        .unwrap();
    f.write_all(bytes).unwrap();
}

/// A keystore with a group and two records, then one last change (a long description, so
/// that the last frame spans more than one 512-byte block). Returns where the last frame
/// starts and where the file ends.
fn keystore_with_long_last_frame(dir: &Path) -> (u64, u64) {
    store::init(dir, InitOptions::default()).unwrap();
    {
        let kms = Kms::open(dir).unwrap();
        group(&kms, "pool");
        record(&kms, "pool", "k0", "active", "first");
        record(&kms, "pool", "k1", "prelive", "second");
    }
    let start = data_len(dir);
    {
        let kms = Kms::open(dir).unwrap();
        let g = support::keystore::group_tag(&kms, "pool");
        kms.describe_group(&g, &"d".repeat(3000)).unwrap();
    }
    let end = data_len(dir);
    assert!(
        end - start > 2048,
        "the last frame is {} bytes",
        end - start
    );
    (start, end)
}

/// The keystore's group count and description length, opened read-write (a torn tail is cut).
fn reopen(dir: &Path) -> (usize, usize) {
    let kms = Kms::open(dir).unwrap_or_else(|e| panic!("cannot open {}: {e}", dir.display()));
    let ks = kms.read();
    let g = ks.group_by_name("pool").unwrap();
    (ks.record_count(), g.description.len())
}

/// The torn tail that opening the keystore read-only reports (it changes nothing).
fn torn_tail(dir: &Path) -> u64 {
    match Store::open(dir, Access::ReadOnly) {
        Ok((_, _, _, report)) => report.torn_tail,
        Err(e) => panic!("cannot open {}: {e}", dir.display()),
    }
}

// ---- 4: a zero-filled tail -------------------------------------------------------------------

#[test]
fn a_zero_filled_tail_loads_as_a_torn_append_and_is_cut_off() {
    for zeros in [16usize, 17, 100, 4096, 70_000] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let (_, end) = keystore_with_long_last_frame(&dir);
        append(&dir, &vec![0u8; zeros]);
        assert_eq!(torn_tail(&dir), zeros as u64);
        let o = verify_live(&dir);
        assert!(
            o.status.success(),
            "{}",
            describe("verify --allow-torn-tail", &o)
        );
        assert!(
            text(&o.stderr).contains(&format!("KMS_DATA ends with {zeros} bytes")),
            "{}",
            describe("verify --allow-torn-tail", &o)
        );
        assert_eq!(reopen(&dir), (2, 3000), "{zeros} zero bytes");
        assert_eq!(data_len(&dir), end, "the zeros were cut off");
        let o = verify(&dir);
        assert!(o.status.success(), "{}", describe("verify", &o));
    }
}

#[test]
fn the_last_frame_zeroed_from_a_block_boundary_on_is_a_torn_append() {
    // The file size was extended by the whole append, but only its first blocks reached the
    // disk: zeros from a block boundary inside the last frame to the end of the file.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (start, end) = keystore_with_long_last_frame(&dir);
    let from = (start / 512 + 1) * 512;
    assert!(from + 16 < end);
    let mut bytes = fs::read(dir.join("KMS_DATA")).unwrap();
    bytes[from as usize..].fill(0);
    fs::write(dir.join("KMS_DATA"), &bytes).unwrap();
    assert_eq!(torn_tail(&dir), end - start);
    let o = verify_live(&dir);
    assert!(o.status.success(), "{}", describe("verify", &o));
    assert_eq!(reopen(&dir), (2, 0), "the lost change is the description");
    assert_eq!(data_len(&dir), start);
}

#[test]
fn any_other_tail_is_still_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (start, end) = keystore_with_long_last_frame(&dir);
    let original = fs::read(dir.join("KMS_DATA")).unwrap();
    let mut zeros_then_one = vec![0u8; 40];
    zeros_then_one.push(1);
    let mut unaligned = original.clone();
    unaligned[(start as usize + 700)..].fill(0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage after the last frame", {
            let mut b = original.clone();
            b.extend_from_slice(b"garbage!");
            b
        }),
        ("zeros, then a non-zero byte", {
            let mut b = original.clone();
            b.extend_from_slice(&zeros_then_one);
            b
        }),
        ("the last frame zeroed from inside a block", unaligned),
    ];
    assert!(end > start + 700);
    for (what, bytes) in cases {
        fs::write(dir.join("KMS_DATA"), &bytes).unwrap();
        for o in [verify(&dir), verify_live(&dir)] {
            assert!(!o.status.success(), "{what}: {}", describe("verify", &o));
            assert!(text(&o.stderr).contains("KMS_DATA"), "{what}");
        }
        assert!(Kms::open(&dir).is_err(), "{what}: mounted");
        assert_eq!(fs::read(dir.join("KMS_DATA")).unwrap(), bytes, "{what}");
    }
}

// ---- 5: verify of a truncated copy -----------------------------------------------------------

#[test]
fn verify_of_a_copy_that_ends_torn_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (start, end) = keystore_with_long_last_frame(&dir);
    let original = fs::read(dir.join("KMS_DATA")).unwrap();
    for cut in [
        start + 1,
        start + 15,
        start + 16,
        (start + end) / 2,
        end - 1,
    ] {
        fs::write(dir.join("KMS_DATA"), &original[..cut as usize]).unwrap();
        let o = verify(&dir);
        let err = text(&o.stderr);
        assert!(
            !o.status.success(),
            "cut at {cut}: {}",
            describe("verify", &o)
        );
        let torn = cut - start;
        assert!(
            err.contains(&format!("KMS_DATA ends with {torn} {TORN_COPY}")),
            "cut at {cut}: {err}"
        );
        assert!(!err.contains("acknowledged"), "{err}");
        // A live keystore's data directory, mid-append: allowed, and said so honestly.
        let o = verify_live(&dir);
        let err = text(&o.stderr);
        assert!(
            o.status.success(),
            "{}",
            describe("verify --allow-torn-tail", &o)
        );
        assert!(!err.contains("no acknowledged change"), "{err}");
        assert!(
            err.contains(&format!("KMS_DATA ends with {torn} bytes")),
            "{err}"
        );
    }
    // Cut at a frame boundary: indistinguishable from a crash before the change was made.
    fs::write(dir.join("KMS_DATA"), &original[..start as usize]).unwrap();
    assert!(verify(&dir).status.success());
}

#[test]
fn verify_of_a_copy_whose_last_length_field_was_enlarged_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (start, _) = keystore_with_long_last_frame(&dir);
    let mut bytes = fs::read(dir.join("KMS_DATA")).unwrap();
    let at = start as usize;
    let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) + 1000;
    bytes[at..at + 4].copy_from_slice(&len.to_le_bytes());
    bytes[at + 4..at + 8].copy_from_slice(&(!len).to_le_bytes());
    fs::write(dir.join("KMS_DATA"), &bytes).unwrap();
    let o = verify(&dir);
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{}", describe("verify", &o));
    assert!(err.contains(TORN_COPY), "{err}");
    assert!(!err.contains("acknowledged"), "{err}");
    assert!(!text(&o.stdout).starts_with("ok"), "{}", text(&o.stdout));
}

// ---- 7: init is all or nothing ---------------------------------------------------------------

/// A small tmpfs, unmounted (lazily) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: PathBuf, size: &str) -> Tmpfs {
        fs::create_dir_all(&at).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(&at)
            .output()
            .expect("run mount");
        assert!(o.status.success(), "{}", describe("mount -t tmpfs", &o));
        Tmpfs(at)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `path` with `path`, then frees `pages` pages of it.
fn fill_but(path: &Path, pages: u64) {
    let mut f = fs::File::create(path).unwrap();
    let page = [0xa5u8; 4096];
    while f.write_all(&page).is_ok() {}
    let _ = f.sync_all();
    let len = f.metadata().unwrap().len();
    f.set_len((len / 4096).saturating_sub(pages) * 4096)
        .unwrap();
}

fn kmsfs_init(dir: &Path) -> Output {
    kmsfs([
        OsStr::new("init"),
        OsStr::new("--data-dir"),
        dir.as_os_str(),
    ])
}

fn leftovers(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir) {
        Err(_) => Vec::new(),
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "kmsfs.lock")
            .collect(),
    }
}

#[test]
fn init_on_a_full_disk_leaves_nothing_behind_and_succeeds_once_space_is_freed() {
    let s = Scratch::new();
    let fs_root = s.path("tmpfs");
    let _tmpfs = Tmpfs::mount(fs_root.clone(), "64k");
    let data = fs_root.join("data");
    let filler = fs_root.join("filler");
    let mut failed_part_way = false;
    let mut succeeded = false;
    for pages in 0..8 {
        let _ = fs::remove_dir_all(&data);
        fill_but(&filler, pages);
        let o = kmsfs_init(&data);
        if o.status.success() {
            succeeded = true;
            break;
        }
        let left = leftovers(&data);
        assert!(
            left.is_empty(),
            "init failed with {pages} free page(s) and left {left:?} behind: {}",
            describe("kmsfs init", &o)
        );
        // Part-way: at least the first key file could have been written.
        failed_part_way |= pages >= 1;
        // What the administrator then sees: mount and init agree that there is no keystore.
        let o = kmsfs_init(&data);
        assert!(
            !text(&o.stderr).contains("already holds a keystore file"),
            "{}",
            describe("init again", &o)
        );
    }
    assert!(
        failed_part_way,
        "no size made init fail after its first file"
    );
    assert!(succeeded, "init never succeeded");
    let _ = fs::remove_dir_all(&data);
    fs::remove_file(&filler).unwrap();
    let o = kmsfs_init(&data);
    assert!(o.status.success(), "{}", describe("init with space", &o));
    let mut left = leftovers(&data);
    left.sort();
    assert_eq!(left, ["KMS_DATA", "KMS_HMKF", "KMS_KPKF"]);
    let o = verify(&data);
    assert!(o.status.success(), "{}", describe("verify", &o));
}

// ---- 8: regenerate beside a daemon -----------------------------------------------------------

#[test]
fn regenerate_is_refused_while_a_frozen_keystore_is_mounted() {
    let s = Scratch::new();
    let data = s.path("data");
    store::init(
        &data,
        InitOptions {
            hmk_passphrase: Some(Passphrase::new("hmk words, long enough".into())),
            kpk_passphrase: Some(Passphrase::new("kpk words, long enough".into())),
        },
    )
    .unwrap();
    let hmk_pw = s.file("hmk.pw", "hmk words, long enough\n");
    let d = Daemon::start(&data, &s.path("mnt"));
    d.sh_ok("echo quiesce > .quiesce");
    let key_file = data.join("KMS_HMKF");
    let before = fs::metadata(&key_file).unwrap();
    let bytes = fs::read(&key_file).unwrap();
    assert_eq!(before.permissions().mode() & 0o7777, 0o400, "frozen");

    let o = kmsfs([
        OsStr::new("regenerate"),
        OsStr::new("--data-dir"),
        data.as_os_str(),
        OsStr::new("--hmk-passphrase-file"),
        hmk_pw.as_os_str(),
    ]);
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{}", describe("regenerate", &o));
    assert!(
        err.contains("is in use by a running kmsfs") && err.contains("unmount it first"),
        "{err}"
    );
    let after = fs::metadata(&key_file).unwrap();
    assert_eq!(after.ino(), before.ino(), "KMS_HMKF was replaced");
    assert_eq!(after.permissions().mode() & 0o7777, 0o400);
    assert_eq!(fs::read(&key_file).unwrap(), bytes);
    d.sh_ok("echo unquiesce > .quiesce");
    d.stop();

    // Unmounted, it rebuilds the file as before.
    let o = kmsfs([
        OsStr::new("regenerate"),
        OsStr::new("--data-dir"),
        data.as_os_str(),
        OsStr::new("--hmk-passphrase-file"),
        hmk_pw.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", describe("regenerate", &o));
    assert_eq!(fs::read(&key_file).unwrap(), bytes);
}
