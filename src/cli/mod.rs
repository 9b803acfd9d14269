//! The command line: subcommands of the `dnsward` binary and the analyst's terminal views.
//!
//! This folder is the binary's edge: `src/main.rs` only parses [`Cli`], calls [`init_logging`]
//! and hands over to [`run`]. So, unlike the rest of the library, modules here may use `anyhow`
//! for errors that end as a message on stderr; what they call in the library returns typed
//! (`thiserror`) errors.
//!
//! - [`check`]: `dnsward check`, validate a configuration.
//! - [`serve`]: `dnsward serve`, run the resolver until a signal.
//! - [`alerts`]: `dnsward alerts`, suspects from the event log (filters, containment state).
//! - [`containment`]: who is contained now, from the containment events.
//! - [`render`]: the suspects as a terminal table or JSON.
//! - [`tail`]: `dnsward events tail`, the log as it grows, across rotations.
//! - [`audit`]: `dnsward audit verify`, check the event log's hash chain.
//! - [`policy`]: `dnsward policy …`, history and diffs from the store, reload and rollback
//!   through the admin API.
//! - [`table`]: the one way the CLI draws a table.
//!
//! May import anything in the library; nothing in the library imports it.
//!
//! Output goes through [`out!`] and [`outln!`], which return an error instead of panicking
//! when stdout is closed (`dnsward audit verify | head -1`): the command then ends quietly
//! with status 141, as a program killed by SIGPIPE would.

/// `print!` that hands a write error (a closed pipe) to the caller's `?` instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout(), $($arg)*)?
    }};
}

/// `println!` that hands a write error (a closed pipe) to the caller's `?`.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?
    }};
}

pub mod alerts;
pub mod audit;
pub mod check;
pub mod egress;
pub mod policy;
pub mod render;
pub mod serve;
pub mod table;
pub mod tail;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;

/// A DNS security resolver for AI-agent fleets.
#[derive(Debug, Parser)]
#[command(name = "dnsward", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How the binary logs (to stderr).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
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
        /// Which action.
        #[command(subcommand)]
        action: EventsAction,
    },
    /// The tamper-evident event log.
    Audit {
        /// Which action.
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Policy versions: history, diff, reload, rollback, apply a proposal, cat a stored file.
    Policy {
        /// Configuration file (for `[store]` and the admin endpoint).
        #[arg(
            short,
            long,
            default_value = "/etc/dnsward/dnsward.toml",
            global = true
        )]
        config: PathBuf,
        /// Which action.
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Bearer tokens for DoH clients.
    Token {
        /// Which action.
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Triage suspects over the admin API, as the named user whose token is given.
    Review {
        /// The admin endpoint.
        #[arg(long, default_value = "http://127.0.0.1:9153", global = true)]
        api: String,
        /// File holding your API token (`credential:NAME` for a systemd credential); without
        /// it the token is read from the environment variable `DNSWARD_TOKEN`.
        #[arg(long, global = true)]
        token_file: Option<PathBuf>,
        /// Which action.
        #[command(subcommand)]
        action: crate::review::cli::ReviewCommand,
    },
    /// DNS-gated egress: the nftables ruleset and the state of the sets.
    Egress {
        /// Configuration file (needs an `[egress]` section).
        #[arg(
            short,
            long,
            default_value = "/etc/dnsward/dnsward.toml",
            global = true
        )]
        config: PathBuf,
        /// Which action.
        #[command(subcommand)]
        action: EgressAction,
    },
}

/// `dnsward token …`.
#[derive(Debug, Subcommand)]
pub enum TokenAction {
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

/// `dnsward egress …`.
#[derive(Debug, Subcommand)]
pub enum EgressAction {
    /// Print a complete, commented nftables ruleset for the gated groups (load with `nft -f`).
    Ruleset,
    /// Show each set's size and the elements expiring first and last (reads `nft -j list`).
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `dnsward events …`.
#[derive(Debug, Subcommand)]
pub enum EventsAction {
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
        /// Only these kinds (query, alert, containment_started, containment_ended, policy,
        /// admin, egress_denied, auth_refused); another word is an error, not an empty list.
        #[arg(
            long,
            value_delimiter = ',',
            ignore_case = true,
            value_parser = clap::builder::PossibleValuesParser::new([
                "query",
                "alert",
                "containment_started",
                "containment_ended",
                "policy",
                "admin",
                "egress_denied",
                "auth_refused",
            ])
        )]
        kind: Option<Vec<String>>,
        /// One readable line per event instead of JSON.
        #[arg(long)]
        pretty: bool,
    },
}

/// `dnsward audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditAction {
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
        /// The checkpoint file (`[events] checkpoint_path`; with a `[store]` it defaults to
        /// `<state_dir>/checkpoints.jsonl`, else `<events>.checkpoints`): proves a missing head
        /// was rotated away and catches a cut tail. Looked for beside the log when not given.
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `dnsward policy …`.
#[derive(Debug, Subcommand)]
pub enum PolicyAction {
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
    /// Print a file as stored in a version (default: its config file), or write it back to
    /// its live path with `--write-back` (e.g. after applying a proposal, so that the next
    /// reload or restart from disk keeps it).
    Cat {
        /// The version.
        version: u64,
        /// Which of its files (absolute path as recorded; default the config file).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Replace the live file at the recorded path (atomically) instead of printing.
        #[arg(long)]
        write_back: bool,
    },
    /// Ask the running server to apply a proposed version (an analyst's deny-list proposal):
    /// it becomes the running policy, recorded as a new version with you as author.
    Apply {
        /// The proposed version (see `policy history`, status `proposed`).
        version: u64,
        /// Who is applying it.
        #[arg(long)]
        actor: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
}

/// Send the library's `tracing` output to stderr, filtered by `DNSWARD_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
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

/// Run the parsed command line; the exit code says how it went (0 done, 1 failed, 2 for
/// `audit verify` finding a problem).
#[must_use]
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config } => exit(serve::run(&config)),
        Command::Check { config } => check::run(&config),
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
        } => exit(alerts::run(
            &config,
            file,
            alerts::AlertsArgs {
                since,
                client,
                group,
                domain,
                min_score,
                limit,
                json,
            },
        )),
        Command::Events { action } => exit(tail::run(action)),
        Command::Audit { action } => audit::run(action).unwrap_or_else(|e| {
            if is_closed_stdout(&e) {
                return ExitCode::from(CLOSED_STDOUT);
            }
            eprintln!("dnsward: {e:#}");
            ExitCode::from(1)
        }),
        Command::Policy { config, action } => exit(policy::run(&config, action)),
        Command::Egress { config, action } => exit(egress::run(&config, action)),
        Command::Token { action } => exit(token(action)),
        Command::Review {
            api,
            token_file,
            action,
        } => review(&api, token_file.as_deref(), &action),
    }
}

/// `dnsward token issue`: sign a short-lived token for one agent.
fn token(action: TokenAction) -> anyhow::Result<()> {
    let TokenAction::Issue {
        key,
        agent,
        group,
        ttl,
        audience,
    } = action;
    let ttl = humantime::parse_duration(&ttl).map_err(|e| anyhow::anyhow!("--ttl {ttl:?}: {e}"))?;
    let req = crate::identity::token::IssueRequest {
        agent: &agent,
        group: group.as_deref(),
        audience: &audience,
        ttl,
        issued_at: crate::identity::token::unix_now(),
    };
    outln!("{}", crate::identity::token::issue(&key, &req)?);
    Ok(())
}

/// `dnsward review …`: exit 0 done, 1 refused by the API, 2 the API unreachable or failing.
fn review(
    api: &str,
    token_file: Option<&std::path::Path>,
    action: &crate::review::cli::ReviewCommand,
) -> ExitCode {
    let token = match token_file {
        Some(f) => crate::govern::secret_file::read_secret_file(f)
            .map(|b| String::from_utf8_lossy(&b).trim().to_string()),
        None => std::env::var("DNSWARD_TOKEN")
            .map_err(|_| "give --token-file or set DNSWARD_TOKEN".to_string()),
    };
    let token = match token {
        Ok(t) => t,
        Err(e) => {
            eprintln!("dnsward: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dnsward: {e}");
            return ExitCode::from(2);
        }
    };
    let out = rt.block_on(crate::review::cli::run(api, &token, action));
    if out.status == 0 {
        use std::io::Write as _;
        // A closed stdout changes nothing: the exit status is the answer.
        let _ = write!(std::io::stdout(), "{}", out.text);
    } else {
        eprintln!("dnsward: {}", out.text.trim_end());
    }
    ExitCode::from(u8::try_from(out.status).unwrap_or(2))
}

/// Status of a command whose stdout was closed under it (`| head`): what a program killed by
/// SIGPIPE gives its shell, 128 + 13.
const CLOSED_STDOUT: u8 = 141;

/// Whether `e` is stdout closed under the command (its reader went away).
fn is_closed_stdout(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

fn exit(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_closed_stdout(&e) => ExitCode::from(CLOSED_STDOUT),
        Err(e) => {
            eprintln!("dnsward: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The configuration at `path`, or every problem found in it as one error.
fn load_config(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|p| anyhow::anyhow!("{}: {p}", path.display()))
}

/// The event file from `--file`, or from the config's `[events] path`.
fn events_file(config: &Path, file: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(f) = file {
        return Ok(f);
    }
    let cfg = load_config(config)?;
    cfg.events.path.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: [events] has no path (sink is not \"file\"); pass --file",
            config.display()
        )
    })
}
