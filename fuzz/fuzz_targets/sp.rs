//! The `sp` connection field; see `sessionwire::fuzzing::sp`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = sessionwire::fuzzing::sp(data);
});
