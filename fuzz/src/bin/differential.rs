//! Fuzz target `differential`: see exfw_tests::fuzz::differential.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| exfw_tests::fuzz::differential(data));
