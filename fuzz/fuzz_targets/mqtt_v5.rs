//! One packet a client sends after its MQTT 5.0 CONNECT; see `sessionwire::fuzzing::mqtt_v5`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sessionwire::fuzzing::mqtt_v5(data);
});
