//! The config parser and validator: any text → a config or a list of errors, never a panic.
//! Only the pure parse runs: it touches no file system (the files a config names are the
//! preflight's), so the fuzzer's invented paths are never opened.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tollgate_server::config::parse(text, &|_| None);
    }
});
