//! One packet a client sends after its MQTT 3.1.1 CONNECT; see `sessionwire::fuzzing::mqtt_v311`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sessionwire::fuzzing::mqtt_v311(data);
});
