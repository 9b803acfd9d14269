//! The `[egress]` section: which firewall backend, which table, how long an allowed address
//! stays in its group's set, and how denied flows are read back.
//!
//! ```toml
//! [egress]
//! backend = "nftables"        # the only backend today
//! table = "inet dnsward"      # family and name of the table dnsward creates or adopts
//! grace = "30s"               # an address outlives its answer's TTL by this much
//! min_lifetime = "10s"        # ... and is never written with a shorter timeout
//! max_addresses_per_name = 50 # an answer contributes at most this many addresses
//! max_wait = "50ms"           # longest an answer waits for its set update
//! nflog_group = 10            # where the generated ruleset logs drops
//! contain_after_denied = 20   # distinct denied destinations per denied_window that contain
//! denied_action = "throttle"  # throttle | sinkhole | quarantine | alert-only
//! trust_denied_sources = false # quarantine needs it: no agent can send as another
//! anti_spoof = true           # the ruleset drops agent sources not routed via their interface
//! ```
//!
//! Once the section is present every group is gated unless it sets `egress = false`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config_error::{ConfigProblems, DurationRange};
use crate::policy::group::GroupConfig;

/// Which firewall the sets live in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// nftables, driven through the `nft` JSON API (`nft -j -f -`), one invocation per batch.
    #[default]
    Nftables,
}

/// What a client whose connections keep being denied gets (own evidence only: see
/// [`super::evidence`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeniedAction {
    /// Every name the client asks is held to `containment.throttle_qps` for `throttle_for`.
    #[default]
    Throttle,
    /// Every name the client asks gets the sinkhole answer for `sinkhole_for`.
    Sinkhole,
    /// The client gets REFUSED for everything for `quarantine_for` (needs
    /// `trust_denied_sources`: a forged source would otherwise cut a victim off).
    Quarantine,
    /// Only the alert.
    AlertOnly,
}

impl DeniedAction {
    /// Stable name for events and docs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Throttle => "throttle",
            Self::Sinkhole => "sinkhole",
            Self::Quarantine => "quarantine",
            Self::AlertOnly => "alert-only",
        }
    }
}

/// Most distinct destinations `contain_after_denied` may ask for (the per-client table keeps
/// that many).
pub const MAX_CONTAIN_AFTER_DENIED: u32 = 256;

/// `[egress]`: DNS-gated egress.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// The firewall backend.
    #[serde(default)]
    pub backend: Backend,
    /// `"FAMILY NAME"` of the table, default `inet dnsward`.
    #[serde(default = "default_table")]
    pub table: String,
    /// How long an address stays allowed after its answer's TTL ran out (apps keep using
    /// addresses a little past the TTL; connections already open are kept by conntrack anyway;
    /// at most 1d).
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub grace: Duration,
    /// Shortest timeout ever written (TTL-0 answers would otherwise expire before the connect;
    /// at most 1d).
    #[serde(default = "default_min_lifetime", with = "humantime_serde")]
    pub min_lifetime: Duration,
    /// Most addresses one answer adds (S3-like names return ever new ones); the rest are not
    /// added and counted in `dnsward_egress_addresses_capped_total`.
    #[serde(default = "default_max_addresses")]
    pub max_addresses_per_name: usize,
    /// Longest an answer is held back while its addresses are written; then it is sent anyway
    /// and counted in `dnsward_egress_wait_timeouts_total`.
    #[serde(default = "default_max_wait", with = "humantime_serde")]
    pub max_wait: Duration,
    /// Most (group, address) pairs remembered for deduplication; beyond it, answers are
    /// written without being remembered (counted in `dnsward_egress_untracked_total`).
    #[serde(default = "default_max_tracked")]
    pub max_tracked: usize,
    /// The nflog group the generated ruleset logs drops to, and that dnsward reads.
    #[serde(default = "default_nflog_group")]
    pub nflog_group: u16,
    /// Read the nflog group and turn drops into `egress_denied` events.
    #[serde(default = "default_true")]
    pub read_denied: bool,
    /// Alert on a client after this many denied connection attempts within `denied_window`.
    #[serde(default = "default_denied_alert_after")]
    pub denied_alert_after: u32,
    /// The window for `denied_alert_after` and `contain_after_denied`.
    #[serde(default = "default_denied_window", with = "humantime_serde")]
    pub denied_window: Duration,
    /// Contain a client once this many *distinct* destination addresses were denied to it
    /// within `denied_window` (one blocked address retried forever does not count twice).
    #[serde(default = "default_contain_after_denied")]
    pub contain_after_denied: u32,
    /// What that containment is.
    #[serde(default)]
    pub denied_action: DeniedAction,
    /// The operator vouches that no agent can send with another agent's source address (one
    /// agent per interface with `anti_spoof`, or switch-level IP source guard). Required for
    /// `denied_action = "quarantine"`.
    #[serde(default)]
    pub trust_denied_sources: bool,
    /// The generated ruleset drops packets from a group's CIDRs that do not arrive on the
    /// interface their source is routed through (`fib saddr . iif oif missing drop`, reverse
    /// path filtering), before anything else: a forged source from another segment is never
    /// logged against the address it names.
    #[serde(default = "default_true")]
    pub anti_spoof: bool,
    /// Delete the sets when dnsward stops (default: keep them, so open connections and
    /// recently resolved addresses keep working across a restart).
    #[serde(default)]
    pub delete_on_shutdown: bool,
    /// The `nft` program.
    #[serde(default = "default_nft")]
    pub nft: PathBuf,
    /// Addresses of dnsward that agents may send DNS to (53, and the encrypted ports). Default:
    /// the specific addresses in `[server] listen`.
    #[serde(default)]
    pub resolver_addresses: Vec<IpAddr>,
    /// TCP ports of dnsward's encrypted listeners that the ruleset opens (DoT, DoH).
    #[serde(default = "default_encrypted_ports")]
    pub encrypted_ports: Vec<u16>,
    /// Generate rules in the `output` chain too (agents on this host), not only `forward`.
    #[serde(default = "default_true")]
    pub output_chain: bool,
    /// Answer the encrypted-DNS canaries with NXDOMAIN and block the public DoH/DoT resolver
    /// names (reason `encrypted-dns bypass`).
    #[serde(default = "default_true")]
    pub block_encrypted_dns: bool,
    /// A list file of DoH/DoT resolver names replacing the built-in one (same format as allow
    /// lists: one name or `*.suffix` per line).
    #[serde(default)]
    pub encrypted_dns_list: Option<PathBuf>,
}

impl Default for EgressConfig {
    fn default() -> Self {
        toml::from_str("").unwrap_or_else(|_| unreachable!("every field has a default"))
    }
}

/// Accepted `grace` and `min_lifetime`: a day (an element's timeout is capped at 7 days).
pub const GRACE: DurationRange = DurationRange::up_to(Duration::from_secs(86_400));
/// Accepted `denied_window`.
pub const DENIED_WINDOW: DurationRange =
    DurationRange::new(Duration::from_secs(1), Duration::from_secs(86_400));

fn default_table() -> String {
    "inet dnsward".into()
}
fn default_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_min_lifetime() -> Duration {
    Duration::from_secs(10)
}
fn default_max_addresses() -> usize {
    50
}
fn default_max_wait() -> Duration {
    Duration::from_millis(50)
}
fn default_max_tracked() -> usize {
    100_000
}
fn default_nflog_group() -> u16 {
    10
}
fn default_true() -> bool {
    true
}
fn default_denied_alert_after() -> u32 {
    5
}
fn default_denied_window() -> Duration {
    Duration::from_secs(60)
}
fn default_contain_after_denied() -> u32 {
    20
}
fn default_nft() -> PathBuf {
    PathBuf::from("nft")
}
fn default_encrypted_ports() -> Vec<u16> {
    vec![853, 443]
}

/// The nftables families a table may live in and still hold both set types.
const FAMILIES: [&str; 3] = ["inet", "ip", "ip6"];

impl EgressConfig {
    /// `(family, name)` of the table; `("inet", "dnsward")` if the setting is malformed (which
    /// [`Self::validate`] reports).
    #[must_use]
    pub fn table_parts(&self) -> (&str, &str) {
        let mut it = self.table.split_whitespace();
        match (it.next(), it.next(), it.next()) {
            (Some(f), Some(n), None) => (f, n),
            (Some(n), None, None) => ("inet", n),
            _ => ("inet", "dnsward"),
        }
    }

    /// Check the section and the groups' set names, pushing every problem.
    pub fn validate(&self, at: &str, groups: &[GroupConfig], problems: &mut ConfigProblems) {
        let mut it = self.table.split_whitespace();
        match (it.next(), it.next(), it.next()) {
            (Some(f), Some(n), None) if FAMILIES.contains(&f) && valid_identifier(n) => {}
            (Some(n), None, None) if valid_identifier(n) => {}
            _ => problems.push(
                format!("{at}.table"),
                format!(
                    "{:?} is not \"FAMILY NAME\" (family inet, ip or ip6; name of letters, digits, _)",
                    self.table
                ),
            ),
        }
        let (family, _) = self.table_parts();
        if family != "inet" {
            problems.push(
                format!("{at}.table"),
                "the table must be in the inet family: each group has an IPv4 and an IPv6 set",
            );
        }
        if self.max_addresses_per_name == 0 {
            problems.push(
                format!("{at}.max_addresses_per_name"),
                "must be at least 1: no answer could allow anything",
            );
        }
        if self.max_wait > Duration::from_secs(1) {
            problems.push(
                format!("{at}.max_wait"),
                "must be at most 1s: every answer could be held this long",
            );
        }
        if self.max_tracked == 0 {
            problems.push(format!("{at}.max_tracked"), "must be at least 1");
        }
        if self.denied_alert_after == 0 {
            problems.push(format!("{at}.denied_alert_after"), "must be at least 1");
        }
        if !(1..=MAX_CONTAIN_AFTER_DENIED).contains(&self.contain_after_denied) {
            problems.push(
                format!("{at}.contain_after_denied"),
                format!(
                    "must be between 1 and {MAX_CONTAIN_AFTER_DENIED} (turn containment off with denied_action = \"alert-only\")"
                ),
            );
        }
        problems.check_duration(
            format!("{at}.denied_window"),
            self.denied_window,
            DENIED_WINDOW,
        );
        if self.denied_action == DeniedAction::Quarantine && !self.trust_denied_sources {
            problems.push(
                format!("{at}.denied_action"),
                "\"quarantine\" needs trust_denied_sources = true: a dropped packet's source can be forged, and a quarantine would cut the named client off entirely (use \"throttle\" or \"sinkhole\", or make sources unforgeable and say so)",
            );
        }
        if self.trust_denied_sources && !self.anti_spoof {
            problems.push(
                format!("{at}.trust_denied_sources"),
                "cannot be true with anti_spoof = false: nothing in the ruleset then stops forged sources",
            );
        }
        problems.check_duration(format!("{at}.grace"), self.grace, GRACE);
        problems.check_duration(format!("{at}.min_lifetime"), self.min_lifetime, GRACE);
        if self.block_encrypted_dns {
            let _ = super::bypass::EncryptedDns::load(
                self.encrypted_dns_list.as_deref(),
                &format!("{at}.encrypted_dns_list"),
                problems,
            );
        }
        // Two groups whose names sanitise to the same set name would share a set: one group
        // could then reach what the other resolved.
        let mut seen: Vec<(String, &str)> = Vec::new();
        for (i, g) in groups.iter().enumerate() {
            if !g.egress {
                continue;
            }
            let set = set_suffix(&g.name);
            if let Some((_, other)) = seen.iter().find(|(s, _)| *s == set) {
                problems.push(
                    format!("groups[{i}].name"),
                    format!(
                        "group {:?} and group {other:?} both map to the sets allow4_{set} / allow6_{set}: rename one",
                        g.name
                    ),
                );
            } else {
                seen.push((set, &g.name));
            }
        }
    }
}

/// The part of a group's set names after `allow4_` / `allow6_`: lower-case letters, digits and
/// `_`, every other character replaced by `_`, at most 64 characters.
#[must_use]
pub fn set_suffix(group: &str) -> String {
    group
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// The IPv4 set of a group.
#[must_use]
pub fn set4_name(group: &str) -> String {
    format!("allow4_{}", set_suffix(group))
}

/// The IPv6 set of a group.
#[must_use]
pub fn set6_name(group: &str) -> String {
    format!("allow6_{}", set_suffix(group))
}

fn valid_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(names: &[&str]) -> Vec<GroupConfig> {
        names
            .iter()
            .map(|n| toml::from_str(&format!("name = {n:?}")).unwrap())
            .collect()
    }

    #[test]
    fn defaults_match_the_documentation() {
        let c = EgressConfig::default();
        assert_eq!(c.table_parts(), ("inet", "dnsward"));
        assert_eq!(c.max_wait, Duration::from_millis(50));
        assert_eq!(c.max_addresses_per_name, 50);
    }

    #[test]
    fn set_names_are_sanitised() {
        assert_eq!(set4_name("Agents-EU.1"), "allow4_agents_eu_1");
        assert_eq!(set6_name("ci"), "allow6_ci");
    }

    #[test]
    fn colliding_set_names_and_bad_settings_are_all_reported() {
        let mut c = EgressConfig {
            table: "bridge x y".into(),
            max_addresses_per_name: 0,
            ..EgressConfig::default()
        };
        c.max_wait = Duration::from_secs(5);
        c.contain_after_denied = 0;
        c.denied_window = Duration::ZERO;
        c.denied_action = DeniedAction::Quarantine;
        let mut p = ConfigProblems::default();
        c.validate("egress", &groups(&["a-b", "a.b", "c"]), &mut p);
        let text = p.to_string();
        for needle in [
            "egress.table",
            "egress.max_addresses_per_name",
            "egress.max_wait",
            "egress.contain_after_denied",
            "egress.denied_window",
            "egress.denied_action",
            "groups[1].name",
        ] {
            assert!(text.contains(needle), "missing {needle} in {text}");
        }
    }

    #[test]
    fn denied_containment_keys_parse_and_quarantine_needs_trusted_sources() {
        let c: EgressConfig = toml::from_str(
            "contain_after_denied = 5\ndenied_action = \"alert-only\"\ndenied_window = \"2m\"",
        )
        .unwrap();
        assert_eq!(
            (c.contain_after_denied, c.denied_action, c.denied_window),
            (5, DeniedAction::AlertOnly, Duration::from_secs(120))
        );
        let d = EgressConfig::default();
        assert_eq!(
            (
                d.contain_after_denied,
                d.denied_action,
                d.trust_denied_sources,
                d.anti_spoof
            ),
            (20, DeniedAction::Throttle, false, true)
        );
        assert!(toml::from_str::<EgressConfig>("denied_action = \"ban\"").is_err());
        let trusted: EgressConfig =
            toml::from_str("denied_action = \"quarantine\"\ntrust_denied_sources = true").unwrap();
        let mut p = ConfigProblems::default();
        trusted.validate("egress", &[], &mut p);
        assert!(p.is_empty(), "{p}");
        let unsafe_trust: EgressConfig =
            toml::from_str("trust_denied_sources = true\nanti_spoof = false").unwrap();
        unsafe_trust.validate("egress", &[], &mut p);
        assert!(p.to_string().contains("egress.trust_denied_sources"), "{p}");
    }

    #[test]
    fn opted_out_groups_do_not_collide() {
        let mut g = groups(&["a-b", "a.b"]);
        g[1].egress = false;
        let mut p = ConfigProblems::default();
        EgressConfig::default().validate("egress", &g, &mut p);
        assert!(p.is_empty(), "{p}");
    }
}
