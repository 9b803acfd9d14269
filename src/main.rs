//! The `dnsward` binary: command-line parsing, logging and signals. `anyhow` lives only here.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use dnsward::active_policy::ActivePolicy;
use dnsward::app::RunningApp;
use dnsward::config::Config;

/// A DNS security resolver for AI-agent fleets.
#[derive(Debug, Parser)]
#[command(name = "dnsward", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the resolver.
    Serve {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/dnsward/dnsward.toml")]
        config: PathBuf,
    },
    /// Validate a configuration and every file it pulls in; print every problem found.
    Check {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/dnsward/dnsward.toml")]
        config: PathBuf,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DNSWARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn check(path: &Path) -> ExitCode {
    let result = Config::load(path).and_then(|cfg| ActivePolicy::build(&cfg).map(|p| (cfg, p)));
    match result {
        Ok((cfg, policy)) => {
            println!(
                "{}: OK ({} groups, {} files read, listening on {})",
                path.display(),
                cfg.groups.len(),
                policy.files.len(),
                cfg.server.listen.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprint!("{}: {problems}", path.display());
            ExitCode::from(1)
        }
    }
}

fn serve(path: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(path).map_err(|p| anyhow::anyhow!("{}: {p}", path.display()))?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if cfg.server.threads > 0 {
        rt.worker_threads(cfg.server.threads);
    }
    let rt = rt.build().context("starting the runtime")?;
    rt.block_on(async move {
        let app = RunningApp::start(&cfg)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tracing::info!(
            udp = ?app.dns.udp_addrs,
            tcp = ?app.dns.tcp_addrs,
            admin = ?app.admin.as_ref().map(|a| a.addr),
            "dnsward serving"
        );
        wait_for_shutdown().await?;
        tracing::info!("shutting down: finishing in-flight queries and flushing events");
        app.shutdown().await;
        Ok(())
    })
}

async fn wait_for_shutdown() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Serve { config } => match serve(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dnsward: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}
