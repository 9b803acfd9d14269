//! The `dnsward` binary: command-line parsing, logging and signals. `anyhow` lives only here.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
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
    /// Top tunneling suspects from the event log, with score breakdowns and samples.
    Alerts {
        /// Configuration file (its `[events] path` is read) …
        #[arg(short, long, default_value = "/etc/dnsward/dnsward.toml")]
        config: PathBuf,
        /// … or the event file to read instead (rotated files beside it are read too).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Only alerts this recent, e.g. 30m, 1h, 2d.
        #[arg(long)]
        since: Option<String>,
        /// Only this client.
        #[arg(long)]
        client: Option<std::net::IpAddr>,
        /// Only this group.
        #[arg(long)]
        group: Option<String>,
        /// Only this domain (any name under it matches).
        #[arg(long)]
        domain: Option<String>,
        /// Only alerts scoring at least this.
        #[arg(long)]
        min_score: Option<u8>,
        /// Most suspects shown (0 = all).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The event log.
    Events {
        #[command(subcommand)]
        action: EventsAction,
    },
    /// The tamper-evident event log.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Bearer tokens for DoH clients.
    Token {
        #[command(subcommand)]
        action: TokenAction,
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
enum TokenAction {
    /// Sign a short-lived token (JWT) for one agent and print it.
    Issue {
        /// Private key (PKCS#8 PEM, Ed25519 or P-256), e.g. from `openssl genpkey -algorithm ed25519`.
        #[arg(long)]
        key: PathBuf,
        /// The agent id (`sub`), e.g. a SPIFFE ID.
        #[arg(long)]
        agent: String,
        /// The group claim.
        #[arg(long)]
        group: Option<String>,
        /// Lifetime, e.g. 15m (must not exceed the server's `tls.tokens.max_lifetime`).
        #[arg(long, default_value = "15m")]
        ttl: String,
        /// Audience (`aud`), the server's `tls.tokens.audience`.
        #[arg(long, default_value = "dnsward")]
        audience: String,
    },
}

#[derive(Debug, Subcommand)]
enum EventsAction {
    /// Print the event log and, with --follow, new events as they are written (across rotations).
    Tail {
        /// Configuration file (its `[events] path` is read) …
        #[arg(short, long, default_value = "/etc/dnsward/dnsward.toml")]
        config: PathBuf,
        /// … or the event file to read instead.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Keep printing new events.
        #[arg(short, long)]
        follow: bool,
        /// Start with only the last N events.
        #[arg(short = 'n', long)]
        last: Option<usize>,
        /// Only these kinds (query, alert, containment_started, containment_ended, policy, admin).
        #[arg(long, value_delimiter = ',')]
        kind: Option<Vec<String>>,
        /// One readable line per event instead of JSON.
        #[arg(long)]
        pretty: bool,
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
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn check(path: &Path) -> ExitCode {
    let result = Config::load(path).and_then(|cfg| cfg.validate_all().map(|p| (cfg, p)));
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
                        "{:>4}  {:<20}  {:<11}  {:<12}  {:<16}  {}",
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

/// The event file from `--file`, or from the config's `[events] path`.
fn events_file(config: &Path, file: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(f) = file {
        return Ok(f);
    }
    let cfg = Config::load(config).map_err(|p| anyhow::anyhow!("{}: {p}", config.display()))?;
    cfg.events.path.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: [events] has no path (sink is not \"file\"); pass --file",
            config.display()
        )
    })
}

#[allow(clippy::too_many_arguments)]
fn alerts(
    config: &Path,
    file: Option<PathBuf>,
    since: Option<String>,
    client: Option<std::net::IpAddr>,
    group: Option<String>,
    domain: Option<String>,
    min_score: Option<u8>,
    limit: usize,
    json: bool,
) -> anyhow::Result<()> {
    use dnsward::analyst;
    let path = events_file(config, file)?;
    let query = analyst::AlertsQuery {
        since: since.as_deref().map(analyst::parse_duration).transpose()?,
        client,
        group,
        domain,
        min_score,
        limit,
    };
    let files = analyst::event_files(&path);
    if files.is_empty() {
        anyhow::bail!("{}: no such file", path.display());
    }
    let scan = analyst::scan_alerts(&files, &query, chrono::Utc::now())?;
    if json {
        println!("{}", analyst::render_json(&scan.suspects));
    } else {
        print!("{}", analyst::render_table(&scan.suspects));
        if scan.skipped > 0 {
            eprintln!(
                "note: {} line(s) were not events and were skipped (first: {})",
                scan.skipped,
                scan.first_skipped.as_deref().unwrap_or("?")
            );
        }
    }
    Ok(())
}

fn events(action: EventsAction) -> anyhow::Result<()> {
    use dnsward::analyst::{TailFormat, TailOptions, tail};
    let EventsAction::Tail {
        config,
        file,
        follow,
        last,
        kind,
        pretty,
    } = action;
    let path = events_file(&config, file)?;
    let opts = TailOptions {
        follow,
        last,
        kinds: kind,
        format: if pretty {
            TailFormat::Pretty
        } else {
            TailFormat::Json
        },
        ..TailOptions::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        tail(&path, &opts, tokio::io::stdout(), stop).await
    })
    .with_context(|| format!("reading {}", path.display()))
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
            dot = ?app.tls.dot_addrs,
            doh = ?app.tls.doh_addrs,
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
                app.reload_tls();
            }
        }
    }
}

fn token(action: TokenAction) -> anyhow::Result<()> {
    let TokenAction::Issue {
        key,
        agent,
        group,
        ttl,
        audience,
    } = action;
    let ttl = humantime::parse_duration(&ttl).with_context(|| format!("--ttl {ttl:?}"))?;
    let req = dnsward::identity::token::IssueRequest {
        agent: &agent,
        group: group.as_deref(),
        audience: &audience,
        ttl,
        issued_at: dnsward::identity::token::unix_now(),
    };
    println!("{}", dnsward::identity::token::issue(&key, &req)?);
    Ok(())
}

fn exit(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dnsward: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Alerts {
            config,
            file,
            since,
            client,
            group,
            domain,
            min_score,
            limit,
            json,
        } => exit(alerts(
            &config, file, since, client, group, domain, min_score, limit, json,
        )),
        Command::Events { action } => exit(events(action)),
        Command::Token { action } => exit(token(action)),
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
