//! JWT parsing and verification against the test JWKS: any token → an identity or an error.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tollgate_server::auth::jwt::{JwksSource, JwtAuthorizer};

fn setup() -> &'static (tokio::runtime::Runtime, JwtAuthorizer) {
    static S: OnceLock<(tokio::runtime::Runtime, JwtAuthorizer)> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let jwks = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../server/src/auth/testdata/jwt/jwks.json"
        );
        let a = JwtAuthorizer::new(
            "https://issuer.example.test/pool-1",
            vec!["app-client-1".into()],
            JwksSource::File(jwks.into()),
        );
        rt.block_on(a.load()).expect("jwks");
        (rt, a)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let (rt, a) = setup();
    let _ = rt.block_on(a.verify(token, &[], 1_800_000_000));
    let _ = rt.block_on(a.verify(token, &["read".to_string()], 1_800_000_000));
});
