//! Fuzz target: see `_tricorn::fuzzing::trusted_hosts`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| _tricorn::fuzzing::trusted_hosts(data));
