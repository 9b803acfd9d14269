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
    /// The tamper-evident event log.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Policy versions: history, diff, reload, rollback.
    Policy {
        /// Configuration file (for `[store]` and the admin endpoint).
        #[arg(
            short,
            long,
            default_value = "/etc/dnsward/dnsward.toml",
            global = true
        )]
        config: PathBuf,
        #[command(subcommand)]
        action: PolicyAction,
    },
}

#[derive(Debug, Subcommand)]
enum AuditAction {
    /// Check the event log's hash chain; reports the first record modified, deleted, inserted,
    /// reordered or torn. Exit 0 only when the chain is intact.
    Verify {
        /// Event files in chain order; a single current file (`events.jsonl`) pulls in its
        /// rotated predecessors (`.N` … `.1`) automatically.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// HMAC key file, for keyed chains.
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyAction {
    /// List stored versions (from `[store] state_dir`).
    History {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what changed between two stored versions.
    Diff {
        /// Older version.
        a: u64,
        /// Newer version.
        b: u64,
    },
    /// Ask the running server to reload its configuration (like SIGHUP, but audited with an actor).
    Reload {
        /// Who is reloading.
        #[arg(long)]
        actor: String,
        /// Why.
        #[arg(long)]
        message: Option<String>,
    },
    /// Ask the running server to re-activate a stored version exactly.
    Rollback {
        /// Version to re-activate (default: the one before the current).
        #[arg(long)]
        to: Option<u64>,
        /// Who is rolling back.
        #[arg(long)]
        actor: String,
        /// Why.
        #[arg(long)]
        reason: String,
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

fn open_store(cfg: &Config) -> anyhow::Result<dnsward::policy_store::PolicyStore> {
    let sc = cfg.store.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no [store] state_dir configured, so no history is kept",
            cfg.source
        )
    })?;
    Ok(dnsward::policy_store::PolicyStore::open(&sc.state_dir)?)
}

/// Call the running server's admin API with the token from the config.
fn admin_post(
    cfg: &Config,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let token = cfg
        .admin
        .load_token()
        .context("reading admin.token_file")?
        .ok_or_else(|| {
            anyhow::anyhow!("admin.token_file is not configured: the API is disabled")
        })?;
    let url = format!("http://{}{path}", cfg.admin.listen);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .post(&url)
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("calling {url}"))?;
        let status = resp.status();
        let value: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        if status.is_success() {
            Ok(value)
        } else {
            let mut msg = format!("{status}: {}", value["error"].as_str().unwrap_or("error"));
            for d in value["details"].as_array().into_iter().flatten() {
                msg.push_str(&format!("\n  - {}", d.as_str().unwrap_or_default()));
            }
            anyhow::bail!(msg)
        }
    })
}

fn policy(config: &Path, action: PolicyAction) -> anyhow::Result<()> {
    let cfg = Config::load(config).map_err(|p| anyhow::anyhow!("{}: {p}", config.display()))?;
    match action {
        PolicyAction::History { json } => {
            let history = open_store(&cfg)?.history()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&history)?);
            } else {
                println!(
                    "{:>4}  {:<20}  {:<8}  {:<12}  {:<16}  MESSAGE",
                    "VER", "LOADED", "ACTION", "AUTHOR", "HASH"
                );
                for v in history {
                    let action = match v.rolled_back_to {
                        Some(to) => format!("{}→{to}", v.action),
                        None => v.action.clone(),
                    };
                    println!(
                        "{:>4}  {:<20}  {:<8}  {:<12}  {:<16}  {}",
                        v.number,
                        v.loaded_at.chars().take(19).collect::<String>(),
                        action,
                        v.author.as_deref().unwrap_or("-"),
                        v.hash.chars().take(16).collect::<String>(),
                        v.message.as_deref().unwrap_or("")
                    );
                }
            }
        }
        PolicyAction::Diff { a, b } => print!("{}", open_store(&cfg)?.diff(a, b)?),
        PolicyAction::Reload { actor, message } => {
            let v = admin_post(
                &cfg,
                "/api/v1/policy/reload",
                &serde_json::json!({ "actor": actor, "message": message }),
            )?;
            println!(
                "reloaded: now version {} ({})",
                v["version"],
                v["hash"].as_str().unwrap_or("")
            );
        }
        PolicyAction::Rollback { to, actor, reason } => {
            let v = admin_post(
                &cfg,
                "/api/v1/policy/rollback",
                &serde_json::json!({ "to": to, "actor": actor, "reason": reason }),
            )?;
            println!(
                "rolled back: version {} re-activates version {}",
                v["number"], v["rolled_back_to"]
            );
        }
    }
    Ok(())
}

fn audit(action: AuditAction) -> anyhow::Result<ExitCode> {
    let AuditAction::Verify {
        paths,
        key_file,
        json,
    } = action;
    let key = key_file
        .map(|p| {
            let cfg = dnsward::audit::AuditConfig {
                key_file: Some(p),
                ..Default::default()
            };
            cfg.load_key().context("reading the key file")
        })
        .transpose()?
        .flatten();
    if let Some(missing) = paths.iter().find(|p| !p.exists()) {
        anyhow::bail!("{}: no such file", missing.display());
    }
    let files = if paths.len() == 1 {
        dnsward::audit::chain_files(&paths[0])
    } else {
        paths
    };
    let report =
        dnsward::audit::verify(&files, key.as_ref().map(dnsward::audit::AuditKey::as_bytes));
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
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
        wait_for_shutdown(&app).await?;
        tracing::info!("shutting down: finishing in-flight queries and flushing events");
        app.shutdown().await;
        Ok(())
    })
}

/// Serve until SIGINT/SIGTERM; SIGHUP reloads the configuration (a bad one is rejected and the
/// running policy stays).
async fn wait_for_shutdown(app: &RunningApp) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                // The outcome is logged and recorded as a policy event by the control itself.
                let _ = app.control.reload(Some("SIGHUP"), None).await;
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Audit { action } => audit(action).unwrap_or_else(|e| {
            eprintln!("dnsward: {e:#}");
            ExitCode::from(1)
        }),
        Command::Policy { config, action } => match policy(&config, action) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dnsward: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Serve { config } => match serve(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dnsward: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}
