//! The KMS_DATA loader, decode_header and decode_file, under a fixed test HMK: it never
//! panics, never allocates more than a few times the file's size plus a fixed bound, and
//! what it accepts is consistent (the header it reports is the one decode_header reads, the
//! valid length and the torn tail add up to the file).
//!
//! The input is either a whole file, or (first byte odd) edits to a valid file under the
//! test key, so that the fuzzer gets past the authentication of the frames.
#![no_main]

use std::sync::OnceLock;

use kmsfs::fuzzing::*;
use libfuzzer_sys::fuzz_target;

#[path = "alloc.rs"]
mod alloc;

#[global_allocator]
static A: alloc::Counting = alloc::Counting;

/// What the loader may allocate beyond a few times the file's size: the parsed header, the
/// keystore's indexes, error texts.
const SLACK: usize = 1 << 20;

fn hmk() -> &'static Hmk {
    static K: OnceLock<Hmk> = OnceLock::new();
    K.get_or_init(|| Hmk::from_secret(kmsfs::crypto::SecretKey32::from_bytes([7; 32])))
}

fn valid() -> &'static [u8] {
    static F: OnceLock<Vec<u8>> = OnceLock::new();
    F.get_or_init(|| encode_empty_data_file(hmk()))
}

fn check(bytes: &[u8]) {
    let base = alloc::reset();
    let header = decode_data_header(bytes);
    let loaded = decode_data_file(hmk(), bytes);
    let peak = alloc::peak_since(base);
    assert!(
        peak <= 4 * bytes.len() + SLACK,
        "{peak} bytes allocated for a file of {}",
        bytes.len()
    );
    if let Ok(l) = &loaded {
        let h = header
            .as_ref()
            .expect("a loaded file has a readable header");
        assert_eq!(&l.parsed, h);
        assert!(l.frames >= 1);
        assert_eq!(l.valid_len + l.torn_tail, bytes.len() as u64);
        assert!(l.valid_len as usize >= h.len);
    }
    if let Ok(h) = &header {
        assert!(h.len <= bytes.len());
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some((&mode, rest)) = data.split_first() {
        if mode & 1 == 1 {
            // Edits to a valid file: (position u16, xor byte) pairs, then bytes to append.
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
