//! Policy checks on answers.
//!
//! A name can be allowed while the answer points somewhere that is not:
//! - `docs.vendor.example` may be a CNAME to `attacker-controlled.example`. Every CNAME target
//!   in an answer, from the cache or fresh, must itself be allowed for the client's group.
//!   Deny rules apply to targets too.
//! - an allowed public name may resolve to `127.0.0.1`, `10.0.0.5` or `169.254.169.254` (the
//!   cloud metadata service): DNS rebinding turns the agent into a proxy into the internal
//!   network. With `block_private_answers` (on by default) a forwarded answer holding a
//!   loopback, private, link-local, CGNAT, unique-local or unspecified address, or one of the
//!   resolver's own addresses, is blocked. Local zones and conditional forward zones are the
//!   operator's own data and are not checked for addresses; names in
//!   `private_answers_allowed` (and below) are exempt.
//!
//! Either way the client gets its group's block answer and the event names the target or the
//! address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::policy::group::Group;

/// Why an answer must not reach a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerProblem<'a> {
    /// A CNAME target the group may not resolve.
    ForbiddenTarget(&'a str),
    /// An address inside the internal network or the resolver itself.
    PrivateAddress(IpAddr),
}

impl fmt::Display for AnswerProblem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ForbiddenTarget(t) => write!(f, "CNAME target {t} not allowed"),
            Self::PrivateAddress(ip) => {
                write!(f, "answer address {ip} is private or internal (rebinding)")
            }
        }
    }
}

/// Where an answer came from, for the address check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerSource {
    /// A local zone or a conditional forward zone: the operator's own data.
    Trusted,
    /// The default upstreams: anyone's data.
    Forwarded,
}

/// The first reason the answer to `qname` must not reach a client of `group`, if any.
/// `own` are the resolver's own listening addresses.
#[must_use]
pub fn check_answer<'a>(
    group: &Group,
    qname: &str,
    cname_targets: &'a [Box<str>],
    addresses: &[IpAddr],
    source: AnswerSource,
    own: &[IpAddr],
) -> Option<AnswerProblem<'a>> {
    if let Some(t) = forbidden_target(group, cname_targets) {
        return Some(AnswerProblem::ForbiddenTarget(t));
    }
    if source == AnswerSource::Trusted
        || !group.block_private_answers
        || addresses.is_empty()
        || group.private_answers_allowed.find_covering(qname).is_some()
    {
        return None;
    }
    addresses
        .iter()
        .find(|ip| is_internal(**ip) || own.contains(ip))
        .map(|ip| AnswerProblem::PrivateAddress(*ip))
}

/// Loopback, RFC 1918, link-local, CGNAT (100.64/10), "this network" (0/8), broadcast,
/// unique-local (fc00::/7), and IPv4 addresses embedded in IPv6 (mapped, NAT64) that are any
/// of those.
#[must_use]
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_internal_v4(v4);
    }
    let seg = ip.segments();
    // NAT64 well-known prefix 64:ff9b::/96 carries an IPv4 address in its last 32 bits.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., hi, lo] = seg;
        let v4 = Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
        return is_internal_v4(v4);
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local
        || (seg[0] & 0xffc0) == 0xfe80 // link local
        || (seg[0] & 0xffc0) == 0xfec0 // site local (deprecated)
}

/// The first CNAME target the group may not resolve, if any.
#[must_use]
pub fn forbidden_target<'a>(group: &Group, cname_targets: &'a [Box<str>]) -> Option<&'a str> {
    cname_targets
        .iter()
        .map(AsRef::as_ref)
        .find(|target| !group.decide(target).is_allowed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_error::ConfigProblems;
    use crate::policy::group::GroupConfig;
    use std::path::Path;

    fn group(extra: &str) -> Group {
        let cfg: GroupConfig =
            toml::from_str(&format!("name = \"g\"\nmode = \"denylist\"\n{extra}")).unwrap();
        let mut p = ConfigProblems::default();
        let (g, _) = Group::from_config(&cfg, "g", Path::new("."), &mut p);
        assert!(p.is_empty(), "{p}");
        g
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "192.0.2.1",
            "8.8.8.8",
            "2001:db8::1",
            "::ffff:192.0.2.1",
            "100.128.0.1",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn private_forwarded_answers_are_blocked_unless_trusted_or_exempt() {
        let g = group("private_answers_allowed = [\"intranet.example\"]");
        let meta: IpAddr = "169.254.169.254".parse().unwrap();
        let public: IpAddr = "192.0.2.1".parse().unwrap();
        let own: IpAddr = "192.0.2.53".parse().unwrap();
        let check = |name, ips: &[IpAddr], source| check_answer(&g, name, &[], ips, source, &[own]);
        assert_eq!(
            check("x.example", &[public, meta], AnswerSource::Forwarded),
            Some(AnswerProblem::PrivateAddress(meta))
        );
        assert_eq!(check("x.example", &[public], AnswerSource::Forwarded), None);
        assert_eq!(
            check("x.example", &[own], AnswerSource::Forwarded),
            Some(AnswerProblem::PrivateAddress(own)),
            "the resolver's own address"
        );
        assert_eq!(check("x.example", &[meta], AnswerSource::Trusted), None);
        assert_eq!(
            check("a.intranet.example", &[meta], AnswerSource::Forwarded),
            None
        );
        let off = group("block_private_answers = false");
        assert_eq!(
            check_answer(
                &off,
                "x.example",
                &[],
                &[meta],
                AnswerSource::Forwarded,
                &[]
            ),
            None
        );
    }

    #[test]
    fn targets_must_be_allowed_too() {
        let cfg: GroupConfig = toml::from_str(
            "name = \"g\"\nallow = [\"docs.vendor.example\", \"*.cdn.example\"]\ndeny = [\"bad.cdn.example\"]",
        )
        .unwrap();
        let (g, _) = Group::from_config(&cfg, "g", Path::new("."), &mut ConfigProblems::default());
        assert_eq!(forbidden_target(&g, &["x.cdn.example".into()]), None);
        assert_eq!(
            forbidden_target(&g, &["x.cdn.example".into(), "evil.example".into()]),
            Some("evil.example")
        );
        assert_eq!(
            forbidden_target(&g, &["bad.cdn.example".into()]),
            Some("bad.cdn.example")
        );
        assert_eq!(forbidden_target(&g, &[]), None);
    }
}
