//! The route matcher: a template (first line) and paths (the other lines).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_server::catalog::routes::{Template, split_path};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let Some(Ok(t)) = lines.next().map(Template::parse) else {
        return;
    };
    for path in lines {
        let _ = t.matches(split_path(path));
    }
});
