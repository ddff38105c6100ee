//! One HTTP polling POST body; see `sessionwire::fuzzing::http_body`.
#![no_main]

use sessionwire::fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzzing::http_body(data);
});

// Mutate the batch behind the base64 most of the time (see `mutate_base64`).
libfuzzer_sys::fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    fuzzing::mutate_base64(data, size, max_size, seed, 0, libfuzzer_sys::fuzzer_mutate)
});
