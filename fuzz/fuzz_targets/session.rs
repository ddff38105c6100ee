//! A session driven by an `arbitrary` event sequence; see
//! `sessionwire::fuzzing::session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sessionwire::fuzzing::session(data, std::time::Instant::now());
});
