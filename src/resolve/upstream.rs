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
//! Anything else (a wrong ID, a wrong question, a late answer) is dropped and counted as
//! `kind="mismatch"`, so an off-path spoofer has to guess a 16-bit random ID, the exact
//! question and one of the pool's ports. The trade-off against a fresh socket per exchange:
//! those ports stay fixed for the pool's life (until a reload rebuilds the upstreams) instead
//! of changing per query, which gives a spoofer who learns one port fewer bits to guess; in
//! exchange a miss costs no socket, no file descriptor and no 64 KiB buffer of its own, so a
//! flood of misses cannot exhaust descriptors. Forwarding to a resolver on the same host or
//! network, as dnsward is meant to, keeps off-path spoofing hard either way. Servers are tried
//! in order of health (fewest recent failures first) until
//! one answers or the overall budget runs out, and the caller turns that into SERVFAIL; each
//! server but the last has its own timeout, the last one the rest of the budget, its UDP query
//! sent again with the same ID every timeout (a lost datagram, a slow server). A
//! socket that cannot be opened here (out of file descriptors or kernel memory, see
//! [`crate::resources`]) is counted as `kind="local_resources"`, not held against the server's
//! health, and named in the SERVFAIL's reason ([`UpstreamError::LocalResources`]).
//!
//! Conditional forward zones (`corp.example` → 127.0.0.53) send names at or below the zone to
//! their own servers; the longest matching zone wins.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use metrics::{Counter, Histogram};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{OnceCell, oneshot, watch};

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
    /// Time to wait for this server before trying the next (default 1s, 1ms to 5m).
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
    /// Overall budget for one query across all servers (default 3s, 1ms to 5m); SERVFAIL after
    /// it.
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
        }
    }
}

fn default_failure_ttl() -> Duration {
    Duration::from_secs(5)
}

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
    err_mismatch: Counter,
    err_refused: Counter,
    err_formerr: Counter,
    err_notimp: Counter,
    err_rcode: Counter,
    err_truncated: Counter,
    err_local: Counter,
    rtt: Histogram,
}

impl Upstream {
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
            pool: UdpPool::new(addr, sockets),
            requests_udp: metrics::counter!(m::UPSTREAM_REQUESTS_TOTAL, "upstream" => l.clone(), "transport" => "udp"),
            requests_tcp: metrics::counter!(m::UPSTREAM_REQUESTS_TOTAL, "upstream" => l.clone(), "transport" => "tcp"),
            retransmits: metrics::counter!(m::UPSTREAM_RETRANSMITS_TOTAL, "upstream" => l.clone()),
            err_timeout: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "timeout"),
            err_io: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "io"),
            err_mismatch: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "mismatch"),
            err_refused: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "refused"),
            err_formerr: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "formerr"),
            err_notimp: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "notimp"),
            err_rcode: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "rcode"),
            err_truncated: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "truncated"),
            err_local: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "local_resources"),
            rtt: metrics::histogram!(m::UPSTREAM_DURATION_SECONDS, "upstream" => l),
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
            failure_ttl: FAILURE_TTL.clamp(cfg.failure_ttl),
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
        let deadline = crate::clock::deadline(Instant::now(), self.total_timeout);
        let mut order: Vec<&Arc<Upstream>> = set.servers.iter().collect();
        // Healthy servers first; stable, so configured order breaks ties.
        order.sort_by_key(|u| u.failures.load(Ordering::Relaxed).min(8));
        let mut tried = 0;
        let mut local = None;
        let last = order.len() - 1;
        for (i, up) in order.into_iter().enumerate() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            tried += 1;
            // Each server but the last has its own timeout; the last one has the rest of the
            // budget, its query sent again (same ID) every `timeout` meanwhile: a lost
            // datagram is retransmitted and a slow server's late answer still counts, where a
            // sole upstream used to cost a SERVFAIL after one timeout with budget to spare.
            let budget = if i == last {
                deadline - now
            } else {
                up.timeout.min(deadline - now)
            };
            let started = Instant::now();
            match exchange(up, question, dnssec_ok, cd, budget).await {
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
                    match wire::rcode_of(&answer) {
                        wire::rcode::REFUSED => up.err_refused.increment(1),
                        wire::rcode::FORMERR => up.err_formerr.increment(1),
                        wire::rcode::NOTIMP => up.err_notimp.increment(1),
                        _ => up.err_rcode.increment(1),
                    }
                    up.failures.fetch_add(1, Ordering::Relaxed);
                }
                Ok(answer) => {
                    up.rtt.record(started.elapsed().as_secs_f64());
                    up.failures.store(0, Ordering::Relaxed);
                    return Ok((answer, Arc::clone(up)));
                }
                Err(kind) => {
                    match kind {
                        ExchangeError::Timeout => up.err_timeout.increment(1),
                        ExchangeError::Io => up.err_io.increment(1),
                        ExchangeError::Truncated => up.err_truncated.increment(1),
                        // No socket here: says nothing about the server's health.
                        ExchangeError::LocalResources(cause) => {
                            up.err_local.increment(1);
                            local = Some(cause);
                            continue;
                        }
                    }
                    up.failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Err(match local {
            Some(cause) => UpstreamError::LocalResources { tried, cause },
            None => UpstreamError::Exhausted { tried },
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum ExchangeError {
    Timeout,
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

async fn exchange(
    up: &Upstream,
    question: &[u8],
    dnssec_ok: bool,
    cd: bool,
    budget: Duration,
) -> Result<Vec<u8>, ExchangeError> {
    let now = tokio::time::Instant::now().into_std();
    let deadline = tokio::time::Instant::from_std(crate::clock::deadline(now, budget));
    if up.transport == Transport::Udp {
        up.requests_udp.increment(1);
        let answer =
            tokio::time::timeout_at(deadline, up.pool.exchange(question, dnssec_ok, cd, up))
                .await
                .map_err(|_| ExchangeError::Timeout)??;
        if !wire::is_truncated(&answer) {
            return Ok(answer);
        }
    }
    let id: u16 = rand_id();
    let query = wire::encode_upstream_query(id, question, dnssec_ok, cd);
    up.requests_tcp.increment(1);
    tokio::time::timeout_at(deadline, tcp_exchange(up, &query, id, question))
        .await
        .map_err(|_| ExchangeError::Timeout)?
}

fn rand_id() -> u16 {
    // hickory-proto re-exports a CSPRNG-backed `random`; a predictable ID would help spoofers.
    hickory_proto::op::Message::query().metadata.id
}

fn matches(up: &Upstream, answer: &[u8], id: u16, question: &[u8]) -> bool {
    let ok = answers(answer, id, question);
    if !ok {
        up.err_mismatch.increment(1);
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
    async fn socket(&self, mismatch: &Counter) -> Result<Arc<PoolSocket>, ExchangeError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % self.slots.len();
        match self.open_slot(i, mismatch).await {
            Ok(socket) => Ok(socket),
            Err(e) => self
                .slots
                .iter()
                .find_map(|slot| slot.get().cloned())
                .ok_or(e),
        }
    }

    /// Slot `i`'s socket, opened (with its reader) if it is not yet.
    async fn open_slot(
        &self,
        i: usize,
        mismatch: &Counter,
    ) -> Result<Arc<PoolSocket>, ExchangeError> {
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
                });
                tokio::spawn(read_answers(
                    Arc::clone(&socket),
                    mismatch.clone(),
                    self.stop.subscribe(),
                ));
                Ok(socket)
            })
            .await
            .cloned()
    }

    /// One exchange: a fresh random ID on a pooled socket, the query, the matching answer; the
    /// same query is sent again every `up.timeout` until an answer comes (the caller's deadline
    /// ends it), so a lost datagram costs one timeout, not the exchange.
    async fn exchange(
        &self,
        question: &[u8],
        dnssec_ok: bool,
        cd: bool,
        up: &Upstream,
    ) -> Result<Vec<u8>, ExchangeError> {
        let socket = self.socket(&up.err_mismatch).await?;
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
        let query = wire::encode_upstream_query(id, question, dnssec_ok, cd);
        socket
            .sock
            .send(&query)
            .await
            .map_err(|_| ExchangeError::Io)?;
        let mut rx = rx;
        // Never a busy loop: the interval is validated (at least 1 ms).
        let every = up.timeout.max(Duration::from_millis(1));
        loop {
            tokio::select! {
                answer = &mut rx => return answer.map_err(|_| ExchangeError::Io)?,
                () = tokio::time::sleep(every) => {
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
async fn read_answers(socket: Arc<PoolSocket>, mismatch: Counter, mut stop: watch::Receiver<()>) {
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
                    // Spoofed, late or broken: never handed to anyone.
                    mismatch.increment(1);
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
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
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
