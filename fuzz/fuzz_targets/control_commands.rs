//! The text of one write to a command file (`state`, `cipher`, `.quiesce`, `.rotation`):
//! a refusal is short and echoes at most 8 plain characters of what was written (it may be
//! a mis-pasted secret); an accepted command means what it says.
#![no_main]

use kmsfs::fuzzing::*;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::*;

/// The echo a refusal carries, if any: at most 8 characters of [A-Za-z0-9_-?], then `...`.
fn echo_of(e: &FsError) -> Option<&str> {
    match e {
        FsError::Input(i) => echo_of_input(i),
        FsError::Keystore(KeystoreError::UnknownCipher(s)) => Some(s),
        _ => None,
    }
}

fn echo_of_input(e: &InputError) -> Option<&str> {
    match e {
        InputError::UnknownState(s)
        | InputError::UnknownQuiesce(s)
        | InputError::BadLease(s)
        | InputError::UnknownRotation(s) => Some(s),
        _ => None,
    }
}

fn check_refusal(input: &str, text: String, echo: Option<&str>) {
    assert!(
        text.len() <= MAX_ERROR_BYTES,
        "{} bytes: {text:?}",
        text.len()
    );
    let mut rest = text.clone();
    if let Some(echo) = echo {
        let body = echo.strip_suffix("...").unwrap_or(echo);
        assert!(body.chars().count() <= MAX_ECHO, "echo {echo:?}");
        assert!(
            body.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '?'),
            "echo {echo:?}"
        );
        // A mark, not nothing: with the echo gone, the message's own `command "` and the
        // quotes around the echo would read as `command ""`, which an input can also hold
        // (fuzz/artifacts: `2"e command """...`), and that is no echo of it.
        rest = rest.replacen(echo, "\u{0}", 1);
    }
    // What is left is the message's own words: none of it may come from the input, beyond
    // words the messages always hold.
    if echoes_more_than_allowed(&rest, input) {
        let vocab = vocabulary();
        let chars: Vec<char> = input.chars().collect();
        for w in chars.windows(MAX_ECHO + 1) {
            let w: String = w.iter().collect();
            assert!(
                !rest.contains(&w) || vocab.contains(&w),
                "refusal {text:?} echoes {w:?} of the input"
            );
        }
    }
}

/// Every fixed word a refusal may hold (the messages themselves, with a neutral echo).
fn vocabulary() -> String {
    let mut v = String::new();
    v += &state("x").unwrap_err().to_string();
    v += &cipher("x").unwrap_err().to_string();
    v += &quiesce("x").unwrap_err().to_string();
    v += &quiesce("quiesce x").unwrap_err().to_string();
    v += &rotation("x").unwrap_err().to_string();
    v += &rotation("0d").unwrap_err().to_string();
    v += &command_text(b"\xff").unwrap_err().to_string();
    v += &command_text(&[b'a'; MAX_COMMAND_BYTES + 1])
        .unwrap_err()
        .to_string();
    v
}

fuzz_target!(|data: &[u8]| {
    let text = match command_text(data) {
        Ok(t) => t,
        Err(e) => {
            let lossy = String::from_utf8_lossy(data);
            check_refusal(&lossy, e.to_string(), echo_of_input(&e));
            return;
        }
    };
    assert!(text.len() <= MAX_COMMAND_BYTES);
    assert_eq!(text, text.trim());

    match state(text) {
        Ok(s) => assert_eq!(state(&s.to_string()).unwrap(), s, "a state round-trips"),
        Err(e) => check_refusal(text, e.to_string(), echo_of_input(&e)),
    }
    match cipher(text) {
        Ok(c) => assert_eq!(cipher(&c.to_string()).unwrap(), c, "a cipher round-trips"),
        Err(e) => check_refusal(text, e.to_string(), echo_of(&e)),
    }
    match quiesce(text) {
        Ok(QuiesceCommand::Unquiesce) => {
            let w = text.to_ascii_lowercase();
            assert!(w == "unquiesce" || w == "0", "{text:?}");
        }
        Ok(QuiesceCommand::Quiesce { lease }) => {
            let words: Vec<String> = text
                .split_whitespace()
                .map(|w| w.to_ascii_lowercase())
                .collect();
            match lease {
                None => assert!(words == ["quiesce"] || words == ["1"], "{text:?}"),
                Some(d) => {
                    assert_eq!(words.len(), 2, "{text:?}");
                    assert_eq!(words[0], "quiesce");
                    assert_eq!(words[1].parse::<u64>().unwrap(), d.as_secs());
                }
            }
        }
        Err(e) => check_refusal(text, e.to_string(), echo_of_input(&e)),
    }
    match rotation(text) {
        Ok(RotationCommand::RotateNow) => assert!(text.eq_ignore_ascii_case("rotate")),
        Ok(RotationCommand::Every(p)) | Ok(RotationCommand::RetireAfter(p)) => {
            if let Some(p) = p {
                assert!(p.secs() > 0);
            }
        }
        Err(e) => check_refusal(text, e.to_string(), echo_of(&e)),
    }
});
