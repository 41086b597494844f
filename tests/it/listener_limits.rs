//! Connection floods against the plaintext gRPC and admin listeners (the real binary, on
//! loopback): silent connections are closed after `server.first_byte_timeout`, connections past
//! `server.pending_connections_per_source` from one address are closed at once while other
//! addresses are served, a connection with no call for `server.idle_timeout` is closed, and one
//! that does not answer HTTP/2 keepalive pings is closed after `server.http2_keepalive_timeout`.
//!
//! Loops are bounded; every wait has a deadline far longer than the behaviour needs, so the
//! tests tell "closed at once" from "closed by a deadline" without timing anything tightly.
//! The second source address is 127.0.0.2 (Linux routes all of 127/8 to loopback).
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use tollgate_proto::v1::ListUsagePlansRequest;
use tollgate_tests::tollgate::TollgateProcess;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// The HTTP/2 client preface and an empty SETTINGS frame: what a gRPC client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

fn config(server_extra: &str) -> String {
    format!(
        "server: {{grpc_addr: \"127.0.0.1:0\", metrics_addr: \"127.0.0.1:0\"{server_extra}}}\n\
         store: {{kind: memory}}\n"
    )
}

/// A (blocking) TCP connection to `addr` from `from`.
async fn connect_from(from: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(SocketAddr::new(IpAddr::V4(from), 0))
        .expect("bind the source address");
    let s = sock
        .connect(addr)
        .await
        .expect("connect")
        .into_std()
        .expect("std stream");
    s.set_nonblocking(false).expect("blocking");
    s
}

/// Reads until the server closes `s` (end of stream or reset), or `limit` passes: whether it
/// closed. Bytes the server sends first (its SETTINGS, pings) are read and dropped.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).expect("read timeout");
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
    false
}

/// A health check from `from` over a fresh connection.
async fn health_from(from: Ipv4Addr, addr: SocketAddr) -> Result<(), String> {
    let channel: Channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .local_address(Some(IpAddr::V4(from)))
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

const LOCAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Many connections that never send a byte are all closed after the first-byte deadline, on the
/// gRPC and the admin listener; the server answers normally meanwhile and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_after_the_first_byte_deadline() {
    let tg = TollgateProcess::start(&config(
        ", first_byte_timeout: 1s, pending_connections_per_source: 1000",
    ));
    let mut silent: Vec<TcpStream> = Vec::new();
    for addr in [tg.grpc_addr(), tg.admin_addr()] {
        for _ in 0..200 {
            silent.push(connect_from(LOCAL, addr).await);
        }
    }
    health_from(LOCAL, tg.grpc_addr())
        .await
        .expect("a normal client is served during the flood");
    let still_open = tokio::task::spawn_blocking(move || {
        silent
            .iter_mut()
            .map(|s| closed_within(s, Duration::from_secs(30)))
            .filter(|closed| !closed)
            .count()
    })
    .await
    .expect("join");
    assert_eq!(still_open, 0, "every silent connection was closed");
    assert_eq!(
        tg.metric("tollgate_connections_closed_total{listener=\"grpc\",reason=\"timeout\"}"),
        200.0
    );
    assert_eq!(
        tg.metric("tollgate_connections_closed_total{listener=\"admin\",reason=\"timeout\"}"),
        200.0
    );
    health_from(LOCAL, tg.grpc_addr())
        .await
        .expect("served after the flood");
    tg.admin()
        .await
        .list_usage_plans(ListUsagePlansRequest::default())
        .await
        .expect("the admin listener is served after the flood");
}

/// Past `pending_connections_per_source` silent connections from one address, more from it
/// are closed at once (long before the 60 s first-byte deadline), while another address is
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_source_cap_are_closed_at_once() {
    let tg = TollgateProcess::start(&config(
        ", first_byte_timeout: 60s, pending_connections_per_source: 16",
    ));
    let addr = tg.grpc_addr();
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(connect_from(LOCAL, addr).await);
    }
    let mut over = Vec::new();
    for _ in 0..8 {
        over.push(connect_from(LOCAL, addr).await);
    }
    health_from(OTHER, addr)
        .await
        .expect("another source address is served");
    let closed = tokio::task::spawn_blocking(move || {
        over.into_iter()
            .map(|mut s| closed_within(&mut s, Duration::from_secs(20)))
            .filter(|c| *c)
            .count()
    })
    .await
    .expect("join");
    assert_eq!(closed, 8, "every connection over the cap was closed");
    assert_eq!(
        tg.metric("tollgate_connections_closed_total{listener=\"grpc\",reason=\"limit\"}"),
        8.0
    );
    drop(held);
    // The held ones gave their slots back: the first address is served again.
    tollgate_tests::tollgate::eventually(
        &[&tg],
        "the first address is served again",
        Duration::from_secs(20),
        || async { health_from(LOCAL, addr).await.is_ok() },
    )
    .await;
}

/// A client that sent the HTTP/2 preface and then nothing is closed after `idle_timeout`
/// (keepalive pings off, so only the idle timeout can close it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let tg = TollgateProcess::start(&config(", idle_timeout: 1s, http2_keepalive_interval: 0s"));
    let mut s = connect_from(LOCAL, tg.grpc_addr()).await;
    s.write_all(H2_PREFACE).expect("preface");
    let closed =
        tokio::task::spawn_blocking(move || closed_within(&mut s, Duration::from_secs(30)))
            .await
            .expect("join");
    assert!(closed, "an idle connection is closed");
    assert_eq!(
        tg.metric("tollgate_connections_closed_total{listener=\"grpc\",reason=\"idle\"}"),
        1.0
    );
    health_from(LOCAL, tg.grpc_addr())
        .await
        .expect("a normal client is served");
}

/// A peer that never acknowledges the server's HTTP/2 pings is closed after the keepalive
/// timeout (idle timeout off, so only keepalive can close it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_ignore_keepalive_pings_are_closed() {
    let tg = TollgateProcess::start(&config(
        ", idle_timeout: 0s, http2_keepalive_interval: 1s, http2_keepalive_timeout: 1s",
    ));
    let mut s = connect_from(LOCAL, tg.admin_addr()).await;
    s.write_all(H2_PREFACE).expect("preface");
    let closed =
        tokio::task::spawn_blocking(move || closed_within(&mut s, Duration::from_secs(30)))
            .await
            .expect("join");
    assert!(closed, "a peer ignoring pings is closed");
}

/// The attack: one byte per connection. A connection that sends the first byte of the HTTP/2
/// preface and then nothing is past the first-byte deadline and gives its per-source slot back,
/// so one address could hold any number of them until `idle_timeout` (default 10 minutes).
/// Until the whole preface has come, a connection is pending: closed at the deadline, and
/// counted against its address's cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_one_byte_is_still_pending() {
    let tg = TollgateProcess::start(&config(
        ", first_byte_timeout: 1s, pending_connections_per_source: 4",
    ));
    let mut held = Vec::new();
    for addr in [tg.grpc_addr(), tg.admin_addr()] {
        for _ in 0..12 {
            let mut s = connect_from(LOCAL, addr).await;
            s.write_all(&H2_PREFACE[..1]).expect("one byte");
            held.push(s);
        }
    }
    health_from(OTHER, tg.grpc_addr())
        .await
        .expect("another source address is served");
    let still_open = tokio::task::spawn_blocking(move || {
        let handles: Vec<_> = held
            .into_iter()
            .map(|mut s| std::thread::spawn(move || closed_within(&mut s, Duration::from_secs(30))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("join"))
            .filter(|closed| !closed)
            .count()
    })
    .await
    .expect("join");
    assert_eq!(
        still_open, 0,
        "connections that sent one byte were held past the first-byte deadline"
    );
}
