#![no_main]
//! Any text as SSDA903 header, episodes and oc3 files (split on NUL bytes).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\0');
    let (a, b, c) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next());
    if let Ok((children, _, _)) = pathway_core::ssda903::looked_after(a, b, c) {
        let today = pathway_core::date::Day::parse("2026-11-02").unwrap();
        let end = pathway_core::ssda903::collection_year_end(None, today);
        for child in &children {
            let _ = pathway_core::ssda903::events(child, today, end);
        }
    }
});
