//! Fuzz target `config`: see exfw_tests::fuzz::config.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| exfw_tests::fuzz::config(data));
