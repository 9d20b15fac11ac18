#![no_main]
//! Any bytes as a submitted envelope: an answer (accepted or field errors), never a panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = pathway_core::envelope::validate(&value);
    }
});
