//! An `arbitrary`-built MQTT packet must round-trip; see `sessionwire::fuzzing::mqtt_roundtrip`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sessionwire::fuzzing::mqtt_roundtrip(data);
});
