//! Forwarding allowed queries to upstream resolvers.
//!
//! dnsward owns this client rather than using hickory-resolver: a forwarder must hand back the
//! upstream's message as it is (flags, authority section for negative caching, CNAME chains)
//! and must never cache on its own (the answer cache is ours), while hickory-resolver puts its
//! own entry-counted cache and CNAME chasing in front and turns negative answers into errors.
//! Truncated answers are retried over TCP.
//!
//! UDP goes through a small pool of sockets per server ([`UdpPool`], `udp_sockets_per_server`,
//! like Unbound's outside-network): each socket is bound once to a kernel-chosen random port,
//! connected to the server, and read by one task that hands each answer to the exchange waiting
//! on its ID, after checking that the answer is a response to that exchange's question.
//! Anything else is dropped: a late answer (the ID of an exchange that ended in the last
//! 10 s: the second copy after a retransmission, or an answer after its exchange gave up) is
//! counted as `kind="late"`, any other (a wrong ID, a wrong question) as `kind="mismatch"`, so
//! an off-path spoofer has to guess a 16-bit random ID, the exact question and one of the
//! pool's ports, and its guesses are not hidden among the late answers. The trade-off against a fresh socket per exchange:
//! those ports stay fixed for the pool's life (until a reload rebuilds the upstreams) instead
//! of changing per query, which gives a spoofer who learns one port fewer bits to guess; in
//! exchange a miss costs no socket, no file descriptor and no 64 KiB buffer of its own, so a
//! flood of misses cannot exhaust descriptors. Forwarding to a resolver on the same host or
//! network, as dnsward is meant to, keeps off-path spoofing hard either way.
//!
//! Servers are asked in rounds, healthiest (fewest failures in a row) first, within the
//! overall budget (`[upstream] timeout`), and the caller turns running out of it into SERVFAIL
//! ([`Upstreams::resolve`]). Each server is sent the query and waited on for its own `timeout`,
//! doubled each round, before the next one is tried; the exchanges already open stay open, so
//! the first valid answer from any of them is taken, and a server asked in an earlier round is
//! sent the same query again (same ID) in the next, at most [`MAX_SENDS_PER_SERVER`] times in
//! all (a bound on retries, as RFC 9520 §3.1 asks): a datagram lost to the first server costs
//! one timeout, not the query, while a black-holed second server is tried meanwhile. A server
//! that failed outright (a closed port, REFUSED, FORMERR, TC over TCP too) is not asked again
//! for that query. A server's SERVFAIL is asked of the others (one turn each, within their own
//! timeouts) and is the answer only if none does better. A server with
//! [`DOWN_AFTER`] failed exchanges in a row is down: it is sent one probe per query and no
//! retransmission, and when every server of a set of several is down they are probed together
//! and the query fails after the longest per-server timeout instead of the whole budget; any
//! answer makes a server healthy again. A sole server always has the whole budget. The per-server
//! timeout is not adapted to a measured round-trip time: forwarding to recursive resolvers, the
//! time of an answer is their cache hit (a millisecond) or their own recursion (up to seconds),
//! and a timeout fitted to the first would send each recursion to a second server. A
//! socket that cannot be opened here (out of file descriptors or kernel memory, see
//! [`crate::resources`]) is counted as `kind="local_resources"`, not held against the server's
//! health, and named in the SERVFAIL's reason ([`UpstreamError::LocalResources`]).
//!
//! Conditional forward zones (`corp.example` → 127.0.0.53) send names at or below the zone to
//! their own servers; the longest matching zone wins.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{Notify, OnceCell, oneshot, watch};

use crate::config_error::{ConfigProblems, DurationRange};
use crate::metrics as m;
use crate::names::{normalise, self_and_parents, validate_name};
use crate::resolve::cache::StaleAnswers;
use crate::resolve::failures::FAILURE_TTL;
use crate::resources::SocketError;
use crate::wire;

/// Transport to an upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP, retried over TCP when truncated (default).
    #[default]
    Udp,
    /// TCP only.
    Tcp,
}

/// One upstream server as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `IP` or `IP:port` (port 53 when omitted); IPv6 as `[::1]:53`.
    pub address: String,
    /// `udp` (default) or `tcp`.
    #[serde(default)]
    pub protocol: Transport,
    /// Time to wait for this server before trying the next, doubled each round over the servers
    /// (default 1s, 1ms to 5m).
    #[serde(default = "default_attempt_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// A conditional forward zone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardZoneConfig {
    /// The zone: names at or below it go to `servers`.
    pub zone: String,
    /// Its servers.
    pub servers: Vec<ServerConfig>,
}

/// `[upstream]`: where allowed queries go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Default upstream servers, tried in order of health.
    #[serde(default)]
    pub servers: Vec<ServerConfig>,
    /// Overall budget for one query across all servers and rounds (default 3s, 1ms to 5m);
    /// SERVFAIL after it.
    #[serde(default = "default_total_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Conditional forward zones.
    #[serde(default)]
    pub forward: Vec<ForwardZoneConfig>,
    /// UDP sockets kept open per server and shared by its exchanges (default 8, at most 256).
    #[serde(default = "default_sockets_per_server")]
    pub udp_sockets_per_server: usize,
    /// Forward question names in lower case (default off: as the client sent them, as Unbound
    /// does). The letters' case is the client's to choose; passed on, it can carry data to a
    /// tunnel's authority that the detector does not price. On, tunnels that need case
    /// (dns2tcp's base64) stop working and the client still gets its own case back.
    #[serde(default)]
    pub fold_case: bool,
    /// How long a question whose resolution failed (no upstream answered, SERVFAIL, an
    /// unusable answer) is answered SERVFAIL at once without asking again (RFC 9520; default
    /// 5s, at most 5m; 0s turns it off).
    #[serde(default = "default_failure_ttl", with = "humantime_serde")]
    pub failure_ttl: Duration,
    /// The longest a question that keeps failing is answered SERVFAIL at once: each failure
    /// soon after the last one ran out doubles its time up to this (RFC 9520 §3.2; default the
    /// larger of 60s and `failure_ttl`, at most 5m, at least `failure_ttl`; equal to it: no
    /// back-off).
    #[serde(default, with = "humantime_serde")]
    pub failure_ttl_max: Option<Duration>,
}

fn default_sockets_per_server() -> usize {
    8
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            timeout: default_total_timeout(),
            forward: Vec::new(),
            udp_sockets_per_server: default_sockets_per_server(),
            fold_case: false,
            failure_ttl: default_failure_ttl(),
            failure_ttl_max: None,
        }
    }
}

fn default_failure_ttl() -> Duration {
    Duration::from_secs(5)
}

/// `failure_ttl_max` when not set: a minute, or `failure_ttl` if that is longer. Short enough
/// that a question still failing when its upstream comes back is answered again within a
/// minute; long enough that a question failing for good costs its upstream one exchange a
/// minute, not one every `failure_ttl`.
const DEFAULT_FAILURE_TTL_MAX: Duration = Duration::from_secs(60);

/// Accepted `[upstream] timeout` and per-server `timeout`: a client gives up on a query within
/// seconds; minutes only hold a miss slot (and, past the platform's clock, `Instant::now() +
/// timeout` panics).
pub const UPSTREAM_TIMEOUT: DurationRange =
    DurationRange::new(Duration::from_millis(1), Duration::from_secs(300));

fn default_attempt_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_total_timeout() -> Duration {
    Duration::from_secs(3)
}

/// Parse `IP` or `IP:port`.
///
/// # Errors
/// A message saying what is wrong.
pub fn parse_server_address(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    if let Ok(sa) = t.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(format!("{t:?}: port 0 is no server's port"));
        }
        return Ok(sa);
    }
    t.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("{t:?} is not an address (IP, IP:port or [IPv6]:port)"))
}

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Every server failed or the budget ran out.
    #[error("no upstream answered ({tried} tried)")]
    Exhausted {
        /// How many servers were tried.
        tried: usize,
    },
    /// Every server asked, or some of them, answered with an rcode that is no answer for a
    /// client (REFUSED, FORMERR, NOTIMP, …), and none answered usefully within the budget.
    #[error("{}", rejected_text(*.tried, *.rejected, *.rcode))]
    Rejected {
        /// How many servers were tried.
        tried: usize,
        /// How many of them answered with such an rcode.
        rejected: usize,
        /// The last such rcode.
        rcode: u8,
    },
    /// No upstream is configured for this name.
    #[error("no upstream configured")]
    NoUpstream,
    /// No server answered, and at least one could not be asked because a socket could not be
    /// opened here (out of file descriptors or kernel memory): this host's fault, not the
    /// servers'.
    #[error("no upstream answered ({tried} tried): a socket could not be opened here ({cause})")]
    LocalResources {
        /// How many servers were tried.
        tried: usize,
        /// What ran out.
        cause: SocketError,
    },
}

/// [`UpstreamError::Rejected`]'s text.
fn rejected_text(tried: usize, rejected: usize, rcode: u8) -> String {
    let name = wire::rcode::name(u16::from(rcode));
    if rejected >= tried {
        format!("no upstream would answer: {name} ({tried} tried)")
    } else {
        format!("no upstream answered ({tried} tried; {rejected} answered {name})")
    }
}

impl UpstreamError {
    /// EXTRA-TEXT for the client's EDE 22 (No Reachable Authority, RFC 8914 §4.23: the
    /// authorities could not be reached "or they potentially refused to reply"): what the
    /// servers did, never that they were silent when they answered.
    #[must_use]
    pub fn ede_text(&self) -> &'static str {
        match self {
            Self::Rejected {
                tried,
                rejected,
                rcode,
            } if rejected >= tried => match *rcode {
                wire::rcode::REFUSED => "upstream answered REFUSED",
                wire::rcode::FORMERR => "upstream answered FORMERR",
                wire::rcode::NOTIMP => "upstream answered NOTIMP",
                _ => "upstream answered with an error",
            },
            Self::NoUpstream => "no upstream configured",
            _ => "no upstream answered",
        }
    }
}

/// A live upstream server with its health and metric handles.
#[derive(Debug)]
pub struct Upstream {
    /// Where it is.
    pub addr: SocketAddr,
    /// How to reach it.
    pub transport: Transport,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Label for events and metrics (`udp://127.0.0.1:53`).
    pub label: Arc<str>,
    /// Consecutive failures, for ordering servers by health.
    failures: AtomicU32,
    /// The UDP sockets its exchanges share.
    pool: UdpPool,
    requests_udp: Counter,
    requests_tcp: Counter,
    retransmits: Counter,
    err_timeout: Counter,
    err_io: Counter,
    /// Answers no exchange takes.
    strays: Strays,
    err_refused: Counter,
    err_formerr: Counter,
    /// FORMERR to a query with EDNS, asked again without (`kind="edns_formerr"`).
    edns_fallbacks: Counter,
    /// Until when (milliseconds after [`Self::born`]; 0: not) the server is asked without
    /// EDNS first: it answered EDNS with FORMERR lately ([`NO_EDNS_FOR`]).
    no_edns_until: AtomicU64,
    /// When this server's state was made, the base of [`Self::no_edns_until`].
    born: Instant,
    err_notimp: Counter,
    err_rcode: Counter,
    err_servfail: Counter,
    err_truncated: Counter,
    err_local: Counter,
    rtt: Histogram,
    /// `dnsward_upstream_down`, set when [`Self::failures`] crosses [`DOWN_AFTER`].
    down: Gauge,
}

impl Upstream {
    /// Whether it is down: [`DOWN_AFTER`] failed exchanges in a row, no answer since.
    fn is_down(&self) -> bool {
        self.failures.load(Ordering::Relaxed) >= DOWN_AFTER
    }

    /// One more failed exchange in a row; down from [`DOWN_AFTER`] on (the gauge set at each,
    /// so a race with an answer is put right by the next failure).
    fn failed(&self) {
        if self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
            >= DOWN_AFTER
        {
            self.down.set(1.0);
        }
    }

    /// It answered: healthy again.
    fn answered(&self) {
        if self.failures.swap(0, Ordering::Relaxed) >= DOWN_AFTER {
            self.down.set(0.0);
        }
    }

    fn new(addr: SocketAddr, transport: Transport, timeout: Duration, sockets: usize) -> Self {
        let label: Arc<str> = match transport {
            Transport::Udp => format!("udp://{addr}"),
            Transport::Tcp => format!("tcp://{addr}"),
        }
        .into();
        let l = label.to_string();
        Self {
            addr,
            transport,
            timeout,
            failures: AtomicU32::new(0),
            no_edns_until: AtomicU64::new(0),
            born: Instant::now(),
            pool: UdpPool::new(addr, sockets),
            requests_udp: metrics::counter!(m::UPSTREAM_REQUESTS_TOTAL, "upstream" => l.clone(), "transport" => "udp"),
            requests_tcp: metrics::counter!(m::UPSTREAM_REQUESTS_TOTAL, "upstream" => l.clone(), "transport" => "tcp"),
            retransmits: metrics::counter!(m::UPSTREAM_RETRANSMITS_TOTAL, "upstream" => l.clone()),
            err_timeout: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "timeout"),
            err_io: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "io"),
            strays: Strays {
                mismatch: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "mismatch"),
                late: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "late"),
            },
            err_refused: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "refused"),
            err_formerr: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "formerr"),
            edns_fallbacks: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "edns_formerr"),
            err_notimp: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "notimp"),
            err_rcode: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "rcode"),
            err_servfail: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "servfail"),
            err_truncated: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "truncated"),
            err_local: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "local_resources"),
            rtt: metrics::histogram!(m::UPSTREAM_DURATION_SECONDS, "upstream" => l.clone()),
            down: {
                // A new server (or one rebuilt by a reload) starts healthy.
                let down = metrics::gauge!(m::UPSTREAM_DOWN, "upstream" => l);
                down.set(0.0);
                down
            },
            label,
        }
    }
}

/// An ordered set of servers for one zone.
#[derive(Debug, Default)]
pub struct UpstreamSet {
    /// The servers.
    pub servers: Vec<Arc<Upstream>>,
}

/// All upstreams: the default set and the conditional forward zones.
#[derive(Debug, Default)]
pub struct Upstreams {
    /// Default servers.
    default: UpstreamSet,
    /// Forward zones by zone name.
    forwards: HashMap<Box<str>, UpstreamSet>,
    /// Overall budget per query.
    total_timeout: Duration,
    /// `[upstream] fold_case`.
    fold_case: bool,
    /// Sockets per server, for servers added after the config ([`Self::add_delegations`]).
    sockets: usize,
    /// `[upstream] failure_ttl`.
    failure_ttl: Duration,
    /// `[upstream] failure_ttl_max` (at least `failure_ttl`).
    failure_ttl_max: Duration,
}

impl UpstreamSet {
    /// Same servers (address and transport) in the same order.
    fn same_servers(&self, other: &UpstreamSet) -> bool {
        self.servers.len() == other.servers.len()
            && self
                .servers
                .iter()
                .zip(&other.servers)
                .all(|(a, b)| a.addr == b.addr && a.transport == b.transport)
    }
}

fn build_set(
    list: &[ServerConfig],
    sockets: usize,
    at: &str,
    problems: &mut ConfigProblems,
) -> UpstreamSet {
    let mut servers = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let loc = format!("{at}[{i}]");
        match parse_server_address(&s.address) {
            Ok(addr) => {
                problems.check_duration(format!("{loc}.timeout"), s.timeout, UPSTREAM_TIMEOUT);
                servers.push(Arc::new(Upstream::new(
                    addr,
                    s.protocol,
                    UPSTREAM_TIMEOUT.clamp(s.timeout),
                    sockets,
                )));
            }
            Err(e) => problems.push(format!("{loc}.address"), e),
        }
    }
    UpstreamSet { servers }
}

impl Upstreams {
    /// Build from config, pushing every problem.
    pub fn from_config(cfg: &UpstreamConfig, at: &str, problems: &mut ConfigProblems) -> Self {
        let sockets = cfg.udp_sockets_per_server.clamp(1, 256);
        if !(1..=256).contains(&cfg.udp_sockets_per_server) {
            problems.push(
                format!("{at}.udp_sockets_per_server"),
                "must be between 1 and 256",
            );
        }
        let default = build_set(&cfg.servers, sockets, &format!("{at}.servers"), problems);
        problems.check_duration(format!("{at}.timeout"), cfg.timeout, UPSTREAM_TIMEOUT);
        if problems.check_duration(format!("{at}.failure_ttl"), cfg.failure_ttl, FAILURE_TTL)
            && !cfg.failure_ttl.is_zero()
            && cfg.failure_ttl < Duration::from_secs(1)
        {
            // RFC 9520 §3.2: at least 1 s when failures are cached at all.
            problems.push(
                format!("{at}.failure_ttl"),
                format!(
                    "must be 0s (off) or at least 1s (RFC 9520), got {}ms",
                    cfg.failure_ttl.as_millis()
                ),
            );
        }
        let failure_ttl = FAILURE_TTL.clamp(cfg.failure_ttl);
        let failure_ttl_max = match cfg.failure_ttl_max {
            None => DEFAULT_FAILURE_TTL_MAX.max(failure_ttl),
            Some(max) => {
                let key = format!("{at}.failure_ttl_max");
                if problems.check_duration(key.clone(), max, FAILURE_TTL) && max < failure_ttl {
                    problems.push(
                        key,
                        format!(
                            "must be at least failure_ttl ({}ms), got {}ms",
                            failure_ttl.as_millis(),
                            max.as_millis()
                        ),
                    );
                }
                FAILURE_TTL.clamp(max).max(failure_ttl)
            }
        };
        let mut forwards = HashMap::new();
        for (i, f) in cfg.forward.iter().enumerate() {
            let loc = format!("{at}.forward[{i}]");
            let zone = normalise(&f.zone);
            if let Err(e) = validate_name(&zone) {
                problems.push(format!("{loc}.zone"), e);
            }
            if f.servers.is_empty() {
                problems.push(
                    format!("{loc}.servers"),
                    "a forward zone needs at least one server",
                );
            }
            let set = build_set(&f.servers, sockets, &format!("{loc}.servers"), problems);
            if forwards
                .insert(zone.clone().into_boxed_str(), set)
                .is_some()
            {
                problems.push(
                    format!("{loc}.zone"),
                    format!("zone {zone:?} is forwarded twice"),
                );
            }
        }
        Self {
            default,
            forwards,
            total_timeout: UPSTREAM_TIMEOUT.clamp(cfg.timeout),
            fold_case: cfg.fold_case,
            sockets,
            failure_ttl,
            failure_ttl_max,
        }
    }

    /// Forward zones for the delegations inside local zones: each delegated name goes to its
    /// servers' addresses on port 53 over UDP (TCP on truncation), with the default per-server
    /// timeout. An `[[upstream.forward]]` for the same name is the operator's and stays.
    pub fn add_delegations(&mut self, delegations: &[crate::resolve::zones::Delegation]) {
        for d in delegations {
            if self.forwards.contains_key(d.zone.as_str()) {
                continue;
            }
            let servers = d
                .addresses
                .iter()
                .map(|ip| {
                    Arc::new(Upstream::new(
                        SocketAddr::new(*ip, 53),
                        Transport::default(),
                        UPSTREAM_TIMEOUT.clamp(default_attempt_timeout()),
                        self.sockets,
                    ))
                })
                .collect();
            self.forwards
                .insert(d.zone.clone().into_boxed_str(), UpstreamSet { servers });
        }
    }

    /// Cached answers that would be fetched from elsewhere under `self` than under `old`:
    /// everything when the default servers changed, else the forward zones that were added,
    /// removed or re-pointed.
    #[must_use]
    pub fn stale_since(&self, old: &Upstreams) -> StaleAnswers {
        if !self.default.same_servers(&old.default) {
            return StaleAnswers::All;
        }
        let mut zones: Vec<Box<str>> = Vec::new();
        for (zone, set) in &self.forwards {
            if !old.forwards.get(zone).is_some_and(|o| o.same_servers(set)) {
                zones.push(zone.clone());
            }
        }
        for zone in old.forwards.keys() {
            if !self.forwards.contains_key(zone) {
                zones.push(zone.clone());
            }
        }
        if zones.is_empty() {
            StaleAnswers::None
        } else {
            StaleAnswers::Under(zones)
        }
    }

    /// Whether `name` is inside a conditional forward zone (the operator's own resolvers).
    #[must_use]
    pub fn is_forward_zone_name(&self, name: &str) -> bool {
        !self.forwards.is_empty() && self_and_parents(name).any(|p| self.forwards.contains_key(p))
    }

    /// Whether a conditional forward zone is at, above or below `zone`: a built-in local zone
    /// there would take the operator's names from their own servers.
    #[must_use]
    pub fn forward_zone_overlaps(&self, zone: &str) -> bool {
        self.forwards
            .keys()
            .any(|f| crate::names::is_at_or_below(f, zone) || crate::names::is_at_or_below(zone, f))
    }

    /// Whether question names go upstream lower-cased (`[upstream] fold_case`).
    #[must_use]
    pub fn fold_case(&self) -> bool {
        self.fold_case
    }

    /// How long a failed question is answered SERVFAIL without asking again
    /// (`[upstream] failure_ttl`; zero: never).
    #[must_use]
    pub fn failure_ttl(&self) -> Duration {
        self.failure_ttl
    }

    /// The longest a question that keeps failing is answered SERVFAIL without asking again
    /// (`[upstream] failure_ttl_max`; at least [`Self::failure_ttl`]).
    #[must_use]
    pub fn failure_ttl_max(&self) -> Duration {
        self.failure_ttl_max
    }

    /// The server set for a name: the longest matching forward zone, or the default.
    #[must_use]
    pub fn select(&self, name: &str) -> &UpstreamSet {
        if !self.forwards.is_empty() {
            for parent in self_and_parents(name) {
                if let Some(set) = self.forwards.get(parent) {
                    return set;
                }
            }
        }
        &self.default
    }

    /// Whether any upstream at all is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.default.servers.is_empty() && self.forwards.is_empty()
    }

    /// Resolve `question` (wire bytes of the client's question section) through the servers for
    /// `name`. Returns the upstream's raw answer and which server gave it.
    ///
    /// Rounds over the servers, healthiest first, within the overall budget: each server is sent
    /// the query and waited on for its `timeout` (doubled each round), then the next one is
    /// tried while the earlier exchanges stay open, so an answer from any of them is taken
    /// (the first valid one; the others are dropped, their late answers counted as
    /// `kind="late"`). A server already asked in an earlier round is sent the same query
    /// again (same ID, a retransmission), at most [`MAX_SENDS_PER_SERVER`] times in all. A
    /// server that failed outright for this question (a closed port, REFUSED, FORMERR, TC over
    /// TCP too) is not asked again. A SERVFAIL ends the rounds: the other servers get one turn
    /// each within their own timeouts, and it is the answer if none does better. A server down
    /// ([`DOWN_AFTER`] failed exchanges in a row) is
    /// sent one probe and no retransmission; when every server of a set of several is down,
    /// they are probed at once and the query ends after the longest per-server timeout rather
    /// than the whole budget. A sole server always has the whole budget.
    ///
    /// # Errors
    /// [`UpstreamError`] when no server answers within the budget.
    pub async fn resolve(
        &self,
        name: &str,
        question: &[u8],
        dnssec_ok: bool,
        cd: bool,
    ) -> Result<(Vec<u8>, Arc<Upstream>), UpstreamError> {
        let set = self.select(name);
        if set.servers.is_empty() {
            return Err(UpstreamError::NoUpstream);
        }
        // Both timeouts are validated and clamped; `deadline` never panics even so.
        let deadline = tokio::time::Instant::from_std(crate::clock::deadline(
            Instant::now(),
            self.total_timeout,
        ));
        // Inline for the usual few servers: a miss allocates none of this bookkeeping.
        let mut order: Servers<&Arc<Upstream>> = set.servers.iter().collect();
        // Healthy servers first; stable, so configured order breaks ties.
        order.sort_by_key(|u| u.failures.load(Ordering::Relaxed).min(8));
        let n = order.len();
        let sole = n == 1;
        // Read once: another query's outcome may change a server's health meanwhile.
        let down: Servers<bool> = order.iter().map(|u| !sole && u.is_down()).collect();
        let all_down = down.iter().all(|d| *d);
        // Borrowed by the exchanges: a notification sends that server's query again.
        let resend: Servers<Notify> = (0..n).map(|_| Notify::new()).collect();
        let mut attempts: Servers<Option<Attempt<'_>>> = (0..n).map(|_| None).collect();
        let mut rounds = Rounds {
            order: &order,
            done: smallvec::smallvec![false; n],
            tried: 0,
            local: None,
            servfail: None,
            rejected: 0,
            rejected_rcode: 0,
        };
        let mut round: u32 = 0;
        'rounds: loop {
            let mut sent = false;
            for i in 0..n {
                if rounds.done[i] {
                    continue;
                }
                let up = order[i];
                let sends = attempts[i].as_ref().map_or(0, |a| a.sends);
                if sends >= MAX_SENDS_PER_SERVER || (down[i] && sends >= 1) {
                    continue;
                }
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    break 'rounds;
                }
                match &mut attempts[i] {
                    Some(a) => {
                        // Still open (a finished one is `done`): the same query again.
                        a.sends += 1;
                        resend[i].notify_one();
                    }
                    slot @ None => {
                        rounds.tried += 1;
                        *slot = Some(Attempt {
                            first_sent: now,
                            sends: 1,
                            exchange: Some(Box::pin(exchange(
                                up, question, dnssec_ok, cd, &resend[i],
                            ))),
                        });
                    }
                }
                sent = true;
                // A down server, all being down, is only probed: the next one is asked at once.
                let wait = if down[i] && all_down {
                    Duration::ZERO
                } else {
                    backed_off(up.timeout, round)
                };
                let slot_end = now.checked_add(wait).map_or(deadline, |e| e.min(deadline));
                while let Some((j, result)) = next_outcome(&mut attempts, slot_end).await {
                    if let Some(answer) = rounds.settle(j, result) {
                        return Ok(rounds.answered(j, answer, &attempts));
                    }
                    if j == i {
                        // This server failed outright: the next one now.
                        break;
                    }
                }
            }
            // A server's SERVFAIL ends the rounds: every other server has had its turn, and
            // the open exchanges their own timeout, not the rest of the budget.
            if !sent || rounds.servfail.is_some() {
                break;
            }
            round += 1;
        }
        // Nothing more to send: the open exchanges have until the deadline (all servers down:
        // until the longest per-server timeout) to answer.
        let end = if all_down || rounds.servfail.is_some() {
            attempts
                .iter()
                .zip(&order)
                .filter_map(|(a, up)| a.as_ref().map(|a| a.first_sent + up.timeout))
                .max()
                .map_or(deadline, |e| e.min(deadline))
        } else {
            deadline
        };
        while attempts
            .iter()
            .any(|a| a.as_ref().is_some_and(|a| a.exchange.is_some()))
        {
            let Some((j, result)) = next_outcome(&mut attempts, end).await else {
                break;
            };
            if let Some(answer) = rounds.settle(j, result) {
                return Ok(rounds.answered(j, answer, &attempts));
            }
        }
        rounds.timed_out(&attempts, None);
        if let Some((j, answer)) = rounds.servfail.take() {
            // No server did better: the SERVFAIL is the answer (the failure cache keeps it).
            return Ok((answer, Arc::clone(order[j])));
        }
        Err(match rounds.local {
            Some(cause) => UpstreamError::LocalResources {
                tried: rounds.tried,
                cause,
            },
            None if rounds.rejected > 0 => UpstreamError::Rejected {
                tried: rounds.tried,
                rejected: rounds.rejected,
                rcode: rounds.rejected_rcode,
            },
            None => UpstreamError::Exhausted {
                tried: rounds.tried,
            },
        })
    }
}

/// How long a server that answered EDNS with FORMERR is asked without EDNS first (Unbound keeps
/// such a server's entry in its infrastructure cache for 15 minutes by default).
pub const NO_EDNS_FOR: Duration = Duration::from_secs(15 * 60);

/// Most datagrams one query sends one server: the query and two retransmissions (RFC 9520
/// §3.1 asks for a bound on the retries of a query to a server).
pub const MAX_SENDS_PER_SERVER: u32 = 3;

/// Failed exchanges in a row after which a server is down: in a set of several it is sent one
/// probe per query and no retransmission, and a query whose servers are all down fails after
/// one per-server timeout. Any answer from it makes it healthy again.
pub const DOWN_AFTER: u32 = 3;

/// The wait after a server's send in round `round` (0 for the first): its timeout, doubled each
/// round (RFC 1536's back-off: a server that lost a datagram may be overloaded).
fn backed_off(timeout: Duration, round: u32) -> Duration {
    timeout.saturating_mul(1 << round.min(16))
}

/// One entry per server of a query's set, inline up to four.
type Servers<T> = smallvec::SmallVec<[T; 4]>;

/// One server's exchange within a query.
struct Attempt<'a> {
    /// When it was first sent: its timeout is counted from here.
    first_sent: tokio::time::Instant,
    /// Datagrams sent (the first and the retransmissions).
    sends: u32,
    /// The exchange, while it is open.
    exchange: Option<Exchange<'a>>,
}

/// An open exchange with one server.
type Exchange<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<u8>, ExchangeError>> + Send + 'a>,
>;

/// The bookkeeping of one query's rounds: which servers are out of it, and the outcome.
struct Rounds<'o, 'u> {
    order: &'o [&'u Arc<Upstream>],
    /// Servers out of this query: they failed outright or their exchange ended.
    done: Servers<bool>,
    /// Servers asked.
    tried: usize,
    /// A socket that could not be opened here, if any.
    local: Option<SocketError>,
    /// The first SERVFAIL a server answered, and which: the answer if no other server gives
    /// a better one.
    servfail: Option<(usize, Vec<u8>)>,
    /// Servers that answered with an rcode that is no answer (REFUSED, FORMERR, …), and the
    /// last such rcode: named in the failure's reason and the client's EDE.
    rejected: usize,
    rejected_rcode: u8,
}

impl Rounds<'_, '_> {
    /// Account for server `j`'s finished exchange: its answer when usable, else the failure
    /// counted (and held against its health unless it was this host's).
    fn settle(&mut self, j: usize, result: Result<Vec<u8>, ExchangeError>) -> Option<Vec<u8>> {
        let up = self.order[j];
        self.done[j] = true;
        match result {
            // The server would not, or could not, answer this question: not an answer for
            // the client (whose query was well formed), so the next server is tried, and
            // with none left the client gets SERVFAIL, as Unbound does. A FORMERR or
            // NOTIMP passed on would tell the client its own query was at fault. Any other
            // rcode but NOERROR, NXDOMAIN and SERVFAIL (YXDOMAIN, NOTAUTH, unassigned
            // values) means nothing to a stub, and passed on its choice is a few bits a
            // query from the upstream that no detector prices: a failure too.
            Ok(answer)
                if !matches!(
                    wire::rcode_of(&answer),
                    wire::rcode::NOERROR | wire::rcode::NXDOMAIN | wire::rcode::SERVFAIL
                ) =>
            {
                self.rejected += 1;
                self.rejected_rcode = wire::rcode_of(&answer);
                match wire::rcode_of(&answer) {
                    wire::rcode::REFUSED => up.err_refused.increment(1),
                    wire::rcode::FORMERR => up.err_formerr.increment(1),
                    wire::rcode::NOTIMP => up.err_notimp.increment(1),
                    _ => up.err_rcode.increment(1),
                }
                up.failed();
                None
            }
            // This server could not resolve it (its validator found the data bogus, the
            // authority is unreachable from its network); another may, as Unbound asks the
            // next forwarder. Kept as the answer if none does.
            Ok(answer) if wire::rcode_of(&answer) == wire::rcode::SERVFAIL => {
                up.err_servfail.increment(1);
                up.failed();
                self.servfail.get_or_insert((j, answer));
                None
            }
            Ok(answer) => Some(answer),
            Err(kind) => {
                match kind {
                    ExchangeError::Io => up.err_io.increment(1),
                    ExchangeError::Truncated => up.err_truncated.increment(1),
                    // No socket here: says nothing about the server's health.
                    ExchangeError::LocalResources(cause) => {
                        up.err_local.increment(1);
                        self.local = Some(cause);
                        return None;
                    }
                }
                up.failed();
                None
            }
        }
    }

    /// Server `j` answered: its health and round-trip time, the servers still open that had
    /// their timeout counted as timed out; the answer and its server.
    fn answered(
        &self,
        j: usize,
        answer: Vec<u8>,
        attempts: &[Option<Attempt<'_>>],
    ) -> (Vec<u8>, Arc<Upstream>) {
        let up = self.order[j];
        if let Some(a) = &attempts[j] {
            up.rtt.record(a.first_sent.elapsed().as_secs_f64());
        }
        up.answered();
        self.timed_out(attempts, Some(j));
        (answer, Arc::clone(up))
    }

    /// Count the exchanges still open at the end as timeouts, those that had at least their
    /// server's timeout (others were cut short by another server's answer).
    fn timed_out(&self, attempts: &[Option<Attempt<'_>>], winner: Option<usize>) {
        for (i, a) in attempts.iter().enumerate() {
            let Some(a) = a else { continue };
            let up = self.order[i];
            if Some(i) == winner || a.exchange.is_none() {
                continue;
            }
            if winner.is_none() || a.first_sent.elapsed() >= up.timeout {
                up.err_timeout.increment(1);
                up.failed();
            }
        }
    }
}

/// The next exchange to finish and how, or `None` at `until`.
async fn next_outcome(
    attempts: &mut [Option<Attempt<'_>>],
    until: tokio::time::Instant,
) -> Option<(usize, Result<Vec<u8>, ExchangeError>)> {
    let sleep = tokio::time::sleep_until(until);
    tokio::pin!(sleep);
    std::future::poll_fn(|cx| {
        for (i, a) in attempts.iter_mut().enumerate() {
            let Some(a) = a else { continue };
            let Some(exchange) = &mut a.exchange else {
                continue;
            };
            if let Poll::Ready(result) = exchange.as_mut().poll(cx) {
                a.exchange = None;
                return Poll::Ready(Some((i, result)));
            }
        }
        sleep.as_mut().poll(cx).map(|()| None)
    })
    .await
}

#[derive(Debug, Clone, Copy)]
enum ExchangeError {
    Io,
    /// Truncated over TCP too: nothing whole to serve, and nothing the client could retry.
    Truncated,
    /// A socket could not be opened here for want of descriptors or memory.
    LocalResources(SocketError),
}

impl ExchangeError {
    /// Why opening a socket (binding one, or connecting a TCP one) failed.
    fn opening(e: &std::io::Error) -> Self {
        match SocketError::of(e) {
            k if k.is_local_resources() => Self::LocalResources(k),
            _ => Self::Io,
        }
    }
}

/// One server's exchange for a query, open until it ends: over UDP (retried over TCP when
/// truncated) the query goes out at once and again at each `resend` notification; the caller's
/// rounds decide when, and how long to wait.
async fn exchange(
    up: &Upstream,
    question: &[u8],
    dnssec_ok: bool,
    cd: bool,
    resend: &Notify,
) -> Result<Vec<u8>, ExchangeError> {
    let now_ms = u64::try_from(up.born.elapsed().as_millis()).unwrap_or(u64::MAX);
    let edns = up.no_edns_until.load(Ordering::Relaxed) <= now_ms;
    let answer = exchange_as(up, question, dnssec_ok, cd, resend, edns).await?;
    if !edns || !wire::rejects_edns(&answer) {
        return Ok(answer);
    }
    // A server that does not know EDNS answers FORMERR without an OPT record: asked again
    // without one (RFC 6891 §7), as Unbound does, and asked without it first for a while (as
    // Unbound's infrastructure cache remembers it). Its answer is then at most 512 bytes over
    // UDP, and a longer one comes over TCP.
    up.edns_fallbacks.increment(1);
    let until = now_ms.saturating_add(u64::try_from(NO_EDNS_FOR.as_millis()).unwrap_or(0));
    up.no_edns_until.store(until.max(1), Ordering::Relaxed);
    exchange_as(up, question, dnssec_ok, cd, resend, false).await
}

/// One exchange with `up`, with or without an OPT record: over UDP, then TCP if truncated.
async fn exchange_as(
    up: &Upstream,
    question: &[u8],
    dnssec_ok: bool,
    cd: bool,
    resend: &Notify,
    edns: bool,
) -> Result<Vec<u8>, ExchangeError> {
    if up.transport == Transport::Udp {
        up.requests_udp.increment(1);
        let answer = up
            .pool
            .exchange(question, dnssec_ok, cd, edns, up, resend)
            .await?;
        if !wire::is_truncated(&answer) {
            return Ok(answer);
        }
    }
    let id: u16 = rand_id();
    let query = wire::encode_upstream_query_as(id, question, dnssec_ok, cd, edns);
    up.requests_tcp.increment(1);
    tcp_exchange(up, &query, id, question).await
}

fn rand_id() -> u16 {
    // hickory-proto re-exports a CSPRNG-backed `random`; a predictable ID would help spoofers.
    hickory_proto::op::Message::query().metadata.id
}

fn matches(up: &Upstream, answer: &[u8], id: u16, question: &[u8]) -> bool {
    let ok = answers(answer, id, question);
    if !ok {
        up.strays.mismatch.increment(1);
    }
    ok
}

/// Whether `answer` is a response with this ID to this question.
fn answers(answer: &[u8], id: u16, question: &[u8]) -> bool {
    answer.len() >= wire::HEADER_LEN
        && u16::from_be_bytes([answer[0], answer[1]]) == id
        && answer[2] & 0x80 != 0
        && wire::question_of(answer).is_some_and(|q| wire::same_question(q, question))
}

/// The UDP sockets one upstream's exchanges share (see the module header). Sockets are opened
/// on first use; each has one reader task, which ends when the pool is dropped (a reload that
/// replaced this server).
#[derive(Debug)]
pub struct UdpPool {
    /// The server every socket is connected to.
    addr: SocketAddr,
    /// The sockets, opened lazily.
    slots: Box<[OnceCell<Arc<PoolSocket>>]>,
    /// Round-robin position.
    next: AtomicU32,
    /// Dropped with the pool, which stops the readers.
    stop: watch::Sender<()>,
}

/// One pooled socket and the exchanges waiting on it, by ID.
#[derive(Debug)]
struct PoolSocket {
    sock: UdpSocket,
    waiting: Mutex<HashMap<u16, Waiter>>,
    /// The IDs of the exchanges that ended last, and when: an answer to one is late (a copy of
    /// an answer already taken, after a retransmission; or one that came after its exchange
    /// gave up), not a stranger's.
    ended: Mutex<VecDeque<(u16, Instant)>>,
}

/// How many ended exchanges a pooled socket remembers, and for how long.
const ENDED_KEPT: usize = 256;
const LATE_WITHIN: Duration = Duration::from_secs(10);

impl PoolSocket {
    fn ended(&self, id: u16) {
        let mut ended = self.ended.lock();
        if ended.len() >= ENDED_KEPT {
            ended.pop_front();
        }
        ended.push_back((id, Instant::now()));
    }

    /// Whether an exchange with this ID ended here lately.
    fn ended_lately(&self, id: u16) -> bool {
        self.ended
            .lock()
            .iter()
            .any(|(e, at)| *e == id && at.elapsed() < LATE_WITHIN)
    }
}

/// What a pooled socket's reader counts of the answers no exchange takes: `kind="late"` for
/// a response with the ID of an exchange that ended lately, `kind="mismatch"` for any other
/// (spoofed, or broken). Kept apart so that retransmissions' second answers do not hide a
/// spoofer's guesses.
#[derive(Debug, Clone)]
struct Strays {
    mismatch: Counter,
    late: Counter,
}

/// An exchange waiting for its answer.
#[derive(Debug)]
struct Waiter {
    /// The question sent, which the answer must repeat.
    question: Box<[u8]>,
    /// Where the answer goes.
    tx: oneshot::Sender<Result<Vec<u8>, ExchangeError>>,
}

/// Removes an exchange's entry when it ends, answered or not (a timeout drops the future).
struct Registration<'a> {
    socket: &'a PoolSocket,
    id: u16,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.socket.waiting.lock().remove(&self.id);
        self.socket.ended(self.id);
    }
}

impl UdpPool {
    fn new(addr: SocketAddr, sockets: usize) -> Self {
        Self {
            addr,
            slots: (0..sockets.max(1)).map(|_| OnceCell::new()).collect(),
            next: AtomicU32::new(0),
            stop: watch::channel(()).0,
        }
    }

    /// A socket of the pool, opened (with its reader) on first use. When this turn's slot
    /// cannot be opened (out of file descriptors under an attack on the listeners), a socket
    /// already open in another slot carries the exchange instead of a SERVFAIL.
    async fn socket(&self, strays: &Strays) -> Result<Arc<PoolSocket>, ExchangeError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % self.slots.len();
        match self.open_slot(i, strays).await {
            Ok(socket) => Ok(socket),
            Err(e) => self
                .slots
                .iter()
                .find_map(|slot| slot.get().cloned())
                .ok_or(e),
        }
    }

    /// Slot `i`'s socket, opened (with its reader) if it is not yet.
    async fn open_slot(&self, i: usize, strays: &Strays) -> Result<Arc<PoolSocket>, ExchangeError> {
        self.slots[i]
            .get_or_try_init(|| async {
                let bind: SocketAddr = match self.addr {
                    SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                    SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
                };
                let sock = UdpSocket::bind(bind)
                    .await
                    .map_err(|e| ExchangeError::opening(&e))?;
                sock.connect(self.addr)
                    .await
                    .map_err(|_| ExchangeError::Io)?;
                let socket = Arc::new(PoolSocket {
                    sock,
                    waiting: Mutex::new(HashMap::new()),
                    ended: Mutex::new(VecDeque::with_capacity(ENDED_KEPT)),
                });
                tokio::spawn(read_answers(
                    Arc::clone(&socket),
                    strays.clone(),
                    self.stop.subscribe(),
                ));
                Ok(socket)
            })
            .await
            .cloned()
    }

    /// One exchange: a fresh random ID on a pooled socket, the query, the matching answer; the
    /// same query is sent again (same ID) at each `resend` notification, so a lost datagram
    /// costs one timeout, not the exchange, and an answer to any of the copies is taken.
    async fn exchange(
        &self,
        question: &[u8],
        dnssec_ok: bool,
        cd: bool,
        edns: bool,
        up: &Upstream,
        resend: &Notify,
    ) -> Result<Vec<u8>, ExchangeError> {
        let socket = self.socket(&up.strays).await?;
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut waiting = socket.waiting.lock();
            let Some(id) = (0..32)
                .map(|_| rand_id())
                .find(|id| !waiting.contains_key(id))
            else {
                return Err(ExchangeError::Io);
            };
            waiting.insert(
                id,
                Waiter {
                    question: question.into(),
                    tx,
                },
            );
            id
        };
        let _registered = Registration {
            socket: &socket,
            id,
        };
        let query = wire::encode_upstream_query_as(id, question, dnssec_ok, cd, edns);
        socket
            .sock
            .send(&query)
            .await
            .map_err(|_| ExchangeError::Io)?;
        let mut rx = rx;
        loop {
            tokio::select! {
                answer = &mut rx => return answer.map_err(|_| ExchangeError::Io)?,
                () = resend.notified() => {
                    up.requests_udp.increment(1);
                    up.retransmits.increment(1);
                    socket
                        .sock
                        .send(&query)
                        .await
                        .map_err(|_| ExchangeError::Io)?;
                }
            }
        }
    }
}

/// A pooled socket's reader: each answer goes to the exchange waiting on its ID if it repeats
/// that exchange's question; anything else is dropped and counted.
async fn read_answers(socket: Arc<PoolSocket>, strays: Strays, mut stop: watch::Receiver<()>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let received = tokio::select! {
            r = socket.sock.recv(&mut buf) => r,
            _ = stop.changed() => return,
        };
        match received {
            Ok(n) => {
                let answer = &buf[..n];
                let id = if n >= 2 {
                    u16::from_be_bytes([answer[0], answer[1]])
                } else {
                    0
                };
                let mut waiting = socket.waiting.lock();
                let matched = waiting
                    .get(&id)
                    .is_some_and(|w| answers(answer, id, &w.question));
                if matched && let Some(w) = waiting.remove(&id) {
                    drop(waiting);
                    let _ = w.tx.send(Ok(answer.to_vec()));
                } else {
                    drop(waiting);
                    // Late, spoofed or broken: never handed to anyone.
                    let response = n >= wire::HEADER_LEN && answer[2] & 0x80 != 0;
                    if response && socket.ended_lately(id) {
                        strays.late.increment(1);
                    } else {
                        strays.mismatch.increment(1);
                    }
                }
            }
            // The server's port is closed (ICMP port unreachable on the connected socket):
            // everyone waiting here fails now rather than at their timeout.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                let failed: Vec<Waiter> = socket.waiting.lock().drain().map(|(_, w)| w).collect();
                for w in failed {
                    let _ = w.tx.send(Err(ExchangeError::Io));
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn tcp_exchange(
    up: &Upstream,
    query: &[u8],
    id: u16,
    question: &[u8],
) -> Result<Vec<u8>, ExchangeError> {
    let mut stream = TcpStream::connect(up.addr)
        .await
        .map_err(|e| ExchangeError::opening(&e))?;
    let len = u16::try_from(query.len()).map_err(|_| ExchangeError::Io)?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream
        .write_all(&framed)
        .await
        .map_err(|_| ExchangeError::Io)?;
    let n = stream.read_u16().await.map_err(|_| ExchangeError::Io)?;
    let mut buf = vec![0u8; usize::from(n)];
    stream
        .read_exact(&mut buf)
        .await
        .map_err(|_| ExchangeError::Io)?;
    if matches(up, &buf, id, question) {
        if wire::is_truncated(&buf) {
            return Err(ExchangeError::Truncated);
        }
        Ok(buf)
    } else {
        Err(ExchangeError::Io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_that_cannot_be_opened_for_want_of_descriptors_is_named_so() {
        let opening = |errno| ExchangeError::opening(&std::io::Error::from_raw_os_error(errno));
        assert!(matches!(
            opening(libc::EMFILE),
            ExchangeError::LocalResources(SocketError::Emfile)
        ));
        assert!(matches!(
            opening(libc::ENFILE),
            ExchangeError::LocalResources(SocketError::Enfile)
        ));
        assert!(matches!(
            opening(libc::ENOBUFS),
            ExchangeError::LocalResources(SocketError::Enomem)
        ));
        assert!(matches!(opening(libc::ECONNREFUSED), ExchangeError::Io));
        assert_eq!(
            UpstreamError::LocalResources {
                tried: 1,
                cause: SocketError::Emfile
            }
            .to_string(),
            "no upstream answered (1 tried): a socket could not be opened here (EMFILE, out of file descriptors)"
        );
    }

    fn cfg(text: &str) -> UpstreamConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn addresses_default_to_port_53() {
        assert_eq!(
            parse_server_address("127.0.0.1").unwrap(),
            "127.0.0.1:53".parse().unwrap()
        );
        assert_eq!(
            parse_server_address("[::1]:5353").unwrap(),
            "[::1]:5353".parse().unwrap()
        );
        assert!(parse_server_address("localhost").is_err());
        let zero = parse_server_address("127.0.0.1:0").unwrap_err();
        assert!(zero.contains("port 0"), "{zero}");
    }

    /// RFC 9520 §3.2: failures are cached for at least 1 s, or not at all.
    #[test]
    fn a_failure_ttl_under_a_second_is_refused_but_0s_and_1s_are_taken() {
        for (ttl, ok) in [
            ("0s", true),
            ("1s", true),
            ("5m", true),
            ("500ms", false),
            ("6m", false),
        ] {
            let c = cfg(&format!(
                "servers = [{{ address = \"127.0.0.1\" }}]\nfailure_ttl = \"{ttl}\""
            ));
            let mut p = ConfigProblems::default();
            let _ = Upstreams::from_config(&c, "upstream", &mut p);
            assert_eq!(p.is_empty(), ok, "{ttl}: {p}");
            if !ok {
                assert!(p.to_string().contains("upstream.failure_ttl"), "{p}");
            }
        }
    }

    #[test]
    fn failure_ttl_max_defaults_to_a_minute_and_is_at_least_failure_ttl() {
        let built = |extra: &str| {
            let c = cfg(&format!(
                "servers = [{{ address = \"127.0.0.1\" }}]\n{extra}"
            ));
            let mut p = ConfigProblems::default();
            let u = Upstreams::from_config(&c, "upstream", &mut p);
            (u.failure_ttl_max(), p)
        };
        let (max, p) = built("");
        assert!(p.is_empty(), "{p}");
        assert_eq!(max, Duration::from_secs(60));
        let (max, p) = built("failure_ttl = \"5m\"");
        assert!(p.is_empty(), "{p}");
        assert_eq!(max, Duration::from_secs(300), "never below failure_ttl");
        let (max, p) = built("failure_ttl_max = \"5s\"");
        assert!(p.is_empty(), "{p}");
        assert_eq!(
            max,
            Duration::from_secs(5),
            "equal to failure_ttl: no back-off"
        );
        for bad in ["failure_ttl_max = \"2s\"", "failure_ttl_max = \"6m\""] {
            let (_, p) = built(bad);
            assert_eq!(p.len(), 1, "{bad}: {p}");
            assert!(p.to_string().contains("upstream.failure_ttl_max"), "{p}");
        }
    }

    #[test]
    fn forward_zones_pick_the_longest_match() {
        let c = cfg(r#"
            servers = [{ address = "127.0.0.1" }]
            [[forward]]
            zone = "corp.example"
            servers = [{ address = "127.0.0.53" }]
            [[forward]]
            zone = "lab.corp.example."
            servers = [{ address = "127.0.0.54", protocol = "tcp" }]
        "#);
        let mut p = ConfigProblems::default();
        let u = Upstreams::from_config(&c, "upstream", &mut p);
        assert!(p.is_empty(), "{p}");
        let addr = |n: &str| u.select(n).servers[0].addr.ip().to_string();
        assert_eq!(addr("a.corp.example"), "127.0.0.53");
        assert_eq!(addr("corp.example"), "127.0.0.53");
        assert_eq!(addr("x.lab.corp.example"), "127.0.0.54");
        assert_eq!(addr("example.com"), "127.0.0.1");
        assert_eq!(addr("notcorp.example"), "127.0.0.1");
    }

    #[test]
    fn bad_upstream_config_reports_every_problem() {
        let c = cfg(r#"
            servers = [{ address = "nope" }, { address = "127.0.0.1", timeout = "0s" }]
            timeout = "0s"
            [[forward]]
            zone = "bad..zone"
            servers = []
        "#);
        let mut p = ConfigProblems::default();
        let _ = Upstreams::from_config(&c, "upstream", &mut p);
        assert_eq!(p.len(), 5, "{p}");
    }

    #[tokio::test]
    async fn silent_upstream_fails_within_the_budget() {
        // A bound socket that never answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let c = cfg(&format!(
            "timeout = \"300ms\"\nservers = [{{ address = \"{addr}\", timeout = \"200ms\" }}, {{ address = \"{addr}\", timeout = \"200ms\" }}]"
        ));
        let mut p = ConfigProblems::default();
        let u = Upstreams::from_config(&c, "upstream", &mut p);
        let q = crate::wire::tests::query_bytes("example.com", 1, None);
        let question = crate::wire::parse_query(&q).unwrap().question.to_vec();
        let started = Instant::now();
        let r = u.resolve("example.com", &question, false, false).await;
        assert!(
            matches!(r, Err(UpstreamError::Exhausted { tried: 2 })),
            "{r:?}"
        );
        assert!(started.elapsed() < Duration::from_millis(600));
    }

    #[tokio::test]
    async fn a_timeout_past_the_clock_is_reported_and_never_panics_a_query() {
        // Found by a bad-input probe: this passed `check`, then every forwarded query panicked
        // with "overflow when adding duration to instant".
        let (addr, _) = echo_upstream().await;
        let huge = "18446744073709551615s";
        let c = cfg(&format!(
            "timeout = \"{huge}\"\nservers = [{{ address = \"{addr}\", timeout = \"{huge}\" }}]"
        ));
        let mut p = ConfigProblems::default();
        let u = Upstreams::from_config(&c, "upstream", &mut p);
        let locations: Vec<_> = p.problems.iter().map(|x| x.location.as_str()).collect();
        assert_eq!(
            locations,
            ["upstream.servers[0].timeout", "upstream.timeout"]
        );
        // Were it used anyway, the query is answered.
        let q = crate::wire::tests::query_bytes("example.com", 1, None);
        let question = crate::wire::parse_query(&q).unwrap().question.to_vec();
        let r = u.resolve("example.com", &question, false, false).await;
        assert!(r.is_ok(), "{r:?}");
    }

    /// An upstream that answers every query by echoing it with QR set, and records the source
    /// port of each query; a wrong-ID copy is sent first, as a spoofer would.
    async fn echo_upstream() -> (SocketAddr, Arc<Mutex<Vec<u16>>>) {
        echo_upstream_on("127.0.0.1").await
    }

    /// As [`echo_upstream`], on an ephemeral port of `ip`.
    async fn echo_upstream_on(ip: &str) -> (SocketAddr, Arc<Mutex<Vec<u16>>>) {
        let sock = UdpSocket::bind((ip, 0)).await.unwrap();
        let addr = sock.local_addr().unwrap();
        let ports = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&ports);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, src)) = sock.recv_from(&mut buf).await {
                seen.lock().push(src.port());
                let mut answer = buf[..n].to_vec();
                answer[2] |= 0x80;
                let mut spoof = answer.clone();
                spoof[0] ^= 0xFF;
                let _ = sock.send_to(&spoof, src).await;
                let _ = sock.send_to(&answer, src).await;
            }
        });
        (addr, ports)
    }

    /// Servers all down are probed together, and one that answers is healthy again: it is
    /// heard at once, not after the others' timeouts, and no longer counted down.
    #[tokio::test]
    async fn a_down_server_that_answers_its_probe_is_healthy_again() {
        let silent = std::net::UdpSocket::bind("127.0.0.212:0").unwrap();
        let silent = silent.local_addr().unwrap();
        let (echo, _) = echo_upstream_on("127.0.0.212").await;
        let c = cfg(&format!(
            "timeout = \"3s\"\nservers = [{{ address = \"{silent}\", timeout = \"1s\" }}, {{ address = \"{echo}\", timeout = \"1s\" }}]"
        ));
        let mut p = ConfigProblems::default();
        let u = Upstreams::from_config(&c, "upstream", &mut p);
        assert!(p.is_empty(), "{p}");
        for s in &u.default.servers {
            s.failures.store(DOWN_AFTER, Ordering::Relaxed);
        }
        let q = crate::wire::tests::query_bytes("example.com", 1, None);
        let question = crate::wire::parse_query(&q).unwrap().question.to_vec();
        let started = Instant::now();
        let (_, up) = u
            .resolve("example.com", &question, false, false)
            .await
            .unwrap();
        assert_eq!(up.addr, echo);
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "not after the silent server's timeout: {:?}",
            started.elapsed()
        );
        assert!(!up.is_down());
        assert_eq!(up.failures.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_wait_doubles_each_round_and_never_overflows() {
        let t = Duration::from_millis(300);
        assert_eq!(backed_off(t, 0), t);
        assert_eq!(backed_off(t, 1), 2 * t);
        assert_eq!(backed_off(t, 2), 4 * t);
        assert_eq!(
            backed_off(Duration::from_secs(300), 40),
            Duration::from_secs(300 << 16)
        );
    }

    #[tokio::test]
    async fn udp_exchanges_reuse_a_few_pooled_sockets_and_drop_spoofed_answers() {
        let (addr, ports) = echo_upstream().await;
        let c = cfg(&format!(
            "udp_sockets_per_server = 4\nservers = [{{ address = \"{addr}\" }}]"
        ));
        let mut p = ConfigProblems::default();
        let u = Upstreams::from_config(&c, "upstream", &mut p);
        assert!(p.is_empty(), "{p}");
        let mut tasks = Vec::new();
        let u = Arc::new(u);
        for i in 0..60 {
            let u = Arc::clone(&u);
            tasks.push(tokio::spawn(async move {
                let name = format!("n{i}.example");
                let q = crate::wire::tests::query_bytes(&name, 1, None);
                let question = crate::wire::parse_query(&q).unwrap().question.to_vec();
                let (answer, _) = u.resolve(&name, &question, false, false).await.unwrap();
                assert!(
                    crate::wire::question_of(&answer)
                        .is_some_and(|a| crate::wire::same_question(a, &question))
                );
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut distinct = ports.lock().clone();
        assert_eq!(distinct.len(), 60, "every exchange reached the server");
        distinct.sort_unstable();
        distinct.dedup();
        assert!(
            distinct.len() <= 4,
            "60 exchanges share the 4 pooled sockets, not a socket each: {} ports",
            distinct.len()
        );
    }
}
