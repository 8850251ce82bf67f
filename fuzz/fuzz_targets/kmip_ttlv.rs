//! The KMIP TTLV decoder on arbitrary bytes: it never panics, what it accepts encodes back to
//! exactly the same bytes (the decoder is strict), and reading it as a request never panics.
#![no_main]

use kmsfs::fuzzing::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = kmip_decode(data) {
        assert_eq!(msg.encode(), data, "round-trips byte for byte");
        assert_eq!(kmip_decode(&msg.encode()).unwrap(), msg);
        let _ = kmip_request(&msg);
    }
});
