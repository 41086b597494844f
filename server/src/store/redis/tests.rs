//! The Redis store's pure helpers: error kinds, hash tags, cluster splits, redaction.
use super::*;

#[test]
fn error_kinds_come_from_redis_codes() {
    for (code, kind) in [
        ("OOM", BackendKind::Oom),
        ("BUSY", BackendKind::Busy),
        ("NOSCRIPT", BackendKind::NoScript),
        ("READONLY", BackendKind::ReadOnly),
        ("NOPERM", BackendKind::NoPerm),
        ("MASTERDOWN", BackendKind::MasterDown),
        ("LOADING", BackendKind::Loading),
        ("WRONGTYPE", BackendKind::Other),
    ] {
        assert_eq!(backend_kind(Some(code), "whatever"), kind, "{code}");
    }
    // A script's error under a generic code: the code in its message counts.
    let wrapped = "ERR Error running script (call to f_0123): @user_script:1: \
                   OOM command not allowed when used memory > 'maxmemory'.";
    assert_eq!(backend_kind(Some("ERR"), wrapped), BackendKind::Oom);
    assert_eq!(
        backend_kind(None, "You can't write against a read only replica."),
        BackendKind::ReadOnly
    );
    // Not a code: a word that merely contains one.
    assert_eq!(
        backend_kind(Some("ERR"), "no room for the key bloom:busybox"),
        BackendKind::Other
    );
}

#[test]
fn a_redis_error_keeps_its_kind_and_message() {
    let e = backend(redis::RedisError::from((
        redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
        "You can't write against a read only replica.",
    )));
    match &e {
        StoreError::Backend { kind, message } => {
            assert_eq!(*kind, BackendKind::ReadOnly);
            assert!(message.contains("read only replica"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.is_transient() && e.is_store_fault());
    assert!(e.to_string().starts_with("store error: "), "{e}");
}
