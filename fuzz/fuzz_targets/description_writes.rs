//! A description edited through TextInput: writes and truncations at arbitrary offsets. The
//! text never exceeds 4096 bytes, a refused write changes nothing, an accepted one leaves
//! what a small ordinary file would hold, and a commit is valid UTF-8 or refused.
#![no_main]

use kmsfs::fuzzing::*;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    Write {
        offset: u64,
        data: Vec<u8>,
        append: bool,
    },
    Truncate {
        size: u64,
    },
    Flush,
    Close,
}

#[derive(Arbitrary, Debug)]
struct Input {
    current: String,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    if input.current.len() > MAX_DESCRIPTION_BYTES {
        return;
    }
    let mut t = TextInput::new(input.current.clone().into_bytes());
    // The model: a plain file.
    let mut model = input.current.into_bytes();
    let mut refused = false;
    for op in input.ops {
        match op {
            Op::Write {
                offset,
                data,
                append,
            } => {
                let before = t.bytes().to_vec();
                let at = if append {
                    model.len()
                } else {
                    usize::try_from(offset).unwrap_or(usize::MAX)
                };
                match t.write(offset, &data, append) {
                    Ok(()) => {
                        let end = at + data.len();
                        if model.len() < end {
                            model.resize(end, 0);
                        }
                        model[at..end].copy_from_slice(&data);
                        assert_eq!(t.bytes(), &model[..]);
                    }
                    Err(_) => {
                        assert_eq!(t.bytes(), &before[..], "a refused write changes nothing");
                        refused = true;
                    }
                }
            }
            Op::Truncate { size } => match t.truncate(size) {
                Ok(()) => {
                    model.resize(size as usize, 0);
                    assert_eq!(t.bytes(), &model[..]);
                }
                Err(_) => {
                    assert!(size as usize > MAX_DESCRIPTION_BYTES || size > usize::MAX as u64);
                    refused = true;
                }
            },
            Op::Flush | Op::Close => {
                if let Some(r) = t.take_pending(matches!(op, Op::Close)) {
                    assert!(!refused, "a refused edit commits nothing");
                    match r {
                        Ok(s) => assert_eq!(s.as_bytes(), &model[..]),
                        Err(_) => assert!(std::str::from_utf8(&model).is_err()),
                    }
                }
            }
        }
        assert!(
            t.bytes().len() <= MAX_DESCRIPTION_BYTES,
            "{} bytes",
            t.bytes().len()
        );
    }
});
