//! libFuzzer entry for `shoal_fuzz::targets::migration_wire`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_fuzz::targets::migration_wire(data));
