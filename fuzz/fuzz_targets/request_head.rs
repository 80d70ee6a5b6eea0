//! Fuzz target: see `_tricorn::fuzzing::request_head`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| _tricorn::fuzzing::request_head(data));
