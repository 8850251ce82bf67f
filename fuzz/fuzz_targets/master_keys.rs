//! What is read back about master keys: key files of either form (`decode_any_key_file`), the
//! TPM's and the token's sealed blobs inside them (read from disk at every start, so damage or
//! a forgery must be refused, never panic), and requests written to `.change-key` (which must
//! never echo what was written: it takes passphrases).
#![no_main]

use kmsfs::fuzzing::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for kind in [KeyFileKind::Hmk, KeyFileKind::Kpk] {
        if let Ok(KeyFileBody::Sealed { by, blob }) = decode_any_key_file(kind, data) {
            // A sealed file re-encodes to the same bytes.
            assert_eq!(encode_sealed_key_file(kind, by, &blob), data);
        }
    }
    let _ = describe_tpm_blob(data);
    let _ = tpm_policy_of(data);
    if let Ok(b) = TokenBlob::decode(data) {
        assert_eq!(b.encode().expect("a decoded blob encodes"), data, "re-encodes exactly");
    }
    // A key file around these bytes as its blob: the blob comes back whole.
    if data.len() <= 16 * 1024 {
        let file = encode_sealed_key_file(KeyFileKind::Hmk, Sealer::Tpm, data);
        match decode_any_key_file(KeyFileKind::Hmk, &file) {
            Ok(KeyFileBody::Sealed { blob, .. }) => assert_eq!(blob, data),
            other => panic!("{other:?}"),
        }
    }
    if let Err(e) = change_key(data) {
        let text = e.to_string();
        assert!(text.len() <= 200, "{text:?}");
        // A word (anything but an object) is refused with one of three fixed reasons: nothing
        // of what was written comes back, not even a prefix.
        let is_object = data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        if !is_object {
            let fixed = [
                ".change-key: unknown key (expected hmk or kpk, or a JSON object)".to_string(),
                InputError::NotUtf8 { what: "the command" }.to_string(),
                InputError::CommandTooLong { max: MAX_COMMAND_BYTES }.to_string(),
            ];
            assert!(fixed.contains(&text), "{text:?}");
        }
    }
});
