//! A `.create` object written in arbitrary pieces through ObjectInput, then parsed into a
//! request: splitting never changes the outcome, a completed object is exactly the bytes
//! written (blanks around it aside), and no refusal echoes a value (the object may hold a
//! passphrase).
#![no_main]

use kmsfs::fuzzing::*;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    bytes: Vec<u8>,
    cuts: Vec<u16>,
}

/// A string value in the object, of at least 9 characters: nothing of it may be echoed.
fn long_string_values(bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(serde_json::Value::Object(m)) = serde_json::from_slice::<serde_json::Value>(bytes) {
        for (k, v) in m {
            if k.chars().count() > 8 {
                out.push(k);
            }
            if let serde_json::Value::String(s) = v {
                if s.chars().count() > 8 {
                    out.push(s);
                }
            }
        }
    }
    out
}

fuzz_target!(|input: Input| {
    let bytes = &input.bytes;
    // The same bytes whole, and in the pieces `cuts` makes.
    let mut whole = ObjectInput::new(".create");
    let whole_result = whole.feed(bytes);
    let mut split = ObjectInput::new(".create");
    let mut at = 0usize;
    let mut results = Vec::new();
    let mut cuts: Vec<usize> = input
        .cuts
        .iter()
        .map(|&c| c as usize % (bytes.len() + 1))
        .collect();
    cuts.sort_unstable();
    cuts.push(bytes.len());
    for cut in cuts {
        if cut < at {
            continue;
        }
        results.push(split.feed(&bytes[at..cut]));
        at = cut;
    }
    // Each complete object is exactly what was written, blanks aside, and parses.
    for r in results.iter().chain(std::iter::once(&whole_result)) {
        match r {
            Ok(Some(obj)) => {
                let s = &obj[..];
                // The object as written, from its first byte (blanks before it included).
                let start = s
                    .iter()
                    .position(|b| !b.is_ascii_whitespace())
                    .expect("not blank");
                assert_eq!(s[start], b'{');
                assert!(!s.last().unwrap().is_ascii_whitespace());
                assert!(s.len() <= MAX_CREATE_BYTES);
                // Complete by its shape (the scan builds no values); an escape that is not a
                // character (a lone surrogate) is found by the parse, which refuses it.
                if serde_json::from_slice::<serde_json::Value>(s).is_err() {
                    let e = new_record(s).expect_err("not JSON, yet a request");
                    assert!(matches!(e, FsError::Input(_)), "{e}");
                    continue;
                }
                match new_record(s) {
                    Ok(rec) => {
                        assert_eq!(Name::parse(rec.name.as_str()).unwrap(), rec.name);
                        assert!(matches!(rec.state, State::Prelive | State::Active));
                    }
                    Err(e) => {
                        let text = e.to_string();
                        assert!(text.len() <= 300, "{text:?}");
                        for v in long_string_values(s) {
                            // A name is echoed when refused by the name rules; nothing else.
                            if matches!(e, FsError::Keystore(_)) {
                                continue;
                            }
                            assert!(!text.contains(&v), "{text:?} echoes {v:?}");
                        }
                    }
                }
            }
            Ok(None) => {}
            Err(e) => assert!(e.to_string().len() <= 300, "{e}"),
        }
    }
    // A write that completed the object in one piece completes it in pieces too (when the
    // last piece completes it and nothing before it was refused or complete).
    if let Ok(Some(obj)) = &whole_result {
        let earlier_ok = results[..results.len() - 1]
            .iter()
            .all(|r| matches!(r, Ok(None)));
        if earlier_ok {
            match results.last().unwrap() {
                Ok(Some(o)) => assert_eq!(&o[..], &obj[..]),
                other => panic!("whole: complete; split: {other:?}"),
            }
        }
    }
    let _ = split.has_leftover();
});
