//! Opening an export container with a fixed passphrase, as `kmsfs import` does: the KDF
//! parameters come from the container's own plain header, so what the loader accepts must be
//! bounded (no hostile header may demand much memory or time); a bad container is refused
//! quickly; a container that opens re-opens to the same.
//!
//! The input is either a whole container, or (first byte odd) edits to a valid one sealed
//! with tiny KDF parameters, so that the fuzzer reaches the derivation and the body.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kmsfs::fuzzing::*;
use libfuzzer_sys::fuzz_target;

/// 4 times the default Argon2id memory (64 MiB), and 4 times its work (memory x passes).
const MAX_M_COST_KIB: u32 = 4 * 65536;
const MAX_WORK: u64 = 4 * 65536 * 3;

fn pass() -> Passphrase {
    Passphrase::new("fuzz passphrase".into())
}

fn valid() -> &'static [u8] {
    static F: OnceLock<Vec<u8>> = OnceLock::new();
    F.get_or_init(|| {
        let mut kdf = kmsfs::crypto::KdfParams::with_salt(vec![9; 16]);
        kdf.m_cost_kib = 8;
        kdf.t_cost = 1;
        let header = ContainerHeader {
            kdf,
            created: kmsfs::keystore::Timestamp(1),
        };
        seal_container_with(&header, &pass()).expect("seals")
    })
}

fn check(bytes: &[u8]) {
    if let Ok((h, aad_len)) = container_header(bytes) {
        assert!(aad_len <= bytes.len());
        let k = &h.kdf;
        assert!(k.m_cost_kib <= MAX_M_COST_KIB, "{k:?}");
        assert!(
            u64::from(k.m_cost_kib) * u64::from(k.t_cost) <= MAX_WORK,
            "{k:?}"
        );
        // Parameters this costly would be allowed, but would make each run slow: the bound
        // itself is what matters here (and is unit-tested in src/transfer/container.rs).
        if u64::from(k.m_cost_kib) * u64::from(k.t_cost) > 4096 {
            return;
        }
    }
    let start = Instant::now();
    let opened = open_container(bytes, &pass());
    assert!(start.elapsed() < Duration::from_secs(2));
    match opened {
        Ok((h, body)) => {
            let again = open_container(bytes, &pass()).expect("opens twice");
            assert_eq!(again.0, h);
            assert_eq!(body.groups.len(), again.1.groups.len());
            assert!(open_container(bytes, &Passphrase::new("other".into())).is_err());
        }
        Err(e) => assert!(e.to_string().len() <= 300, "{e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some((&mode, rest)) = data.split_first() {
        if mode & 1 == 1 {
            let mut f = valid().to_vec();
            let mut chunks = rest.chunks_exact(3);
            for c in chunks.by_ref().take((mode >> 1) as usize) {
                let at = u16::from_le_bytes([c[0], c[1]]) as usize;
                if at < f.len() {
                    f[at] ^= c[2];
                } else {
                    f.truncate(at % (f.len() + 1));
                }
            }
            f.extend_from_slice(chunks.remainder());
            check(&f);
        }
    }
});
