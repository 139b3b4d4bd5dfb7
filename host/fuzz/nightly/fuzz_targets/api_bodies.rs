//! libFuzzer entry for `shoal_fuzz::targets::api_bodies`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_fuzz::targets::api_bodies(data));
