//! Name::parse and Name::parse_bytes: what is accepted follows the rules and round-trips;
//! the byte and text forms agree.
#![no_main]

use kmsfs::fuzzing::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let from_bytes = Name::parse_bytes(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let from_text = Name::parse(text);
        assert_eq!(from_bytes.is_ok(), from_text.is_ok(), "{text:?}");
        if let Ok(n) = from_text {
            assert_eq!(n.as_str(), text);
            assert_eq!(n.to_string(), text);
            assert_eq!(Name::parse(n.as_str()).unwrap(), n, "round-trips");
            // Stored and read back as JSON, as the keystore does.
            let json = serde_json::to_string(&n).unwrap();
            assert_eq!(serde_json::from_str::<Name>(&json).unwrap(), n);
            assert!(!text.is_empty() && text.len() <= MAX_NAME_BYTES);
            assert!(!text.starts_with('.') && !text.contains('/'));
            assert!(!text.chars().any(|c| c.is_control()));
        }
    } else {
        assert!(from_bytes.is_err(), "not UTF-8 yet accepted");
    }
    if let Ok(n) = from_bytes {
        assert_eq!(n.as_str().as_bytes(), data);
        assert_eq!(Name::parse_bytes(n.as_str().as_bytes()).unwrap(), n);
    }
    if data.len() > MAX_NAME_BYTES {
        assert!(matches!(
            Name::parse_bytes(data),
            Err(KeystoreError::NameTooLong { .. })
        ));
    }
});
