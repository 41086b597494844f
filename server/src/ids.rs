//! Ids and digests shared by the config, the catalog, the definitions and the admin API: how an
//! API key value and an identity are found (SHA-256 digests) and an identity's derived id.
//!
//! A leaf: it imports nothing from the crate.
use sha2::{Digest, Sha256};

/// SHA-256 of an API key value: the only form in which values are kept.
pub fn key_digest(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// The digest an identity (`principal=<v>`, `claim:<name>=<v>`) is found by: SHA-256 of
/// `identity\0<identity>`, apart from every key value's digest.
pub fn identity_digest(identity: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"identity\0");
    h.update(identity.as_bytes());
    h.finalize().into()
}

/// An identity's id — its record's id when it has an assignment, and the owner of its buckets
/// and quota in the store either way: `i-` and 24 hex digits of [`identity_digest`].
pub fn identity_key_id(identity: &str) -> String {
    let d = identity_digest(identity);
    format!("i-{}", hex::encode(&d[..12]))
}

/// Whether `id` has the shape of an identity's id (API key ids may not).
pub fn is_identity_key_id(id: &str) -> bool {
    id.len() == 26
        && id.starts_with("i-")
        && id[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
