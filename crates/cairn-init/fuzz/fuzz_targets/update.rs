//! The `update` target: see `cairn_init::fuzz::update` for its property.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_init::fuzz::update(data));
