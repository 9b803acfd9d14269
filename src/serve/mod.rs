//! The listeners. UDP and TCP on every configured address, IPv4 and IPv6.
//!
//! UDP: each address gets one socket per worker, bound with `SO_REUSEPORT`; a classic BPF
//! program on the group ([`steer`], Linux) sends each client's queries to one of them by source
//! address. Each socket has its own receive loop (`udp.rs`: by default an OS thread blocked in
//! `recvmmsg`; datagrams read and answers sent in batches, one system call each way per
//! batch). Queries the synchronous stages can answer (refusals, blocks, cache hits) are
//! answered inline, with no task spawned; only cache misses go to the runtime.
//!
//! TCP ([`tcp`]): clients are identified before they may take a slot; a per-client and a global
//! connection cap (connections over them are closed at once and counted by reason), an idle
//! timeout, a write timeout, and a bound on the queries in flight per connection, whose answers
//! go out as they finish.
//!
//! DoT and DoH: [`encrypted`] (own accept loop over tokio-rustls, so the verified client
//! certificate names the agent).
//!
//! Shutdown: the listeners stop on a watch channel; in-flight TCP connections and pending
//! resolutions are tracked and awaited (bounded by a grace period) so answers already being
//! worked on still go out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::config_error::{ConfigProblems, DurationRange};
use crate::serve::pipeline::Pipeline;
use crate::serve::pipeline::UnknownClients;

pub mod cookie;
mod doh;
mod dot;
pub mod encrypted;
pub mod pipeline;
pub(crate) mod slots;
#[cfg(target_os = "linux")]
mod steer;
mod tcp;
mod udp;

pub use encrypted::RunningTls;
pub use slots::UNKNOWN_SLOTS;

fn default_true() -> bool {
    true
}

/// How each UDP socket is served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UdpLoop {
    /// One OS thread per socket, blocked in the receive call (Linux with glibc; elsewhere the
    /// runtime loop).
    #[default]
    Thread,
    /// A task per socket on the async runtime.
    Runtime,
}

/// `[server]`: listeners and limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Addresses to serve DNS on, UDP and TCP on each (default `127.0.0.1:53`).
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// UDP sockets per address (0 = one per CPU; at most [`MAX_THREADS`]).
    #[serde(default)]
    pub udp_workers: usize,
    /// How each UDP socket is served: `"thread"` (default on Linux): an OS thread of its own,
    /// blocked in `recvmmsg` itself; `"runtime"`: a task on the async runtime, woken through
    /// its epoll (the only loop elsewhere). See `bench/README.md` for the numbers.
    #[serde(default)]
    pub udp_loop: UdpLoop,
    /// Steer each client's queries (by source address, IPv6 by /64) to one UDP socket of an
    /// address (default true, Linux): its per-client state stays on one core and a flooding
    /// client occupies one listener, not all. False keeps the kernel's spread by address and
    /// port (one very busy client can then use every listener).
    #[serde(default = "default_true")]
    pub udp_client_affinity: bool,
    /// Runtime worker threads (0 = one per CPU; at most [`MAX_THREADS`]).
    #[serde(default)]
    pub threads: usize,
    /// Most simultaneous TCP connections (default 1024); more are closed at once.
    #[serde(default = "default_tcp_max")]
    pub tcp_max_connections: usize,
    /// Idle time after which a TCP connection is closed (default 10s, 1ms to 1h).
    #[serde(default = "default_tcp_idle", with = "humantime_serde")]
    pub tcp_idle_timeout: Duration,
    /// Most simultaneous TCP connections from one client address (default 128).
    #[serde(default = "default_tcp_per_client")]
    pub tcp_max_connections_per_client: usize,
    /// Most queries in flight on one TCP connection (default 16); past it the connection is
    /// not read until an answer has been written.
    #[serde(default = "default_tcp_pipelined")]
    pub tcp_max_pipelined: usize,
    /// Longest time one TCP answer may take to be written (default 5s); a client that does
    /// not read its answers is disconnected after it (1ms to 5m).
    #[serde(default = "default_tcp_write", with = "humantime_serde")]
    pub tcp_write_timeout: Duration,
    /// Most cache misses in flight at once (default 4096); past it a miss is answered SERVFAIL
    /// at once and counted in `dnsward_overload_total{reason="inflight_misses"}`.
    #[serde(default = "default_inflight")]
    pub max_inflight_misses: usize,
    /// Most cache misses in flight from one client address (default 1024); past it that
    /// client's misses get SERVFAIL (`reason="inflight_misses_per_client"`).
    #[serde(default = "default_inflight_per_client")]
    pub max_inflight_misses_per_client: usize,
    /// What clients in no group get: `refuse` (default) or `drop`.
    #[serde(default)]
    pub unknown_clients: UnknownClients,
    /// How long shutdown waits for in-flight queries (default 2s, at most 5m).
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// The server identifier answered to a client's NSID request (RFC 5001), for telling the
    /// instances behind one address apart; unset (the default), none is sent: it names the
    /// instance to every client that asks. Printable ASCII, at most [`MAX_NSID`] bytes.
    #[serde(default)]
    pub nsid: Option<String>,
}

/// Longest `server.nsid`, in bytes.
pub const MAX_NSID: usize = 512;

/// Most runtime threads (`server.threads`) and UDP sockets per address (`udp_workers`, each
/// with its own thread by default): far above any CPU count dnsward runs on, far below what
/// Accepted connection counts (`tcp_max_connections`, the per-client caps, `[tls]` and
/// `[admin]` `max_connections`): at least 1, and no more than a process can hold descriptors
/// for (Linux's `nr_open` default is 2^20); beyond the limit of the counting semaphore the
/// listener panicked at start.
pub const CONNECTIONS: (usize, usize) = (1, 1 << 20);
/// Accepted `max_inflight_misses` and its per-client share.
pub const IN_FLIGHT: (usize, usize) = (1, 1 << 20);
/// Accepted queries in flight on one stream connection (`tcp_max_pipelined`, `[tls]
/// max_in_flight`): a DNS message ID has 16 bits, so more could never be told apart.
pub const PIPELINED: (usize, usize) = (1, 65_535);

/// would exhaust memory or the process's thread limit at start (a typo such as `100000`).
pub const MAX_THREADS: usize = 1024;

/// Accepted `tcp_idle_timeout`: RFC 7766 asks for seconds; an hour is far past any client's use.
pub const TCP_IDLE_TIMEOUT: DurationRange =
    DurationRange::new(Duration::from_millis(1), Duration::from_secs(3600));
/// Accepted `tcp_write_timeout`: a client that has not read an answer in minutes never will.
pub const TCP_WRITE_TIMEOUT: DurationRange =
    DurationRange::new(Duration::from_millis(1), Duration::from_secs(300));
/// Accepted `shutdown_grace` (0: do not wait): longer than a service manager's stop timeout
/// would only get the process killed.
pub const SHUTDOWN_GRACE: DurationRange = DurationRange::up_to(Duration::from_secs(300));

fn default_listen() -> Vec<String> {
    vec!["127.0.0.1:53".into()]
}
fn default_tcp_max() -> usize {
    1024
}
fn default_tcp_idle() -> Duration {
    Duration::from_secs(10)
}
fn default_tcp_per_client() -> usize {
    slots::DEFAULT_CONNECTIONS_PER_CLIENT
}
fn default_tcp_pipelined() -> usize {
    16
}
fn default_tcp_write() -> Duration {
    Duration::from_secs(5)
}
fn default_inflight() -> usize {
    4096
}
fn default_inflight_per_client() -> usize {
    1024
}
fn default_grace() -> Duration {
    Duration::from_secs(2)
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            udp_workers: 0,
            udp_loop: UdpLoop::default(),
            udp_client_affinity: true,
            threads: 0,
            tcp_max_connections: default_tcp_max(),
            tcp_idle_timeout: default_tcp_idle(),
            tcp_max_connections_per_client: default_tcp_per_client(),
            tcp_max_pipelined: default_tcp_pipelined(),
            tcp_write_timeout: default_tcp_write(),
            max_inflight_misses: default_inflight(),
            max_inflight_misses_per_client: default_inflight_per_client(),
            unknown_clients: UnknownClients::default(),
            shutdown_grace: default_grace(),
            nsid: None,
        }
    }
}

impl ServerConfig {
    /// The addresses this server answers on (wildcard addresses left out): a forwarded answer
    /// pointing at one of them is a rebinding attempt.
    #[must_use]
    pub fn own_addresses(&self) -> Vec<std::net::IpAddr> {
        self.listen
            .iter()
            .filter_map(|l| l.parse::<SocketAddr>().ok())
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified())
            .collect()
    }

    /// Check the section, pushing every problem.
    pub fn validate(&self, at: &str, problems: &mut ConfigProblems) {
        if self.listen.is_empty() {
            problems.push(
                format!("{at}.listen"),
                "at least one listen address is needed",
            );
        }
        for (i, l) in self.listen.iter().enumerate() {
            if let Err(e) = l.parse::<SocketAddr>() {
                problems.push(
                    format!("{at}.listen[{i}]"),
                    format!("{l:?} is not IP:port ({e})"),
                );
            }
        }
        for (key, value) in [("threads", self.threads), ("udp_workers", self.udp_workers)] {
            if value > MAX_THREADS {
                problems.push(
                    format!("{at}.{key}"),
                    format!(
                        "{value} is more than {MAX_THREADS}; use 0 for one per CPU, or a number up to {MAX_THREADS}"
                    ),
                );
            }
        }
        problems.check_count(
            format!("{at}.tcp_max_connections"),
            self.tcp_max_connections,
            CONNECTIONS,
        );
        problems.check_duration(
            format!("{at}.tcp_idle_timeout"),
            self.tcp_idle_timeout,
            TCP_IDLE_TIMEOUT,
        );
        for (key, value, range) in [
            (
                "tcp_max_connections_per_client",
                self.tcp_max_connections_per_client,
                CONNECTIONS,
            ),
            ("max_inflight_misses", self.max_inflight_misses, IN_FLIGHT),
            (
                "max_inflight_misses_per_client",
                self.max_inflight_misses_per_client,
                IN_FLIGHT,
            ),
            ("tcp_max_pipelined", self.tcp_max_pipelined, PIPELINED),
        ] {
            problems.check_count(format!("{at}.{key}"), value, range);
        }
        problems.check_duration(
            format!("{at}.tcp_write_timeout"),
            self.tcp_write_timeout,
            TCP_WRITE_TIMEOUT,
        );
        problems.check_duration(
            format!("{at}.shutdown_grace"),
            self.shutdown_grace,
            SHUTDOWN_GRACE,
        );
        if let Some(nsid) = &self.nsid
            && let Err(why) = check_nsid(nsid)
        {
            problems.push(format!("{at}.nsid"), why);
        }
    }

    /// UDP sockets per listen address: `udp_workers`, or one per CPU when it is 0.
    #[must_use]
    pub fn udp_sockets_per_address(&self) -> usize {
        if self.udp_workers == 0 {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        } else {
            self.udp_workers
        }
    }

    /// The listen addresses, parsed (invalid ones were reported by `validate`).
    #[must_use]
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.listen.iter().filter_map(|l| l.parse().ok()).collect()
    }
}

/// Why `nsid` cannot be `server.nsid`: empty, longer than [`MAX_NSID`] bytes, or holding a
/// character other than printable ASCII (it is shown by `dig +nsid` and in logs as it is).
fn check_nsid(nsid: &str) -> Result<(), String> {
    if nsid.is_empty() {
        return Err("must not be empty: leave the key out to send no identifier".into());
    }
    if nsid.len() > MAX_NSID {
        return Err(format!("is {} bytes long; at most {MAX_NSID}", nsid.len()));
    }
    if let Some(c) = nsid.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(format!(
            "character {c:?} is not printable ASCII (space to '~')"
        ));
    }
    Ok(())
}

/// A running server: its bound addresses and the means to stop it.
#[derive(Debug)]
pub struct RunningServer {
    /// Bound UDP addresses (ports resolved when configured as 0).
    pub udp_addrs: Vec<SocketAddr>,
    /// Bound TCP addresses.
    pub tcp_addrs: Vec<SocketAddr>,
    /// Tells every listener to stop.
    stop: watch::Sender<bool>,
    /// Listener and connection tasks.
    tasks: JoinSet<()>,
    /// Grace period for in-flight work.
    grace: Duration,
}

impl RunningServer {
    /// The configured shutdown grace period.
    #[must_use]
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Stop listening, then wait (up to the grace period) for in-flight queries.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let grace = self.grace;
        let _ = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
    }
}

/// Bind a TCP listener. An IPv6 address takes IPv6 only, as its UDP twin does: `[::]:53` and
/// `0.0.0.0:53` can both be listed (a dual-stack `[::]` would take IPv4 TCP port 53 too and
/// the second bind would fail).
fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(SockProtocol::TCP),
    )?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    // As tokio's own bind: a restarted server can bind while old connections are in TIME_WAIT.
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    TcpListener::from_std(sock.into())
}

fn bind_udp(addr: SocketAddr, reuse: bool) -> std::io::Result<std::net::UdpSocket> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM,
        Some(SockProtocol::UDP),
    )?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    if reuse {
        sock.set_reuse_port(true)?;
    }
    // A wildcard address: each answer must leave from the address its query was sent to.
    if addr.ip().is_unspecified()
        && let Err(e) = udp::enable_pktinfo(&sock, addr.is_ipv6())
    {
        tracing::warn!(error = %e, %addr, "answers on a wildcard address leave from the kernel's choice of source; list the addresses to serve instead");
    }
    // Bursts of queries should queue in the kernel rather than be dropped.
    let _ = sock.set_recv_buffer_size(4 << 20);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// Bind `workers` UDP sockets to `addr` (port 0: one port the kernel picks for all of them).
///
/// `SO_REUSEPORT` lets any socket of the same user join a port's group, so binding the group
/// straight away would let a second dnsward (or another resolver run by the same user) on this
/// address start without an error and silently take a share of the queries; and for port 0 the
/// kernel may hand out a port another reuse-port group already holds. A plain bind claims the
/// address first: it fails with "address in use" when anything holds it, and fixes port 0's
/// number; the group then binds in its place. One worker needs no group at all.
fn bind_udp_group(addr: SocketAddr, workers: usize) -> std::io::Result<Vec<std::net::UdpSocket>> {
    let claim = bind_udp(addr, false)?;
    if workers <= 1 {
        return Ok(vec![claim]);
    }
    let bound = claim.local_addr()?;
    drop(claim);
    (0..workers).map(|_| bind_udp(bound, true)).collect()
}

/// Bind every listener and start serving through `pipeline`.
///
/// # Errors
/// When an address cannot be bound.
pub async fn start(cfg: &ServerConfig, pipeline: Arc<Pipeline>) -> std::io::Result<RunningServer> {
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut udp_addrs = Vec::new();
    let mut tcp_addrs = Vec::new();
    let workers = cfg.udp_sockets_per_address();
    let conns = Arc::new(Semaphore::new(cfg.tcp_max_connections));
    let tcp_limits = tcp::TcpLimits {
        idle: cfg.tcp_idle_timeout,
        write_timeout: cfg.tcp_write_timeout,
        per_client: cfg.tcp_max_connections_per_client,
        pipelined: cfg.tcp_max_pipelined,
        unknown: cfg.unknown_clients,
    };
    for addr in cfg.listen_addrs() {
        let sockets = bind_udp_group(addr, workers)?;
        let bound = sockets[0].local_addr()?;
        udp_addrs.push(bound);
        // One client's queries to one socket (see `steer.rs`): its per-client state stays on
        // one listener's core, and a flooding client cannot occupy every listener.
        #[cfg(target_os = "linux")]
        if sockets.len() > 1
            && cfg.udp_client_affinity
            && let Err(e) = steer::by_source(&sockets[0], sockets.len(), bound.is_ipv6())
        {
            tracing::warn!(error = %e, %bound, "UDP client affinity unavailable; the kernel's default spread applies");
        }
        for s in sockets {
            tasks.spawn(udp::serve(
                s,
                Arc::clone(&pipeline),
                stop_rx.clone(),
                cfg.udp_loop,
            ));
        }
        // TCP on the same port as UDP, so port 0 gives one port for both where possible.
        let tcp_addr = SocketAddr::new(addr.ip(), bound.port());
        let listener = match bind_tcp(tcp_addr) {
            Ok(l) => l,
            Err(_) if addr.port() == 0 => bind_tcp(addr)?,
            Err(e) => return Err(e),
        };
        tcp_addrs.push(listener.local_addr()?);
        tasks.spawn(tcp::accept_loop(
            listener,
            Arc::clone(&pipeline),
            Arc::clone(&conns),
            tcp_limits,
            stop_rx.clone(),
        ));
    }
    Ok(RunningServer {
        udp_addrs,
        tcp_addrs,
        stop,
        tasks,
        grace: cfg.shutdown_grace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ipv4_and_ipv6_wildcards_can_share_a_tcp_port() {
        // `listen = ["0.0.0.0:53", "[::]:53"]`, as the README recommends: a dual-stack `[::]`
        // would take the IPv4 port too and fail with "address in use".
        let v4 = bind_tcp("0.0.0.0:0".parse().unwrap()).unwrap();
        let port = v4.local_addr().unwrap().port();
        let v6 = match bind_tcp(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port))) {
            // No IPv6 here.
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrNotAvailable
                    || e.raw_os_error() == Some(libc::EAFNOSUPPORT) =>
            {
                return;
            }
            r => r.unwrap(),
        };
        assert_eq!(v6.local_addr().unwrap().port(), port);
    }

    /// A reuse-port socket already on the address (a second server run by the same user) makes
    /// binding fail with "address in use", instead of the group silently splitting queries.
    #[test]
    fn udp_listeners_do_not_join_another_processs_reuse_port_group() {
        let other = bind_udp("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let taken = other.local_addr().unwrap();
        for workers in [1, 2, 4] {
            let e = bind_udp_group(taken, workers).expect_err("the address is held");
            assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{workers} workers");
        }
        drop(other);
        // Port 0: every socket of the group on one port, distinct from other groups' ports.
        let a = bind_udp_group("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let port = a[0].local_addr().unwrap().port();
        assert!(a.iter().all(|s| s.local_addr().unwrap().port() == port));
        for _ in 0..200 {
            let b = bind_udp_group("127.0.0.1:0".parse().unwrap(), 2).unwrap();
            assert_ne!(b[0].local_addr().unwrap().port(), port);
        }
    }

    /// `server.nsid`: printable ASCII up to 512 bytes; anything else is named with its key.
    #[test]
    fn nsid_must_be_printable_ascii_of_at_most_512_bytes() {
        let problems = |nsid: &str| {
            let cfg = ServerConfig {
                nsid: Some(nsid.to_string()),
                ..ServerConfig::default()
            };
            let mut p = ConfigProblems::default();
            cfg.validate("server", &mut p);
            p.to_string()
        };
        assert!(!problems("resolver-eu-1 (rack 4)").contains("nsid"));
        assert!(!problems(&"n".repeat(MAX_NSID)).contains("nsid"));
        for (nsid, why) in [
            ("", "server.nsid: must not be empty"),
            (
                &"n".repeat(MAX_NSID + 1),
                "server.nsid: is 513 bytes long; at most 512",
            ),
            (
                "eu\x1b[2J",
                "server.nsid: character '\\u{1b}' is not printable ASCII",
            ),
            (
                "tab\there",
                "server.nsid: character '\\t' is not printable ASCII",
            ),
            (
                "bücher",
                "server.nsid: character 'ü' is not printable ASCII",
            ),
        ] {
            let text = problems(nsid);
            assert!(text.contains(why), "{nsid:?}: {text}");
        }
    }
}
