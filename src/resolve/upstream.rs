//! Forwarding allowed queries to upstream resolvers.
//!
//! dnsward owns this client rather than using hickory-resolver: a forwarder must hand back the
//! upstream's message as it is (flags, authority section for negative caching, CNAME chains)
//! and must never cache on its own (the answer cache is ours), while hickory-resolver puts its
//! own entry-counted cache and CNAME chasing in front and turns negative answers into errors. Each exchange uses a fresh UDP socket with a random source port and checks
//! the answer's ID and question, so off-path spoofing has to guess both. Truncated answers are
//! retried over TCP. Servers are tried in order of health (fewest recent failures first) until
//! one answers or the overall budget runs out, and the caller turns that into SERVFAIL.
//!
//! Conditional forward zones (`corp.example` → 127.0.0.53) send names at or below the zone to
//! their own servers; the longest matching zone wins.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use metrics::{Counter, Histogram};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::config_error::ConfigProblems;
use crate::metrics as m;
use crate::names::{normalise, self_and_parents, validate_name};
use crate::resolve::cache::StaleAnswers;
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
    /// Time to wait for this server before trying the next (default 1s).
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
    /// Overall budget for one query across all servers (default 3s); SERVFAIL after it.
    #[serde(default = "default_total_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Conditional forward zones.
    #[serde(default)]
    pub forward: Vec<ForwardZoneConfig>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            timeout: default_total_timeout(),
            forward: Vec::new(),
        }
    }
}

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
    requests_udp: Counter,
    requests_tcp: Counter,
    err_timeout: Counter,
    err_io: Counter,
    err_mismatch: Counter,
    err_refused: Counter,
    rtt: Histogram,
}

impl Upstream {
    fn new(addr: SocketAddr, transport: Transport, timeout: Duration) -> Self {
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
            requests_udp: metrics::counter!(m::UPSTREAM_REQUESTS_TOTAL, "upstream" => l.clone(), "transport" => "udp"),
            requests_tcp: metrics::counter!(m::UPSTREAM_REQUESTS_TOTAL, "upstream" => l.clone(), "transport" => "tcp"),
            err_timeout: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "timeout"),
            err_io: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "io"),
            err_mismatch: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "mismatch"),
            err_refused: metrics::counter!(m::UPSTREAM_ERRORS_TOTAL, "upstream" => l.clone(), "kind" => "refused"),
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

fn build_set(list: &[ServerConfig], at: &str, problems: &mut ConfigProblems) -> UpstreamSet {
    let mut servers = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let loc = format!("{at}[{i}]");
        match parse_server_address(&s.address) {
            Ok(addr) => {
                if s.timeout.is_zero() {
                    problems.push(format!("{loc}.timeout"), "timeout must be above zero");
                }
                servers.push(Arc::new(Upstream::new(addr, s.protocol, s.timeout)));
            }
            Err(e) => problems.push(format!("{loc}.address"), e),
        }
    }
    UpstreamSet { servers }
}

impl Upstreams {
    /// Build from config, pushing every problem.
    pub fn from_config(cfg: &UpstreamConfig, at: &str, problems: &mut ConfigProblems) -> Self {
        let default = build_set(&cfg.servers, &format!("{at}.servers"), problems);
        if cfg.timeout.is_zero() {
            problems.push(format!("{at}.timeout"), "timeout must be above zero");
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
            let set = build_set(&f.servers, &format!("{loc}.servers"), problems);
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
            total_timeout: cfg.timeout,
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
        let deadline = Instant::now() + self.total_timeout;
        let mut order: Vec<&Arc<Upstream>> = set.servers.iter().collect();
        // Healthy servers first; stable, so configured order breaks ties.
        order.sort_by_key(|u| u.failures.load(Ordering::Relaxed).min(8));
        let mut tried = 0;
        for up in order {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            tried += 1;
            let budget = up.timeout.min(deadline - now);
            let started = Instant::now();
            match exchange(up, question, dnssec_ok, cd, budget).await {
                Ok(answer) if wire::rcode_of(&answer) == wire::rcode::REFUSED => {
                    up.err_refused.increment(1);
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
                    }
                    up.failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Err(UpstreamError::Exhausted { tried })
    }
}

#[derive(Debug, Clone, Copy)]
enum ExchangeError {
    Timeout,
    Io,
}

async fn exchange(
    up: &Upstream,
    question: &[u8],
    dnssec_ok: bool,
    cd: bool,
    budget: Duration,
) -> Result<Vec<u8>, ExchangeError> {
    let deadline = tokio::time::Instant::now() + budget;
    let id: u16 = rand_id();
    let query = wire::encode_upstream_query(id, question, dnssec_ok, cd);
    if up.transport == Transport::Udp {
        up.requests_udp.increment(1);
        let answer = tokio::time::timeout_at(deadline, udp_exchange(up, &query, id, question))
            .await
            .map_err(|_| ExchangeError::Timeout)??;
        if !wire::is_truncated(&answer) {
            return Ok(answer);
        }
    }
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
    let ok = answer.len() >= wire::HEADER_LEN
        && u16::from_be_bytes([answer[0], answer[1]]) == id
        && answer[2] & 0x80 != 0
        && wire::question_of(answer).is_some_and(|q| wire::same_question(q, question));
    if !ok {
        up.err_mismatch.increment(1);
    }
    ok
}

async fn udp_exchange(
    up: &Upstream,
    query: &[u8],
    id: u16,
    question: &[u8],
) -> Result<Vec<u8>, ExchangeError> {
    let bind: SocketAddr = match up.addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(bind).await.map_err(|_| ExchangeError::Io)?;
    sock.connect(up.addr).await.map_err(|_| ExchangeError::Io)?;
    sock.send(query).await.map_err(|_| ExchangeError::Io)?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = sock.recv(&mut buf).await.map_err(|_| ExchangeError::Io)?;
        // A mismatched answer may be spoofed or late: ignore it and keep waiting.
        if matches(up, &buf[..n], id, question) {
            buf.truncate(n);
            return Ok(buf);
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
        .map_err(|_| ExchangeError::Io)?;
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
        Ok(buf)
    } else {
        Err(ExchangeError::Io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
