//! libFuzzer entry for `shoal_fuzz::targets::snapshot_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_fuzz::targets::snapshot_file(data));
