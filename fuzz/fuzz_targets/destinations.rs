#![no_main]
//! Any text as a careers service's NCCIS destinations file.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = pathway_core::imports::destinations(&String::from_utf8_lossy(data));
});
