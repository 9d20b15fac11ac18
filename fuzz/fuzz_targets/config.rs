#![no_main]
//! Any text as the service configuration: a report of its problems, never a panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = exchange::config::parse(&String::from_utf8_lossy(data), "fuzz");
});
