//! A client's MQTT stream in chunks must decode like one piece; see `sessionwire::fuzzing::mqtt_stream`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sessionwire::fuzzing::mqtt_stream(data);
});
