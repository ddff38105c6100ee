//! An `arbitrary`-built message must round-trip; see `sessionwire::fuzzing::roundtrip`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sessionwire::fuzzing::roundtrip(data);
});
