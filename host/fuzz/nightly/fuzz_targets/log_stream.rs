//! libFuzzer entry for `shoal_fuzz::targets::log_stream`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_fuzz::targets::log_stream(data));
