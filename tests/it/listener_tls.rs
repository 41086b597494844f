//! TLS and mutual TLS on Tollgate's own listeners (`server.tls`, `server.admin_tls`): the real
//! binary on loopback, certificates from a private CA made with `openssl`, clients built on
//! tonic's rustls client and the `tollgate` CLI.
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use tollgate_proto::v1::Decision;
use tollgate_proto::v1::ListApiKeysRequest;
use tollgate_proto::v1::admin_service_client::AdminServiceClient;
use tollgate_proto::v1::check_service_client::CheckServiceClient;
use tollgate_tests::certs::{issue, make_ca, make_certs};
use tollgate_tests::checks::{decision, get_pets, petstore_with_key};
use tollgate_tests::tollgate::{
    ADMIN_TOKEN, BearerToken, TollgateProcess, eventually, run_tollgate,
};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const KEY: &str = "tls-listener-key-aaaaaaaaaaaaaaaa";

fn read(dir: &Path, f: &str) -> Vec<u8> {
    std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("read {f}: {e}"))
}

/// A TLS channel to `addr` trusting `dir/CA.crt`, presenting `dir/ID.crt` when `id` is given.
async fn tls_channel(
    addr: SocketAddr,
    dir: &Path,
    ca: &str,
    id: Option<&str>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(dir, &format!("{ca}.crt"))))
        .domain_name("localhost");
    if let Some(id) = id {
        tls = tls.identity(Identity::from_pem(
            read(dir, &format!("{id}.crt")),
            read(dir, &format!("{id}.key")),
        ));
    }
    Channel::from_shared(format!("https://{addr}"))
        .expect("valid uri")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// One `GET /pets` check over TLS; `Err` describes why the connection or the call failed (with
/// TLS 1.3 a server's refusal of the client certificate arrives after the client's handshake
/// is done, so it can surface on the first call).
async fn check_over_tls(
    addr: SocketAddr,
    dir: &Path,
    ca: &str,
    id: Option<&str>,
) -> Result<Decision, String> {
    let ch = tls_channel(addr, dir, ca, id)
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let r = CheckServiceClient::new(ch)
        .check_request(get_pets(KEY))
        .await
        .map_err(|s| format!("call: {s:?}"))?;
    Ok(decision(r.get_ref()))
}

/// ListApiKeys over TLS with `token`.
async fn list_keys_over_tls(
    addr: SocketAddr,
    dir: &Path,
    id: Option<&str>,
    token: Option<&str>,
) -> Result<usize, tonic::Status> {
    let ch = tls_channel(addr, dir, "ca", id)
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect: {e:?}")))?;
    let mut c = AdminServiceClient::with_interceptor(ch, BearerToken(token.map(String::from)));
    Ok(c.list_api_keys(ListApiKeysRequest::default())
        .await?
        .into_inner()
        .items
        .len())
}

fn config(grpc_tls: &str, admin_tls: &str) -> String {
    let petstore = petstore_with_key(1000, KEY);
    format!(
        r#"server:
  grpc_addr: "127.0.0.1:0"
  admin_addr: "127.0.0.1:0"
  metrics_addr: "127.0.0.1:0"
  tls: {grpc_tls}
  admin_tls: {admin_tls}
{petstore}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_grpc_and_mutual_tls_on_admin() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    make_certs(dir);
    make_ca(dir, "rogue-ca");
    issue(dir, "rogue-ca", "rogue-client");
    let d = dir.display();
    let tg = TollgateProcess::start(&config(
        &format!(r#"{{cert_file: "{d}/server.crt", key_file: "{d}/server.key"}}"#),
        &format!(
            r#"{{cert_file: "{d}/server.crt", key_file: "{d}/server.key", client_ca_file: "{d}/ca.crt"}}"#
        ),
    ));
    let (grpc, admin) = (tg.grpc_addr(), tg.admin_addr());

    // gRPC: TLS only.
    assert_eq!(
        check_over_tls(grpc, dir, "ca", None).await,
        Ok(Decision::Allow)
    );
    let plain = Channel::from_shared(format!("http://{grpc}"))
        .expect("uri")
        .timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(ch) = plain {
        let r = CheckServiceClient::new(ch)
            .check_request(get_pets(KEY))
            .await;
        assert!(r.is_err(), "a plaintext call was answered: {r:?}");
    }
    let e = check_over_tls(grpc, dir, "rogue-ca", None).await;
    assert!(e.is_err(), "a client trusting another CA got {e:?}");
    let ch = tls_channel(grpc, dir, "ca", None)
        .await
        .expect("tls channel");
    let health = tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health over TLS")
        .into_inner();
    assert_eq!(health.status, 1, "SERVING");

    // Admin: mutual TLS, and the bearer token still required.
    assert_eq!(
        list_keys_over_tls(admin, dir, Some("client"), Some(ADMIN_TOKEN))
            .await
            .expect("mTLS admin call"),
        1
    );
    let s = list_keys_over_tls(admin, dir, Some("client"), None)
        .await
        .expect_err("no token");
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    for id in [None, Some("rogue-client")] {
        let r = list_keys_over_tls(admin, dir, id, Some(ADMIN_TOKEN)).await;
        assert!(r.is_err(), "admin answered a client with {id:?}: {r:?}");
    }

    // The CLI speaks TLS with --ca-file/--cert-file/--key-file.
    let admin_addr = admin.to_string();
    let f = |n: &str| dir.join(n).display().to_string();
    let out = run_tollgate(
        [
            "keys",
            "list",
            "--admin-addr",
            admin_addr.as_str(),
            "--ca-file",
            &f("ca.crt"),
            "--cert-file",
            &f("client.crt"),
            "--key-file",
            &f("client.key"),
            "--output",
            "json",
        ],
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("\"k1\""),
        "CLI over mTLS: {out:?}"
    );
    let out = run_tollgate(
        [
            "keys",
            "list",
            "--admin-addr",
            admin_addr.as_str(),
            "--ca-file",
            &f("ca.crt"),
        ],
        Duration::from_secs(30),
    );
    assert!(
        !out.status.success(),
        "CLI without a client certificate: {out:?}"
    );

    // Hostile clients: idle connections that never start a handshake (from 127.0.0.2: one
    // address gets at most 64 handshakes in progress, the rest are closed at once), one that
    // stalls half way through a ClientHello and garbage bytes (from 127.0.0.3) do not keep the
    // next client (127.0.0.1) out.
    let from = |ip: [u8; 4]| async move {
        let s = tokio::net::TcpSocket::new_v4().expect("socket");
        s.bind(SocketAddr::from((ip, 0)))
            .expect("bind a loopback source address");
        s.connect(grpc).await.expect("connect")
    };
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(from([127, 0, 0, 2]).await);
    }
    let mut stalled = from([127, 0, 0, 3]).await.into_std().expect("std stream");
    stalled.set_nonblocking(false).expect("blocking");
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .expect("write a partial ClientHello");
    let mut garbage = from([127, 0, 0, 3]).await.into_std().expect("std stream");
    garbage.set_nonblocking(false).expect("blocking");
    let _ = garbage.write_all(&[0u8; 4096]);
    let _ = garbage.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    drop(garbage);
    assert_eq!(
        check_over_tls(grpc, dir, "ca", None).await,
        Ok(Decision::Allow),
        "a client after 200 idle connections and a stalled handshake"
    );
    eventually(
        &[&tg],
        "idle connections over the per-address limit closed, silent ones timed out",
        Duration::from_secs(10),
        || async {
            tg.metric_sum(
                "tollgate_tls_handshake_failures_total{listener=\"grpc\",reason=\"limit\"",
            ) >= 136.0
                && tg.metric_sum(
                    "tollgate_tls_handshake_failures_total{listener=\"grpc\",reason=\"timeout\"",
                ) >= 64.0
        },
    )
    .await;
    drop(idle);
    drop(stalled);

    eventually(
        &[&tg],
        "failed handshakes counted per listener",
        Duration::from_secs(10),
        || async {
            tg.metric_sum("tollgate_tls_handshake_failures_total{listener=\"grpc\"") >= 2.0
                && tg.metric_sum("tollgate_tls_handshake_failures_total{listener=\"admin\"") >= 1.0
        },
    )
    .await;
    // TCP health probes (connect, close, no byte sent) are not failed handshakes.
    let failures = tg.metric_sum("tollgate_tls_handshake_failures_total{listener=\"grpc\"");
    for _ in 0..20 {
        drop(TcpStream::connect(grpc).expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        tg.metric_sum("tollgate_tls_handshake_failures_total{listener=\"grpc\""),
        failures,
        "TCP probes counted as handshake failures"
    );
    let logs = tg.stderr_text() + &tg.stdout_text();
    assert!(!logs.contains("PRIVATE KEY"), "key material in the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_without_a_restart_and_optional_client_auth() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    make_certs(dir);
    make_ca(dir, "ca2");
    issue(dir, "ca2", "server2");
    make_ca(dir, "rogue-ca");
    issue(dir, "rogue-ca", "rogue-client");
    // The files the server reads: copies, replaced below as a rotation would.
    std::fs::copy(dir.join("server.crt"), dir.join("live.crt")).expect("copy");
    std::fs::copy(dir.join("server.key"), dir.join("live.key")).expect("copy");
    let d = dir.display();
    let tg = TollgateProcess::start(&config(
        &format!(
            r#"{{cert_file: "{d}/live.crt", key_file: "{d}/live.key", client_ca_file: "{d}/ca.crt", client_auth: optional}}"#
        ),
        "null",
    ));
    let grpc = tg.grpc_addr();

    // Optional client auth: no certificate or a valid one is served; an invalid one is not.
    assert_eq!(
        check_over_tls(grpc, dir, "ca", None).await,
        Ok(Decision::Allow)
    );
    assert_eq!(
        check_over_tls(grpc, dir, "ca", Some("client")).await,
        Ok(Decision::Allow)
    );
    let r = check_over_tls(grpc, dir, "ca", Some("rogue-client")).await;
    assert!(
        r.is_err(),
        "a certificate from another CA was accepted: {r:?}"
    );
    assert!(check_over_tls(grpc, dir, "ca2", None).await.is_err());

    // Rotate: the new pair is renamed into place (as a Secret volume's symlink swap does).
    for (from, to) in [("server2.crt", "live.crt"), ("server2.key", "live.key")] {
        std::fs::copy(dir.join(from), dir.join("next.tmp")).expect("copy");
        std::fs::rename(dir.join("next.tmp"), dir.join(to)).expect("rename");
    }
    eventually(
        &[&tg],
        "the rotated certificate served",
        Duration::from_secs(20),
        || async { check_over_tls(grpc, dir, "ca2", None).await == Ok(Decision::Allow) },
    )
    .await;
    assert!(
        check_over_tls(grpc, dir, "ca", None).await.is_err(),
        "new connections still get the old certificate"
    );

    // Rotating back with the replaced files' size and mtime kept (`cp -p`, `tar`, `rsync -a`):
    // the inode and ctime still tell the watcher.
    for (from, to) in [("server.crt", "live.crt"), ("server.key", "live.key")] {
        let mtime = std::fs::metadata(dir.join(to))
            .and_then(|m| m.modified())
            .expect("mtime");
        std::fs::copy(dir.join(from), dir.join("next.tmp")).expect("copy");
        std::fs::File::options()
            .write(true)
            .open(dir.join("next.tmp"))
            .and_then(|f| f.set_modified(mtime))
            .expect("keep the mtime");
        std::fs::rename(dir.join("next.tmp"), dir.join(to)).expect("rename");
    }
    eventually(
        &[&tg],
        "the certificate swapped in with the old mtime served",
        Duration::from_secs(20),
        || async { check_over_tls(grpc, dir, "ca", None).await == Ok(Decision::Allow) },
    )
    .await;
    for (from, to) in [("server2.crt", "live.crt"), ("server2.key", "live.key")] {
        std::fs::copy(dir.join(from), dir.join("next.tmp")).expect("copy");
        std::fs::rename(dir.join("next.tmp"), dir.join(to)).expect("rename");
    }
    eventually(&[&tg], "server2 again", Duration::from_secs(20), || async {
        check_over_tls(grpc, dir, "ca2", None).await == Ok(Decision::Allow)
    })
    .await;

    // A broken file mid-rotation: logged, counted, the current certificate keeps serving.
    std::fs::write(dir.join("live.crt"), "not a certificate").expect("write");
    eventually(
        &[&tg],
        "a failed reload counted",
        Duration::from_secs(20),
        || async {
            tg.metric_sum("tollgate_tls_reloads_total{listener=\"grpc\",result=\"error\"") >= 1.0
        },
    )
    .await;
    assert_eq!(
        check_over_tls(grpc, dir, "ca2", None).await,
        Ok(Decision::Allow)
    );
    assert!(
        tg.stderr_text().contains("do not load"),
        "{}",
        tg.stderr_text()
    );
}

#[test]
fn broken_tls_settings_are_refused_before_serving() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    make_certs(dir);
    std::fs::write(dir.join("empty.pem"), "").expect("write");
    let d = dir.display();
    let cases = [
        (
            format!(r#"{{cert_file: "{d}/missing.crt", key_file: "{d}/server.key"}}"#),
            "null".to_string(),
            "server.tls: cannot read cert_file",
        ),
        (
            format!(r#"{{cert_file: "{d}/server.crt", key_file: "{d}/empty.pem"}}"#),
            "null".to_string(),
            "server.tls: key_file",
        ),
        (
            "null".to_string(),
            format!(
                r#"{{cert_file: "{d}/server.crt", key_file: "{d}/server.key", client_ca_file: "{d}/empty.pem"}}"#
            ),
            "server.admin_tls: client_ca_file",
        ),
        (
            format!(r#"{{cert_file: "{d}/server.crt", key_file: "{d}/client.key"}}"#),
            "null".to_string(),
            "server.tls: cert_file/key_file",
        ),
    ];
    for (grpc, admin, expect) in cases {
        let path = dir.join("tollgate.yaml");
        std::fs::write(&path, config(&grpc, &admin)).expect("write config");
        let out = run_tollgate(
            ["check-config", path.to_str().expect("utf-8 path")],
            Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(64), "{expect}: {stderr}");
        assert!(stderr.contains(expect), "expected {expect:?} in: {stderr}");
        assert!(!stderr.contains("BEGIN"), "PEM text in: {stderr}");
    }
}
