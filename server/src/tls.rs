//! TLS and mutual TLS on the gRPC and admin listeners (rustls, the ring provider already in the
//! tree for the Redis and HTTP clients).
//!
//! tonic's own `ServerTlsConfig` is fixed at start; certificates are rotated (cert-manager, a
//! Kubernetes Secret's symlink swap) far more often than the service is restarted, so the
//! listener does its own handshakes: every accepted connection is handed to a `TlsAcceptor` built
//! from the *current* rustls config, and a watcher re-reads the files when their size or
//! modification time changes. A new file that does not parse is logged and the previous
//! certificate keeps serving.
//!
//! Connections are admitted by [`crate::listener`] (first-byte deadline, per-source cap, idle
//! timeout: the same code as the plaintext listeners); handshakes run concurrently there (one
//! slow or hostile client cannot hold the accept loop), each bounded by [`HANDSHAKE_TIMEOUT`].
//!
//! Owns building a rustls server config from a listener's certificate files, and reloading it.
//! Layering: a wire module; imports `config` (the `server.tls` settings), `paths`, `listener`
//! and `metrics`, and must not import `auth`, `preflight` or the domain (`pipeline`, `registry`,
//! `catalog`): [`crate::preflight`] calls [`validate`] to check the files before serving.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::{ClientAuth, ListenerTls};
use crate::paths::resolve_path;

/// How long a client may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate files are looked at.
pub const RELOAD_POLL: Duration = Duration::from_secs(5);

/// A listener's TLS settings with the current rustls config.
pub struct Tls {
    listener: &'static str,
    files: Files,
    current: ArcSwap<ServerConfig>,
}

/// What identifies a version of a file: size, mtime, device, inode, ctime (s, ns).
type Stamp = (u64, SystemTime, u64, u64, i64, i64);

#[derive(Clone)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    client_auth: ClientAuth,
}

impl Files {
    fn resolve(t: &ListenerTls, dir: &Path) -> Self {
        Self {
            cert: resolve_path(dir, &t.cert_file),
            key: resolve_path(dir, &t.key_file),
            client_ca: t.client_ca_file.as_ref().map(|f| resolve_path(dir, f)),
            client_auth: t.client_auth,
        }
    }

    fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.cert, &self.key].into_iter().chain(&self.client_ca)
    }

    /// Size, modification time, inode and change time of every file (through symlinks): what
    /// the watcher compares. The inode and ctime catch a same-size file swapped in with its
    /// old mtime kept (`cp -p`, `tar`, `rsync -a`, a Secret volume's symlink swap).
    fn stamp(&self) -> Vec<Option<Stamp>> {
        use std::os::unix::fs::MetadataExt;
        self.paths()
            .map(|p| {
                let m = std::fs::metadata(p).ok()?;
                Some((
                    m.len(),
                    m.modified().ok()?,
                    m.dev(),
                    m.ino(),
                    m.ctime(),
                    m.ctime_nsec(),
                ))
            })
            .collect()
    }
}

/// Checks that `t`'s files exist and make a working TLS config (what [`crate::preflight`] runs
/// for `check-config`, `serve` and reloads). `at` names the setting in messages.
pub fn validate(t: &ListenerTls, dir: &Path, at: &str) -> Result<(), String> {
    build(&Files::resolve(t, dir))
        .map(|_| ())
        .map_err(|e| format!("{at}: {e}"))
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

fn build(f: &Files) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pem = read(&f.cert, "cert_file")?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cert_file {}: {e}", f.cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "cert_file {}: no PEM certificate in it",
            f.cert.display()
        ));
    }
    // The key's own error could quote key material; name the file only.
    let key = PrivateKeyDer::from_pem_slice(&read(&f.key, "key_file")?).map_err(|_| {
        format!(
            "key_file {}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it",
            f.key.display()
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &f.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let pem = read(ca, "client_ca_file")?;
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&pem) {
                let c = c.map_err(|e| format!("client_ca_file {}: {e}", ca.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("client_ca_file {}: {e}", ca.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "client_ca_file {}: no PEM certificate in it",
                    ca.display()
                ));
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = match f.client_auth {
                ClientAuth::Required => v,
                ClientAuth::Optional => v.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(v.build().map_err(|e| e.to_string())?)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("cert_file/key_file: {e}"))?;
    // gRPC is HTTP/2 only.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

impl Tls {
    /// Loads `t` (relative paths from `dir`) for the listener named `listener` (`grpc`, `admin`:
    /// the label of its metrics).
    pub fn load(t: &ListenerTls, dir: &Path, listener: &'static str) -> Result<Arc<Self>, String> {
        let files = Files::resolve(t, dir);
        let config = build(&files)?;
        Ok(Arc::new(Self {
            listener,
            files,
            current: ArcSwap::from_pointee(config),
        }))
    }

    /// Re-reads the files every [`RELOAD_POLL`] on `tasks` and swaps the config in when they
    /// changed and parse; a broken new file is logged and the old certificate stays.
    pub fn spawn_reloader(self: &Arc<Self>, tasks: &crate::tasks::Tasks) {
        let this = Arc::downgrade(self);
        let mut seen = self.files.stamp();
        tasks.spawn("certificate reload", async move {
            let mut tick = tokio::time::interval(RELOAD_POLL);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(tls) = this.upgrade() else { return };
                let now = tls.files.stamp();
                if now == seen {
                    continue;
                }
                match build(&tls.files) {
                    Ok(c) => {
                        tls.current.store(Arc::new(c));
                        seen = now;
                        metrics::counter!(crate::metrics::TLS_RELOADS_TOTAL, "listener" => tls.listener, "result" => "ok").increment(1);
                        tracing::info!(
                            listener = tls.listener,
                            "TLS certificate files changed: reloaded"
                        );
                    }
                    Err(e) => {
                        // Retried at the next change (a half-written pair is common mid-rotation).
                        seen = now;
                        metrics::counter!(crate::metrics::TLS_RELOADS_TOTAL, "listener" => tls.listener, "result" => "error").increment(1);
                        tracing::error!(listener = tls.listener, error = %e, "TLS certificate files changed but do not load; the previous certificate keeps serving");
                    }
                }
            }
        });
    }

    /// TLS connections from `tcp`, handshaken concurrently, admitted by
    /// [`crate::listener::accept`] (first-byte deadline, per-source cap, idle timeout; its
    /// refusals and failed handshakes are counted in `tollgate_tls_handshake_failures_total`).
    /// The stream ends when the server stops reading it.
    pub fn incoming<S>(
        self: Arc<Self>,
        tcp: S,
        mut limits: crate::listener::Limits,
    ) -> impl futures_util::Stream<
        Item = Result<crate::listener::Idle<TlsStream<TcpStream>>, std::io::Error>,
    > + Send
    + 'static
    where
        S: futures_util::Stream<Item = Result<TcpStream, std::io::Error>> + Send + Unpin + 'static,
    {
        limits.listener = self.listener;
        limits.refused_metric = crate::metrics::TLS_HANDSHAKE_FAILURES_TOTAL;
        crate::listener::accept(tcp, limits, move |stream| {
            let acceptor = TlsAcceptor::from(self.current.load_full());
            let listener = self.listener;
            async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => Ok(tls),
                    Ok(Err(e)) => {
                        tracing::debug!(listener, error = %e, "TLS handshake failed");
                        Err("error")
                    }
                    Err(_) => Err("timeout"),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(cert: &str, key: &str) -> ListenerTls {
        ListenerTls {
            cert_file: cert.into(),
            key_file: key.into(),
            client_ca_file: None,
            client_auth: ClientAuth::Required,
        }
    }

    #[test]
    fn bad_files_are_named() {
        let dir = std::env::temp_dir().join(format!("tollgate-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("empty.pem"), "").expect("write");
        let e = validate(&cfg("missing.pem", "x.key"), &dir, "server.tls").unwrap_err();
        assert!(e.contains("server.tls: cannot read cert_file"), "{e}");
        let e = validate(&cfg("empty.pem", "x.key"), &dir, "server.tls").unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
