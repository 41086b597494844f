//! The config parser and validator: any text → a config or a list of errors, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tollgate_server::config::parse(text, &|_| None, std::path::Path::new("."));
    }
});
