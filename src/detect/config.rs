//! The `[detect]` section and the per-group `[groups.detect]` settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Level;
use crate::config_error::{ConfigProblems, DurationRange};
use crate::names::validate_name;

/// `[detect]`: the tunnel/exfiltration detector.
///
/// ```toml
/// [detect]
/// enabled = true
/// window = "15m"            # per (client, domain) and per domain window, 1m–6h
/// alert_interval = "5m"     # repeat an alert for a key at most this often while it stays high, 1s–1d
/// max_client_domains = 65536
/// max_domains = 32768
/// max_clients = 16384
/// default_exceptions = true
/// exceptions = ["corp-av.example.com"]
/// short_window = "1m"       # burst window for information volume, 10s–10m
/// long_window = "3h"        # slow-drip window, at least the window, at most 48h
/// short_budget = 768        # novel name bytes per (client, domain) per short window
/// window_budget = 900       # ... per detection window
/// long_budget = 8192        # ... per long window
/// client_budget_factor = 3.0  # a client across all domains gets this many budgets
/// shared_name_slots = 262144  # fleet-wide "who asked this name" table, 8 bytes a slot
/// prevalence_window = "24h" # distinct clients per domain are counted over this, 1m–30d
/// search_domains = ["cluster.local", "compute.internal", "c.my-project.internal"]  # search suffixes
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// Score queries at all. When false, `observe` returns an empty assessment.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Length of the sliding window. Long enough to see a slow drip (one query every few
    /// seconds) add up: 15 minutes by default.
    #[serde(default = "default_window", with = "humantime_serde")]
    pub window: Duration,
    /// While a key stays above the alert threshold at the same level, re-alert at most this often.
    #[serde(default = "default_alert_interval", with = "humantime_serde")]
    pub alert_interval: Duration,
    /// Bound on tracked (client, registrable domain) keys; least-used keys are evicted beyond
    /// it (≈ 870 bytes each: three windows of two sketches, the recent-name filter, samples).
    #[serde(default = "default_max_client_domains")]
    pub max_client_domains: usize,
    /// Bound on tracked registrable domains (fleet-wide view and prevalence), evicted likewise
    /// (≈ 1,010 bytes each).
    #[serde(default = "default_max_domains")]
    pub max_domains: usize,
    /// Bound on tracked clients (rate baseline and client-wide volume), evicted likewise
    /// (≈ 830 bytes each).
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
    /// Use the shipped exception list ([`super::exceptions::DEFAULT_EXCEPTIONS`]).
    #[serde(default = "default_enabled")]
    pub default_exceptions: bool,
    /// More exceptions for every group: registrable domains or explicit suffixes (at least two
    /// labels). An exception only takes away appearance points: the names still count towards
    /// the volume budgets.
    #[serde(default)]
    pub exceptions: Vec<String>,
    /// Lookup services beside the shipped ones ([`super::exceptions::LOOKUP_SERVICES`]): zones
    /// a vendor runs only to answer questions put in names (an antivirus or reputation lookup,
    /// an in-house DNS blocklist), whose names no one else reads. Each is an exception too, and
    /// its names count towards the volume budgets at one part in
    /// [`super::exceptions::LOOKUP_SERVICE_SHARE`] of their information. Never a domain where
    /// anyone can get a name delegated: that would be a tunnel's discount.
    #[serde(default)]
    pub lookup_services: Vec<String>,
    /// The short information-volume window, for bursts.
    #[serde(default = "default_short_window", with = "humantime_serde")]
    pub short_window: Duration,
    /// The long information-volume window, for slow drips.
    #[serde(default = "default_long_window", with = "humantime_serde")]
    pub long_window: Duration,
    /// Novel query-name bytes (estimated information, see `detect::volume::info_bits`) one
    /// client may send one registrable domain in `short_window` before the volume term is full.
    #[serde(default = "default_short_budget")]
    pub short_budget: u32,
    /// The same over `window`.
    #[serde(default = "default_window_budget")]
    pub window_budget: u32,
    /// The same over `long_window`.
    #[serde(default = "default_long_budget")]
    pub long_budget: u32,
    /// One client across all its domains gets this many times each budget (counting only the
    /// part of each name beyond an ordinary host name's few bytes), so spreading a tunnel over
    /// many domains does not help.
    #[serde(default = "default_client_budget_factor")]
    pub client_budget_factor: f32,
    /// Slots of the fleet-wide table that remembers which client asked a name last (8 bytes
    /// each, rounded up to a power of two): a name another client asked first is not new
    /// information from this one.
    #[serde(default = "default_shared_name_slots")]
    pub shared_name_slots: usize,
    /// Distinct clients per registrable domain are counted over this period (prevalence: a
    /// domain many agents use for long gets up to twice the budget; a tunnel domain is used by
    /// one).
    #[serde(default = "default_prevalence_window", with = "humantime_serde")]
    pub prevalence_window: Duration,
    /// The search suffixes of the agents' resolvers (Kubernetes' `cluster.local` by default).
    /// A resolver with `ndots:5` tries each external name under its search list first
    /// (`api.github.com.<namespace>.svc.cluster.local`, NXDOMAIN, then `api.github.com`): such
    /// an expansion of a public name under one of these suffixes counts as a query but is not
    /// new information, or a busy agent would look like a tunnel into `cluster.local`. Other
    /// names under them are scored as any name. Internal zones only: never a public suffix.
    #[serde(default = "default_search_domains")]
    pub search_domains: Vec<String>,
}

/// Kubernetes' own suffix and the managed clouds' fixed internal zones, which EKS and AKS put
/// in a pod's search list after it: `<region>.compute.internal` and `ec2.internal` (AWS),
/// `google.internal` (GCP), `<id>.<x>.internal.cloudapp.net` (Azure). GKE's other two,
/// `<zone>.c.<project>.internal` and `c.<project>.internal`, name the project: add
/// `c.<project>.internal`. Not `internal` itself: private zones (`corp.internal`) live there,
/// and a conditional forward zone could let someone read what is written under them.
fn default_search_domains() -> Vec<String> {
    [
        "cluster.local",
        "compute.internal",
        "ec2.internal",
        "google.internal",
        "internal.cloudapp.net",
    ]
    .map(String::from)
    .to_vec()
}

fn default_enabled() -> bool {
    true
}
fn default_window() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_alert_interval() -> Duration {
    Duration::from_secs(5 * 60)
}
fn default_max_client_domains() -> usize {
    65_536
}
fn default_max_domains() -> usize {
    32_768
}
fn default_max_clients() -> usize {
    16_384
}
fn default_short_window() -> Duration {
    Duration::from_secs(60)
}
fn default_long_window() -> Duration {
    Duration::from_secs(3 * 3600)
}
fn default_short_budget() -> u32 {
    768
}
fn default_window_budget() -> u32 {
    900
}
fn default_long_budget() -> u32 {
    8192
}
fn default_client_budget_factor() -> f32 {
    3.0
}
fn default_shared_name_slots() -> usize {
    1 << 18
}
fn default_prevalence_window() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            enabled: default_enabled(),
            window: default_window(),
            alert_interval: default_alert_interval(),
            max_client_domains: default_max_client_domains(),
            max_domains: default_max_domains(),
            max_clients: default_max_clients(),
            default_exceptions: default_enabled(),
            exceptions: Vec::new(),
            lookup_services: Vec::new(),
            short_window: default_short_window(),
            long_window: default_long_window(),
            short_budget: default_short_budget(),
            window_budget: default_window_budget(),
            long_budget: default_long_budget(),
            client_budget_factor: default_client_budget_factor(),
            shared_name_slots: default_shared_name_slots(),
            prevalence_window: default_prevalence_window(),
            search_domains: default_search_domains(),
        }
    }
}

/// Accepted `window`.
pub const WINDOW: DurationRange =
    DurationRange::new(Duration::from_secs(60), Duration::from_secs(6 * 3600));
/// Accepted `short_window`.
pub const SHORT_WINDOW: DurationRange =
    DurationRange::new(Duration::from_secs(10), Duration::from_secs(600));
/// Accepted `alert_interval`: a key that stays high is alerted on at least once a day.
pub const ALERT_INTERVAL: DurationRange =
    DurationRange::new(Duration::from_secs(1), Duration::from_secs(86_400));
/// Accepted `prevalence_window`: a month. Longer, the half-window epochs never turn over and
/// a domain's client count only grows.
pub const PREVALENCE_WINDOW: DurationRange =
    DurationRange::new(Duration::from_secs(60), Duration::from_secs(30 * 86_400));

/// Smallest and largest accepted table bound.
const TABLE_BOUNDS: (usize, usize) = (64, 10_000_000);

impl DetectConfig {
    /// Records every problem in this section; `at` is its key path (`detect`).
    pub fn validate(&self, at: &str, problems: &mut ConfigProblems) {
        problems.check_duration(format!("{at}.window"), self.window, WINDOW);
        problems.check_duration(
            format!("{at}.alert_interval"),
            self.alert_interval,
            ALERT_INTERVAL,
        );
        for (key, value) in [
            ("max_client_domains", self.max_client_domains),
            ("max_domains", self.max_domains),
            ("max_clients", self.max_clients),
        ] {
            if !(TABLE_BOUNDS.0..=TABLE_BOUNDS.1).contains(&value) {
                problems.push(
                    format!("{at}.{key}"),
                    format!("must be between {} and {}", TABLE_BOUNDS.0, TABLE_BOUNDS.1),
                );
            }
        }
        problems.check_duration(
            format!("{at}.short_window"),
            self.short_window,
            SHORT_WINDOW,
        );
        if self.long_window < self.window || self.long_window > Duration::from_secs(48 * 3600) {
            problems.push(
                format!("{at}.long_window"),
                "must be at least `window` and at most 48h",
            );
        }
        for (key, value) in [
            ("short_budget", self.short_budget),
            ("window_budget", self.window_budget),
            ("long_budget", self.long_budget),
        ] {
            if !(64..=16 * 1024 * 1024).contains(&value) {
                problems.push(
                    format!("{at}.{key}"),
                    "must be between 64 and 16777216 bytes",
                );
            }
        }
        if !(self.client_budget_factor >= 1.0 && self.client_budget_factor <= 100.0) {
            problems.push(
                format!("{at}.client_budget_factor"),
                "must be between 1 and 100",
            );
        }
        if !(1024..=1 << 28).contains(&self.shared_name_slots) {
            problems.push(
                format!("{at}.shared_name_slots"),
                "must be between 1024 and 268435456",
            );
        }
        problems.check_duration(
            format!("{at}.prevalence_window"),
            self.prevalence_window,
            PREVALENCE_WINDOW,
        );
        validate_exceptions(&self.exceptions, &format!("{at}.exceptions"), problems);
        validate_exceptions(
            &self.lookup_services,
            &format!("{at}.lookup_services"),
            problems,
        );
        for (i, entry) in self.lookup_services.iter().enumerate() {
            let name = crate::names::normalise(entry);
            if crate::names::is_known_public_suffix(&name) {
                problems.push(
                    format!("{at}.lookup_services[{i}]"),
                    format!(
                        "{entry:?} is a public suffix: anyone can register a domain under it, \
                         and a lookup service's discount would be a tunnel's; name the vendor's \
                         own lookup zone (e.g. \"avlookup.vendor.example\")"
                    ),
                );
            }
        }
        for (i, entry) in self.search_domains.iter().enumerate() {
            let key = format!("{at}.search_domains[{i}]");
            if let Err(why) = validate_name(entry) {
                problems.push(key, why);
            } else if entry.to_ascii_lowercase() != *entry {
                problems.push(key, format!("write {entry:?} in lower case"));
            } else if crate::names::is_known_public_suffix(entry) {
                problems.push(
                    key,
                    format!(
                        "{entry:?} is a public suffix: a search domain is an internal zone \
                         (e.g. \"cluster.local\", \"corp.example.com\"), or names under any \
                         domain there would go unmeasured"
                    ),
                );
            }
        }
    }
}

/// Per-group detection settings, `[groups.detect]`.
///
/// ```toml
/// [groups.detect]
/// monitor_only = false
/// alert = 60
/// throttle = 70
/// sinkhole = 80
/// quarantine = 90
/// exceptions = ["telemetry.example.net"]
/// volume_budget_percent = 100   # scales every volume budget for this group
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupDetectConfig {
    /// Alert but never act: the assessment still carries the level, the alert says `none`.
    #[serde(default)]
    pub monitor_only: bool,
    /// Score (1–100) from which an alert is raised.
    #[serde(default = "default_alert")]
    pub alert: u8,
    /// Score from which the (client, domain) is throttled.
    #[serde(default = "default_throttle")]
    pub throttle: u8,
    /// Score from which the domain is sinkholed for the client (or its group).
    #[serde(default = "default_sinkhole")]
    pub sinkhole: u8,
    /// Score from which the whole client is quarantined.
    #[serde(default = "default_quarantine")]
    pub quarantine: u8,
    /// Exceptions for this group on top of the global ones.
    #[serde(default)]
    pub exceptions: Vec<String>,
    /// Scales the `[detect]` volume budgets for this group, in percent (10–10000): a group of
    /// mail relays doing many blocklist lookups may need more, a locked-down group less.
    #[serde(default = "default_volume_budget_percent")]
    pub volume_budget_percent: u32,
}

fn default_volume_budget_percent() -> u32 {
    100
}

fn default_alert() -> u8 {
    60
}
fn default_throttle() -> u8 {
    70
}
fn default_sinkhole() -> u8 {
    80
}
fn default_quarantine() -> u8 {
    90
}

impl Default for GroupDetectConfig {
    fn default() -> Self {
        Self {
            monitor_only: false,
            alert: default_alert(),
            throttle: default_throttle(),
            sinkhole: default_sinkhole(),
            quarantine: default_quarantine(),
            exceptions: Vec::new(),
            volume_budget_percent: default_volume_budget_percent(),
        }
    }
}

impl GroupDetectConfig {
    /// Records every problem; `at` is the key path, e.g. `groups[2].detect`.
    pub fn validate(&self, at: &str, problems: &mut ConfigProblems) {
        let levels = [
            ("alert", self.alert),
            ("throttle", self.throttle),
            ("sinkhole", self.sinkhole),
            ("quarantine", self.quarantine),
        ];
        for (key, value) in levels {
            if !(1..=100).contains(&value) {
                problems.push(format!("{at}.{key}"), "must be between 1 and 100");
            }
        }
        for pair in levels.windows(2) {
            if pair[1].1 < pair[0].1 {
                problems.push(
                    format!("{at}.{}", pair[1].0),
                    format!(
                        "must not be below {} ({} < {})",
                        pair[0].0, pair[1].1, pair[0].1
                    ),
                );
            }
        }
        if !(10..=10_000).contains(&self.volume_budget_percent) {
            problems.push(
                format!("{at}.volume_budget_percent"),
                "must be between 10 and 10000",
            );
        }
        validate_exceptions(&self.exceptions, &format!("{at}.exceptions"), problems);
    }

    /// `volume_budget_percent` as a factor.
    #[must_use]
    pub fn volume_scale(&self) -> f32 {
        #[allow(clippy::cast_precision_loss)] // at most 10,000
        let percent = self.volume_budget_percent as f32;
        percent / 100.0
    }

    /// The lowest threshold of any level: a score under it changes nothing.
    #[must_use]
    pub fn lowest_threshold(&self) -> u8 {
        self.alert
            .min(self.throttle)
            .min(self.sinkhole)
            .min(self.quarantine)
    }

    /// The highest level whose threshold `score` reaches.
    #[must_use]
    pub fn level_for(&self, score: u8) -> Level {
        if score >= self.quarantine {
            Level::Quarantine
        } else if score >= self.sinkhole {
            Level::Sinkhole
        } else if score >= self.throttle {
            Level::Throttle
        } else if score >= self.alert {
            Level::Alert
        } else {
            Level::None
        }
    }
}

fn validate_exceptions(list: &[String], at: &str, problems: &mut ConfigProblems) {
    for (i, entry) in list.iter().enumerate() {
        let trimmed = entry.trim();
        let name = trimmed.strip_suffix('.').unwrap_or(trimmed);
        if let Some(why) = crate::names::exception_problem(name) {
            problems.push(format!("{at}[{i}]"), why);
        } else if name != entry {
            problems.push(
                format!("{at}[{i}]"),
                format!("write {entry:?} without spaces or trailing dot"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_domains_are_internal_zones() {
        let d: DetectConfig = toml::from_str("").unwrap();
        assert_eq!(
            d.search_domains,
            [
                "cluster.local",
                "compute.internal",
                "ec2.internal",
                "google.internal",
                "internal.cloudapp.net"
            ]
        );
        let mut problems = ConfigProblems::default();
        d.validate("detect", &mut problems);
        assert!(problems.is_empty(), "the defaults pass: {problems:?}");
        let c: DetectConfig = toml::from_str(
            "search_domains = [\"com\", \"Corp.Example\", \"a..b\", \"corp.example.com\"]",
        )
        .unwrap();
        let mut problems = ConfigProblems::default();
        c.validate("detect", &mut problems);
        let text = format!("{problems:?}");
        assert!(
            text.contains("search_domains[0]") && text.contains("public suffix"),
            "{text}"
        );
        assert!(
            text.contains("search_domains[1]") && text.contains("lower case"),
            "{text}"
        );
        assert!(
            text.contains("search_domains[2]") && text.contains("empty label"),
            "{text}"
        );
        assert!(!text.contains("search_domains[3]"), "{text}");
        // A lookup service under which anyone can register a name would be a tunnel's discount.
        let l: DetectConfig = toml::from_str(
            "lookup_services = [\"co.uk\", \"github.io\", \"avlookup.vendor.example\"]",
        )
        .unwrap();
        let mut lp = ConfigProblems::default();
        l.validate("detect", &mut lp);
        let lt = format!("{lp:?}");
        assert!(
            lt.contains("lookup_services[0]") && lt.contains("public suffix"),
            "{lt}"
        );
        assert!(lt.contains("lookup_services[1]"), "{lt}");
        assert!(!lt.contains("lookup_services[2]"), "{lt}");
    }

    #[test]
    fn defaults_and_toml() {
        let d: DetectConfig = toml::from_str("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d, DetectConfig::default());
        let d: DetectConfig = toml::from_str("window = \"1h\"\nexceptions = [\"av.example.com\"]")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.window, Duration::from_secs(3600));
        assert!(toml::from_str::<DetectConfig>("windw = \"1h\"").is_err());
        let g: GroupDetectConfig =
            toml::from_str("monitor_only = true").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (g.alert, g.throttle, g.sinkhole, g.quarantine),
            (60, 70, 80, 90)
        );
        assert!(toml::from_str::<GroupDetectConfig>("alert = 300").is_err());
    }

    #[test]
    fn validation_reports_every_problem() {
        let mut p = ConfigProblems::default();
        DetectConfig::default().validate("detect", &mut p);
        GroupDetectConfig::default().validate("groups[0].detect", &mut p);
        assert!(p.is_empty(), "{p}");
        let d = DetectConfig {
            window: Duration::from_secs(5),
            max_domains: 1,
            exceptions: vec!["bad name".into(), "ok.example.com".into()],
            ..DetectConfig::default()
        };
        d.validate("detect", &mut p);
        let g = GroupDetectConfig {
            alert: 0,
            throttle: 95,
            sinkhole: 80,
            exceptions: vec!["a..b".into()],
            ..Default::default()
        };
        g.validate("groups[1].detect", &mut p);
        let locations: Vec<_> = p.problems.iter().map(|x| x.location.as_str()).collect();
        assert_eq!(
            locations,
            [
                "detect.window",
                "detect.max_domains",
                "detect.exceptions[0]",
                "groups[1].detect.alert",
                "groups[1].detect.sinkhole",
                "groups[1].detect.exceptions[0]"
            ]
        );
    }

    #[test]
    fn levels_follow_thresholds() {
        let g = GroupDetectConfig::default();
        assert_eq!(g.level_for(0), Level::None);
        assert_eq!(g.level_for(59), Level::None);
        assert_eq!(g.level_for(60), Level::Alert);
        assert_eq!(g.level_for(70), Level::Throttle);
        assert_eq!(g.level_for(85), Level::Sinkhole);
        assert_eq!(g.level_for(100), Level::Quarantine);
        assert!(Level::Quarantine > Level::Sinkhole && Level::Alert > Level::None);
    }
}

#[cfg(test)]
mod volume_tests {
    use super::*;

    #[test]
    fn volume_keys_are_validated_together() {
        let d: DetectConfig = toml::from_str(
            "short_window = \"2s\"\nlong_window = \"5m\"\nwindow_budget = 10\n\
             client_budget_factor = 0.5\nshared_name_slots = 10\nprevalence_window = \"1s\"\n\
             exceptions = [\"_domainkey\", \"_domainkey.example.com\"]",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let g: GroupDetectConfig =
            toml::from_str("volume_budget_percent = 5").unwrap_or_else(|e| panic!("{e}"));
        let mut p = ConfigProblems::default();
        d.validate("detect", &mut p);
        g.validate("groups[0].detect", &mut p);
        let locations: Vec<_> = p.problems.iter().map(|x| x.location.as_str()).collect();
        assert_eq!(
            locations,
            [
                "detect.short_window",
                "detect.long_window",
                "detect.window_budget",
                "detect.client_budget_factor",
                "detect.shared_name_slots",
                "detect.prevalence_window",
                "detect.exceptions[0]",
                "groups[0].detect.volume_budget_percent",
            ]
        );
        assert!((GroupDetectConfig::default().volume_scale() - 1.0).abs() < f32::EPSILON);
    }
}
