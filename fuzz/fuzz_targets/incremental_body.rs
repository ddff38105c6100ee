//! A POST body fed in chunks must decode like one piece; see
//! `sessionwire::fuzzing::incremental`.
#![no_main]

use sessionwire::{fuzzing, verdict};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzzing::incremental(data);
});

// Keep the header (chunk sizes) and mutate the batch behind the base64 text
// most of the time; the plain mutation reaches the header.
libfuzzer_sys::fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    let (_, sizes, _) = verdict::split_incremental(&data[..size]);
    let keep = if size == 0 { 0 } else { 1 + sizes.len() };
    fuzzing::mutate_base64(
        data,
        size,
        max_size,
        seed,
        keep,
        libfuzzer_sys::fuzzer_mutate,
    )
});
