//! One WebSocket message; see `sessionwire::fuzzing::message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sessionwire::fuzzing::message(data);
});
