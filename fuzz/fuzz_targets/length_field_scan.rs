//! Fuzz target: see `_tricorn::fuzzing::length_field_scan`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| _tricorn::fuzzing::length_field_scan(data));
