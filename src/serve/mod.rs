//! The listeners. UDP and TCP on every configured address, IPv4 and IPv6.
//!
//! UDP: each address gets one socket per worker, bound with `SO_REUSEPORT` so the kernel
//! spreads clients across them, and each socket has its own receive loop (`udp.rs`: datagrams
//! read and answers sent in batches, one system call each way per batch). Queries the
//! synchronous stages can answer (refusals, blocks, cache hits) are answered inline, with no
//! task spawned and no lock taken; only cache misses spawn a task.
//!
//! TCP: a connection cap (a semaphore: connections over it are closed at once and counted), an
//! idle timeout per connection, and queries on one connection answered in order.
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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::config_error::ConfigProblems;
use crate::metrics as m;
use crate::serve::pipeline::UnknownClients;
use crate::serve::pipeline::{Pipeline, Protocol};

pub mod cookie;
mod doh;
mod dot;
pub mod encrypted;
pub mod pipeline;
mod udp;

pub use encrypted::RunningTls;

/// `[server]`: listeners and limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Addresses to serve DNS on, UDP and TCP on each (default `127.0.0.1:53`).
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// UDP sockets per address (0 = one per CPU).
    #[serde(default)]
    pub udp_workers: usize,
    /// Runtime worker threads (0 = one per CPU).
    #[serde(default)]
    pub threads: usize,
    /// Most simultaneous TCP connections (default 1024); more are closed at once.
    #[serde(default = "default_tcp_max")]
    pub tcp_max_connections: usize,
    /// Idle time after which a TCP connection is closed (default 10s).
    #[serde(default = "default_tcp_idle", with = "humantime_serde")]
    pub tcp_idle_timeout: Duration,
    /// What clients in no group get: `refuse` (default) or `drop`.
    #[serde(default)]
    pub unknown_clients: UnknownClients,
    /// How long shutdown waits for in-flight queries (default 2s).
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

fn default_listen() -> Vec<String> {
    vec!["127.0.0.1:53".into()]
}
fn default_tcp_max() -> usize {
    1024
}
fn default_tcp_idle() -> Duration {
    Duration::from_secs(10)
}
fn default_grace() -> Duration {
    Duration::from_secs(2)
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            udp_workers: 0,
            threads: 0,
            tcp_max_connections: default_tcp_max(),
            tcp_idle_timeout: default_tcp_idle(),
            unknown_clients: UnknownClients::default(),
            shutdown_grace: default_grace(),
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
        if self.tcp_max_connections == 0 {
            problems.push(format!("{at}.tcp_max_connections"), "must be at least 1");
        }
        if self.tcp_idle_timeout.is_zero() {
            problems.push(format!("{at}.tcp_idle_timeout"), "must be above zero");
        }
    }

    /// The listen addresses, parsed (invalid ones were reported by `validate`).
    #[must_use]
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.listen.iter().filter_map(|l| l.parse().ok()).collect()
    }
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
    // Bursts of queries should queue in the kernel rather than be dropped.
    let _ = sock.set_recv_buffer_size(4 << 20);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
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
    let workers = if cfg.udp_workers == 0 {
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    } else {
        cfg.udp_workers
    };
    let conns = Arc::new(Semaphore::new(cfg.tcp_max_connections));
    for addr in cfg.listen_addrs() {
        // The first socket resolves port 0; the rest join it with SO_REUSEPORT.
        let first = bind_udp(addr, true)?;
        let bound = first.local_addr()?;
        udp_addrs.push(bound);
        let mut sockets = vec![first];
        for _ in 1..workers {
            sockets.push(bind_udp(bound, true)?);
        }
        for s in sockets {
            tasks.spawn(udp::serve(s, Arc::clone(&pipeline), stop_rx.clone()));
        }
        // TCP on the same port as UDP, so port 0 gives one port for both where possible.
        let tcp_addr = SocketAddr::new(addr.ip(), bound.port());
        let listener = match TcpListener::bind(tcp_addr).await {
            Ok(l) => l,
            Err(_) if addr.port() == 0 => TcpListener::bind(addr).await?,
            Err(e) => return Err(e),
        };
        tcp_addrs.push(listener.local_addr()?);
        tasks.spawn(tcp_accept_loop(
            listener,
            Arc::clone(&pipeline),
            Arc::clone(&conns),
            cfg.tcp_idle_timeout,
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

async fn tcp_accept_loop(
    listener: TcpListener,
    pipeline: Arc<Pipeline>,
    conns: Arc<Semaphore>,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let rejected = metrics::counter!(m::TCP_REJECTED_TOTAL);
    let open = metrics::gauge!(m::TCP_CONNECTIONS);
    let mut handlers = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => break,
            Some(_) = handlers.join_next(), if !handlers.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(v) => v,
            Err(_) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&conns).try_acquire_owned() else {
            rejected.increment(1);
            drop(stream);
            continue;
        };
        let pipeline = Arc::clone(&pipeline);
        let stop = stop.clone();
        let open = open.clone();
        handlers.spawn(async move {
            open.increment(1.0);
            serve_tcp(stream, peer, &pipeline, idle, stop).await;
            open.decrement(1.0);
            drop(permit);
        });
    }
    while handlers.join_next().await.is_some() {}
}

async fn serve_tcp(
    mut stream: TcpStream,
    peer: SocketAddr,
    pipeline: &Pipeline,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(512);
    loop {
        let len = tokio::select! {
            r = tokio::time::timeout(idle, stream.read_u16()) => match r {
                Ok(Ok(len)) => len,
                _ => return, // idle timeout, EOF or error
            },
            _ = stop.changed() => return,
        };
        buf.resize(usize::from(len), 0);
        match tokio::time::timeout(idle, stream.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let Some(answer) = pipeline.handle(&buf, peer.ip(), Protocol::Tcp).await else {
            continue;
        };
        let Ok(n) = u16::try_from(answer.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(answer.len() + 2);
        framed.extend_from_slice(&n.to_be_bytes());
        framed.extend_from_slice(&answer);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}
