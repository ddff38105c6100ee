//! The MQTT session registry driven by an `arbitrary` step sequence; see
//! `sessionwire::fuzzing::mqtt_session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sessionwire::fuzzing::mqtt_session(data, std::time::Instant::now());
});
