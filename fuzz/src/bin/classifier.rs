//! Fuzz target `classifier`: see exfw_tests::fuzz::classifier.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| exfw_tests::fuzz::classifier(data));
