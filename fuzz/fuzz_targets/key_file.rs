//! decode_key_file: a 76-byte file whose checksum, magic and version are right, and nothing
//! else, is a key; the key read back re-encodes to the same bytes.
#![no_main]

use kmsfs::fuzzing::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for kind in [KeyFileKind::Hmk, KeyFileKind::Kpk] {
        match decode_key_file(kind, data) {
            Ok(key) => assert_eq!(encode_key_file(kind, &key), data, "re-encodes exactly"),
            Err(e) => {
                let text = e.to_string();
                assert!(text.len() <= 200, "{text:?}");
                assert!(
                    !text.contains(&hex::encode(data.get(12..44).unwrap_or(&[])))
                        || data.len() < 44
                );
            }
        }
    }
    // A well-formed file with these bytes as its key: accepted.
    if data.len() >= 32 {
        let good = {
            let mut k = [0u8; 32];
            k.copy_from_slice(&data[..32]);
            let first =
                encode_key_file(KeyFileKind::Hmk, &kmsfs::crypto::SecretKey32::from_bytes(k));
            first
        };
        assert!(decode_key_file(KeyFileKind::Hmk, &good).is_ok());
        assert!(
            decode_key_file(KeyFileKind::Kpk, &good).is_err(),
            "kinds cannot be swapped"
        );
    }
});
