//! The `tollgate` binary: `serve`, `check-config`, the gateway's calls from the command line
//! (`check`, `authorize`, `report`), and the admin commands (`plans`, `keys`, `usage`,
//! `authorizers`, `whoami`) that call the admin API.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tollgate_server::{Listeners, config, preflight};

mod cli;

/// mimalloc instead of glibc's malloc: a check allocates and frees many small buffers (h2
/// frames, prost messages, strings), and malloc/free were ~10 % of the server's CPU in a perf
/// profile of the memory-store path. Measured in `benches/README.md`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for configuration errors (EX_USAGE), before anything is bound.
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Rate limits, quotas and authorization checks for API gateways"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log as JSON lines.
    #[arg(long, global = true, env = "TOLLGATE_LOG_JSON")]
    log_json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        /// Config file (YAML). Without one, built-in defaults: memory store, no APIs.
        #[arg(long, short, env = "TOLLGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a config file, print every error, exit non-zero if any.
    CheckConfig {
        /// Config file (YAML).
        file: PathBuf,
    },
    /// Check a request as a gateway would (CheckService.CheckRequest): print the decision,
    /// status, reason, retry-after, quota, throttle and response headers.
    Check(Box<cli::check::CheckArgs>),
    /// Run an authorizer on a request (AuthorizationService.Authorize).
    Authorize(Box<cli::check::AuthorizeArgs>),
    /// Report the actual cost of a checked request (CheckService.ReportUsage).
    Report(Box<cli::check::ReportArgs>),
    /// Development helpers for the examples: an echo upstream, test-only tokens.
    Dev(cli::dev::DevArgs),
    // The admin API commands: plans, keys, usage, authorizers.
    #[command(flatten)]
    Admin(cli::AdminCommand),
}

fn env_lookup(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    match cli.command {
        Command::Admin(command) => cli::run(command),
        Command::Check(a) => cli::check::run(cli::check::CallCommand::Check(a)),
        Command::Authorize(a) => cli::check::run(cli::check::CallCommand::Authorize(a)),
        Command::Report(a) => cli::check::run(cli::check::CallCommand::Report(a)),
        Command::Dev(args) => cli::dev::run(args),
        Command::CheckConfig { file } => match preflight::load(&file, &env_lookup) {
            Ok(c) => {
                println!(
                    "{}: ok ({} apis, {} usage plans, {} api keys, store {:?})",
                    file.display(),
                    c.apis.len(),
                    c.usage_plans.len(),
                    c.api_keys.len(),
                    c.store.kind
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Serve { config: path } => {
            let cfg = match &path {
                Some(p) => preflight::load(p, &env_lookup),
                None => preflight::parse("", &env_lookup, std::path::Path::new(".")),
            };
            let cfg = match cfg {
                Ok(c) => c,
                Err(e) => {
                    eprintln!(
                        "{}: {e}",
                        path.as_deref().unwrap_or("<defaults>".as_ref()).display()
                    );
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if cfg.server.worker_threads > 0 {
                builder.worker_threads(cfg.server.worker_threads);
            }
            let rt = match builder.enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(serve(cfg, path)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e)
                    if matches!(
                        e.downcast_ref(),
                        Some(tollgate_server::ServerError::Config(_))
                    ) =>
                {
                    eprintln!("tollgate: {e:#}");
                    ExitCode::from(EXIT_CONFIG)
                }
                Err(e) => {
                    eprintln!("tollgate: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind {what} on {addr}"))
}

async fn serve(cfg: config::Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    let grpc = bind(cfg.server.grpc_addr, "grpc_addr").await?;
    // Port 0 means "any free port": equal only when a real port is shared.
    let admin = if cfg.server.admin_on_grpc() {
        None
    } else {
        Some(bind(cfg.server.admin_addr, "admin_addr").await?)
    };
    let metrics = bind(cfg.server.metrics_addr, "metrics_addr").await?;
    let (grpc_addr, metrics_addr) = (grpc.local_addr()?, metrics.local_addr()?);
    let admin_addr = match &admin {
        Some(l) => l.local_addr()?,
        None => grpc_addr,
    };
    // Install the SIGTERM handler now: the default action would kill us without draining.
    let shutdown = shutdown_signal()?;
    let store = cfg.store.kind;
    let listeners = Listeners {
        grpc,
        admin,
        metrics: Some(metrics),
    };
    let ready = move || {
        // One machine-readable line, so scripts and the test harness can use port 0.
        println!(
            "tollgate ready grpc={grpc_addr} admin={admin_addr} metrics={metrics_addr} store={store:?}"
        );
        tracing::info!(grpc = %grpc_addr, admin = %admin_addr, metrics = %metrics_addr, ?store, "serving");
    };
    tollgate_server::run(cfg, path, Arc::new(env_lookup), listeners, shutdown, ready).await?;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT; the handlers are installed before this returns.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: a file, a pipe or a log collector gets plain
    // text, and NO_COLOR (https://no-color.org) turns it off everywhere.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
