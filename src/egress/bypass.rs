//! Encrypted-DNS bypass: the canary names that tell browsers and operating systems "this
//! network filters DNS, do not switch to your own encrypted resolver", and the names of public
//! DoH/DoT resolvers an agent would need to carry its own DNS past dnsward.
//!
//! - `use-application-dns.net` (Firefox): NXDOMAIN disables Firefox's automatic DoH. Answering
//!   an address (even 0.0.0.0) would turn it *on*.
//! - `mask.icloud.com`, `mask-h2.icloud.com` (Apple iCloud Private Relay): NXDOMAIN tells Apple
//!   devices the network does not allow Private Relay.
//!
//! Both are answered NXDOMAIN for every group, whatever its policy: the answer is a signal about
//! the network, not a decision about the name. Resolver names from the list are blocked with
//! reason `encrypted-dns bypass` and raise an alert (once per client and name per quiet period).
//! DoT on 853 and DoH to a hard-coded address are stopped by the egress ruleset instead, since no
//! name is asked.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use parking_lot::Mutex;

use crate::config_error::ConfigProblems;
use crate::names::{normalise, validate_name};
use crate::policy::group::{RuleSet, load_list};

/// The built-in resolver list (`config/lists/encrypted-dns-resolvers.txt`).
pub const BUILTIN_LIST: &str = include_str!("../../config/lists/encrypted-dns-resolvers.txt");

/// The canaries, answered NXDOMAIN.
pub const CANARIES: [&str; 3] = [
    "use-application-dns.net",
    "mask.icloud.com",
    "mask-h2.icloud.com",
];

/// Most (client, name) pairs remembered for alert quieting; when full, the map is cleared.
const MAX_QUIET: usize = 4096;
/// One alert per client and resolver name per this period.
const QUIET: Duration = Duration::from_secs(600);

/// Why a name is answered NXDOMAIN regardless of policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass<'a> {
    /// A vendor canary (no alert: browsers ask it routinely).
    Canary,
    /// A public encrypted-DNS resolver; the field is the matching list rule.
    Resolver(crate::policy::group::RuleMatch<'a>),
}

impl Bypass<'_> {
    /// Reason string for the query event.
    #[must_use]
    pub fn reason(&self) -> String {
        match self {
            Self::Canary => "encrypted-dns bypass: canary".into(),
            Self::Resolver(rule) => format!("encrypted-dns bypass: {rule}"),
        }
    }
}

/// The canaries and the resolver list.
#[derive(Debug, Default)]
pub struct EncryptedDns {
    resolvers: RuleSet,
    /// (client, name) → last alert time, for quieting repeated alerts.
    alerted: Mutex<HashMap<(IpAddr, Box<str>), Duration>>,
}

impl EncryptedDns {
    /// The built-in list, or the file `list` instead; problems are pushed with `at`.
    #[must_use]
    pub fn load(list: Option<&Path>, at: &str, problems: &mut ConfigProblems) -> Self {
        let mut resolvers = RuleSet::default();
        match list {
            Some(path) => load_list(path, &mut resolvers, problems),
            None => parse_list(BUILTIN_LIST, at, &mut resolvers, problems),
        }
        Self {
            resolvers,
            alerted: Mutex::new(HashMap::new()),
        }
    }

    /// Number of resolver rules.
    #[must_use]
    pub fn len(&self) -> usize {
        self.resolvers.len()
    }

    /// True when the list is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.resolvers.is_empty()
    }

    /// Whether `name` (lower-case, no trailing dot) is a canary or a listed resolver.
    #[must_use]
    pub fn check(&self, name: &str) -> Option<Bypass<'_>> {
        if CANARIES.contains(&name) {
            return Some(Bypass::Canary);
        }
        self.resolvers.find(name).map(Bypass::Resolver)
    }

    /// Whether to raise an alert for `client` asking `name` now (not within the quiet period).
    pub fn should_alert(&self, client: IpAddr, name: &str, now: Duration) -> bool {
        let mut map = self.alerted.lock();
        if map.len() >= MAX_QUIET {
            map.clear();
        }
        match map.get_mut(&(client, name.into())) {
            Some(last) if now.saturating_sub(*last) < QUIET => false,
            Some(last) => {
                *last = now;
                true
            }
            None => {
                map.insert((client, name.into()), now);
                true
            }
        }
    }
}

fn parse_list(text: &str, at: &str, set: &mut RuleSet, problems: &mut ConfigProblems) {
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let rule = normalise(line);
        match validate_name(rule.strip_prefix("*.").unwrap_or(&rule)) {
            Ok(()) => set.add(&rule),
            Err(e) => problems.push(format!("{at}:{}", i + 1), format!("{line:?}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_list_parses_and_matches_canaries_and_resolvers() {
        let mut p = ConfigProblems::default();
        let e = EncryptedDns::load(None, "builtin", &mut p);
        assert!(p.is_empty(), "{p}");
        assert!(e.len() > 40);
        assert_eq!(e.check("use-application-dns.net"), Some(Bypass::Canary));
        assert_eq!(e.check("mask-h2.icloud.com"), Some(Bypass::Canary));
        assert!(matches!(e.check("dns.google"), Some(Bypass::Resolver(_))));
        assert!(matches!(
            e.check("abc123.dns.nextdns.io"),
            Some(Bypass::Resolver(_))
        ));
        assert_eq!(e.check("api.openai.com"), None);
        assert_eq!(e.check("icloud.com"), None);
    }

    #[test]
    fn alerts_are_quieted_per_client_and_name() {
        let e = EncryptedDns::default();
        let c: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(e.should_alert(c, "dns.google", Duration::from_secs(1)));
        assert!(!e.should_alert(c, "dns.google", Duration::from_secs(60)));
        assert!(e.should_alert(c, "dns.quad9.net", Duration::from_secs(60)));
        assert!(e.should_alert(c, "dns.google", Duration::from_secs(700)));
    }
}
