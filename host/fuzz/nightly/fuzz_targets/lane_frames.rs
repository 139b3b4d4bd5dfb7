//! libFuzzer entry for `shoal_fuzz::targets::lane_frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_fuzz::targets::lane_frames(data));
