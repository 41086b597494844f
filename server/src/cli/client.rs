//! The admin API connection: address normalisation, the bearer-token interceptor, per-call
//! timeouts, and the CLI's error type with its exit codes.
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tollgate_proto::v1::admin_service_client::AdminServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

/// The admin address used when neither `--admin-addr` nor `TOLLGATE_ADMIN_ADDR` is set.
pub const DEFAULT_ADMIN_ADDR: &str = "http://127.0.0.1:50052";
/// The environment variable holding the admin token.
pub const TOKEN_ENV: &str = "TOLLGATE_ADMIN_TOKEN";
/// How long establishing the connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one call may take (each page of a listing is one call).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The generated admin client, with the token interceptor in front of the channel.
pub type Client = AdminServiceClient<InterceptedService<Channel, Auth>>;

/// Why an admin command failed; decides the message on stderr and the exit code.
#[derive(Debug)]
pub enum CliError {
    /// Bad usage clap cannot see (e.g. `plans update` without an id); exit 2 like clap's.
    Usage(String),
    /// The admin API answered with an error status; exit 1.
    Status(Status),
    /// The admin API could not be reached; exit 1.
    Connect {
        /// The address we tried.
        addr: String,
        /// The transport's reason, sources included.
        reason: String,
    },
    /// Anything else (unreadable files, bad plan files); exit 1.
    Other(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Other(m) => f.write_str(m),
            CliError::Status(s) if s.message().is_empty() => f.write_str(code_name(s.code())),
            CliError::Status(s) => write!(f, "{}: {}", code_name(s.code()), s.message()),
            CliError::Connect { addr, reason } => {
                write!(f, "cannot reach the admin API at {addr}: {reason}")
            }
        }
    }
}

/// The canonical gRPC name of a status code (`NOT_FOUND`, `UNAUTHENTICATED`, ...).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// clap value parser for `--admin-addr`: `host:port` becomes `http://host:port`; the result
/// must be a URI tonic accepts.
pub fn parse_admin_addr(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/');
    if s.is_empty() {
        return Err("empty address".into());
    }
    let addr = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    match Endpoint::from_shared(addr.clone()) {
        Ok(_) => Ok(addr),
        Err(e) => Err(format!("not a valid URL ({})", chain(&e))),
    }
}

/// The admin token: the trimmed contents of `token_file` when given, else `TOLLGATE_ADMIN_TOKEN`
/// (through `env`). `None` when neither is set (or the variable is blank): the call still goes
/// out and the server answers `UNAUTHENTICATED`.
pub fn resolve_token(
    token_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, CliError> {
    if let Some(path) = token_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CliError::Other(format!("cannot read token file {}: {e}", path.display()))
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(CliError::Other(format!(
                "token file {} is empty",
                path.display()
            )));
        }
        return Ok(Some(token.to_string()));
    }
    Ok(env(TOKEN_ENV)
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

/// Adds `authorization: Bearer <token>` to every request (nothing without a token).
///
/// The call deadline is enforced by [`call`], not sent as `grpc-timeout`: tonic's channel would
/// then race it and report a bare `CANCELLED: Timeout expired`.
#[derive(Clone, Debug)]
pub struct Auth {
    header: Option<MetadataValue<Ascii>>,
}

impl Auth {
    /// Builds the interceptor; fails when the token cannot be a header value.
    pub fn new(token: Option<&str>) -> Result<Self, CliError> {
        let header = match token {
            None => None,
            Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| {
                CliError::Other(
                    "the admin token contains characters not allowed in a header".into(),
                )
            })?),
        };
        Ok(Auth { header })
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

/// TLS client files for the admin connection (`--ca-file`, `--cert-file`, `--key-file`).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// CA that signed the server's certificate.
    pub ca: Option<PathBuf>,
    /// Client certificate (mTLS).
    pub cert: Option<PathBuf>,
    /// Client key (mTLS).
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// tonic's client TLS config: `None` when no file is given and the address is not
    /// `https://`; the system's trusted CAs unless `--ca-file` names one.
    fn config(&self, https: bool) -> Result<Option<ClientTlsConfig>, CliError> {
        if self.ca.is_none() && self.cert.is_none() && !https {
            return Ok(None);
        }
        let read = |p: &Path| {
            std::fs::read(p)
                .map_err(|e| CliError::Other(format!("cannot read {}: {e}", p.display())))
        };
        let mut c = ClientTlsConfig::new();
        c = match &self.ca {
            Some(ca) => c.ca_certificate(Certificate::from_pem(read(ca)?)),
            None => c.with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            c = c.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        Ok(Some(c))
    }
}

/// Connects to the admin API at `addr` (already normalised by [`parse_admin_addr`]); with TLS
/// files, over TLS (an `http://` address becomes `https://`).
pub async fn connect(addr: &str, auth: Auth, tls: &TlsFiles) -> Result<Client, CliError> {
    let channel = connect_channel(addr, tls).await?;
    Ok(AdminServiceClient::with_interceptor(channel, auth))
}

/// A channel to `addr` (normalised by [`parse_admin_addr`]), over TLS with TLS files or an
/// `https://` address.
pub async fn connect_channel(addr: &str, tls: &TlsFiles) -> Result<Channel, CliError> {
    let tls = tls.config(addr.starts_with("https://"))?;
    let addr = match (&tls, addr.strip_prefix("http://")) {
        (Some(_), Some(rest)) => format!("https://{rest}"),
        _ => addr.to_string(),
    };
    let addr = addr.as_str();
    let unreachable = |reason: String| CliError::Connect {
        addr: addr.to_string(),
        reason,
    };
    let mut endpoint = Endpoint::from_shared(addr.to_string())
        .map_err(|e| unreachable(chain(&e)))?
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| unreachable(chain(&e)))?;
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(unreachable(chain(&e))),
        Err(_) => Err(unreachable(format!(
            "no connection within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// Awaits one call with the per-call timeout and unwraps the response.
pub async fn call<T>(
    fut: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, CliError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(CliError::Status(s)),
        Err(_) => Err(CliError::Status(Status::deadline_exceeded(format!(
            "no answer within {}s",
            CALL_TIMEOUT.as_secs()
        )))),
    }
}

/// An error and its sources, `": "`-joined, without repeats (tonic's top level is just
/// "transport error").
fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        let msg = err.to_string();
        if !msg.is_empty() && !parts.iter().any(|p| p == &msg) {
            parts.push(msg);
        }
        cur = err.source();
    }
    if parts.len() > 1 && parts[0] == "transport error" {
        parts.remove(0);
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_gets_a_scheme() {
        assert_eq!(
            parse_admin_addr("127.0.0.1:9000").unwrap(),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            parse_admin_addr("http://admin.internal:50052/").unwrap(),
            "http://admin.internal:50052"
        );
        assert_eq!(
            parse_admin_addr(DEFAULT_ADMIN_ADDR).unwrap(),
            DEFAULT_ADMIN_ADDR
        );
        assert!(parse_admin_addr("").is_err());
        assert!(parse_admin_addr("http://bad host:1").is_err());
    }

    #[test]
    fn token_from_env_or_file() {
        let env = |k: &str| (k == TOKEN_ENV).then(|| " s3cret \n".to_string());
        assert_eq!(
            resolve_token(None, &env).unwrap().as_deref(),
            Some("s3cret")
        );
        let none = |_: &str| None;
        assert_eq!(resolve_token(None, &none).unwrap(), None);
        let blank = |_: &str| Some("  ".to_string());
        assert_eq!(resolve_token(None, &blank).unwrap(), None);

        let dir = std::env::temp_dir().join(format!("tollgate-cli-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        assert_eq!(
            resolve_token(Some(&file), &env).unwrap().as_deref(),
            Some("from-file")
        );
        std::fs::write(&file, "\n").unwrap();
        assert!(matches!(
            resolve_token(Some(&file), &env),
            Err(CliError::Other(_))
        ));
        assert!(resolve_token(Some(&dir.join("missing")), &env).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn interceptor_sets_bearer() {
        let mut auth = Auth::new(Some("t0k")).unwrap();
        let req = auth.call(Request::new(())).unwrap();
        assert_eq!(
            req.metadata()
                .get("authorization")
                .unwrap()
                .to_str()
                .unwrap(),
            "Bearer t0k"
        );
        let mut anon = Auth::new(None).unwrap();
        let req = anon.call(Request::new(())).unwrap();
        assert!(req.metadata().get("authorization").is_none());
        assert!(Auth::new(Some("bad\ntoken")).is_err());
    }

    #[test]
    fn error_lines_and_exit_codes() {
        let e = CliError::Status(Status::not_found("Invalid API Key identifier specified"));
        assert_eq!(
            e.to_string(),
            "NOT_FOUND: Invalid API Key identifier specified"
        );
        assert_eq!(e.exit_code(), 1);
        assert_eq!(
            CliError::Status(Status::new(Code::Unauthenticated, "")).to_string(),
            "UNAUTHENTICATED"
        );
        let e = CliError::Connect {
            addr: DEFAULT_ADMIN_ADDR.into(),
            reason: "tcp connect error".into(),
        };
        assert_eq!(
            e.to_string(),
            "cannot reach the admin API at http://127.0.0.1:50052: tcp connect error"
        );
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        assert_eq!(code_name(Code::FailedPrecondition), "FAILED_PRECONDITION");
    }
}
