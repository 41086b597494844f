//! The IAM-style policy matcher: a JSON policy document (first line) evaluated against ARNs
//! (the other lines), and the wildcard matcher on its own.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_server::auth::policy::{Policy, wildcard_match};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or("");
    if let Ok(doc) = serde_json::from_str::<serde_json::Value>(first)
        && let Ok(p) = Policy::parse(&doc)
    {
        for arn in lines.clone() {
            let _ = p.evaluate(arn);
        }
    }
    for arn in lines {
        let _ = wildcard_match(first, arn);
    }
});
