//! Encrypted listeners: DNS over TLS ([`super::dot`]) and DNS over HTTPS ([`super::doh`]).
//!
//! One accept loop serves both, hardened against starvation as plain TCP is ([`super::tcp`]),
//! with what the handshake changes:
//! - at accept, before any byte is read, the source address takes a per-client slot
//!   (`max_connections_per_client`): connections still in their handshake count, so one
//!   address cannot hold the listener with connections that never say anything;
//! - a source in a group by address takes one of the listener's `max_connections` slots. So
//!   does any source when a credential presented here could put it in a group whatever its
//!   address (DoH with `[tls.tokens]`: a token's group claim; client certificates when a group
//!   lists `identities`): mTLS and token agents are not locked out because of their address.
//!   Otherwise a source in no group gets a slot of a small separate pool
//!   ([`UNKNOWN_SLOTS`], at most [`UNKNOWN_SLOTS_PER_SOURCE`] of them per source) or, with
//!   `unknown_clients = "drop"`, is closed at once; it never holds one of the listener's slots;
//! - the TLS handshake must finish within `handshake_timeout` (default 5 s, at most the idle
//!   timeout);
//! - a client in no group once identified (by address, certificate, or on DoH a token in any
//!   request) gets its REFUSED answers within [`UNKNOWN_DEADLINE`], then the connection closes.
//!
//! Connections over a cap are closed at once and counted in
//! `dnsward_tls_connections_rejected_total{protocol, reason}` (the reasons of TCP's), handshakes
//! that time out in `dnsward_tls_handshake_timeouts_total{protocol}`, failed accepts (out of file
//! descriptors and the like) in `dnsward_accept_errors_total{protocol, kind}`, logged
//! rate-limited ([`crate::resources`]). The client's identity is
//! read from its verified certificate. A refused handshake (missing, expired, revoked or
//! foreign client certificate) becomes an `auth_refused` event with the reason. hickory's TLS
//! listener does not expose the peer certificate, hence our own loop over tokio-rustls.
//!
//! Shutdown ([`RunningTls::shutdown`]) is plain TCP's: the listeners stop accepting, a DoT
//! connection reads no new query and writes the answers to those it has read, a DoH connection
//! takes no new request and answers those it has received (HTTP/2 GOAWAY, HTTP/1.1 without
//! keep-alive), then each closes; `shutdown_grace` bounds the whole, shared with the plain
//! listeners that drain at the same time ([`crate::app::RunningApp::shutdown`]).
//!
//! TLS records gather in a buffer of [`WRITE_BATCH`] bytes under rustls and go to the socket
//! when the session flushes (or the buffer fills): DoT flushes once for the answers ready
//! together, DoH once for the answers that finish in one pass of the ready tasks, so a
//! pipelining client's answers leave in one system call, not one each. A refused handshake's
//! alert is flushed before the connection closes.
//!
//! Each listener's rustls configuration lives in a [`TlsConfigCell`]; [`RunningTls::reload`]
//! re-reads certificates, keys, CAs and CRLs and swaps them in for new connections without
//! touching open ones.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::slots::{
    ClientSlots, Rejections, UNKNOWN_DEADLINE, UNKNOWN_SLOTS, UNKNOWN_SLOTS_PER_SOURCE,
    accept_next, stranger_key,
};
use crate::events::{AuthRefusedEvent, Event, EventBody};
use crate::identity::canonical;
use crate::identity::certs::{TlsSetupError, agent_identity, refusal_reason};
use crate::identity::{AuthKind, Peer, TlsConfig, TlsConfigCell, TlsKind, TokenVerifier};
use crate::resources::AcceptErrors;
use crate::serve::pipeline::{Pipeline, UnknownClients};

/// Bytes of TLS records gathered before they go to the socket without waiting for a flush
/// (tokio's default buffer size). A pipelining client's answers that are ready together
/// leave in one write instead of one write each.
pub(super) const WRITE_BATCH: usize = 8 * 1024;

/// How long a failed handshake's alert may take to leave before the connection closes.
const ALERT_FLUSH: Duration = Duration::from_secs(1);

/// Why the encrypted listeners could not start.
#[derive(Debug, thiserror::Error)]
pub enum TlsStartError {
    /// Certificates, keys, CRLs or token keys could not be loaded.
    #[error("{0}")]
    Setup(#[from] TlsSetupError),
    /// Token keys could not be loaded.
    #[error("{0}")]
    Tokens(#[from] crate::config_error::ConfigProblems),
    /// A listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
}

/// What every connection of a listener needs.
pub(super) struct ListenerContext {
    /// The query pipeline.
    pub pipeline: Arc<Pipeline>,
    /// DoT or DoH.
    pub kind: TlsKind,
    /// Bearer-token verifier (DoH), when tokens are configured.
    pub tokens: Option<Arc<TokenVerifier>>,
    /// Idle timeout per connection.
    pub idle: Duration,
    /// The longest one DoT answer's write may take (`[server] tcp_write_timeout`, as on TCP),
    /// and the longest a DoH answer may wait to be sent: a client that does not
    /// read its answers loses its connection.
    pub write_timeout: Duration,
    /// Longest TLS handshake (`[tls] handshake_timeout`).
    pub handshake: Duration,
    /// Most connections per source address (`[tls] max_connections_per_client`).
    pub per_client: usize,
    /// Whether client certificates are verified here (client CAs configured).
    pub client_certs: bool,
    /// What clients in no group get (`server.unknown_clients`).
    pub unknown: UnknownClients,
    /// DoT: most queries in flight per connection.
    pub max_in_flight: usize,
    /// DoH: the URL path served.
    pub path: String,
}

impl ListenerContext {
    /// True when each DoH request may carry a bearer token (and with it a group).
    fn tokens_per_request(&self) -> bool {
        self.kind == TlsKind::Doh && self.tokens.is_some()
    }

    /// How a connection from `source` could be served as a group's member: its address is in
    /// a group ([`Admit::ByAddress`]), or a credential presented here could put it in one
    /// whatever its address ([`Admit::ByCredential`]: a token, whose group claim names any
    /// group, or a client certificate when some group lists identities), or neither
    /// ([`Admit::Unknown`]). Decided at accept, before the handshake, from the policy in force.
    fn may_be_in_a_group(&self, source: IpAddr) -> Admit {
        let policy = self.pipeline.policy();
        if policy.clients.lookup(source).is_some() {
            Admit::ByAddress
        } else if self.tokens_per_request() || (self.client_certs && !policy.identities.is_empty())
        {
            Admit::ByCredential
        } else {
            Admit::Unknown
        }
    }

    fn protocol(&self) -> &'static str {
        match self.kind {
            TlsKind::Dot => "dot",
            TlsKind::Doh => "doh",
        }
    }

    /// Record a refused client.
    pub(super) fn refused(
        &self,
        client: SocketAddr,
        auth: AuthKind,
        reason: String,
        agent: Option<String>,
    ) {
        metrics::counter!(crate::metrics::AUTH_REFUSED_TOTAL, "protocol" => self.protocol(), "auth" => auth.as_str())
            .increment(1);
        let client_ip = crate::policy::identify::canonical(client.ip());
        if !self
            .pipeline
            .events()
            .wants_refused("auth_refused", client_ip)
        {
            return;
        }
        let version = self.pipeline.policy().version.number;
        self.pipeline.events().emit(Event::now(
            version,
            EventBody::AuthRefused(AuthRefusedEvent {
                client: client_ip,
                protocol: self.protocol().to_string(),
                auth: auth.as_str().to_string(),
                reason,
                agent,
            }),
        ));
    }
}

/// Running DoT and DoH listeners.
#[derive(Debug)]
pub struct RunningTls {
    /// Bound DoT addresses.
    pub dot_addrs: Vec<SocketAddr>,
    /// Bound DoH addresses.
    pub doh_addrs: Vec<SocketAddr>,
    /// Each listener's TLS configuration, for reload.
    cells: Vec<Arc<TlsConfigCell>>,
    /// The DoH bearer-token keys, for reload.
    tokens: Option<Arc<TokenVerifier>>,
    /// Tells every listener to stop.
    stop: watch::Sender<bool>,
    /// Listener tasks (each waits for its connections).
    tasks: JoinSet<()>,
}

impl RunningTls {
    /// The listeners' configuration cells, for a reload hook that outlives this borrow.
    #[must_use]
    pub fn cells(&self) -> Vec<Arc<TlsConfigCell>> {
        self.cells.clone()
    }

    /// The DoH token verifier (`[tls.tokens]`), for a reload hook: its keys and JWKS are
    /// re-read there.
    #[must_use]
    pub fn tokens(&self) -> Option<Arc<TokenVerifier>> {
        self.tokens.clone()
    }

    /// Re-read every listener's certificate, key, client CAs and CRLs; a listener whose files
    /// do not load keeps its running configuration (the errors are returned).
    pub fn reload(&self) -> Vec<TlsSetupError> {
        self.cells.iter().filter_map(|c| c.reload().err()).collect()
    }

    /// Stop accepting, then wait (up to `grace`) for open connections.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
    }
}

/// Bind every DoT and DoH listener of `cfg` (paths relative to `base`); `unknown` is what
/// clients in no group get (`server.unknown_clients`), `write_timeout` bounds each DoT answer's
/// write and each DoH answer's wait to be sent (`server.tcp_write_timeout`).
///
/// # Errors
/// Unloadable TLS material or token keys, or an address that cannot be bound.
pub async fn start(
    cfg: &TlsConfig,
    base: &Path,
    pipeline: Arc<Pipeline>,
    unknown: UnknownClients,
    write_timeout: Duration,
) -> Result<RunningTls, TlsStartError> {
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let tokens = match &cfg.tokens {
        Some(t) => Some(Arc::new(TokenVerifier::load(t, base, "tls.tokens")?)),
        None => None,
    };
    let mut running = RunningTls {
        dot_addrs: Vec::new(),
        doh_addrs: Vec::new(),
        cells: Vec::new(),
        tokens: tokens.clone(),
        stop,
        tasks: JoinSet::new(),
    };
    for (kind, list) in [(TlsKind::Dot, &cfg.dot), (TlsKind::Doh, &cfg.doh)] {
        for l in list {
            let cell = Arc::new(TlsConfigCell::new(cfg.files(l, kind, base))?);
            let listener =
                TcpListener::bind(&l.listen)
                    .await
                    .map_err(|source| TlsStartError::Bind {
                        addr: l.listen.clone(),
                        source,
                    })?;
            let bound = listener
                .local_addr()
                .map_err(|source| TlsStartError::Bind {
                    addr: l.listen.clone(),
                    source,
                })?;
            match kind {
                TlsKind::Dot => running.dot_addrs.push(bound),
                TlsKind::Doh => running.doh_addrs.push(bound),
            }
            let ctx = Arc::new(ListenerContext {
                pipeline: Arc::clone(&pipeline),
                kind,
                tokens: tokens.clone(),
                idle: cfg.idle_timeout,
                write_timeout,
                handshake: cfg.handshake_timeout,
                per_client: cfg.max_connections_per_client,
                client_certs: !cfg.client_cas.is_empty() || !cfg.trust_domains.is_empty(),
                unknown,
                max_in_flight: cfg.max_in_flight,
                path: l.path.clone().unwrap_or_else(|| "/dns-query".into()),
            });
            tasks.spawn(accept_loop(
                listener,
                Arc::clone(&cell),
                ctx,
                Arc::new(Semaphore::new(cfg.max_connections)),
                stop_rx.clone(),
            ));
            running.cells.push(cell);
        }
    }
    running.tasks = tasks;
    Ok(running)
}

/// What a source's address says about it at accept, before any credential is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    /// Its address is in a group: the per-client cap and the listener's slots.
    ByAddress,
    /// In no group by address, but a credential presented here could put it in one: the
    /// listener's slots, at most [`UNKNOWN_SLOTS_PER_SOURCE`] per address (any stranger on
    /// the network comes this way, and a stranger needs as many addresses as before to fill
    /// the listener).
    ByCredential,
    /// In no group, and nothing could change that: the small pool, at most its share.
    Unknown,
}

/// How a connection was admitted; it holds its slot until it closes.
struct Admission {
    /// From the small pool for sources in no group ([`UNKNOWN_SLOTS`]), not the listener's
    /// `max_connections` (a source in a group by address, or one a credential could put in
    /// one).
    unknown: bool,
    /// The slot.
    _slot: OwnedSemaphorePermit,
}

async fn accept_loop(
    listener: TcpListener,
    cell: Arc<TlsConfigCell>,
    ctx: Arc<ListenerContext>,
    conns: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let rejected = Rejections::new(crate::metrics::TLS_REJECTED_TOTAL, Some(ctx.protocol()));
    let handshake_timeouts = metrics::counter!(crate::metrics::TLS_HANDSHAKE_TIMEOUTS_TOTAL, "protocol" => ctx.protocol());
    let mut accept_errors = AcceptErrors::new(ctx.protocol(), listener.local_addr().ok());
    let clients = Arc::new(ClientSlots::default());
    let strangers = Arc::new(ClientSlots::default());
    let unknown_slots = Arc::new(Semaphore::new(UNKNOWN_SLOTS));
    let mut handlers = JoinSet::new();
    while let Some((stream, remote)) =
        accept_next(&listener, &mut stop, &mut handlers, &mut accept_errors).await
    {
        // Every connection counts against its source from accept on, handshake included, so
        // one address cannot hold the listener with connections that never say anything.
        let source = canonical(remote.ip());
        let admit = ctx.may_be_in_a_group(source);
        // Only a member by address gets the whole per-client cap; any other source holds at
        // most a share of what it takes, counted apart (an address a reload moves out of its
        // group is not held to its old connections) and per /64 on IPv6.
        let client_slot = if admit == Admit::ByAddress {
            clients.try_take(source, ctx.per_client)
        } else {
            strangers.try_take(
                stranger_key(source),
                ctx.per_client.min(UNKNOWN_SLOTS_PER_SOURCE),
            )
        };
        let Some(client_slot) = client_slot else {
            rejected.client_cap.increment(1);
            drop(stream);
            continue;
        };
        let admission = if admit != Admit::Unknown {
            match Arc::clone(&conns).try_acquire_owned() {
                Ok(slot) => Admission {
                    unknown: false,
                    _slot: slot,
                },
                Err(_) => {
                    rejected.global_cap.increment(1);
                    drop(stream);
                    continue;
                }
            }
        } else {
            // In no group and no credential could change that: as on plain TCP, a small
            // separate pool (or nothing with `unknown_clients = "drop"`).
            let permit = match ctx.unknown {
                UnknownClients::Drop => None,
                UnknownClients::Refuse => Arc::clone(&unknown_slots).try_acquire_owned().ok(),
            };
            match permit {
                Some(slot) => Admission {
                    unknown: true,
                    _slot: slot,
                },
                None => {
                    rejected.unknown_client.increment(1);
                    drop(stream);
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        // Each connection is accepted with the configuration current now; a reload later
        // does not affect it.
        let acceptor = TlsAcceptor::from(cell.current());
        let ctx = Arc::clone(&ctx);
        let stop = stop.clone();
        let handshake_timeouts = handshake_timeouts.clone();
        handlers.spawn(async move {
            // TLS records are gathered under the TLS layer and go to the socket together when
            // the session flushes: an answer a record, but not a system call a record.
            let batched = BufWriter::with_capacity(WRITE_BATCH, stream);
            let accept = acceptor.accept(batched).into_fallible();
            let tls = match tokio::time::timeout(ctx.handshake, accept).await {
                Ok(Ok(tls)) => tls,
                Ok(Err((e, mut io))) => {
                    // The alert that tells the client why is still in the batch.
                    let _ = tokio::time::timeout(ALERT_FLUSH, io.flush()).await;
                    if let Some(reason) = refusal_reason(&e) {
                        ctx.refused(remote, AuthKind::Mtls, reason, None);
                    }
                    return;
                }
                Err(_) => {
                    handshake_timeouts.increment(1);
                    return;
                }
            };
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first().cloned());
            let peer = match cert {
                // Verified by rustls against the client CAs and CRLs; it must name an agent.
                Some(cert) => match agent_identity(&cert) {
                    Some(agent) => Peer::verified(remote.ip(), &agent, AuthKind::Mtls, None),
                    None => {
                        ctx.refused(
                            remote,
                            AuthKind::Mtls,
                            "client certificate names no SPIFFE ID or DNS name".into(),
                            None,
                        );
                        return;
                    }
                },
                None => Peer::address(remote.ip()),
            };
            // A client that is in no group now it is identified gets what an unknown client
            // gets on plain TCP: its REFUSED answers within a short deadline, then the close
            // (nothing at all with `drop`). On DoH with tokens a later request may still
            // carry one, so only the idle timeout applies there.
            let unknown = admission.unknown
                || (!ctx.tokens_per_request() && ctx.pipeline.policy().identify(&peer).is_none());
            if unknown && ctx.unknown == UnknownClients::Drop {
                return;
            }
            let session = async {
                match ctx.kind {
                    TlsKind::Dot => super::dot::serve(tls, peer, &ctx, stop).await,
                    TlsKind::Doh => {
                        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                        super::doh::serve(tls, h2, peer, remote, Arc::clone(&ctx), stop).await;
                    }
                }
            };
            if unknown {
                let _ = tokio::time::timeout(UNKNOWN_DEADLINE, session).await;
            } else {
                session.await;
            }
            drop(admission);
            drop(client_slot);
        });
    }
    while handlers.join_next().await.is_some() {}
}
