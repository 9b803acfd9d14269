//! Connection slots shared by the stream listeners (plain TCP in [`super::tcp`], DoT and DoH in
//! [`super::encrypted`]): per-client counts, the small pool and deadline for clients in no
//! group, and the rejection counters, one per reason.
//!
//! A connection over a cap is closed at once and counted by `reason`: `client_cap` (its source
//! address holds the most it may), `unknown_client` (its source is in no group and the pool for
//! such clients is full, or they are dropped), `global_cap` (the listener is full).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::resources::AcceptErrors;

/// The listener's next connection, or `None` once told to stop. Finished connection handlers
/// are reaped while it waits. A failed accept (out of file descriptors and the like) is
/// counted, said (rate-limited) and backed off from for 50 ms instead of spinning.
pub(super) async fn accept_next(
    listener: &TcpListener,
    stop: &mut watch::Receiver<bool>,
    handlers: &mut JoinSet<()>,
    errors: &mut AcceptErrors,
) -> Option<(TcpStream, std::net::SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => return None,
            Some(_) = handlers.join_next(), if !handlers.is_empty() => continue,
        };
        match accepted {
            Ok(v) => return Some(v),
            Err(e) => {
                errors.failed(&e);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Most connections one member address may hold on a listener, by default
/// (`server.tcp_max_connections_per_client`, `[tls] max_connections_per_client`): a
/// benchmarking client (`dnsperf -c 100`) or a host whose containers share its address (NAT)
/// is served whole, while one address holds at most an eighth of the default 1024, so eight
/// member addresses could hold every slot. Sources in no group by address hold at most
/// [`UNKNOWN_SLOTS_PER_SOURCE`] each. It was 16, and `dnsperf -m tcp -c 32` from one agent
/// lost half its queries to closed connections (dnsdist and PowerDNS Recursor set no such
/// cap by default).
pub const DEFAULT_CONNECTIONS_PER_CLIENT: usize = 128;

/// Connections from clients in no group being refused at the same time (per listener); more
/// are closed at once.
pub const UNKNOWN_SLOTS: usize = 64;
/// Most connections one source in no group by address (IPv6: one /64, [`stranger_key`]) may
/// hold on a listener: a quarter of [`UNKNOWN_SLOTS`], or the per-client cap if lower. Of the
/// small pool, so one stranger flooding it leaves the others their REFUSED; on DoT and DoH
/// where a credential could place any source, of the listener's slots, so filling them takes
/// 64 addresses, not 8. More are closed at once (`reason="client_cap"`).
pub const UNKNOWN_SLOTS_PER_SOURCE: usize = UNKNOWN_SLOTS / 4;
/// How long an unknown client's connection may take to send its query and read its REFUSED
/// (after its TLS handshake, on DoT and DoH).
pub const UNKNOWN_DEADLINE: Duration = Duration::from_secs(1);

/// What a source in no group is counted under for its share ([`UNKNOWN_SLOTS_PER_SOURCE`]):
/// its address for IPv4, its /64 for IPv6 (a host picks any address in its /64 at will, as
/// detection and containment key it: [`crate::identity::peer::DEFAULT_IPV6_PREFIX`]).
pub(super) fn stranger_key(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let bits = u32::from(crate::identity::peer::DEFAULT_IPV6_PREFIX);
            IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & (u128::MAX << (128 - bits)),
            ))
        }
        other => other,
    }
}

/// Per-client connection counts. Entries exist only while a client holds a connection, so the
/// table is bounded by the connections a listener holds.
#[derive(Debug, Default)]
pub(super) struct ClientSlots {
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One client's hold on a connection slot; released on drop.
pub(super) struct ClientSlot {
    slots: Arc<ClientSlots>,
    client: IpAddr,
}

impl ClientSlots {
    /// A slot for `client` if it holds fewer than `max`.
    pub(super) fn try_take(self: &Arc<Self>, client: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut held = self.held.lock();
        let n = held.entry(client).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            slots: Arc::clone(self),
            client,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock();
        if let Some(n) = held.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.client);
            }
        }
    }
}

/// Rejection counters, one per reason.
pub(super) struct Rejections {
    /// The listener (or the server's TCP listeners together) is full.
    pub global_cap: Counter,
    /// The source address holds the most connections it may.
    pub client_cap: Counter,
    /// A source in no group, and the pool for those is full (or they are dropped).
    pub unknown_client: Counter,
}

impl Rejections {
    /// The counters of `metric` by `reason`, with `protocol` as a label when given.
    pub(super) fn new(metric: &'static str, protocol: Option<&'static str>) -> Self {
        let c = |reason: &'static str| match protocol {
            Some(p) => metrics::counter!(metric, "protocol" => p, "reason" => reason),
            None => metrics::counter!(metric, "reason" => reason),
        };
        Self {
            global_cap: c("global_cap"),
            client_cap: c("client_cap"),
            unknown_client: c("unknown_client"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_holds_at_most_its_cap_and_gets_slots_back() {
        let slots = Arc::new(ClientSlots::default());
        let a: IpAddr = "127.0.0.10".parse().unwrap();
        let b: IpAddr = "127.0.0.20".parse().unwrap();
        let held: Vec<_> = (0..3).map_while(|_| slots.try_take(a, 3)).collect();
        assert_eq!(held.len(), 3);
        assert!(slots.try_take(a, 3).is_none());
        assert!(
            slots.try_take(b, 3).is_some(),
            "another client is not affected"
        );
        drop(held);
        assert!(slots.try_take(a, 3).is_some());
        assert!(slots.held.lock().len() <= 1, "no entry outlives its slots");
    }

    #[test]
    fn strangers_share_by_ipv4_address_and_ipv6_slash_64() {
        let k = |s: &str| stranger_key(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff::9"), "same /64");
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"), "another /64");
        assert_ne!(k("127.0.0.98"), k("127.0.0.99"));
        assert_eq!(k("127.0.0.98"), "127.0.0.98".parse::<IpAddr>().unwrap());
        assert_eq!(k("::1"), "::".parse::<IpAddr>().unwrap());
        // A /64's many addresses hold one share between them.
        let slots = Arc::new(ClientSlots::default());
        let held: Vec<_> = (1..=20u16)
            .map_while(|i| {
                let a = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, i);
                slots.try_take(stranger_key(IpAddr::V6(a)), UNKNOWN_SLOTS_PER_SOURCE)
            })
            .collect();
        assert_eq!(held.len(), UNKNOWN_SLOTS_PER_SOURCE);
    }
}
