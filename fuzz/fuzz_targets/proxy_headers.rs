//! Fuzz target: see `_tricorn::fuzzing::proxy_headers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| _tricorn::fuzzing::proxy_headers(data));
