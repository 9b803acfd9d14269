//! Who sent a query: the socket address, and the verified agent identity when the query came
//! over an authenticated transport (an mTLS certificate or a bearer token).
//!
//! Listeners hand a [`Peer`] to the pipeline; the pipeline keys containment, rate limits and
//! detection windows on its [`ClientKey`]: the agent when known, else the address. So
//! quarantining one agent leaves its neighbours on the same host alone, and a quarantined
//! agent cannot escape by moving to another address.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

/// An address as clients should be keyed: IPv4-mapped IPv6 becomes IPv4.
#[must_use]
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    }
}

/// How the client proved who it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum AuthKind {
    /// Nothing: plain UDP/TCP, or TLS without a client credential.
    #[default]
    None,
    /// A client certificate verified against the configured client CAs.
    Mtls,
    /// A bearer token verified against the configured token keys.
    Token,
}

impl AuthKind {
    /// Stable string for events: `none`, `mtls`, `token`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Mtls => "mtls",
            Self::Token => "token",
        }
    }
}

/// The key containment and detection windows are kept under.
///
/// Two keys are equal when both name the same agent, or when neither names an agent and the
/// addresses match. The address of an agent key is where it was last seen (for events) and
/// takes no part in equality or hashing.
#[derive(Debug, Clone)]
pub struct ClientKey {
    /// For an address-keyed client: the network it is keyed on (the address itself for IPv4,
    /// its prefix, /64 by default, for IPv6: a host moving inside its /64 is the same client).
    scope: IpAddr,
    /// Source address (canonical).
    pub addr: IpAddr,
    /// The verified agent identity, if any.
    pub agent: Option<Arc<str>>,
}

impl ClientKey {
    /// A key for an agent identity, seen at `addr`.
    #[must_use]
    pub fn agent(agent: &str, addr: IpAddr) -> Self {
        let addr = canonical(addr);
        Self {
            scope: addr,
            addr,
            agent: Some(agent.into()),
        }
    }

    /// The agent identity, if any.
    #[must_use]
    pub fn agent_name(&self) -> Option<&str> {
        self.agent.as_deref()
    }

    /// The network an address-keyed client is keyed on; `None` for an agent identity. Two
    /// address-keyed clients are the same key (equal, same hash) exactly when these are equal.
    #[must_use]
    pub fn address_scope(&self) -> Option<IpAddr> {
        if self.agent.is_none() {
            Some(self.scope)
        } else {
            None
        }
    }
}

/// IPv6 prefix length address-keyed clients are grouped by unless configured otherwise.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

impl ClientKey {
    /// A client known by its address, keyed on `addr` for IPv4 and on its `/v6_prefix`
    /// network for IPv6 (clamped to 1–128).
    #[must_use]
    pub fn address(addr: IpAddr, v6_prefix: u8) -> Self {
        let addr = canonical(addr);
        let scope = match addr {
            IpAddr::V6(v6) => {
                let bits = u32::from(v6_prefix.clamp(1, 128));
                let mask = u128::MAX << (128 - bits);
                IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & mask))
            }
            v4 => v4,
        };
        Self {
            scope,
            addr,
            agent: None,
        }
    }
}

impl From<IpAddr> for ClientKey {
    fn from(addr: IpAddr) -> Self {
        Self::address(addr, DEFAULT_IPV6_PREFIX)
    }
}

impl PartialEq for ClientKey {
    fn eq(&self, other: &Self) -> bool {
        match (&self.agent, &other.agent) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.scope == other.scope,
            _ => false,
        }
    }
}

impl Eq for ClientKey {}

impl Hash for ClientKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match &self.agent {
            Some(a) => {
                1u8.hash(state);
                a.hash(state);
            }
            None => {
                // One write of the whole key: the tag, the family and the address (SipHash
                // costs per `write`, and the derived hash of an `IpAddr` makes three).
                let mut key = [0u8; 18];
                match self.scope {
                    IpAddr::V4(a) => {
                        key[1] = 4;
                        key[2..6].copy_from_slice(&a.octets());
                    }
                    IpAddr::V6(a) => {
                        key[1] = 6;
                        key[2..].copy_from_slice(&a.octets());
                    }
                }
                state.write(&key);
            }
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.agent {
            Some(a) => f.write_str(a),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// A query's sender, as a listener established it.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Containment/detection key: the agent if verified, else the address.
    pub key: ClientKey,
    /// How the identity was proven.
    pub auth: AuthKind,
    /// The group a verified token names (its group claim), which wins over identity patterns
    /// and addresses.
    pub group: Option<Arc<str>>,
}

impl Peer {
    /// An unauthenticated peer known only by its address (UDP, TCP).
    #[must_use]
    pub fn address(addr: IpAddr) -> Self {
        Self::address_scoped(addr, DEFAULT_IPV6_PREFIX)
    }

    /// A peer known only by its address, IPv6 clients keyed on their `/v6_prefix` network.
    #[must_use]
    pub fn address_scoped(addr: IpAddr, v6_prefix: u8) -> Self {
        Self {
            key: ClientKey::address(addr, v6_prefix),
            auth: AuthKind::None,
            group: None,
        }
    }

    /// A peer whose agent identity was verified by `auth`.
    #[must_use]
    pub fn verified(addr: IpAddr, agent: &str, auth: AuthKind, group: Option<&str>) -> Self {
        Self {
            key: ClientKey::agent(agent, addr),
            auth,
            group: group.map(Arc::from),
        }
    }

    /// Canonical source address.
    #[must_use]
    pub fn addr(&self) -> IpAddr {
        self.key.addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_one_client_within_their_prefix() {
        let a: IpAddr = "2001:db8:1:2::10".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::99".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::10".parse().unwrap();
        assert_eq!(ClientKey::from(a), ClientKey::from(b), "same /64");
        assert_ne!(ClientKey::from(a), ClientKey::from(other));
        assert_ne!(ClientKey::address(a, 128), ClientKey::address(b, 128));
        assert_eq!(ClientKey::address(a, 48), ClientKey::address(other, 48));
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v4b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_ne!(
            ClientKey::from(v4),
            ClientKey::from(v4b),
            "IPv4 stays per address"
        );
        assert_eq!(
            ClientKey::from(a).addr,
            a,
            "events still name the real address"
        );
    }
    use std::collections::HashSet;

    #[test]
    fn agents_are_keyed_by_identity_not_address() {
        let a = ClientKey::agent("spiffe://t/a", "10.0.0.1".parse().unwrap());
        let a_moved = ClientKey::agent("spiffe://t/a", "10.0.0.2".parse().unwrap());
        let b = ClientKey::agent("spiffe://t/b", "10.0.0.1".parse().unwrap());
        let addr = ClientKey::from("10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(a, a_moved);
        assert_ne!(a, b);
        assert_ne!(a, addr);
        let set: HashSet<ClientKey> = [a, a_moved, b, addr].into_iter().collect();
        assert_eq!(set.len(), 3);
    }
}
