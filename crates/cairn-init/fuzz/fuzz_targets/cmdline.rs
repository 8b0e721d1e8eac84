//! The `cmdline` target: see `cairn_init::fuzz::cmdline` for its property.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_init::fuzz::cmdline(data));
