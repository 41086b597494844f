//! `rediss://` with a private CA and a client certificate (Redis `tls-auth-clients yes`), and an
//! ACL user whose password comes from `TOLLGATE_STORE_PASSWORD`: the real `tollgate` binary
//! against a real TLS `redis-server` on loopback (certificates made with `openssl` here).
use std::path::Path;
use std::time::Duration;

use tollgate_proto::v1::Decision;
use tollgate_tests::certs::make_certs;
use tollgate_tests::checks::{check, decision, get_pets, petstore_with_key};
use tollgate_tests::redis::{RedisServer, free_port};
use tollgate_tests::tollgate::TollgateProcess;
use tonic::Code;

const KEY: &str = "tls-key-aaaaaaaaaaaaaaaaaaaaaaaa";
const PASSWORD: &str = "s3cret-store-pass";

fn config(tls_port: u16, dir: &Path, client_cert: bool) -> String {
    let d = dir.display();
    let client = if client_cert {
        format!(", cert_file: \"{d}/client.crt\", key_file: \"{d}/client.key\"")
    } else {
        String::new()
    };
    let petstore = petstore_with_key(100, KEY);
    format!(
        r#"server: {{grpc_addr: "127.0.0.1:0", metrics_addr: "127.0.0.1:0"}}
store:
  kind: redis
  url: "rediss://127.0.0.1:{tls_port}/"
  username: tollgate
  tls: {{ca_file: "{d}/ca.crt"{client}}}
  timeout: 2s
failure_mode: closed
{petstore}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate_and_an_acl_user() {
    let dir = tempfile::tempdir().expect("temp dir");
    make_certs(dir.path());
    let p = |f: &str| dir.path().join(f).display().to_string();
    let tls_port = free_port();
    // The plain port stays open for the harness's readiness probe, where the default user may
    // only PING and INFO; Tollgate's user `tollgate` needs its password.
    let args: Vec<String> = [
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &p("server.crt"),
        "--tls-key-file",
        &p("server.key"),
        "--tls-ca-cert-file",
        &p("ca.crt"),
        "--tls-auth-clients",
        "yes",
    ]
    .into_iter()
    .map(String::from)
    .chain(RedisServer::acl_user_args("tollgate", PASSWORD))
    .collect::<Vec<_>>();
    let _redis = RedisServer::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let tg = TollgateProcess::start_with_env(
        &config(tls_port, dir.path(), true),
        &[("TOLLGATE_STORE_PASSWORD", PASSWORD)],
    );
    let mut c = tg.client().await;
    for i in 0..3 {
        let r = check(&mut c, get_pets(KEY)).await;
        assert_eq!(decision(&r), Decision::Allow, "{r:?}");
        assert!(!r.degraded, "reached Redis over TLS: {r:?}");
        assert_eq!(r.quota.as_ref().map(|q| q.remaining), Some(99 - i));
    }

    // A wrong password: the store refuses, failure mode closed answers UNAVAILABLE, and the
    // password is in no log line.
    let wrong = "wrong-pass-0123456789";
    let bad = TollgateProcess::start_with_env(
        &config(tls_port, dir.path(), true),
        &[("TOLLGATE_STORE_PASSWORD", wrong)],
    );
    let mut c = bad.client().await;
    let err = c
        .check_request(get_pets(KEY))
        .await
        .expect_err("the store refuses a wrong password");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    // No client certificate: Redis ends the TLS handshake.
    let nocert = TollgateProcess::start_with_env(
        &config(tls_port, dir.path(), false),
        &[("TOLLGATE_STORE_PASSWORD", PASSWORD)],
    );
    let mut c = nocert.client().await;
    let err = c
        .check_request(get_pets(KEY))
        .await
        .expect_err("Redis wants a client certificate");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    std::thread::sleep(Duration::from_millis(300));
    for (name, p) in [("ok", &tg), ("wrong", &bad), ("nocert", &nocert)] {
        let logs = format!("{}{}", p.stdout_text(), p.stderr_text());
        assert!(
            !logs.contains(wrong) && !logs.contains(PASSWORD),
            "{name}: a password in the logs:\n{logs}"
        );
    }
}
