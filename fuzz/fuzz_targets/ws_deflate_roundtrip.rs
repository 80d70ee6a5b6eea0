//! Fuzz target: see `_tricorn::fuzzing::ws_deflate_roundtrip`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| _tricorn::fuzzing::ws_deflate_roundtrip(data));
