//! The case-file parser: any text gives a case or an error naming the file
//! and a line inside it, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = std::path::Path::new("fuzz.toml");
    if let Err(e) = kcell_harness::case::Case::parse(text, file) {
        let msg = e.to_string();
        assert!(msg.contains("fuzz.toml"), "the error names the file: {msg}");
    }
});
