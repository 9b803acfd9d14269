//! Identify the client by its socket source address.
//!
//! Each group owns CIDRs; the longest matching prefix wins, so a /32 for one special agent can
//! sit inside its fleet's /24. The key is always the socket's source address, never anything the
//! client claims (EDNS Client Subnet is ignored). IPv4-mapped IPv6 sources (`::ffff:a.b.c.d`,
//! seen on dual-stack sockets) are matched as the IPv4 address they carry.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;

/// Index of a group in the active policy's group list.
pub type GroupId = u16;

/// Longest-prefix-match table from source address to group.
#[derive(Debug, Clone, Default)]
pub struct ClientTable {
    /// IPv4 prefixes.
    v4: PrefixMap<Ipv4Net, GroupId>,
    /// IPv6 prefixes.
    v6: PrefixMap<Ipv6Net, GroupId>,
}

impl ClientTable {
    /// Add a prefix for a group. Returns the group that already had exactly this prefix, if any.
    pub fn insert(&mut self, net: IpNet, group: GroupId) -> Option<GroupId> {
        match net.trunc() {
            IpNet::V4(n) => self.v4.insert(n, group),
            IpNet::V6(n) => self.v6.insert(n, group),
        }
    }

    /// The group of a source address, if any.
    #[must_use]
    pub fn lookup(&self, addr: IpAddr) -> Option<GroupId> {
        match canonical(addr) {
            IpAddr::V4(a) => self.v4.get_lpm(&Ipv4Net::from(a)).map(|(_, g)| *g),
            IpAddr::V6(a) => self.v6.get_lpm(&Ipv6Net::from(a)).map(|(_, g)| *g),
        }
    }
}

/// An address as clients should be keyed (IPv4-mapped IPv6 becomes IPv4); owned by
/// [`crate::identity`], which keys clients.
pub use crate::identity::canonical;

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> ClientTable {
        let mut t = ClientTable::default();
        t.insert("10.0.0.0/8".parse().unwrap(), 0);
        t.insert("10.1.2.0/24".parse().unwrap(), 1);
        t.insert("fd00:ab::/32".parse().unwrap(), 2);
        t
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table();
        assert_eq!(t.lookup("10.9.9.9".parse().unwrap()), Some(0));
        assert_eq!(t.lookup("10.1.2.3".parse().unwrap()), Some(1));
        assert_eq!(t.lookup("11.0.0.1".parse().unwrap()), None);
    }

    #[test]
    fn ipv6_and_mapped_ipv4_sources_match() {
        let t = table();
        assert_eq!(t.lookup("fd00:ab::5".parse().unwrap()), Some(2));
        assert_eq!(t.lookup("fd00:ac::5".parse().unwrap()), None);
        assert_eq!(t.lookup("::ffff:10.1.2.9".parse().unwrap()), Some(1));
    }

    #[test]
    fn host_bits_are_ignored_and_duplicates_reported() {
        let mut t = ClientTable::default();
        assert_eq!(t.insert("192.0.2.77/24".parse().unwrap(), 0), None);
        assert_eq!(t.insert("192.0.2.0/24".parse().unwrap(), 1), Some(0));
    }
}
