//! Accepting connections on the gRPC and admin listeners, with or without TLS: the one place
//! that bounds what a connection may hold before it is served, and how long it may sit idle
//! after.
//!
//! - A new connection must send its first byte within `server.first_byte_timeout` (a gRPC
//!   client's HTTP/2 preface, or a TLS ClientHello, comes at once); silent ones are closed. On a
//!   plaintext listener it then stays pending until the whole 24-byte HTTP/2 preface has come
//!   ([`h2_preface`], within another `first_byte_timeout`): one byte is not enough.
//! - At most `server.pending_connections_per_source` connections from one source address may be
//!   waiting for their first byte (with TLS: until their handshake ends); more are closed at
//!   once, so one address cannot take every slot. At most [`MAX_PENDING`] wait per listener;
//!   further connections wait in the kernel's accept queue.
//! - A served connection with no call in flight for `server.idle_timeout` is closed
//!   ([`Idle`], [`IdleLayer`]): HTTP/2 keepalive pings (tonic's own, `server.http2_keepalive_*`,
//!   set where the servers are built) close dead peers, but a live peer answering pings would
//!   hold its connection for ever.
//!
//! The work of a pending connection (waiting, then a TLS handshake) runs on its own task, so a
//! slow or hostile client never holds the accept loop. Closed connections are counted in
//! `tollgate_connections_closed_total{listener, reason}` (`limit`, `timeout`: no first
//! byte in time, `idle`); TLS listeners count `limit` and first-byte timeouts as handshake failures instead
//! (`tollgate_tls_handshake_failures_total`, as before). A connection closed or reset before its
//! first byte (a TCP health probe) is not counted.
//!
//! Layering: a wire module below `tls` (which hands its handshakes to [`accept`]); imports only
//! `config` (the `server:` settings, and [`MAX_PENDING`]'s bound, which the file's
//! `pending_connections_per_source` shares) and `metrics`, and must not import `tls`, `auth`,
//! `preflight` or the domain.
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

/// Connections waiting for their first byte (or TLS handshake) at once, per listener.
pub const MAX_PENDING: usize = crate::config::validate::MAX_PENDING_CONNECTIONS_PER_SOURCE;

/// How a listener admits connections (from `server:`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `grpc` or `admin`: the `listener` label of the metrics.
    pub listener: &'static str,
    /// How long a new connection may stay silent.
    pub first_byte_timeout: Duration,
    /// Pending connections from one source address.
    pub pending_per_source: usize,
    /// How long a connection may have no call in flight (`None`: for ever).
    pub idle_timeout: Option<Duration>,
    /// The counter of connections refused before being served (`reason` `limit` or `timeout`).
    pub refused_metric: &'static str,
}

impl Limits {
    /// The limits of `listener` from the config; refusals are counted in `refused_metric`.
    pub fn new(
        server: &crate::config::ServerConfig,
        listener: &'static str,
        refused_metric: &'static str,
    ) -> Self {
        Self {
            listener,
            first_byte_timeout: server.first_byte_timeout,
            pending_per_source: server.pending_connections_per_source,
            idle_timeout: (!server.idle_timeout.is_zero()).then_some(server.idle_timeout),
            refused_metric,
        }
    }
}

/// Connections from `tcp` that sent a first byte in time and that `finish` turned into a
/// stream (plaintext: the connection itself; TLS: the handshake), each wrapped in [`Idle`].
/// `finish` answers `Err(reason)` (a metric label) for a connection it drops. The stream ends
/// when `tcp` does or the server stops reading it.
pub fn accept<S, F, Fut, T>(
    mut tcp: S,
    limits: Limits,
    finish: F,
) -> impl futures_util::Stream<Item = Result<Idle<T>, std::io::Error>> + Send + 'static
where
    S: futures_util::Stream<Item = Result<TcpStream, std::io::Error>> + Send + Unpin + 'static,
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, &'static str>> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let finish = Arc::new(finish);
    tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING));
        let per_ip = Arc::new(PerIp::default());
        let listener = limits.listener;
        loop {
            let conn = tokio::select! {
                c = tcp.next() => c,
                _ = tx.closed() => return,
            };
            let stream = match conn {
                Some(Ok(s)) => s,
                Some(Err(e)) => {
                    // Out of file descriptors (EMFILE/ENFILE) would fail at once again: back off
                    // instead of spinning.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                None => return,
            };
            let Some(ip_slot) = stream
                .peer_addr()
                .ok()
                .and_then(|a| per_ip.take(a.ip(), limits.pending_per_source))
            else {
                metrics::counter!(limits.refused_metric, "listener" => listener, "reason" => "limit").increment(1);
                continue;
            };
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let tx = tx.clone();
            let finish = finish.clone();
            tokio::spawn(async move {
                let _slots = (slot, ip_slot);
                // A connection closed (or reset) before its first byte is a TCP health probe
                // (kubelet's tcpSocket, load balancers): not counted. One silent past the
                // deadline is.
                let mut first = [0u8; 1];
                match tokio::time::timeout(limits.first_byte_timeout, stream.peek(&mut first)).await
                {
                    Ok(Ok(0)) => return,
                    Ok(Err(e))
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::ConnectionReset
                                | std::io::ErrorKind::ConnectionAborted
                        ) =>
                    {
                        return;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        metrics::counter!(limits.refused_metric, "listener" => listener, "reason" => "timeout").increment(1);
                        return;
                    }
                }
                match finish(stream).await {
                    Ok(io) => {
                        let _ = tx
                            .send(Ok(Idle::new(io, listener, limits.idle_timeout)))
                            .await;
                    }
                    Err(reason) => {
                        metrics::counter!(limits.refused_metric, "listener" => listener, "reason" => reason).increment(1);
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Length of the HTTP/2 client preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`) every gRPC
/// connection starts with.
pub const H2_PREFACE_LEN: usize = 24;

/// The `finish` of a plaintext listener: the connection once the whole HTTP/2 client preface
/// has come, within `timeout`; `Err("timeout")` otherwise. Until then the connection is still
/// pending (it holds its per-source slot), so sending one byte and then nothing does not escape
/// the first-byte deadline and the per-source cap. The bytes stay in the socket for the server;
/// a connection that ends or fails first is handed on as it is (the server sees the end).
pub async fn h2_preface(stream: TcpStream, timeout: Duration) -> Result<TcpStream, &'static str> {
    let wait = async {
        let mut buf = [0u8; H2_PREFACE_LEN];
        loop {
            match stream.peek(&mut buf).await {
                // `peek` answers at once while any byte is buffered: poll for the rest.
                Ok(n) if n > 0 && n < H2_PREFACE_LEN => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => return,
            }
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(()) => Ok(stream),
        Err(_) => Err("timeout"),
    }
}

/// Pending connections per source address.
#[derive(Default)]
struct PerIp(parking_lot::Mutex<std::collections::HashMap<IpAddr, usize>>);

/// One pending slot of an address; given back on drop.
struct IpSlot {
    ip: IpAddr,
    owner: Arc<PerIp>,
}

impl PerIp {
    /// A slot for `ip`, unless it has `max` already.
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut m = self.0.lock();
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            ip,
            owner: Arc::clone(self),
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut m = self.owner.0.lock();
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

// ---------------------------------------------------------------- idle connections

/// Calls in flight on one connection and when the last one ended.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    last: parking_lot::Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            last: parking_lot::Mutex::new(Instant::now()),
        }
    }

    /// When the connection becomes idle past `timeout`: `None` while a call is in flight.
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(*self.last.lock() + timeout)
    }
}

/// A call in flight; ends it on drop.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(a: &Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last.lock() = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What [`Idle`] gives tonic as the connection's info (in every request's extensions): the
/// inner stream's, and the connection's [`Activity`] for [`IdleLayer`].
#[derive(Debug, Clone)]
pub struct IdleInfo<I> {
    /// The inner stream's connect info (`TcpConnectInfo`, `TlsConnectInfo<..>`).
    pub inner: I,
    activity: Arc<Activity>,
}

/// A served connection that ends (reads end of stream, so hyper closes it) once no call has
/// been in flight for its idle timeout. The timer lives in `poll_read`: hyper always has a read
/// pending on a served connection, so it is polled when the timer fires.
pub struct Idle<T> {
    io: T,
    activity: Arc<Activity>,
    timeout: Option<Duration>,
    sleep: Pin<Box<Sleep>>,
    listener: &'static str,
    closed: bool,
}

impl<T> Idle<T> {
    fn new(io: T, listener: &'static str, timeout: Option<Duration>) -> Self {
        let activity = Arc::new(Activity::new());
        let first = timeout.unwrap_or(Duration::from_secs(86_400));
        Self {
            io,
            activity,
            timeout,
            sleep: Box::pin(tokio::time::sleep(first)),
            listener,
            closed: false,
        }
    }

    /// Whether the idle timeout has passed (registers the timer's wake-up otherwise).
    fn idle(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(timeout) = self.timeout else {
            return false;
        };
        while self.sleep.as_mut().poll(cx).is_ready() {
            match self.activity.idle_deadline(timeout) {
                Some(d) if d <= Instant::now() => return true,
                Some(d) => self.sleep.as_mut().reset(d),
                None => self.sleep.as_mut().reset(Instant::now() + timeout),
            }
        }
        false
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Idle<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Ok(()));
        }
        if this.idle(cx) {
            this.closed = true;
            metrics::counter!(crate::metrics::CONNECTIONS_CLOSED_TOTAL, "listener" => this.listener, "reason" => "idle").increment(1);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Idle<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<T: Connected> Connected for Idle<T> {
    type ConnectInfo = IdleInfo<T::ConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        IdleInfo {
            inner: self.io.connect_info(),
            activity: self.activity.clone(),
        }
    }
}

/// Marks every call on an [`Idle`] connection as in flight until its response is ready.
/// (A streaming response counts until its headers: the only streaming service is reflection.)
#[derive(Debug, Clone, Copy, Default)]
pub struct IdleLayer;

impl<S> tower_layer::Layer<S> for IdleLayer {
    type Service = IdleService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdleService(inner)
    }
}

/// See [`IdleLayer`].
#[derive(Debug, Clone)]
pub struct IdleService<S>(S);

type TcpInfo = tonic::transport::server::TcpConnectInfo;
type TlsInfo = tonic::transport::server::TlsConnectInfo<TcpInfo>;

impl<S, B> tower_service::Service<http::Request<B>> for IdleService<S>
where
    S: tower_service::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let x = req.extensions();
        let activity = x
            .get::<IdleInfo<TcpInfo>>()
            .map(|i| &i.activity)
            .or_else(|| x.get::<IdleInfo<TlsInfo>>().map(|i| &i.activity));
        let guard = activity.map(InFlight::start);
        let fut = self.0.call(req);
        Box::pin(async move {
            let r = fut.await;
            drop(guard);
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_source_slots_are_bounded_and_given_back() {
        let p = Arc::new(PerIp::default());
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let s1 = p.take(a, 2).expect("first");
        let _s2 = p.take(a, 2).expect("second");
        assert!(p.take(a, 2).is_none(), "a third from one address");
        assert!(p.take(b, 2).is_some(), "another address is not affected");
        drop(s1);
        assert!(p.take(a, 2).is_some(), "a slot comes back on drop");
    }

    #[test]
    fn idle_deadline_waits_for_calls_in_flight() {
        let a = Arc::new(Activity::new());
        let t = Duration::from_secs(5);
        let before = a.idle_deadline(t).expect("idle at first");
        let call = InFlight::start(&a);
        assert_eq!(a.idle_deadline(t), None, "never idle with a call in flight");
        drop(call);
        let after = a.idle_deadline(t).expect("idle again");
        assert!(after >= before, "the timer restarts when the call ends");
    }
}
