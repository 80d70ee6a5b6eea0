//! Fuzz target: see `_tricorn::fuzzing::access_log_format`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| _tricorn::fuzzing::access_log_format(data));
