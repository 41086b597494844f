//! SigV4 parsing and verification: lines become method, path, query pairs and headers
//! (`name: value`), any of them malformed → an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tollgate_server::auth::sigv4::{SigV4Credential, SigV4Request, SigV4Verifier};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let method = lines.next().unwrap_or("GET");
    let path = lines.next().unwrap_or("/");
    let mut query = Vec::new();
    let mut headers = Vec::new();
    for l in lines {
        if let Some((k, v)) = l.split_once('=') {
            query.push((k.to_string(), v.to_string()));
        } else if let Some((k, v)) = l.split_once(':') {
            headers.push((k.to_string(), v.trim_start().to_string()));
        }
    }
    let v = SigV4Verifier::new(
        "us-east-1",
        "execute-api",
        vec![SigV4Credential {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            principal_id: "p".into(),
            resources: vec!["*".into()],
        }],
    );
    let req = SigV4Request {
        method,
        path,
        query: &query,
        headers: &headers,
        payload_sha256: None,
    };
    let _ = v.verify(&req, 1_800_000_000_000_000);
});
