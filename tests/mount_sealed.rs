//! Master keys sealed to a TPM (a real software TPM, swtpm) and wrapped by a PKCS#11 token
//! (a real SoftHSM2 token), end to end through the command line and a real mount: `kmsfs
//! seal`, `kmsfs mount` unsealing at start, a key change through the mount sealed the same
//! way, `verify` and a restore drill in each mode, `kmsfs unseal`, and clear errors for a
//! changed PCR, a wrong PIN and a missing option.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};
use support::cli::{failed, kmsfs, ok};
use support::daemon::{mount_refused_with, Daemon};
use support::examples::{drill, the_backup};
use support::softhsm;
use support::swtpm::Swtpm;
use tss_esapi::handles::PcrHandle;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::{Digest, DigestValues};
use tss_esapi::{Context, TctiNameConf};

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn keys(d: &Daemon) -> BTreeMap<String, Vec<u8>> {
    ["pool/a", "pool/b"]
        .iter()
        .map(|r| {
            (
                r.to_string(),
                std::fs::read(d.p(&format!("{r}/key"))).unwrap(),
            )
        })
        .collect()
}

fn info(data: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(
        "kmsfs info",
        kmsfs(["info", "--json", "--data-dir", arg(data)]),
    ))
    .unwrap()
}

fn keystore_with_keys(dir: &Path) -> (std::path::PathBuf, BTreeMap<String, Vec<u8>>) {
    let data = dir.join("data");
    let d = Daemon::start_init(&data, &dir.join("mnt"));
    d.sh_ok("mkdir pool pool/a pool/b && echo active > pool/a/state && echo active > pool/b/state");
    let k = keys(&d);
    d.stop();
    (data, k)
}

fn extend_pcr7(tpm: &Swtpm) {
    let mut ctx = Context::new(TctiNameConf::from_str(&tpm.tcti()).unwrap()).unwrap();
    let mut values = DigestValues::new();
    values.set(
        HashingAlgorithm::Sha256,
        Digest::try_from(Sha256::digest(b"another boot loader").to_vec()).unwrap(),
    );
    ctx.execute_with_nullauth_session(|ctx| ctx.pcr_extend(PcrHandle::Pcr7, values))
        .expect("pcr_extend");
}

#[test]
fn a_tpm_sealed_hmk_unseals_at_mount_and_a_changed_pcr_is_one_clear_error() {
    let tpm = Swtpm::start();
    let tcti = tpm.tcti();
    let dir = tempfile::tempdir().unwrap();
    let (data, before) = keystore_with_keys(dir.path());
    let plain = std::fs::read(data.join("KMS_HMKF")).unwrap();
    ok(
        "seal --tpm",
        kmsfs([
            "seal",
            "--data-dir",
            arg(&data),
            "hmk",
            "--tpm",
            "--pcrs",
            "7",
            "--tcti",
            &tcti,
        ]),
    );
    let sealed = std::fs::read(data.join("KMS_HMKF")).unwrap();
    assert_ne!(sealed, plain);
    assert!(
        !sealed.windows(32).any(|w| w == &plain[12..44]),
        "the key itself is not in the sealed file"
    );
    let i = info(&data);
    assert_eq!(i["hmk"]["kept"], "tpm");
    assert!(
        i["hmk"]["needs"].as_str().unwrap().contains("PCRs 7"),
        "{i}"
    );
    // Without the TPM: one clear error naming the TCTI.
    let err = failed(
        "verify with no TPM",
        kmsfs([
            "verify",
            "--data-dir",
            arg(&data),
            "--tcti",
            "swtpm:host=127.0.0.1,port=1",
        ]),
    );
    assert!(err.contains("KMS_HMKF") && err.contains("TPM"), "{err}");
    ok(
        "verify",
        kmsfs(["verify", "--data-dir", arg(&data), "--tcti", &tcti]),
    );

    let mnt = dir.path().join("mnt");
    let d = Daemon::start_with(&data, &mnt, &["--tcti", &tcti]);
    assert_eq!(keys(&d), before);
    assert_eq!(d.json(".status")["hmk"]["kept"], "tpm");
    // A key change through the mount seals the new HMK to the TPM too.
    d.sh_ok("echo hmk > .change-key");
    assert_eq!(d.json(".status")["hmk"]["kept"], "tpm");
    // The backup script and the restore drill on this host, with its TPM.
    let root = dir.path().join("backups");
    let unlock = ["--tcti", tcti.as_str()];
    drill(
        dir.path(),
        "backup.sh",
        &[arg(&d.mnt), arg(&data), arg(&root)],
        &unlock,
    );
    let report = drill(
        dir.path(),
        "restore-drill.sh",
        &[arg(&the_backup(&root))],
        &unlock,
    );
    assert!(
        report.contains("restore drill passed: 1 group(s), 2 record(s)"),
        "{report}"
    );
    let hmk = d.json(".status")["hmk"]["id"].as_str().unwrap().to_string();
    d.stop();
    assert_eq!(info(&data)["hmk"]["kept"], "tpm");
    let d = Daemon::start_with(&data, &mnt, &["--tcti", &tcti]);
    assert_eq!(d.json(".status")["hmk"]["id"], hmk.as_str());
    assert_eq!(keys(&d), before);
    d.stop();

    // Something else booted: PCR 7 differs, and the TPM refuses.
    extend_pcr7(&tpm);
    let files: Vec<Vec<u8>> = ["KMS_DATA", "KMS_HMKF", "KMS_KPKF"]
        .iter()
        .map(|f| std::fs::read(data.join(f)).unwrap())
        .collect();
    let err = mount_refused_with(&data, &mnt, &["--tcti", &tcti]);
    assert!(
        err.contains("KMS_HMKF") && err.contains("PCR") && err.contains('7'),
        "{err}"
    );
    let after: Vec<Vec<u8>> = ["KMS_DATA", "KMS_HMKF", "KMS_KPKF"]
        .iter()
        .map(|f| std::fs::read(data.join(f)).unwrap())
        .collect();
    assert_eq!(after, files, "a refused start changes nothing");

    // The same TPM rebooted (PCRs back as they were): it unseals, and `unseal` writes the
    // plain key file back, for a move to another host.
    let tpm = Swtpm::restart(tpm);
    let tcti = tpm.tcti();
    ok(
        "unseal",
        kmsfs(["unseal", "--data-dir", arg(&data), "hmk", "--tcti", &tcti]),
    );
    assert_eq!(info(&data)["hmk"]["kept"], "file");
    let d = Daemon::start(&data, &mnt);
    assert_eq!(keys(&d), before);
    d.stop();
}

#[test]
fn a_token_wrapped_kpk_needs_the_token_and_its_pin() {
    let hsm = softhsm::shared();
    let dir = tempfile::tempdir().unwrap();
    let (data, before) = keystore_with_keys(dir.path());
    let pin = dir.path().join("pin");
    std::fs::write(&pin, format!("{}\n", softhsm::PIN)).unwrap();
    let wrong_pin = dir.path().join("wrong-pin");
    std::fs::write(&wrong_pin, "0000\n").unwrap();
    let module = arg(&hsm.module).to_string();
    let token = ["--pkcs11-module", &module, "--pkcs11-pin-file", arg(&pin)];
    let label = format!("kpk-{}", rand::random::<u32>());
    let mut seal = vec![
        "seal",
        "--data-dir",
        arg(&data),
        "kpk",
        "--pkcs11-token",
        softhsm::TOKEN,
        "--pkcs11-key-label",
        &label,
    ];
    seal.extend(token);
    ok("seal --pkcs11-token", kmsfs(&seal));
    let i = info(&data);
    assert_eq!(i["kpk"]["kept"], "pkcs11");
    assert!(
        i["kpk"]["needs"].as_str().unwrap().contains(softhsm::TOKEN),
        "{i}"
    );

    let mnt = dir.path().join("mnt");
    // Without the token's options: says which.
    let err = mount_refused_with(&data, &mnt, &[]);
    assert!(err.contains("--pkcs11-module"), "{err}");
    let err = mount_refused_with(
        &data,
        &mnt,
        &[
            "--pkcs11-module",
            &module,
            "--pkcs11-pin-file",
            arg(&wrong_pin),
        ],
    );
    assert!(err.contains("PIN"), "{err}");
    let d = Daemon::start_with(&data, &mnt, &token);
    assert_eq!(keys(&d), before);
    assert_eq!(d.json(".status")["kpk"]["kept"], "pkcs11");
    // A KPK change through the mount: every key re-wrapped, the new KPK wrapped by the token.
    d.sh_ok("echo kpk > .change-key");
    assert_eq!(keys(&d), before);
    let root = dir.path().join("backups");
    drill(
        dir.path(),
        "backup.sh",
        &[arg(&d.mnt), arg(&data), arg(&root)],
        &token,
    );
    let report = drill(
        dir.path(),
        "restore-drill.sh",
        &[arg(&the_backup(&root))],
        &token,
    );
    assert!(
        report.contains("restore drill passed: 1 group(s), 2 record(s)"),
        "{report}"
    );
    // A backup (frozen copy of the three files) restores on a host with the token.
    d.sh_ok("echo quiesce > .quiesce");
    let restore = dir.path().join("restore");
    std::fs::create_dir(&restore).unwrap();
    for f in ["KMS_DATA", "KMS_HMKF", "KMS_KPKF"] {
        std::fs::copy(data.join(f), restore.join(f)).unwrap();
    }
    d.sh_ok("echo unquiesce > .quiesce");
    d.stop();
    let mut verify = vec!["verify", "--data-dir", arg(&restore)];
    verify.extend(token);
    ok("verify the restored copy", kmsfs(&verify));
    let d = Daemon::start_with(&restore, &dir.path().join("mnt2"), &token);
    assert_eq!(keys(&d), before);
    d.stop();
    let mut unseal = vec!["unseal", "--data-dir", arg(&data), "kpk"];
    unseal.extend(token);
    ok("unseal", kmsfs(&unseal));
    assert_eq!(info(&data)["kpk"]["kept"], "file");
    drop(hsm);
}
