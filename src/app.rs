//! Assembling a running dnsward from a configuration: the policy, the long-lived state, the
//! listeners and the admin endpoint. The binary and the integration tests both start here.

use std::sync::Arc;

use crate::admin::token::AdminToken;
use crate::admin::{self, RunningAdmin};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, ConfigFiles};
use crate::config_error::ConfigProblems;
use crate::contain::Containment;
use crate::detect::Detector;
use crate::events::sink::{self, EventSinkHandle, SinkKind};
use crate::events::{Event, EventBody, PolicyEvent};
use crate::govern::checkpoint;
use crate::govern::control::{Control, ControlError, ReloadHook};
use crate::identity::TokenVerifier;
use crate::resolve::cache::AnswerCache;
use crate::serve::pipeline::{Pipeline, PipelineSettings};
use crate::serve::{self, RunningServer, RunningTls};

/// The temporary exceptions' file in `[store] state_dir`.
pub const EXCEPTIONS_FILE: &str = "exceptions.json";
/// The live containments' file in `[store] state_dir`.
pub const CONTAINMENTS_FILE: &str = "containments.json";

/// Why dnsward could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration has problems.
    #[error("{0}")]
    Config(#[from] ConfigProblems),
    /// A socket or file could not be opened.
    #[error("{what}: {source}")]
    Io {
        /// What was being opened.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// The checkpoint writer for a file sink (see [`crate::govern::checkpoint`]), sealed with the
/// audit key when one is configured.
fn checkpoint_writer(
    cfg: &Config,
) -> std::io::Result<Option<Box<dyn crate::events::witness::LogWitness>>> {
    let (SinkKind::File, Some(events_path)) = (cfg.events.sink, &cfg.events.path) else {
        return Ok(None);
    };
    let path = checkpoint::checkpoint_path(
        cfg.events.checkpoint_path.as_deref(),
        cfg.store.as_ref().map(|s| s.state_dir.as_path()),
        events_path,
    );
    let key = if cfg.audit.chain {
        cfg.audit.load_key()?
    } else {
        None
    };
    Ok(Some(Box::new(checkpoint::CheckpointWriter::open(
        &path,
        key.as_ref(),
        events_path,
    )?)))
}

/// A running dnsward.
#[derive(Debug)]
pub struct RunningApp {
    /// The pipeline (policy, cache, events).
    pub pipeline: Arc<Pipeline>,
    /// Policy lifecycle (reload, rollback).
    pub control: Arc<Control>,
    /// DNS listeners.
    pub dns: RunningServer,
    /// DoT and DoH listeners (empty when none are configured).
    pub tls: RunningTls,
    /// The admin endpoint, if enabled.
    pub admin: Option<RunningAdmin>,
    /// The event sink.
    events: EventSinkHandle,
    /// The once-a-second upkeep task (containment expiry, table metrics).
    upkeep: tokio::task::JoinHandle<()>,
    /// DNS-gated egress (`[egress]`): its sets, flusher and nflog reader.
    egress: Option<crate::egress::run::RunningEgress>,
    /// This instance's locks on its state directory and event log ([`instance_locks`]),
    /// released when it exits.
    _locks: Vec<std::fs::File>,
}

/// Exclusive locks on what a running server writes: `dnsward.lock` in the store's state
/// directory, and `<events.path>.lock` beside a file event log. Taken before anything is
/// written: a second `dnsward serve` on the same config (an operator's slip, or a unit
/// restarting while the old process lives) used to record a policy version and append a
/// `policy loaded` line with the running server's next sequence number before it failed to
/// bind, and `audit verify` then reported the log as tampered with.
fn instance_locks(cfg: &Config) -> Result<Vec<std::fs::File>, StartError> {
    use std::os::fd::AsRawFd as _;
    let mut paths = Vec::new();
    if let Some(store) = &cfg.store {
        paths.push(store.state_dir.join("dnsward.lock"));
    }
    if cfg.events.sink == crate::events::config::SinkKind::File
        && let Some(path) = &cfg.events.path
    {
        let mut lock = path.clone().into_os_string();
        lock.push(".lock");
        paths.push(std::path::PathBuf::from(lock));
    }
    let mut locks = Vec::new();
    for path in paths {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The store makes its directory too; the lock comes first.
            let _ = std::fs::create_dir_all(dir);
        }
        let file = {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
        }
        .map_err(|source| StartError::Io {
            what: format!("opening the instance lock {}", path.display()),
            source,
        })?;
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            let what = if e.kind() == std::io::ErrorKind::WouldBlock {
                format!(
                    "another dnsward is running with {} (its lock is held); stop it first, or \
                     give this one its own state_dir and event log",
                    path.display()
                )
            } else {
                format!("locking {}", path.display())
            };
            return Err(StartError::Io { what, source: e });
        }
        locks.push(file);
    }
    Ok(locks)
}

impl RunningApp {
    /// Start everything described by `cfg`, with the system clock.
    ///
    /// # Errors
    /// Configuration problems (all of them) or a socket/file that cannot be opened.
    pub async fn start(cfg: &Config) -> Result<Self, StartError> {
        Self::start_with_clock(cfg, SystemClock::shared()).await
    }

    /// Start with an injected clock (tests).
    ///
    /// # Errors
    /// As [`Self::start`].
    pub async fn start_with_clock(cfg: &Config, clock: SharedClock) -> Result<Self, StartError> {
        // First: every counter below binds to the recorder that is global when it is
        // registered (see `metrics::install`).
        let prom = crate::metrics::install();
        let raised = raise_open_files_limit();
        if let Some((before, after)) = raised
            && after > before
        {
            tracing::info!(before, after, "open-file limit raised to the hard limit");
        }
        let locks = instance_locks(cfg)?;
        let config_path = std::path::PathBuf::from(&cfg.source);
        let loaded = cfg.into_loaded().map_err(StartError::Config)?;
        // As Unbound does: say at start when the limit cannot cover the configured bounds,
        // rather than only once accepts fail under load.
        if let Some(soft) = raised
            .map(|(_, after)| after)
            .or_else(open_files_soft_limit)
        {
            let need = DescriptorNeed::of(cfg);
            if let Some(warning) = open_files_warning(soft, &need) {
                tracing::warn!(
                    soft_limit = soft,
                    needed = need.total(),
                    tcp = need.tcp,
                    tls = need.tls,
                    admin = need.admin,
                    upstream = need.upstream,
                    listeners = need.listeners,
                    headroom = DESCRIPTOR_HEADROOM,
                    "{warning}"
                );
            }
        }
        for note in cfg.notes() {
            tracing::warn!("{note}");
        }
        let fixed = loaded.fixed.clone();
        let (policy, store) = Control::initial_policy(loaded, cfg.store.as_ref(), &config_path)
            .map_err(|e| match e {
                ControlError::Invalid(p) => StartError::Config(p),
                other => StartError::Io {
                    what: "opening the policy store".into(),
                    source: std::io::Error::other(other.to_string()),
                },
            })?;
        metrics::gauge!(crate::metrics::POLICY_VERSION).set(policy.version.number as f64);
        crate::metrics::preregister(policy.groups.iter().map(|g| &*g.name));
        let (events, events_handle) = cfg
            .audit
            .encoder(&cfg.events)
            .and_then(|enc| {
                let witness = checkpoint_writer(cfg)?;
                // Webhooks and syslog get every line the writer encodes.
                let notifiers = crate::events::notify::Notifiers::start(&cfg.notify);
                sink::spawn_with_extras(&cfg.events, enc, witness, Some(notifiers.tap))
            })
            .map_err(|source| StartError::Io {
                what: "opening the event sink".into(),
                source,
            })?;
        events.emit(Event::now(
            policy.version.number,
            EventBody::Policy(PolicyEvent {
                action: "loaded".into(),
                hash: Some(policy.version.hash.clone()).filter(|h| !h.is_empty()),
                actor: None,
                message: Some(cfg.source.clone()),
            }),
        ));
        let cache = AnswerCache::new(&cfg.cache, Arc::clone(&clock));
        let settings = PipelineSettings {
            unknown_clients: cfg.server.unknown_clients,
            own_addresses: cfg.server.own_addresses(),
            ipv6_prefix: cfg.containment.ipv6_prefix,
            max_inflight_misses: cfg.server.max_inflight_misses,
            max_inflight_misses_per_client: cfg.server.max_inflight_misses_per_client,
            nsid: cfg.server.nsid.as_deref().map(|n| n.as_bytes().into()),
            tcp_idle: cfg.server.tcp_idle_timeout,
            dot_idle: cfg.tls.idle_timeout,
        };
        let detector = Detector::new(&cfg.detect, Arc::clone(&clock));
        let containment = Containment::new(&cfg.containment, Arc::clone(&clock));
        let pipeline = Arc::new(Pipeline::new(
            policy,
            cache,
            events,
            settings,
            Arc::clone(&clock),
            detector,
            containment,
        ));
        // Live containments survive a restart when there is a state directory: a tunnelling
        // agent is not released by one (or by a crash). Taken back before any listener opens.
        if let Some(store) = &cfg.store {
            let policy = pipeline.policy();
            let exists = |g: &str| policy.groups.iter().any(|x| &*x.name == g);
            match pipeline
                .containment()
                .persist_at(store.state_dir.join(CONTAINMENTS_FILE), &exists)
            {
                Ok(r) => log_restored("containments", &r),
                Err(e) => {
                    tracing::warn!(error = %e, "containments not restored; the file is rewritten at the next change");
                }
            }
        }
        // Egress before the listeners: the first answer must already feed the sets.
        let egress = match &cfg.egress {
            Some(ec) => {
                let policy = pipeline.policy();
                let gated: Vec<&str> = policy
                    .groups
                    .iter()
                    .filter(|g| g.egress)
                    .map(|g| &*g.name)
                    .collect();
                // The nflog reader attributes drops and contains through the pipeline.
                let running = crate::egress::run::RunningEgress::start(
                    ec,
                    &gated,
                    pipeline.events().clone(),
                    Arc::clone(&clock),
                    Arc::clone(&pipeline) as Arc<dyn crate::egress::evidence::DeniedContext>,
                )
                .map_err(|e| StartError::Io {
                    what: "starting egress".into(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                pipeline.attach_egress(running.hook.clone());
                Some(running)
            }
            None => None,
        };
        let upkeep = {
            let pipeline = Arc::clone(&pipeline);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    pipeline.maintenance_tick();
                    // Containments started, ended or expired since the last tick are written
                    // here, off the query path and off the async workers.
                    if pipeline.containment().save_pending() {
                        let p = Arc::clone(&pipeline);
                        let _ = tokio::task::spawn_blocking(move || p.containment().save()).await;
                    }
                    // Histogram samples pile up until drained: drain them even when nothing
                    // scrapes /metrics, so memory stays flat.
                    prom.run_upkeep();
                }
            })
        };
        let control = Arc::new(Control::attach(
            Arc::clone(&pipeline),
            fixed,
            &config_path,
            store,
            Box::new(ConfigFiles),
        ));
        let token = Arc::new(
            AdminToken::load(cfg.admin.token_file.as_deref()).map_err(|e| StartError::Io {
                what: "reading admin.token_file".into(),
                source: std::io::Error::other(e),
            })?,
        );
        let dns = serve::start(&cfg.server, Arc::clone(&pipeline))
            .await
            .map_err(|source| StartError::Io {
                what: format!("binding {:?}", cfg.server.listen),
                source,
            })?;
        let tls = serve::encrypted::start(
            &cfg.tls,
            &cfg.base_dir,
            Arc::clone(&pipeline),
            cfg.server.unknown_clients,
            cfg.server.tcp_write_timeout,
        )
        .await
        .map_err(|e| StartError::Io {
            what: "starting the DoT/DoH listeners".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        // The review, once open, for the reload hook's check of a rotated admin token.
        let review_cell: Arc<std::sync::OnceLock<Arc<crate::review::Review>>> =
            Arc::new(std::sync::OnceLock::new());
        {
            // SIGHUP and the API's reload both go through control: the admin token, the
            // DoT/DoH certificates, keys, client CAs and CRLs, and the DoH token keys and JWKS
            // are re-read there (open
            // connections keep the configuration they were accepted with), and the event log's
            // path is checked before the next write (logrotate's `create` mode).
            let token = Arc::clone(&token);
            let review_cell = Arc::clone(&review_cell);
            let cells = tls.cells();
            let agent_tokens = tls.tokens();
            let events = pipeline.events().clone();
            control.set_reload_hook(ReloadHook(Box::new(move || {
                events.reopen_log();
                let mut failed: Vec<String> = cells
                    .iter()
                    .filter_map(|c| c.reload().err())
                    .map(|e| format!("TLS not reloaded, the running certificates stay: {e}"))
                    .collect();
                // Checked against the review's users before it is put in force: a user's
                // token as the admin token would make that user admin.
                match token.read() {
                    Ok(Some(t)) if review_cell.get().is_some_and(|r| r.is_a_users_token(&t)) => {
                        failed.push(
                            "admin token not reloaded: it is the token of a user in \
                             admin.tokens_file; the running one stays"
                                .to_string(),
                        );
                    }
                    Ok(Some(t)) => token.install(&t),
                    Ok(None) => {}
                    Err(e) => failed.push(format!("admin token not reloaded: {e}")),
                }
                // An issuer's key rotation: the new key files or JWKS verify tokens from the
                // next request on; if any fails to load, the running keys stay.
                if let Some(Err(e)) = agent_tokens.as_deref().map(TokenVerifier::reload) {
                    failed.push(format!(
                        "token keys not reloaded, the running keys stay: {e}"
                    ));
                }
                if failed.is_empty() {
                    Ok(())
                } else {
                    Err(failed.join("; "))
                }
            })));
        }
        // Temporary exceptions survive a restart when there is a state directory: a suspect
        // triaged as a false positive must not be contained again, unseen, after one.
        if let Some(store) = &cfg.store {
            let policy = pipeline.policy();
            let exists = |g: &str| policy.groups.iter().any(|x| &*x.name == g);
            match pipeline
                .overrides()
                .persist_at(store.state_dir.join(EXCEPTIONS_FILE), &exists)
            {
                Ok(r) => log_restored("temporary exceptions", &r),
                Err(e) => {
                    tracing::warn!(error = %e, "temporary exceptions not restored; the file is rewritten at the next change")
                }
            }
        }
        // The review (issue 12): users, triage store, API and console.
        let review = crate::review::Review::open(
            crate::review::ReviewSections {
                tokens_file: cfg.admin.tokens_file.as_deref(),
                admin_token: Some(&token),
                store: cfg.store.as_ref(),
                events: &cfg.events,
            },
            Arc::clone(&pipeline),
            Arc::clone(&control),
        )
        .map_err(|e| StartError::Io {
            what: "opening the review".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let review = Arc::new(review);
        let _ = review_cell.set(Arc::clone(&review));
        let admin = match cfg.admin.listen.parse() {
            Ok(addr) => Some(
                admin::start(
                    addr,
                    Arc::clone(&pipeline),
                    Arc::clone(&control),
                    token,
                    cfg.admin.metrics_labels,
                    Some(review),
                    cfg.admin.limits(),
                )
                .await
                .map_err(|source| StartError::Io {
                    what: format!("binding admin {}", cfg.admin.listen),
                    source,
                })?,
            ),
            Err(_) => None,
        };
        Ok(Self {
            pipeline,
            control,
            dns,
            tls,
            admin,
            events: events_handle,
            upkeep,
            egress,
            _locks: locks,
        })
    }

    /// Re-read the DoT/DoH certificates, keys, client CAs and CRLs (SIGHUP). New connections
    /// use them; open ones keep theirs. A listener whose files fail keeps its running
    /// configuration, and each failure is logged.
    pub fn reload_tls(&self) {
        for e in self.tls.reload() {
            tracing::error!("TLS reload failed, keeping the running certificates: {e}");
        }
    }

    /// Stop listening, finish in-flight queries, flush events.
    ///
    /// Every listener, plain and encrypted, is told to stop at once and they drain side by
    /// side: the whole drain takes at most one `shutdown_grace`, not one per kind of listener
    /// (and no listener keeps accepting while another drains).
    pub async fn shutdown(self) {
        let grace = self.dns.grace();
        tokio::join!(self.tls.shutdown(grace), self.dns.shutdown());
        self.upkeep.abort();
        // Containments that expire during shutdown are still recorded.
        self.pipeline.maintenance_tick();
        let p = Arc::clone(&self.pipeline);
        let _ = tokio::task::spawn_blocking(move || p.containment().save()).await;
        if let Some(a) = self.admin {
            a.shutdown().await;
        }
        if let Some(e) = self.egress {
            // Blocking joins (flusher, nflog reader): at most about half a second.
            let _ = tokio::task::spawn_blocking(move || e.shutdown()).await;
        }
        drop(self.pipeline);
        self.events.shutdown().await;
    }
}

/// Logs what a restart took back from a state file: each entry dropped, with why, then the
/// count (`temporary exceptions restored`, `containments restored`).
fn log_restored(what: &str, r: &crate::contain::persist::Restored) {
    for why in &r.dropped {
        tracing::warn!("{what}: {why}");
    }
    if r.restored > 0 || !r.dropped.is_empty() {
        tracing::info!(
            restored = r.restored,
            dropped = r.dropped.len(),
            expired = r.expired,
            "{what} restored"
        );
    }
}

/// Descriptors the configured bounds let dnsward hold at once, by what holds them (see
/// [`DescriptorNeed::total`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorNeed {
    /// Plain TCP connections: `server.tcp_max_connections` (all listeners together) and, with
    /// `unknown_clients = "refuse"`, each listener's pool for clients in no group.
    pub tcp: u64,
    /// DoT and DoH connections: each listener's `[tls] max_connections` and pool for clients in
    /// no group.
    pub tls: u64,
    /// Admin connections (`admin.max_connections`), when the endpoint is on.
    pub admin: u64,
    /// Upstream UDP sockets: `upstream.udp_sockets_per_server` per configured UDP server
    /// (default and forward zones). TCP exchanges (TCP servers, truncated answers) hold one
    /// more each while they last; they are not counted.
    pub upstream: u64,
    /// The listening sockets: one UDP socket per worker and address, the TCP, DoT, DoH and
    /// admin listeners.
    pub listeners: u64,
}

/// Descriptors counted besides the bounds: event and checkpoint files, the runtime's epoll
/// and wake-ups, standard streams, notification sockets, files read at a reload.
pub const DESCRIPTOR_HEADROOM: u64 = 64;

impl DescriptorNeed {
    /// What `cfg`'s bounds need.
    #[must_use]
    pub fn of(cfg: &Config) -> Self {
        let n = |v: usize| v as u64;
        let s = &cfg.server;
        let unknown_pool = match s.unknown_clients {
            crate::serve::pipeline::UnknownClients::Refuse => n(serve::UNKNOWN_SLOTS),
            crate::serve::pipeline::UnknownClients::Drop => 0,
        };
        let addrs = n(s.listen_addrs().len());
        let tls_listeners = n(cfg.tls.dot.len() + cfg.tls.doh.len());
        let admin_on = cfg.admin.listen.parse::<std::net::SocketAddr>().is_ok();
        let upstream_servers = cfg
            .upstream
            .servers
            .iter()
            .chain(cfg.upstream.forward.iter().flat_map(|f| &f.servers))
            .filter(|s| s.protocol == crate::resolve::upstream::Transport::Udp)
            .count();
        Self {
            tcp: n(s.tcp_max_connections) + addrs * unknown_pool,
            tls: tls_listeners * (n(cfg.tls.max_connections) + unknown_pool),
            admin: if admin_on {
                n(cfg.admin.max_connections)
            } else {
                0
            },
            upstream: n(upstream_servers) * n(cfg.upstream.udp_sockets_per_server.clamp(1, 256)),
            listeners: addrs * (n(s.udp_sockets_per_address()) + 1)
                + tls_listeners
                + u64::from(admin_on),
        }
    }

    /// Everything, with [`DESCRIPTOR_HEADROOM`].
    #[must_use]
    pub fn total(&self) -> u64 {
        self.tcp + self.tls + self.admin + self.upstream + self.listeners + DESCRIPTOR_HEADROOM
    }
}

/// The start-up warning when an open-file soft limit of `soft` cannot cover `need`.
#[must_use]
pub fn open_files_warning(soft: u64, need: &DescriptorNeed) -> Option<String> {
    let total = need.total();
    (soft < total).then(|| {
        format!(
            "open-file limit {soft} is below the {total} descriptors the configured bounds can hold (TCP {}, DoT/DoH {}, admin {}, upstream sockets {}, listeners {}, headroom {DESCRIPTOR_HEADROOM}): under load, accepts and upstream sockets will fail (EMFILE); raise the hard limit (LimitNOFILE= in the systemd unit, ulimit -Hn / prlimit --nofile from a shell) or lower server.tcp_max_connections / [tls] max_connections",
            need.tcp, need.tls, need.admin, need.upstream, need.listeners
        )
    })
}

/// This process's open-file soft limit, when it can be read.
fn open_files_soft_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct passed, which lives for the call.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim.rlim_cur)
}

/// Raises this process's open-file soft limit to its hard limit, as Go's runtime does for every
/// program: the listeners' connection bounds (TCP, DoT, DoH, admin) and the upstream sockets add
/// up to more than the 1,024 a login shell or a default service gives, and a server out of
/// descriptors can accept no one. The hard limit is the operator's (`LimitNOFILE=` in the unit,
/// `ulimit -Hn`, `prlimit`); an infinite one counts as 2^20, the kernel's usual `nr_open`.
/// Returns the soft limit before and after, or `None` when it cannot be read or set.
#[must_use]
pub fn raise_open_files_limit() -> Option<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct passed, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    let before = lim.rlim_cur;
    let want = if lim.rlim_max == libc::RLIM_INFINITY {
        1 << 20
    } else {
        lim.rlim_max
    };
    if before >= want {
        return Some((before, before));
    }
    lim.rlim_cur = want;
    // SAFETY: setrlimit reads the struct passed, which lives for the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return None;
    }
    Some((before, want))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(text: &str) -> DescriptorNeed {
        let cfg: Config = toml::from_str(text).expect("config");
        DescriptorNeed::of(&cfg)
    }

    #[test]
    fn the_descriptor_need_adds_up_every_connection_bound() {
        let base = need("[server]\nudp_workers = 2\n");
        assert_eq!(
            base,
            DescriptorNeed {
                tcp: 1024 + 64,
                tls: 0,
                admin: 64,
                upstream: 0,
                listeners: 2 + 1 + 1,
            }
        );
        assert_eq!(base.total(), 1088 + 64 + 4 + DESCRIPTOR_HEADROOM);
        let full = need(
            r#"
[server]
listen = ["127.0.0.1:53", "[::1]:53"]
udp_workers = 4
tcp_max_connections = 100
unknown_clients = "drop"
[admin]
listen = ""
[upstream]
udp_sockets_per_server = 4
servers = [{ address = "192.0.2.1" }, { address = "192.0.2.2", protocol = "tcp" }]
forward = [{ zone = "corp.example", servers = [{ address = "192.0.2.3" }] }]
[tls]
max_connections = 10
[[tls.dot]]
listen = "127.0.0.1:853"
cert = "c.pem"
key = "k.pem"
[[tls.doh]]
listen = "127.0.0.1:443"
cert = "c.pem"
key = "k.pem"
"#,
        );
        assert_eq!(
            full,
            DescriptorNeed {
                tcp: 100,
                tls: 2 * 10,
                admin: 0,
                upstream: 2 * 4,
                listeners: 2 * (4 + 1) + 2,
            },
            "no pool for unknown clients with drop; a TCP upstream has no pooled sockets"
        );
    }

    #[test]
    fn a_limit_below_the_need_is_warned_about_with_the_numbers() {
        let need = DescriptorNeed {
            tcp: 1088,
            tls: 0,
            admin: 64,
            upstream: 16,
            listeners: 4,
        };
        assert_eq!(need.total(), 1236);
        assert!(open_files_warning(1236, &need).is_none());
        assert!(open_files_warning(u64::MAX, &need).is_none());
        let w = open_files_warning(1024, &need).expect("a warning");
        for part in [
            "open-file limit 1024",
            "1236 descriptors",
            "TCP 1088",
            "upstream sockets 16",
            "LimitNOFILE=",
        ] {
            assert!(w.contains(part), "{part:?} in {w}");
        }
    }
}
