//! Passphrases come from files, a terminal prompt, or an inherited file descriptor, never from
//! the command line or the environment: `--hmk-passphrase-file /dev/fd/3` with the passphrase
//! on descriptor 3 (a pipe from a secrets tool, say) leaves it nowhere on disk.

mod support;

use support::cli::{bash_in, ok};

#[test]
fn a_passphrase_on_an_inherited_descriptor_derives_the_same_keys_as_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    // The passphrases reach kmsfs only through descriptors 3 and 4 of a pipe.
    let script = r#"set -e
kmsfs init --data-dir fd-made --hmk-passphrase-file /dev/fd/3 --kpk-passphrase-file /dev/fd/4 \
    3< <(printf 'first long passphrase\n') 4< <(printf 'second long passphrase\n')
printf 'first long passphrase\n' > hmk.pass
printf 'second long passphrase\n' > kpk.pass
chmod 600 hmk.pass kpk.pass
# The header holds the salts: regenerating from files must rebuild identical key files.
mkdir -m 700 regen
cp fd-made/KMS_DATA regen/
kmsfs regenerate --data-dir regen --hmk-passphrase-file hmk.pass --kpk-passphrase-file kpk.pass
cmp fd-made/KMS_HMKF regen/KMS_HMKF
cmp fd-made/KMS_KPKF regen/KMS_KPKF
kmsfs verify --data-dir regen
"#;
    ok("init from descriptors", bash_in(dir.path(), script, &[]));
    // Nothing but the three files (and the lock) was written in the data directory.
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("fd-made"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["KMS_DATA", "KMS_HMKF", "KMS_KPKF"]);
}
